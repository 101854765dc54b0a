"""Builds never wait on Docker Hub: `ensure` serves ECR's copy when the source cannot refresh
it (stale-if-error), in every --format, and fails only when nothing can be served."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

from tests.stage import Run, Stage
from tests.standins.misbehaving import Behaviour, Raw, never_answers, refusing, trickles

CREATED = "2026-01-02T03:04:05Z"  # the build time of the images ECR holds here
CREDENTIALS = {"credentials": {"username_env": "HUB_USER", "password_env": "HUB_TOKEN"}}
LOGIN = {"HUB_USER": "hubuser", "HUB_TOKEN": "right"}


@pytest.fixture(autouse=True)
def login(stage: Stage) -> None:
    """The source's credentials, for the tests whose config names them."""
    stage.env.update(LOGIN)


def in_ecr(stage: Stage, tag: str = "3.3", source: dict[str, Any] | None = None) -> str:
    """Push `tag` to the source and `ensure` it once: ECR has a copy. Returns its digest."""
    digest = stage.push(tag, seed=f"old-{tag}", created=CREATED)
    stage.config(source=source or {})
    first = stage.mirror("ensure", f"{stage.repo}:{tag}")
    assert (first.code, first.actions()) == (0, ["copied"]), first.stderr
    return digest


def dockerfile(stage: Stage, tag: str = "3.3") -> str:
    path = stage.tmp / "Dockerfile"
    path.write_text(f"ARG BASE={stage.repo}:{tag}\nFROM $BASE\nRUN true\n")
    return str(path)


def formats(stage: Stage, tag: str = "3.3") -> list[tuple[str, tuple[str, ...], str]]:
    """(--format, ensure's arguments, its stdout with `{ref}` for ECR's reference)."""
    path = dockerfile(stage, tag)
    return [
        ("refs", (f"{stage.repo}:{tag}",), "{ref}\n"),
        (
            "dockerfile",
            ("--dockerfile", path, "--format", "dockerfile"),
            f"ARG BASE={stage.repo}:{tag}\nFROM {{ref}}\nRUN true\n",
        ),
        (
            "build-args",
            ("--dockerfile", path, "--format", "build-args"),
            "--build-arg BASE={ref}\n",
        ),
    ]


def stale_everywhere(
    stage: Stage, digest: str, reason: str, tag: str = "3.3", *options: str
) -> None:
    """In each --format: ECR's reference printed, exit 0, one warning line on stderr naming
    the image, the source's reason and the copy's age; `stale` in the report and JSON lines."""
    reference = f"{stage.dest.host}/{stage.dest_repo()}:{tag}"
    for form, args, expected in formats(stage, tag):
        run = stage.mirror("ensure", *options, *args)
        assert (run.code, run.stdout) == (0, expected.format(ref=reference)), (form, run.stderr)
        assert run.actions() == ["stale"], form
        assert run.report is not None
        entry = run.report["images"][0]
        assert entry["destination_digest"] == digest
        assert reason in entry["error"], (form, entry["error"])
        assert "ECR's copy was built " in entry["error"] and f"({CREATED})" in entry["error"]
        warned = stale_lines(run)
        assert len(warned) == 1, (form, run.error)
        assert f"/{stage.repo}:{tag} -> {reference}" in warned[0] and reason in warned[0]
    assert stage.dest_digest(tag) == digest  # nothing in ECR was touched


def stale_lines(run: Run) -> list[str]:
    return [line for line in run.error.splitlines() if line.startswith("stale ")]


# --- the rows of the table ----------------------------------------------------------------


def test_a_moved_tag_with_the_pull_budget_spent_serves_ecrs_copy(stage: Stage) -> None:
    stage.use_hub(limit=100)
    digest = in_ecr(stage)
    stage.push("3.3", seed="new")  # upstream moved the tag
    stage.hub.set_remaining(0)
    stage.hub.reset_counts()
    stale_everywhere(stage, digest, f"{stage.hub.host}: pull budget: needs 1, 0 left of 100")
    assert stage.hub.counts.manifest_get == 0  # no pull tried: the headers said none is left


def test_a_429_during_the_copy_serves_ecrs_copy(stage: Stage) -> None:
    stage.use_hub(retry_after=0)  # the relay's pull meets the 429 (skopeo never sees it)
    digest = in_ecr(stage)
    stage.push("3.3", seed="new")
    stage.hub.fail_next(429, kind="manifest_get", times=1000)
    stale_everywhere(stage, digest, "pull rate limit reached (429 TOOMANYREQUESTS)")


def test_docker_hubs_abuse_limit_serves_ecrs_copy(stage: Stage) -> None:
    digest = in_ecr(stage)
    stage.hub.abuse_limit(times=1000)
    stale_everywhere(
        stage, digest, "too many requests (429): a limit on requests, not the pull limit"
    )


def test_a_registry_that_is_down_serves_ecrs_copy(stage: Stage) -> None:
    digest = in_ecr(stage)
    with refusing() as down:
        stage.config(source={"registry": down, "tls_verify": False})  # same ECR names
        stale_everywhere(stage, digest, f"{down}: connection refused")


def test_a_tag_deleted_upstream_serves_ecrs_copy(stage: Stage) -> None:
    digest = in_ecr(stage)
    deleted = urllib3.request("DELETE", f"{stage.source.url}/v2/{stage.repo}/manifests/{digest}")
    assert deleted.status == 202
    assert stage.source_digest("3.3") is None
    stale_everywhere(stage, digest, f"/{stage.repo}:3.3: tag not found on the source")


# --- and the other ways a source fails -----------------------------------------------------------


@contextlib.contextmanager
def hanging(stage: Stage, behave: Behaviour = never_answers) -> Iterator[str]:
    """The source accepts connections and never answers (or answers a byte at a time)."""
    raw = Raw(behave).start()
    try:
        stage.config(source={"registry": raw.host, "tls_verify": False})
        yield raw.host
    finally:
        raw.stop()


def test_a_source_that_never_answers_does_not_hold_up_the_build(stage: Stage) -> None:
    digest = in_ecr(stage)
    with hanging(stage) as host:
        started = time.monotonic()
        # --timeout 100: the old way (every request's whole deadline) would take over 100 s
        run = stage.mirror("ensure", "--timeout", "100", f"{stage.repo}:3.3")
        took = time.monotonic() - started
        assert (run.code, run.actions()) == (0, ["stale"]), run.stderr
        assert run.stdout == f"{stage.dest.host}/{stage.dest_repo()}:3.3\n"
        assert f"not refreshed: {host}: no answer within 5 s" in stale_lines(run)[0]
        assert took < 60, f"ensure took {took:.0f} s on a source that never answers"
        # the formats with a shorter --timeout, which also shortens the source deadline
        stale_everywhere(stage, digest, f"{host}: no answer within 2 s", "3.3", "--timeout", "2")


def test_a_source_that_trickles_does_not_hold_up_the_build(stage: Stage) -> None:
    in_ecr(stage)
    with hanging(stage, trickles(0.5)) as host:
        run = stage.mirror("ensure", "--timeout", "100", f"{stage.repo}:3.3")
    assert (run.code, run.actions()) == (0, ["stale"]), run.stderr
    assert f"not refreshed: {host}: no answer within 5 s" in stale_lines(run)[0]


@pytest.mark.parametrize("stalls", ["manifest", "blob"])
def test_a_source_that_stalls_during_the_copy_does_not_hold_up_the_build(
    stage: Stage, stalls: str
) -> None:
    """The source answers the check's HEAD (a new digest), then stops answering the copy's
    reads: the manifest GET, or a layer midway (a blob store that stops mid-layer). Each read
    gets the source deadline, not --timeout, and the copy is not tried again."""
    digest = in_ecr(stage)
    stage.push("3.3", seed="new")  # a refresh would copy this
    if stalls == "manifest":
        stage.hub.hold()  # GETs wait; the HEAD is answered
        reason = f"{stage.hub.host}: no answer within 5 s"
    else:
        stage.hub.stall_blobs(1000)
        reason = f"{stage.hub.host}: the answer stalled: no progress within 5 s"
    try:
        started = time.monotonic()
        # --timeout 100: each read's whole deadline (the hold lasts 60 s) would let it copy
        run = stage.mirror("ensure", "--timeout", "100", f"{stage.repo}:3.3")
        took = time.monotonic() - started
    finally:
        stage.hub.release()
    assert (run.code, run.actions()) == (0, ["stale"]), run.stderr
    assert run.stdout == f"{stage.dest.host}/{stage.dest_repo()}:3.3\n"
    assert f"not refreshed: {reason}" in stale_lines(run)[0], run.error
    assert "after 2 attempts" not in run.error and "after 3 attempts" not in run.error
    assert took < 50, f"ensure took {took:.0f} s on a source that stalls mid-copy"
    assert stage.dest_digest("3.3") == digest


@pytest.mark.parametrize("fault", ["5xx", "lockout", "wrong password", "repository gone"])
def test_other_source_failures_serve_ecrs_copy(stage: Stage, fault: str) -> None:
    stage.use_hub(credentials=("hubuser", "right"))
    digest = in_ecr(stage, source=CREDENTIALS)
    if fault == "5xx":
        stage.hub.fail_next(503, kind="manifest_head", times=1000)
        reason = ":3.3: HTTP 503"
    elif fault == "lockout":
        stage.hub.lock_out("hubuser")
        reason = "login locked out after repeated failed logins"
    elif fault == "wrong password":
        stage.env["HUB_TOKEN"] = "rotated-away"
        reason = "the token service refused the credentials from $HUB_USER and $HUB_TOKEN"
    name = f"{stage.repo}:3.3"
    if fault == "repository gone":  # ECR's repository now stands for one the source lacks
        name = f"{stage.repo}-gone:3.3"
        gone = {"source": f"{stage.repo}-gone", "tags": ["3.3"], "repository": stage.dest_repo()}
        stage.config([gone], source=CREDENTIALS)
        reason = "access denied"
    run = stage.mirror("ensure", name)
    assert (run.code, run.actions()) == (0, ["stale"]), run.stderr
    assert reason in stale_lines(run)[0], run.error
    assert stage.dest_digest("3.3") == digest


# --- what still fails, and --refresh ----------------------------------------------------------


def test_an_image_ecr_lacks_still_fails_when_the_source_cannot_give_it(stage: Stage) -> None:
    in_ecr(stage)
    with refusing() as down:
        stage.config(source={"registry": down, "tls_verify": False})
        run = stage.mirror("ensure", f"{stage.repo}:3.3", f"{stage.repo}:9.9")
        assert (run.code, run.stdout) == (1, "")
        assert run.actions() == ["stale", "failed"]
        assert f"{down}: connection refused" in run.report["images"][1]["error"]  # type: ignore[index]


def test_refresh_never_makes_no_request_to_the_source(stage: Stage) -> None:
    stage.use_hub(credentials=("hubuser", "right"))
    in_ecr(stage, source=CREDENTIALS)
    stage.push("3.3", seed="new")  # a refresh would copy this
    stage.hub.reset_counts()
    for form, args, expected in formats(stage):
        run = stage.mirror("ensure", "--refresh", "never", *args)
        reference = f"{stage.dest.host}/{stage.dest_repo()}:3.3"
        assert (run.code, run.stdout) == (0, expected.format(ref=reference)), (form, run.stderr)
        assert run.actions() == ["stale"]
        assert run.report is not None
        assert run.report["images"][0]["error"] == (
            "not refreshed: --refresh never (the source was not asked)"
        )
    assert stage.hub.counts.requests == []  # not a token, not a HEAD
    lacking = stage.mirror("ensure", "--refresh", "never", f"{stage.repo}:new")
    assert lacking.code == 1  # what ECR lacks is asked of the source: it has no such tag


def test_a_pin_in_ecr_needs_no_source_whatever_refresh_says(stage: Stage) -> None:
    stage.use_hub(credentials=("hubuser", "right"))
    digest = stage.push("1.0", seed="pinned")
    stage.config(source=CREDENTIALS)
    pinned = f"{stage.repo}:1.0@{digest}"
    assert stage.mirror("ensure", pinned).code == 0
    stage.hub.reset_counts()
    for refresh in ("always", "if-possible", "never"):
        run = stage.mirror("ensure", "--refresh", refresh, pinned)
        assert (run.code, run.actions()) == (0, ["up-to-date"]), run.stderr
    assert stage.hub.counts.requests == []


def test_a_pin_ecr_holds_under_another_tag_needs_no_source(stage: Stage) -> None:
    """Renovate pins `FROM image:tag@sha256:D` to the digest an earlier `ensure image:tag`
    put in ECR: ECR holds D (under the tag, not yet under its pin tag). The build gets it
    with no request to the source, down or not, and the pin tag is written inside ECR."""
    first = in_ecr(stage, "1.0")
    second = in_ecr(stage, "2.0")
    with refusing() as down:
        stage.config(source={"registry": down, "tls_verify": False})  # same ECR names
        run = stage.mirror("ensure", f"{stage.repo}:1.0@{first}")
    assert (run.code, run.actions()) == (0, ["copied"]), run.stderr
    assert run.stdout == f"{stage.dest.host}/{stage.dest_repo()}:1.0@{first}\n"
    assert stage.dest_digest(f"pin-sha256-{first[7:]}") == first
    stage.config([stage.image(f"2.0@{second}")])  # sync, with the source up: no pull either
    stage.hub.reset_counts()
    synced = stage.mirror("sync")
    assert (synced.code, sorted(synced.actions())) == (0, ["copied", "up-to-date"]), synced.stderr
    assert stage.dest_digest(f"pin-sha256-{second[7:]}") == second
    assert stage.hub.counts.requests == []


def test_a_pin_ecr_lacks_is_never_served_from_another_digest(stage: Stage) -> None:
    in_ecr(stage, "1.0")
    other = stage.push("1.1", seed="other")
    with refusing() as down:
        stage.config(source={"registry": down, "tls_verify": False})
        run = stage.mirror("ensure", f"{stage.repo}:1.0@{other}")
        assert (run.code, run.stdout, run.actions()) == (1, "", ["failed"])


def test_refresh_always_fails_as_sync_would(stage: Stage) -> None:
    stage.use_hub(limit=100)
    in_ecr(stage)
    stage.push("3.3", seed="new")
    stage.hub.set_remaining(0)
    run = stage.mirror("ensure", "--refresh", "always", f"{stage.repo}:3.3")
    assert (run.code, run.stdout, run.actions()) == (75, "", ["deferred"])


def test_a_healthy_source_still_refreshes(stage: Stage) -> None:
    in_ecr(stage)
    fresh = stage.push("3.3", seed="new")
    run = stage.mirror("ensure", f"{stage.repo}:3.3")
    assert (run.code, run.actions()) == (0, ["copied"]), run.stderr
    assert stage.dest_digest("3.3") == fresh
    assert stale_lines(run) == []


def test_json_lines_show_stale_as_a_warning(stage: Stage) -> None:
    in_ecr(stage)
    stage.hub.abuse_limit(times=1000)
    run = stage.mirror("ensure", "--log-format", "json", f"{stage.repo}:3.3")
    assert run.code == 0, run.stderr
    events = [json.loads(line) for line in run.stderr.splitlines()]
    image = next(event for event in events if event.get("event") == "image")
    assert (image["level"], image["action"]) == ("warning", "stale")
    assert "a limit on requests" in image["error"]
    assert events[-1]["summary"] == {"stale": 1}


def test_quiet_still_shows_the_warning(stage: Stage) -> None:
    in_ecr(stage)
    stage.hub.abuse_limit(times=1000)
    run = stage.mirror("ensure", "-q", f"{stage.repo}:3.3")
    assert run.code == 0
    assert len(stale_lines(run)) == 1


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("nevr", "'nevr' is not a refresh mode (did you mean 'never'?)"),
        ("ifpossible", "'ifpossible' is not a refresh mode (did you mean 'if-possible'?)"),
        ("sometimes", "'sometimes' is not a refresh mode (expected always, if-possible, never)"),
        ("", "'' is not a refresh mode (expected always, if-possible, never)"),
    ],
)
def test_a_refresh_typo_is_a_usage_error(stage: Stage, given: str, said: str) -> None:
    stage.config()
    run = stage.mirror("ensure", "--refresh", given, "ruby:3")
    assert (run.code, run.stdout) == (2, "")
    assert run.error == f"mirror ensure: argument --refresh: {said} (see mirror ensure --help)"


def test_refresh_takes_any_letter_case(stage: Stage) -> None:
    in_ecr(stage)
    stage.hub.reset_counts()
    for spelling in ("NEVER", "Never", " never"):
        run = stage.mirror("ensure", f"--refresh={spelling}", f"{stage.repo}:3.3")
        assert (run.code, run.actions()) == (0, ["stale"]), run.stderr
    assert stage.hub.counts.requests == []
    assert stage.mirror("ensure", "--refresh", "IF_POSSIBLE", f"{stage.repo}:3.3").code == 0
