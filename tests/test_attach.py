"""The attach step alone (mirror/attach.py), with fake ports: what the source holds about a
digest is found once, what a target lacks is copied (manifests after their blobs, cosign's
under their tag), a target without the referrers API gets the tag schema's index, the budget
defers what it cannot cover, and the verify gate judges the material it read."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from mirror.attach import Attach, Finder, Gate, Lookup, lookups
from mirror.errors import Later, NotVerified, RegistryError
from mirror.model import NO_REFERRERS, Action, Outcome, Pending, ReferrerRule, Task
from mirror.oci import OCI_INDEX, Descriptor, Manifest, TagList, sha256
from mirror.reference import ImageRef, Repository
from mirror.referrers import Listing, cosign_tag, parse_listing, parse_manifest, tag_schema_name
from mirror.signatures import SIMPLE_SIGNING, load_policy
from tests.standins.images import Blob
from tests.standins.signing import (
    SPDX,
    cosign_sig_manifest,
    descriptor_of,
    key_signed,
    new_key,
    sbom_referrer,
    simple_signing,
    tag_schema_index,
)

HOST = "hub"
SOURCE = Repository(HOST, "library/ruby")
IMAGE = Blob("application/vnd.oci.image.manifest.v1+json", b'{"schemaVersion":2,"layers":[]}')
DIGEST = IMAGE.digest
SUBJECT = (IMAGE.media_type, DIGEST, len(IMAGE.data))


# --- fakes ---------------------------------------------------------------------------------------


@dataclass
class FakeAnswer:
    status: int
    data: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def body(self) -> FakeAnswer | None:
        return self if self.status == 200 else None

    def pieces(self) -> Iterator[bytes]:
        yield self.data[:3]
        yield self.data[3:]

    def close(self) -> None:
        pass


@dataclass
class FakeStore:
    """A registry's storage: manifests by tag or digest, blobs; `api`: the referrers API."""

    manifests: dict[str, Blob] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    api: bool = True
    host: str = "store"
    tls_verify: bool = True
    requests: list[str] = field(default_factory=list)
    tags_fail: bool = False

    def add(self, top: Blob, blobs: dict[str, Blob], tag: str | None = None) -> None:
        for blob in blobs.values():
            if blob is not top:
                self.blobs[blob.digest] = blob.data
        self.manifests[top.digest] = top
        if tag:
            self.manifests[tag] = top

    # the source's side

    def head_manifest(self, path: str, reference: str) -> Descriptor:
        self.requests.append(f"HEAD {reference}")
        held = self.manifests.get(reference)
        if held is None:
            return Descriptor(found=False)
        return Descriptor(found=True, digest=held.digest, media_type=held.media_type)

    def list_referrers(self, path: str, digest: str) -> Listing | None:
        self.requests.append(f"LIST {digest}")
        if not self.api:
            return None
        entries = [
            descriptor_of(blob)
            for key, blob in self.manifests.items()
            if key == blob.digest
            and json.loads(blob.data).get("subject", {}).get("digest") == digest
        ]
        body = json.dumps({"mediaType": OCI_INDEX, "manifests": entries}).encode()
        return parse_listing(body, where=self.host)

    def list_tags(self, path: str) -> TagList:
        self.requests.append("TAGS")
        if self.tags_fail:
            raise RegistryError("tags list: HTTP 500", status=500)
        return TagList(tuple(key for key in self.manifests if ":" not in key))

    @contextlib.contextmanager
    def blob(self, path: str, digest: str) -> Iterator[FakeAnswer]:
        self.requests.append(f"BLOB {digest}")
        held = self.blobs.get(digest)
        yield FakeAnswer(404) if held is None else FakeAnswer(200, held)

    # the target's side

    def describe_manifest(self, path: str, reference: str, *, get: bool = True) -> Descriptor:
        return self.head_manifest(path, reference)

    def get_manifest(self, path: str, reference: str) -> dict[str, Any] | None:
        held = self.manifests.get(reference)
        return None if held is None else dict(json.loads(held.data))

    def pull_manifest(self, path: str, reference: str) -> Manifest | None:
        held = self.manifests.get(reference)
        return None if held is None else Manifest(held.media_type, held.data)

    def put_manifest(self, path: str, reference: str, body: bytes, media_type: str) -> str:
        self.requests.append(f"PUT {reference}")
        for descriptor in parse_manifest(body, where="put").blobs:
            assert descriptor.digest in self.blobs, "a manifest PUT before its blobs"
        blob = Blob(media_type, body)
        self.manifests[reference] = self.manifests[blob.digest] = blob
        return blob.digest

    def get_blob(self, path: str, digest: str) -> bytes | None:
        return self.blobs.get(digest)

    def has_blob(self, path: str, digest: str) -> bool:
        return digest in self.blobs

    def push_blob(self, path: str, digest: str, pieces: Iterable[bytes], *, size: int) -> None:
        data = b"".join(pieces)
        assert (sha256(data), len(data)) == (digest, size)
        self.requests.append(f"PUSH {digest}")
        self.blobs[digest] = data


def _subject(blob: Blob) -> str | None:
    subject = json.loads(blob.data).get("subject") or {}
    return subject.get("digest") if isinstance(subject, dict) else None


@dataclass
class FakeManifests:
    """pulls.Pulls over the source: each GET counted (a pull)."""

    source: FakeStore
    gets: list[str] = field(default_factory=list)

    def describe(self, host: str, path: str, reference: str, *, get: bool) -> Descriptor:
        return self.source.head_manifest(path, reference)  # a digest on HEAD: no GET

    def manifest(
        self, host: str, path: str, digest: str, *, deadline: float | None = None
    ) -> Manifest:
        if digest not in self.gets:
            self.gets.append(digest)
        held = self.source.manifests[digest]
        return Manifest(held.media_type, held.data)

    def has(self, host: str, path: str, digest: str) -> bool:
        return digest in self.gets

    def warnings(self) -> list[str]:
        return []


@dataclass
class FakePromises:
    """The ledger: `left` pulls; a claim spends one (a GET follows it)."""

    left: int = 100
    claims: int = 0

    def claim(self, host: str) -> str | None:
        if self.left <= 0:
            return f"{host}: pull budget: needs 1, 0 left"
        self.left -= 1
        self.claims += 1
        return None

    def unclaim(self, host: str) -> None:
        pass

    def blocked(self, host: str) -> str | None:
        return None


@dataclass
class FakeTarget:
    registry: FakeStore
    host: str = "ecr"
    immutable: bool = False

    def ensure_repository(self, repository: str) -> None:
        pass

    def is_immutable(self, repository: str, tag: str) -> bool:
        return self.immutable

    def cannot_write(self, repository: str) -> str | None:
        return None


@dataclass
class FakeLooks:
    done: dict[str, dict[str, str]] = field(default_factory=dict)
    recent: set[str] = field(default_factory=set)

    def due(self, key: str) -> bool:
        return key not in self.recent

    def indexes(self, key: str) -> dict[str, str]:
        return dict(self.done.get(key, {}))

    def add(self, key: str, indexes: Any) -> None:
        self.done[key] = dict(indexes)


@dataclass
class World:
    source: FakeStore
    target: FakeStore
    pulls: FakeManifests
    promises: FakePromises
    looks: FakeLooks
    finder: Finder

    def attach(self, *, immutable: bool = False) -> Attach:
        return Attach(
            finder=self.finder,
            targets=[FakeTarget(self.target, immutable=immutable)],
            looks=self.looks,
            stop=threading.Event(),
        )


def world(*, source_api: bool = True, target_api: bool = True, left: int = 100) -> World:
    source = FakeStore(api=source_api, host=HOST)
    source.add(IMAGE, {}, "1.0")
    target = FakeStore(api=target_api, host="ecr")
    target.add(IMAGE, {}, "1.0")
    pulls = FakeManifests(source)
    promises = FakePromises(left)
    finder = Finder(sources=lambda host: source, pulls=pulls, promises=promises)
    return World(source, target, pulls, promises, FakeLooks(), finder)


def lookup(rule: ReferrerRule | None = None) -> Lookup:
    return Lookup(
        SOURCE, rule or ReferrerRule(), 0, "mirror/ruby", DIGEST, f"ecr/mirror/ruby@{DIGEST}",
        f"ecr/mirror/ruby@{DIGEST}", keys=(((0, 0), 0),),
    )  # fmt: skip


def sbom(seed: str = "") -> tuple[Blob, dict[str, Blob]]:
    return sbom_referrer(SUBJECT, seed)


def signature(signed: str = DIGEST) -> tuple[Blob, dict[str, Blob]]:
    return cosign_sig_manifest([key_signed(new_key(), simple_signing(signed))])


# --- finding -------------------------------------------------------------------------------------


def signed_and_described() -> tuple[World, Blob, Blob]:
    """A source holding an SBOM referrer and cosign's .sig of the image: (world, SBOM, .sig)."""
    w = world()
    document, blobs = sbom()
    w.source.add(document, blobs)
    sig, sig_blobs = signature()
    w.source.add(sig, sig_blobs, cosign_tag(DIGEST))
    return w, document, sig


def test_a_source_with_the_api_lists_its_referrers_and_heads_cosigns_tags() -> None:
    w, document, sig = signed_and_described()
    found = w.finder.find(SOURCE, DIGEST)
    assert [referrer.digest for referrer in found.referrers] == [document.digest]
    assert found.cosign == ((cosign_tag(DIGEST), sig.digest),)
    assert w.pulls.gets == []  # listing and HEADs: nothing pulled yet
    assert w.finder.find(SOURCE, DIGEST) is found  # once per run
    assert w.source.requests.count(f"LIST {DIGEST}") == 1
    assert w.source.requests.count("TAGS") == 1  # which cosign tags are there: its tags list
    assert [r for r in w.source.requests if r.startswith("HEAD")] == [
        f"HEAD {cosign_tag(DIGEST)}"  # a HEAD only for the one there, for its digest
    ]


def test_a_tags_list_that_cannot_be_read_leaves_a_head_per_tag() -> None:
    w, _, sig = signed_and_described()
    w.source.tags_fail = True
    assert w.finder.find(SOURCE, DIGEST).cosign == ((cosign_tag(DIGEST), sig.digest),)
    assert len([r for r in w.source.requests if r.startswith("HEAD")]) == 3


def test_without_the_api_the_tag_schema_is_read_and_the_api_not_asked_again() -> None:
    w = world(source_api=False)
    document, blobs = sbom()
    w.source.add(document, blobs)
    w.source.add(tag_schema_index([document]), {}, tag_schema_name(DIGEST))
    found = w.finder.find(SOURCE, DIGEST)
    assert [referrer.digest for referrer in found.referrers] == [document.digest]
    assert found.index == w.source.manifests[tag_schema_name(DIGEST)].digest
    assert w.pulls.gets == [found.index]  # the index: one pull
    w.finder.find(SOURCE, "sha256:" + "1" * 64)
    assert [r for r in w.source.requests if r.startswith("LIST")] == [f"LIST {DIGEST}"]


def test_an_index_read_at_the_last_look_is_not_read_again() -> None:
    w = world(source_api=False)
    w.source.add(tag_schema_index([sbom()[0]]), {}, tag_schema_name(DIGEST))
    known = w.source.manifests[tag_schema_name(DIGEST)].digest
    found = w.finder.find(SOURCE, DIGEST, known_index=known)
    assert (found.unchanged, found.referrers, w.pulls.gets) == (True, (), [])


def test_a_pin_tag_of_an_earlier_mirror_is_no_index() -> None:
    w = world(source_api=False)
    w.source.manifests[tag_schema_name(DIGEST)] = IMAGE  # the image itself under sha256-<hex>
    found = w.finder.find(SOURCE, DIGEST)
    assert (found.referrers, found.index, w.pulls.gets) == ((), None, [])


def test_a_read_the_budget_cannot_cover_is_deferred() -> None:
    w = world(source_api=False, left=0)
    assert w.finder.find(SOURCE, DIGEST).referrers == ()  # HEADs only: nothing to pull
    w = world(source_api=False, left=0)
    w.source.add(tag_schema_index([sbom()[0]]), {}, tag_schema_name(DIGEST))
    with pytest.raises(Later, match="0 left"):
        w.finder.find(SOURCE, DIGEST)  # the index is a pull the budget cannot cover


# --- copying -------------------------------------------------------------------------------------


def test_what_the_target_lacks_is_copied_blobs_first_digests_kept() -> None:
    w = world()
    here, here_blobs = sbom("already")
    there, there_blobs = sbom("new")
    sig, sig_blobs = signature()
    for top, blobs in ((here, here_blobs), (there, there_blobs)):
        w.source.add(top, blobs)
    w.target.add(here, here_blobs)
    w.source.add(sig, sig_blobs, cosign_tag(DIGEST))
    attached = w.attach().run(lookup())
    assert [(r.digest, r.artifact_type, r.tag) for r in attached.copied] == [
        (there.digest, SPDX, None),
        (sig.digest, SIMPLE_SIGNING, cosign_tag(DIGEST)),
    ]
    assert (attached.present, attached.deferred, attached.failed) == (1, None, None)
    assert w.target.manifests[cosign_tag(DIGEST)].digest == sig.digest
    assert w.target.manifests[there.digest].data == there.data
    assert sorted(w.pulls.gets) == sorted([there.digest, sig.digest])  # not `here`
    assert w.looks.done == {lookup().key: {}}  # a whole look: remembered


def test_a_list_of_artifact_types_keeps_only_those() -> None:
    w, document, _ = signed_and_described()
    attached = w.attach().run(lookup(ReferrerRule(types=(SPDX,))))
    assert [r.digest for r in attached.copied] == [document.digest]
    assert cosign_tag(DIGEST) not in w.target.manifests


def test_a_target_without_the_api_gets_the_tag_schema_index_with_its_entries_kept() -> None:
    w = world(target_api=False)
    other = sbom("another client's")[0]
    w.target.add(tag_schema_index([other]), {}, tag_schema_name(DIGEST))
    document, blobs = sbom()
    w.source.add(document, blobs)
    attached = w.attach().run(lookup())
    assert [r.digest for r in attached.copied] == [document.digest]
    index = json.loads(w.target.manifests[tag_schema_name(DIGEST)].data)
    assert [entry["digest"] for entry in index["manifests"]] == [other.digest, document.digest]


def test_a_pin_tag_of_an_earlier_mirror_is_never_overwritten_with_an_index() -> None:
    w = world(target_api=False)
    w.target.manifests[tag_schema_name(DIGEST)] = IMAGE
    document, blobs = sbom()
    w.source.add(document, blobs)
    attached = w.attach().run(lookup())
    assert w.target.manifests[tag_schema_name(DIGEST)] is IMAGE
    assert f"PUT {tag_schema_name(DIGEST)}" not in w.target.requests
    assert any("holds the image" in warning for warning in attached.warnings)


def test_the_budget_running_out_midway_defers_the_rest() -> None:
    w = world(left=1)  # one manifest
    first, first_blobs = sbom("1")
    second, second_blobs = sbom("2")
    w.source.add(first, first_blobs)
    w.source.add(second, second_blobs)
    attached = w.attach().run(lookup())
    assert len(attached.copied) == 1 and attached.deferred == "hub: pull budget: needs 1, 0 left"
    assert w.looks.done == {}  # not remembered: the next run looks again


def test_an_immutable_cosign_tag_holding_another_signature_fails_naming_the_fix() -> None:
    w = world()
    old, old_blobs = signature()
    w.target.add(old, old_blobs, cosign_tag(DIGEST))
    new, new_blobs = signature()
    w.source.add(new, new_blobs, cosign_tag(DIGEST))
    attached = w.attach(immutable=True).run(lookup())
    assert attached.failed is not None and "exclusion filters sha256-*" in attached.failed
    assert w.target.manifests[cosign_tag(DIGEST)] is old


# --- which images --------------------------------------------------------------------------------


def outcome(order: int, action: Action, digest: str | None = DIGEST) -> Outcome:
    return Outcome(
        "hub/library/ruby:1", "ecr/mirror/ruby:1", "mirror/ruby", "1", action,
        DIGEST, digest, order=(order, 0),
    )  # fmt: skip


def task(order: int, *, pinned: bool = False, rule: ReferrerRule | None = None) -> Task:
    source = ImageRef(SOURCE, "1", DIGEST if pinned else None)
    return Task(source, "1", ("mirror/ruby",), order=(order, 0), referrers=rule or ReferrerRule())


def test_which_images_have_their_referrers_looked_for() -> None:
    looks = FakeLooks(recent={f"ecr/mirror/ruby@{DIGEST}"})
    tasks = [task(0), task(1), task(2, pinned=True), task(3, rule=NO_REFERRERS)]
    up_to_date = [outcome(n, Action.UP_TO_DATE) for n in range(4)]
    assert lookups(tasks, up_to_date, ["ecr"], looks) == []  # looked for today
    due = lookups(tasks, up_to_date, ["ecr"], FakeLooks())
    assert [found.keys for found in due] == [(((0, 0), 0), ((1, 0), 0), ((2, 0), 0))]  # one look
    assert lookups(tasks[2:], up_to_date[2:], ["ecr"], FakeLooks()) == []  # a pin alone: none
    filled = replace(outcome(2, Action.COPIED), pulled=False)  # written from ECR's copy
    assert lookups(tasks[2:3], [filled], ["ecr"], FakeLooks()) == []
    assert not due[0].platforms  # up to date: its own digest only
    copied = lookups(tasks, [outcome(0, Action.COPIED), outcome(1, Action.FAILED)], ["ecr"], looks)
    assert [(found.keys, found.platforms) for found in copied] == [((((0, 0), 0),), True)]
    asked = lookups(tasks, up_to_date, ["ecr"], looks, rescan=True)
    assert [found.keys for found in asked] == [(((0, 0), 0), ((1, 0), 0), ((2, 0), 0))]


# --- the gate ------------------------------------------------------------------------------------


def pending(policy: Any) -> Pending:
    source = ImageRef(SOURCE, "1")
    return Pending(Task(source, "1", ("mirror/ruby",), verify=policy), 0, "ecr/x:1", DIGEST, None)


def test_the_gate_lets_a_signed_digest_through_and_keeps_its_verdict(tmp_path: Path) -> None:
    w = world()
    key = new_key()
    sig, sig_blobs = cosign_sig_manifest([key_signed(key, simple_signing(DIGEST))])
    w.source.add(sig, sig_blobs, cosign_tag(DIGEST))
    policy = load_policy(keys=[key.write_public(tmp_path / "cosign.pub")])
    gate = Gate(w.finder)
    assert gate.verify(pending(policy)) == (
        f"key cosign.pub ({key.fingerprint}) ({cosign_tag(DIGEST)} layer 1)"
    )
    reads = len(w.source.requests)
    gate.verify(pending(policy))
    assert len(w.source.requests) == reads  # the verdict is kept for the run
    assert gate.verify(pending(None)) is None  # no policy: no gate


def test_the_gate_refuses_a_replay_and_an_image_without_signature(tmp_path: Path) -> None:
    w = world()
    key = new_key()
    other = "sha256:" + "9" * 64
    sig, sig_blobs = cosign_sig_manifest([key_signed(key, simple_signing(other))])
    w.source.add(sig, sig_blobs, cosign_tag(DIGEST))
    policy = load_policy(keys=[key.write_public(tmp_path / "cosign.pub")])
    with pytest.raises(NotVerified, match=r"signature of another digest: .* a valid signature of"):
        Gate(w.finder).verify(pending(policy))
    with pytest.raises(NotVerified, match="not verified: no signature"):
        Gate(world().finder).verify(pending(policy))
