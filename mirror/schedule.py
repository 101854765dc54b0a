"""Step 3, schedule: every decision about the pull budgets, and which copies start when.

A source host's budget is what its answers said (Docker Hub's `ratelimit-*` headers, a 429)
and the pulls spent in this run (the manifest GETs it answered: what it counts); Docker Hub's
figures say nothing about quay.io's, and a 429 from one source defers only its own images.
`--max-pulls` caps the whole run. Everything about it is decided here, and only here is the
`Ledger` written:

- what a source says: `Metered` wraps every source registry and enters each answer;
- whether the check may GET a manifest for its digest: `Ledger.shortfall` (asked through
  ports.Limits, as `blocked` is before a source is asked at all);
- what a copy will pull: `estimate`, from the source's HEAD (an index's entries counted high
  from its size, and learnt by reading it when that count does not fit);
- which copy starts next: `Admission`, with the pulls of the copies running reserved;
- the figures at the end: `reread`, one free HEAD per host pulled from.

Pending copies that need one source image (alias tags, other targets) form one `Job`: the
image is pulled once, and everything else is filled from a target that has it. `Backpressure`
is the other limit: how many copies at once while ECR throttles; `WriteRate` paces the manifest
writes (ECR's PutImage) so that every shard together stays under ECR's quota.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence

from mirror.errors import MirrorError, RateLimited, Stopped
from mirror.model import HostBudget, Job, Pending, Task
from mirror.oci import (
    INDEX_TYPES,
    Descriptor,
    Manifest,
    RateLimit,
    TagList,
    choose_platforms,
    index_of,
)
from mirror.ports import Answer, Holdings, Manifests, Source
from mirror.referrers import Listing

log = logging.getLogger("mirror")
# The least an index entry can take, in bytes: `{"digest":"sha256:<64 hex>"}` and a comma.
# An index's size divided by it is more entries than it can hold: a count never too low.
MIN_INDEX_ENTRY_BYTES = 84
UNKNOWN_SIZE_PULLS = 1000  # an index of unknown size: counted high, so learnt before a copy


class Ledger:
    """The pull budget of every source host as this run has seen it, and --max-pulls;
    thread-safe. Only `Metered` enters what a source said (`see`, `pulled`, `limited`); the
    steps ask `blocked` and `shortfall`."""

    def __init__(self, max_pulls: int | None = None):
        self.max_pulls = max_pulls
        self._hosts: dict[str, HostBudget] = {}
        self._claimed: Counter[str] = Counter()  # pulls promised to GETs not yet answered
        # pulls promised to the copies running, by copy (Pending.key: its task and target)
        self._reserved: dict[tuple[object, int], tuple[str, int]] = {}
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
        HEAD gives no digest; a referrer's or a signature's), or say why it cannot be spent.
        Checks run at once: the check and the promise are one step, so together they never
        overrun --max-pulls or the budget, nor take what is reserved for the copies running.
        The promise is settled by `pulled(..., claimed=True)` or `unclaim`."""
        with self._lock:
            reason = self._shortfall(host, 1)
            if reason is None:
                self._claimed[host] += 1
            return reason

    def unclaim(self, host: str) -> None:
        """A pull promised by `claim` that was not spent (the GET failed or found nothing)."""
        with self._lock:
            self._claimed[host] -= 1

    def shortfall(self, host: str, pulls: int) -> str | None:
        """Why `pulls` more from `host` cannot be spent now, beside what is promised to the
        copies running and the GETs claimed; None when they can. A job that costs no pull
        (filled from a target that has the image) is never short, even from a host that
        answered 429."""
        with self._lock:
            return self._shortfall(host, pulls)

    def reserve(self, copy: tuple[object, int], host: str, pulls: int) -> str | None:
        """Promise `pulls` from `host` to a copy about to start (`copy`: its lead's task order
        and target), or say why they cannot be spent; held until `release`."""
        with self._lock:
            reason = self._shortfall(host, pulls)
            if reason is None:
                self._reserved[copy] = (host, pulls)
            return reason

    def extend(self, copy: tuple[object, int], host: str, pulls: int) -> str | None:
        """A running copy learnt it needs `pulls` more from now on (the inner indexes of an
        index of indexes tell its real size only once read): promised in place of what it
        held, if they fit beside everyone else's promises; else why not (its promise stays)."""
        with self._lock:
            held = self._reserved.pop(copy, None)
            reason = self._shortfall(host, pulls)
            if reason is None:
                self._reserved[copy] = (host, pulls)
            elif held is not None:
                self._reserved[copy] = held
            return reason

    def release(self, copy: tuple[object, int]) -> None:
        """The copy ended: its promise is spent (entered as pulled) or not needed."""
        with self._lock:
            self._reserved.pop(copy, None)

    def reserved(self) -> dict[str, int]:
        """The pulls promised to the copies running, by host."""
        with self._lock:
            return dict(self._promised_to_copies())

    def _promised_to_copies(self) -> Counter[str]:
        promised = Counter[str]()
        for host, pulls in self._reserved.values():
            promised[host] += pulls
        return promised

    def _shortfall(self, host: str, pulls: int) -> str | None:
        if pulls == 0:
            return None
        budget = self._get(host)
        if budget.limited:
            return budget.limited
        promised = self._promised_to_copies() + self._claimed
        spent = sum(b.spent for b in self._hosts.values())
        if self.max_pulls is not None and spent + promised.total() + pulls > self.max_pulls:
            room = self.max_pulls - spent - promised.total()
            if room <= 0:
                return f"--max-pulls {self.max_pulls} reached; run again later"
            return f"--max-pulls {self.max_pulls}: needs {pulls}, {room} left; run again later"
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

    def meter(self, source: Source) -> Metered:
        """`source`, with every answer entered here."""
        return Metered(source, self)


class Metered:
    """A source registry whose every answer is entered in the ledger as it comes: a HEAD's
    figures, a manifest GET (a pull, with the figures its answer reported), a 429 (nothing more
    from that host in this run). Every request the run makes to a source goes through one,
    so no GET is left uncounted, whoever makes it (the check, an index read, skopeo through
    the relay)."""

    def __init__(self, source: Source, ledger: Ledger):
        self.source = source
        self.ledger = ledger

    @property
    def host(self) -> str:
        return self.source.host

    def head_manifest(self, path: str, reference: str) -> Descriptor:
        with self._answers():
            head = self.source.head_manifest(path, reference)
        self.ledger.see(self.host, head.rate_limit)
        return head

    def describe_manifest(self, path: str, reference: str, *, get: bool = True) -> Descriptor:
        """A HEAD; when it tells no digest and `get`, a GET (read_manifest) only if the ledger
        can promise the pull (`Ledger.claim`, asked once the HEAD's figures are in). Checks
        run at once: each must see the others' promises, or together they overrun --max-pulls
        or the budget. The promise is spent when the GET is answered, else given back."""
        head = self.head_only(path, reference)
        if not (get and head.found and not head.digest):
            return head
        if self.ledger.claim(self.host) is not None:
            return head  # no pull to spend: the check says why
        try:
            read = self.read_manifest(path, reference, claimed=True)
        except BaseException:
            self.ledger.unclaim(self.host)
            raise
        return read

    def head_only(self, path: str, reference: str) -> Descriptor:
        """The HEAD of describe_manifest (a 405 is found, with no digest)."""
        with self._answers():
            head = self.source.describe_manifest(path, reference, get=False)
        self.ledger.see(self.host, head.rate_limit)
        return head

    def read_manifest(self, path: str, reference: str, *, claimed: bool = False) -> Descriptor:
        """A manifest GET, described (a pull when answered); `claimed`: promised already."""
        with self._answers():
            read = self.source.read_manifest(path, reference)
        if read.found and read.digest:
            self.ledger.pulled(self.host, read.rate_limit, claimed=claimed)
        else:
            if claimed:
                self.ledger.unclaim(self.host)
            self.ledger.see(self.host, read.rate_limit)
        return read

    def pull_manifest(self, path: str, reference: str) -> Manifest | None:
        with self._answers():
            manifest = self.source.pull_manifest(path, reference)
        if manifest is not None:
            self.ledger.pulled(self.host, manifest.rate_limit)
        return manifest

    @contextlib.contextmanager
    def blob(self, path: str, digest: str) -> Iterator[Answer]:
        with self._answers(), self.source.blob(path, digest) as answer:
            yield answer

    def head_blob(self, path: str, digest: str) -> Answer:
        with self._answers():
            return self.source.head_blob(path, digest)

    def list_tags(self, path: str) -> TagList:
        with self._answers():
            return self.source.list_tags(path)

    def list_referrers(self, path: str, digest: str) -> Listing | None:
        """The referrers API's listing (None: the source has none), its figures entered.
        Whether Docker Hub counts a listing as a pull is not settled: the figures the answer
        reports stand (a listing past the budget that counted would be a 429)."""
        with self._answers():
            listing = self.source.list_referrers(path, digest)
        if listing is not None:
            self.ledger.see(self.host, listing.rate_limit)
        return listing

    def check_login(self, path: str) -> None:
        with self._answers():
            self.source.check_login(path)

    @contextlib.contextmanager
    def _answers(self) -> Iterator[None]:
        try:
            yield
        except RateLimited as error:
            self.ledger.limited(error.host or self.host, error.why)
            raise


def estimate(pending: Pending) -> tuple[int, bool]:
    """What copying from the source costs, and whether exactly: one manifest GET (none when
    the check's GET is kept), plus one per entry of an index. An index's entries are not known
    before it is read (a pull): they are counted high, from its size, and `Admission` reads the
    index when that count does not fit the budget. None for a copy filled from a target."""
    source = pending.source
    if source is None:
        return 0, True
    first = 0 if source.fetched else 1
    if not source.is_index:
        return first, True
    if not source.size:
        return first + UNKNOWN_SIZE_PULLS, False
    return first + math.ceil(source.size / MIN_INDEX_ENTRY_BYTES), False


def pulls_after(manifest: Manifest, platforms: Sequence[str]) -> int:
    """The pulls a copy still needs once its top manifest is read: one per entry of an index
    (one per chosen platform for a subset), none for a single manifest. An entry that is an
    index itself counts once here: the copy checks its entries against the budget once read."""
    if manifest.media_type not in INDEX_TYPES:
        return 0
    entries = index_of(manifest.body, "the source").get("manifests") or []
    return len(choose_platforms(entries, platforms) if platforms else entries)


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


class Admission:
    """The jobs waiting to start, in config order, and the pulls reserved for those running.

    `next()` starts the first job whose pulls fit its host's budget now: none when a target
    already holds its image (`holdings`); an index counted high that does not fit so is read
    first (a pull the copy then does not make again) and costs its real count. Not
    thread-safe: the run's main loop alone asks it."""

    def __init__(self, jobs: list[Job], ledger: Ledger, holdings: Holdings, manifests: Manifests):
        self.waiting = jobs
        self.ledger = ledger
        self.holdings = holdings
        self.manifests = manifests
        self._reasons: dict[int, str] = {}  # why a job could not start
        self._learned: dict[int, int] = {}  # a job's pulls, once its index was read

    def next(self) -> Job | None:
        """Take the first job that fits (its pulls reserved until `done`); None if none fits."""
        for job in self.waiting:
            pulls = self._cost(job)
            reason = self.ledger.reserve(job.lead.key, job.host, pulls)
            if reason is None:
                self.waiting.remove(job)
                self._reasons.pop(id(job), None)
                log.debug("starting %s (%d pull(s) from %s)", job.lead.task.source, pulls, job.host)
                return job
            self._reasons[id(job)] = reason
        return None

    def done(self, job: Job) -> None:
        """The job ended: its pulls are spent (the ledger has them) or not needed."""
        self.ledger.release(job.lead.key)

    def reserved(self) -> dict[str, int]:
        """The pulls promised to the jobs running, by host (the ledger holds them)."""
        return self.ledger.reserved()

    def left(self) -> Sequence[tuple[Job, str]]:
        """The jobs that never started, each with why."""
        return [(job, self._reasons.get(id(job), "not started")) for job in self.waiting]

    def _cost(self, job: Job) -> int:
        """The pulls a job still needs: none when a target already has its image; for an index
        whose entries are counted high and do not fit the budget so, the exact count, learnt
        by reading the index (a pull the copy then does not make again) when the budget
        covers at least the index and one entry; else that least, which does not fit."""
        lead = job.lead
        if self.holdings.donor(lead) is not None:
            return 0
        if id(job) in self._learned:
            return self._learned[id(job)]
        pulls, exact = estimate(lead)
        if exact or self.ledger.shortfall(job.host, pulls) is None:
            return pulls
        repository = lead.task.source.repository
        kept = self.manifests.has(repository.registry, repository.path, lead.source_digest)
        least = (0 if kept else 1) + 1  # the index, unless read already, and one entry
        if self.ledger.shortfall(job.host, least) is not None:
            return least  # reading the index would spend a pull on a copy that cannot start
        try:
            top = self.manifests.manifest(repository.registry, repository.path, lead.source_digest)
            learned = pulls_after(top, lead.task.platforms)
        except MirrorError:  # a 429 is now the host's block; anything else, the copy's fault
            return pulls
        self._learned[id(job)] = learned
        return learned


def reread(ledger: Ledger, pendings: Iterable[Pending], sources: Callable[[str], Source]) -> None:
    """After every copy has finished, the budget each source reports now (one free HEAD per
    host that was pulled from and told a limit, through its metered source), so the figures at
    the end are the source's own."""
    last: dict[str, Task] = {}
    for pending in pendings:
        last[pending.task.source.repository.registry] = pending.task
    for budget in ledger.snapshot():
        if budget.spent and budget.last is not None and budget.host in last:
            task = last[budget.host]
            try:
                sources(budget.host).head_manifest(
                    task.source.repository.path, task.source_reference
                )
            except MirrorError:  # the estimate stands (a 429 is entered as the host's block)
                continue


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


class WriteRate:
    """Manifest writes to one registry (ECR's PutImage: every manifest, index, referrer and tag
    written is one), paced to `per_second` with a burst of one second's worth: a token bucket,
    as AWS throttles. ECR's quota is 10 a second per account and Region (FACTS.md, ECR's
    service quotas page), shared by every shard: each of N shards takes 1/N of it.

    `writing(count)` reserves `count` writes, waits until the last of them fits, and when the
    writer is done counts them as made then: a PUT that waited in a queue, and skopeo, which
    writes its manifests at the end of a copy, are not taken to have written earlier than
    they did (the bucket then holds at most `burst - count`). `stop()` wakes every waiter,
    which raises Stopped. Thread-safe.

    What a run is told: `writes`, the writes that went through the pace; `waits`, how many of
    them had to wait; `waited`, the seconds of the run during which at least one writer was
    waiting (writers waiting together count once; a wait cut short by a stop counts as long
    as it lasted).
    """

    def __init__(self, per_second: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if per_second <= 0:
            raise ValueError("per_second must be above 0")
        self.per_second = per_second
        self.burst = max(1.0, per_second)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._waited_until = -math.inf  # the end of the last wait counted in `waited`
        self.writes = 0  # writes that went through the pace in this run
        self.waited = 0.0  # seconds of the run with a writer waiting
        self.waits = 0  # writers that had to wait

    def delay(self, count: int) -> float:
        """Reserve `count` writes: the seconds to wait before making them (0: at once)."""
        with self._lock:
            self._refill()
            self._tokens -= count
            return max(0.0, -self._tokens / self.per_second)

    def wrote(self, count: int) -> None:
        """`count` reserved writes are made now (at the latest)."""
        with self._lock:
            self._refill()
            self._tokens = min(self._tokens, self.burst - count)

    def waited_between(self, start: float, end: float) -> None:
        """A writer waited from `start` to `end` (the clock's seconds): counted in `waited`
        where no other wait already covers it. Waits are told as they end."""
        with self._lock:
            self.waits += 1
            self.waited += max(0.0, end - max(start, self._waited_until))
            self._waited_until = max(self._waited_until, end)

    @contextlib.contextmanager
    def writing(self, count: int = 1) -> Iterator[None]:
        """Wait until `count` more writes fit, make them, and count them as made when done.
        Raises Stopped when the run stops while waiting."""
        wait = self.delay(count)
        if wait > 0:
            log.debug("pacing manifest writes: %d more in %.2f s", count, wait)
            start = self._clock()  # a rate of a write a century waits until the stop
            stopped = self._stopped.wait(min(wait, threading.TIMEOUT_MAX))
            self.waited_between(start, self._clock())
        else:
            stopped = self._stopped.is_set()
        if stopped:
            raise Stopped()
        with self._lock:
            self.writes += count
        try:
            yield
        finally:
            self.wrote(count)

    def stop(self) -> None:
        self._stopped.set()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.per_second)
        self._stamp = now
