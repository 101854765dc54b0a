"""Layer reuse inside a destination registry: which blobs a copy writes, and who uploads each.

Every `ruby`, `node` and `python` image shares its Debian base: copied into several ECR
repositories of one registry, that base needs uploading once; the other repositories can
mount it (the OCI distribution spec's cross-repository mount; ECR only with the registry
setting BLOB_MOUNTING and between repositories of the same encryption, FACTS.md). skopeo mounts
only from what its blob-info cache knows, and copies that start together know nothing of each
other, so each uploads the base. The `Board` is what they know together, per run:

- which repository of which registry holds which blob (learnt this run: the blobs of every
  copy that succeeded, and those mounted);
- which blobs the copies in flight are uploading (a claim each, held by one copy).

A copy takes its claims in one step (`Board.claim`): each blob it writes that nobody holds
or uploads becomes its own to upload. A blob another copy is uploading is waited for
(`Board.wait`), until that copy ends or the blob is seen in its repository (`Board.landed`),
then mounted. Claims are numbered in the order they are taken, and a copy
waits only for claims numbered below its own, so waits never form a cycle; a copy that
fails gives its claims to the earliest copy waiting for them (`Board.settle`), which then
uploads them. Plain typed Python: no I/O (mirror/mounts.py does the requests).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mirror.oci import INDEX_TYPES, Manifest

WAIT_SLICE = 0.05  # seconds between looks at `stop` while waiting for another copy's upload


@dataclass(frozen=True)
class Blob:
    """A blob a manifest names (its config or a layer): digest and size in bytes."""

    digest: str
    size: int


def blobs_of(manifest: Manifest) -> list[Blob]:
    """The blobs a copy of this image manifest writes: its config and its layers, in order,
    without foreign layers (a layer with `urls`: skopeo copies only its descriptor). None ([])
    for an index or for a document that is not a manifest."""
    document = _document(manifest)
    if document is None or manifest.media_type in INDEX_TYPES or "manifests" in document:
        return []
    descriptors = [document.get("config"), *(document.get("layers") or [])]
    found: dict[str, Blob] = {}
    for descriptor in descriptors:
        blob = _blob(descriptor)
        if blob is not None and not descriptor.get("urls"):
            found.setdefault(blob.digest, blob)
    return list(found.values())


def children_of(manifest: Manifest) -> list[str] | None:
    """The digests of an index's entries, when every entry is an image manifest; None for an
    index that holds indexes (copied part by part: each part says its own blobs), and [] for
    anything that is not an index."""
    document = _document(manifest)
    if document is None or not isinstance(document.get("manifests"), list):
        return []
    digests = []
    for entry in document["manifests"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
            return None
        if entry.get("mediaType") in INDEX_TYPES:
            return None
        digests.append(entry["digest"])
    return list(dict.fromkeys(digests))


def _document(manifest: Manifest) -> dict[str, Any] | None:
    try:
        document = json.loads(manifest.body)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def _blob(descriptor: Any) -> Blob | None:
    if not isinstance(descriptor, dict):
        return None
    digest, size = descriptor.get("digest"), descriptor.get("size")
    if not isinstance(digest, str) or not isinstance(size, int) or isinstance(size, bool):
        return None
    return Blob(digest, max(0, size))


@dataclass(frozen=True)
class Place:
    """A repository of a registry, with its encryption (a blob mounts only between
    repositories of the same encryption)."""

    registry: str  # the host
    repository: str
    encryption: str = "AES256"


@dataclass(eq=False)
class Ticket:
    """One copy's claims on the board: taken by `Board.claim`, ended by `Board.settle`."""

    number: int
    place: Place
    blobs: tuple[Blob, ...]
    owned: set[str] = field(default_factory=set)  # digests this copy uploads
    running: bool = False  # done waiting: its upload has started
    settled: bool = False


@dataclass(frozen=True)
class Step:
    """What to do about one blob before the copy starts: `mount_from` a repository of the
    same registry that holds it; else nothing (the copy uploads it, or finds it there)."""

    blob: Blob
    mount_from: str | None = None
    here: bool = False  # the repository holds it already (learnt this run)
    elsewhere: bool = False  # another repository of the registry holds or uploads it
    uploads: bool = False  # this copy's claim: it uploads it


class Board:
    """Who holds and who uploads which blob, per registry, for one run; thread-safe."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], dict[str, str]] = {}  # (registry, digest): repo->enc
        self._claims: dict[tuple[str, str], Ticket] = {}  # (registry, digest): its uploader
        self._live: list[Ticket] = []
        self._no_mounts: set[str] = set()  # registries that refused a mount
        self._numbers = itertools.count(1)
        self._changed = threading.Condition()

    def claim(self, place: Place, blobs: Iterable[Blob]) -> Ticket:
        """Claim, in one step, every blob of `blobs` that no repository of the registry holds
        and no copy uploads: this copy uploads those."""
        with self._changed:
            ticket = Ticket(next(self._numbers), place, tuple(dict.fromkeys(blobs)))
            for blob in ticket.blobs:
                key = (place.registry, blob.digest)
                if key not in self._claims and not self._held.get(key):
                    self._claims[key] = ticket
                    ticket.owned.add(blob.digest)
            self._live.append(ticket)
            return ticket

    def refuse(self, registry: str) -> None:
        """The registry does not mount (ECR: BLOB_MOUNTING off): copies into other
        repositories no longer wait for each other's uploads there."""
        with self._changed:
            self._no_mounts.add(registry)
            self._changed.notify_all()

    def mounts(self, registry: str) -> bool:
        """May a mount on `registry` still be tried in this run?"""
        with self._changed:
            return registry not in self._no_mounts

    def wait(
        self, ticket: Ticket, stop: Callable[[], bool], *, timeout: float | None = None
    ) -> list[Step] | None:
        """Wait until no blob of the copy is being uploaded by an earlier copy that it could
        then reuse (one into the same repository, or, where the registry mounts, into
        another of the same encryption) and is not there yet; then the steps, one per
        blob. Returns early, with the steps as they are, once `stop()` is true; None when
        still waiting after `timeout` seconds."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while self._blocking(ticket) and not stop():
                if end is not None and time.monotonic() >= end:
                    return None
                self._changed.wait(WAIT_SLICE)
            ticket.running = True
            return [self._step(ticket, blob) for blob in ticket.blobs]

    def awaited(self, ticket: Ticket) -> list[tuple[Place, str]]:
        """The uploads the copy waits for: where each goes, and the blob's digest."""
        with self._changed:
            return [
                (owner.place, blob.digest)
                for blob in ticket.blobs
                if (owner := self._waited_for(ticket, blob)) is not None
            ]

    def landed(self, place: Place, digest: str) -> None:
        """The blob is in `place` now (its upload ended before the copy that made it did):
        the copies waiting for it may go on."""
        with self._changed:
            self._held.setdefault((place.registry, digest), {})[place.repository] = place.encryption
            self._changed.notify_all()

    def blocked(self, ticket: Ticket) -> bool:
        """Would the copy wait now (an earlier copy uploads a blob of it it could reuse)?"""
        with self._changed:
            return self._blocking(ticket)

    def settle(self, ticket: Ticket, *, copied: bool, mounted: Sequence[str] = ()) -> None:
        """The copy ended. `copied`: its repository now holds every blob of it; else only
        those `mounted`, and each blob it was to upload goes to the earliest copy still
        waiting for it (that copy uploads it instead), or back to nobody."""
        with self._changed:
            if ticket.settled:
                return
            ticket.settled = True
            self._live.remove(ticket)
            place = ticket.place
            held = [blob.digest for blob in ticket.blobs] if copied else list(mounted)
            for digest in held:
                self._held.setdefault((place.registry, digest), {})[place.repository] = (
                    place.encryption
                )
            for digest in ticket.owned:
                key = (place.registry, digest)
                if self._claims.get(key) is ticket:
                    del self._claims[key]
                    if not copied:
                        self._hand_on(key)
            self._changed.notify_all()

    def holders(self, registry: str, digest: str) -> dict[str, str]:
        """The repositories of `registry` known to hold the blob, with their encryption."""
        with self._changed:
            return dict(self._held.get((registry, digest), {}))

    # --- under the lock ---------------------------------------------------------------------------

    def _blocking(self, ticket: Ticket) -> bool:
        return any(self._waited_for(ticket, blob) is not None for blob in ticket.blobs)

    def _waited_for(self, ticket: Ticket, blob: Blob) -> Ticket | None:
        """The earlier copy uploading `blob` that this one waits for, if any: not once the
        blob is in this repository or in one it can be mounted from."""
        owner = self._claims.get((ticket.place.registry, blob.digest))
        if owner is None or owner is ticket or owner.number > ticket.number:
            return None
        step = self._step(ticket, blob)
        if step.here or step.mount_from is not None:
            return None
        return owner if self._reusable(ticket, owner.place) else None

    def _reusable(self, ticket: Ticket, place: Place) -> bool:
        """Would an upload into `place` spare this copy its own?"""
        if place.repository == ticket.place.repository:
            return True
        return place.encryption == ticket.place.encryption and self._mountable(place.registry)

    def _mountable(self, registry: str) -> bool:
        return registry not in self._no_mounts

    def _step(self, ticket: Ticket, blob: Blob) -> Step:
        place = ticket.place
        key = (place.registry, blob.digest)
        holders = self._held.get(key, {})
        if place.repository in holders:
            return Step(blob, here=True)
        same = sorted(repo for repo, enc in holders.items() if enc == place.encryption)
        owner = self._claims.get(key)
        uploading = (
            owner is not None and owner is not ticket and owner.place.encryption == place.encryption
        )
        elsewhere = bool(same) or uploading
        source = same[0] if same and self._mountable(place.registry) else None
        return Step(
            blob, mount_from=source, elsewhere=elsewhere, uploads=blob.digest in ticket.owned
        )

    def _hand_on(self, key: tuple[str, str]) -> None:
        """A blob whose uploader failed: the earliest copy still waiting for it uploads it."""
        registry, digest = key
        for waiting in self._live:  # in the order they claimed
            if waiting.running or waiting.place.registry != registry:
                continue
            needs = any(blob.digest == digest for blob in waiting.blobs)
            if needs and waiting.place.repository not in self._held.get(key, {}):
                self._claims[key] = waiting
                waiting.owned.add(digest)
                return
