"""The run: check every image with HEADs, then copy what changed within the pull budget.

Plain Python, no processes: the boundaries come in as small protocols, so unit tests hand in
fakes and the CLI hands in the real registry client, skopeo and ECR.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

from mirror.errors import MirrorError, RateLimited
from mirror.reference import ImageRef
from mirror.registry import INDEX_TYPES, Head, RateLimit

COPIED = "copied"
UP_TO_DATE = "up-to-date"
FAILED = "failed"
WOULD_COPY = "would-copy"
DEFERRED = "deferred"
ACTIONS = (COPIED, UP_TO_DATE, WOULD_COPY, DEFERRED, FAILED)
T = TypeVar("T")
SOURCE_DIGEST = "io.github.mirror.source.digest"  # annotations on an index mirror writes
PLATFORMS = "io.github.mirror.platforms"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
INDEX_ENTRY_BYTES = 400  # about one platform's entry in an image index, to guess its platforms
_SLICE = 0.1  # seconds the main thread waits at a time


class Registry(Protocol):
    host: str
    tls_verify: bool

    def head_manifest(self, path: str, reference: str) -> Head: ...

    def get_manifest(self, path: str, reference: str) -> dict[str, Any] | None: ...

    def get_manifest_raw(self, path: str, reference: str) -> tuple[str, bytes] | None: ...

    def put_manifest(self, path: str, reference: str, body: bytes, media_type: str) -> str: ...

    def check_login(self, path: str) -> None: ...

    def list_tags(self, path: str) -> list[str]: ...


class Copier(Protocol):
    def copy(
        self, source: str, destination: str, *, src_tls_verify: bool, dest_tls_verify: bool
    ) -> str: ...


@dataclass(frozen=True)
class Target:
    """One ECR registry that receives images: its host, registry client and repository hooks."""

    host: str
    registry: Registry
    ensure_repository: Callable[[str], object] = lambda repository: None  # none to create
    is_immutable: Callable[[str], bool] = lambda repository: False


@dataclass(frozen=True)
class Task:
    """One tag to mirror: where it comes from, and its ECR repository in each target."""

    source: ImageRef  # a tag, or a pinned digest (with the tag it is mirrored under)
    tag: str
    repositories: tuple[str, ...]  # one per target
    platforms: tuple[str, ...] = ()  # () = every platform, digests preserved

    def reference(self) -> str:
        """What to copy from the source: the pinned digest, else the tag."""
        if self.source.digest:
            return f"{self.source.repository}@{self.source.digest}"
        return f"{self.source.repository}:{self.source.tag}"

    def destination(self, host: str, target: int = 0) -> str:
        return f"{host}/{self.repositories[target]}:{self.tag}"


@dataclass
class Outcome:
    task: Task
    action: str
    destination: str
    target: int = 0
    digest: str | None = None
    error: str | None = None
    seconds: float = 0.0
    pulls: int = 0  # the pulls a copy from the source is expected to cost

    @property
    def repository(self) -> str:
        return self.task.repositories[self.target]


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
    warnings: list[str] = field(default_factory=list)


@dataclass
class Settings:
    jobs: int = 4  # copies at once

    @property
    def check_jobs(self) -> int:
        """HEAD checks at once: cheap requests, so four per copy slot, at most 32."""
        return min(32, 4 * max(1, self.jobs))

    dry_run: bool = False
    max_pulls: int | None = None
    copy_attempts: int = 3
    backoff: float = 1.0  # seconds before the second attempt; doubles, with jitter


class Engine:
    """Checks and copies a list of tasks into one or more targets with `jobs` threads.

    A changed image is pulled from the source once per run, into the first target that needs
    it; every other target is filled from a target that has it (registry to registry, no pull).
    """

    def __init__(
        self,
        *,
        sources: Callable[[str], Registry],
        targets: Sequence[Target],
        copier: Copier,
        settings: Settings,
        stop: threading.Event | None = None,
    ):
        self.sources = sources
        self.targets = list(targets)
        self.copier = copier
        self.settings = settings
        self.stop = stop or threading.Event()
        self.budget = Budget(max_pulls=settings.max_pulls)
        self.warnings: list[str] = []  # for the report: what the planning noticed
        self._recheck_budget = False
        self._rate_limited = threading.Event()

    def run(self, tasks: Sequence[Task]) -> Result:
        self._check_logins(tasks)
        with ThreadPoolExecutor(max_workers=self.settings.check_jobs) as checks:
            per_task = _gather([checks.submit(self._check, task) for task in tasks])
        if not self.settings.dry_run:
            with ThreadPoolExecutor(max_workers=max(1, self.settings.jobs)) as pool:
                self._copy_all(pool, per_task)
        outcomes = [outcome for group in per_task for outcome in group]
        return Result(
            outcomes, self.budget, self._rate_limited.is_set(), warnings=list(self.warnings)
        )

    def _check_logins(self, tasks: Sequence[Task]) -> None:
        """Try each source's credentials once: wrong ones are one error (AuthError), not N."""
        first_path: dict[str, str] = {}
        for task in tasks:
            first_path.setdefault(task.source.repository.registry, task.source.repository.path)
        for host, path in first_path.items():
            self.sources(host).check_login(path)

    # --- phase 1: HEADs on both sides -----------------------------------------------------------

    def _check(self, task: Task) -> list[Outcome]:
        started = time.monotonic()
        outcomes = [
            Outcome(task, WOULD_COPY, task.destination(target.host, index), index)
            for index, target in enumerate(self.targets)
        ]
        if self._halted():
            return [self._defer(outcome, started) for outcome in outcomes]
        try:
            self._compare(task, outcomes)
        except RateLimited:
            self._rate_limited.set()
            return [self._defer(o, started) if o.action == WOULD_COPY else o for o in outcomes]
        except MirrorError as error:
            return [
                _fail(o, str(error), started) if o.action == WOULD_COPY else o for o in outcomes
            ]
        for outcome in outcomes:
            outcome.seconds = time.monotonic() - started
        return outcomes

    def _compare(self, task: Task, outcomes: list[Outcome]) -> None:
        heads = [
            self.targets[o.target].registry.head_manifest(o.repository, task.tag) for o in outcomes
        ]
        if task.source.digest:  # a pin already in place costs no request to the source
            pinned = Head(found=True, digest=task.source.digest)
            if all(self._holds(task, o, pinned, h) for o, h in zip(outcomes, heads, strict=True)):
                for outcome, head in zip(outcomes, heads, strict=True):
                    outcome.action, outcome.digest = UP_TO_DATE, head.digest
                return
        source = self._head_source(task)
        if not source.found:
            raise MirrorError(_not_found(task))
        for outcome, head in zip(outcomes, heads, strict=True):
            self._compare_one(task, outcome, source, head)

    def _compare_one(self, task: Task, outcome: Outcome, source: Head, target: Head) -> None:
        outcome.digest = source.digest
        if target.found and source.digest and self._holds(task, outcome, source, target):
            outcome.action, outcome.digest = UP_TO_DATE, target.digest
            return
        if target.found and self.targets[outcome.target].is_immutable(outcome.repository):
            outcome.action = FAILED
            outcome.error = (
                f"{outcome.destination} holds {target.digest} and the repository is IMMUTABLE: "
                f"not overwritten with {source.digest}"
            )
            return
        outcome.pulls = self._estimate_pulls(task, outcome, source, target)

    def _holds(self, task: Task, outcome: Outcome, source: Head, target: Head) -> bool:
        """Does the target already hold what the source has? Same digest; or, for a platform
        subset, an index that mirror wrote from exactly this source digest (its annotation)."""
        if not target.found:
            return False
        if target.digest == source.digest:
            return True
        if not task.platforms or not target.is_index:
            return False
        written = self.targets[outcome.target].registry.get_manifest(outcome.repository, task.tag)
        annotations = (written or {}).get("annotations") or {}
        return bool(
            annotations.get(SOURCE_DIGEST) == source.digest
            and annotations.get(PLATFORMS) == ",".join(task.platforms)
        )

    def _head_source(self, task: Task) -> Head:
        registry = self.sources(task.source.repository.registry)
        reference = task.source.digest or task.source.tag or "latest"
        head = registry.head_manifest(task.source.repository.path, reference)
        self.budget.see(head.rate_limit)
        return head

    def _estimate_pulls(self, task: Task, outcome: Outcome, source: Head, target: Head) -> int:
        """What copying from the source will cost: one manifest GET, plus one per platform
        copied from an index. The platform count of an index copied whole comes from the
        previous copy in ECR when there is one (a GET there is free), else from its size."""
        if not source.is_index:
            return 1
        if task.platforms:
            return 1 + len(task.platforms)
        platforms = 0
        if target.found and target.is_index:
            registry = self.targets[outcome.target].registry
            previous = registry.get_manifest(outcome.repository, task.tag) or {}
            platforms = len(previous.get("manifests") or [])
        if not platforms:
            platforms = max(1, math.ceil(source.size / INDEX_ENTRY_BYTES))
        return 1 + platforms

    # --- phase 2: copies, admitted in order while the budget covers them ------------------------

    def _copy_all(self, pool: ThreadPoolExecutor, per_task: list[list[Outcome]]) -> None:
        """Start jobs in order while the budget covers them. A job is the tasks that need one
        source image: it is pulled once, and every other tag and target is filled from ECR."""
        settled = _settled(per_task)
        queue = deque(_jobs(per_task))
        needed = sum(self._job_pulls(job, settled) for job in queue)
        self._recheck_budget = (
            self.budget.last is not None and self.budget.last.remaining < 2 * needed
        )
        running: dict[Future[None], int] = {}
        reason = None
        while queue and not self._halted():
            reserved = sum(running.values())
            pulls = self._job_pulls(queue[0], settled)
            reason = self.budget.shortfall(pulls, reserved)
            if reason is None:
                running[pool.submit(self._copy_job, queue.popleft(), settled)] = pulls
            elif running:
                done, _ = wait(running, timeout=_SLICE, return_when=FIRST_COMPLETED)
                for future in done:
                    running.pop(future)
            else:
                break
        _gather(list(running))
        for job in queue:
            for outcome in _waiting(job):
                self._defer(outcome, time.monotonic(), reason)

    def _job_pulls(self, job: list[list[Outcome]], settled: Settled) -> int:
        first = next(_waiting(job))
        return 0 if _donor(first, job[0], settled) else first.pulls

    def _copy_job(self, job: list[list[Outcome]], settled: Settled) -> None:
        for group in job:
            for outcome in (o for o in group if o.action == WOULD_COPY):
                donor = _donor(outcome, group, settled)
                if donor is not None:
                    outcome.pulls = 0
                    self._attempts(outcome, partial(self._from_target, donor=donor))
                else:
                    self._attempts(outcome, self._from_source)
                    self.budget.spend(outcome.pulls)
                    if outcome.action != COPIED:
                        _give_up(job, outcome)
                        return
                    self._refresh_budget(outcome.task)
                if outcome.action == COPIED and not outcome.task.platforms:
                    settled.setdefault((outcome.digest or "", outcome.target), outcome)

    def _attempts(self, outcome: Outcome, copy: Callable[[Outcome], str]) -> None:
        started = time.monotonic()
        for attempt in range(1, self.settings.copy_attempts + 1):
            if self._halted():
                break
            try:
                self.targets[outcome.target].ensure_repository(outcome.repository)
                outcome.digest = copy(outcome)
            except MirrorError as error:
                verdict = self._verdict(error, attempt)
                if verdict == FAILED:
                    _fail(outcome, _after(str(error), attempt), started)
                    return
                if verdict == DEFERRED:
                    break
                self._sleep_before(attempt + 1)
                continue
            outcome.action = COPIED
            outcome.seconds = time.monotonic() - started
            return
        self._defer(outcome, started)

    def _from_source(self, outcome: Outcome) -> str:
        task = outcome.task
        source = self.sources(task.source.repository.registry)
        target = self.targets[outcome.target]
        if task.platforms:
            return self._subset_from_source(outcome, source, target)
        return self._whole_from_source(outcome, source, target)

    def _whole_from_source(self, outcome: Outcome, source: Registry, target: Target) -> str:
        """The image as it is: every platform, every digest kept."""
        return self.copier.copy(
            outcome.task.reference(),
            outcome.destination,
            src_tls_verify=source.tls_verify,
            dest_tls_verify=target.registry.tls_verify,
        )

    def _from_target(self, outcome: Outcome, *, donor: Outcome) -> str:
        """Fill a target from one that has the image: in the same repository, a manifest PUT
        under the new tag (every blob is there already); else registry to registry."""
        if donor.target == outcome.target and donor.repository == outcome.repository:
            registry = self.targets[outcome.target].registry
            raw = registry.get_manifest_raw(donor.repository, donor.task.tag)
            if raw is not None:
                media_type, body = raw
                return registry.put_manifest(outcome.repository, outcome.task.tag, body, media_type)
        return self.copier.copy(
            donor.destination,
            outcome.destination,
            src_tls_verify=self.targets[donor.target].registry.tls_verify,
            dest_tls_verify=self.targets[outcome.target].registry.tls_verify,
        )

    def _subset_from_source(self, outcome: Outcome, source: Registry, target: Target) -> str:
        """Copy only the configured platforms: each platform's manifest by digest (digests
        kept), then an index of just those, annotated with the source digest it came from."""
        task = outcome.task
        path = task.source.repository.path
        raw = source.get_manifest_raw(path, task.source.digest or task.tag)
        if raw is None:
            raise MirrorError(_not_found(task))
        media_type, body = raw
        if media_type not in INDEX_TYPES:  # one platform only: nothing to choose from
            return self._whole_from_source(outcome, source, target)
        index = json.loads(body)
        chosen = choose_platforms(index.get("manifests") or [], task.platforms)
        if not chosen:
            raise MirrorError(
                f"{task.source}: none of {', '.join(task.platforms)} in the source index "
                f"(it has {', '.join(_platform_names(index.get('manifests') or []))})"
            )
        for child in chosen:
            self.copier.copy(
                f"{task.source.repository}@{child['digest']}",
                f"{target.host}/{outcome.repository}@{child['digest']}",
                src_tls_verify=source.tls_verify,
                dest_tls_verify=target.registry.tls_verify,
            )
        written = filtered_index(index, chosen, _sha256(body), task.platforms)
        return target.registry.put_manifest(outcome.repository, task.tag, written, OCI_INDEX)

    def _refresh_budget(self, task: Task) -> None:
        """Read the true budget left after a copy, with a HEAD (free) on the same image: only
        when the budget is tight (under twice what the run needs); a 429 is still caught."""
        if not self._recheck_budget:
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


def choose_platforms(
    manifests: list[dict[str, Any]], wanted: Sequence[str]
) -> list[dict[str, Any]]:
    """The index entries for the wanted platforms. `linux/arm64` matches any variant;
    `linux/arm/v7` only that variant. Attestations (platform unknown/unknown) are left out."""
    chosen = []
    for entry in manifests:
        platform = entry.get("platform") or {}
        os_arch = f"{platform.get('os')}/{platform.get('architecture')}"
        full = f"{os_arch}/{platform['variant']}" if platform.get("variant") else os_arch
        if os_arch in wanted or full in wanted:
            chosen.append(entry)
    return chosen


def filtered_index(
    index: dict[str, Any],
    chosen: list[dict[str, Any]],
    source_digest: str,
    platforms: Sequence[str],
) -> bytes:
    """An OCI index of the chosen entries, recording where it came from in its annotations."""
    annotations = dict(index.get("annotations") or {})
    annotations[SOURCE_DIGEST] = source_digest
    annotations[PLATFORMS] = ",".join(platforms)
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": chosen,
        "annotations": annotations,
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def _platform_names(manifests: list[dict[str, Any]]) -> list[str]:
    names = []
    for entry in manifests:
        platform = entry.get("platform") or {}
        name = f"{platform.get('os')}/{platform.get('architecture')}"
        names.append(f"{name}/{platform['variant']}" if platform.get("variant") else name)
    return names


def _not_found(task: Task) -> str:
    return f"{task.source}: {'digest' if task.source.digest else 'tag'} not found on the source"


def _sha256(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


Settled = dict[tuple[str, int], Outcome]  # (source digest, target) -> a tag that has it


def _settled(per_task: list[list[Outcome]]) -> Settled:
    """Whole images already in a target, by digest: donors for other tags of the same image."""
    settled: Settled = {}
    for group in per_task:
        for outcome in group:
            if outcome.action == UP_TO_DATE and outcome.digest and not outcome.task.platforms:
                settled.setdefault((outcome.digest, outcome.target), outcome)
    return settled


def _jobs(per_task: list[list[Outcome]]) -> list[list[list[Outcome]]]:
    """Group the tasks to copy by the source image they need (its digest), in order."""
    jobs: dict[object, list[list[Outcome]]] = {}
    for group in per_task:
        waiting = [o for o in group if o.action == WOULD_COPY]
        if not waiting:
            continue
        digest = waiting[0].digest
        key: object = digest if digest and not group[0].task.platforms else id(group)
        jobs.setdefault(key, []).append(group)
    return list(jobs.values())


def _waiting(job: list[list[Outcome]]) -> Iterator[Outcome]:
    return (outcome for group in job for outcome in group if outcome.action == WOULD_COPY)


def _donor(outcome: Outcome, group: list[Outcome], settled: Settled) -> Outcome | None:
    """Where a target can be filled from without a pull: the same image under another tag
    in this target, else this tag in another target."""
    if not outcome.task.platforms and outcome.digest:
        alias = settled.get((outcome.digest, outcome.target))
        if alias is not None:
            return alias
    return next((o for o in group if o.action in (UP_TO_DATE, COPIED)), None)


def _give_up(job: list[list[Outcome]], first: Outcome) -> None:
    """The source copy failed or was deferred: so is every tag and target waiting on it."""
    for outcome in _waiting(job):
        outcome.action, outcome.error = first.action, first.error


def _gather(futures: list[Future[T]]) -> list[T]:
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
