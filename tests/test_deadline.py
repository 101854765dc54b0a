"""`--deadline`: a run stops itself in time, with its report, metrics and exit 75 for what it
did not reach; and the buildspec sets it from the CodeBuild build's time-out. The source is
held (its pulls wait until the test releases them), so the deadline, not the machine's
speed, decides where the run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mirror.commands.run import Stop, _exit_code, duration_text
from mirror.model import Action, Outcome
from tests.stage import TIMESTAMP, Stage
from tests.standins.misbehaving import Raw, never_answers
from tests.test_codebuild import BUILDSPEC
from tests.test_metrics import check_emf
from tests.test_monitoring import samples, value

NOT_REACHED = "not reached before the deadline (--deadline 3s)"
STOPPED = "stopped at the deadline (--deadline 3s): what was not done is deferred; run again later"


def test_a_held_copy_is_cut_at_the_deadline_and_the_rest_deferred(stage: Stage) -> None:
    stage.push("a", seed="a")
    stage.push("b", seed="b")
    stage.config([stage.image("a", "b")])
    metrics = stage.tmp / "mirror.prom"
    stage.hub.hold()  # every pull waits: the copy of a cannot end before the deadline
    try:
        run = stage.mirror(
            "sync", "--jobs", "1", "--deadline", "3", "--metrics-file", str(metrics),
            "--metrics-emf",
        )  # fmt: skip
    finally:
        stage.hub.release()
    assert run.code == 75, run.stderr
    assert run.report is not None
    assert [(i["action"], i["error"]) for i in run.report["images"]] == [
        ("deferred", NOT_REACHED),
        ("deferred", NOT_REACHED),
    ]
    assert (run.report["error"], run.report["exit_code"]) == (STOPPED, 75)
    assert run.error.splitlines()[-1] == f"mirror: {STOPPED}"
    assert "--deadline 3s: the run stops at " in run.error  # said when it starts
    lines = [TIMESTAMP.sub("", line) for line in run.stdout.splitlines()]
    deferred = [line for line in lines if line.startswith("deferred")]
    assert len(deferred) == 2 and all(line.endswith(NOT_REACHED) for line in deferred)
    found = samples(metrics)
    assert value(found, "mirror_exit_code") == 75
    assert value(found, "mirror_images", action="deferred") == 2
    [emf] = [check_emf(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert (emf["ImagesDeferred"], emf["RunSucceeded"]) == (2, 0)
    assert stage.hub.counts.manifest_get <= 1  # b's copy never started (--jobs 1)
    assert stage.dest_digest("a") is None and stage.dest_digest("b") is None
    assert not list(Path(stage.env["TMPDIR"]).glob("mirror-*/owner"))  # nothing left behind

    again = stage.mirror("sync")  # the next run catches up
    assert (again.code, again.actions()) == (0, ["copied", "copied"]), again.stderr


def test_the_deadline_during_set_up_defers_everything(stage: Stage) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    with Raw(never_answers) as silent:  # the ECR API never answers: set-up never ends
        run = stage.mirror(
            "sync", "--deadline", "3", AWS_ENDPOINT_URL_ECR=f"http://{silent.host}",
            AWS_ENDPOINT_URL=f"http://{silent.host}",
        )  # fmt: skip
    assert run.code == 75, run.stderr
    assert run.report is not None
    assert [(i["action"], i["error"]) for i in run.report["images"]] == [("deferred", NOT_REACHED)]
    assert run.report["error"] == STOPPED
    assert stage.hub.counts.manifest_head == 0


def test_ensure_prints_nothing_when_the_deadline_comes_first(stage: Stage) -> None:
    stage.push("1.0", seed="one")
    stage.config()
    stage.hub.hold()
    try:
        run = stage.mirror("ensure", f"{stage.repo}:1.0", "--deadline", "3")
    finally:
        stage.hub.release()
    assert (run.code, run.stdout, run.actions()) == (75, "", ["deferred"]), run.stderr
    assert run.error.splitlines()[-1] == f"mirror: {STOPPED}"


def test_sigterm_after_the_deadline_is_still_the_deadlines_run(stage: Stage) -> None:
    """The first of the two decides: the deadline came, so the work is deferred (75), and a
    SIGTERM while the report is written does not turn it into 143."""
    stop = Stop()
    stop.deadline = 3
    stop.handle(signal.SIGALRM)
    stop.handle(signal.SIGTERM)
    assert (stop.expired, stop.exit_code, stop.unfinished()) == (True, None, NOT_REACHED)


@pytest.mark.parametrize(
    ("actions", "code"),
    [
        ([Action.COPIED, Action.DEFERRED], 75),
        ([Action.FAILED, Action.DEFERRED], 1),  # a failure says more than the deadline
        ([Action.COPIED, Action.UP_TO_DATE], 0),  # all done as the deadline came
    ],
)
def test_the_exit_code_after_the_deadline_is_the_outcomes(actions: list[Action], code: int) -> None:
    stop = Stop()
    stop.deadline = 3
    stop.handle(signal.SIGALRM)
    outcomes = [
        Outcome(source=f"s:{n}", destination=f"d:{n}", repository="d", tag=str(n), action=action)
        for n, action in enumerate(actions)
    ]
    assert _exit_code(outcomes, None, stop) == code


@pytest.mark.parametrize(
    ("given", "seconds"),
    [("3300", 3300.0), ("3300s", 3300.0), ("55m", 3300.0), ("1h30m", 5400.0), ("2.5s", 2.5)],
)
def test_deadline_spellings(given: str, seconds: float) -> None:
    from mirror.cli import _duration

    assert _duration(given) == seconds
    assert _duration(duration_text(seconds)) == seconds


@pytest.mark.parametrize("given", ["0", "1h30", "-5", "8d", "604801", "٣", "", "1.5m"])
def test_deadlines_that_are_refused(stage: Stage, given: str) -> None:
    stage.config([stage.image("a")])
    run = stage.mirror("sync", "--deadline", given)
    assert (run.code, run.error) == (
        2,
        "mirror sync: argument --deadline: expected a duration such as 3300, 55m or 1h30m "
        f"(more than 0, at most 7 days), got {given.strip()!r} (see mirror sync --help)",
    )


# --- the buildspec sets it from the build's time-out ---------------------------------------------


def _buildspec_deadline(tmp_path: Path, **env: str) -> float:
    """Run the buildspec's build commands with a `mirror` that only notes its arguments; the
    --deadline they gave it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    noted = tmp_path / "argv.json"
    fake = bin_dir / "mirror"
    fake.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(noted)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
    )
    fake.chmod(0o755)
    variables = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CODEBUILD_", "MIRROR_"))
    }
    done = subprocess.run(
        ["sh", "-ec", "\n".join(BUILDSPEC["phases"]["build"]["commands"])],
        env={**variables, "PATH": f"{bin_dir}:{os.environ['PATH']}", **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    argv: list[str] = json.loads(noted.read_text())
    assert argv[:2] == ["sync", "--report"] and "--metrics-emf" in argv
    return float(argv[argv.index("--deadline") + 1])


def test_the_buildspec_leaves_three_minutes_of_the_builds_time_out(tmp_path: Path) -> None:
    started = int(time.time()) - 120  # two minutes of install and pre_build
    deadline = _buildspec_deadline(
        tmp_path, CODEBUILD_START_TIME=f"{started}000", MIRROR_BUILD_TIMEOUT_MINUTES="60"
    )
    assert 3000 <= deadline <= 3600 - 120 - 180  # time only goes on


def test_the_buildspec_deadline_without_the_templates_variable(tmp_path: Path) -> None:
    # CodeBuild's own default time-out, 60 minutes, from the build's start
    deadline = _buildspec_deadline(tmp_path, CODEBUILD_START_TIME=f"{int(time.time())}000")
    assert 3000 <= deadline <= 3600 - 180


def test_the_buildspec_deadline_is_never_below_a_minute(tmp_path: Path) -> None:
    late = int(time.time()) - 2 * 3600  # a build that spent its time before mirror started
    deadline = _buildspec_deadline(
        tmp_path, CODEBUILD_START_TIME=f"{late}000", MIRROR_BUILD_TIMEOUT_MINUTES="60"
    )
    assert deadline == 60
