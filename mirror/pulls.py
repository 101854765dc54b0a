"""The manifests a run pulls from its sources: each GET made once, counted once, kept for the run.

Docker Hub counts a manifest GET as a pull, a HEAD not (FACTS.md). Every GET mirror makes on a
source goes through `Pulls`: the check's, when a HEAD gives no digest; the one that counts an
index's platforms before a copy is started; a platform subset's index; and every manifest
skopeo reads, which it reads through the source relay (mirror/relay.py), not from the source.
Each answer is kept by digest (checked against it) until the run ends, so a copy tried again
after the destination failed it (ECR throttling, a 5xx, a dropped upload) reads its manifests
from memory and pulls nothing again. What each GET reported goes to the budgets at once: the
pulls spent are the GETs the source answered, which is what it counts.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Callable
from typing import Protocol, TypeVar

from mirror.errors import (
    SCHEMA1_REFUSAL,
    MirrorError,
    RateLimited,
    Unmirrorable,
    run_again_later,
)
from mirror.registry import SCHEMA1_TYPES, Head, Pulled, RateLimit

_T = TypeVar("_T")
MAX_KEPT = 256 << 20  # bytes of manifests kept at most; past it, a retry reads them again


class Source(Protocol):
    """What `Pulls` needs of a source registry (mirror.registry.Registry is the real one)."""

    host: str

    def describe_manifest(
        self, path: str, reference: str, *, get: bool | Callable[[RateLimit | None], bool] = True
    ) -> Head: ...

    def pull_manifest(self, path: str, reference: str) -> Pulled | None: ...


class Spending(Protocol):
    """What `Pulls` tells the pull budgets (mirror.schedule.Budgets)."""

    def see(self, host: str, rate_limit: RateLimit | None) -> None: ...

    def pulled(self, host: str, rate_limit: RateLimit | None, *, claimed: bool = False) -> None: ...

    def unclaim(self, host: str) -> None: ...

    def limited(self, host: str, why: str) -> None: ...


class Pulls:
    """Every manifest GET on a source, made once per digest and run; thread-safe."""

    def __init__(self, sources: Callable[[str], Source], budgets: Spending):
        self.sources = sources
        self.budgets = budgets
        self._kept: dict[tuple[str, str, str], tuple[str, bytes]] = {}
        self._kept_bytes = 0
        self._locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._lock = threading.Lock()
        self._digestless: Counter[str] = Counter()  # GETs made because HEAD gave no digest

    def describe(self, host: str, path: str, reference: str, *, get: Callable[[], bool]) -> Head:
        """The source's manifest HEAD; when it gives no digest, a GET (if `get()` allows: it
        is a pull), whose manifest is kept for the copy that follows. `get()` is asked after
        the budgets have the HEAD's figures; saying yes, it has claimed the pull from them
        (Budgets.claim), which is settled here: spent when answered, else given back."""
        claimed = False

        def allowed(rate_limit: RateLimit | None) -> bool:
            nonlocal claimed
            self.budgets.see(host, rate_limit)
            claimed = get()
            return claimed

        try:
            head = self._ask(
                host, lambda: self.sources(host).describe_manifest(path, reference, get=allowed)
            )
        except BaseException:
            if claimed:
                self.budgets.unclaim(host)
            raise
        if head.fetched and head.found and head.digest:
            self.budgets.pulled(host, head.rate_limit, claimed=claimed)
            with self._lock:
                self._digestless[host] += 1
            self._keep((host, path, head.digest), head.media_type, head.body)
        else:
            if claimed:
                self.budgets.unclaim(host)
            self.budgets.see(host, head.rate_limit)
        return head

    def manifest(self, host: str, path: str, digest: str) -> tuple[str, bytes]:
        """The manifest `digest` of `host/path`: (media type, bytes), read from the source
        once per run. Raises MirrorError when it is not there or is not what was asked for,
        RateLimited (after telling the budgets) on a 429."""
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
            pulled = self._ask(host, lambda: self.sources(host).pull_manifest(path, digest))
            if pulled is None:
                raise MirrorError(f"{host}/{path}@{digest}: not found on the source")
            self.budgets.pulled(host, pulled.rate_limit)
            if pulled.media_type in SCHEMA1_TYPES:  # its digest leaves its signatures out
                raise Unmirrorable(SCHEMA1_REFUSAL)
            served = digest_of(pulled.body, digest)
            if served != digest:
                raise MirrorError(
                    f"{host}/{path}: the source served a manifest whose digest is {served}, "
                    f"not the {digest} asked for"
                )
            return self._keep(key, pulled.media_type, pulled.body)

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

    def _ask(self, host: str, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except RateLimited as error:
            self.budgets.limited(error.host or host, run_again_later(error))
            raise

    def _keep(self, key: tuple[str, str, str], media_type: str, body: bytes) -> tuple[str, bytes]:
        with self._lock:
            if key not in self._kept and self._kept_bytes + len(body) <= MAX_KEPT:
                self._kept[key] = (media_type, body)
                self._kept_bytes += len(body)
        return media_type, body


def digest_of(body: bytes, like: str) -> str:
    """The digest of `body` in the algorithm of `like` (sha256, sha384 or sha512)."""
    algorithm = like.partition(":")[0]
    if algorithm not in ("sha256", "sha384", "sha512"):
        algorithm = "sha256"
    return f"{algorithm}:{hashlib.new(algorithm, body).hexdigest()}"
