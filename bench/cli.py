"""What the issue-18 benchmarks' command lines share: the versions of mirror to run, where
results and scratch files go, the load average, and a time-stamped progress line on stderr."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import time
from pathlib import Path

from bench.versions import Version, resolve, spec


def parser(
    prog: str, doc: str | None, *, out: str, work: str, keep: bool = True
) -> argparse.ArgumentParser:
    """A parser with ``--mirror LABEL=WHERE`` (repeatable), ``--out``, ``--work`` and, with
    ``keep``, ``--keep``; the description is the first line of ``doc``."""
    made = argparse.ArgumentParser(prog=prog, description=(doc or "").splitlines()[0])
    made.add_argument(
        "--mirror",
        type=spec,
        action="append",
        default=[],
        metavar="LABEL=WHERE",
        help="a version to measure: worktree, a directory or a git revision (repeatable)",
    )
    made.add_argument("--out", default=out, help=f"results directory (default {out})")
    made.add_argument("--work", help=f"scratch directory (default: {work})")
    if keep:
        made.add_argument("--keep", action="store_true", help="keep the registries' data")
    return made


def prepare(args: argparse.Namespace, scratch: str) -> tuple[Path, Path, list[Version]]:
    """(the results directory, an empty scratch directory: ``--work`` or OUT/``scratch``, the
    versions of ``--mirror`` made ready to run)."""
    out = Path(args.out).resolve()
    work = Path(args.work).resolve() if args.work else out / scratch
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return out, work, resolve(args.mirror, work)


def load_average() -> str:
    """/proc/loadavg as it is: how busy the machine was when a figure was taken."""
    with contextlib.suppress(OSError):
        return Path("/proc/loadavg").read_text().strip()
    return "unknown"


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)
