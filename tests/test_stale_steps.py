"""ensure's stale-if-error without processes: the check and the pipeline with fake registries,
the rule that makes an outcome `stale`, and how a copy's age is read and told."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from typing import Any

import pytest

from mirror.check import within
from mirror.errors import BUG, MirrorError, RateLimited, RegistryError
from mirror.model import (
    INTERRUPTED,
    NOT_ASKED,
    Action,
    Outcome,
    Plan,
    Refresh,
    Retry,
    Settings,
    Task,
)
from mirror.oci import sha256
from mirror.pipeline import Pipeline
from mirror.pulls import Pulls
from mirror.reference import ImageRef, Repository
from mirror.schedule import Ledger
from mirror.stale import Serve, age_text, created, parse_time
from mirror.state import Looks, Refusals
from tests.test_steps import Events, FakeCopier, FakeRegistry, FakeTarget

NOW = datetime(2026, 5, 10, 12, 0, 0, tzinfo=timezone.utc)
HELD = {"hub/library/ruby:a": "sha256:old"}


def task(tag: str, *, digest: str | None = None) -> Task:
    """ruby:`tag` into two targets (the same repository name in each)."""
    source = ImageRef(Repository("src", "library/ruby"), tag, digest)
    return Task(source, tag, ("hub/library/ruby", "hub/library/ruby"))


def two_targets(source: dict[str, str], fail: MirrorError | None = None) -> dict[str, Any]:
    return {
        "src": FakeRegistry("src", source, fail=lambda ref: fail),
        "ecr": FakeRegistry("ecr", dict(HELD)),
        "ecr2": FakeRegistry("ecr2", {}),
    }


def run(
    registries: dict[str, Any], refresh: Refresh, *, tasks: list[Any] | None = None
) -> list[Outcome]:
    targets = [FakeTarget("ecr", registries["ecr"])]
    targets.append(FakeTarget("ecr2", registries["ecr2"]))
    budgets = Ledger()
    pipeline = Pipeline(
        sources=lambda host: budgets.meter(registries[host]),
        pulls=Pulls(lambda host: budgets.meter(registries[host])),
        refusals=Refusals(None),
        looks=Looks(None),
        targets=targets,
        copier=FakeCopier(registries, budgets),
        ledger=budgets,
        settings=Settings(jobs=2, retry=Retry(backoff=0.0), refresh=refresh),
        stop=threading.Event(),
        sink=Events(),
    )
    return pipeline.run(Plan(tuple(tasks or [task("a")]))).outcomes


# --- the check and the pipeline ------------------------------------------------------------------


def test_never_serves_what_ecr_has_without_asking_the_source() -> None:
    registries = two_targets({"library/ruby:a": "sha256:new"})
    outcomes = run(registries, Refresh.NEVER)
    assert registries["src"].heads == []
    assert [(o.action, o.destination_digest, o.error) for o in outcomes] == [
        (Action.STALE, "sha256:old", NOT_ASKED),
        (Action.COPIED, "sha256:old", None),  # the second target filled from the first
    ]
    assert registries["ecr2"].digests == {"hub/library/ruby:a": "sha256:old"}


def test_never_asks_the_source_for_what_ecr_lacks() -> None:
    registries = two_targets({"library/ruby:b": "sha256:b"})
    (first, second) = run(registries, Refresh.NEVER, tasks=[task("b")])
    assert (first.action, second.action) == (Action.COPIED, Action.COPIED)
    assert registries["src"].heads == ["library/ruby:b"]


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (RegistryError("src: connection refused", transient=True), "src: connection refused"),
        (RateLimited("src"), "src: pull rate limit reached (429 TOOMANYREQUESTS); run again later"),
    ],
)
def test_a_source_that_cannot_refresh_serves_the_first_targets_copy(
    error: MirrorError, reason: str
) -> None:
    registries = two_targets({"library/ruby:a": "sha256:new"}, fail=error)
    outcomes = run(registries, Refresh.IF_POSSIBLE)
    stale, filled = outcomes
    assert (stale.action, stale.destination_digest) == (Action.STALE, "sha256:old")
    assert stale.error is not None and stale.error.startswith(f"not refreshed: {reason}; ")
    assert "the age of ECR's copy is unknown" in stale.error  # the fake holds no config
    assert (filled.action, filled.destination_digest) == (Action.COPIED, "sha256:old")


def test_always_fails_as_sync_does() -> None:
    error = RegistryError("src: connection refused", transient=True)
    registries = two_targets({"library/ruby:a": "sha256:new"}, fail=error)
    outcomes = run(registries, Refresh.ALWAYS)
    assert [(o.action, o.destination_digest) for o in outcomes] == [
        (Action.FAILED, "sha256:old"),  # the report says what the target holds
        (Action.FAILED, None),
    ]


def test_a_pin_is_never_served_from_what_the_tag_holds() -> None:
    error = RegistryError("src: connection refused", transient=True)
    registries = {
        "src": FakeRegistry("src", {}, fail=lambda ref: error),
        "ecr": FakeRegistry("ecr", {"hub/library/ruby:a": "sha256:other"}),
        "ecr2": FakeRegistry("ecr2", {"hub/library/ruby:a": "sha256:other"}),
    }
    outcome, _ = run(registries, Refresh.NEVER, tasks=[task("a", digest="sha256:pinned")])
    assert outcome.action == Action.FAILED


def test_a_source_past_its_deadline_is_given_up_on() -> None:
    never = threading.Event()

    def hangs() -> None:
        never.wait(30)

    with pytest.raises(RegistryError, match=r"^src: no answer within 0.05 s$"):
        within(0.05, hangs, "src")
    never.set()
    assert within(5, lambda: "answer", "src") == "answer"
    with pytest.raises(RateLimited):  # the call's own error comes through
        within(5, lambda: (_ for _ in ()).throw(RateLimited("src")), "src")


# --- the rule ------------------------------------------------------------------------------------


def outcome(action: Action = Action.FAILED, **fields: Any) -> Outcome:
    values: dict[str, Any] = {
        "source": "docker.io/library/ruby:a",
        "destination": "ecr/hub/library/ruby:a",
        "repository": "hub/library/ruby",
        "tag": "a",
        "action": action,
        "destination_digest": "sha256:old",
        "error": "src: connection refused",
        **fields,
    }
    return Outcome(**values)


class Reader:
    """A target holding one image: an index, an attestation first, then a platform's manifest
    and its config with `created`."""

    def __init__(self, config: bytes | None, *, fail: bool = False):
        self.config = config
        self.fail = fail
        self.asked: list[str] = []

    def get_manifest(self, path: str, reference: str) -> dict[str, Any] | None:
        self.asked.append(reference)
        if self.fail:
            raise RegistryError("ecr: HTTP 500")
        if reference == "sha256:old":
            attestation = {"digest": "sha256:att", "platform": {"os": "unknown"}}
            return {"manifests": [attestation, {"digest": "sha256:amd64"}]}
        return {"config": {"digest": sha256(self.config or b"")}}

    def get_blob(self, path: str, digest: str) -> bytes | None:
        self.asked.append(digest)
        return self.config


def serve(reader: Reader, refresh: Refresh = Refresh.IF_POSSIBLE) -> Serve:
    return Serve(refresh, [reader], now=lambda: NOW)


def test_a_failed_refresh_of_a_held_tag_is_stale_with_its_age() -> None:
    reader = Reader(json.dumps({"created": "2026-05-07T11:00:00.123456789Z"}).encode())
    settled = serve(reader).settle(outcome())
    assert settled.action == Action.STALE
    assert settled.error == (
        "not refreshed: src: connection refused; ECR's copy was built 3 days ago "
        "(2026-05-07T11:00:00Z)"
    )
    assert reader.asked[:2] == ["sha256:old", "sha256:amd64"]  # the platform, not attestation


@pytest.mark.parametrize(
    "unchanged",
    [
        outcome(destination_digest=None),  # nothing to serve
        outcome(source="docker.io/library/ruby:a@sha256:pin"),  # a pin: only its digest
        outcome(error=INTERRUPTED, action=Action.DEFERRED),
        outcome(error=f"{BUG}: KeyError: 'x'"),
        outcome(Action.UP_TO_DATE),
        outcome(Action.COPIED),
    ],
)
def test_what_is_never_made_stale(unchanged: Outcome) -> None:
    assert serve(Reader(None)).settle(unchanged) == unchanged


def test_always_makes_nothing_stale() -> None:
    assert serve(Reader(None), Refresh.ALWAYS).settle(outcome()) == outcome()


def test_never_reads_no_age_and_an_unreadable_age_fails_nothing() -> None:
    reader = Reader(None)
    asked = outcome(Action.STALE, error=NOT_ASKED)
    assert serve(reader).settle(asked) == asked and reader.asked == []
    broken = serve(Reader(None, fail=True)).settle(outcome(Action.DEFERRED))
    assert broken.action == Action.STALE
    assert broken.error is not None and broken.error.endswith(
        "; the age of ECR's copy is unknown (its image records no build time)"
    )


def test_created_reads_the_config_of_a_single_image() -> None:
    class Single(Reader):
        def get_manifest(self, path: str, reference: str) -> dict[str, Any] | None:
            return {"config": {"digest": sha256(self.config or b"")}}

    assert created(Single(b'{"created": "2024-01-02T03:04:05+02:00"}'), "r", "sha256:x") == (
        datetime(2024, 1, 2, 1, 4, 5, tzinfo=timezone.utc)
    )
    assert created(Single(b"not json"), "r", "sha256:x") is None
    assert created(Single(b'{"created": 12}'), "r", "sha256:x") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
        ("2024-01-02T03:04:05.5-01:30", datetime(2024, 1, 2, 4, 34, 5, 500000, timezone.utc)),
        ("2024-01-02T03:04:05.123456789Z", datetime(2024, 1, 2, 3, 4, 5, 123456, timezone.utc)),
        ("2024-13-02T03:04:05Z", None),
        ("yesterday", None),
        ("2024-01-02T03:04:05", None),  # no zone: not RFC 3339
    ],
)
def test_parse_time(text: str, expected: datetime | None) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    ("built", "said"),
    [
        (None, "the age of ECR's copy is unknown (its image records no build time)"),
        (
            datetime(1970, 1, 1, tzinfo=timezone.utc),
            "the age of ECR's copy is unknown (its image records 1970-01-01T00:00:00Z as its "
            "build time)",
        ),
        (
            datetime(2026, 5, 10, 11, 59, 30, tzinfo=timezone.utc),
            "ECR's copy was built 30 seconds ago (2026-05-10T11:59:30Z)",
        ),
        (
            datetime(2026, 5, 10, 10, 0, 0, tzinfo=timezone.utc),
            "ECR's copy was built 2 hours ago (2026-05-10T10:00:00Z)",
        ),
        (
            datetime(2026, 5, 9, 11, 0, 0, tzinfo=timezone.utc),
            "ECR's copy was built 25 hours ago (2026-05-09T11:00:00Z)",
        ),
        (
            datetime(2026, 5, 11, 0, 0, 0, tzinfo=timezone.utc),
            "ECR's copy was built 2026-05-11T00:00:00Z (later than this machine's clock)",
        ),
    ],
)
def test_age_text(built: datetime | None, said: str) -> None:
    assert age_text(built, NOW) == said
