"""Step 2, check: HEADs on both sides -> for each task and target, an outcome or a pending copy.

A HEAD costs no pull, so this step decides what is up to date for free. It never writes.
The boundaries come in as small protocols: unit tests hand in fakes.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mirror.errors import (
    SCHEMA1_REFUSAL,
    MirrorError,
    RateLimited,
    Stopped,
    bug_message,
    run_again_later,
)
from mirror.model import Action, Outcome, Pending, Task
from mirror.registry import SCHEMA1_TYPES, Head, RateLimit, TagList
from mirror.state import Refusals

log = logging.getLogger("mirror")
SOURCE_DIGEST = "io.github.mirror.source.digest"  # annotations on an index mirror writes
PLATFORMS = "io.github.mirror.platforms"
# At most one platform's entry in an index, in bytes: more platforms guessed, never fewer.
INDEX_ENTRY_BYTES = 300
INTERRUPTED = "interrupted before it was done"


class Registry(Protocol):
    """What the steps need of a registry (mirror.registry.Registry is the real one)."""

    host: str
    api: str  # the host that serves the registry API (Docker Hub's: registry-1.docker.io)
    tls_verify: bool

    def head_manifest(self, path: str, reference: str) -> Head: ...

    def describe_manifest(
        self, path: str, reference: str, *, get: bool | Callable[[], bool] = True
    ) -> Head: ...

    def get_manifest(self, path: str, reference: str) -> dict[str, Any] | None: ...

    def get_manifest_raw(self, path: str, reference: str) -> tuple[str, bytes] | None: ...

    def put_manifest(self, path: str, reference: str, body: bytes, media_type: str) -> str: ...

    def check_login(self, path: str) -> None: ...

    def list_tags(self, path: str) -> TagList: ...


@dataclass(frozen=True)
class Target:
    """One ECR registry that receives images: its host, registry client and repository hooks."""

    host: str
    registry: Registry
    ensure_repository: Callable[[str], object] = lambda repository: None  # none to create
    is_immutable: Callable[[str, str], bool] = lambda repository, tag: False
    # Why a copy into the repository cannot be made (it is missing and mirror may not create
    # it), or None.
    cannot_write: Callable[[str], str | None] = lambda repository: None


class Limits(Protocol):
    """The pull budgets (mirror.schedule.Budgets): what the checks tell and ask them."""

    def see(self, host: str, rate_limit: RateLimit | None) -> None: ...

    def spend(self, host: str, pulls: int) -> None: ...

    def shortfall(self, host: str, pulls: int, reserved: dict[str, int]) -> str | None: ...

    def limited(self, host: str, why: str) -> None: ...

    def blocked(self, host: str) -> str | None: ...


Checked = Outcome | Pending


class Checker:
    """Checks tasks against the source and every target; safe to call from many threads."""

    def __init__(
        self,
        *,
        sources: Callable[[str], Registry],
        targets: Sequence[Target],
        limits: Limits,
        stop: threading.Event,
        source_gets: bool = True,
        refusals: Refusals | None = None,
    ):
        self.sources = sources
        self.targets = list(targets)
        self.limits = limits
        self.stop = stop
        self.source_gets = source_gets  # may a source that gives no digest on HEAD be read?
        self.refusals = refusals or Refusals(None)  # images earlier runs could not copy

    def check(self, task: Task) -> list[Checked]:
        """One outcome or pending copy per target, in target order. Never raises: a failure
        is the task's `failed` outcome, a 429, a spent budget or a stop its `deferred` one."""
        started = time.monotonic()
        host = task.source.repository.registry
        if self.stop.is_set() or self.limits.blocked(host):
            why = INTERRUPTED if self.stop.is_set() else self.limits.blocked(host)
            return self._all(task, Action.DEFERRED, why, started)
        try:
            return self._compare(task, started)
        except Exception as error:
            action, why = self._fault(task, error)
            return self._all(task, action, why, started)

    def _fault(self, task: Task, error: Exception) -> tuple[Action, str]:
        if isinstance(error, Stopped) or (isinstance(error, MirrorError) and self.stop.is_set()):
            return Action.DEFERRED, INTERRUPTED
        if isinstance(error, RateLimited):
            why = run_again_later(error)
            self.limits.limited(error.host or task.source.repository.registry, why)
            return Action.DEFERRED, why
        if isinstance(error, Later):
            return Action.DEFERRED, str(error)
        if isinstance(error, MirrorError):
            return Action.FAILED, str(error)
        log.debug("checking %s", task.source, exc_info=error)
        return Action.FAILED, bug_message(error)

    def _compare(self, task: Task, started: float) -> list[Checked]:
        heads = [
            target.registry.describe_manifest(task.repositories[number], task.tag)
            for number, target in enumerate(self.targets)
        ]
        if task.source.digest:  # a pin already in place costs no request to the source
            pinned = Head(found=True, digest=task.source.digest)
            if all(self._holds(task, n, pinned, head) for n, head in enumerate(heads)):
                return [
                    self._outcome(
                        task,
                        n,
                        Action.UP_TO_DATE,
                        task.source.digest,
                        head.digest,
                        started=started,
                    )
                    for n, head in enumerate(heads)
                ]
        source = self._head_source(task)
        return [self._decide(task, n, source, head, started) for n, head in enumerate(heads)]

    def _decide(
        self, task: Task, number: int, source: Head, target: Head, started: float
    ) -> Checked:
        digest = source.digest or ""
        if target.found and digest and self._holds(task, number, source, target):
            return self._outcome(
                task, number, Action.UP_TO_DATE, digest, target.digest, started=started
            )
        unmirrorable = self._unmirrorable(task, source)
        if unmirrorable:  # found out from the HEAD or an earlier run: no pull spent on it
            error = f"{task.source}: {unmirrorable}"
            return self._outcome(
                task, number, Action.FAILED, digest, target.digest, started=started, error=error
            )
        repository = task.repositories[number]
        refused = None if target.found else self.targets[number].cannot_write(repository)
        if refused:  # found out before any pull is spent on a copy ECR would refuse
            error = f"{self._destination(task, number)}: {refused}"
            return self._outcome(
                task, number, Action.FAILED, digest, None, started=started, error=error
            )
        if target.found and self.targets[number].is_immutable(repository, task.tag):
            error = (
                f"{self._destination(task, number)} holds {target.digest} and the tag is "
                f"immutable in {repository}: not overwritten with {digest}"
            )
            return self._outcome(
                task, number, Action.FAILED, digest, target.digest, started=started, error=error
            )
        return Pending(
            task,
            number,
            self._destination(task, number),
            digest,
            target.digest if target.found else None,
            self._estimate_pulls(task, number, source, target),
        )

    def _unmirrorable(self, task: Task, source: Head) -> str | None:
        """Why no copy can keep the source image (a schema 1 manifest, as its HEAD says), or
        why an earlier run refused this very digest; None when it may be copied."""
        if source.media_type in SCHEMA1_TYPES:
            return SCHEMA1_REFUSAL
        refused = self.refusals.why(str(task.source.repository), source.digest or "")
        if refused is None:
            return None
        return (
            f"{refused.reason} (found by an earlier run on {refused.seen[:10]}; not tried "
            "again until the source changes)"
        )

    def _holds(self, task: Task, number: int, source: Head, target: Head) -> bool:
        """Does the target already hold what the source has? Same digest; or, for a platform
        subset, an index that mirror wrote from exactly this source digest (its annotation)."""
        if not target.found:
            return False
        if target.digest == source.digest:
            return True
        if not task.platforms or not target.is_index:
            return False
        registry = self.targets[number].registry
        written = registry.get_manifest(task.repositories[number], task.tag)
        annotations = (written or {}).get("annotations") or {}
        return bool(
            annotations.get(SOURCE_DIGEST) == source.digest
            and annotations.get(PLATFORMS) == ",".join(task.platforms)
        )

    def _head_source(self, task: Task) -> Head:
        host = task.source.repository.registry
        short: list[str] = []

        def may_get() -> bool:  # a GET for the digest is a pull: within the budget only
            if not self.source_gets:
                return False
            reason = self.limits.shortfall(host, 1, {})
            short.extend([reason] if reason else [])
            return reason is None

        head = self.sources(host).describe_manifest(
            task.source.repository.path, task.source_reference, get=may_get
        )
        self.limits.see(host, head.rate_limit)
        if head.fetched:  # a GET: Docker Hub counts it as a pull
            self.limits.spend(host, 1)
        if head.found and not head.digest and short:
            raise Later(f"{short[0]} (the source gives no digest on HEAD: reading it is a pull)")
        if not head.found:
            what = "digest" if task.source.digest else "tag"
            raise MirrorError(f"{task.source}: {what} not found on the source")
        return head

    def _estimate_pulls(self, task: Task, number: int, source: Head, target: Head) -> int:
        """What copying from the source will cost: one manifest GET, plus one per platform
        copied from an index. The platform count of an index copied whole comes from the
        previous copy in ECR when there is one (a GET there is free), else from its size."""
        if not source.is_index:
            return 1
        if task.platforms:
            return 1 + len(task.platforms)
        platforms = 0
        if target.found and target.is_index:
            registry = self.targets[number].registry
            previous = registry.get_manifest(task.repositories[number], task.tag) or {}
            platforms = len(previous.get("manifests") or [])
        if not platforms:
            platforms = max(1, math.ceil(source.size / INDEX_ENTRY_BYTES))
        return 1 + platforms

    def _destination(self, task: Task, number: int) -> str:
        return task.destination(self.targets[number].host, number)

    def _outcome(
        self,
        task: Task,
        number: int,
        action: Action,
        source_digest: str | None,
        destination_digest: str | None,
        *,
        started: float,
        error: str | None = None,
    ) -> Outcome:
        return Outcome.of(
            task,
            number,
            self._destination(task, number),
            action,
            source_digest=source_digest,
            destination_digest=destination_digest,
            error=error,
            seconds=time.monotonic() - started,
        )

    def _all(self, task: Task, action: Action, error: str | None, started: float) -> list[Checked]:
        return [
            self._outcome(task, number, action, None, None, started=started, error=error)
            for number in range(len(self.targets))
        ]


class Later(MirrorError):
    """Not now: the task waits for a later run (a spent budget), named in the message."""
