"""The check step alone (mirror/check.py), with fake ports: what it decides from the HEADs on
both sides, what it asks the source and the budget, and what it never does (a GET the budget
cannot cover, a request for a pin already in place, a copy ECR would refuse)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from mirror.check import Checker
from mirror.errors import BUG, SCHEMA1_REFUSAL, RateLimited, RegistryError
from mirror.model import INTERRUPTED, NOT_ASKED, Action, Outcome, Pending, Refresh, Refusal, Task
from mirror.oci import OCI_INDEX, Descriptor, Manifest, RateLimit
from mirror.reference import ImageRef, Repository

OLD, NEW = "sha256:" + "0" * 64, "sha256:" + "1" * 64


@dataclass
class FakeManifests:
    """The source's manifests (ports.Manifests): one HEAD answer, or an error; records asks."""

    head: Descriptor = field(default_factory=lambda: Descriptor(found=True, digest=NEW))
    fail: Exception | None = None
    asked: list[tuple[str, str, str, bool]] = field(default_factory=list)
    budget_left: bool = True  # may a GET be made (schedule.Metered's promise from the ledger)

    def describe(self, host: str, path: str, reference: str, *, get: bool) -> Descriptor:
        self.asked.append((host, path, reference, get))
        if self.fail is not None:
            raise self.fail
        if get and self.budget_left and self.head.found and not self.head.digest:  # a GET
            return Descriptor(found=True, digest=NEW, fetched=True, body=b"{}")
        return self.head

    def manifest(
        self, host: str, path: str, digest: str, *, deadline: float | None = None
    ) -> Manifest:
        raise AssertionError("the check reads no manifest by digest")

    def has(self, host: str, path: str, digest: str) -> bool:
        return False

    def warnings(self) -> list[str]:
        return []


@dataclass
class FakeRegistry:
    """A target's registry: what it holds under each tag."""

    held: dict[str, Descriptor] = field(default_factory=dict)
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    host: str = "ecr"
    tls_verify: bool = True

    def head_manifest(self, path: str, reference: str) -> Descriptor:
        return self.held.get(reference, Descriptor(found=False))

    def describe_manifest(
        self, path: str, reference: str, *, get: bool | Callable[[RateLimit | None], bool] = True
    ) -> Descriptor:
        return self.head_manifest(path, reference)

    def get_manifest(self, path: str, reference: str) -> dict[str, Any] | None:
        return self.documents.get(reference)

    def pull_manifest(self, path: str, reference: str) -> Manifest | None:
        return None

    def put_manifest(self, path: str, reference: str, body: bytes, media_type: str) -> str:
        raise AssertionError("the check never writes")

    def get_blob(self, path: str, digest: str) -> bytes | None:
        return None


@dataclass
class FakeTarget:
    registry: FakeRegistry
    host: str = "ecr"
    immutable: bool = False
    refusal: str | None = None  # why a copy into a missing repository cannot be made

    def ensure_repository(self, repository: str) -> None:
        raise AssertionError("the check creates nothing")

    def is_immutable(self, repository: str, tag: str) -> bool:
        return self.immutable

    def cannot_write(self, repository: str) -> str | None:
        return self.refusal


@dataclass
class FakeLimits:
    """The ledger as the check asks it (ports.Limits)."""

    blocked_why: str | None = None
    short: str | None = None

    def blocked(self, host: str) -> str | None:
        return self.blocked_why

    def shortfall(self, host: str, pulls: int) -> str | None:
        return self.short

    def extend(self, copy: tuple[object, int], host: str, pulls: int) -> str | None:
        raise AssertionError("the check runs no copy")


@dataclass
class FakeRefusals:
    refused: dict[str, Refusal] = field(default_factory=dict)

    def why(self, repository: str, digest: str) -> Refusal | None:
        return self.refused.get(f"{repository}@{digest}")

    def add(self, repository: str, digest: str, reason: str) -> None:
        raise AssertionError("the check adds no refusal")


def task(tag: str = "3.3", *, digest: str | None = None, platforms: tuple[str, ...] = ()) -> Task:
    source = ImageRef(Repository("docker.io", "library/ruby"), tag, digest)
    return Task(source, tag, ("mirror/library/ruby",), platforms)


def check(
    the_task: Task,
    *,
    source: FakeManifests | None = None,
    target: FakeTarget | None = None,
    limits: FakeLimits | None = None,
    refusals: FakeRefusals | None = None,
    stop: bool = False,
    **options: Any,
) -> list[Outcome | Pending]:
    stopped = threading.Event()
    if stop:
        stopped.set()
    checker = Checker(
        pulls=source or FakeManifests(),
        targets=[target or FakeTarget(FakeRegistry())],
        limits=limits or FakeLimits(),
        stop=stopped,
        refusals=refusals or FakeRefusals(),
        **options,
    )
    return checker.check(the_task)


def held(digest: str, **fields: Any) -> FakeRegistry:
    return FakeRegistry({"3.3": Descriptor(found=True, digest=digest, **fields)})


def test_the_same_digest_on_both_sides_is_up_to_date() -> None:
    source = FakeManifests()
    (outcome,) = check(task(), source=source, target=FakeTarget(held(NEW)))
    assert isinstance(outcome, Outcome)
    assert (outcome.action, outcome.source_digest, outcome.destination_digest) == (
        Action.UP_TO_DATE,
        NEW,
        NEW,
    )
    assert outcome.destination == "ecr/mirror/library/ruby:3.3"
    assert source.asked == [("docker.io", "library/ruby", "3.3", True)]


def test_a_difference_is_a_pending_copy_with_what_the_source_told() -> None:
    head = Descriptor(found=True, digest=NEW, media_type=OCI_INDEX, size=840)
    (pending,) = check(task(), source=FakeManifests(head), target=FakeTarget(held(OLD)))
    assert isinstance(pending, Pending)
    assert (pending.source_digest, pending.destination_digest) == (NEW, OLD)
    assert pending.source == head  # what the schedule estimates the copy's pulls from


def test_a_pin_in_place_asks_the_source_nothing() -> None:
    source = FakeManifests()
    (outcome,) = check(task(digest=NEW), source=source, target=FakeTarget(held(NEW)))
    assert isinstance(outcome, Outcome) and outcome.action is Action.UP_TO_DATE
    assert source.asked == []


def test_a_digestless_head_is_read_with_a_get_only_when_the_budget_allows() -> None:
    digestless = FakeManifests(Descriptor(found=True))
    (pending,) = check(task(), source=digestless)
    assert isinstance(pending, Pending) and pending.source_digest == NEW
    assert digestless.asked[-1][3] is True  # the GET was allowed

    short = "docker.io: pull budget: needs 1, 0 left of 100; run again later"
    digestless = FakeManifests(Descriptor(found=True), budget_left=False)
    (outcome,) = check(task(), source=digestless, limits=FakeLimits(short=short))
    assert isinstance(outcome, Outcome)
    assert (outcome.action, outcome.error) == (
        Action.DEFERRED,
        f"{short} (the source gives no digest on HEAD: reading it is a pull)",
    )
    # The check asks for the GET; whether the budget has the pull is the ledger's to say, once
    # the HEAD's figures are in (schedule.Metered: tests/test_schedule.py)
    assert digestless.asked == [("docker.io", "library/ruby", "3.3", True)]


def test_a_dry_run_never_reads_a_manifest_with_a_get() -> None:
    source = FakeManifests()
    check(task(), source=source, source_gets=False)
    assert source.asked == [("docker.io", "library/ruby", "3.3", False)]


def test_a_host_the_ledger_blocked_is_not_asked_and_the_task_waits() -> None:
    source = FakeManifests()
    why = "docker.io: pull rate limit reached (429 TOOMANYREQUESTS); run again later"
    (outcome,) = check(task(), source=source, target=FakeTarget(held(OLD)), limits=FakeLimits(why))
    assert isinstance(outcome, Outcome)
    assert (outcome.action, outcome.error, outcome.destination_digest) == (
        Action.DEFERRED,
        why,
        OLD,
    )
    assert source.asked == []


@pytest.mark.parametrize(
    ("error", "action", "why"),
    [
        (
            RateLimited("docker.io"),
            Action.DEFERRED,
            "docker.io: pull rate limit reached (429 TOOMANYREQUESTS); run again later",
        ),
        (RegistryError("docker.io: HTTP 500"), Action.FAILED, "docker.io: HTTP 500"),
        (
            ValueError("oops"),
            Action.FAILED,
            f"{BUG}: ValueError: oops (run with -v for the traceback)",
        ),
    ],
)
def test_what_the_source_raises_is_the_tasks_outcome(
    error: Exception, action: Action, why: str
) -> None:
    (outcome,) = check(task(), source=FakeManifests(fail=error))
    assert isinstance(outcome, Outcome)
    assert (outcome.action, outcome.error) == (action, why)


def test_a_tag_the_source_lacks_fails() -> None:
    (outcome,) = check(task(), source=FakeManifests(Descriptor(found=False)))
    assert isinstance(outcome, Outcome)
    assert outcome.error == "docker.io/library/ruby:3.3: tag not found on the source"


def test_a_stopped_run_defers_without_a_request() -> None:
    source = FakeManifests()
    (outcome,) = check(task(), source=source, stop=True)
    assert isinstance(outcome, Outcome)
    assert (outcome.action, outcome.error) == (Action.DEFERRED, INTERRUPTED)
    assert source.asked == []


def test_what_ecr_would_refuse_fails_before_any_pull() -> None:
    missing = FakeTarget(FakeRegistry(), refusal="no repository mirror/library/ruby in ECR")
    (outcome,) = check(task(), target=missing)
    assert isinstance(outcome, Outcome)
    assert outcome.error == (
        "ecr/mirror/library/ruby:3.3: no repository mirror/library/ruby in ECR"
    )
    immutable = FakeTarget(held(OLD), immutable=True)
    (outcome,) = check(task(), target=immutable)
    assert isinstance(outcome, Outcome)
    assert outcome.error == (
        f"ecr/mirror/library/ruby:3.3 holds {OLD} and the tag is immutable in "
        f"mirror/library/ruby: not overwritten with {NEW}"
    )


def test_an_image_no_copy_can_keep_fails_from_its_head_or_an_earlier_runs_refusal() -> None:
    schema1 = Descriptor(
        found=True, digest=NEW, media_type="application/vnd.docker.distribution.manifest.v1+json"
    )
    (outcome,) = check(task(), source=FakeManifests(schema1))
    assert isinstance(outcome, Outcome)
    assert outcome.error == f"docker.io/library/ruby:3.3: {SCHEMA1_REFUSAL}"
    earlier = FakeRefusals(
        {f"docker.io/library/ruby@{NEW}": Refusal("zstd layers", "2026-11-30T10:00:00Z")}
    )
    (outcome,) = check(task(), refusals=earlier)
    assert isinstance(outcome, Outcome)
    assert outcome.error == (
        "docker.io/library/ruby:3.3: zstd layers (found by an earlier run on 2026-11-30; "
        "not tried again until the source changes)"
    )


def test_a_subset_mirror_wrote_from_this_source_digest_is_up_to_date() -> None:
    index = Descriptor(found=True, digest=OLD, media_type=OCI_INDEX)
    written = {
        "annotations": {
            "io.github.mirror.source.digest": NEW,
            "io.github.mirror.platforms": "linux/amd64",
        }
    }
    registry = FakeRegistry({"3.3": index}, {"3.3": written})
    (outcome,) = check(task(platforms=("linux/amd64",)), target=FakeTarget(registry))
    assert isinstance(outcome, Outcome) and outcome.action is Action.UP_TO_DATE


def test_ensure_serves_ecrs_copy_without_asking_or_when_the_source_fails() -> None:
    source = FakeManifests()
    (outcome,) = check(task(), source=source, target=FakeTarget(held(OLD)), refresh=Refresh.NEVER)
    assert isinstance(outcome, Outcome)
    assert (outcome.action, outcome.error, outcome.destination_digest) == (
        Action.STALE,
        NOT_ASKED,
        OLD,
    )
    assert source.asked == []
    failing = FakeManifests(fail=RegistryError("docker.io: connection refused", transient=True))
    (outcome,) = check(
        task(), source=failing, target=FakeTarget(held(OLD)), refresh=Refresh.IF_POSSIBLE
    )
    assert isinstance(outcome, Outcome)
    assert (outcome.action, outcome.error) == (
        Action.STALE,
        "not refreshed: docker.io: connection refused",
    )
