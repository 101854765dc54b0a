"""What a person (or CodeBuild's log, or cron's mail) reads while mirror runs.

One line per image on stdout the moment its outcome is known, in the order they finish; the
summary last. Text by default, one JSON object per line with `--log-format json`. Text lines
carry an ISO-8601 timestamp when not on a terminal (cron, CodeBuild, systemd). `--quiet` keeps
only failures, errors and the summary. On a terminal, one status line on stderr is redrawn in
place and removed at the end; never on anything else.

One writer thread does all the writing, so a slow reader of stdout never holds up the work,
and a run told to stop can give up on a stdout that does not drain.
Text from outside (registry and skopeo messages) is printed on one line: control and format
characters are escaped, so a message cannot forge lines that look like mirror's own.
"""

from __future__ import annotations

import io
import json
import logging
import queue
import shutil
import threading
import unicodedata
from datetime import datetime, timezone
from typing import Any, TextIO

from mirror.errors import hide_passwords
from mirror.model import NOT_ASKED, Action, Attached, Outcome, Progress

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_LABELS = (
    (Action.COPIED, "copied"),
    (Action.UP_TO_DATE, "up to date"),
    (Action.WOULD_COPY, "would copy"),
    (Action.DEFERRED, "deferred"),
    (Action.FAILED, "failed"),
    (Action.STALE, "stale"),
)


_LEVELS = {Action.FAILED: "error", Action.STALE: "warning"}


def one_line(text: str) -> str:
    """`text` with control and format characters escaped (`\\n`, `\\x1b`, `\\u202e`), and any
    `user:password@` in a URL hidden."""
    text = hide_passwords(text)
    if text.isprintable():
        return text
    return "".join(_escape(char) for char in text)


def _escape(char: str) -> str:
    if char.isprintable() or char == " ":
        return char
    if char in _ESCAPES:
        return _ESCAPES[char]
    if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return char


def short(digest: str) -> str:
    algorithm, _, hexdigits = digest.partition(":")
    return f"{algorithm}:{hexdigits[:12]}"


def image_line(outcome: Outcome) -> str:
    """`copied      docker.io/library/ruby:3.3 -> host/repo:3.3  sha256:0123456789ab  1.2s`"""
    text = f"{outcome.action.value:<11} {outcome.source} -> {outcome.destination}"
    digest = shown_digest(outcome)
    if digest:
        text += f"  {short(digest)}"
    text += f"  {outcome.seconds:.1f}s"
    if outcome.error:
        text += f"  {outcome.error}"
    return one_line(text)


def referrers_line(attached: Attached) -> str:
    """`referrers   host/repo@sha256:0123456789ab  2 copied (application/spdx+json, ...)`"""
    text = f"{'referrers':<11} {attached.destination.rpartition('@')[0]}@"
    text += short(attached.destination.rpartition("@")[2])
    if attached.copied:
        kinds = ", ".join(dict.fromkeys(referrer.artifact_type for referrer in attached.copied))
        text += f"  {len(attached.copied)} copied ({kinds})"
    if attached.present:
        text += f"  {attached.present} already there"
    if attached.failed:
        text += f"  failed: {attached.failed}"
    elif attached.deferred:
        text += f"  deferred: {attached.deferred}"
    return one_line(text)


def shown_digest(outcome: Outcome) -> str | None:
    """The digest a line shows: what the target holds, or (would-copy) what it would get."""
    if outcome.action in (Action.COPIED, Action.UP_TO_DATE, Action.STALE):
        return outcome.destination_digest
    if outcome.action == Action.WOULD_COPY:
        return outcome.source_digest
    return None


def status_line(progress: Progress) -> str:
    """`[37/400] 12 copied · 25 up to date · 1 failed · 3 running · 41 pulls left`"""
    parts = [f"[{progress.done}/{progress.total}]"]
    for action, label in _LABELS:
        count = progress.counts.get(action, 0)
        if count or action in (Action.COPIED, Action.UP_TO_DATE):
            parts.append(f"{count} {label}")
    if progress.running:
        parts.append(f"{progress.running} running")
    if progress.pulls_left is not None:
        parts.append(f"{progress.pulls_left} pulls left")
    return parts[0] + " " + " · ".join(parts[1:])


class Console:
    """The lines of a run; safe to call from any thread. `close()` at the end."""

    def __init__(
        self,
        *,
        out: TextIO | None,
        err: TextIO | None,
        json_lines: bool = False,
        timestamps: bool | None = None,
        quiet: bool = False,
        status: bool | None = None,
    ):
        self.out, self.err = out or _Nowhere(), err or _Nowhere()  # a closed stdout is None
        self.json_lines = json_lines
        self.timestamps = (not _is_terminal(self.out)) if timestamps is None else timestamps
        self.quiet = quiet
        self.status = (_is_terminal(self.err) and not json_lines) if status is None else status
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._shown = ""  # the status line now on the terminal
        self._progress: Progress | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._closing = False
        self._writer = threading.Thread(target=self._write_all, name="console", daemon=True)
        self._writer.start()

    # --- a run's events -------------------------------------------------------------------------

    def settled(self, outcome: Outcome) -> None:
        """One line per image: action, source -> destination, short digest, seconds, error;
        then its warning, if it has one (also with --quiet). A stale copy served because the
        source could not refresh it is a warning."""
        level = _LEVELS.get(outcome.action, "info")
        if outcome.action == Action.STALE and outcome.error == NOT_ASKED:
            level = "info"  # --refresh never: what was asked for
        if not self.quiet or level != "info":
            self._image(outcome, level)
        if outcome.warning:
            self.warning(outcome.warning)

    def _image(self, outcome: Outcome, level: str) -> None:
        self._emit(
            self.out,
            level,
            image_line(outcome),
            event="image",
            source=outcome.source,
            destination=outcome.destination,
            action=outcome.action.value,
            source_digest=outcome.source_digest,
            destination_digest=outcome.destination_digest,
            error=outcome.error,
            seconds=round(outcome.seconds, 3),
        )

    def attached(self, attached: Attached) -> None:
        """One line for an image's referrers when some were copied, or some are left behind
        (deferred: a warning; failed: an error); nothing for an image without any."""
        if not (attached.copied or attached.deferred or attached.failed):
            return
        level = "error" if attached.failed else "warning" if attached.deferred else "info"
        if self.quiet and level == "info":
            return
        self._emit(
            self.out,
            level,
            referrers_line(attached),
            event="referrers",
            destination=attached.destination,
            copied=[
                {"digest": r.digest, "artifact_type": r.artifact_type, "tag": r.tag}
                for r in attached.copied
            ],
            present=attached.present,
            deferred=attached.deferred,
            error=attached.failed,
        )

    def progress(self, progress: Progress) -> None:
        """Redraw the status line (terminals only)."""
        if not self.status:
            return
        with self._lock:
            self._progress = progress
        self._queue.put(("status", None))

    def summary(self, text: str, **fields: Any) -> None:
        self._emit(self.out, "info", text, event="summary", **fields)

    def raw(self, text: str) -> None:
        """One line on stdout as it is: no timestamp, no JSON wrapping, also with --quiet (a
        CloudWatch EMF document, which CloudWatch Logs reads only as a whole log event)."""
        self._queue.put(("line", (self.out, text)))

    def info(self, text: str) -> None:
        if not self.quiet:
            self._emit(self.err, "info", f"mirror: {text}")

    def warning(self, text: str) -> None:
        self._emit(self.err, "warning", f"mirror: {text}")

    def error(self, text: str) -> None:
        self._emit(self.err, "error", f"mirror: {text}")

    def debug(self, text: str) -> None:
        self._emit(self.err, "debug", f"mirror: {text}")

    def close(self) -> None:
        """No more lines: write what is queued, then remove the status line."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        self._queue.put(("close", None))

    def closed(self, timeout: float | None = None) -> bool:
        """Wait for `close()` to be done; False if the stream did not drain in `timeout`."""
        return self._done.wait(timeout)

    # --- writing --------------------------------------------------------------------------------

    def _emit(self, stream: TextIO, level: str, text: str, **fields: Any) -> None:
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if self.json_lines:  # no secret in any field either
            shown = {k: hide_passwords(v) if isinstance(v, str) else v for k, v in fields.items()}
            line = json.dumps(
                {"time": now, "level": level, "message": hide_passwords(text), **shown}
            )
        else:
            line = one_line(text)
            if self.timestamps:
                line = f"{now} {line}"
        self._queue.put(("line", (stream, line)))

    def _write_all(self) -> None:
        while True:
            kind, item = self._queue.get()
            try:
                if kind == "line":
                    stream, line = item
                    self._clear_status()
                    _put(stream, line + "\n")
                    self._draw_status()
                elif kind == "status":
                    self._draw_status()
                else:  # close
                    self._clear_status()
                    self._done.set()
                    return
            except Exception:
                if kind == "close":
                    self._done.set()
                    return

    def _draw_status(self) -> None:
        if not self.status:
            return
        with self._lock:
            progress = self._progress
        if progress is None:
            return
        width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
        text = status_line(progress)[:width]
        if text != self._shown:
            _put(self.err, "\r\x1b[K" + text)
            self._shown = text

    def _clear_status(self) -> None:
        if self._shown:
            _put(self.err, "\r\x1b[K")
            self._shown = ""


class LogHandler(logging.Handler):
    """Routes mirror's debug log (`-v`) through the console, so it shares its format."""

    def __init__(self, console: Console):
        super().__init__(logging.DEBUG)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        say = self.console.warning if record.levelno >= logging.WARNING else self.console.debug
        say(record.getMessage())
        if record.exc_info:
            for line in logging.Formatter().formatException(record.exc_info).splitlines():
                say(line)


class _Nowhere(io.StringIO):
    """Where lines go when there is no stream to write them to."""


def _put(stream: TextIO, text: str) -> None:
    stream.write(text)
    stream.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
