"""The commands, one module each: `sync`, `ensure`, `repos`, `validate`, and `run`, what sync
and ensure share (a run from the config to the report). Each command is
`run(args, console, stop) -> int`; mirror/cli.py parses the command line, calls it and handles
its errors (one handler, the exit codes of mirror.errors).
"""

from __future__ import annotations

import sys

from mirror.errors import MirrorError

# `ensure --format`: here, so the command line knows them without loading ensure's parsers
ENSURE_FORMATS = ("refs", "dockerfile", "build-args", "compose", "manifest")


def write_result(output: str) -> None:
    """A command's result on stdout, byte for byte (a Dockerfile's bytes that are not UTF-8
    included); MirrorError (exit 1) when stdout is closed, full or gone."""
    try:
        sys.stdout.flush()
        sys.stdout.buffer.write(output.encode("utf-8", "surrogateescape"))
        sys.stdout.buffer.flush()
    except (OSError, AttributeError) as error:  # closed, full or gone: say so, once
        why = getattr(error, "strerror", None) or "closed"
        raise MirrorError(f"cannot write the result to stdout: {why}") from None
