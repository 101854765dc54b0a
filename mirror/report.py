"""What a run tells: one console line per image, a summary line, and the JSON report file."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from mirror.engine import ACTIONS, DEFERRED, FAILED, WOULD_COPY, Budget, Outcome, Result
from mirror.registry import RateLimit


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    counts = Counter(outcome.action for outcome in outcomes)
    return {action: counts[action] for action in ACTIONS if counts[action]}


def line(outcome: Outcome) -> str:
    """`copied      docker.io/library/ruby:3.3 -> host/repo:3.3  sha256:0123456789ab  1.2s`"""
    text = f"{outcome.action:<11} {outcome.task.source} -> {outcome.destination}"
    if outcome.digest and outcome.action != FAILED:
        text += f"  {short(outcome.digest)}"
    text += f"  {outcome.seconds:.1f}s"
    if outcome.error:
        text += f"  {outcome.error}"
    return text


def summary_line(result: Result, seconds: float) -> str:
    counts = summary(result.outcomes)
    parts = ", ".join(f"{count} {action}" for action, count in counts.items()) or "nothing to do"
    return f"{parts} ({len(result.outcomes)} images in {seconds:.1f}s)"


def budget_line(budget: Budget) -> str | None:
    """`pull budget: 76 of 100 left at the start, 70 at the end` (None when not limited)."""
    if budget.start is None or budget.last is None:
        return None
    return (
        f"pull budget: {budget.start.remaining} of {budget.start.limit} left at the start, "
        f"{budget.last.remaining} at the end"
    )


def short(digest: str) -> str:
    algorithm, _, hexdigits = digest.partition(":")
    return f"{algorithm}:{hexdigits[:12]}"


def document(result: Result) -> dict[str, Any]:
    """The JSON report: images, summary, and the pull budget seen at the start and the end."""
    return {
        "images": [
            {
                "source": str(outcome.task.source),
                "destination": outcome.destination,
                "action": outcome.action,
                "digest": outcome.digest,
                "error": outcome.error,
                "seconds": round(outcome.seconds, 3),
            }
            for outcome in result.outcomes
        ],
        "summary": summary(result.outcomes),
        "warnings": result.warnings,
        "rate_limit": {
            "limit": _field(result.budget.start, "limit"),
            "remaining_at_start": _field(result.budget.start, "remaining"),
            "remaining": _field(result.budget.last, "remaining"),
        },
    }


def _field(rate_limit: RateLimit | None, name: str) -> int | None:
    return None if rate_limit is None else int(getattr(rate_limit, name))


def write(path: Path, result: Result) -> None:
    """Write the JSON report atomically: a reader never sees half a file."""
    _write_atomically(path, json.dumps(document(result), indent=2) + "\n")


def write_junit(path: Path, result: Result) -> None:
    """Write the JUnit XML file CodeBuild's Reports tab reads (file-format: JUNITXML)."""
    _write_atomically(path, junit(result))


def junit(result: Result) -> str:
    """One test case per image: class = destination repository, name = tag, time = seconds.

    failed -> <failure> with the cause; deferred and would-copy -> <skipped> with why.
    """
    outcomes = result.outcomes
    suite = ElementTree.Element(
        "testsuite",
        name="mirror",
        tests=str(len(outcomes)),
        failures=str(sum(o.action == FAILED for o in outcomes)),
        errors="0",
        skipped=str(sum(o.action in (DEFERRED, WOULD_COPY) for o in outcomes)),
        time=f"{sum(o.seconds for o in outcomes):.3f}",
        timestamp=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
    )
    for outcome in outcomes:
        case = ElementTree.SubElement(
            suite,
            "testcase",
            classname=outcome.repository,
            name=outcome.task.tag,
            time=f"{outcome.seconds:.3f}",
        )
        if outcome.action == FAILED:
            failure = ElementTree.SubElement(case, "failure", message=outcome.error or "failed")
            failure.text = f"{outcome.task.source} -> {outcome.destination}: {outcome.error}"
        elif outcome.action in (DEFERRED, WOULD_COPY):
            why = outcome.error if outcome.action == DEFERRED else "dry run: would copy"
            ElementTree.SubElement(case, "skipped", message=why or outcome.action)
        else:
            output = ElementTree.SubElement(case, "system-out")
            output.text = f"{outcome.action} {outcome.task.source} {outcome.digest or ''}".strip()
    suites = ElementTree.Element("testsuites")
    suites.append(suite)
    ElementTree.indent(suites)
    body = ElementTree.tostring(suites, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
