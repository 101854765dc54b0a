"""The manifests a run pulls from its sources: each GET made once, counted once, kept for the run.

Docker Hub counts a manifest GET as a pull, a HEAD not (FACTS.md). Every GET mirror makes on a
source goes through `Pulls`: the check's, when a HEAD gives no digest; the one that counts an
index's platforms before a copy is started; a platform subset's index; and every manifest
skopeo reads, which it reads through the source relay (mirror/relay.py), not from the source.
Each answer is kept by digest (checked against it) until the run ends, so a copy tried again
after the destination failed it (ECR throttling, a 5xx, a dropped upload) reads its manifests
from memory and pulls nothing again. The sources it is handed are metered
(mirror.schedule.Metered): what each GET reported goes to the budgets at once, and the pulls
spent are the GETs the source answered, which is what it counts.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from mirror.errors import SCHEMA1_REFUSAL, MirrorError, Unmirrorable
from mirror.http import hurried
from mirror.oci import SCHEMA1_TYPES, Descriptor, Manifest, digest_of
from mirror.ports import Source

MAX_KEPT = 256 << 20  # bytes of manifests kept at most; past it, a retry reads them again


class Pulls:
    """Every manifest GET on a source, made once per digest and run; thread-safe."""

    def __init__(self, sources: Callable[[str], Source]):
        self.sources = sources  # metered: every answer is entered in the pull budgets
        self._kept: dict[tuple[str, str, str], Manifest] = {}
        self._kept_bytes = 0
        self._locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._lock = threading.Lock()
        self._digestless: Counter[str] = Counter()  # GETs made because HEAD gave no digest

    def describe(self, host: str, path: str, reference: str, *, get: bool) -> Descriptor:
        """The source's manifest HEAD; when it gives no digest, a GET (with `get`: it is a
        pull), whose manifest is kept for the copy that follows."""
        head = self.sources(host).describe_manifest(path, reference, get=get)
        if head.fetched and head.found and head.digest:
            with self._lock:
                self._digestless[host] += 1
            self._keep((host, path, head.digest), Manifest(head.media_type, head.body))
        return head

    def manifest(
        self, host: str, path: str, digest: str, *, deadline: float | None = None
    ) -> Manifest:
        """The manifest `digest` of `host/path`, read from the source once per run, each read
        within `deadline` seconds when given (mirror.http.hurried; else --timeout). Raises
        MirrorError when it is not there or is not what was asked for, RateLimited on a 429."""
        key = (host, path, digest)
        with self._lock:
            kept = self._kept.get(key)
            lock = self._locks.setdefault(key, threading.Lock())
        if kept is not None:
            return kept
        with lock:  # two copies asking for one manifest at once: one GET
            with self._lock:
                kept = self._kept.get(key)
            if kept is not None:
                return kept
            with hurried(deadline):
                pulled = self.sources(host).pull_manifest(path, digest)
            if pulled is None:
                raise MirrorError(f"{host}/{path}@{digest}: not found on the source")
            if pulled.media_type in SCHEMA1_TYPES:  # its digest leaves its signatures out
                raise Unmirrorable(SCHEMA1_REFUSAL)
            served = digest_of(pulled.body, digest)
            if served != digest:
                raise MirrorError(
                    f"{host}/{path}: the source served a manifest whose digest is {served}, "
                    f"not the {digest} asked for"
                )
            return self._keep(key, Manifest(pulled.media_type, pulled.body))

    def kept(self, host: str, path: str, digest: str) -> Manifest | None:
        """The manifest if it is kept already (no request), else None."""
        with self._lock:
            return self._kept.get((host, path, digest))

    def has(self, host: str, path: str, digest: str) -> bool:
        """Is the manifest kept already (reading it again costs nothing)?"""
        with self._lock:
            return (host, path, digest) in self._kept

    def warnings(self) -> list[str]:
        """One line per source host that gave no digest on HEAD, with what it cost."""
        with self._lock:
            counts = sorted(self._digestless.items())
        return [
            f"{host} gives no digest on a manifest HEAD: every run reads each tag's manifest "
            f"with a GET, a pull ({count} pull{'s' if count != 1 else ''} in this run)"
            for host, count in counts
        ]

    def _keep(self, key: tuple[str, str, str], manifest: Manifest) -> Manifest:
        with self._lock:
            size = len(manifest.body)
            if key not in self._kept and self._kept_bytes + size <= MAX_KEPT:
                self._kept[key] = manifest
                self._kept_bytes += size
        return manifest
