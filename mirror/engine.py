"""The run: check every image with HEADs, then copy what changed within the pull budget.

Plain Python, no processes: the boundaries come in as small protocols, so unit tests hand in
fakes and the CLI hands in the real registry client, skopeo and ECR.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from mirror.errors import MirrorError, RateLimited
from mirror.reference import ImageRef
from mirror.registry import Head, RateLimit

COPIED = "copied"
UP_TO_DATE = "up-to-date"
FAILED = "failed"
WOULD_COPY = "would-copy"
DEFERRED = "deferred"
ACTIONS = (COPIED, UP_TO_DATE, WOULD_COPY, DEFERRED, FAILED)
INDEX_ENTRY_BYTES = 400  # about one platform's entry in an image index, to guess its platforms
_SLICE = 0.1  # seconds the main thread waits at a time


class Registry(Protocol):
    host: str
    tls_verify: bool

    def head_manifest(self, path: str, reference: str) -> Head: ...

    def get_manifest(self, path: str, reference: str) -> dict[str, Any] | None: ...

    def check_login(self, path: str) -> None: ...


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
    pulls: int = 0  # the pulls a copy is expected to cost on the source


@dataclass
class Budget:
    """The pull budget: what the source's headers say is left, and --max-pulls.

    `last.remaining` is lowered by each copy's estimate as it finishes, then corrected by a
    fresh HEAD (which costs nothing) when the source reports a limit at all.
    """

    max_pulls: int | None = None
    start: RateLimit | None = None
    last: RateLimit | None = None
    spent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def see(self, rate_limit: RateLimit | None) -> None:
        if rate_limit is None:
            return
        with self._lock:
            if self.start is None:
                self.start = rate_limit
            self.last = rate_limit

    def spend(self, pulls: int) -> None:
        with self._lock:
            self.spent += pulls
            if self.last is not None:
                remaining = max(0, self.last.remaining - pulls)
                self.last = RateLimit(self.last.limit, remaining)

    def shortfall(self, pulls: int, reserved: int) -> str | None:
        """Why `pulls` more cannot be spent now (with `reserved` promised to running copies)."""
        with self._lock:
            if self.max_pulls is not None and self.spent + reserved + pulls > self.max_pulls:
                return f"--max-pulls {self.max_pulls} reached; run again later"
            if self.last is not None and self.last.remaining - reserved < pulls:
                return (
                    f"pull budget: needs {pulls}, {self.last.remaining - reserved} left of "
                    f"{self.last.limit}; run again later"
                )
        return None


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
    max_pulls: int | None = None
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
        is_immutable: Callable[[str], bool] = lambda repository: False,
        stop: threading.Event | None = None,
    ):
        self.sources = sources
        self.destination = destination
        self.destination_host = destination_host
        self.copier = copier
        self.ensure_repository = ensure_repository
        self.is_immutable = is_immutable
        self.settings = settings
        self.stop = stop or threading.Event()
        self.budget = Budget(max_pulls=settings.max_pulls)
        self._rate_limited = threading.Event()

    def run(self, tasks: Sequence[Task]) -> Result:
        self._check_logins(tasks)
        with ThreadPoolExecutor(max_workers=max(1, self.settings.jobs)) as pool:
            outcomes = _gather([pool.submit(self._check, task) for task in tasks])
            if not self.settings.dry_run:
                self._copy_all(pool, [o for o in outcomes if o.action == WOULD_COPY])
        return Result(outcomes, self.budget, self._rate_limited.is_set())

    def _check_logins(self, tasks: Sequence[Task]) -> None:
        """Try each source's credentials once: wrong ones are one error (AuthError), not N."""
        first_path: dict[str, str] = {}
        for task in tasks:
            first_path.setdefault(task.source.repository.registry, task.source.repository.path)
        for host, path in first_path.items():
            self.sources(host).check_login(path)

    # --- phase 1: HEADs on both sides -----------------------------------------------------------

    def _check(self, task: Task) -> Outcome:
        started = time.monotonic()
        outcome = Outcome(task, WOULD_COPY, task.destination(self.destination_host))
        if self._halted():
            return self._defer(outcome, started)
        try:
            self._compare(outcome)
        except RateLimited:
            self._rate_limited.set()
            return self._defer(outcome, started)
        except MirrorError as error:
            return _fail(outcome, str(error), started)
        outcome.seconds = time.monotonic() - started
        return outcome

    def _compare(self, outcome: Outcome) -> None:
        task = outcome.task
        source = self._head_source(task)
        if not source.found:
            raise MirrorError(f"{task.source}: tag not found on the source")
        outcome.digest = source.digest
        target = self.destination.head_manifest(task.repository, task.tag)
        if target.found and source.digest and target.digest == source.digest:
            outcome.action = UP_TO_DATE
            return
        if target.found and self.is_immutable(task.repository):
            raise MirrorError(
                f"{outcome.destination} holds {target.digest} and the repository is IMMUTABLE: "
                f"not overwritten with {source.digest}"
            )
        outcome.pulls = self._estimate_pulls(task, source, target)

    def _head_source(self, task: Task) -> Head:
        registry = self.sources(task.source.repository.registry)
        reference = task.source.digest or task.source.tag or "latest"
        head = registry.head_manifest(task.source.repository.path, reference)
        self.budget.see(head.rate_limit)
        return head

    def _estimate_pulls(self, task: Task, source: Head, target: Head) -> int:
        """What copying will cost: one manifest GET, plus one per platform of an index.

        The platform count comes from the previous copy in ECR when there is one (a GET there
        is free), else from the index's size as the HEAD reported it.
        """
        if not source.is_index:
            return 1
        platforms = 0
        if target.found and target.is_index:
            previous = self.destination.get_manifest(task.repository, task.tag) or {}
            platforms = len(previous.get("manifests") or [])
        if not platforms:
            platforms = max(1, math.ceil(source.size / INDEX_ENTRY_BYTES))
        return 1 + platforms

    # --- phase 2: copies, admitted in order while the budget covers them ------------------------

    def _copy_all(self, pool: ThreadPoolExecutor, pending: Iterable[Outcome]) -> None:
        queue = deque(pending)
        running: dict[Future[Outcome], Outcome] = {}
        reason = None
        while queue and not self._halted():
            reserved = sum(outcome.pulls for outcome in running.values())
            reason = self.budget.shortfall(queue[0].pulls, reserved)
            if reason is None:
                outcome = queue.popleft()
                running[pool.submit(self._copy, outcome)] = outcome
            elif running:
                done, _ = wait(running, timeout=_SLICE, return_when=FIRST_COMPLETED)
                for future in done:
                    running.pop(future)
            else:
                break
        _gather(list(running))
        for outcome in queue:
            self._defer(outcome, time.monotonic(), reason)

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
            finally:
                self.budget.spend(outcome.pulls)
            outcome.action = COPIED
            outcome.seconds = time.monotonic() - started
            self._refresh_budget(outcome.task)
            return outcome
        return self._defer(outcome, started)

    def _copy_once(self, task: Task) -> str:
        source = self.sources(task.source.repository.registry)
        return self.copier.copy(
            str(task.source),
            task.destination(self.destination_host),
            src_tls_verify=source.tls_verify,
            dest_tls_verify=self.destination.tls_verify,
        )

    def _refresh_budget(self, task: Task) -> None:
        """Read the true budget left after a copy, with a HEAD (free) on the same image."""
        if self.budget.last is None:
            return
        try:
            self._head_source(task)
        except RateLimited:
            self._rate_limited.set()
        except MirrorError:
            pass  # the estimate stands

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

    def _sleep_before(self, attempt: int) -> None:
        delay = self.settings.backoff * 2 ** (attempt - 2)
        self.stop.wait(delay * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not crypto

    # --- helpers ---------------------------------------------------------------------------------

    def _halted(self) -> bool:
        return self.stop.is_set() or self._rate_limited.is_set()

    def _defer(self, outcome: Outcome, started: float, reason: str | None = None) -> Outcome:
        outcome.action = DEFERRED
        if self.stop.is_set():
            reason = "interrupted before it was done"
        elif self._rate_limited.is_set():
            reason = "pull rate limit reached (429); run again later"
        outcome.error = reason or "not started"
        outcome.seconds = time.monotonic() - started
        return outcome


def _gather(futures: list[Future[Outcome]]) -> list[Outcome]:
    """Wait for every future in short slices: the main thread must keep running Python code,
    because only there do signal handlers run (a SIGTERM delivered to a worker thread waits
    for the main thread otherwise)."""
    while wait(futures, timeout=_SLICE).not_done:
        pass
    return [future.result() for future in futures]


def _fail(outcome: Outcome, message: str, started: float) -> Outcome:
    outcome.action = FAILED
    outcome.error = message
    outcome.seconds = time.monotonic() - started
    return outcome


def _after(message: str, attempts: int) -> str:
    return f"{message} (after {attempts} attempts)" if attempts > 1 else message
