"""Pulls are spent once (issue 16): a retry after a destination's fault reuses what was pulled.

ECR throttles manifest writes, answers 5xx, drops uploads; Docker Hub counts every manifest GET.
Each test asserts what the source counted: its manifest GETs are what the images need, and the
report's `spent` is that count. Against the mirror before the source relay, each of them failed:
every retry ran skopeo again, which pulled every manifest again.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mirror.model import Settings
from tests.stage import Run, Stage
from tests.standins.registry import get_manifest

TWELVE = (
    "linux/amd64",
    "linux/arm64",
    "linux/arm/v5",
    "linux/arm/v6",
    "linux/arm/v7",
    "linux/386",
    "linux/ppc64le",
    "linux/s390x",
    "linux/mips64le",
    "linux/riscv64",
    "linux/loong64",
    "windows/amd64",
)


def said(run: Run) -> str:
    errors = [image["error"] for image in (run.report or {}).get("images", [])]
    return f"{run.stderr}\nreport errors: {errors}"


def budget(run: Run, stage: Stage) -> dict[str, Any]:
    assert run.report is not None, run.stderr
    found: dict[str, Any] = run.report["rate_limit"][stage.hub.host]
    return found


def three_images(stage: Stage) -> dict[str, str]:
    digests = {tag: stage.push(tag, seed=tag) for tag in ("a", "b", "c")}
    stage.config([stage.image(*digests)])
    return digests


def test_throttled_manifest_writes_cost_no_pull_again(stage: Stage) -> None:
    stage.use_hub(limit=100)
    stage.hub.set_remaining(5)
    digests = three_images(stage)
    stage.dest.throttle_next("manifest_put", times=4)
    run = stage.mirror("sync", timeout=180)
    assert (run.code, run.actions()) == (0, ["copied"] * 3), said(run)
    assert {tag: stage.dest_digest(tag) for tag in digests} == digests
    assert stage.dest.counts.throttled["manifest_put"] == 4
    counts = stage.hub.counts
    assert (counts.manifest_get, counts.status_429) == (3, 0)
    layers = [get_manifest(stage.source.url, stage.repo, tag)[1]["layers"][0] for tag in digests]
    gets = Counter(path for method, path, _ in counts.requests if method == "GET")
    # Each layer left the source once: the retries found it in ECR (skopeo asks there first).
    assert [gets[f"/v2/{stage.repo}/blobs/{layer['digest']}"] for layer in layers] == [1, 1, 1]
    assert budget(run, stage)["spent"] == 3
    assert budget(run, stage)["remaining"] == stage.hub.remaining == 2
    assert "pull rate limit" not in run.stdout + run.stderr


def test_a_destination_answering_503_to_every_write_is_named_and_pulled_from_once(
    stage: Stage,
) -> None:
    stage.use_hub(limit=100)
    stage.push("a", seed="a")
    stage.push("b", seed="b")
    stage.config([stage.image("a", "b")])
    stage.dest.fail_next("manifest_put", 503, times=None)
    run = stage.mirror("sync", timeout=180)
    assert (run.code, run.actions()) == (1, ["failed", "failed"]), said(run)
    assert run.report is not None
    for image in run.report["images"]:
        assert "503" in image["error"], image["error"]
        assert stage.dest.host in image["error"], image["error"]
        assert "(after 3 attempts)" in image["error"]
    assert stage.dest.counts.faulted["manifest_put"] == 6
    assert stage.hub.counts.manifest_get == 2
    assert budget(run, stage)["spent"] == 2
    assert "pull rate limit" not in run.stdout + run.stderr


def test_a_dropped_upload_is_copied_again_without_pulling_again(stage: Stage) -> None:
    stage.use_hub(limit=100)
    digest = stage.push("a", seed="a", layer_sizes=(300_000,))
    stage.config([stage.image("a")])
    stage.dest.fail_next("upload_patch", None, times=1)
    run = stage.mirror("sync", timeout=180)
    assert (run.code, run.actions()) == (0, ["copied"]), said(run)
    assert stage.dest_digest("a") == digest
    assert stage.dest.counts.faulted["upload_patch"] == 1
    assert stage.hub.counts.manifest_get == 1
    assert budget(run, stage)["spent"] == 1


def test_a_source_without_digest_on_head_costs_one_pull_per_tag_and_a_warning(
    stage: Stage,
) -> None:
    stage.use_hub(limit=100, head="no-digest")
    stage.push("a", seed="a")
    stage.push("b", seed="b")
    stage.config([stage.image("a", "b")])
    first = stage.mirror("sync")
    assert (first.code, first.actions()) == (0, ["copied", "copied"]), said(first)
    assert stage.hub.counts.manifest_get == 2  # the check's GET is the copy's GET
    assert budget(first, stage)["spent"] == 2
    warning = (
        f"{stage.hub.host} gives no digest on a manifest HEAD: every run reads each tag's "
        "manifest with a GET, a pull (2 pulls in this run)"
    )
    assert first.report is not None and warning in first.report["warnings"]
    assert warning in first.error
    stage.hub.reset_counts()
    again = stage.mirror("sync")
    assert again.actions() == ["up-to-date", "up-to-date"], said(again)
    assert stage.hub.counts.manifest_get == 2 == budget(again, stage)["spent"]
    assert again.report is not None and warning in again.report["warnings"]

    stage.hub.reset_counts()  # a dry run makes no GET: it cannot know, and says so
    stage.push("c", seed="c")
    stage.config([stage.image("a", "b", "c")])
    dry = stage.mirror("sync", "--dry-run")
    assert (dry.code, dry.actions()) == (0, ["would-copy"] * 3), said(dry)
    assert dry.report is not None
    unknown = (
        f"{stage.hub.host} gives no digest on a manifest HEAD: whether the image changed is "
        "known only by reading it, a pull, which a dry run does not make"
    )
    assert [image["error"] for image in dry.report["images"]] == [unknown, unknown, None]
    assert stage.hub.counts.manifest_get == 0


def test_a_compact_index_of_twelve_platforms_never_starts_on_a_budget_it_overruns(
    stage: Stage,
) -> None:
    stage.use_hub(limit=100)
    digest = stage.push("m", seed="m", platforms=TWELVE, layer_sizes=(512,))
    stage.config([stage.image("m")])
    stage.hub.set_remaining(10)
    short = stage.mirror("sync")
    assert (short.code, short.actions()) == (75, ["deferred"]), said(short)
    assert short.report is not None
    assert "needs 12, 9 left of 100" in short.report["images"][0]["error"]
    counts = stage.hub.counts
    assert (counts.manifest_get, counts.status_429) == (1, 0)  # the index, read to count
    assert budget(short, stage)["spent"] == 1
    assert stage.dest_digest("m") is None
    stage.hub.reset_counts()
    stage.hub.set_remaining(13)
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"]), said(run)
    assert stage.dest_digest("m") == digest
    counts = stage.hub.counts
    assert (counts.manifest_get, counts.status_429) == (13, 0)
    assert budget(run, stage)["spent"] == 13
    assert stage.hub.remaining == 0


def test_a_subset_copy_throttled_midway_pulls_each_manifest_once(stage: Stage) -> None:
    stage.use_hub(limit=100)
    stage.push("m", seed="m", platforms=("linux/amd64", "linux/arm64", "linux/arm/v7"))
    stage.config([stage.image("m", platforms=["linux/amd64", "linux/arm64"])])
    stage.dest.throttle_next("manifest_put", times=3, every=2)
    run = stage.mirror("sync", timeout=180)
    assert (run.code, run.actions()) == (0, ["copied"]), said(run)
    assert stage.hub.counts.manifest_get == 3  # the index and two platforms, once each
    assert budget(run, stage)["spent"] == 3


def test_a_sigterm_during_a_relayed_copy_ends_the_run_within_seconds(stage: Stage) -> None:
    stage.use_hub(limit=100)
    digest = stage.push("a", seed="a")
    stage.config([stage.image("a")])
    stage.hub.hold()  # the relay's pull waits: skopeo is mid-copy, reading from the relay
    report = stage.tmp / "stopped.json"
    process = stage.popen("sync", "--report", str(report))
    try:
        deadline = time.monotonic() + 60
        while stage.hub.held < 1:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the copy never reached the source"
            time.sleep(0.05)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        stage.hub.release()
    assert process.returncode == 143, stderr
    assert took < Settings().grace, f"{took:.1f} s from the signal to the exit"
    written = json.loads(report.read_text())
    assert [image["action"] for image in written["images"]] == ["deferred"]
    assert not list(Path(stage.env["TMPDIR"]).glob("mirror-*/auth.json"))  # credentials gone
    deadline = time.monotonic() + 60
    while stage.hub.counts.manifest_get < 1:  # the held pull, answered to no one once let go
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stage.hub.reset_counts()
    again = stage.mirror("sync")
    assert (again.code, again.actions()) == (0, ["copied"]), said(again)
    assert stage.dest_digest("a") == digest
    assert stage.hub.counts.manifest_get == 1 == budget(again, stage)["spent"]


@pytest.mark.parametrize("cap", ["--max-pulls 1", "1 pull left"])
def test_checks_reading_digestless_sources_at_once_never_overrun_the_pulls_allowed(
    stage: Stage, cap: str
) -> None:
    """The checks run at once: each GET for a digest is a pull, so each must be counted
    before it is sent, or three checks each see one pull left and all three spend it."""
    stage.use_hub(limit=100, head="no-digest")
    digests = three_images(stage)
    if cap == "1 pull left":
        stage.hub.set_remaining(1)
    stage.hub.hold()  # the first check's GET waits: the others decide meanwhile
    report = stage.tmp / "held.json"
    args = cap.split() if cap.startswith("--") else []
    process = stage.popen("sync", *args, "--report", str(report))
    try:
        assert process.stdout is not None
        deferred: list[str] = []
        while len(deferred) < 2:
            line = process.stdout.readline()
            assert line, process.communicate()
            assert stage.hub.held <= 1, "a second pull was sent past the cap"
            deferred += [line] if " deferred " in line else []
    except BaseException:
        process.kill()
        raise
    finally:
        stage.hub.release()
    _, stderr = process.communicate(timeout=60)
    written = json.loads(report.read_text())
    actions = sorted(image["action"] for image in written["images"])
    assert (process.returncode, actions) == (75, ["copied", "deferred", "deferred"]), stderr
    why = "--max-pulls 1 reached" if cap.startswith("--") else "needs 1, 0 left of 100"
    for image in written["images"]:
        if image["action"] == "deferred":
            assert why in image["error"], image["error"]
            assert "the source gives no digest on HEAD: reading it is a pull" in image["error"]
        else:
            tag = image["source"].rpartition(":")[2]
            assert stage.dest_digest(tag) == digests[tag]
    counts = stage.hub.counts
    assert (counts.manifest_get, counts.status_429) == (1, 0)
    figures = written["rate_limit"][stage.hub.host]
    start = 100 if cap.startswith("--") else 1  # the HEADs' figure, before any GET
    assert (figures["spent"], figures["remaining_at_start"]) == (1, start)
    assert figures["remaining"] == start - 1 == stage.hub.remaining


@pytest.mark.parametrize("cap", ["--max-pulls 1", "1 pull left"])
def test_an_index_is_not_read_to_be_counted_when_not_even_two_pulls_are_left(
    stage: Stage, cap: str
) -> None:
    """An index costs itself and at least one entry: with one pull left, reading it to count
    its entries spends that pull for nothing, on every run."""
    stage.use_hub(limit=100)
    stage.push("m", seed="m", platforms=("linux/amd64", "linux/arm64"), attestations=True)
    stage.config([stage.image("m")])
    if cap == "1 pull left":
        stage.hub.set_remaining(1)
    run = stage.mirror("sync", *(cap.split() if cap.startswith("--") else []))
    assert (run.code, run.actions()) == (75, ["deferred"]), said(run)
    assert run.report is not None
    why = "--max-pulls 1: needs 2, 1 left" if cap.startswith("--") else "needs 2, 1 left of 100"
    assert why in run.report["images"][0]["error"]
    assert stage.hub.counts.manifest_get == 0
    assert stage.hub.remaining == (100 if cap.startswith("--") else 1)
    assert stage.dest_digest("m") is None
