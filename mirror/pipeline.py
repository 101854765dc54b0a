"""The run's steps 2 to 4 wired together: check every task, schedule the copies, transfer them.

Each entry's outcome goes to the sink the moment it is known (an unchanged image during the
checks, a copy when it ends), so a long run shows its progress and a killed one has printed
what it did. The main thread only waits, in short slices: signal handlers run there.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol, TypeVar

from mirror.check import Checker, Registry, Target
from mirror.errors import MirrorError, RateLimited, run_again_later
from mirror.model import INTERRUPTED, Action, Outcome, Pending, Task
from mirror.plan import Plan
from mirror.pulls import Pulls
from mirror.schedule import Backpressure, Budgets, Job, Queue, jobs
from mirror.stale import SOURCE_DEADLINE, Refresh, Serve
from mirror.state import Refusals
from mirror.transfer import Copier, Holdings, Retry, Transfer, pulls_after
from mirror.workers import Workers, wait_all, wait_any

T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    jobs: int = 4  # copies at once
    dry_run: bool = False
    retry: Retry = field(default_factory=Retry)
    grace: float = 5.0  # seconds to wait for work in flight once stopped
    refresh: Refresh = Refresh.ALWAYS  # ensure's --refresh; sync always refreshes
    source_deadline: float = SOURCE_DEADLINE  # seconds, when a target has a copy to serve

    @property
    def check_jobs(self) -> int:
        return check_jobs(self.jobs)


def check_jobs(jobs: int) -> int:
    """HEAD checks at once for `jobs` copies: cheap requests, so four per copy slot, at most
    32 (and as many pooled connections)."""
    return min(32, 4 * max(1, jobs))


@dataclass(frozen=True)
class Progress:
    """Where a run is: entries settled by action, out of `total`; copies running; pulls left."""

    total: int
    counts: Mapping[Action, int]
    running: int = 0
    pulls_left: int | None = None

    @property
    def done(self) -> int:
        return sum(self.counts.values())


class Sink(Protocol):
    """Who hears of a run as it goes (the console)."""

    def settled(self, outcome: Outcome) -> None: ...

    def progress(self, progress: Progress) -> None: ...


@dataclass
class Result:
    outcomes: list[Outcome]  # in config order
    budgets: Budgets
    warnings: list[str] = field(default_factory=list)


class Collector:
    """Every entry's outcome, exactly once (the first wins), settled by `serve` (ensure's
    stale-if-error); passes each on to the sink."""

    def __init__(self, total: int, sink: Sink, budgets: Budgets, serve: Serve | None = None):
        self.total = total
        self.sink = sink
        self.budgets = budgets
        self.serve = serve
        self.running = 0
        self._outcomes: dict[tuple[tuple[int, int], int], Outcome] = {}
        self._counts: Counter[Action] = Counter()
        self._lock = threading.Lock()
        self._closed = False

    def add(self, outcome: Outcome) -> None:
        key = (outcome.order, outcome.target)
        if self.serve is not None and not self.has(*key):
            outcome = self.serve.settle(outcome)  # may read the copy's age: not under the lock
        with self._lock:
            if self._closed or key in self._outcomes:
                return
            self._outcomes[key] = outcome
            self._counts[outcome.action] += 1
            self.sink.settled(outcome)
        self.report()

    def has(self, order: tuple[int, int], target: int) -> bool:
        with self._lock:
            return (order, target) in self._outcomes

    def set_running(self, running: int) -> None:
        self.running = running
        self.report()

    def report(self) -> None:
        with self._lock:
            counts = dict(self._counts)
        self.sink.progress(Progress(self.total, counts, self.running, self.budgets.pulls_left()))

    def close(self) -> list[Outcome]:
        """No more outcomes are taken; the ones taken, in config and target order."""
        with self._lock:
            self._closed = True
            return sorted(self._outcomes.values(), key=lambda outcome: outcome.sort_key)


class Pipeline:
    """Checks, schedules and transfers the tasks of a plan into every target."""

    def __init__(
        self,
        *,
        sources: Callable[[str], Registry],
        targets: Sequence[Target],
        copier: Copier,
        budgets: Budgets,
        settings: Settings,
        stop: threading.Event,
        sink: Sink,
        backpressure: Backpressure | None = None,
        refusals: Refusals | None = None,
        pulls: Pulls | None = None,
    ):
        self.sources = sources
        self.targets = list(targets)
        self.copier = copier
        self.budgets = budgets
        self.settings = settings
        self.stop = stop
        self.sink = sink
        self.holdings = Holdings()
        self.backpressure = backpressure or Backpressure(settings.jobs)
        self.refusals = refusals or Refusals(None)
        self.pulls = pulls or Pulls(sources, budgets)
        self._grace_end: float | None = None
        self._learned: dict[int, int] = {}  # a job's pulls, once its index was read

    def run(self, plan: Plan) -> Result:
        total = len(plan.tasks) * len(self.targets) + len(plan.outcomes)
        serve = None
        if self.settings.refresh is not Refresh.ALWAYS:
            serve = Serve(self.settings.refresh, [target.registry for target in self.targets])
        collector = Collector(total, self.sink, self.budgets, serve)
        for outcome in plan.outcomes:
            collector.add(outcome)
        pendings = self._check(plan.tasks, collector)
        if pendings and not self.settings.dry_run:
            self._transfer(pendings, collector)
            self._read_budgets(pendings)
        self._settle_the_rest(plan.tasks, collector)
        outcomes = collector.close()
        warnings = [*plan.warnings, *self.pulls.warnings()]
        warnings += [o.warning for o in outcomes if o.warning]
        return Result(outcomes, self.budgets, warnings)

    # --- step 2: checks -------------------------------------------------------------------------

    def _check(self, tasks: Sequence[Task], collector: Collector) -> list[Pending]:
        checker = Checker(
            pulls=self.pulls,
            targets=self.targets,
            limits=self.budgets,
            stop=self.stop,
            source_gets=not self.settings.dry_run,
            refresh=self.settings.refresh,
            source_deadline=self.settings.source_deadline,
            refusals=self.refusals,
        )
        pendings: list[Pending] = []
        with Workers(self.settings.check_jobs, "check") as workers:
            waiting: dict[Future[list[Outcome | Pending]], Task] = {
                workers.submit(checker.check, task): task for task in tasks
            }
            while waiting:
                done = self._finished(waiting)
                for future in done:
                    task = waiting.pop(future)
                    for item in future.result():
                        self._take(task, item, collector, pendings)
                if self.stop.is_set():
                    break  # what did not finish in the grace period is deferred
        return pendings

    def _take(
        self, task: Task, item: Outcome | Pending, collector: Collector, pendings: list[Pending]
    ) -> None:
        if isinstance(item, Outcome):
            self.holdings.add(item, platforms=task.platforms)
            collector.add(item)
        elif self.settings.dry_run:
            collector.add(Outcome.settled(item, Action.WOULD_COPY, error=_unknown(item)))
        else:
            pendings.append(item)

    # --- steps 3 and 4: schedule and transfer ---------------------------------------------------

    def _transfer(self, pendings: list[Pending], collector: Collector) -> None:
        queue = Queue(jobs(pendings), self.budgets)
        transfer = Transfer(
            pulls=self.pulls,
            targets=self.targets,
            copier=self.copier,
            budgets=self.budgets,
            holdings=self.holdings,
            emit=collector.add,
            stop=self.stop,
            retry=self.settings.retry,
            backpressure=self.backpressure,
            refusals=self.refusals,
            source_deadline=(
                None if self.settings.refresh is Refresh.ALWAYS else self.settings.source_deadline
            ),
        )
        running: dict[Future[None], tuple[Job, int]] = {}
        with Workers(self.settings.jobs, "copy") as workers:
            while queue.waiting and not self.stop.is_set():
                admitted = None
                if len(running) < min(self.settings.jobs, self.backpressure.limit):
                    reserved = self._reserved(running)
                    admitted = queue.next(reserved, partial(self._cost, reserved=reserved))
                if admitted is not None:
                    job, pulls = admitted
                    running[workers.submit(transfer.run, job)] = (job, pulls)
                elif not running:
                    break
                else:
                    for future in self._finished(running):
                        del running[future]
                        future.result()  # a bug in a job surfaces here
                collector.set_running(len(running))
            for future in self._finished(running, every=True):
                future.result()
        collector.set_running(0)
        for job, reason in queue.left():
            why = INTERRUPTED if self.stop.is_set() else reason
            for pending in job.pendings():
                collector.add(Outcome.settled(pending, Action.DEFERRED, error=why))

    def _cost(self, job: Job, reserved: dict[str, int]) -> int:
        """The pulls a job still needs: none when a target already has its image; for an index
        whose entries are counted high and do not fit the budget so, the exact count, learnt
        by reading the index (a pull the copy then does not make again) when the budget
        covers at least the index and one entry; else that least, which does not fit."""
        lead = job.lead
        if self.holdings.donor(lead) is not None:
            return 0
        if id(job) in self._learned:
            return self._learned[id(job)]
        if lead.exact or self.budgets.shortfall(job.host, lead.pulls, reserved) is None:
            return lead.pulls
        repository = lead.task.source.repository
        kept = self.pulls.has(repository.registry, repository.path, lead.source_digest)
        least = (0 if kept else 1) + 1  # the index, unless read already, and one entry
        if self.budgets.shortfall(job.host, least, reserved) is not None:
            return least  # reading the index would spend a pull on a copy that cannot start
        try:
            media_type, body = self.pulls.manifest(
                repository.registry, repository.path, lead.source_digest
            )
            learned = pulls_after(media_type, body, lead.task.platforms)
        except MirrorError:  # a 429 is now the host's block; anything else, the copy's fault
            return lead.pulls
        self._learned[id(job)] = learned
        return learned

    def _read_budgets(self, pendings: list[Pending]) -> None:
        """After every copy has finished, the budget each source reports now (one free HEAD
        per host that was pulled from), so the figures at the end are the source's own."""
        if self.stop.is_set():
            return
        last: dict[str, Task] = {}
        for pending in pendings:
            last[pending.task.source.repository.registry] = pending.task
        for budget in self.budgets.snapshot():
            if budget.spent and budget.last is not None and budget.host in last:
                self._read_budget(last[budget.host])

    def _read_budget(self, task: Task) -> None:
        host = task.source.repository.registry
        try:
            head = self.sources(host).head_manifest(
                task.source.repository.path, task.source_reference
            )
        except RateLimited as error:
            self.budgets.limited(host, run_again_later(error))
            return
        except MirrorError:
            return  # the estimate stands
        self.budgets.see(host, head.rate_limit)

    # --- the end --------------------------------------------------------------------------------

    def _finished(
        self, futures: Mapping[Future[T], object], *, every: bool = False
    ) -> set[Future[T]]:
        """The futures done: at least one (all with `every`). Once stopped, the work in flight
        gets `grace` seconds in all; what has not finished then is given up on."""
        if not self.stop.is_set():
            if every:
                wait_all(futures)
                return set(futures)
            return wait_any(futures, self.stop)
        if self._grace_end is None:
            self._grace_end = time.monotonic() + self.settings.grace
        end = self._grace_end
        wait_all(futures, until=lambda: time.monotonic() >= end)
        return {future for future in futures if future.done()}

    @staticmethod
    def _reserved(running: Mapping[Future[None], tuple[Job, int]]) -> dict[str, int]:
        reserved = Counter[str]()
        for job, pulls in running.values():
            reserved[job.host] += pulls
        return dict(reserved)

    def _settle_the_rest(self, tasks: Sequence[Task], collector: Collector) -> None:
        """Anything without an outcome (work given up on after a stop) is deferred."""
        for task in tasks:
            for number, target in enumerate(self.targets):
                if not collector.has(task.order, number):
                    outcome = Outcome.of(
                        task,
                        number,
                        task.destination(target.host, number),
                        Action.DEFERRED,
                        error=INTERRUPTED,
                    )
                    collector.add(outcome)


def _unknown(pending: Pending) -> str | None:
    """Why a dry run's would-copy is a guess: the target holds the tag, and the source gave
    no digest on HEAD (learning it is a GET, a pull, which a dry run does not make)."""
    if pending.source_digest or pending.destination_digest is None:
        return None
    return (
        f"{pending.task.source.repository.registry} gives no digest on a manifest HEAD: "
        "whether the image changed is known only by reading it, a pull, which a dry run does "
        "not make"
    )
