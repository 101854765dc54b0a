"""What a finished run tells a monitoring system: Prometheus metrics and CloudWatch EMF.

`prometheus` writes the Prometheus text exposition format (version 0.0.4, which
node_exporter's textfile collector reads from `*.prom` files): one gauge family per figure,
each with `# HELP` and `# TYPE`, label values escaped as the format says (`\\`, `"` and line
feeds). `write_prometheus` writes it atomically (a temporary file in the same directory,
renamed over the old one: the collector never reads half a file) with mode 0644, so that
node_exporter's user can read it, and never through another user's symbolic link (the
report's own safe writing, `report.write_atomically`).

`mirror_last_success_timestamp_seconds` is when a run last ended with exit code 0. A run
that did not succeed carries the previous file's value over (read safely: only a regular
file, at most `PREVIOUS_LIMIT` bytes, a malformed value ignored), so an alert on
`time() - mirror_last_success_timestamp_seconds` measures the age of the last good run
whatever happened since. With no good run known it is 0: such an alert fires.

`emf` writes CloudWatch's Embedded Metric Format (the CloudWatch User Guide's
"Specification: Embedded metric format"): JSON lines that CloudWatch Logs turns into metrics
in the namespace `mirror` when a build prints them to its log. Dimension values are members
of the document's root, so one document can carry one registry's figures: the first line
holds the run's figures (dimension `Shard`, and `RunSucceeded` and `ImagesFailed` also with
no dimension, for an alarm over every shard) and the first source registry's pulls
(dimensions `Registry`, `Shard`); each further registry adds one line. The specification's
limits are kept: at most 100 metrics per directive, 30 dimensions per dimension set, ASCII
dimension values of 1 to 1,024 characters.

A run is a success when its exit code is 0: every image copied or up to date (a `--dry-run`
that would copy an image is not: it copied nothing). Exit 75
(images deferred: a spent pull budget, a 429) is not, though nothing failed: images are
behind, and if every night ends so, the age alert should say it.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path

from mirror.errors import ConfigError
from mirror.model import Action
from mirror.report import Report, summary, usable, write_atomically

__all__ = [
    "NAMESPACE",
    "PREVIOUS_LIMIT",
    "emf",
    "last_success",
    "prometheus",
    "read_previous",
    "succeeded_run",
    "usable_metrics_file",
    "write_prometheus",
]

NAMESPACE = "mirror"  # CloudWatch namespace of the EMF metrics
PREVIOUS_LIMIT = 1 << 20  # bytes of an earlier metrics file read for its last success
FILE_MODE = 0o644  # node_exporter runs as its own user: the file must be readable by others
SUCCESS = "mirror_last_success_timestamp_seconds"
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_OWN_LABELS = ("registry", "action")  # labels of mirror's own families
_EMF_MAX_METRICS = 100  # MetricDefinitions per MetricDirective (the EMF specification)
_EMF_MAX_DIMENSIONS = 30  # dimension keys per DimensionSet (the EMF specification)
_EMF_DIMENSION_VALUE = 1024  # characters of a dimension value (CloudWatch's Dimension)

# EMF metric names for the image actions, in the report's order.
_EMF_ACTIONS = {
    Action.COPIED: "ImagesCopied",
    Action.UP_TO_DATE: "ImagesUpToDate",
    Action.FAILED: "ImagesFailed",
    Action.DEFERRED: "ImagesDeferred",
    Action.STALE: "ImagesStale",
    Action.WOULD_COPY: "ImagesWouldCopy",
}
_EMF_ALWAYS = (Action.COPIED, Action.UP_TO_DATE, Action.FAILED, Action.DEFERRED)


def succeeded_run(report: Report) -> bool:
    """Exit code 0 with nothing left to copy: a `--dry-run` that found an image to copy
    exits 0 but copied nothing, so it never counts as a good run (the last success is
    carried over, RunSucceeded is 0); a dry run that finds all up to date does count."""
    return report.exit_code == 0 and all(o.action != Action.WOULD_COPY for o in report.outcomes)


# --- Prometheus ----------------------------------------------------------------------------------


def prometheus(
    report: Report,
    *,
    previous_success: float | None = None,
    labels: Mapping[str, str] | None = None,
) -> str:
    """The Prometheus text for `report`. `previous_success` is the last good run's time
    (Unix seconds) from the file this one replaces (`last_success`); `labels` are added to
    every sample (e.g. `{"config": "nightly"}` when one host runs several configs).
    ValueError for a label name the format does not allow."""
    labels = labels or {}
    for name in labels:
        if not _LABEL_NAME.match(name) or name.startswith("__") or name in _OWN_LABELS:
            raise ValueError(
                f"{name!r} cannot be a label name here (letters, digits and _, not starting "
                "with a digit or __; registry and action are mirror's own)"
            )
    ended = _seconds(report.ended)
    succeeded = succeeded_run(report)
    counts = summary(report.outcomes)
    families = [
        _family(
            "mirror_images",
            "Images (tags in targets) by what the last run did with them.",
            [({"action": action.value}, counts.get(action.value, 0)) for action in Action],
            labels,
        ),
        _family("mirror_exit_code", "The last run's exit code.", [({}, report.exit_code)], labels),
        _family(
            "mirror_last_run_timestamp_seconds",
            "When the last run ended, in seconds since the epoch.",
            [({}, ended)],
            labels,
        ),
        _family(
            SUCCESS,
            "When a run last ended with exit code 0, in seconds since the epoch (0: none known).",
            [({}, ended if succeeded else previous_success or 0)],
            labels,
        ),
        _family(
            "mirror_last_run_duration_seconds",
            "How long the last run took.",
            [({}, round(report.seconds, 3))],
            labels,
        ),
        _family(
            "mirror_throttled_requests",
            "Requests the destinations (ECR) answered with 429 in the last run.",
            [({}, report.throttled)],
            labels,
        ),
    ]
    families += _budget_families(report, labels)
    return "".join(families)


def _budget_families(report: Report, labels: Mapping[str, str]) -> list[str]:
    budgets = report.budgets
    known = [budget for budget in budgets if budget.last is not None]
    return [
        _family(
            "mirror_pull_budget_remaining",
            "Pulls the source registry said were left at the end of the last run.",
            [({"registry": b.host}, b.last.remaining) for b in known if b.last is not None],
            labels,
        ),
        _family(
            "mirror_pull_budget_limit",
            "The source registry's pull limit per window, as it said in the last run.",
            [({"registry": b.host}, b.last.limit) for b in known if b.last is not None],
            labels,
        ),
        _family(
            "mirror_pulls_spent",
            "Pulls (manifest GETs) the last run spent on each source registry.",
            [({"registry": b.host}, b.spent) for b in budgets],
            labels,
        ),
        _family(
            "mirror_rate_limited",
            "1 if the source registry answered 429 in the last run, else 0.",
            [({"registry": b.host}, int(b.limited is not None)) for b in budgets],
            labels,
        ),
    ]


def _family(
    name: str,
    help_text: str,
    samples: Iterable[tuple[Mapping[str, str], float]],
    labels: Mapping[str, str],
) -> str:
    """One gauge family; none at all (not even HELP) when it has no sample."""
    lines = [f"{name}{_labels({**labels, **own})} {_number(value)}\n" for own, value in samples]
    if not lines:
        return ""
    return f"# HELP {name} {_escape_help(help_text)}\n# TYPE {name} gauge\n" + "".join(lines)


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    pairs = ",".join(f'{name}="{_escape_label(value)}"' for name, value in labels.items())
    return "{" + pairs + "}"


def _escape_label(value: str) -> str:
    """A label value as the text format writes it: backslash, double quote and line feed
    escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    """HELP text as the format writes it: backslash and line feed escaped."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or (
        math.isfinite(value) and value == int(value) and abs(value) < 2**53
    ):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _seconds(moment: datetime | None) -> float:
    """Unix time in seconds (milliseconds kept) of `moment`, or of now."""
    when = moment or datetime.now(timezone.utc)
    return round(when.timestamp(), 3)


def last_success(previous: str | None, labels: Mapping[str, str] | None = None) -> float | None:
    """The last good run's time in an earlier metrics file's text (None: none, or not
    readable as one): the `mirror_last_success_timestamp_seconds` sample with these labels,
    a finite number above 0."""
    if not previous:
        return None
    start = f"{SUCCESS}{_labels(labels or {})} "
    for line in previous.splitlines():
        if line.startswith(start):
            try:
                value = float(line[len(start) :].split()[0])
            except (ValueError, IndexError):
                return None
            return value if math.isfinite(value) and value > 0 else None
    return None


def read_previous(path: Path) -> str | None:
    """The text of the metrics file at `path` (already checked by `usable_metrics_file`), if
    it is a regular file of at most PREVIOUS_LIMIT bytes; None otherwise (missing, a FIFO, a
    device, too big, unreadable). Never blocks, never follows a symbolic link at the end."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        data = handle.read(PREVIOUS_LIMIT + 1)
    if len(data) > PREVIOUS_LIMIT:
        return None
    return data.decode("utf-8", errors="replace")


def usable_metrics_file(path: Path, option: str = "--metrics-file") -> Path:
    """Check before the run, as `report.usable` does for reports, that the metrics file can
    be written at `path` and that what is there is an earlier one (or empty). Its name must
    end in `.prom`: node_exporter's textfile collector reads no other file. Returns the path
    to write; ConfigError (exit 2) naming the option otherwise."""
    if not path.name.endswith(".prom"):
        raise ConfigError(
            f"{option} {path}: the name must end in .prom (node_exporter's textfile collector "
            "reads only *.prom files)"
        )
    return usable(path, option, metrics=True)


def write_prometheus(
    path: Path, report: Report, *, labels: Mapping[str, str] | None = None
) -> None:
    """Replace the metrics file at `path` (from `usable_metrics_file`) with `report`'s,
    carrying the last good run's time over from the file it replaces. MirrorError (exit 1)
    when it cannot be written."""
    labels = labels or {}
    previous = last_success(read_previous(path), labels)
    write_atomically(
        path, prometheus(report, previous_success=previous, labels=labels), mode=FILE_MODE
    )


# --- CloudWatch Embedded Metric Format -----------------------------------------------------------


def emf(report: Report, *, shard: str = "1/1") -> list[str]:
    """EMF documents for `report`, one JSON object per line (see the module's docstring).
    `shard` is the run's `--shard` (K/N; "1/1" for a whole config). ValueError for a shard
    that cannot be a dimension value."""
    _dimension_value(shard, "shard")
    timestamp = int(_seconds(report.ended) * 1000)
    counts = summary(report.outcomes)
    run: dict[str, tuple[float, str]] = {
        _EMF_ACTIONS[action]: (counts.get(action.value, 0), "Count")
        for action in _EMF_ACTIONS
        if action in _EMF_ALWAYS or counts.get(action.value)
    }
    run["RunSucceeded"] = (int(succeeded_run(report)), "Count")
    run["Duration"] = (round(report.seconds, 3), "Seconds")
    run["ThrottledRequests"] = (report.throttled, "Count")
    directives = [
        _directive([["Shard"]], run),
        _directive([[]], {name: run[name] for name in ("RunSucceeded", "ImagesFailed")}),
    ]
    root: dict[str, object] = {"Shard": shard, **{name: value for name, (value, _) in run.items()}}
    documents: list[tuple[list[dict[str, object]], dict[str, object]]] = [(directives, root)]
    for number, budget in enumerate(report.budgets):
        pulls: dict[str, tuple[float, str]] = {"PullsSpent": (budget.spent, "Count")}
        if budget.last is not None:
            pulls["PullBudgetRemaining"] = (budget.last.remaining, "Count")
        fields: dict[str, object] = {
            "Shard": shard,
            "Registry": _dimension_value(budget.host, "registry"),
        }
        fields.update({name: value for name, (value, _) in pulls.items()})
        directive = _directive([["Registry", "Shard"]], pulls)
        if number == 0:
            directives.append(directive)
            root.update(fields)
        else:
            documents.append(([directive], fields))
    return [_emf_line(timestamp, directives, fields) for directives, fields in documents]


def _directive(
    dimensions: list[list[str]], metrics: Mapping[str, tuple[float, str]]
) -> dict[str, object]:
    assert len(metrics) <= _EMF_MAX_METRICS
    assert all(len(dimension_set) <= _EMF_MAX_DIMENSIONS for dimension_set in dimensions)
    return {
        "Namespace": NAMESPACE,
        "Dimensions": dimensions,
        "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in metrics.items()],
    }


def _emf_line(
    timestamp: int, directives: list[dict[str, object]], fields: Mapping[str, object]
) -> str:
    document = {"_aws": {"Timestamp": timestamp, "CloudWatchMetrics": directives}, **fields}
    return json.dumps(document, separators=(",", ":"), allow_nan=False)


def _dimension_value(value: str, what: str) -> str:
    """A dimension value as CloudWatch takes one: ASCII, no control characters, 1 to 1,024
    characters, not only spaces."""
    if (
        not value.strip()
        or len(value) > _EMF_DIMENSION_VALUE
        or not value.isascii()
        or not value.isprintable()
    ):
        raise ValueError(f"{what} {value!r} cannot be a CloudWatch dimension value")
    return value
