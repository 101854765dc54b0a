"""What a person (or CodeBuild's log, or cron's mail) reads while mirror runs.

Text by default, one JSON object per line with `--log-format json`. Lines carry an ISO-8601
timestamp when the output is not a terminal (cron, CodeBuild, systemd) or in JSON. `--quiet`
keeps only failures, errors and the summary.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, TextIO

from mirror.engine import FAILED, Outcome
from mirror.report import line


class Console:
    def __init__(
        self,
        *,
        out: TextIO,
        err: TextIO,
        json_lines: bool = False,
        timestamps: bool | None = None,
        quiet: bool = False,
    ):
        self.out, self.err = out, err
        self.json_lines = json_lines
        self.timestamps = (not _is_terminal(out)) if timestamps is None else timestamps
        self.quiet = quiet

    def moved_to_stderr(self) -> Console:
        """The same console writing its lines to stderr (for `ensure`, whose stdout is data)."""
        return Console(
            out=self.err,
            err=self.err,
            json_lines=self.json_lines,
            timestamps=self.timestamps,
            quiet=self.quiet,
        )

    def image(self, outcome: Outcome) -> None:
        """One line per image: action, source -> destination, short digest, seconds, error."""
        failed = outcome.action == FAILED
        if self.quiet and not failed:
            return
        self._emit(
            self.out,
            "error" if failed else "info",
            line(outcome),
            event="image",
            source=str(outcome.task.source),
            destination=outcome.destination,
            action=outcome.action,
            digest=outcome.digest,
            error=outcome.error,
            seconds=round(outcome.seconds, 3),
        )

    def summary(self, text: str, **fields: Any) -> None:
        self._emit(self.out, "info", text, event="summary", **fields)

    def info(self, text: str) -> None:
        if not self.quiet:
            self._emit(self.err, "info", f"mirror: {text}")

    def warning(self, text: str) -> None:
        self._emit(self.err, "warning", f"mirror: {text}")

    def error(self, text: str) -> None:
        self._emit(self.err, "error", f"mirror: {text}")

    def _emit(self, stream: TextIO, level: str, text: str, **fields: Any) -> None:
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if self.json_lines:
            stream.write(
                json.dumps({"time": now, "level": level, "message": text, **fields}) + "\n"
            )
        elif self.timestamps:
            stream.write(f"{now} {text}\n")
        else:
            stream.write(f"{text}\n")
        stream.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
