"""Bad input through the real command: exit 2, one line, nothing done."""

from __future__ import annotations

from typing import Any, cast

import pytest
import yaml

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


@pytest.mark.parametrize("command", [["sync"], ["ensure", "ruby:3.3"], ["repos"], ["validate"]])
def test_a_missing_aws_profile_stops_everything_first(stage: Stage, command: list[str]) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    assert one_line(stage, *command, AWS_PROFILE="prod") == (
        "mirror: $AWS_PROFILE: no profile 'prod' in ~/.aws/config (no such file) or "
        "~/.aws/credentials (no such file)"
    )
    assert stage.ecr_repositories() == []
    assert (stage.hub.counts.manifest_head, stage.hub.counts.manifest_get) == (0, 0)


@pytest.mark.parametrize("command", ["sync", "validate"])
def test_a_malformed_region_variable_stops_sync_and_validate(stage: Stage, command: str) -> None:
    stage.config([stage.image("a")])
    assert one_line(stage, command, AWS_REGION="us-east-1 ") == (
        "mirror: $AWS_REGION: 'us-east-1 ' is not an AWS region name (did you mean 'us-east-1'?)"
    )


@pytest.mark.parametrize("command", ["sync", "validate"])
def test_no_region_anywhere_stops_sync_and_validate(stage: Stage, command: str) -> None:
    path = stage.config([stage.image("a")])
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(line for line in lines if "region:" not in line))
    assert "region:" not in path.read_text()
    assert one_line(stage, command, AWS_REGION="", AWS_DEFAULT_REGION="") == (
        "mirror: no AWS region: set ecr.region in the config, or AWS_REGION"
    )


def test_a_second_dockerfile_is_refused_not_passed_over(stage: Stage) -> None:
    stage.config()
    for name in ("a", "b"):
        (stage.tmp / name).write_text(f"FROM {name}:1\n")
    assert one_line(
        stage, "ensure", "--dockerfile", str(stage.tmp / "a"), "--dockerfile", str(stage.tmp / "b")
    ) == (
        "mirror: --dockerfile given 2 times: give one (the result is one Dockerfile); name a "
        "second one's images in another ensure"
    )
    assert stage.hub.counts.manifest_head == 0


def test_build_args_without_a_dockerfile_are_refused(stage: Stage) -> None:
    stage.config()
    assert one_line(stage, "ensure", "ruby:3.3", "--build-arg", "V=1") == (
        "mirror: --build-arg needs --dockerfile: build args are for its ARGs"
    )


@pytest.mark.parametrize("content", ["", "# only a comment\n", "\x7fELF\x02\x01\x01"])
def test_a_file_that_is_not_a_dockerfile_is_refused(stage: Stage, content: str) -> None:
    stage.config()
    path = stage.tmp / "Dockerfile"
    path.write_text(content)
    assert one_line(stage, "ensure", "--dockerfile", str(path)) == (
        f"mirror: {path}: line 1: no FROM instruction: not a Dockerfile (BuildKit builds none "
        "without one)"
    )


def test_a_superscript_shard_is_refused(stage: Stage) -> None:
    stage.config([stage.image("a")])
    assert one_line(stage, "sync", "--shard", "²/3") == (
        "mirror: --shard / $MIRROR_SHARD: expected K/N with 1 <= K <= N, got '²/3'"
    )


def test_two_targets_naming_one_registry_and_prefix_are_refused(stage: Stage) -> None:
    path = stage.config([stage.image("a")])
    one = {"region": "us-east-1", "endpoint": stage.dest.host, "tls_verify": False}
    text = path.read_text()
    document = yaml.safe_load(text)
    document["ecr"] = [one, dict(one)]
    path.write_text(yaml.safe_dump(document))
    assert one_line(stage, "sync") == (
        f"mirror: {path}: ecr[1]: the same registry and repository_prefix as ecr[0]: every "
        "image would be copied twice into the same repositories"
    )
    assert (stage.hub.counts.manifest_head, stage.ecr_repositories()) == (0, [])


@pytest.mark.parametrize("command", ["validate", "sync"])
def test_a_directory_as_the_config_is_one_plain_line(stage: Stage, command: str) -> None:
    directory = stage.tmp / "configs"
    directory.mkdir()
    assert one_line(stage, command, "-c", str(directory)) == (
        f"mirror: {directory}: cannot read: Is a directory"
    )


def test_a_target_whose_region_comes_from_the_environment_is_the_same_registry(
    stage: Stage,
) -> None:
    path = stage.config([stage.image("a")])
    document = yaml.safe_load(path.read_text())
    written = {"region": "us-east-1", "endpoint": stage.dest.host, "tls_verify": False}
    from_environment = {"endpoint": stage.dest.host, "tls_verify": False}
    document["ecr"] = [written, from_environment]
    path.write_text(yaml.safe_dump(document))
    assert one_line(stage, "validate", AWS_REGION="us-east-1") == (
        f"mirror: {path}: ecr[1]: the same registry and repository_prefix as ecr[0]: every "
        "image would be copied twice into the same repositories"
    )
    other = stage.mirror("validate", AWS_REGION="eu-west-1")  # another region: two registries
    assert (other.code, other.stdout.splitlines()[0]) == (0, f"{path}: ok (1 image, 1 tag)")
