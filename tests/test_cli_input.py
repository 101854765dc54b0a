"""Bad input through the real command: exit 2, one line, nothing done."""

from __future__ import annotations

from typing import Any, cast

import pytest

from tests.stage import Stage


def one_line(stage: Stage, *args: str, **env: str) -> str:
    run = stage.mirror(*args, **cast("dict[str, Any]", env))
    assert run.code == 2, run.stderr
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr
    lines = run.error.splitlines()
    assert len(lines) == 1, run.stderr
    return lines[0]


def test_validate_refuses_one_image_listed_in_two_spellings(stage: Stage) -> None:
    path = stage.config(
        [
            {"source": "alpine", "tags": ["3.20"]},
            {"source": "docker.io/library/alpine", "tags": ["3.19", "3.20"]},
        ]
    )
    # source.registry is the local Docker-Hub-like front: both spellings resolve to it.
    assert one_line(stage, "validate") == (
        f"mirror: {path}: images[1].tags[1]: {stage.hub.host}/library/alpine:3.20 is already "
        "listed at images[0].tags[0] ('alpine' and 'docker.io/library/alpine' are one image)"
    )


@pytest.mark.parametrize("command", ["validate", "sync"])
@pytest.mark.parametrize("text", ["", "# images: [ruby]\n"])
def test_an_empty_config_exits_2(stage: Stage, command: str, text: str) -> None:
    path = stage.tmp / "mirror.yaml"
    path.write_text(text)
    assert one_line(stage, command) == (
        f"mirror: {path}: the config file is empty (no keys, only comments or blank lines)"
    )


@pytest.mark.parametrize("command", [["sync"], ["ensure", "ruby:3.3"], ["repos"]])
def test_a_missing_aws_profile_stops_everything_first(stage: Stage, command: list[str]) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    assert one_line(stage, *command, AWS_PROFILE="prod") == (
        "mirror: $AWS_PROFILE: no profile 'prod' in ~/.aws/config (no such file) or "
        "~/.aws/credentials (no such file)"
    )
    assert stage.ecr_repositories() == []
    assert (stage.hub.counts.manifest_head, stage.hub.counts.manifest_get) == (0, 0)


def test_a_malformed_region_variable_stops_sync(stage: Stage) -> None:
    stage.config([stage.image("a")])
    assert one_line(stage, "sync", AWS_REGION="us-east-1 ") == (
        "mirror: $AWS_REGION: 'us-east-1 ' is not an AWS region name (did you mean 'us-east-1'?)"
    )


def test_a_superscript_shard_is_refused(stage: Stage) -> None:
    stage.config([stage.image("a")])
    assert one_line(stage, "sync", "--shard", "²/3") == (
        "mirror: --shard / $MIRROR_SHARD: expected K/N with 1 <= K <= N, got '²/3'"
    )
