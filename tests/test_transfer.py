"""The transfer step alone (mirror/transfer.py), with fake ports: a job's image is pulled once
and its other tags filled in ECR; failures are retried, deferred or failed for what they are;
what is written is checked against what was announced."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mirror.errors import BUG, CopyError, RateLimited, RegistryError, Unmirrorable
from mirror.model import INTERRUPTED, Action, Copied, Job, Outcome, Pending, Retry, Task
from mirror.oci import (
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
    RateLimit,
    made_from,
    sha256,
)
from mirror.reference import ImageRef, Repository
from mirror.transfer import Holdings, Transfer

IMAGE_BODY = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
IMAGE = sha256(IMAGE_BODY)
AMD, ARM = "sha256:" + "1" * 64, "sha256:" + "2" * 64
INDEX = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"digest": AMD, "platform": {"os": "linux", "architecture": "amd64"}},
            {"digest": ARM, "platform": {"os": "linux", "architecture": "arm64"}},
        ],
    }
).encode()


@dataclass
class FakeRegistry:
    """A target's registry: manifests by tag or digest, as written."""

    manifests: dict[str, Manifest] = field(default_factory=dict)
    host: str = "ecr"
    tls_verify: bool = True

    def head_manifest(self, path: str, reference: str) -> Descriptor:
        held = self.manifests.get(reference)
        if held is None:
            return Descriptor(found=False)
        return Descriptor(found=True, digest=sha256(held.body), media_type=held.media_type)

    def describe_manifest(
        self, path: str, reference: str, *, get: bool | Callable[[RateLimit | None], bool] = True
    ) -> Descriptor:
        return self.head_manifest(path, reference)

    def get_manifest(self, path: str, reference: str) -> dict[str, Any] | None:
        held = self.manifests.get(reference)
        return None if held is None else dict(json.loads(held.body))

    def pull_manifest(self, path: str, reference: str) -> Manifest | None:
        return self.manifests.get(reference)

    def put_manifest(self, path: str, reference: str, body: bytes, media_type: str) -> str:
        self.manifests[reference] = self.manifests[sha256(body)] = Manifest(media_type, body)
        return sha256(body)

    def get_blob(self, path: str, digest: str) -> bytes | None:
        return None


@dataclass
class FakeTarget:
    registry: FakeRegistry
    host: str = "ecr"
    created: list[str] = field(default_factory=list)

    def ensure_repository(self, repository: str) -> None:
        self.created.append(repository)

    def is_immutable(self, repository: str, tag: str) -> bool:
        return False

    def cannot_write(self, repository: str) -> str | None:
        return None


@dataclass
class FakeCopier:
    """skopeo: writes the source digest (or `writes`) at the destination; `errors` in turn."""

    target: FakeRegistry
    errors: list[Exception] = field(default_factory=list)
    writes: str | None = None
    pulled: list[str] = field(default_factory=list)

    def pull(
        self,
        source: Repository,
        digest: str,
        destination: str,
        *,
        dest_tls_verify: bool,
        deadline: float | None = None,
    ) -> Copied:
        self.pulled.append(f"{source}@{digest} -> {destination}")
        if self.errors:
            raise self.errors.pop(0)
        tag = destination.rpartition("@" if "@" in destination else ":")[2]
        body = IMAGE_BODY if digest == IMAGE else digest.encode()
        self.target.manifests[tag] = self.target.manifests[digest] = Manifest(OCI_MANIFEST, body)
        return Copied(self.writes or digest)

    def copy(
        self, source: str, destination: str, *, src_tls_verify: bool, dest_tls_verify: bool
    ) -> Copied:
        raise AssertionError("every fill in these tests is a manifest PUT in one repository")


@dataclass
class FakeManifests:
    """The source's manifests by digest (ports.Manifests)."""

    by_digest: dict[str, Manifest] = field(default_factory=dict)

    def describe(self, host: str, path: str, reference: str, *, get: bool) -> Descriptor:
        raise AssertionError("the transfer describes nothing")

    def manifest(
        self, host: str, path: str, digest: str, *, deadline: float | None = None
    ) -> Manifest:
        return self.by_digest[digest]

    def has(self, host: str, path: str, digest: str) -> bool:
        return digest in self.by_digest

    def warnings(self) -> list[str]:
        return []


@dataclass
class FakeLimits:
    blocked_why: str | None = None

    def blocked(self, host: str) -> str | None:
        return self.blocked_why

    def shortfall(self, host: str, pulls: int) -> str | None:
        return None

    def extend(self, copy: tuple[object, int], host: str, pulls: int) -> str | None:
        return None


@dataclass
class FakePacing:
    throttles: list[str] = field(default_factory=list)
    successes: int = 0

    def throttled(self, host: str) -> None:
        self.throttles.append(host)

    def succeeded(self) -> None:
        self.successes += 1


@dataclass
class FakeRefusals:
    added: list[tuple[str, str, str]] = field(default_factory=list)

    def why(self, repository: str, digest: str) -> None:
        return None

    def add(self, repository: str, digest: str, reason: str) -> None:
        self.added.append((repository, digest, reason))


def job(*tags: str, platforms: tuple[str, ...] = (), digest: str = IMAGE) -> Job:
    def pending(order: int, tag: str) -> Pending:
        source = ImageRef(Repository("docker.io", "library/ruby"), tag)
        task = Task(source, tag, ("mirror/library/ruby",), platforms, order=(order, 0))
        return Pending(task, 0, f"ecr/mirror/library/ruby:{tag}", digest, None)

    return Job(tuple((pending(order, tag),) for order, tag in enumerate(tags)))


@dataclass
class World:
    target: FakeRegistry = field(default_factory=FakeRegistry)
    limits: FakeLimits = field(default_factory=FakeLimits)
    pacing: FakePacing = field(default_factory=FakePacing)
    refusals: FakeRefusals = field(default_factory=FakeRefusals)
    manifests: FakeManifests = field(default_factory=FakeManifests)
    stop: threading.Event = field(default_factory=threading.Event)
    emitted: list[Outcome] = field(default_factory=list)

    def run(self, the_job: Job, copier: FakeCopier | None = None) -> list[Outcome]:
        copier = copier or FakeCopier(self.target)
        transfer = Transfer(
            pulls=self.manifests,
            targets=[FakeTarget(self.target)],
            copier=copier,
            limits=self.limits,
            holdings=Holdings(),
            emit=self.emitted.append,
            stop=self.stop,
            retry=Retry(backoff=0.0, throttled_backoff=0.0),
            backpressure=self.pacing,
            refusals=self.refusals,
        )
        transfer.run(the_job)
        return self.emitted


def summary(outcomes: list[Outcome]) -> list[tuple[str | None, Action, str | None]]:
    return [(o.tag, o.action, o.error) for o in outcomes]


def test_an_image_is_pulled_once_and_its_alias_is_a_manifest_put_in_ecr() -> None:
    world = World()
    copier = FakeCopier(world.target)
    outcomes = world.run(job("3.3", "3"), copier)
    assert summary(outcomes) == [("3.3", Action.COPIED, None), ("3", Action.COPIED, None)]
    assert copier.pulled == [f"docker.io/library/ruby@{IMAGE} -> ecr/mirror/library/ruby:3.3"]
    assert "3" in world.target.manifests  # filled from the 3.3 ECR holds: no pull


def test_a_destinations_fault_is_retried_and_throttling_is_back_pressure() -> None:
    world = World()
    errors: list[Exception] = [
        CopyError("ecr: 429 Rate exceeded", throttled=True),
        CopyError("ecr: connection reset", transient=True),
    ]
    outcomes = world.run(job("3.3"), FakeCopier(world.target, errors))
    assert summary(outcomes) == [("3.3", Action.COPIED, None)]
    assert (world.pacing.throttles, world.pacing.successes) == (["ecr"], 1)


def test_a_fault_that_stays_fails_after_the_attempts_and_its_tags_with_it() -> None:
    world = World()
    reset = CopyError("ecr: connection reset", transient=True)
    outcomes = world.run(job("3.3", "3"), FakeCopier(world.target, [reset] * 3))
    why = "ecr: connection reset (after 3 attempts)"
    assert summary(outcomes) == [("3.3", Action.FAILED, why), ("3", Action.FAILED, why)]


def test_a_sources_429_defers_and_a_host_the_ledger_blocked_is_not_copied_from() -> None:
    why = "docker.io: pull rate limit reached (429 TOOMANYREQUESTS); run again later"
    world = World(limits=FakeLimits())
    copier = FakeCopier(world.target, [RateLimited("docker.io")])
    (outcome,) = world.run(job("3.3"), copier)
    assert (outcome.action, outcome.error) == (
        Action.DEFERRED,
        "docker.io: pull rate limit reached (429 TOOMANYREQUESTS)",
    )
    blocked = World(limits=FakeLimits(why))
    copier = FakeCopier(blocked.target)
    (outcome,) = blocked.run(job("3.3"), copier)
    assert (outcome.action, outcome.error, copier.pulled) == (Action.DEFERRED, why, [])


def test_an_image_no_copy_can_keep_is_refused_and_remembered() -> None:
    world = World()
    refused = Unmirrorable("a Docker v2 manifest with zstd layers")
    (outcome,) = world.run(job("3.3"), FakeCopier(world.target, [refused]))
    assert (outcome.action, outcome.error) == (
        Action.FAILED,
        "docker.io/library/ruby:3.3: a Docker v2 manifest with zstd layers",
    )
    assert world.refusals.added == [
        ("docker.io/library/ruby", IMAGE, "a Docker v2 manifest with zstd layers")
    ]


def test_what_ecr_holds_after_a_copy_is_checked_against_what_the_source_announced() -> None:
    world = World()
    (outcome,) = world.run(job("3.3"), FakeCopier(world.target, writes=AMD))
    assert (outcome.action, outcome.error) == (
        Action.FAILED,
        f"copied, but ecr/mirror/library/ruby:3.3 now holds {AMD}, not the {IMAGE} the "
        "source announced",
    )


def test_a_failed_copy_whose_tag_holds_the_image_anyway_is_up_to_date() -> None:
    body = b'{"schemaVersion":2}'
    world = World(target=FakeRegistry({"3.3": Manifest("x", body)}))
    refused = RegistryError("ecr: the tag is immutable in this repository")
    (outcome,) = world.run(job("3.3", digest=sha256(body)), FakeCopier(world.target, [refused]))
    assert (outcome.action, outcome.destination_digest) == (Action.UP_TO_DATE, sha256(body))


def test_a_subset_copies_each_platform_and_writes_an_index_of_its_own() -> None:
    index_digest = sha256(INDEX)
    world = World(manifests=FakeManifests({index_digest: Manifest(OCI_INDEX, INDEX)}))
    copier = FakeCopier(world.target)
    (outcome,) = world.run(job("3.3", platforms=("linux/arm64",), digest=index_digest), copier)
    assert outcome.action is Action.COPIED
    assert copier.pulled == [f"docker.io/library/ruby@{ARM} -> ecr/mirror/library/ruby@{ARM}"]
    written = world.target.get_manifest("mirror/library/ruby", "3.3")
    assert written is not None and made_from(written, index_digest, ("linux/arm64",))
    assert [entry["digest"] for entry in written["manifests"]] == [ARM]


def test_a_bug_fails_the_jobs_copies_not_the_run() -> None:
    world = World()
    outcomes = world.run(job("3.3", "3"), FakeCopier(world.target, [ValueError("oops")]))
    assert {o.action for o in outcomes} == {Action.FAILED}
    assert all((o.error or "").startswith(BUG) for o in outcomes)


def test_a_stopped_run_copies_nothing_more() -> None:
    world = World()
    world.stop.set()
    copier = FakeCopier(world.target)
    (outcome,) = world.run(job("3.3"), copier)
    assert (outcome.action, outcome.error, copier.pulled) == (Action.DEFERRED, INTERRUPTED, [])
