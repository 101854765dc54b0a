"""mirror.metrics: the Prometheus textfile (checked with Prometheus's own parser) and the
CloudWatch EMF lines (checked against the JSON schema AWS publishes for the format)."""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mirror import metrics
from mirror.errors import ConfigError
from mirror.model import Action, HostBudget, Outcome
from mirror.oci import RateLimit
from mirror.report import Report

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
ENDED = datetime(2026, 1, 15, 3, 17, 12, 388000, tzinfo=timezone.utc)  # 1768447032.388
EARLIER = datetime(2026, 1, 14, 3, 16, 58, 5000, tzinfo=timezone.utc)  # 1768360618.005


def outcome(tag: str, action: Action, error: str | None = None) -> Outcome:
    return Outcome(
        source=f"docker.io/library/ruby:{tag}",
        destination=f"{ECR}/dockerhub/library/ruby:{tag}",
        repository="dockerhub/library/ruby",
        tag=tag,
        action=action,
        error=error,
    )


def night(exit_code: int = 1, ended: datetime = ENDED) -> Report:
    """A night with two copies, three unchanged tags, a failure and a deferral, from Docker
    Hub (limited) and ghcr.io (a 429)."""
    return Report(
        outcomes=[
            outcome("3.3-slim", Action.COPIED),
            outcome("3.3", Action.COPIED),
            outcome("3.2", Action.UP_TO_DATE),
            outcome("3.1", Action.UP_TO_DATE),
            outcome("3.0", Action.UP_TO_DATE),
            outcome("2.7", Action.FAILED, "tag not found on the source"),
            outcome("2.6", Action.DEFERRED, "docker.io: pull budget: needs 1, 0 left of 100"),
        ],
        budgets=[
            HostBudget("docker.io", RateLimit(100, 76), RateLimit(100, 73), spent=3),
            HostBudget("ghcr.io", spent=1, limited="ghcr.io: 429 Too Many Requests"),
        ],
        exit_code=exit_code,
        seconds=12.3456,
        throttled=2,
        started=ended,
        ended=ended,
    )


GOOD = Report(
    outcomes=[outcome("3.3-slim", Action.UP_TO_DATE)],
    budgets=[HostBudget("docker.io", RateLimit(100, 76), RateLimit(100, 76))],
    exit_code=0,
    seconds=1.5,
    ended=EARLIER,
)

NIGHT_TEXT = """\
# HELP mirror_images Images (tags in targets) by what the last run did with them.
# TYPE mirror_images gauge
mirror_images{action="copied"} 2
mirror_images{action="up-to-date"} 3
mirror_images{action="would-copy"} 0
mirror_images{action="deferred"} 1
mirror_images{action="failed"} 1
mirror_images{action="stale"} 0
# HELP mirror_exit_code The last run's exit code.
# TYPE mirror_exit_code gauge
mirror_exit_code 1
# HELP mirror_last_run_timestamp_seconds When the last run ended, in seconds since the epoch.
# TYPE mirror_last_run_timestamp_seconds gauge
mirror_last_run_timestamp_seconds 1768447032.388
# HELP mirror_last_success_timestamp_seconds When a run last ended with exit code 0, in \
seconds since the epoch (0: none known).
# TYPE mirror_last_success_timestamp_seconds gauge
mirror_last_success_timestamp_seconds 1768360618.005
# HELP mirror_last_run_duration_seconds How long the last run took.
# TYPE mirror_last_run_duration_seconds gauge
mirror_last_run_duration_seconds 12.346
# HELP mirror_throttled_requests Requests the destinations (ECR) answered with 429 in the \
last run.
# TYPE mirror_throttled_requests gauge
mirror_throttled_requests 2
# HELP mirror_pull_budget_remaining Pulls the source registry said were left at the end of \
the last run.
# TYPE mirror_pull_budget_remaining gauge
mirror_pull_budget_remaining{registry="docker.io"} 73
# HELP mirror_pull_budget_limit The source registry's pull limit per window, as it said in \
the last run.
# TYPE mirror_pull_budget_limit gauge
mirror_pull_budget_limit{registry="docker.io"} 100
# HELP mirror_pulls_spent Pulls (manifest GETs) the last run spent on each source registry.
# TYPE mirror_pulls_spent gauge
mirror_pulls_spent{registry="docker.io"} 3
mirror_pulls_spent{registry="ghcr.io"} 1
# HELP mirror_rate_limited 1 if the source registry answered 429 in the last run, else 0.
# TYPE mirror_rate_limited gauge
mirror_rate_limited{registry="docker.io"} 0
mirror_rate_limited{registry="ghcr.io"} 1
"""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample, as Prometheus's own parser reads the text."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_prometheus_text_exactly() -> None:
    assert metrics.prometheus(night(), previous_success=EARLIER.timestamp()) == NIGHT_TEXT


def test_prometheus_text_as_prometheus_reads_it() -> None:
    families = {family.name: family for family in text_string_to_metric_families(NIGHT_TEXT)}
    assert all(family.type == "gauge" for family in families.values())
    assert families["mirror_pulls_spent"].documentation == (
        "Pulls (manifest GETs) the last run spent on each source registry."
    )
    assert samples(NIGHT_TEXT) == {
        ("mirror_images", (("action", "copied"),)): 2,
        ("mirror_images", (("action", "up-to-date"),)): 3,
        ("mirror_images", (("action", "would-copy"),)): 0,
        ("mirror_images", (("action", "deferred"),)): 1,
        ("mirror_images", (("action", "failed"),)): 1,
        ("mirror_images", (("action", "stale"),)): 0,
        ("mirror_exit_code", ()): 1,
        ("mirror_last_run_timestamp_seconds", ()): 1768447032.388,
        ("mirror_last_success_timestamp_seconds", ()): 1768360618.005,
        ("mirror_last_run_duration_seconds", ()): 12.346,
        ("mirror_throttled_requests", ()): 2,
        ("mirror_pull_budget_remaining", (("registry", "docker.io"),)): 73,
        ("mirror_pull_budget_limit", (("registry", "docker.io"),)): 100,
        ("mirror_pulls_spent", (("registry", "docker.io"),)): 3,
        ("mirror_pulls_spent", (("registry", "ghcr.io"),)): 1,
        ("mirror_rate_limited", (("registry", "docker.io"),)): 0,
        ("mirror_rate_limited", (("registry", "ghcr.io"),)): 1,
    }


def test_a_good_run_is_its_own_last_success_and_none_known_is_zero() -> None:
    good = samples(metrics.prometheus(GOOD, previous_success=1.0))
    assert good[("mirror_last_success_timestamp_seconds", ())] == EARLIER.timestamp()
    never = samples(metrics.prometheus(night()))
    assert never[("mirror_last_success_timestamp_seconds", ())] == 0
    # No source touched: no budget families at all (no HELP without a sample).
    quiet = metrics.prometheus(Report(outcomes=[], ended=ENDED))
    assert "mirror_pulls_spent" not in quiet
    assert samples(quiet)[("mirror_images", (("action", "copied"),))] == 0


def test_label_values_are_escaped_as_the_format_says() -> None:
    labels = {"config": 'night"ly\\C:\\mirror\nsecond line'}
    text = metrics.prometheus(GOOD, labels=labels)
    assert 'mirror_exit_code{config="night\\"ly\\\\C:\\\\mirror\\nsecond line"} 0\n' in text
    for (_, sample_labels), _value in samples(text).items():
        assert dict(sample_labels)["config"] == labels["config"]
    assert metrics.last_success(text, labels) == EARLIER.timestamp()
    assert metrics.last_success(text) is None  # other labels: another series


@pytest.mark.parametrize("name", ["1st", "__reserved", "registry", "action", "with-dash", ""])
def test_label_names_the_format_refuses(name: str) -> None:
    with pytest.raises(ValueError, match="cannot be a label name"):
        metrics.prometheus(GOOD, labels={name: "x"})


# --- the file ------------------------------------------------------------------------------------


def test_a_failed_run_carries_the_last_success_over(tmp_path: Path) -> None:
    path = metrics.usable_metrics_file(tmp_path / "mirror.prom")
    metrics.write_prometheus(path, GOOD)
    metrics.write_prometheus(path, night(exit_code=1))
    metrics.write_prometheus(path, night(exit_code=75))
    text = path.read_text()
    assert samples(text)[("mirror_last_success_timestamp_seconds", ())] == EARLIER.timestamp()
    assert samples(text)[("mirror_exit_code", ())] == 75
    assert text == NIGHT_TEXT.replace("mirror_exit_code 1", "mirror_exit_code 75")
    # and a good run moves it on
    metrics.write_prometheus(path, night(exit_code=0))
    assert samples(path.read_text())[("mirror_last_success_timestamp_seconds", ())] == (
        ENDED.timestamp()
    )


def test_the_file_is_0644_whatever_the_umask_and_no_temporary_file_is_left(
    tmp_path: Path,
) -> None:
    path = metrics.usable_metrics_file(tmp_path / "mirror.prom")
    old = os.umask(0o077)
    try:
        metrics.write_prometheus(path, GOOD)
        path.chmod(0o600)  # the file it replaces: mode 0644 still
        metrics.write_prometheus(path, GOOD)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mirror.prom"]


@pytest.mark.parametrize(
    ("previous", "carried"),
    [
        ("mirror_last_success_timestamp_seconds 1768360618.005\n", 1768360618.005),
        ("mirror_last_success_timestamp_seconds 1.768360618005e+09\n", 1768360618.005),
        ("# HELP x\nmirror_last_success_timestamp_seconds NaN\n", None),
        ("mirror_last_success_timestamp_seconds +Inf\n", None),
        ("mirror_last_success_timestamp_seconds -5\n", None),
        ("mirror_last_success_timestamp_seconds\n", None),
        ("mirror_last_success_timestamp_seconds 12abc\n", None),
        ("mirror_last_success_timestamp_seconds_other 17\n", None),
        ("\x00\xff garbage", None),
        ("", None),
    ],
)
def test_the_previous_file_is_read_warily(previous: str, carried: float | None) -> None:
    assert metrics.last_success(previous) == carried


def test_previous_files_that_are_not_read(tmp_path: Path) -> None:
    big = tmp_path / "big.prom"
    big.write_bytes(b"mirror_last_success_timestamp_seconds 5\n" + b"#" * metrics.PREVIOUS_LIMIT)
    assert metrics.read_previous(big) is None
    fifo = tmp_path / "fifo.prom"
    os.mkfifo(fifo)
    assert metrics.read_previous(fifo) is None  # no writer: a blocking open would hang
    link = tmp_path / "link.prom"
    link.symlink_to(big)
    assert metrics.read_previous(link) is None
    assert metrics.read_previous(tmp_path / "missing.prom") is None


def test_usable_metrics_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        metrics.usable_metrics_file(tmp_path / "mirror.txt")
    assert str(caught.value) == (
        f"--metrics-file {tmp_path / 'mirror.txt'}: the name must end in .prom "
        "(node_exporter's textfile collector reads only *.prom files)"
    )
    config = tmp_path / "mirror.prom"
    config.write_text("ecr:\n  region: us-east-1\n")
    with pytest.raises(ConfigError) as caught:
        metrics.usable_metrics_file(config)
    assert str(caught.value) == (
        f"--metrics-file {config}: exists and is not a mirror metrics file; name another path "
        "(mirror replaces only its own files)"
    )
    config.write_text("")
    assert metrics.usable_metrics_file(config) == config


# --- CloudWatch EMF ------------------------------------------------------------------------------

# The JSON schema the CloudWatch User Guide publishes for embedded metric format documents
# ("Specification: Embedded metric format", section "Embedded metric format example and JSON
# schema"; awsdocs/amazon-cloudwatch-user-guide, doc_source/
# CloudWatch_Embedded_Metric_Format_Specification.md), as published, except: the $id and
# title/examples annotations are left out, and DimensionSet's maxItems is 30, the limit the
# specification's text states today ("A DimensionSet MUST NOT contain more than 30 dimension
# keys"; the published schema still says 9, the older limit, which mirror's lines keep too).
_NAME = {"type": "string", "pattern": "^(.*)$", "minLength": 1, "maxLength": 255}
EMF_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "type": "object",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "properties": {
                "Timestamp": {"type": "integer"},
                "CloudWatchMetrics": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["Namespace", "Dimensions", "Metrics"],
                        "properties": {
                            "Namespace": _NAME,
                            "Dimensions": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "array",
                                    "minItems": 0,
                                    "maxItems": 30,
                                    "items": _NAME,
                                },
                            },
                            "Metrics": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["Name"],
                                    "properties": {
                                        "Name": _NAME,
                                        "Unit": {
                                            "type": "string",
                                            "pattern": (
                                                "^(Seconds|Microseconds|Milliseconds|Bytes|"
                                                "Kilobytes|Megabytes|Gigabytes|Terabytes|Bits|"
                                                "Kilobits|Megabits|Gigabits|Terabits|Percent|"
                                                "Count|Bytes\\/Second|Kilobytes\\/Second|"
                                                "Megabytes\\/Second|Gigabytes\\/Second|"
                                                "Terabytes\\/Second|Bits\\/Second|"
                                                "Kilobits\\/Second|Megabits\\/Second|"
                                                "Gigabits\\/Second|Terabits\\/Second|"
                                                "Count\\/Second|None)$"
                                            ),
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        }
    },
}


def check_emf(line: str) -> dict[str, Any]:
    """One EMF line: the published schema, and the rules of the specification's text that the
    schema does not express."""
    document: dict[str, Any] = json.loads(line)
    jsonschema.validate(document, EMF_SCHEMA)
    assert "\n" not in line and len(line.encode()) <= 256 * 1024  # a log event, the older limit
    for directive in document["_aws"]["CloudWatchMetrics"]:
        assert len(directive["Metrics"]) <= 100  # "MUST NOT contain more than 100"
        for dimension_set in directive["Dimensions"]:
            assert len(dimension_set) <= 9  # within the older limit too
            for key in dimension_set:  # target members: root members with string values
                value = document[key]
                assert isinstance(value, str) and value.isascii() and 1 <= len(value) <= 1024
        for metric in directive["Metrics"]:  # a metric target: a number at the root
            value = document[metric["Name"]]
            assert isinstance(value, (int, float)) and not isinstance(value, bool)
    return document


def test_emf_lines_exactly() -> None:
    lines = metrics.emf(night(), shard="2/3")
    assert lines == [
        '{"_aws":{"Timestamp":1768447032388,"CloudWatchMetrics":['
        '{"Namespace":"mirror","Dimensions":[["Shard"]],"Metrics":['
        '{"Name":"ImagesCopied","Unit":"Count"},{"Name":"ImagesUpToDate","Unit":"Count"},'
        '{"Name":"ImagesFailed","Unit":"Count"},{"Name":"ImagesDeferred","Unit":"Count"},'
        '{"Name":"RunSucceeded","Unit":"Count"},{"Name":"Duration","Unit":"Seconds"},'
        '{"Name":"ThrottledRequests","Unit":"Count"}]},'
        '{"Namespace":"mirror","Dimensions":[[]],"Metrics":['
        '{"Name":"RunSucceeded","Unit":"Count"},{"Name":"ImagesFailed","Unit":"Count"}]},'
        '{"Namespace":"mirror","Dimensions":[["Registry","Shard"]],"Metrics":['
        '{"Name":"PullsSpent","Unit":"Count"},{"Name":"PullBudgetRemaining","Unit":"Count"}]}'
        ']},"Shard":"2/3","ImagesCopied":2,"ImagesUpToDate":3,"ImagesFailed":1,'
        '"ImagesDeferred":1,"RunSucceeded":0,"Duration":12.346,"ThrottledRequests":2,'
        '"Registry":"docker.io","PullsSpent":3,"PullBudgetRemaining":73}',
        '{"_aws":{"Timestamp":1768447032388,"CloudWatchMetrics":['
        '{"Namespace":"mirror","Dimensions":[["Registry","Shard"]],"Metrics":['
        '{"Name":"PullsSpent","Unit":"Count"}]}]},'
        '"Shard":"2/3","Registry":"ghcr.io","PullsSpent":1}',
    ]
    for line in lines:
        check_emf(line)


@pytest.mark.parametrize(
    "report",
    [
        GOOD,
        night(),
        Report(outcomes=[], ended=ENDED),  # nothing to do, no source asked
        Report(  # ensure: stale; a dry run: would-copy; both only when they happened
            outcomes=[outcome("a", Action.STALE, "not refreshed"), outcome("b", Action.WOULD_COPY)],
            ended=ENDED,
        ),
    ],
)
def test_emf_lines_keep_the_specification(report: Report) -> None:
    lines = metrics.emf(report)
    first = check_emf(lines[0])
    assert first["Shard"] == "1/1"
    assert first["RunSucceeded"] == int(metrics.succeeded_run(report))
    names = [m["Name"] for m in first["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    for action, name in [(Action.STALE, "ImagesStale"), (Action.WOULD_COPY, "ImagesWouldCopy")]:
        assert (name in names) == any(o.action == action for o in report.outcomes)
    assert len(lines) == max(1, len(report.budgets))
    for line in lines[1:]:
        check_emf(line)


def test_the_schema_refuses_what_cloudwatch_would() -> None:
    """The check above can fail: a line breaking the format is refused."""
    good = json.loads(metrics.emf(GOOD)[0])
    bad_unit = json.loads(json.dumps(good))
    bad_unit["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] = "Images"
    no_timestamp = json.loads(json.dumps(good))
    del no_timestamp["_aws"]["Timestamp"]
    for document in (bad_unit, no_timestamp):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(document, EMF_SCHEMA)
    missing_target = {key: value for key, value in good.items() if key != "Shard"}
    with pytest.raises(KeyError):
        check_emf(json.dumps(missing_target))


@pytest.mark.parametrize("shard", ["", "   ", "1/3\n", "é/3", "x" * 1025])
def test_emf_refuses_a_shard_cloudwatch_cannot_take(shard: str) -> None:
    with pytest.raises(ValueError, match="cannot be a CloudWatch dimension value"):
        metrics.emf(GOOD, shard=shard)
