"""The command line end to end: ensure, validate, and errors as one line with documented codes."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.stage import ROOT, Stage, help_text


def test_ensure_mirrors_and_prints_references_in_order(stage: Stage) -> None:
    first = stage.push("1.0", seed="one")
    second = stage.push("2.0", seed="two")
    stage.config()  # no images listed: ensure needs only source and ecr
    run = stage.mirror("ensure", f"{stage.repo}:2.0", f"{stage.repo}:1.0")
    assert run.code == 0, run.stderr
    assert run.stdout.splitlines() == [
        f"{stage.dest.host}/{stage.dest_repo()}:2.0",
        f"{stage.dest.host}/{stage.dest_repo()}:1.0",
    ]
    assert (stage.dest_digest("1.0"), stage.dest_digest("2.0")) == (first, second)
    stage.hub.reset_counts()
    again = stage.mirror("ensure", f"{stage.repo}:1.0")
    assert (again.code, again.actions()) == (0, ["up-to-date"])
    assert stage.hub.counts.manifest_get == 0


def test_ensure_refreshes_a_stale_copy(stage: Stage) -> None:
    stage.push("3.3", seed="old")
    stage.config()
    assert stage.mirror("ensure", f"{stage.repo}:3.3").code == 0
    fresh = stage.push("3.3", seed="new")
    run = stage.mirror("ensure", f"{stage.repo}:3.3")
    assert (run.code, run.actions()) == (0, ["copied"])
    assert stage.dest_digest("3.3") == fresh


def test_ensure_uses_the_repository_listed_in_config(stage: Stage) -> None:
    stage.push("v1", seed="v1")
    stage.config([stage.image("v1", repository="infra/etcd")])
    run = stage.mirror("ensure", f"{stage.repo}:v1")
    assert run.stdout.strip() == f"{stage.dest.host}/infra/etcd:v1"


def test_ensure_prints_nothing_when_an_image_cannot_be_had(stage: Stage) -> None:
    stage.push("ok", seed="ok")
    stage.config()
    run = stage.mirror("ensure", f"{stage.repo}:ok", f"{stage.repo}:nope")
    assert run.code == 1
    assert run.stdout == ""
    assert "tag not found on the source" in run.stderr


def test_ensure_refuses_a_bad_reference(stage: Stage) -> None:
    stage.config()
    run = stage.mirror("ensure", "Ruby:3")
    assert run.code == 2
    assert run.error.splitlines() == [
        "mirror: 'Ruby:3': bad image name 'Ruby' (path parts are lowercase letters and digits, "
        "joined by '.', '_', '__' or '-')"
    ]


def test_validate(stage: Stage) -> None:
    stage.config([stage.image("a", "b")])
    run = stage.mirror("validate")
    assert (run.code, run.stdout.splitlines()) == (
        0,
        [
            f"{stage.tmp / 'mirror.yaml'}: ok (1 image, 2 tags)",
            "referrers: all (1 image)",  # signatures, SBOMs... travel by default
            "verify: none (1 image)",
        ],
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("images: [{source: ruby, tags: [-x]}]", "images[0].tags[0]: bad tag '-x'"),
        ("ecr: {regin: x}", "ecr.regin: unknown key (did you mean 'region'?)"),
        ("images: [", "line 2, column 1: YAML syntax error"),
    ],
)
@pytest.mark.parametrize("command", ["validate", "sync", "ensure"])
def test_config_errors_exit_2_with_one_line(
    stage: Stage, text: str, message: str, command: str
) -> None:
    (stage.tmp / "mirror.yaml").write_text(text + "\n")
    args = [command, "ruby"] if command == "ensure" else [command]
    run = stage.mirror(*args)
    assert run.code == 2
    lines = run.error.splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr
    assert lines[0].startswith(f"mirror: {stage.tmp / 'mirror.yaml'}: {message}")


def test_missing_config_names_the_path(stage: Stage) -> None:
    run = stage.mirror("sync", "-c", str(stage.tmp / "absent.yaml"))
    assert (run.code, run.error) == (
        2,
        f"mirror: {stage.tmp / 'absent.yaml'}: no such config file "
        "(name one with -c or $MIRROR_CONFIG)",
    )


def test_config_comes_from_mirror_config_variable(stage: Stage) -> None:
    path = stage.config([stage.image("a")])
    run = stage.mirror("validate", "-c", "", MIRROR_CONFIG=str(path))
    assert run.code == 0, run.stderr


def test_too_old_skopeo_is_refused_before_any_work(stage: Stage, tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "skopeo"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'skopeo version 1.4.1'\n")
    fake.chmod(0o755)
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    run = stage.mirror("sync", PATH=f"{fake.parent}:{os.environ['PATH']}")
    assert run.code == 2
    assert run.error == (
        "mirror: skopeo 1.4.1 is too old: install skopeo 1.9 or newer: `apt-get install skopeo` "
        "on Debian 12 or Ubuntu 24.04 (CodeBuild image aws/codebuild/standard:8.0); Ubuntu "
        "22.04's 1.4 is too old"
    )
    assert stage.hub.counts.manifest_head == 0


def test_missing_credential_variable_is_a_config_error(stage: Stage) -> None:
    stage.config(
        [stage.image("a")],
        source={"credentials": {"username_env": "HUB_USER", "password_env": "HUB_TOKEN"}},
    )
    run = stage.mirror("sync", HUB_USER="me")
    assert (run.code, run.error) == (
        2,
        "mirror: source.credentials.password_env: $HUB_TOKEN is not set or empty",
    )


def test_usage_errors_exit_2(stage: Stage) -> None:
    stage.config()
    assert stage.mirror("sync", "--jobs", "0").code == 2
    assert stage.mirror("frobnicate").code == 2


@pytest.mark.parametrize("command", ["sync", "ensure", "repos", "validate"])
def test_every_option_help_shows_is_in_readme(command: str) -> None:
    shown = help_text(command)
    options = set(re.findall(r"^\s+(?:-\w(?: \S+)?, )?(--[a-z][\w-]*)", shown, re.M)) - {"--help"}
    assert len(options) >= 4
    readme = (ROOT / "README.md").read_text()
    assert not [option for option in sorted(options) if not re.search(f"[`/]{option}\\b", readme)]
