"""`python -m mirror`, and the `mirror` command's entry point.

A signal that comes while Python is still importing mirror ends it quietly with the usual
status (130, 143) rather than a traceback: no run has started, so there is nothing to report.
"""

from __future__ import annotations

import signal
import sys


def run() -> None:
    def early(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, early)
    from mirror.cli import main  # noqa: PLC0415 - after the handlers: importing takes a while

    sys.exit(main())


if __name__ == "__main__":
    run()
