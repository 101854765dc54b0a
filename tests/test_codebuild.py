"""Where users run mirror: the buildspec's own commands, shards, JUnit, logs, Dockerfile bases."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest
import yaml

from mirror import state
from tests.stage import ROOT, TIMESTAMP, Stage
from tests.test_metrics import check_emf

BUILDSPEC = yaml.safe_load((ROOT / "buildspec.yaml").read_text())


def run_phases(stage: Stage, phases: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """Run buildspec phases' commands in one bash session, as CodeBuild does, on the stand-ins."""
    script = ["set -e"]
    for phase in phases:
        script += BUILDSPEC["phases"][phase]["commands"]
    source_dir = stage.tmp / "src"
    source_dir.mkdir(exist_ok=True)
    (source_dir / "mirror.yaml").write_text((stage.tmp / "mirror.yaml").read_text())
    variables = {
        **os.environ,
        **stage.env,
        **BUILDSPEC["env"]["variables"],
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "CODEBUILD_BUILD_ID": "mirror:0f0e0d0c-1234",
        "CODEBUILD_SRC_DIR": str(source_dir),
        "CODEBUILD_BUILD_SUCCEEDING": "1",
        **env,
    }
    return subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=source_dir,
        env=variables,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_buildspec_is_unprivileged_and_complete() -> None:
    assert BUILDSPEC["version"] == 0.2
    assert BUILDSPEC["env"]["variables"]["MIRROR_CONFIG"] == "mirror.yaml"
    assert set(BUILDSPEC["env"]["secrets-manager"]) == {"DOCKERHUB_USERNAME", "DOCKERHUB_TOKEN"}
    install = " ".join(BUILDSPEC["phases"]["install"]["commands"])
    assert "skopeo" in install and "docker" not in install.replace("dockerhub", "")
    assert BUILDSPEC["reports"]["mirror"]["file-format"] == "JUNITXML"
    shards = BUILDSPEC["batch"]["build-matrix"]["dynamic"]["env"]["variables"]["MIRROR_SHARD"]
    assert shards == ["1/3", "2/3", "3/3"]
    # the memory of refused images is kept between builds (CodeBuild runs as root)
    assert BUILDSPEC["cache"]["paths"] == [f"{state.state_dir({'HOME': '/root'})}/**/*"]


def test_buildspec_commands_mirror_with_codebuild_variables(stage: Stage) -> None:
    stage.use_hub(credentials=("hubuser", "hubtoken")).start()
    digests = {tag: stage.push(tag, seed=tag) for tag in ("a", "b")}
    stage.config(
        [stage.image("a", "b")],
        source={
            "credentials": {"username_env": "DOCKERHUB_USERNAME", "password_env": "DOCKERHUB_TOKEN"}
        },
    )
    # What CodeBuild's env.secrets-manager would inject:
    done = run_phases(
        stage,
        ["pre_build", "build", "post_build"],
        DOCKERHUB_USERNAME="hubuser",
        DOCKERHUB_TOKEN="hubtoken",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "mirror summary: {'copied': 2}" in done.stdout
    # --metrics-emf: one EMF line, as it is, for the log group to turn into metrics
    [emf] = [check_emf(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert (emf["Shard"], emf["RunSucceeded"], emf["ImagesCopied"]) == ("1/1", 1, 2)
    assert {tag: stage.dest_digest(tag) for tag in digests} == digests
    suite = (
        ElementTree.parse(stage.tmp / "src" / "reports" / "junit.xml").getroot().find("testsuite")
    )
    assert suite is not None
    assert [(c.get("classname"), c.get("name")) for c in suite.iter("testcase")] == [
        (stage.dest_repo(), "a"),
        (stage.dest_repo(), "b"),
    ]
    assert stage.hub.counts.token_anonymous == 0


def test_three_shards_cover_the_config_exactly_once(stage: Stage) -> None:
    tags = [f"t{number}" for number in range(12)]
    for tag in tags:
        stage.push(tag, seed="same")  # one image, twelve tags: cheap to push and to copy
    stage.config([stage.image(*tags)])
    seen: list[tuple[str, ...]] = []
    for shard in ("1/3", "2/3", "3/3"):
        done = run_phases(stage, ["pre_build", "build"], MIRROR_SHARD=shard)
        assert done.returncode == 0, done.stderr
        reports = stage.tmp / "src" / "reports"
        images = json.loads((reports / "mirror.json").read_text())["images"]
        cases = ElementTree.parse(reports / "junit.xml").getroot().iter("testcase")
        from_report = tuple(image["destination"].rsplit(":", 1)[1] for image in images)
        assert tuple(case.get("name") for case in cases) == from_report
        assert all(image["action"] == "copied" for image in images)
        seen.append(from_report)
    every = [tag for shard in seen for tag in shard]
    assert sorted(every) == sorted(tags)  # together they cover all, each exactly once
    assert all(seen)  # and the split is not degenerate


def test_bad_shard_is_a_usage_error(stage: Stage) -> None:
    stage.config([stage.image("a")])
    run = stage.mirror("sync", "--shard", "4/3")
    assert (run.code, run.error) == (
        2,
        "mirror: --shard / $MIRROR_SHARD: expected K/N with 1 <= K <= N, got '4/3'",
    )


def test_junit_marks_failures_and_deferrals(stage: Stage) -> None:
    stage.use_hub(limit=100).start()
    stage.push("ok", seed="ok")
    stage.push("later", seed="later")
    stage.config([stage.image("ok", "gone", "later")])
    stage.hub.set_remaining(1)
    run = stage.mirror("sync", "--jobs", "1", "--junit", str(stage.tmp / "junit.xml"))
    assert run.code == 1
    suite = ElementTree.parse(stage.tmp / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    failure = cases["gone"].find("failure")
    assert failure is not None
    assert (
        failure.get("message") == f"{stage.hub.host}/{stage.repo}:gone: tag not found on the source"
    )
    skipped = cases["later"].find("skipped")
    assert skipped is not None
    assert skipped.get("message") == (
        f"{stage.hub.host}: pull budget: needs 1, 0 left of 100; run again later"
    )
    assert cases["ok"].find("failure") is None and cases["ok"].find("skipped") is None
    assert float(cases["ok"].get("time") or "0") > 0


def test_logs_are_timestamped_off_a_terminal_json_on_request_and_quiet(stage: Stage) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a", "missing")])
    text = stage.mirror("sync")
    lines = text.stdout.splitlines()
    assert len(lines) == 3 and all(TIMESTAMP.match(line) for line in lines)

    as_json = stage.mirror("sync", "--log-format", "json")
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    # each image's line as it settles (the checks run at once: in either order), the summary last
    assert sorted(r.get("action") for r in records[:2]) == ["failed", "up-to-date"]
    assert records[2].get("action") is None
    [failed] = [r for r in records if r.get("action") == "failed"]
    assert failed["level"] == "error" and failed["error"].endswith("tag not found on the source")
    assert records[2]["event"] == "summary" and records[2]["summary"] == {
        "up-to-date": 1,
        "failed": 1,
    }
    assert all(re.match(r"\d{4}-\d\d-\d\dT", r["time"]) for r in records)

    quiet = stage.mirror("sync", "--quiet")
    shown = [TIMESTAMP.sub("", line) for line in quiet.stdout.splitlines()]
    assert len(shown) == 2
    assert shown[0].startswith("failed ") and shown[1].startswith("1 up-to-date, 1 failed")


# --- Dockerfile bases ----------------------------------------------------------------------------

DOCKERFILE = """\
# syntax={repo}:frontend
ARG BASE={repo}:base
ARG RUNTIME={repo}:runtime
FROM --platform=$BUILDPLATFORM ${{BASE}} AS build
RUN echo build
FROM build AS test
FROM scratch AS empty
FROM {repo}:runtime AS final
COPY --from=build /x /x
FROM $RUNTIME
"""


@pytest.fixture
def dockerfile_stage(stage: Stage) -> Stage:
    stage.push("frontend", seed="frontend")
    stage.push("base", seed="base")
    stage.push("runtime", seed="runtime")
    stage.config()
    (stage.tmp / "Dockerfile").write_text(DOCKERFILE.format(repo=stage.repo))
    return stage


def test_ensure_dockerfile_refs_in_order_of_first_use(dockerfile_stage: Stage) -> None:
    stage = dockerfile_stage
    run = stage.mirror("ensure", "--dockerfile", str(stage.tmp / "Dockerfile"))
    assert run.code == 0, run.stderr
    destination = f"{stage.dest.host}/{stage.dest_repo()}"
    assert run.stdout.splitlines() == [
        f"{destination}:frontend",
        f"{destination}:base",
        f"{destination}:runtime",
    ]
    assert run.actions() == ["copied", "copied", "copied"]  # each image once
    assert stage.dest_digest("base") == stage.source_digest("base")


def test_ensure_dockerfile_rewrites_only_from_images(dockerfile_stage: Stage) -> None:
    stage = dockerfile_stage
    run = stage.mirror(
        "ensure", "--dockerfile", str(stage.tmp / "Dockerfile"), "--format", "dockerfile"
    )
    assert run.code == 0, run.stderr
    destination = f"{stage.dest.host}/{stage.dest_repo()}"
    assert run.stdout == DOCKERFILE.format(repo=stage.repo).replace(
        f"syntax={stage.repo}:frontend", f"syntax={destination}:frontend"
    ).replace("${BASE} AS build", f"{destination}:base AS build").replace(
        f"FROM {stage.repo}:runtime AS final", f"FROM {destination}:runtime AS final"
    ).replace("FROM $RUNTIME", f"FROM {destination}:runtime")


def test_ensure_dockerfile_build_args(dockerfile_stage: Stage) -> None:
    stage = dockerfile_stage
    run = stage.mirror(
        "ensure", "--dockerfile", str(stage.tmp / "Dockerfile"), "--format", "build-args"
    )
    assert run.code == 0, run.stderr
    destination = f"{stage.dest.host}/{stage.dest_repo()}"
    assert run.stdout == (
        f"--build-arg BUILDKIT_SYNTAX={destination}:frontend "
        f"--build-arg BASE={destination}:base --build-arg RUNTIME={destination}:runtime\n"
    )


def test_ensure_dockerfile_with_a_build_arg_override(dockerfile_stage: Stage) -> None:
    stage = dockerfile_stage
    stage.push("other", seed="other")
    run = stage.mirror(
        "ensure",
        "--dockerfile",
        str(stage.tmp / "Dockerfile"),
        "--build-arg",
        f"BASE={stage.repo}:other",
    )
    assert run.code == 0, run.stderr
    assert run.stdout.splitlines()[1].endswith(":other")


def test_ensure_dockerfile_errors_name_the_file_and_line(stage: Stage) -> None:
    stage.config()
    (stage.tmp / "Dockerfile").write_text("ARG X\nFROM $X\n")
    run = stage.mirror("ensure", "--dockerfile", str(stage.tmp / "Dockerfile"))
    assert run.code == 2
    assert run.error.startswith(f"mirror: {stage.tmp / 'Dockerfile'}: line 2: ")
    assert stage.mirror("ensure", "--format", "dockerfile", "ruby").code == 2
