"""What a run leaves behind: the summary line, the JSON report and the JUnit file.

Every run that gets past argument parsing writes them (when asked), also when it stops early:
then `error` says why and the images not done are `deferred` or `failed`. Entries keep config
order, whatever order the work finished in. Files are replaced atomically.

They are files only the run's user controls: a symbolic link on the way that belongs to
another user (not root) is not followed, nor is a directory another user owns written in, and
a file written is never group- or world-writable (a report another user made with mode 0666
is replaced by one of the run's own).
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from mirror.console import one_line
from mirror.errors import ConfigError, MirrorError, hide_passwords, user_named
from mirror.model import Action, Attached, HostBudget, Mounting, Outcome
from mirror.mounts import size_text


@dataclass(frozen=True)
class Report:
    """One run, as the report and the JUnit file tell it."""

    outcomes: Sequence[Outcome]  # config order
    budgets: Sequence[HostBudget] = ()
    warnings: Sequence[str] = ()
    error: str | None = None  # why the run stopped early, if it did
    exit_code: int = 0
    seconds: float = 0.0
    throttled: int = 0  # 429s the destinations sent, each waited out and sent again
    started: datetime | None = None  # when the run started and ended (UTC): a report left
    ended: datetime | None = None  # by a run killed later is told apart by its dates
    attached: Sequence[Attached] = ()  # what travelled with each image (its referrers)
    mounting: Sequence[Mounting] = ()  # layer reuse in each target registry


def summary(outcomes: Sequence[Outcome]) -> dict[str, int]:
    counts = Counter(outcome.action for outcome in outcomes)
    return {action.value: counts[action] for action in Action if counts[action]}


def summary_line(report: Report) -> str:
    """`2 copied, 5 up-to-date (7 images in 3.1s)`"""
    counts = summary(report.outcomes)
    parts = ", ".join(f"{count} {action}" for action, count in counts.items()) or "nothing to do"
    images = "image" if len(report.outcomes) == 1 else "images"
    return f"{parts} ({len(report.outcomes)} {images} in {report.seconds:.1f}s)"


def budget_lines(budgets: Sequence[HostBudget]) -> list[str]:
    """`pull budget of docker.io: 76 of 100 left at the start, 70 at the end` per limited host."""
    return [
        f"pull budget of {budget.host}: {budget.start.remaining} of {budget.start.limit} left at "
        f"the start, {budget.last.remaining} at the end"
        for budget in budgets
        if budget.start is not None and budget.last is not None
    ]


def referrers_summary(attached: Sequence[Attached]) -> str | None:
    """`referrers: 5 copied for 3 images; deferred for 1 image` (None: nothing to say)."""
    copied = sum(len(item.copied) for item in attached)
    parts = [f"{copied} copied for {_images(sum(bool(item.copied) for item in attached))}"]
    parts = parts if copied else []
    for what, count in (
        ("deferred", sum(bool(item.deferred) for item in attached)),
        ("failed", sum(bool(item.failed) for item in attached)),
    ):
        if count:
            parts.append(f"{what} for {_images(count)}")
    return f"referrers: {'; '.join(parts)}" if parts else None


def mount_lines(mounting: Sequence[Mounting]) -> list[str]:
    """`layers: 35.0 MB mounted from other repositories of <host> instead of uploaded (7
    blobs)`, per registry where mirror mounted any."""
    return [
        f"layers: {size_text(figures.mounted_bytes)} mounted from other repositories of "
        f"{figures.registry} instead of uploaded ({figures.mounts} "
        f"blob{'s' if figures.mounts != 1 else ''})"
        for figures in mounting
        if figures.mounts
    ]


def _images(count: int) -> str:
    return f"{count} image{'s' if count != 1 else ''}"


def _referrers(item: Attached | None) -> dict[str, Any] | None:
    if item is None:
        return None
    return {
        "copied": [
            {
                "digest": referrer.digest,
                "artifact_type": referrer.artifact_type,
                "subject": referrer.subject,
                "tag": referrer.tag,
            }
            for referrer in item.copied
        ],
        "already_there": item.present,
        "deferred": item.deferred,
        "error": None if item.failed is None else hide_passwords(item.failed),
    }


def document(report: Report) -> dict[str, Any]:
    """The JSON report (README's "The report" documents every field)."""
    attached = {key: item for item in report.attached for key in item.keys}
    return {
        "started": utc_text(report.started),
        "ended": utc_text(report.ended),
        "exit_code": report.exit_code,
        "error": None if report.error is None else hide_passwords(report.error),
        "images": [
            {
                "source": outcome.source,
                "destination": outcome.destination,
                "action": outcome.action.value,
                "source_digest": outcome.source_digest,
                "destination_digest": outcome.destination_digest,
                "error": None if outcome.error is None else hide_passwords(outcome.error),
                "seconds": round(outcome.seconds, 3),
                "verified": outcome.verified,
                "mounted_bytes": outcome.mounted_bytes,
                "referrers": _referrers(attached.get((outcome.order, outcome.target))),
            }
            for outcome in report.outcomes
        ],
        "summary": summary(report.outcomes),
        "warnings": [hide_passwords(warning) for warning in report.warnings],
        "rate_limit": {
            budget.host: {
                "limit": None if budget.start is None else budget.start.limit,
                "remaining_at_start": None if budget.start is None else budget.start.remaining,
                "remaining": None if budget.last is None else budget.last.remaining,
                "spent": budget.spent,
                "rate_limited": budget.limited,
            }
            for budget in report.budgets
        },
        "blob_mounting": {
            figures.registry: {
                "mounts": figures.mounts,
                "mounted_bytes": figures.mounted_bytes,
                "refused": figures.refused,
                "could_have_saved_bytes": figures.unmounted_bytes,
                "error": None if figures.failed is None else hide_passwords(figures.failed),
            }
            for figures in report.mounting
        },
        "throttled_requests": report.throttled,
        "seconds": round(report.seconds, 3),
    }


def utc_text(moment: datetime | None) -> str | None:
    """ISO-8601 in UTC with milliseconds, as the log lines: `2026-01-15T03:17:00.042Z`."""
    if moment is None:
        return None
    utc = moment.astimezone(timezone.utc)
    return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write(path: Path, report: Report) -> None:
    """Write the JSON report atomically: a reader never sees half a file."""
    write_atomically(path, json.dumps(document(report), indent=2) + "\n")


def write_junit(path: Path, report: Report) -> None:
    """Write the JUnit XML file CodeBuild's Reports tab reads (file-format: JUNITXML)."""
    write_atomically(path, junit(report))


def junit(report: Report) -> str:
    """One test case per image and target: class = destination repository, name = tag.

    failed -> <failure> with the cause; deferred and would-copy -> <skipped> with why; stale
    (ensure served ECR's copy) passes, saying why in <system-out>. A run that stopped early
    says why in the suite's <system-err>.
    """
    outcomes = report.outcomes
    stopped = bool(report.error and not outcomes)  # before any image was known: one case
    suite = ElementTree.Element(
        "testsuite",
        name="mirror",
        tests=str(len(outcomes) + stopped),
        failures=str(sum(o.action == Action.FAILED for o in outcomes)),
        errors=str(int(stopped)),
        skipped=str(sum(o.action in (Action.DEFERRED, Action.WOULD_COPY) for o in outcomes)),
        time=f"{sum(o.seconds for o in outcomes):.3f}",
        timestamp=(report.started or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S"),
    )
    for outcome in outcomes:
        _case(suite, outcome)
    if stopped:
        case = ElementTree.SubElement(suite, "testcase", classname="mirror", name="run", time="0")
        ElementTree.SubElement(case, "error", message=one_line(report.error or ""))
    if report.error:
        ElementTree.SubElement(suite, "system-err").text = one_line(report.error)
    suites = ElementTree.Element("testsuites")
    suites.append(suite)
    ElementTree.indent(suites)
    body = ElementTree.tostring(suites, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'


def _case(suite: ElementTree.Element, outcome: Outcome) -> None:
    case = ElementTree.SubElement(
        suite,
        "testcase",
        classname=outcome.repository,
        name=outcome.tag or "(tag rule)",
        time=f"{outcome.seconds:.3f}",
    )
    error = one_line(outcome.error or "")  # XML cannot hold most control characters
    if outcome.action == Action.FAILED:
        failure = ElementTree.SubElement(case, "failure", message=error or "failed")
        failure.text = f"{outcome.source} -> {outcome.destination}: {error}"
    elif outcome.action in (Action.DEFERRED, Action.WOULD_COPY):
        why = error if outcome.action == Action.DEFERRED else "dry run: would copy"
        ElementTree.SubElement(case, "skipped", message=why or outcome.action.value)
    else:  # copied, up to date, or stale (served as it is: passed, and it says why)
        output = ElementTree.SubElement(case, "system-out")
        output.text = (
            f"{outcome.action} {outcome.source} {outcome.destination_digest or ''}".strip()
        )
        if error:
            output.text += f": {error}"


def usable(path: Path, option: str, *, junit: bool = False, metrics: bool = False) -> Path:
    """Check, before anything is done, that a report (or with `junit`, a JUnit file; with
    `metrics`, a Prometheus metrics file) can be written at `path` (by making and removing a
    file beside it), and that what is there is an earlier one: mirror replaces only its own
    files, never a config or a Dockerfile named by mistake. Return the path to write
    (symbolic links of the user's own, or root's, followed). Raises ConfigError (exit 2)
    naming the option and the problem."""
    where = f"{option} {path}"
    resolved = safe_path(path, where)
    if resolved.is_dir():
        raise ConfigError(f"{where}: is a directory; name a file")
    if resolved.exists() and not resolved.is_file():
        raise ConfigError(f"{where}: not a regular file")
    if resolved.is_file() and not _ours(resolved, junit=junit, metrics=metrics):
        what = "JUnit file" if junit else "metrics file" if metrics else "report"
        raise ConfigError(
            f"{where}: exists and is not a mirror {what}; name another path (mirror replaces "
            "only its own files)"
        )
    if not resolved.parent.is_dir():
        raise ConfigError(f"{where}: directory {resolved.parent} does not exist")
    _check_directory(resolved.parent, where)
    try:
        descriptor, probe = tempfile.mkstemp(dir=resolved.parent, prefix=f".{resolved.name}.")
    except OSError as error:
        raise ConfigError(f"{where}: cannot write in {resolved.parent}: {error.strerror}") from None
    os.close(descriptor)
    os.unlink(probe)
    return resolved


def safe_path(path: Path, where: str) -> Path:
    """`path` made absolute with its symbolic links followed, as the kernel would, except
    that a link belonging to another user than this one or root is refused (ConfigError): in
    /tmp, such a link would choose the file mirror creates or replaces."""
    trusted = {0, os.geteuid()}
    parts = list(reversed(Path(os.path.abspath(path)).parts[1:]))
    done = Path("/")
    hops = 0
    while parts:
        name = parts.pop()
        here = done / name
        try:
            info = os.lstat(here)
        except OSError:  # missing: the rest is created (or refused) later
            return here.joinpath(*reversed(parts))
        if not stat.S_ISLNK(info.st_mode):
            done = here if name not in (".", "..") else Path(os.path.normpath(here))
            continue
        if info.st_uid not in trusted:
            raise ConfigError(
                f"{where}: {here} is a symbolic link of {user_named(info.st_uid)}, another user: "
                "not followed (it would choose the file mirror writes)"
            )
        hops += 1
        if hops > 40:
            raise ConfigError(f"{where}: too many levels of symbolic links")
        target = Path(os.readlink(here))
        parts.extend(reversed(target.parts[1:] if target.is_absolute() else target.parts))
        if target.is_absolute():
            done = Path("/")
    return done


def _check_directory(directory: Path, where: str) -> None:
    """Refuse a directory another user owns, or one others may write in without the sticky
    bit (/tmp has it): there, another user could replace what mirror writes."""
    info = os.stat(directory)
    if info.st_uid not in (0, os.geteuid()):
        raise ConfigError(
            f"{where}: directory {directory} belongs to {user_named(info.st_uid)}, another user, "
            "who could replace what mirror writes there"
        )
    if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
        raise ConfigError(
            f"{where}: directory {directory} is writable by every user (and not sticky, as "
            "/tmp is): another user could replace what mirror writes there"
        )


def _ours(path: Path, *, junit: bool, metrics: bool) -> bool:
    """Is the file empty, or one mirror wrote (a JSON report, a JUnit file, metrics)?"""
    try:
        with path.open("rb") as handle:
            head = handle.read(4096)
    except OSError:
        return True  # unreadable: the write will say what is wrong
    if not head.strip():
        return True
    if metrics:
        return head.startswith(b"# HELP mirror_")
    if junit:
        return head.lstrip().startswith(b"<?xml") and b'<testsuite name="mirror"' in head
    return head.lstrip().startswith(b"{") and (b'"images"' in head or b'"exit_code"' in head)


def write_atomically(path: Path, text: str, *, mode: int | None = None) -> None:
    """Replace `path` with `text` at once (a temporary file beside it, renamed over it), so
    a reader never sees half a file. The new file has `mode`, else the mode of the file it
    replaces (a new one gets the umask's), never group- or world-writable. `path` must be
    what `usable` returned: a symbolic link put on the way since is refused. MirrorError
    (exit 1: the run's work is done, its record is not) when it cannot."""
    try:
        moved = safe_path(path, f"cannot write {path}") != path
    except ConfigError as error:
        raise MirrorError(str(error)) from None
    if moved:  # a symbolic link put on the way during the run
        raise MirrorError(f"cannot write {path}: a symbolic link now leads elsewhere")
    try:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as error:
        raise MirrorError(f"cannot write {path}: {error.strerror}") from None
    try:
        os.fchmod(descriptor, (_mode_for(path) if mode is None else mode) & ~0o022)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise MirrorError(f"cannot write {path}: {error.strerror}") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _mode_for(path: Path) -> int:
    """The mode of the file replaced (a new one: the umask's), never group- or
    world-writable."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    return mode & ~0o022
