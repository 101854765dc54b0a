"""Step 2, check: HEADs on both sides -> for each task and target, an outcome or a pending copy.

A HEAD costs no pull, so this step decides what is up to date for free. It never writes.
The boundaries come in as the small protocols of mirror/ports.py: unit tests hand in fakes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from functools import partial
from typing import TypeVar

from mirror.errors import (
    SCHEMA1_REFUSAL,
    Later,
    MirrorError,
    RegistryError,
    Stopped,
    Unreadable,
    bug_message,
)
from mirror.model import (
    INTERRUPTED,
    NOT_ASKED,
    SOURCE_DEADLINE,
    Action,
    Outcome,
    Pending,
    Refresh,
    Task,
    unrefreshed,
)
from mirror.oci import SCHEMA1_TYPES, Descriptor, made_from
from mirror.ports import Limits, Manifests, Refusals, Target
from mirror.workers import settle

T = TypeVar("T")

log = logging.getLogger("mirror")


Checked = Outcome | Pending


class Checker:
    """Checks tasks against the source and every target; safe to call from many threads.

    `refresh` is `ensure`'s: with `if-possible`, a source asked while the first target holds
    a copy gets `source_deadline` seconds to answer (the copy is served when it cannot);
    with `never`, it is not asked at all then.
    """

    def __init__(
        self,
        *,
        pulls: Manifests,
        targets: Sequence[Target],
        limits: Limits,
        stop: threading.Event,
        source_gets: bool = True,
        refresh: Refresh = Refresh.ALWAYS,
        source_deadline: float = SOURCE_DEADLINE,
        refusals: Refusals,
    ):
        self.pulls = pulls
        self.targets = list(targets)
        self.limits = limits
        self.stop = stop
        self.source_gets = source_gets  # may a source that gives no digest on HEAD be read?
        self.refresh = refresh
        self.source_deadline = source_deadline
        self.refusals = refusals  # images earlier runs could not copy

    def check(self, task: Task) -> list[Checked]:
        """One outcome or pending copy per target, in target order. Never raises: a failure
        is the task's `failed` outcome, a 429, a spent budget or a stop its `deferred` one
        (each with what the target holds), and with `refresh`, a first target's copy that
        the source could not refresh its `stale` one."""
        started = time.monotonic()
        if self.stop.is_set():
            return self._all(task, Action.DEFERRED, INTERRUPTED, started)
        try:
            heads = [
                target.registry.describe_manifest(task.repositories[number], task.tag)
                for number, target in enumerate(self.targets)
            ]
        except Exception as error:
            action, why = self._fault(task, error)
            return self._all(task, action, why, started)
        try:
            return self._compare(task, heads, started)
        except Exception as error:
            action, why = self._fault(task, error)
            if (action is not Action.FAILED and why == INTERRUPTED) or not self._has_copy(
                task, heads
            ):
                return self._all(task, action, why, started, heads)
            return self._served(task, heads, unrefreshed(why), started)

    def _fault(self, task: Task, error: Exception) -> tuple[Action, str]:
        if isinstance(error, Stopped) or (isinstance(error, MirrorError) and self.stop.is_set()):
            return Action.DEFERRED, INTERRUPTED
        if isinstance(error, Later):  # a spent budget, or a 429 (the ledger has it already)
            return Action.DEFERRED, error.why
        if isinstance(error, MirrorError):
            return Action.FAILED, str(error)
        log.debug("checking %s", task.source, exc_info=error)
        return Action.FAILED, bug_message(error)

    def _compare(self, task: Task, heads: list[Descriptor], started: float) -> list[Checked]:
        if task.source.digest:  # a pin already in place costs no request to the source
            pinned = Descriptor(found=True, digest=task.source.digest)
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
            if self._digest_in_a_target(task):  # under another tag: written from there
                return [
                    self._from_a_target(task, n, pinned, h, started) for n, h in enumerate(heads)
                ]
        if self.refresh is Refresh.NEVER and self._has_copy(task, heads):
            return self._served(task, heads, NOT_ASKED, started)
        blocked = self.limits.blocked(task.source.repository.registry)
        if blocked:
            raise Later(blocked)
        source = self._head_source(task, quick=self._has_copy(task, heads))
        return [self._decide(task, n, source, head, started) for n, head in enumerate(heads)]

    def _digest_in_a_target(self, task: Task) -> bool:
        """Does a target's repository hold the pinned digest, under another tag (an earlier
        `ensure image:tag` of the digest Renovate now pins)? Then no source is needed: the
        pin tag is written from there (mirror.transfer), at no pull. A HEAD on each target."""
        digest = task.source.digest or ""
        return any(
            target.registry.describe_manifest(task.repositories[n], digest).found
            for n, target in enumerate(self.targets)
        )

    def _from_a_target(
        self, task: Task, number: int, pinned: Descriptor, head: Descriptor, started: float
    ) -> Checked:
        """A pin whose digest a target holds: up to date where the pin tag is, else a copy
        that costs no pull (mirror.transfer writes it from the target that holds it)."""
        if self._holds(task, number, pinned, head):
            return self._outcome(
                task, number, Action.UP_TO_DATE, pinned.digest, head.digest, started=started
            )
        decided = self._decide(task, number, pinned, head, started)
        return replace(decided, source=None) if isinstance(decided, Pending) else decided

    def _has_copy(self, task: Task, heads: list[Descriptor]) -> bool:
        """May the first target's copy be served instead of a refresh (`ensure`, a tag)?"""
        return self.refresh is not Refresh.ALWAYS and not task.source.digest and heads[0].found

    def _served(
        self, task: Task, heads: list[Descriptor], why: str, started: float
    ) -> list[Checked]:
        """The first target's copy, served unrefreshed (`stale`, with why); a target that
        holds the tag too likewise, and one that lacks it filled from the first."""
        served: list[Checked] = []
        for number, head in enumerate(heads):
            if head.found:
                served.append(
                    self._outcome(
                        task, number, Action.STALE, None, head.digest, started=started, error=why
                    )
                )
            else:
                served.append(
                    Pending(
                        task, number, self._destination(task, number), heads[0].digest or "", None
                    )
                )
        return served

    def _decide(
        self, task: Task, number: int, source: Descriptor, target: Descriptor, started: float
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
            replace(source, body=b""),  # the manifest itself is kept by the pulls
        )

    def _unmirrorable(self, task: Task, source: Descriptor) -> str | None:
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

    def _holds(self, task: Task, number: int, source: Descriptor, target: Descriptor) -> bool:
        """Does the target already hold what the source has? Same digest; or, for a platform
        subset, an index that mirror wrote from exactly this source digest (its annotation)."""
        if not target.found:
            return False
        if target.digest == source.digest:
            return True
        if not task.platforms or not target.is_index:
            return False
        registry = self.targets[number].registry
        try:
            written = registry.get_manifest(task.repositories[number], task.tag) or {}
        except Unreadable as error:  # whoever wrote it, a copy replaces it
            log.debug("%s", error)
            return False
        return made_from(written, source.digest or "", task.platforms)

    def _head_source(self, task: Task, *, quick: bool = False) -> Descriptor:
        """The source's digest for the task (a HEAD; a GET, within the budget, when the HEAD
        tells none). `quick`: ECR has a copy to serve, so wait at most `source_deadline`."""
        host = task.source.repository.registry
        describe = partial(  # a GET it makes is a pull: promised from the budget, and kept
            self.pulls.describe,
            host,
            task.source.repository.path,
            task.source_reference,
            get=self.source_gets,
        )
        head = within(self.source_deadline, describe, host) if quick else describe()
        if head.found and not head.digest and self.source_gets:  # the budget had no pull
            short = self.limits.shortfall(host, 1) or "the pull budget is promised to others"
            raise Later(f"{short} (the source gives no digest on HEAD: reading it is a pull)")
        if not head.found:
            what = "digest" if task.source.digest else "tag"
            raise MirrorError(f"{task.source}: {what} not found on the source")
        return head

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

    def _all(
        self,
        task: Task,
        action: Action,
        error: str | None,
        started: float,
        heads: Sequence[Descriptor] = (),
    ) -> list[Checked]:
        """The same outcome in every target, each with what that target holds (when read)."""
        return list(
            Outcome.everywhere(
                task,
                [target.host for target in self.targets],
                action,
                error=error,
                held=[head.digest if head.found else None for head in heads],
                seconds=time.monotonic() - started,
            )
        )


def within(seconds: float, call: Callable[[], T], host: str) -> T:
    """`call()`'s result if it comes within `seconds`; else RegistryError naming `host`.

    The call goes on in a daemon thread, bounded by its own deadline (`--timeout`), and its
    result is dropped: a DNS lookup or a peer that never answers cannot hold up the build.
    """
    future: Future[T] = Future()
    threading.Thread(target=settle, args=(future, call), name=f"source-{host}", daemon=True).start()
    try:
        return future.result(timeout=seconds)
    except FutureTimeout:
        raise RegistryError(f"{host}: no answer within {seconds:g} s", transient=True) from None
