"""The layer-reuse board (mirror/layers.py), the blobs a manifest names, and what mirror.mounts
makes of a mount's answer: no processes.

Copies run on threads here; every order is forced by the board's own state (who claimed what,
who waits), never by sleeping.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from mirror.errors import CopyError, MirrorError, RegistryError
from mirror.layers import Blob, Board, Place, Step, Ticket, blobs_of, children_of
from mirror.model import Mounting, Pending, Task
from mirror.mounts import Mounts, size_text
from mirror.oci import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Manifest
from mirror.reference import parse_reference, parse_repository
from tests.test_transfer import FakeManifests

BASE = Blob("sha256:" + "b" * 64, 5_000_000)
OWN_A = Blob("sha256:" + "1" * 64, 200)
OWN_B = Blob("sha256:" + "2" * 64, 300)
OWN_C = Blob("sha256:" + "3" * 64, 400)
ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


def place(repository: str, encryption: str = "AES256", registry: str = ECR) -> Place:
    return Place(registry, repository, encryption)


def by_digest(steps: list[Step]) -> dict[str, Step]:
    return {step.blob.digest: step for step in steps}


# --- the blobs of a manifest ---------------------------------------------------------------------


def descriptor(blob: Blob, **extra: Any) -> dict[str, Any]:
    return {
        "mediaType": "application/octet-stream",
        "digest": blob.digest,
        "size": blob.size,
        **extra,
    }


def manifest(
    *layers: dict[str, Any], media_type: str = OCI_MANIFEST, config: Blob = OWN_C
) -> Manifest:
    document = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(config),
        "layers": list(layers),
    }
    return Manifest(media_type, json.dumps(document).encode())


def test_an_image_writes_its_config_and_layers_but_not_its_foreign_layers() -> None:
    foreign = Blob("sha256:" + "f" * 64, 900)
    written = manifest(
        descriptor(BASE),
        descriptor(foreign, urls=["https://mcr.microsoft.com/x"]),
        descriptor(OWN_A),
    )
    assert blobs_of(written) == [OWN_C, BASE, OWN_A]
    assert blobs_of(manifest(descriptor(BASE), media_type=DOCKER_MANIFEST)) == [OWN_C, BASE]


@pytest.mark.parametrize(
    "body",
    [b"sha256:1", b"[]", b'{"layers": "no"}', b'{"config": {"digest": 1, "size": 2}}', b"{"],
)
def test_what_is_not_a_manifest_names_no_blob(body: bytes) -> None:
    assert blobs_of(Manifest(OCI_MANIFEST, body)) == []
    assert children_of(Manifest(OCI_MANIFEST, body)) == []


def test_an_index_names_its_children_and_an_index_of_indexes_none() -> None:
    entries = [
        {"mediaType": OCI_MANIFEST, "digest": OWN_A.digest, "size": 1},
        {"mediaType": OCI_MANIFEST, "digest": OWN_B.digest, "size": 1},
        {"mediaType": OCI_MANIFEST, "digest": OWN_A.digest, "size": 1},
    ]
    index = Manifest(OCI_INDEX, json.dumps({"manifests": entries}).encode())
    assert children_of(index) == [OWN_A.digest, OWN_B.digest]
    assert blobs_of(index) == []
    nested = [*entries, {"mediaType": OCI_INDEX, "digest": BASE.digest, "size": 1}]
    assert children_of(Manifest(OCI_INDEX, json.dumps({"manifests": nested}).encode())) is None


# --- claims --------------------------------------------------------------------------------------


def test_the_first_copy_uploads_and_the_next_waits_for_it_then_mounts() -> None:
    board = Board()
    first = board.claim(place("app0"), [BASE, OWN_A])
    second = board.claim(place("app1"), [BASE, OWN_B])
    assert first.owned == {BASE.digest, OWN_A.digest}
    assert second.owned == {OWN_B.digest}  # the base is the first copy's to upload
    assert all(step.uploads for step in now(board, first))
    assert board.blocked(second)  # the base is still being uploaded
    waiter = waiting(board, second)
    board.settle(first, copied=True)
    got = by_digest(waiter.result())
    assert got[BASE.digest] == Step(BASE, mount_from="app0", elsewhere=True)
    assert got[OWN_B.digest].uploads
    assert board.holders(ECR, BASE.digest) == {"app0": "AES256"}


def test_a_copy_into_the_same_repository_waits_and_then_finds_the_blob_there() -> None:
    board = Board()
    board.refuse(ECR)  # mounting off: still worth waiting for an upload into the same place
    first = board.claim(place("app"), [BASE])
    second = board.claim(place("app"), [BASE, OWN_B])
    board.wait(first, lambda: False)
    assert board.blocked(second)
    waiter = waiting(board, second)
    board.settle(first, copied=True)
    assert by_digest(waiter.result())[BASE.digest].here


def test_where_the_registry_refused_a_mount_copies_into_other_repositories_do_not_wait() -> None:
    board = Board()
    first = board.claim(place("app0"), [BASE])
    second = board.claim(place("app1"), [BASE])
    board.wait(first, lambda: False)
    board.refuse(ECR)
    step = now(board, second)[0]  # returns at once
    assert step == Step(BASE, elsewhere=True)  # would have been mounted: counted, uploaded


def test_a_refusal_wakes_the_copies_waiting() -> None:
    board = Board()
    first = board.claim(place("app0"), [BASE])
    second = board.claim(place("app1"), [BASE])
    board.wait(first, lambda: False)
    assert board.blocked(second)
    waiter = waiting(board, second)
    board.refuse(ECR)
    assert not board.blocked(second)
    assert waiter.result() == [Step(BASE, elsewhere=True)]


def test_no_mount_and_no_wait_between_repositories_of_different_encryption() -> None:
    board = Board()
    aes = board.claim(place("app0"), [BASE])
    kms = board.claim(place("app1", "KMS arn:aws:kms:us-east-1:1:key/k"), [BASE])
    board.wait(aes, lambda: False)
    assert board.wait(kms, lambda: False) == [Step(BASE)]  # at once: it uploads its own
    board.settle(aes, copied=True)
    board.settle(kms, copied=True)
    later = board.claim(place("app2", "KMS arn:aws:kms:us-east-1:1:key/k"), [BASE])
    assert board.wait(later, lambda: False) == [Step(BASE, mount_from="app1", elsewhere=True)]


def test_registries_are_apart() -> None:
    board = Board()
    board.settle(board.claim(place("app0"), [BASE]), copied=True)
    other = board.claim(place("app0", registry="other.example"), [BASE])
    assert other.owned == {BASE.digest}


def test_a_failed_copy_gives_its_blobs_to_the_earliest_copy_waiting() -> None:
    board = Board()
    first = board.claim(place("app0"), [BASE, OWN_A])
    second = board.claim(place("app1"), [BASE, OWN_B])
    third = board.claim(place("app2"), [BASE, OWN_C])
    board.wait(first, lambda: False)
    assert board.blocked(second) and board.blocked(third)
    second_waits, third_waits = waiting(board, second), waiting(board, third)
    board.settle(first, copied=False)
    assert by_digest(second_waits.result())[BASE.digest].uploads  # the next copy uploads
    assert BASE.digest in second.owned and BASE.digest not in third.owned
    assert board.blocked(third)  # and the third now waits for the second
    board.settle(second, copied=True)
    assert by_digest(third_waits.result())[BASE.digest].mount_from == "app1"
    assert board.holders(ECR, OWN_A.digest) == {}  # nothing of the failed copy is held


def test_a_failed_copy_keeps_what_it_mounted() -> None:
    board = Board()
    board.settle(board.claim(place("app0"), [BASE]), copied=True)
    second = board.claim(place("app1"), [BASE, OWN_B])
    board.wait(second, lambda: False)
    board.settle(second, copied=False, mounted=[BASE.digest])
    assert board.holders(ECR, BASE.digest) == {"app0": "AES256", "app1": "AES256"}
    assert board.holders(ECR, OWN_B.digest) == {}
    board.settle(second, copied=True)  # settling twice changes nothing
    assert board.holders(ECR, OWN_B.digest) == {}


def test_waits_never_form_a_cycle() -> None:
    """Two copies that need each other's blobs: the later waits, the earlier does not."""
    board = Board()
    first = board.claim(place("app0"), [OWN_A])
    second = board.claim(place("app1"), [OWN_B])
    third = board.claim(place("app2"), [OWN_A, OWN_B])
    fourth = board.claim(place("app3"), [OWN_B, OWN_A])
    for ticket in (first, second):
        assert board.wait(ticket, lambda: False)
    third_waits, fourth_waits = waiting(board, third), waiting(board, fourth)
    board.settle(first, copied=False)  # OWN_A goes to the third; the fourth waits on it
    assert board.blocked(third)  # still waits for the second's OWN_B
    board.settle(second, copied=False)  # OWN_B goes to the third as well
    assert {step.blob for step in third_waits.result() if step.uploads} == {OWN_A, OWN_B}
    assert board.blocked(fourth)
    board.settle(third, copied=True)
    assert all(step.mount_from == "app2" for step in fourth_waits.result())


def test_a_blob_seen_in_the_uploading_copys_repository_ends_the_wait_for_it() -> None:
    """skopeo uploads an image's blobs before its manifest: the copies waiting for the base
    go on once it is there, before the copy that uploads it ends."""
    board = Board()
    first = board.claim(place("app0"), [BASE, OWN_A])
    second = board.claim(place("app1"), [BASE, OWN_B])
    board.wait(first, lambda: False)
    assert board.wait(second, lambda: False, timeout=0) is None  # still waiting
    assert board.awaited(second) == [(place("app0"), BASE.digest)]
    board.landed(place("app0"), BASE.digest)
    assert board.awaited(second) == []
    got = by_digest(board.wait(second, lambda: False) or [])
    assert got[BASE.digest] == Step(BASE, mount_from="app0", elsewhere=True)
    assert board.blocked(first) is False  # the first copy's own claims are untouched
    board.settle(first, copied=False)  # its upload was seen: the base stays where it landed
    assert board.holders(ECR, BASE.digest) == {"app0": "AES256"}


def test_a_stop_ends_a_wait() -> None:
    board = Board()
    first = board.claim(place("app0"), [BASE])
    second = board.claim(place("app1"), [BASE])
    board.wait(first, lambda: False)
    stop = threading.Event()
    assert board.blocked(second)
    waiter = waiting(board, second, stop.is_set)
    stop.set()
    assert waiter.result() == [Step(BASE, elsewhere=True)]


# --- helpers -------------------------------------------------------------------------------------


class Waiter:
    """`Board.wait` on a thread of its own."""

    def __init__(self, call: Callable[[], list[Step] | None]):
        self._result: list[Step] | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], list[Step] | None]) -> None:
        self._result = call()

    def result(self) -> list[Step]:
        self._thread.join(timeout=60)
        assert self._result is not None, "the wait did not end"
        return self._result


def now(board: Board, ticket: Ticket) -> list[Step]:
    """`ticket`'s steps, when it need not wait."""
    steps = board.wait(ticket, lambda: False, timeout=0)
    assert steps is not None, "it waits"
    return steps


def waiting(board: Board, ticket: Ticket, stop: Callable[[], bool] = lambda: False) -> Waiter:
    """`ticket`'s wait, started on a thread."""
    return Waiter(lambda: board.wait(ticket, stop))


# --- mirror.mounts over fakes: what a mount's answer makes of the copy ----------------------------


@dataclass
class CountedManifests(FakeManifests):
    """The run's source manifests, by digest, and the digests read, in order."""

    reads: list[str] = field(default_factory=list)

    def manifest(
        self, host: str, path: str, digest: str, *, deadline: float | None = None
    ) -> Manifest:
        self.reads.append(digest)
        return super().manifest(host, path, digest, deadline=deadline)


@dataclass
class FakeBlobs:
    """A target registry's blob HEAD and mount: `answer` is what a mount gets (True: 201,
    False: 202, an error: raised)."""

    answer: bool | MirrorError = True
    present: set[tuple[str, str]] = field(default_factory=set)
    mounts: list[tuple[str, str, str]] = field(default_factory=list)

    def has_blob(self, path: str, digest: str) -> bool:
        return (path, digest) in self.present

    def mount_blob(self, path: str, digest: str, source: str) -> bool:
        self.mounts.append((path, digest, source))
        if isinstance(self.answer, MirrorError):
            raise self.answer
        return self.answer


@dataclass
class FakeMountable:
    host: str
    registry: FakeBlobs
    encryptions: dict[str, str] = field(default_factory=dict)

    def encryption(self, repository: str) -> str:
        return self.encryptions.get(repository, "AES256")


def pending_into(repository: str) -> Pending:
    task = Task(parse_reference("library/app"), "1", (repository,))
    return Pending(task, 0, f"{ECR}/{repository}:1", "sha256:" + "0" * 64, None)


def config(name: str) -> Blob:
    return Blob("sha256:" + name * 64, 100)


def image_manifests() -> dict[str, Manifest]:
    return {
        "sha256:a": manifest(descriptor(BASE), descriptor(OWN_A), config=config("a")),
        "sha256:b": manifest(descriptor(BASE), descriptor(OWN_B), config=config("e")),
    }


def copy(mounts: Mounts, repository: str, digest: str, *, fail: bool = False) -> None:
    """One copy from the source, around nothing (what skopeo would do is not needed)."""
    source = parse_repository("docker.io/library/app")
    with (
        contextlib.suppress(CopyError),
        mounts.around(
            pending_into(repository), source, digest, deadline=None, stop=threading.Event()
        ),
    ):
        if fail:
            raise CopyError("skopeo failed")


def test_mounts_what_another_repository_holds_and_counts_its_bytes() -> None:
    blobs = FakeBlobs()
    mounts = Mounts([FakeMountable(ECR, blobs)], CountedManifests(image_manifests()))
    copy(mounts, "app0", "sha256:a")
    copy(mounts, "app1", "sha256:b")
    assert blobs.mounts == [("app1", BASE.digest, "app0")]
    assert mounts.figures() == [Mounting(ECR, mounts=1, mounted_bytes=BASE.size)]
    assert mounts.mounted(pending_into("app1").key) == BASE.size
    assert mounts.warnings() == []


def test_a_blob_the_repository_has_from_an_earlier_run_is_not_mounted() -> None:
    blobs = FakeBlobs(present={("app1", BASE.digest)})
    mounts = Mounts([FakeMountable(ECR, blobs)], CountedManifests(image_manifests()))
    copy(mounts, "app0", "sha256:a")
    copy(mounts, "app1", "sha256:b")
    assert blobs.mounts == []  # skopeo finds it with its own HEAD
    assert mounts.figures() == [Mounting(ECR)]


def test_a_refused_mount_stops_mounting_and_counts_what_could_have_been_saved() -> None:
    blobs = FakeBlobs(answer=False)
    manifests = image_manifests()
    manifests["sha256:c"] = manifest(descriptor(BASE), descriptor(OWN_C), config=config("c"))
    mounts = Mounts([FakeMountable(ECR, blobs)], CountedManifests(manifests))
    for repository, digest in (("app0", "sha256:a"), ("app1", "sha256:b"), ("app2", "sha256:c")):
        copy(mounts, repository, digest)
    assert len(blobs.mounts) == 1  # tried once
    figures = Mounting(ECR, refused=True, unmounted_bytes=2 * BASE.size)
    assert mounts.figures() == [figures]
    assert mounts.warnings() == [
        f"{ECR} does not mount layers across repositories (ECR's BLOB_MOUNTING setting is off): "
        "mounting would have saved 10.0 MB of uploads in this run; turn it on with "
        "`aws ecr put-account-setting --name BLOB_MOUNTING --value ENABLED`"
    ]


def test_a_failed_mount_fails_no_copy_and_is_said_once() -> None:
    blobs = FakeBlobs(answer=RegistryError("ecr: HTTP 500 UNKNOWN", status=500))
    mounts = Mounts([FakeMountable(ECR, blobs)], CountedManifests(image_manifests()))
    copy(mounts, "app0", "sha256:a")
    copy(mounts, "app1", "sha256:b")  # no exception: the copy uploads
    copy(mounts, "app2", "sha256:b")
    assert len(blobs.mounts) == 1
    assert mounts.warnings() == [
        f"{ECR}: a layer mount failed (ecr: HTTP 500 UNKNOWN); layers were uploaded for the "
        "rest of the run"
    ]


def test_no_mount_between_repositories_of_different_encryption() -> None:
    blobs = FakeBlobs()
    target = FakeMountable(ECR, blobs, {"app1": "KMS arn:aws:kms:k"})
    mounts = Mounts([target], CountedManifests(image_manifests()))
    copy(mounts, "app0", "sha256:a")
    copy(mounts, "app1", "sha256:b")
    assert blobs.mounts == []


def test_a_failed_copy_leaves_only_what_it_mounted() -> None:
    blobs = FakeBlobs()
    manifests = image_manifests()
    manifests["sha256:c"] = manifest(descriptor(OWN_B), descriptor(BASE), config=config("d"))
    mounts = Mounts([FakeMountable(ECR, blobs)], CountedManifests(manifests))
    copy(mounts, "app0", "sha256:a")
    copy(mounts, "app1", "sha256:b", fail=True)  # mounted the base, uploaded nothing
    copy(mounts, "app2", "sha256:c")
    assert blobs.mounts == [("app1", BASE.digest, "app0"), ("app2", BASE.digest, "app0")]


def test_an_index_s_blobs_are_its_childrens_read_through_the_runs_manifests() -> None:
    manifests = image_manifests()
    entries = [{"mediaType": OCI_MANIFEST, "digest": d, "size": 1} for d in manifests]
    manifests["sha256:i"] = Manifest(OCI_INDEX, json.dumps({"manifests": entries}).encode())
    reader = CountedManifests(manifests)
    mounts = Mounts([FakeMountable(ECR, FakeBlobs())], reader)
    source = parse_repository("docker.io/library/app")
    assert mounts.blobs(source, "sha256:i", deadline=None) == [
        config("a"),
        BASE,
        OWN_A,
        config("e"),
        OWN_B,
    ]
    assert reader.reads[0] == "sha256:i"  # then its children, at once
    assert sorted(reader.reads[1:]) == ["sha256:a", "sha256:b"]


def test_two_targets_on_one_registry_share_its_board_and_its_figures() -> None:
    blobs = FakeBlobs(answer=False)
    targets = [FakeMountable(ECR, blobs), FakeMountable(ECR, blobs)]
    mounts = Mounts(targets, CountedManifests(image_manifests()))
    copy(mounts, "app0", "sha256:a")
    copy(mounts, "app1", "sha256:b")
    assert len(mounts.figures()) == len(mounts.warnings()) == 1


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 bytes"),
        (1, "1 byte"),
        (999, "999 bytes"),
        (1_000, "1.0 kB"),
        (999_949, "999.9 kB"),
        (999_950, "1.0 MB"),
        (212_400_000, "212.4 MB"),
        (999_999_999, "1.0 GB"),
        (5 * 10**12, "5.0 TB"),
    ],
)
def test_sizes_read_as_a_person_reads_them(size: int, text: str) -> None:
    assert size_text(size) == text


def test_a_mount_refused_after_others_worked_does_not_say_the_setting_is_off() -> None:
    """ECR answers 202 for two repositories whose encryption differs too: once a mount has
    worked on the registry, a 202 is about that pair only; mounting goes on, and no line
    says BLOB_MOUNTING is off."""
    blobs = FakeBlobs()
    manifests = image_manifests()
    manifests["sha256:c"] = manifest(descriptor(BASE), descriptor(OWN_C), config=config("c"))
    manifests["sha256:d"] = manifest(descriptor(BASE), config=config("d"))
    mounts = Mounts([FakeMountable(ECR, blobs)], CountedManifests(manifests))
    copy(mounts, "app0", "sha256:a")
    copy(mounts, "app1", "sha256:b")  # mounted
    blobs.answer = False
    copy(mounts, "app2", "sha256:c")  # 202: uploaded
    blobs.answer = True
    copy(mounts, "app3", "sha256:d")  # mounted: mounting went on
    assert [path for path, _, _ in blobs.mounts] == ["app1", "app2", "app3"]
    assert mounts.figures() == [Mounting(ECR, mounts=2, mounted_bytes=2 * BASE.size)]
    assert mounts.warnings() == []
