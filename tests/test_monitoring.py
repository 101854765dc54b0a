"""`sync --metrics-file` and `--metrics-emf` through the `mirror` command: the Prometheus file
read with Prometheus's own parser, the EMF lines checked against the format's published
schema, on every way a run ends (a good run, a failure, a bad config, a held lock, a signal,
a bug)."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mirror import metrics
from mirror.commands import run as runs
from mirror.console import Console
from mirror.model import Settings
from tests.stage import Run, Stage, wait_until
from tests.test_metrics import check_emf

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(path: Path) -> Samples:
    """Every sample of the file, as Prometheus's parser reads it."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def emf_lines(run: Run) -> list[dict[str, Any]]:
    """The EMF documents: the last lines of stdout, each one whole JSON object."""
    lines = run.stdout.splitlines()
    documents = [check_emf(line) for line in lines if line.startswith('{"_aws":')]
    assert documents, run.stdout
    assert lines[-len(documents) :] == [line for line in lines if line.startswith('{"_aws":')]
    return documents


# --- Prometheus ----------------------------------------------------------------------------------


def test_a_good_run_then_a_failed_one(stage: Stage) -> None:
    stage.use_hub(limit=100)
    stage.push("a", seed="a")
    stage.push("b", seed="b")
    stage.config([stage.image("a", "b")])
    path = stage.tmp / "textfile" / "mirror.prom"
    path.parent.mkdir()
    good = stage.mirror("sync", "--metrics-file", str(path))
    assert good.code == 0, good.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # node_exporter's user reads it
    assert sorted(p.name for p in path.parent.iterdir()) == ["mirror.prom"]
    first = samples(path)
    host = stage.hub.host
    assert value(first, "mirror_images", action="copied") == 2
    assert value(first, "mirror_images", action="failed") == 0
    assert value(first, "mirror_exit_code") == 0
    ended = value(first, "mirror_last_run_timestamp_seconds")
    assert value(first, "mirror_last_success_timestamp_seconds") == ended
    assert abs(ended - time.time()) < 3600  # Unix seconds, not milliseconds
    assert value(first, "mirror_pulls_spent", registry=host) == 100 - stage.hub.remaining > 0
    assert value(first, "mirror_pull_budget_remaining", registry=host) == stage.hub.remaining
    assert value(first, "mirror_pull_budget_limit", registry=host) == 100
    assert value(first, "mirror_rate_limited", registry=host) == 0
    assert good.report is not None
    assert value(first, "mirror_last_run_duration_seconds") == good.report["seconds"]

    stage.config([stage.image("a", "gone")])  # a tag the source lacks: the run fails
    failed = stage.mirror("sync", "--metrics-file", str(path))
    assert failed.code == 1
    second = samples(path)
    assert value(second, "mirror_exit_code") == 1
    assert value(second, "mirror_images", action="failed") == 1
    assert value(second, "mirror_images", action="up-to-date") == 1
    assert value(second, "mirror_last_run_timestamp_seconds") > ended
    assert value(second, "mirror_last_success_timestamp_seconds") == ended  # carried over


def test_a_bad_config_writes_exit_2_and_keeps_the_last_success(stage: Stage) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    path = stage.tmp / "mirror.prom"
    assert stage.mirror("sync", "--metrics-file", str(path)).code == 0
    good = value(samples(path), "mirror_last_success_timestamp_seconds")
    (stage.tmp / "mirror.yaml").write_text("ecr: {regin: x}\n")
    run = stage.mirror("sync", "--metrics-file", str(path))
    assert run.code == 2
    found = samples(path)
    assert value(found, "mirror_exit_code") == 2
    assert value(found, "mirror_last_success_timestamp_seconds") == good
    assert value(found, "mirror_images", action="copied") == 0


def test_a_report_that_cannot_be_written_still_leaves_the_metrics(stage: Stage) -> None:
    stage.config([stage.image("a")])
    path = stage.tmp / "mirror.prom"
    missing = stage.tmp / "nowhere" / "report.json"
    run = stage.mirror("sync", "--metrics-file", str(path), "--report", str(missing), report=False)
    assert (run.code, run.error) == (
        2,
        f"mirror: --report {missing}: directory {missing.parent} does not exist",
    )
    assert value(samples(path), "mirror_exit_code") == 2


def test_a_held_lock_writes_exit_75(stage: Stage) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    lock = stage.tmp / "sync.lock"
    path = stage.tmp / "mirror.prom"
    stage.hub.hold()  # the first run holds the lock while its copy waits
    first = stage.popen("sync", "--lock-file", str(lock))
    try:
        wait_until(lambda: stage.hub.held > 0, first)
        run = stage.mirror("sync", "--lock-file", str(lock), "--metrics-file", str(path))
    finally:
        stage.hub.release()
        first.communicate(timeout=60)
    assert run.code == 75, run.stderr
    found = samples(path)
    assert value(found, "mirror_exit_code") == 75
    assert value(found, "mirror_last_success_timestamp_seconds") == 0  # none known yet
    assert first.returncode == 0


def test_a_signal_mid_copy_writes_the_metrics(stage: Stage) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    path = stage.tmp / "mirror.prom"
    stage.hub.hold()  # the copy waits for its pull: SIGTERM comes mid-copy
    process = stage.popen("sync", "--metrics-file", str(path), "--metrics-emf")
    try:
        wait_until(lambda: stage.hub.held > 0, process)
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=60)
    finally:
        stage.hub.release()
    assert process.returncode == 143
    found = samples(path)
    assert value(found, "mirror_exit_code") == 143
    assert value(found, "mirror_images", action="deferred") == 1
    [document] = [check_emf(line) for line in stdout.splitlines() if line.startswith("{")]
    assert (document["RunSucceeded"], document["ImagesDeferred"]) == (0, 1)


def test_a_bug_before_the_run_is_recorded_as_exit_70(tmp_path: Path) -> None:
    """A bug (not a MirrorError) while the run is prepared leaves the metrics saying so."""
    path = metrics.usable_metrics_file(tmp_path / "mirror.prom")
    settings = Settings(metrics_file=path)
    console = Console(out=None, err=None)
    with pytest.raises(ZeroDivisionError), runs.reported(settings, console):
        _ = 1 / 0
    console.close()
    assert value(samples(path), "mirror_exit_code") == 70


def test_labels_and_shards_make_series_of_their_own(stage: Stage) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    path = stage.tmp / "mirror.prom"
    run = stage.mirror(
        "sync", "--shard", "1/2", "--metrics-file", str(path), "--metrics-label",
        "config=nightly", "--metrics-label", 'team=platform "core"',
    )  # fmt: skip
    assert run.code == 0, run.stderr
    labels = {"config": "nightly", "team": 'platform "core"', "shard": "1/2"}
    found = samples(path)
    assert value(found, "mirror_exit_code", **labels) == 0
    assert all(dict(key[1]).items() >= labels.items() for key in found)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--metrics-file", "mirror.txt"],
            "--metrics-file mirror.txt: the name must end in .prom (node_exporter's textfile "
            "collector reads only *.prom files)",
        ),
        (
            ["--metrics-file", "mirror.yaml.prom", "--report", "mirror.yaml.prom"],
            "--report and --metrics-file name the same file, {tmp}/mirror.yaml.prom",
        ),
        (
            ["--metrics-label", "a=b"],
            "--metrics-label needs --metrics-file: the labels are on its samples",
        ),
        (
            ["--metrics-file", "m.prom", "--metrics-label", "registry=x"],
            "--metrics-label: 'registry' cannot be a label name here (letters, digits and _, "
            "not starting with a digit or __; registry and action are mirror's own)",
        ),
        (
            ["--metrics-file", "m.prom", "--metrics-label", "nightly"],
            "--metrics-label 'nightly': expected NAME=VALUE",
        ),
        (
            ["--metrics-file", "m.prom", "--metrics-label", "a=1", "--metrics-label", "a=2"],
            "--metrics-label a: given twice",
        ),
    ],
)
def test_metrics_options_that_are_refused(stage: Stage, args: list[str], message: str) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    run = stage.mirror("sync", *args, report=False)
    assert (run.code, run.error) == (2, "mirror: " + message.format(tmp=stage.tmp))
    assert stage.hub.counts.manifest_head == 0


def test_a_file_that_is_not_a_metrics_file_is_never_replaced(stage: Stage) -> None:
    stage.config([stage.image("a")])
    path = stage.tmp / "node.prom"
    path.write_text("node_custom_thing 1\n")
    run = stage.mirror("sync", "--metrics-file", str(path))
    assert (run.code, run.error) == (
        2,
        f"mirror: --metrics-file {path}: exists and is not a mirror metrics file; name another "
        "path (mirror replaces only its own files)",
    )
    assert path.read_text() == "node_custom_thing 1\n"


def test_ensure_takes_no_metrics_options(stage: Stage) -> None:
    stage.config()
    run = stage.mirror("ensure", "ruby:3", "--metrics-file", "m.prom")
    assert run.code == 2
    assert "unrecognized arguments: --metrics-file m.prom" in run.error


# --- CloudWatch EMF ------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [[], ["-q"], ["--log-format", "json"]])
def test_emf_lines_are_the_last_on_stdout_as_they_are(stage: Stage, extra: list[str]) -> None:
    stage.use_hub(limit=100)
    stage.push("a", seed="a")
    stage.push("b", seed="b")
    stage.config([stage.image("a", "b")])
    run = stage.mirror("sync", "--metrics-emf", "--shard", "2/2", *extra, MIRROR_SHARD="1/9")
    assert run.code == 0, run.stderr
    [document] = emf_lines(run)
    assert run.report is not None
    shard_images = len(run.report["images"])
    assert document["Shard"] == "2/2"
    assert document["RunSucceeded"] == 1
    assert document["ImagesCopied"] == shard_images
    assert document["Registry"] == stage.hub.host
    assert document["PullsSpent"] == run.report["rate_limit"][stage.hub.host]["spent"]
    assert document["PullBudgetRemaining"] == stage.hub.remaining
    directives = document["_aws"]["CloudWatchMetrics"]
    assert {d["Namespace"] for d in directives} == {"mirror"}


def test_emf_of_a_run_refused_before_it_started(stage: Stage) -> None:
    (stage.tmp / "mirror.yaml").write_text("images: [\n")
    run = stage.mirror("sync", "--metrics-emf")
    assert run.code == 2
    [document] = emf_lines(run)
    assert (document["Shard"], document["RunSucceeded"], document["ImagesFailed"]) == ("1/1", 0, 0)
    assert run.stdout.splitlines() == [json.dumps(document, separators=(",", ":"))]


def test_emf_with_a_shard_from_the_environment(stage: Stage) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    run = stage.mirror("sync", "--metrics-emf", MIRROR_SHARD="3/3")
    assert run.code == 0, run.stderr
    assert [document["Shard"] for document in emf_lines(run)] == ["3/3"]


def test_without_the_option_no_emf(stage: Stage) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    run = stage.mirror("sync")
    assert run.code == 0 and "_aws" not in run.stdout + run.stderr
    assert not os.path.exists(stage.tmp / "mirror.prom")


def test_a_dry_run_that_would_copy_is_no_good_run(stage: Stage) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    path = stage.tmp / "mirror.prom"
    good = stage.mirror("sync", "--metrics-file", str(path))
    assert good.code == 0, good.stderr
    success = value(samples(path), "mirror_last_success_timestamp_seconds")
    stage.push("a", seed="a2")  # upstream moved: a dry run would copy it
    dry = stage.mirror("sync", "--dry-run", "--metrics-file", str(path), "--metrics-emf")
    assert (dry.code, dry.actions()) == (0, ["would-copy"]), dry.stderr
    found = samples(path)
    assert value(found, "mirror_last_success_timestamp_seconds") == success
    assert value(found, "mirror_last_run_timestamp_seconds") > success
    assert emf_lines(dry)[0]["RunSucceeded"] == 0
