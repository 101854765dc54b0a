"""The values a run passes from step to step: tasks in, pending copies between, outcomes out.

All frozen: each step (plan, check, schedule, transfer) returns new values and never changes
what an earlier step returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from mirror.reference import ImageRef

INTERRUPTED = "interrupted before it was done"  # why work a stop cut short is deferred


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
class Task:
    """One tag to mirror into every target.

    `order` is the entry's place in the config (image index, tag position): the report keeps
    that order whatever order the work finishes in.
    """

    source: ImageRef  # a tag, or a pinned digest (with the tag it is mirrored under)
    tag: str  # the destination tag
    repositories: tuple[str, ...]  # the ECR repository in each target
    platforms: tuple[str, ...] = ()  # () = every platform, digests preserved
    order: tuple[int, int] = (0, 0)

    @property
    def source_reference(self) -> str:
        """What to ask the source for: the pinned digest, else the tag."""
        return self.source.digest or self.source.tag or "latest"

    def destination(self, host: str, target: int = 0) -> str:
        return f"{host}/{self.repositories[target]}:{self.tag}"


@dataclass(frozen=True)
class Pending:
    """A copy the check found needed: the target lacks what the source has."""

    task: Task
    target: int
    destination: str  # host/repository:tag
    source_digest: str
    destination_digest: str | None  # what the target holds now (None: nothing)
    pulls: int  # the pulls copying from the source costs: exactly, or at most (`exact` False)
    exact: bool = True  # False: an index whose entries are not counted yet (`pulls` is high)

    @property
    def repository(self) -> str:
        return self.task.repositories[self.target]


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
        )

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
