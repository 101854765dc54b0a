"""The report says when its run started and ended, so one left by a killed run is told apart."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

from tests.stage import Stage


def moment(text: str) -> datetime:
    assert text.endswith("Z"), text  # UTC, written as the log lines write it
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_the_report_carries_when_the_run_started_and_ended(stage: Stage) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    before = datetime.now(timezone.utc)
    run = stage.mirror("sync")
    after = datetime.now(timezone.utc)
    assert (run.code, run.actions()) == (0, ["copied"]), run.stderr
    assert run.report is not None
    started, ended = moment(run.report["started"]), moment(run.report["ended"])
    assert before <= started <= ended <= after
    assert stage.hub.counts.manifest_get_ok == 1
    junit = stage.tmp / "junit.xml"
    stage.mirror("sync", "--junit", str(junit))
    assert 'timestamp="' in junit.read_text()


def test_a_report_left_by_a_killed_run_shows_it_is_older(stage: Stage) -> None:
    stage.push("a", seed="a")
    stage.push("b", seed="b")
    report_path = stage.tmp / "report.json"
    stage.config([stage.image("a")])
    first = stage.mirror("sync")
    assert first.code == 0
    assert stage.hub.counts.manifest_get_ok == 1

    stage.config([stage.image("a", "b")])
    stage.hub.hold()  # b's copy waits: the run is killed in the middle of it
    killed_at = datetime.now(timezone.utc)
    process = stage.popen("sync", "--report", str(report_path))
    deadline = time.monotonic() + 30
    while stage.hub.counts.manifest_get == 0:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the copy never started"
        time.sleep(0.05)
    process.kill()
    process.communicate(timeout=10)
    stage.hub.release()
    left = json.loads(Path(report_path).read_text())
    assert moment(left["ended"]) < killed_at  # the first run's report, and it says so
    assert [image["destination"].rsplit(":", 1)[1] for image in left["images"]] == ["a"]
    assert stage.hub.counts.manifest_get_ok <= 2  # a's one pull, and at most b's held one
