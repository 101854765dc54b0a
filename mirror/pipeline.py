"""The run's steps 2 to 5 wired together: check every task, schedule the copies, transfer them
(each past the verify gate), then copy what vouches for the images (their referrers).

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
from typing import TypeVar

from mirror.attach import Attach, Finder, Gate, Unmetered, lookups
from mirror.check import Checker
from mirror.model import (
    INTERRUPTED,
    Action,
    Attached,
    Job,
    Mounting,
    Outcome,
    Pending,
    Plan,
    Progress,
    Refresh,
    Settings,
    Task,
)
from mirror.mounts import Mounts
from mirror.ports import Copier, Destination, Looks, Manifests, Refusals, Sink, Source
from mirror.pulls import Pulls
from mirror.reference import Repository
from mirror.schedule import Admission, Backpressure, Ledger, jobs, reread
from mirror.stale import Serve
from mirror.transfer import Holdings, Transfer
from mirror.workers import Finishing, Workers, wait_all, wait_any

T = TypeVar("T")
K = TypeVar("K")


@dataclass
class Result:
    outcomes: list[Outcome]  # in config order
    ledger: Ledger
    warnings: list[str] = field(default_factory=list)
    attached: list[Attached] = field(default_factory=list)  # in config order
    mounting: list[Mounting] = field(default_factory=list)  # layer reuse, per target


class Collector:
    """Every entry's outcome, exactly once (the first wins), settled by `serve` (ensure's
    stale-if-error); passes each on to the sink."""

    def __init__(self, total: int, sink: Sink, ledger: Ledger, serve: Serve | None = None):
        self.total = total
        self.sink = sink
        self.ledger = ledger
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
        self.sink.progress(Progress(self.total, counts, self.running, self.ledger.pulls_left()))

    def taken(self) -> list[Outcome]:
        """The outcomes taken so far, in config and target order."""
        with self._lock:
            return sorted(self._outcomes.values(), key=lambda outcome: outcome.sort_key)

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
        sources: Callable[[str], Source],
        targets: Sequence[Destination],
        copier: Copier,
        ledger: Ledger,
        settings: Settings,
        stop: threading.Event,
        sink: Sink,
        pulls: Manifests,
        refusals: Refusals,
        backpressure: Backpressure | None = None,
        looks: Looks,
        mounts: Mounts | None = None,
    ):
        self.sources = sources
        self.targets = list(targets)
        self.copier = copier
        self.ledger = ledger
        self.settings = settings
        self.stop = stop
        self.sink = sink
        self.holdings = Holdings()
        self.backpressure = backpressure or Backpressure(settings.jobs)
        self.refusals = refusals
        self.pulls = pulls  # reads through `sources`, metered: see Ledger.meter
        self.looks = looks
        self.mounts = mounts  # layer reuse across repositories (None: skopeo's own)
        self.finder = Finder(sources=sources, pulls=self.pulls, promises=ledger)
        self._grace_end: float | None = None

    def run(self, plan: Plan) -> Result:
        total = len(plan.tasks) * len(self.targets) + len(plan.outcomes)
        serve = None
        if self.settings.refresh is not Refresh.ALWAYS:
            vouch = partial(self._vouch, {task.order: task for task in plan.tasks})
            registries = [target.registry for target in self.targets]
            serve = Serve(self.settings.refresh, registries, vouch=vouch)
        collector = Collector(total, self.sink, self.ledger, serve)
        for outcome in plan.outcomes:
            collector.add(outcome)
        pendings = self._check(plan.tasks, collector)
        if pendings and not self.settings.dry_run:
            self._transfer(pendings, collector)
        attached = []
        if not self.settings.dry_run and not self.stop.is_set():
            attached = self._attach(plan.tasks, collector.taken())
        if pendings and not self.settings.dry_run and not self.stop.is_set():
            reread(self.ledger, pendings, self.sources)
        self._settle_the_rest(plan.tasks, collector)
        outcomes = collector.close()
        warnings = [*plan.warnings, *self.pulls.warnings()]
        warnings += [o.warning for o in outcomes if o.warning]
        warnings += [warning for item in attached for warning in item.warnings]
        mounting = [] if self.mounts is None else self.mounts.figures()
        warnings += [] if self.mounts is None else self.mounts.warnings()
        return Result(outcomes, self.ledger, warnings, attached, mounting)

    def _vouch(self, tasks: dict[tuple[int, int], Task], outcome: Outcome) -> str | None:
        """What vouches for the copy a target holds, which ensure would serve instead of a
        refresh, under its image's verify policy, from the signatures that target holds
        (mirror copied them there; reading them is free): None without a policy, else what
        vouched; NotVerified or MirrorError when nothing does."""
        task = tasks.get(outcome.order)
        if task is None or task.verify is None or outcome.destination_digest is None:
            return None
        target = self.targets[outcome.target]
        registry = target.registry
        finder = Finder(
            sources=lambda host: registry,  # type: ignore[arg-type,return-value]
            pulls=Pulls(lambda host: registry),  # type: ignore[arg-type,return-value]
            promises=Unmetered(),
        )
        held = Repository(target.host, outcome.repository)
        return Gate(finder).verify_at(held, outcome.destination_digest, task.verify, str(held))

    # --- step 2: checks -------------------------------------------------------------------------

    def _check(self, tasks: Sequence[Task], collector: Collector) -> list[Pending]:
        checker = Checker(
            pulls=self.pulls,
            targets=self.targets,
            limits=self.ledger,
            stop=self.stop,
            source_gets=not self.settings.dry_run,
            refresh=self.settings.refresh,
            source_deadline=self.settings.source_deadline,
            refusals=self.refusals,
        )
        pendings: list[Pending] = []
        with Workers(self.settings.check_jobs, "check") as workers:
            checks: Finishing[list[Outcome | Pending], Task] = Finishing()
            for task in tasks:
                checks.add(workers.submit(checker.check, task), task)
            while checks:
                for future, task in self._next(checks):
                    for item in future.result():
                        self._take(task, item, collector, pendings)
                if self.stop.is_set():
                    break  # what did not finish in the grace period is deferred
        return pendings

    def _take(
        self, task: Task, item: Outcome | Pending, collector: Collector, pendings: list[Pending]
    ) -> None:
        if isinstance(item, Outcome):
            self.holdings.add(item, task=task)
            collector.add(item)
        elif self.settings.dry_run:
            collector.add(Outcome.settled(item, Action.WOULD_COPY, error=_unknown(item)))
        else:
            pendings.append(item)

    # --- steps 3 and 4: schedule and transfer ---------------------------------------------------

    def _transfer(self, pendings: list[Pending], collector: Collector) -> None:
        admission = Admission(jobs(pendings), self.ledger, self.holdings, self.pulls)
        transfer = Transfer(
            pulls=self.pulls,
            targets=self.targets,
            copier=self.copier,
            limits=self.ledger,
            holdings=self.holdings,
            emit=collector.add,
            stop=self.stop,
            retry=self.settings.retry,
            backpressure=self.backpressure,
            refusals=self.refusals,
            source_deadline=(
                None if self.settings.refresh is Refresh.ALWAYS else self.settings.source_deadline
            ),
            verifier=Gate(self.finder),
            reuse=self.mounts,
        )
        running: dict[Future[None], Job] = {}
        # --jobs 1: each copy in this thread, one after another (workers.py: inline)
        with Workers(self.settings.jobs, "copy", inline=self.settings.jobs == 1) as workers:
            while admission.waiting and not self.stop.is_set():
                admitted = None
                if len(running) < min(self.settings.jobs, self.backpressure.limit):
                    admitted = admission.next()
                if admitted is not None:  # counted first: with --jobs 1, submit is the copy
                    collector.set_running(len(running) + 1)
                    running[workers.submit(transfer.run, admitted)] = admitted
                elif not running:
                    break
                else:
                    for future in self._finished(running):
                        admission.done(running.pop(future))
                        future.result()  # a bug in a job surfaces here
                collector.set_running(len(running))
            for future in self._finished(running, every=True):
                admission.done(running[future])  # its pulls no longer reserved
                future.result()
        collector.set_running(0)
        for job, reason in admission.left():
            why = INTERRUPTED if self.stop.is_set() else reason
            for pending in job.pendings():
                collector.add(Outcome.settled(pending, Action.DEFERRED, error=why))

    # --- step 5: what vouches for the images ---------------------------------------------------

    def _attach(self, tasks: Sequence[Task], outcomes: Sequence[Outcome]) -> list[Attached]:
        """The referrers of the images copied (and of those up to date whose look is due),
        copied into their targets, each image's result told to the sink as it ends."""
        hosts = [target.host for target in self.targets]
        wanted = lookups(tasks, outcomes, hosts, self.looks, rescan=self.settings.rescan_referrers)
        if not wanted:
            return []
        attach = Attach(finder=self.finder, targets=self.targets, looks=self.looks, stop=self.stop)
        done: list[Attached] = []
        inline = self.settings.jobs == 1
        with Workers(self.settings.jobs, "attach", inline=inline) as workers:
            running: Finishing[Attached, object] = Finishing()
            for lookup in wanted:
                running.add(workers.submit(attach.run, lookup), lookup)
            while running:
                for future, _ in self._next(running):
                    done.append(future.result())
                    self.sink.attached(done[-1])
                if self.stop.is_set():
                    break
        order = {lookup.destination: number for number, lookup in enumerate(wanted)}
        return sorted(done, key=lambda item: order.get(item.destination, 0))

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
        self._grace(futures)
        return {future for future in futures if future.done()}

    def _next(self, finishing: Finishing[T, K]) -> list[tuple[Future[T], K]]:
        """The futures that finish next, with what each is for, in the order they finished
        (at least one, unless stopped). Once stopped, as `_finished`: the work in flight gets
        what is left of the grace period."""
        if not self.stop.is_set():
            return finishing.next(self.stop)
        self._grace(finishing.waiting)
        return finishing.take_done()

    def _grace(self, futures: Mapping[Future[T], object]) -> None:
        """Wait for `futures` until `grace` seconds after the first wait since the stop."""
        if self._grace_end is None:
            self._grace_end = time.monotonic() + self.settings.grace
        end = self._grace_end
        wait_all(futures, until=lambda: time.monotonic() >= end)

    def _settle_the_rest(self, tasks: Sequence[Task], collector: Collector) -> None:
        """Anything without an outcome (work given up on after a stop) is deferred."""
        hosts = [target.host for target in self.targets]
        for task in tasks:
            for outcome in Outcome.everywhere(task, hosts, Action.DEFERRED, error=INTERRUPTED):
                if not collector.has(task.order, outcome.target):
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
