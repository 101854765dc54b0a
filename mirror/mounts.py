"""Layer reuse, done: before skopeo copies an image from the source, mount into its repository
the blobs another repository of the same registry holds, so skopeo finds each with its HEAD
and uploads nothing (containers/image docker_image_dest.go: TryReusingBlobWithOptions asks
the destination repository first).

The blobs a copy writes are read from the manifests it copies, through `Manifests` (the run's
source manifests, each GET made once: skopeo then reads the same ones through the relay from
that cache), so knowing them costs no pull. Who uploads what is the `Board`'s
(mirror/layers.py). A mount is the OCI distribution spec's `POST
/v2/<name>/blobs/uploads/?mount=<digest>&from=<other>` (mirror/registry.py): 201 is mounted;
202 means the registry started an upload instead (ECR: the registry setting BLOB_MOUNTING is
off, FACTS.md), which is cancelled, and no mount is tried on that registry for the rest of
the run: from then on the run counts the bytes a mount could have saved, and says them once.
No error in mounting fails a copy: the copy uploads.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace

from mirror.errors import MirrorError, Stopped
from mirror.layers import Blob, Board, Place, Step, Ticket, blobs_of, children_of
from mirror.model import Mounting, Pending
from mirror.oci import Manifest
from mirror.ports import Manifests, Mountable
from mirror.reference import Repository
from mirror.workers import Workers

log = logging.getLogger("mirror")

ENABLE = "aws ecr put-account-setting --name BLOB_MOUNTING --value ENABLED"
LANDED_POLL = 0.25  # seconds between looks for a blob another copy is uploading
READERS = 8  # an index's children read at once at most


class Mounts:
    """Layer reuse for one run, over every target (`Reuse`); thread-safe."""

    def __init__(
        self,
        targets: Sequence[Mountable],
        manifests: Manifests,
        board: Board | None = None,
        *,
        readers: int = READERS,
    ):
        self.targets = list(targets)
        self.manifests = manifests
        self.board = board or Board()
        self.readers = readers  # an index's children read at once (1: in the copy's thread)
        self._figures = {target.host: Mounting(target.host) for target in self.targets}
        self._by_copy: Counter[tuple[object, int]] = Counter()
        self._counted: set[tuple[str, str, str]] = set()  # (host, repository, digest) unmounted
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def around(
        self,
        pending: Pending,
        source: Repository,
        digest: str,
        *,
        deadline: float | None,
        stop: threading.Event,
    ) -> Iterator[None]:
        """See ports.Reuse. Reading the manifests may raise what a copy's read would (a 429,
        a refused image); nothing else here does but a stop."""
        blobs = self.blobs(source, digest, deadline=deadline)
        if not blobs:
            yield
            return
        target = self.targets[pending.target]
        place = Place(target.host, pending.repository, self._encryption(target, pending.repository))
        ticket = self.board.claim(place, blobs)
        mounted: list[str] = []
        try:
            if self.board.blocked(ticket):
                log.debug(
                    "%s: waits for layers another copy is uploading to %s",
                    pending.destination,
                    target.host,
                )
            steps = self._wait(target, ticket, stop)
            mounted = self._mount(target, pending, steps, stop)
            yield
        except BaseException:
            self.board.settle(ticket, copied=False, mounted=mounted)
            raise
        self.board.settle(ticket, copied=True)

    def blobs(self, source: Repository, digest: str, *, deadline: float | None) -> list[Blob]:
        """The blobs a copy of `source@digest` writes: an image's config and layers; an
        index's children's (every entry: skopeo copies them all). None for an index of
        indexes: it is copied part by part, and each part says its own."""
        top = self.manifests.manifest(source.registry, source.path, digest, deadline=deadline)
        children = children_of(top)
        if children is None:
            return []
        manifests = self._read(source, children, deadline=deadline) or [top]
        found: dict[str, Blob] = {}
        for manifest in manifests:
            found.update((blob.digest, blob) for blob in blobs_of(manifest))
        return list(found.values())

    def _read(
        self, source: Repository, digests: list[str], *, deadline: float | None
    ) -> list[Manifest]:
        """An index's children, read at once (skopeo would read them one after another,
        each before its platform's blobs; it then finds them read)."""

        def read(digest: str) -> Manifest:
            return self.manifests.manifest(source.registry, source.path, digest, deadline=deadline)

        inline = min(len(digests), self.readers) < 2
        with Workers(min(len(digests), self.readers), "manifests", inline=inline) as pool:
            futures = [pool.submit(read, digest) for digest in digests]
            return [future.result() for future in futures]

    def mounted(self, key: tuple[object, int]) -> int:
        with self._lock:
            return self._by_copy[key]

    def figures(self) -> list[Mounting]:
        """What each target registry's layer reuse came to, in target order, once per
        registry (two targets may share one, with other repository prefixes)."""
        with self._lock:
            return list(self._figures.values())

    def warnings(self) -> list[str]:
        """One line per registry that refused a mount or failed one."""
        lines = []
        for figures in self.figures():
            if figures.refused:
                lines.append(
                    f"{figures.registry} does not mount layers across repositories (ECR's "
                    f"BLOB_MOUNTING setting is off): mounting would have saved "
                    f"{size_text(figures.unmounted_bytes)} of uploads in this run; turn it on "
                    f"with `{ENABLE}`"
                )
            elif figures.failed:
                lines.append(
                    f"{figures.registry}: a layer mount failed ({figures.failed}); layers were "
                    "uploaded for the rest of the run"
                )
        return lines

    # --- the mounts -------------------------------------------------------------------------

    def _wait(self, target: Mountable, ticket: Ticket, stop: threading.Event) -> list[Step]:
        """Wait for the uploads of earlier copies this one can reuse: until each copy ends,
        or, sooner, until its blob is seen in its repository (a HEAD every LANDED_POLL
        seconds: skopeo uploads the blobs of an image before its manifest, and the rest of
        that copy need not be waited for)."""
        while True:
            steps = self.board.wait(ticket, stop.is_set, timeout=LANDED_POLL)
            if stop.is_set():
                raise Stopped
            if steps is not None:
                return steps
            for place, digest in self.board.awaited(ticket):
                try:
                    there = target.registry.has_blob(place.repository, digest)
                except Stopped:
                    raise
                except MirrorError as error:  # the wait goes on: the copy's end will do
                    log.debug("%s: %s not seen: %s", place.repository, digest, error)
                    continue
                if there:
                    self.board.landed(place, digest)

    def _mount(
        self, target: Mountable, pending: Pending, steps: list[Step], stop: threading.Event
    ) -> list[str]:
        """Mount each blob another repository holds; count those that are uploaded instead
        once mounts stopped. A blob the repository holds already (from an earlier run, or
        from an earlier try of this copy) is neither: skopeo finds it with its HEAD."""
        mounted: list[str] = []
        for step in steps:
            if stop.is_set():
                raise Stopped
            if step.here or step.uploads or not step.elsewhere:
                continue
            if self._there(target, pending.repository, step.blob):
                continue
            if step.mount_from is None or not self.board.mounts(target.host):
                self._unmounted(target.host, pending.repository, step.blob)
                continue
            if self._mount_one(target, pending, step.blob, step.mount_from):
                mounted.append(step.blob.digest)
        return mounted

    @staticmethod
    def _there(target: Mountable, repository: str, blob: Blob) -> bool:
        """Does the repository hold the blob already? (False when the HEAD fails.)"""
        try:
            return target.registry.has_blob(repository, blob.digest)
        except Stopped:
            raise
        except MirrorError as error:
            log.debug("%s: %s not seen: %s", repository, blob.digest, error)
            return False

    def _mount_one(self, target: Mountable, pending: Pending, blob: Blob, source: str) -> bool:
        """Mount one blob; False when it was not (the copy uploads it)."""
        repository = pending.repository
        try:
            done = target.registry.mount_blob(repository, blob.digest, source)
        except Stopped:
            raise
        except MirrorError as error:
            log.debug("%s: mounting %s from %s: %s", repository, blob.digest, source, error)
            self.board.refuse(target.host)
            self._change(target.host, failed=str(error))
            return False
        if not done and self._mounted_on(target.host):  # the setting is on: not this pair
            log.debug(
                "%s: %s not mounted from %s (202), where other mounts worked: uploaded",
                repository,
                blob.digest,
                source,
            )
            return False
        if not done:
            log.debug("%s refused to mount %s from %s (202)", target.host, blob.digest, source)
            self.board.refuse(target.host)
            self._change(target.host, refused=True)
            self._unmounted(target.host, repository, blob)
            return False
        log.debug("%s: mounted %s (%d bytes) from %s", repository, blob.digest, blob.size, source)
        with self._lock:
            figures = self._figures[target.host]
            self._figures[target.host] = replace(
                figures, mounts=figures.mounts + 1, mounted_bytes=figures.mounted_bytes + blob.size
            )
            self._by_copy[pending.key] += blob.size
        return True

    def _mounted_on(self, host: str) -> bool:
        """Has a mount worked on `host` in this run? Then its BLOB_MOUNTING is on, and a 202
        says only that these two repositories cannot share the blob (their encryption)."""
        with self._lock:
            return self._figures[host].mounts > 0

    def _unmounted(self, host: str, repository: str, blob: Blob) -> None:
        """A blob uploaded that a mount could have saved (counted once mounts stopped), once
        per repository: a copy tried again uploads it at most once."""
        if self.board.mounts(host):
            return
        with self._lock:
            if (host, repository, blob.digest) in self._counted:
                return
            self._counted.add((host, repository, blob.digest))
            figures = self._figures[host]
            self._figures[host] = replace(
                figures, unmounted_bytes=figures.unmounted_bytes + blob.size
            )

    def _change(self, host: str, *, refused: bool = False, failed: str | None = None) -> None:
        with self._lock:
            figures = self._figures[host]
            self._figures[host] = replace(
                figures,
                refused=figures.refused or refused,
                failed=figures.failed or failed,
            )

    @staticmethod
    def _encryption(target: Mountable, repository: str) -> str:
        try:
            return target.encryption(repository)
        except MirrorError as error:  # unknown: mounted into from nowhere, nor from it
            log.debug("%s: its encryption is not known: %s", repository, error)
            return f"unknown ({repository})"


def size_text(size: int) -> str:
    """Bytes as a person reads them: `41.6 MB` (decimal units, as ECR's console shows), in
    the smallest unit that shows the figure below 1000 (999,950 bytes is `1.0 MB`, not
    `1000.0 kB`)."""
    if size < 1000:
        return f"{size} byte{'s' if size != 1 else ''}"
    for unit, scale in (("kB", 1e3), ("MB", 1e6), ("GB", 1e9)):
        if round(size / scale, 1) < 1000:
            return f"{size / scale:.1f} {unit}"
    return f"{size / 1e12:.1f} TB"
