"""The values a run passes from step to step, and the settings it runs by.

    Settings -> plan: Plan (Tasks) -> check: Pending | Outcome -> schedule: Job
             -> transfer: Copied -> Outcome -> attach: Attached (its referrers)
             -> Progress (the sink), HostBudget (the report)

All frozen: each step (plan, check, schedule, transfer) returns new values and never changes
what an earlier step returned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from mirror.oci import Descriptor, RateLimit
from mirror.reference import ImageRef

if TYPE_CHECKING:
    from mirror.signatures import Policy

INTERRUPTED = "interrupted before it was done"  # why work a stop cut short is deferred
# Seconds `ensure` waits for the source's answer when ECR already has a copy to serve (or
# --timeout, when shorter): a build pre-step must not sit through --timeout and its retries.
SOURCE_DEADLINE = 5.0
NOT_ASKED = "not refreshed: --refresh never (the source was not asked)"
NOT_RESOLVED = "its tag rule was not resolved: the run stopped first"


def destination(host: str, repository: str, tag: str | None = None) -> str:
    """`host/repository:tag`, as lines and reports name a destination: without the host while
    it is not known (a run that stopped before it connected), without a tag for an image
    whose tag rule was not resolved."""
    where = f"{host}/{repository}" if host else repository
    return f"{where}:{tag}" if tag is not None else where


def unrefreshed(why: str | None) -> str:
    """A `stale` outcome's reason, from the refresh's own failure."""
    return f"not refreshed: {why or 'the source could not be asked'}"


class Refresh(str, Enum):
    """`ensure --refresh`: how hard to try the source before serving ECR's copy."""

    ALWAYS = "always"  # a copy that cannot be refreshed fails (sync's rule)
    IF_POSSIBLE = "if-possible"  # ECR's copy, with a warning, when the source cannot refresh it
    NEVER = "never"  # ECR's copy as it is; the source is asked only for what ECR lacks

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Retry:
    """How a copy is tried again: after a transient failure, `attempts` in all, waiting from
    `backoff` seconds (doubling, with jitter); after ECR throttling, which is back-pressure
    rather than failure, up to `throttled_attempts`, waiting from `throttled_backoff`."""

    attempts: int = 3
    backoff: float = 1.0
    throttled_attempts: int = 8
    throttled_backoff: float = 2.0


@dataclass(frozen=True)
class Settings:
    """How a run of `sync` or `ensure` goes: the command line's choices, and their defaults."""

    jobs: int = 4  # copies at once
    dry_run: bool = False
    max_pulls: int | None = None
    timeout: float = 30.0  # seconds for each registry request, retries included
    retry: Retry = field(default_factory=Retry)
    refresh: Refresh = Refresh.ALWAYS  # ensure's --refresh; sync always refreshes
    # Try each source's credentials before any image (sync); ensure asks a source only for
    # what ECR cannot serve, and a wrong password is then that image's failure.
    check_logins: bool = True
    grace: float = 5.0  # seconds to wait for work in flight once stopped
    report: Path | None = None
    junit: Path | None = None
    metrics_file: Path | None = None  # sync --metrics-file: Prometheus text, written at the end
    metrics_labels: tuple[tuple[str, str], ...] = ()  # on every sample of that file
    emf: bool = False  # sync --metrics-emf: CloudWatch EMF lines last on stdout
    shard: str = "1/1"  # sync --shard, K/N: the EMF lines' Shard dimension
    # Look for the referrers of every image now, up to date or not (sync --rescan-referrers);
    # else only for those copied, and for the others at most once a day (mirror.state.Looks).
    rescan_referrers: bool = False
    # Do referrers left behind (deferred, failed) count in the exit code? sync: yes; ensure,
    # a build's pre-step, serves the image whatever its referrers (they are warnings then).
    referrers_count: bool = True

    @property
    def check_jobs(self) -> int:
        """HEAD checks at once for `jobs` copies: cheap requests, so four per copy slot, at
        most 32 (and as many pooled connections)."""
        return min(32, 4 * max(1, self.jobs))

    @property
    def source_deadline(self) -> float:
        """Seconds a source gets when a target has a copy to serve (`ensure`)."""
        return min(SOURCE_DEADLINE, self.timeout)


class Action(str, Enum):
    """What happened to an image in a target: the `action` of a report entry."""

    COPIED = "copied"
    UP_TO_DATE = "up-to-date"
    WOULD_COPY = "would-copy"  # --dry-run: a copy is needed and was not made
    DEFERRED = "deferred"  # not done now (budget, rate limit, interrupted): run again later
    FAILED = "failed"
    # `ensure`: the target's copy is served as it is, not refreshed from the source (which
    # could not be asked, or was not, with --refresh never); `error` says why.
    STALE = "stale"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ReferrerRule:
    """Which referrers travel with an image (the config's `referrers:`): none, every one
    (`types` None), or those whose artifact type is listed (`*` at the end: a prefix)."""

    enabled: bool = True
    types: tuple[str, ...] | None = None

    def __str__(self) -> str:
        if not self.enabled:
            return "off"
        return "all" if self.types is None else ", ".join(self.types)


NO_REFERRERS = ReferrerRule(enabled=False)


@dataclass(frozen=True)
class Task:
    """One tag to mirror into every target.

    `order` is the entry's place in the config (image index, tag position): the report keeps
    that order whatever order the work finishes in. `referrers`: what travels with it;
    `verify`: the policy a signature of its digest must pass before anything is written.
    """

    source: ImageRef  # a tag, or a pinned digest (with the tag it is mirrored under)
    tag: str  # the destination tag
    repositories: tuple[str, ...]  # the ECR repository in each target
    platforms: tuple[str, ...] = ()  # () = every platform, digests preserved
    order: tuple[int, int] = (0, 0)
    referrers: ReferrerRule = NO_REFERRERS
    verify: Policy | None = field(default=None, compare=False)

    @property
    def source_reference(self) -> str:
        """What to ask the source for: the pinned digest, else the tag."""
        return self.source.digest or self.source.tag or "latest"

    def destination(self, host: str, target: int = 0) -> str:
        """`host/repository:tag` in target number `target` (on `host`)."""
        return destination(host, self.repositories[target], self.tag)


@dataclass(frozen=True)
class Pending:
    """A copy the check found needed: the target lacks what the source has."""

    task: Task
    target: int
    destination: str  # host/repository:tag
    source_digest: str
    destination_digest: str | None  # what the target holds now (None: nothing)
    # What the source's HEAD told (its size and media type: what a copy will pull, as
    # mirror.schedule.estimate counts it); None when the copy is filled from a target.
    source: Descriptor | None = None

    @property
    def repository(self) -> str:
        return self.task.repositories[self.target]

    @property
    def key(self) -> tuple[object, int]:
        """Which copy it is (its task and target): what the pulls promised to it are kept by."""
        return (self.task.order, self.target)


@dataclass(frozen=True)
class Copied:
    """What a copy wrote: the digest at the destination, and the foreign layers skopeo left
    at their URLs (Windows base layers: the destination holds only their descriptors)."""

    digest: str
    foreign_layers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """What became of one entry in one target. Final: printed once, reported once.

    An image whose tag rule could not be resolved has one outcome with `tag` None.
    """

    source: str  # docker.io/library/ruby:3.3, or docker.io/library/ruby for an image
    destination: str  # host/repository:tag, or host/repository
    repository: str
    tag: str | None
    action: Action
    source_digest: str | None = None  # what the source has (or had when checked)
    destination_digest: str | None = None  # what the target holds after the run
    error: str | None = None
    seconds: float = 0.0
    target: int = 0
    order: tuple[int, int] = (0, 0)
    warning: str | None = None  # besides the action, for the log and the report's warnings
    verified: str | None = None  # what vouched for the image the verify gate let through
    pulled: bool = False  # copied from the source (not filled from a target's copy)
    # bytes of blobs mirror mounted from another repository of the registry for this copy,
    # instead of uploading them (mirror.mounts)
    mounted_bytes: int = 0

    @classmethod
    def of(
        cls,
        task: Task,
        target: int,
        destination: str,
        action: Action,
        *,
        source_digest: str | None = None,
        destination_digest: str | None = None,
        error: str | None = None,
        seconds: float = 0.0,
        warning: str | None = None,
        verified: str | None = None,
        mounted_bytes: int = 0,
    ) -> Outcome:
        return cls(
            source=str(task.source),
            destination=destination,
            repository=task.repositories[target],
            tag=task.tag,
            action=action,
            source_digest=source_digest,
            destination_digest=destination_digest,
            error=error,
            seconds=seconds,
            target=target,
            order=task.order,
            warning=warning,
            verified=verified,
            mounted_bytes=mounted_bytes,
        )

    @classmethod
    def everywhere(
        cls,
        task: Task,
        hosts: Sequence[str],
        action: Action,
        *,
        error: str | None = None,
        held: Sequence[str | None] = (),
        seconds: float = 0.0,
    ) -> list[Outcome]:
        """The same outcome of `task` in every target (on `hosts`), each with what that
        target holds, when known (`held`, in target order)."""
        return [
            cls.of(
                task,
                number,
                task.destination(host, number),
                action,
                destination_digest=held[number] if number < len(held) else None,
                error=error,
                seconds=seconds,
            )
            for number, host in enumerate(hosts)
        ]

    @classmethod
    def settled(
        cls, pending: Pending, action: Action, *, error: str | None = None, seconds: float = 0.0
    ) -> Outcome:
        """A pending copy that ends without a copy: would-copy, deferred or failed."""
        return cls.of(
            pending.task,
            pending.target,
            pending.destination,
            action,
            source_digest=pending.source_digest,
            destination_digest=pending.destination_digest,
            error=error,
            seconds=seconds,
        )

    @property
    def sort_key(self) -> tuple[int, int, int]:
        """Config order, then target order: the order of the report and the JUnit file."""
        return (*self.order, self.target)


@dataclass(frozen=True)
class Referrer:
    """Something that vouches for an image, as it travelled: a referrer manifest (by
    digest) or one of cosign's tags (`tag`), with its artifact type, attached to `subject`
    (the image's digest, or one of its platforms')."""

    digest: str
    artifact_type: str
    subject: str
    tag: str | None = None


@dataclass(frozen=True)
class Attached:
    """What was done about the referrers of one image in one target (step 5, attach), for
    the entries it covers (`keys`: (order, target) of each tag of that image there).

    `copied`: written now; `present`: found at the source and already at the destination;
    `deferred`: why the rest waits for a later run (the pull budget, a 429, a stop);
    `failed`: what went wrong, in one line; `warnings`: what is worth knowing besides.
    """

    destination: str  # host/repository@digest
    keys: tuple[tuple[tuple[int, int], int], ...]
    copied: tuple[Referrer, ...] = ()
    present: int = 0
    deferred: str | None = None
    failed: str | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Unresolved:
    """Why a tag rule's list could not be read, and what that makes of the image."""

    error: str
    action: Action = Action.FAILED  # DEFERRED when the source said "later" (429)


@dataclass(frozen=True)
class Plan:
    """The tasks of a run, in config order, and what planning found on the way."""

    tasks: tuple[Task, ...]
    outcomes: tuple[Outcome, ...] = ()  # images settled by planning: unresolvable tag rules
    warnings: tuple[str, ...] = ()  # for the log and the report
    notes: tuple[str, ...] = ()  # what each tag rule chose, for the log


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


@dataclass(frozen=True)
class Place:
    """Where a whole image already is: a tag in a target."""

    target: int
    repository: str
    tag: str
    reference: str  # host/repository:tag


@dataclass(frozen=True)
class Refusal:
    """Why an earlier run refused a source image (mirror.state remembers it by digest)."""

    reason: str
    seen: str  # ISO-8601 UTC, when a run last refused it
    tool: str = ""  # the skopeo that refused it: another version tries the image again


@dataclass(frozen=True)
class HostBudget:
    """One source host's budget as seen in this run (a snapshot)."""

    host: str
    start: RateLimit | None = None  # the first figures the host sent
    last: RateLimit | None = None  # the latest, lowered by the pulls spent since
    spent: int = 0  # manifest GETs the host answered in this run (what it counts as pulls)
    limited: str | None = None  # why the host is off limits for the rest of the run (a 429)


@dataclass(frozen=True)
class Mounting:
    """Layer reuse in one destination registry during a run (mirror.mounts): blobs mounted
    from another of its repositories instead of uploaded; or, where the registry answered a
    mount with 202 (ECR: BLOB_MOUNTING off), the bytes uploaded that a mount could have
    saved."""

    registry: str  # the host
    mounts: int = 0  # blobs mounted
    mounted_bytes: int = 0
    refused: bool = False  # a mount was answered 202: none was tried after it
    unmounted_bytes: int = 0  # uploaded, though another repository held them (when refused)
    failed: str | None = None  # a mount request failed: none was tried after it

    @property
    def said(self) -> bool:
        """Is there anything to tell?"""
        return bool(self.mounts or self.refused or self.failed)


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
