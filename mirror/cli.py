"""The `mirror` command: argument parsing, one error handler, and the documented exit codes."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from mirror import __version__, config, lock, report
from mirror.engine import COPIED, DEFERRED, FAILED, UP_TO_DATE, Result, Task
from mirror.errors import ConfigError, Exit, MirrorError
from mirror.reference import BadReference, ImageRef, parse_reference
from mirror.run import Options, Stop, engine, signals_to

log = logging.getLogger("mirror")

EXIT_CODES = """\
exit codes:
  0    every image copied or already up to date
  1    at least one image failed (the others were still done)
  2    bad command line, config or credentials, or the machine cannot run mirror
  75   pull budget spent, rate limited (429) or another run holds the lock:
       nothing lost, run again later
  130  interrupted by SIGINT (Ctrl-C)
  143  terminated by SIGTERM
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    _setup_logging(verbose=args.verbose)
    try:
        return int(args.handler(args))
    except MirrorError as error:
        log.debug("traceback", exc_info=True)
        log.error("mirror: %s", error)
        return int(error.exit_code)
    except KeyboardInterrupt:
        log.error("mirror: interrupted")
        return int(Exit.INTERRUPTED)
    except Exception as error:  # a bug: still one line, the traceback with --verbose
        log.debug("traceback", exc_info=True)
        log.error(
            "mirror: internal error: %s: %s (run with -v for details)", type(error).__name__, error
        )
        return int(Exit.FAILED)


# --- commands ------------------------------------------------------------------------------------


def _validate(args: argparse.Namespace) -> int:
    loaded = config.load(config.config_path(args.config))
    count = sum(len(image.tags) for image in loaded.images)
    print(f"{loaded.path}: ok ({len(loaded.images)} images, {count} tags)")
    return Exit.OK


def _sync(args: argparse.Namespace) -> int:
    loaded = config.load(config.config_path(args.config))
    tasks = [
        Task(ImageRef(image.source, tag), loaded.destination_repository(image), tag)
        for image in loaded.images
        for tag in image.tags
    ]
    lock_path = Path(args.lock_file) if args.lock_file else lock.default_path(loaded.path)
    with lock.held(lock_path):
        result = _run(loaded, tasks, args, out=sys.stdout)
    return _exit_code(result)


def _ensure(args: argparse.Namespace) -> int:
    loaded = config.load(config.config_path(args.config))
    tasks = []
    for text in args.images:
        try:
            reference = parse_reference(text, default_registry=loaded.source.registry)
        except BadReference as error:
            raise ConfigError(f"{text!r}: {error}") from None
        repository = loaded.repository_for(reference.repository)
        tasks.append(Task(reference, repository, _tag(reference)))
    result = _run(loaded, tasks, args, out=sys.stderr)
    missing = [o for o in result.outcomes if o.action not in (COPIED, UP_TO_DATE)]
    if missing:
        return _exit_code(result)
    for outcome in result.outcomes:
        print(outcome.destination)
    return Exit.OK


def _tag(reference: ImageRef) -> str:
    """The destination tag: the source's, or for a digest-only name `sha256-<hex>`."""
    if reference.tag:
        return reference.tag
    algorithm, _, hexdigits = (reference.digest or "").partition(":")
    return f"{algorithm}-{hexdigits}"


def _run(
    loaded: config.Config, tasks: list[Task], args: argparse.Namespace, *, out: TextIO
) -> Result:
    options = Options(
        jobs=args.jobs,
        dry_run=getattr(args, "dry_run", False),
        max_pulls=getattr(args, "max_pulls", None),
    )
    started = time.monotonic()
    with signals_to(Stop()) as stop, engine(loaded, options, stop) as runner:
        result = runner.run(tasks)
    result.signum = stop.signum
    for outcome in result.outcomes:
        print(report.line(outcome), file=out)
    print(report.summary_line(result, time.monotonic() - started), file=out)
    budget = report.budget_line(result.budget)
    if budget:
        log.info("mirror: %s", budget)
    if args.report:
        report.write(Path(args.report), result)
    return result


def _exit_code(result: Result) -> int:
    if result.signum is not None:
        return Exit.INTERRUPTED if result.signum == signal.SIGINT else Exit.TERMINATED
    actions = {outcome.action for outcome in result.outcomes}
    if FAILED in actions:
        return Exit.FAILED
    if DEFERRED in actions:
        return Exit.TRY_LATER
    return Exit.OK


# --- parsing -------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mirror",
        description="Keep container base images in Amazon ECR, copied registry to registry with "
        "skopeo; unchanged images cost no Docker Hub pull.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mirror {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="config file (default: $MIRROR_CONFIG, else ./mirror.yaml)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks")

    running = argparse.ArgumentParser(add_help=False)
    running.add_argument(
        "--jobs", type=_positive, default=4, metavar="N", help="parallel checks and copies (4)"
    )
    running.add_argument("--report", metavar="FILE", help="write a JSON report to FILE")

    sync = commands.add_parser(
        "sync",
        parents=[common, running],
        help="mirror every image in the config",
        description="Mirror every image in the config. Unchanged images are found with HEAD "
        "requests, which cost no pull, and are not copied.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sync.add_argument(
        "--dry-run",
        action="store_true",
        help="only look (HEAD requests): no GET on the source, no write anywhere",
    )
    sync.add_argument(
        "--max-pulls",
        type=_whole,
        metavar="N",
        help="spend at most N pulls on the source in this run; the rest is deferred",
    )
    sync.add_argument(
        "--lock-file",
        metavar="PATH",
        help="lock held while syncing (default: one per config file in the temporary directory)",
    )
    sync.set_defaults(handler=_sync)

    ensure = commands.add_parser(
        "ensure",
        parents=[common, running],
        help="mirror the named images if missing or stale; print their ECR references",
        description="Mirror each IMAGE (written as after FROM in a Dockerfile) if it is missing "
        "or stale in ECR, then print its ECR reference, one per line, in order. Uses the "
        "config's source and ecr sections; the images need not be listed under images.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ensure.add_argument("images", nargs="+", metavar="IMAGE[:TAG]")
    ensure.set_defaults(handler=_ensure)

    validate = commands.add_parser(
        "validate",
        parents=[common],
        help="check the config file",
        description="Check the config file; exit 0 when it is valid, 2 when it is not.",
    )
    validate.set_defaults(handler=_validate)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return value


def _whole(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of 0 or more, got {text!r}")
    return value


def _setup_logging(*, verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False
