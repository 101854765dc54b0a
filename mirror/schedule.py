"""Step 3, schedule: which pending copies start, and when, within each source's pull budget.

Budgets belong to a registry host: Docker Hub's headers say nothing about quay.io's, and a
429 from one source defers only that source's images. `--max-pulls` caps the whole run.
Pending copies that need one source image (alias tags, other targets) form one job: the image
is pulled once, and everything else is filled from a target that has it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from mirror.model import Pending
from mirror.registry import RateLimit

log = logging.getLogger("mirror")


@dataclass(frozen=True)
class HostBudget:
    """One source host's budget as seen in this run (a snapshot)."""

    host: str
    start: RateLimit | None = None  # the first figures the host sent
    last: RateLimit | None = None  # the latest, lowered by the pulls spent since
    spent: int = 0  # manifest GETs the host answered in this run (what it counts as pulls)
    limited: str | None = None  # why the host is off limits for the rest of the run (a 429)


class Budgets:
    """The pull budget of every source host, and --max-pulls; thread-safe."""

    def __init__(self, max_pulls: int | None = None):
        self.max_pulls = max_pulls
        self._hosts: dict[str, HostBudget] = {}
        self._claimed: Counter[str] = Counter()  # pulls promised to GETs not yet answered
        self._lock = threading.Lock()

    def see(self, host: str, rate_limit: RateLimit | None) -> None:
        """Take in what a source's headers said (None: it sent no limit)."""
        if rate_limit is None:
            return
        with self._lock:
            budget = self._get(host)
            self._hosts[host] = HostBudget(
                host, budget.start or rate_limit, rate_limit, budget.spent, budget.limited
            )

    def pulled(self, host: str, rate_limit: RateLimit | None, *, claimed: bool = False) -> None:
        """One manifest GET answered (a pull): spent, and the budget its answer reported.
        Answers to pulls made at once can come back in any order, so theirs only ever lower
        the figure (a HEAD's, `see`, sets it). `claimed`: the pull was promised by `claim`,
        and is now spent instead (in one step: it is never counted twice)."""
        with self._lock:
            if claimed:
                self._claimed[host] -= 1
            budget = self._get(host)
            last = budget.last
            if last is not None:
                last = RateLimit(last.limit, max(0, last.remaining - 1))
            if rate_limit is not None and (last is None or last.limit != rate_limit.limit):
                last = rate_limit
            elif rate_limit is not None and last is not None:
                last = RateLimit(last.limit, min(last.remaining, rate_limit.remaining))
            start = budget.start or rate_limit
            self._hosts[host] = HostBudget(host, start, last, budget.spent + 1, budget.limited)

    def limited(self, host: str, why: str) -> None:
        """The host answered 429: start nothing more from it in this run."""
        with self._lock:
            budget = self._get(host)
            if budget.limited is None:
                log.debug("%s: no more pulls in this run: %s", host, why)
                self._hosts[host] = HostBudget(host, budget.start, budget.last, budget.spent, why)

    def blocked(self, host: str) -> str | None:
        """Why nothing more may come from `host` in this run (None: it may)."""
        with self._lock:
            return self._get(host).limited

    def claim(self, host: str) -> str | None:
        """Promise one pull from `host` to a GET made outside the copies (a check's, when a
        HEAD gives no digest), or say why it cannot be spent. Checks run at once: the check
        and the promise are one step, so together they never overrun --max-pulls or the
        budget. The promise is settled by `pulled(..., claimed=True)` or `unclaim`."""
        with self._lock:
            reason = self._shortfall(host, 1, {})
            if reason is None:
                self._claimed[host] += 1
            return reason

    def unclaim(self, host: str) -> None:
        """A pull promised by `claim` that was not spent (the GET failed or found nothing)."""
        with self._lock:
            self._claimed[host] -= 1

    def shortfall(self, host: str, pulls: int, reserved: dict[str, int]) -> str | None:
        """Why `pulls` more from `host` cannot be spent now, with `reserved` promised to the
        copies running (per host); None when they can. A job that costs no pull (filled from
        a target that has the image) is never short, even from a host that answered 429."""
        with self._lock:
            return self._shortfall(host, pulls, reserved)

    def _shortfall(self, host: str, pulls: int, reserved: dict[str, int]) -> str | None:
        if pulls == 0:
            return None
        budget = self._get(host)
        if budget.limited:
            return budget.limited
        promised = Counter(reserved) + self._claimed
        spent = sum(b.spent for b in self._hosts.values())
        if self.max_pulls is not None and spent + promised.total() + pulls > self.max_pulls:
            return f"--max-pulls {self.max_pulls} reached; run again later"
        last = budget.last
        left = None if last is None else last.remaining - promised[host]
        if last is not None and left is not None and left < pulls:
            return (
                f"{host}: pull budget: needs {pulls}, {left} left of {last.limit}; run again later"
            )
        return None

    def snapshot(self) -> list[HostBudget]:
        with self._lock:
            return sorted(self._hosts.values(), key=lambda budget: budget.host)

    def pulls_left(self) -> int | None:
        """The pulls left over every host that reported a limit (None: none did)."""
        known = [b.last.remaining for b in self.snapshot() if b.last is not None]
        return sum(known) if known else None

    def _get(self, host: str) -> HostBudget:
        return self._hosts.get(host) or HostBudget(host)


@dataclass(frozen=True)
class Job:
    """The pending copies that need one source image, grouped by task, in config order."""

    groups: tuple[tuple[Pending, ...], ...]

    @property
    def lead(self) -> Pending:
        return self.groups[0][0]

    @property
    def host(self) -> str:
        return self.lead.task.source.repository.registry

    def pendings(self) -> list[Pending]:
        return [pending for group in self.groups for pending in group]


def jobs(pendings: Iterable[Pending]) -> list[Job]:
    """Group pending copies by the image they need (the source digest, and the platforms
    taken from it), in order: it is pulled once, and its other tags filled from the first."""
    by_task: dict[tuple[int, int], list[Pending]] = {}
    for pending in sorted(pendings, key=lambda p: (p.task.order, p.target)):
        by_task.setdefault(pending.task.order, []).append(pending)
    grouped: dict[object, list[tuple[Pending, ...]]] = {}
    for group in by_task.values():
        first = group[0]
        key: object = (
            (first.task.source.repository, first.source_digest, first.task.platforms)
            if first.source_digest
            else first.task.order
        )
        grouped.setdefault(key, []).append(tuple(group))
    return [Job(tuple(groups)) for groups in grouped.values()]


@dataclass
class Queue:
    """Jobs waiting to start, in order; the first one the budgets admit goes next."""

    waiting: list[Job]
    budgets: Budgets
    reasons: dict[int, str] = field(default_factory=dict)  # why a job could not start

    def next(self, reserved: dict[str, int], cost: Callable[[Job], int]) -> tuple[Job, int] | None:
        """Take the first job whose pulls fit its host's budget now, with those pulls; None if
        none fits. `cost` gives a job's pulls (none when a target already has its image);
        `reserved`, the running copies' pulls by host."""
        for job in self.waiting:
            pulls = cost(job)
            reason = self.budgets.shortfall(job.host, pulls, reserved)
            if reason is None:
                self.waiting.remove(job)
                self.reasons.pop(id(job), None)
                log.debug("starting %s (%d pull(s) from %s)", job.lead.task.source, pulls, job.host)
                return job, pulls
            self.reasons[id(job)] = reason
        return None

    def left(self) -> Sequence[tuple[Job, str]]:
        """The jobs that never started, each with why."""
        return [(job, self.reasons.get(id(job), "not started")) for job in self.waiting]


class Backpressure:
    """How many copies may run at once, lowered while a destination throttles (ECR's 429
    "Rate exceeded"): halved when a request is throttled (at most once a `calm` seconds: a
    burst of 429s is one signal), raised by one after as many copies in a row end well as the
    limit allows (additive increase, multiplicative decrease, as TCP does)."""

    def __init__(self, most: int, *, calm: float = 2.0):
        self.most = max(1, most)
        self.calm = calm
        self._limit = self.most
        self._good = 0
        self._lowered = float("-inf")  # time.monotonic() of the last decrease
        self.throttled_requests = 0  # every 429 a destination sent this run
        self._lock = threading.Lock()

    @property
    def limit(self) -> int:
        with self._lock:
            return self._limit

    def throttled(self, host: str) -> None:
        now = time.monotonic()
        with self._lock:
            self.throttled_requests += 1
            self._good = 0
            if self._limit > 1 and now - self._lowered >= self.calm:
                self._limit //= 2
                self._lowered = now
                log.debug("%s throttles: at most %d copies at once for now", host, self._limit)

    def succeeded(self) -> None:
        with self._lock:
            self._good += 1
            if self._good >= self._limit and self._limit < self.most:
                self._limit += 1
                self._good = 0
