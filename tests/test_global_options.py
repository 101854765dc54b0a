"""Global options (-c, -v, --log-format, -q) before or after the command, through `mirror`."""

from __future__ import annotations

import json
import re

import pytest

from tests.stage import Stage, help_text


def _positions(command: str, *options: str) -> list[list[str]]:
    """`options` before the command, after it, and in both places."""
    return [[*options, command], [command, *options], [*options, command, *options]]


@pytest.mark.parametrize("where", ["before", "after", "both"])
def test_config_before_or_after_validate(stage: Stage, where: str) -> None:
    path = stage.config([stage.image("a")])
    before, after, both = _positions("validate", "-c", str(path))
    run = stage.mirror(*{"before": before, "after": after, "both": both}[where])
    assert run.code == 0, run.stderr
    assert run.stdout.splitlines()[0] == f"{path}: ok (1 image, 1 tag)"


def test_two_spellings_of_one_config_are_one(stage: Stage) -> None:
    path = stage.config([stage.image("a")])
    run = stage.mirror("-c", str(path), "validate", "--config", "mirror.yaml")  # cwd: stage.tmp
    assert run.code == 0, run.stderr


@pytest.mark.parametrize(
    "argv", [["-v", "sync"], ["sync", "--verbose"], ["--verbose", "sync", "-v"]]
)
def test_verbose_before_or_after_sync(stage: Stage, argv: list[str]) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    run = stage.mirror(*argv)
    assert (run.code, run.actions()) == (0, ["copied"]), run.stderr
    host = re.escape(stage.hub.host)
    assert re.search(
        rf"mirror: HEAD {host}/v2/{stage.repo}/manifests/a -> 200 in \d+ ms", run.error
    )


@pytest.mark.parametrize("argv", _positions("sync", "--log-format", "json", "-q"))
def test_log_format_and_quiet_before_or_after_sync(stage: Stage, argv: list[str]) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    run = stage.mirror(*argv)
    assert run.code == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    # -q: the copied image's line is left out, the summary stays
    assert [line["event"] for line in lines] == ["summary"]
    assert lines[0]["summary"] == {"copied": 1}


@pytest.mark.parametrize("argv", _positions("ensure", "-q", "--log-format", "json"))
def test_globals_with_ensure_keep_stdout_the_result(stage: Stage, argv: list[str]) -> None:
    stage.push("1.0", seed="one")
    stage.config()
    run = stage.mirror(*argv, f"{stage.repo}:1.0")
    assert (run.code, run.stdout) == (0, f"{stage.dest.host}/{stage.dest_repo()}:1.0\n")
    logged = [json.loads(line) for line in run.stderr.splitlines()]
    assert [line["event"] for line in logged] == ["summary"]  # -q, as JSON, on stderr


def test_ensure_takes_images_before_and_after_an_option(stage: Stage) -> None:
    """`mirror ensure postgres:16 -q redis:7-alpine` names two images, as people write it."""
    stage.push("1.0", seed="one")
    stage.push("2.0", seed="two")
    stage.config()
    run = stage.mirror("ensure", f"{stage.repo}:1.0", "-q", f"{stage.repo}:2.0")
    where = f"{stage.dest.host}/{stage.dest_repo()}"
    assert (run.code, run.stdout) == (0, f"{where}:1.0\n{where}:2.0\n"), run.stderr
    wrong = stage.mirror("ensure", f"{stage.repo}:1.0", "-q", "--no-such-option")
    assert (wrong.code, wrong.error) == (
        2,
        "mirror: unrecognized arguments: --no-such-option (see mirror --help)",
    )


def test_json_errors_of_validate_when_given_before(stage: Stage) -> None:
    (stage.tmp / "mirror.yaml").write_text("ecr: {regin: x}\n")
    run = stage.mirror("--log-format", "json", "validate")
    assert run.code == 2
    [line] = [json.loads(line) for line in run.stderr.splitlines()]
    assert line["level"] == "error"
    assert line["message"].endswith("ecr.regin: unknown key (did you mean 'region'?)")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["-c", "a.yaml", "validate", "-c", "b.yaml"],
            "mirror: -c/--config given before and after the command, as 'a.yaml' and "
            "'b.yaml': give it once (see mirror --help)",
        ),
        (
            ["--log-format", "json", "sync", "--log-format", "text"],
            "mirror: --log-format given before and after the command, as 'json' and 'text': "
            "give it once (see mirror --help)",
        ),
    ],
)
def test_a_global_option_given_twice_differently_is_refused(
    stage: Stage, argv: list[str], message: str
) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    run = stage.mirror(*argv)
    assert (run.code, run.error) == (2, message)
    assert stage.hub.counts.manifest_head == 0


@pytest.mark.parametrize("command", [(), ("sync",), ("ensure",), ("repos",), ("validate",)])
def test_help_shows_the_global_options(command: tuple[str, ...]) -> None:
    shown = help_text(*command)
    assert "global options (before or after the command):" in shown
    for flag in ("-c FILE, --config FILE", "-v, --verbose", "--log-format {text,json}"):
        assert flag in shown
    assert "-q, --quiet" in shown
