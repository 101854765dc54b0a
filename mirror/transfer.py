"""Step 4, transfer: run a job's copies with skopeo, or fill a target from one that has the image.

A job's image is pulled from the source once, into the first target that needs it; every other
tag and target is filled registry to registry (a manifest PUT in the same repository, else a
skopeo copy between ECR registries), which costs no pull.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from mirror.errors import (
    SCHEMA1_REFUSAL,
    CopyError,
    Later,
    MirrorError,
    NestedIndex,
    NotVerified,
    RateLimited,
    RegistryError,
    Stopped,
    Unmirrorable,
    bug_message,
)
from mirror.model import INTERRUPTED, Action, Copied, Job, Outcome, Pending, Place, Retry, Task
from mirror.oci import (
    INDEX_TYPES,
    SCHEMA1_TYPES,
    Manifest,
    choose_platforms,
    filtered_index,
    index_of,
    made_from,
    platform_names,
    sha256,
)
from mirror.ports import (
    Copier,
    Limits,
    Manifests,
    Pacing,
    Refusals,
    Registry,
    Reuse,
    Target,
    Verifier,
)
from mirror.reference import Repository
from mirror.workers import backoff

log = logging.getLogger("mirror")


class Holdings:
    """Where each image is in the targets, as the run learns it: donors for the copies left.

    An image is known by its source digest and the platforms taken from it (all, or a
    subset): the same source image taken whole and as a subset are two images. For a task
    with a verify policy, only an image of its own source repository held under the same
    policy is a donor: a copy no gate (or another gate) let in must not fill a tag this gate
    guards.
    """

    def __init__(self) -> None:
        self._by_image: dict[tuple[object, ...], Place] = {}  # and target (and gate)
        self._by_task: dict[tuple[int, int], list[Place]] = {}  # any image, by task
        self._lock = threading.Lock()

    def add(self, outcome: Outcome, *, task: Task) -> None:
        """Record an outcome of `task` that leaves the image in its target (up to date,
        copied, or stale: served as it is)."""
        held = (Action.UP_TO_DATE, Action.COPIED, Action.STALE)
        if outcome.tag is None or outcome.action not in held:
            return
        place = Place(outcome.target, outcome.repository, outcome.tag, outcome.destination)
        with self._lock:
            if outcome.source_digest:
                key = _image_key(task, outcome.source_digest, outcome.target)
                self._by_image.setdefault(key, place)
            self._by_task.setdefault(outcome.order, []).append(place)

    def donor(self, pending: Pending) -> Place | None:
        """The same image under another tag in this target, else this tag in another target."""
        with self._lock:
            key = _image_key(pending.task, pending.source_digest, pending.target)
            alias = self._by_image.get(key)
            if alias is not None:
                return alias
            places = self._by_task.get(pending.task.order, [])
            return places[0] if places else None


def _image_key(task: Task, digest: str, target: int) -> tuple[object, ...]:
    """Holdings' key of an image in a target: its digest and platforms, and for a task with
    a verify policy, its source repository and that policy (the gate's verdicts are kept
    per policy object too: attach.Gate)."""
    if task.verify is None:
        return (digest, task.platforms, target)
    return (digest, task.platforms, target, str(task.source.repository), id(task.verify))


class Transfer:
    """Runs jobs; each settled copy goes to `emit` as soon as it is known. Thread-safe."""

    def __init__(
        self,
        *,
        pulls: Manifests,
        targets: Sequence[Target],
        copier: Copier,
        limits: Limits,
        holdings: Holdings,
        emit: Callable[[Outcome], None],
        stop: threading.Event,
        retry: Retry | None = None,
        backpressure: Pacing,
        refusals: Refusals,
        source_deadline: float | None = None,
        verifier: Verifier | None = None,
        reuse: Reuse | None = None,
    ):
        self.pulls = pulls
        self.targets = list(targets)
        self.copier = copier
        self.limits = limits  # the pull budgets, asked before every pull
        self.holdings = holdings
        self.emit = emit
        self.stop = stop
        self.retry = retry or Retry()
        self.backpressure = backpressure
        self.refusals = refusals  # images no copy can keep, by digest
        # ensure's, when it may serve the copy a target holds: seconds for each read from
        # the source during such a copy (a source that stalls mid-copy does not hold up the
        # build); None: --timeout (sync, --refresh always)
        self.source_deadline = source_deadline
        self.verifier = verifier  # the verify gate, before a copy from the source
        self.reuse = reuse  # layers mounted across repositories, before a copy from the source

    def run(self, job: Job) -> None:
        """Copy the job's image once from the source, then fill the rest from the targets.
        A bug fails the job's copies that are left, not the run."""
        try:
            self._run(job)
        except Exception as bug:
            log.debug("copying %s", job.lead.task.source, exc_info=True)
            for pending in job.pendings():
                self.emit(Outcome.settled(pending, Action.FAILED, error=bug_message(bug)))

    def _run(self, job: Job) -> None:
        pendings = job.pendings()
        # the gate, asked before the first pull, once per policy: the job's tags may be of
        # several config entries, gated differently
        gates: dict[int, tuple[Outcome | None, str | None]] = {}
        for position, pending in enumerate(pendings):
            donor = self.holdings.donor(pending) or self._pin_holder(pending)
            if donor is not None:
                outcome = self._attempts(pending, partial(self._from_target, donor=donor))
            else:
                policy = id(pending.task.verify)
                if policy not in gates:
                    gates[policy] = self._gate(pending)
                refused, verified = gates[policy]
                if refused is not None:  # nothing of it written under a tag this gate guards
                    self.emit(Outcome.settled(pending, refused.action, error=refused.error))
                    continue
                outcome = self._attempts(pending, self._from_source, from_source=True)
                if outcome.action is Action.COPIED:
                    outcome = replace(outcome, verified=verified, pulled=True)
            self.emit(outcome)
            self.holdings.add(outcome, task=pending.task)
            if donor is None and outcome.action not in (Action.COPIED, Action.UP_TO_DATE):
                for rest in pendings[position + 1 :]:  # they needed that copy
                    self.emit(Outcome.settled(rest, outcome.action, error=outcome.error))
                return

    def _gate(self, pending: Pending) -> tuple[Outcome | None, str | None]:
        """The verify gate, before anything of the image is written (its repository not even
        created): (None, what vouched) when it passes (or there is no policy); else the
        outcome that settles the job: failed (not verified, or the signatures could not be
        read), or deferred (the budget cannot cover reading them, or the source said 429)."""
        if self.verifier is None or pending.task.verify is None:
            return None, None
        started = time.monotonic()
        try:
            return None, self.verifier.verify(pending)
        except Later as error:
            host = pending.task.source.repository.registry
            return _settle(pending, Action.DEFERRED, self._deferred_why(error, host), started), None
        except NotVerified as error:
            return _settle(pending, Action.FAILED, str(error), started), None
        except MirrorError as error:
            if self.stop.is_set() or isinstance(error, Stopped):
                return _settle(pending, Action.DEFERRED, INTERRUPTED, started), None
            why = f"{pending.task.source}: the signatures to verify cannot be read: {error}"
            return _settle(pending, Action.FAILED, why, started), None

    def _pin_holder(self, pending: Pending) -> Place | None:
        """A target whose repository holds a pinned digest under another tag (the check found
        it: mirror.check.Checker._digest_in_a_target), this one first: the pin tag is written
        from there, with no request to the source."""
        digest = pending.task.source.digest
        if not digest:
            return None
        numbers = sorted(range(len(self.targets)), key=lambda n: n != pending.target)
        for number in numbers:
            target, repository = self.targets[number], pending.task.repositories[number]
            try:
                held = target.registry.describe_manifest(repository, digest).found
            except MirrorError as error:
                log.debug("%s@%s: %s", repository, digest, error)
                continue
            if held:
                return Place(number, repository, digest, f"{target.host}/{repository}@{digest}")
        return None

    # --- attempts ------------------------------------------------------------------------------

    def _attempts(
        self, pending: Pending, copy: Callable[[Pending], Copied], *, from_source: bool = False
    ) -> Outcome:
        """Copy, trying again after a destination's fault (throttling, 5xx, a dropped line):
        what was pulled is pulled once (`Pulls`), so a retry costs the source nothing."""
        started = time.monotonic()
        host = pending.task.source.repository.registry
        failures = throttles = 0
        while not self.stop.is_set():
            blocked = self.limits.blocked(host) if from_source else None
            if blocked:  # the source said 429 since this job started
                return _settle(pending, Action.DEFERRED, blocked, started)
            try:
                self.targets[pending.target].ensure_repository(pending.repository)
                copied = copy(pending)
            except Unmirrorable as error:  # the image's own form: no other try would do
                self.refusals.add(
                    str(pending.task.source.repository), pending.source_digest, str(error)
                )
                return _settle(pending, Action.FAILED, f"{pending.task.source}: {error}", started)
            except MirrorError as error:
                if _throttled(error) and throttles + 1 < self.retry.throttled_attempts:
                    throttles += 1
                    self.backpressure.throttled(self.targets[pending.target].host)
                    self._pause(throttles, str(error), self.retry.throttled_backoff)
                    continue
                failures += 1
                verdict = self._verdict(error, host, failures)
                if verdict is Action.FAILED:
                    why = _after(str(error), failures + throttles)
                    return self._failed(pending, why, started)
                if verdict is Action.DEFERRED:
                    return _settle(
                        pending, Action.DEFERRED, self._deferred_why(error, host), started
                    )
                self._pause(failures, str(error), self.retry.backoff)
                continue
            self.backpressure.succeeded()
            return self._copied(pending, copied, started)
        return _settle(pending, Action.DEFERRED, INTERRUPTED, started)

    def _copied(self, pending: Pending, copied: Copied, started: float) -> Outcome:
        """The copy's outcome, once what was written is checked against what was announced."""
        digest = copied.digest
        if not pending.task.platforms and digest != pending.source_digest:
            wrong = (
                f"copied, but {pending.destination} now holds {digest}, not the "
                f"{pending.source_digest} the source announced"
            )
            return _settle(pending, Action.FAILED, wrong, started)
        return Outcome.of(
            pending.task,
            pending.target,
            pending.destination,
            Action.COPIED,
            source_digest=pending.source_digest,
            destination_digest=digest,
            seconds=time.monotonic() - started,
            warning=self._foreign_warning(pending, copied),
            mounted_bytes=self.reuse.mounted(pending.key) if self.reuse else 0,
        )

    def _foreign_warning(self, pending: Pending, copied: Copied) -> str | None:
        """Foreign layers (Windows base layers with `urls`) stay where their URLs point:
        skopeo copies their descriptors only, as Docker does. Named, with their hosts read
        from what the destination now holds (free), since a build host that cannot reach
        those hosts cannot pull the image."""
        if not copied.foreign_layers:
            return None
        registry = self.targets[pending.target].registry
        urls = foreign_urls(registry, pending.repository, copied.digest, set(copied.foreign_layers))
        hosts = sorted({urlsplit(url).hostname or url for url in urls}) or ["their URLs"]
        count = len(copied.foreign_layers)
        return (
            f"{pending.destination}: {count} foreign layer{'s' if count > 1 else ''} (Windows "
            f"base layers) not copied: the image's manifest points to {', '.join(hosts)} for "
            f"{'them' if count > 1 else 'it'}, as Docker Hub's does, so a build host without "
            "access to that host cannot pull this image from ECR"
        )

    def _failed(self, pending: Pending, why: str, started: float) -> Outcome:
        """A copy that failed for good, unless the destination holds what was wanted anyway
        (another run wrote it meanwhile: a success, whoever wrote it); an immutable tag that
        holds something else is named as such (skopeo's own words for an index refused there
        are about converting it)."""
        target = self.targets[pending.target]
        try:
            head = target.registry.head_manifest(pending.repository, pending.task.tag)
            if head.found and self._wanted(pending, head.digest, head.is_index):
                log.debug("%s: holds %s after all", pending.destination, head.digest)
                found = Outcome.settled(pending, Action.UP_TO_DATE, seconds=_since(started))
                return replace(found, destination_digest=head.digest)
            if head.found and target.is_immutable(pending.repository, pending.task.tag):
                why = (
                    f"{pending.destination} holds {head.digest} and the tag is immutable in "
                    f"{pending.repository}: not overwritten with {pending.source_digest}"
                )
        except MirrorError as error:
            log.debug("%s: cannot look at it after the failure: %s", pending.destination, error)
        return _settle(pending, Action.FAILED, why, started)

    def _wanted(self, pending: Pending, digest: str | None, is_index: bool) -> bool:
        if not pending.task.platforms:
            return digest == pending.source_digest
        if not is_index:
            return False
        registry = self.targets[pending.target].registry
        written = registry.get_manifest(pending.repository, pending.task.tag) or {}
        return made_from(written, pending.source_digest, pending.task.platforms)

    def _verdict(self, error: MirrorError, host: str, failures: int) -> Action | None:
        """After a failed attempt: DEFERRED (stopped or rate limited), FAILED, or None: retry."""
        if self.stop.is_set() or isinstance(error, Stopped):
            return Action.DEFERRED  # we stopped skopeo ourselves
        if isinstance(error, Later):  # a 429 (the ledger has it), or a budget short of the rest
            return Action.DEFERRED
        if getattr(error, "transient", False) and failures < self.retry.attempts:
            return None
        return Action.FAILED

    def _deferred_why(self, error: MirrorError, host: str) -> str:
        if self.stop.is_set() or isinstance(error, Stopped):
            return INTERRUPTED
        return self.limits.blocked(host) or str(error)

    def _pause(self, attempt: int, why: str, base: float) -> None:
        delay = backoff(base, attempt)
        log.debug("copy attempt failed (%s); trying again in %.1f s", why, delay)
        self.stop.wait(delay)

    # --- the copies ------------------------------------------------------------------------------

    def _from_source(self, pending: Pending) -> Copied:
        repository = pending.task.source.repository
        deadline = self.source_deadline if _servable_instead(pending) else None
        origin = _Origin(
            repository.path, str(repository), source=repository, pulls=self.pulls, deadline=deadline
        )
        if pending.task.platforms:
            return self._subset(pending, origin)
        return self._whole(pending, origin, f"{origin.name}@{pending.source_digest}")

    def _whole(self, pending: Pending, origin: _Origin, reference: str) -> Copied:
        """The image as it is, every platform, every digest kept, from `reference` (on the
        source, the digest the check saw: skopeo refuses a manifest that does not match it,
        and a tag that moved since the check does not slip in unchecked). An index of
        indexes, which skopeo 1.9 cannot copy, is walked instead (`_walk`)."""
        try:
            return self._copy(pending, origin, reference, pending.destination)
        except NestedIndex:
            log.debug("%s: an index of indexes; copying it part by part", pending.task.source)
            return self._walk(pending, origin)

    def _walk(self, pending: Pending, origin: _Origin) -> Copied:
        """An index whose entries are indexes, copied whole by parts, every digest kept: each
        leaf manifest by digest with skopeo, then each index's own bytes PUT by digest,
        innermost first, and the top one under the tag."""
        target = self.targets[pending.target]
        top = origin.fetch(pending.source_digest)
        tree = _Tree.read(origin, top, afford=partial(self._afford, pending, origin))
        self._afford(pending, origin, [leaf["digest"] for leaf in tree.leaves])
        foreign: dict[str, None] = {}
        for digest in dict.fromkeys(leaf["digest"] for leaf in tree.leaves):
            copied = self._copy_digest(pending, origin, digest)
            foreign.update(dict.fromkeys(copied.foreign_layers))
        for digest, inner in tree.inner.items():
            target.registry.put_manifest(pending.repository, digest, inner.body, inner.media_type)
        written = target.registry.put_manifest(
            pending.repository, pending.task.tag, top.body, top.media_type
        )
        return Copied(written, tuple(foreign))

    def _afford(self, pending: Pending, origin: _Origin, digests: list[str]) -> None:
        """Refuse (Later: deferred) to go on pulling what the budget cannot cover: the inner
        indexes of an index of indexes tell its real size only once read."""
        if origin.source is None or origin.pulls is None:
            return
        host = origin.source.registry
        needed = sum(not origin.pulls.has(host, origin.path, d) for d in dict.fromkeys(digests))
        short = self.limits.extend(pending.key, host, needed)
        if short:
            raise Later(short)

    def _copy_digest(self, pending: Pending, origin: _Origin, digest: str) -> Copied:
        """One manifest of the image, by digest, into the destination repository."""
        target = self.targets[pending.target]
        destination = f"{target.host}/{pending.repository}@{digest}"
        return self._copy(pending, origin, f"{origin.name}@{digest}", destination)

    def _copy(self, pending: Pending, origin: _Origin, reference: str, to: str) -> Copied:
        """skopeo: from the source through the relay (by digest), else from a target."""
        verify = self.targets[pending.target].registry.tls_verify
        if origin.source is not None:
            digest = reference.rpartition("@")[2]
            with self._reusing(pending, origin.source, digest, origin.deadline):
                return self.copier.pull(
                    origin.source, digest, to, dest_tls_verify=verify, deadline=origin.deadline
                )
        assert origin.registry is not None  # a target's: set by _from_target
        return self.copier.copy(
            reference, to, src_tls_verify=origin.registry.tls_verify, dest_tls_verify=verify
        )

    def _reusing(
        self, pending: Pending, source: Repository, digest: str, deadline: float | None
    ) -> AbstractContextManager[None]:
        """Layer reuse around one copy from the source (mirror.mounts), when the run has it."""
        if self.reuse is None:
            return nullcontext()
        return self.reuse.around(pending, source, digest, deadline=deadline, stop=self.stop)

    def _from_target(self, pending: Pending, *, donor: Place) -> Copied:
        """Fill a target from one that has the image: in the same repository, a manifest PUT
        under the new tag (every blob is there already); else registry to registry."""
        target = self.targets[pending.target]
        if donor.target == pending.target and donor.repository == pending.repository:
            reference = pending.source_digest if not pending.task.platforms else donor.tag
            held = target.registry.pull_manifest(donor.repository, reference)
            if held is not None:
                return Copied(
                    target.registry.put_manifest(
                        pending.repository, pending.task.tag, held.body, held.media_type
                    )
                )
        holder = self.targets[donor.target]
        origin = _Origin(
            donor.repository, f"{holder.host}/{donor.repository}", registry=holder.registry
        )
        return self._whole(pending, origin, donor.reference)

    def _subset(self, pending: Pending, origin: _Origin) -> Copied:
        """Copy only the configured platforms: each platform's manifest by digest (digests
        kept), then an index of just those, annotated with the source digest it came from.
        In an index of indexes, the platforms are looked for in the inner ones."""
        task = pending.task
        top = origin.fetch(pending.source_digest)
        if top.media_type not in INDEX_TYPES:  # one platform only: nothing to choose from
            return self._whole(pending, origin, f"{origin.name}@{pending.source_digest}")
        tree = _Tree.read(origin, top, afford=partial(self._afford, pending, origin))
        chosen = choose_platforms(tree.leaves, task.platforms)
        if not chosen:
            raise MirrorError(
                f"{task.source}: none of {', '.join(task.platforms)} in the source index "
                f"(it has {', '.join(platform_names(tree.leaves))})"
            )
        self._afford(pending, origin, [child["digest"] for child in chosen])
        foreign: dict[str, None] = {}
        for child in chosen:
            copied = self._copy_digest(pending, origin, child["digest"])
            foreign.update(dict.fromkeys(copied.foreign_layers))
        index = index_of(top.body, task.source)
        written = filtered_index(index, chosen, sha256(top.body), task.platforms, top.media_type)
        target = self.targets[pending.target]
        digest = target.registry.put_manifest(pending.repository, task.tag, written, top.media_type)
        return Copied(digest, tuple(foreign))


MAX_DEPTH = 4  # indexes inside indexes: deeper is refused (no image needs it)
MAX_MANIFESTS = 1000  # manifests in one image, all levels together


def _servable_instead(pending: Pending) -> bool:
    """Does the target hold a copy of the tag that ensure may serve if this copy fails (as
    mirror.stale.servable judges the outcome: a tag, not a pin)?"""
    return pending.destination_digest is not None and not pending.task.source.digest


@dataclass(frozen=True)
class _Origin:
    """Where a copy reads the image: the source (`source` and `pulls`: every manifest pulled
    once per run, skopeo reading through the relay), or a target that already holds it."""

    path: str  # the repository's path on that registry
    name: str  # host/path, as messages (and skopeo, for a target) name it
    registry: Registry | None = None  # a target's
    source: Repository | None = None
    pulls: Manifests | None = None
    deadline: float | None = None  # seconds for each read from the source (None: --timeout)

    def fetch(self, digest: str) -> Manifest:
        """A manifest by digest (on the source, a pull, once per run), checked against it."""
        if self.source is not None and self.pulls is not None:
            return self.pulls.manifest(
                self.source.registry, self.path, digest, deadline=self.deadline
            )
        assert self.registry is not None
        manifest = self.registry.pull_manifest(self.path, digest)
        if manifest is None:
            raise MirrorError(f"{self.name}: {digest} not found")
        if manifest.media_type in SCHEMA1_TYPES:  # its digest leaves its signatures out: no sha256
            raise Unmirrorable(SCHEMA1_REFUSAL)
        if sha256(manifest.body) != digest:
            raise MirrorError(
                f"{self.name}: the source served a manifest whose digest is "
                f"{sha256(manifest.body)}, not the {digest} it announced"
            )
        return manifest


@dataclass
class _Tree:
    """An image index read down to its leaves: the leaf manifests' descriptors (with the
    platform of the nearest entry that names one) and the inner indexes, innermost first."""

    leaves: list[dict[str, Any]]
    inner: dict[str, Manifest]

    @classmethod
    def read(
        cls,
        origin: _Origin,
        top: Manifest,
        *,
        afford: Callable[[list[str]], None] = lambda digests: None,
    ) -> _Tree:
        """`afford(digests)` is called before an inner index is read (a pull from a source):
        it raises when the budget cannot cover it."""
        tree = cls([], {})
        tree._add(origin, index_of(top.body, origin.name), None, 1, afford)
        return tree

    def _add(
        self,
        origin: _Origin,
        index: dict[str, Any],
        platform: Any,
        depth: int,
        afford: Callable[[list[str]], None],
    ) -> None:
        for entry in index["manifests"]:
            if len(self.leaves) + len(self.inner) >= MAX_MANIFESTS:
                raise MirrorError(
                    f"{origin.name}: more than {MAX_MANIFESTS} manifests in one image"
                )
            inherited = "platform" not in entry and platform is not None
            descriptor = {**entry, "platform": platform} if inherited else entry
            if descriptor.get("mediaType") not in INDEX_TYPES:
                self.leaves.append(descriptor)
                continue
            if depth >= MAX_DEPTH:
                raise MirrorError(f"{origin.name}: image indexes nested deeper than {MAX_DEPTH}")
            afford([descriptor["digest"]])
            inner = origin.fetch(descriptor["digest"])
            self._add(
                origin,
                index_of(inner.body, origin.name),
                descriptor.get("platform"),
                depth + 1,
                afford,
            )
            self.inner[descriptor["digest"]] = inner


def foreign_urls(registry: Registry, repository: str, digest: str, layers: set[str]) -> list[str]:
    """The URLs that the manifests under `digest` (an index's children included) give for
    `layers`, read from `registry` by digest."""
    urls: list[str] = []
    queue, seen = [digest], 0
    while queue and seen < MAX_MANIFESTS:
        document = registry.get_manifest(repository, queue.pop(0)) or {}
        seen += 1
        for entry in document.get("manifests") or []:
            if isinstance(entry, dict) and isinstance(entry.get("digest"), str):
                queue.append(entry["digest"])
        for layer in document.get("layers") or []:
            if isinstance(layer, dict) and layer.get("digest") in layers:
                urls += [url for url in layer.get("urls") or [] if isinstance(url, str)]
    return urls


def _since(started: float) -> float:
    return time.monotonic() - started


def _settle(pending: Pending, action: Action, error: str, started: float) -> Outcome:
    return Outcome.settled(pending, action, error=error, seconds=_since(started))


def _throttled(error: MirrorError) -> bool:
    """Is this ECR throttling (back-pressure), from skopeo or from our own request?"""
    if isinstance(error, CopyError):
        return error.throttled
    return (
        isinstance(error, RegistryError)
        and error.status == 429
        and not isinstance(error, RateLimited)
    )


def _after(message: str, attempts: int) -> str:
    return f"{message} (after {attempts} attempts)" if attempts > 1 else message
