"""The run: check every image with HEADs, then copy what changed. Plain Python, no processes.

The boundaries come in as small protocols, so unit tests can hand in fakes and the CLI hands in
the real registry client, skopeo and ECR.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from mirror.errors import MirrorError, RateLimited
from mirror.reference import ImageRef
from mirror.registry import Head, RateLimit

COPIED = "copied"
UP_TO_DATE = "up-to-date"
FAILED = "failed"
WOULD_COPY = "would-copy"
DEFERRED = "deferred"
ACTIONS = (COPIED, UP_TO_DATE, WOULD_COPY, DEFERRED, FAILED)
T = TypeVar("T")


class Registry(Protocol):
    host: str
    tls_verify: bool

    def head_manifest(self, path: str, reference: str) -> Head: ...


class Copier(Protocol):
    def copy(
        self, source: str, destination: str, *, src_tls_verify: bool, dest_tls_verify: bool
    ) -> str: ...


@dataclass(frozen=True)
class Task:
    """One tag to mirror: where it comes from and the ECR repository and tag it lands in."""

    source: ImageRef
    repository: str
    tag: str

    def destination(self, host: str) -> str:
        return f"{host}/{self.repository}:{self.tag}"


@dataclass
class Outcome:
    task: Task
    action: str
    destination: str
    digest: str | None = None
    error: str | None = None
    seconds: float = 0.0


@dataclass
class Budget:
    """The pull budget as the source's headers tell it; None = not limited."""

    start: RateLimit | None = None
    last: RateLimit | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def see(self, rate_limit: RateLimit | None) -> None:
        if rate_limit is None:
            return
        with self._lock:
            if self.start is None:
                self.start = rate_limit
            self.last = rate_limit


@dataclass
class Result:
    outcomes: list[Outcome]
    budget: Budget
    rate_limited: bool = False
    signum: int | None = None  # the signal that stopped the run, if one did


@dataclass
class Settings:
    jobs: int = 4
    dry_run: bool = False
    copy_attempts: int = 3
    backoff: float = 1.0  # seconds before the second attempt; doubles, with jitter


class Engine:
    """Checks and copies a list of tasks with a pool of `jobs` threads."""

    def __init__(
        self,
        *,
        sources: Callable[[str], Registry],
        destination: Registry,
        destination_host: str,
        copier: Copier,
        ensure_repository: Callable[[str], object],
        settings: Settings,
        stop: threading.Event | None = None,
    ):
        self.sources = sources
        self.destination = destination
        self.destination_host = destination_host
        self.copier = copier
        self.ensure_repository = ensure_repository
        self.settings = settings
        self.stop = stop or threading.Event()
        self.budget = Budget()
        self._rate_limited = threading.Event()

    def run(self, tasks: Sequence[Task]) -> Result:
        checked = self._map(self._check, tasks)
        pending = [outcome for outcome in checked if outcome.action == WOULD_COPY]
        if not self.settings.dry_run:
            copied = {id(o.task): o for o in self._map(self._copy, pending)}
            checked = [copied.get(id(o.task), o) for o in checked]
        return Result(checked, self.budget, self._rate_limited.is_set())

    def _map(self, work: Callable[[T], Outcome], items: Iterable[T]) -> list[Outcome]:
        with ThreadPoolExecutor(max_workers=max(1, self.settings.jobs)) as pool:
            return list(pool.map(work, items))

    # --- phase 1: HEADs on both sides -----------------------------------------------------------

    def _check(self, task: Task) -> Outcome:
        started = time.monotonic()
        outcome = Outcome(task, WOULD_COPY, task.destination(self.destination_host))
        if self._halted():
            return self._defer(outcome, started)
        try:
            source = self._head_source(task)
            if not source.found:
                return _fail(outcome, f"{task.source}: tag not found on the source", started)
            outcome.digest = source.digest
            target = self.destination.head_manifest(task.repository, task.tag)
            if target.found and source.digest and target.digest == source.digest:
                outcome.action = UP_TO_DATE
        except RateLimited:
            self._rate_limited.set()
            return self._defer(outcome, started)
        except MirrorError as error:
            return _fail(outcome, str(error), started)
        outcome.seconds = time.monotonic() - started
        return outcome

    def _head_source(self, task: Task) -> Head:
        registry = self.sources(task.source.repository.registry)
        reference = task.source.digest or task.source.tag or "latest"
        head = registry.head_manifest(task.source.repository.path, reference)
        self.budget.see(head.rate_limit)
        return head

    # --- phase 2: copies -------------------------------------------------------------------------

    def _copy(self, outcome: Outcome) -> Outcome:
        started = time.monotonic()
        for attempt in range(1, self.settings.copy_attempts + 1):
            if self._halted():
                break
            try:
                self.ensure_repository(outcome.task.repository)
                outcome.digest = self._copy_once(outcome.task)
            except MirrorError as error:
                verdict = self._verdict(error, attempt)
                if verdict == FAILED:
                    return _fail(outcome, _after(str(error), attempt), started)
                if verdict == DEFERRED:
                    break
                self._sleep_before(attempt + 1)
                continue
            outcome.action = COPIED
            outcome.seconds = time.monotonic() - started
            return outcome
        return self._defer(outcome, started)

    def _verdict(self, error: MirrorError, attempt: int) -> str:
        """After a failed attempt: DEFERRED (stopped or rate limited), FAILED, or "retry"."""
        if self.stop.is_set():
            return DEFERRED  # we stopped skopeo ourselves
        if isinstance(error, RateLimited) or getattr(error, "rate_limited", False):
            self._rate_limited.set()
            return DEFERRED
        if getattr(error, "transient", False) and attempt < self.settings.copy_attempts:
            return "retry"
        return FAILED

    def _copy_once(self, task: Task) -> str:
        source = self.sources(task.source.repository.registry)
        reference = str(task.source)
        return self.copier.copy(
            reference,
            task.destination(self.destination_host),
            src_tls_verify=source.tls_verify,
            dest_tls_verify=self.destination.tls_verify,
        )

    def _sleep_before(self, attempt: int) -> None:
        delay = self.settings.backoff * 2 ** (attempt - 2)
        self.stop.wait(delay * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not crypto

    # --- helpers ---------------------------------------------------------------------------------

    def _halted(self) -> bool:
        return self.stop.is_set() or self._rate_limited.is_set()

    def _defer(self, outcome: Outcome, started: float) -> Outcome:
        outcome.action = DEFERRED
        outcome.error = (
            "interrupted before it was done"
            if self.stop.is_set()
            else "pull rate limit reached; run again later"
        )
        outcome.seconds = time.monotonic() - started
        return outcome


def _fail(outcome: Outcome, message: str, started: float) -> Outcome:
    outcome.action = FAILED
    outcome.error = message
    outcome.seconds = time.monotonic() - started
    return outcome


def _after(message: str, attempts: int) -> str:
    return f"{message} (after {attempts} attempts)" if attempts > 1 else message
