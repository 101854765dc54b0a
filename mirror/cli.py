"""The `mirror` command line: argparse, and the one error handler.

Each command is a module of mirror/commands/ (`run(args, console, stop) -> int`); an error it
raises becomes one line and an exit code of mirror.errors.EXIT_CODES (-v: the traceback too).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import logging
import os
import re
import sys
import textwrap
from collections.abc import Sequence
from typing import Any, NoReturn

from mirror import __version__
from mirror.commands import ENSURE_FORMATS, repos, sync, validate
from mirror.commands.run import Stop, signals_to
from mirror.console import Console, LogHandler
from mirror.errors import EXIT_CODES, Exit, MirrorError, bug_message
from mirror.model import SOURCE_DEADLINE, Refresh

log = logging.getLogger("mirror")

DRAIN_AFTER_SIGNAL = 2.0  # seconds a stopped run waits for a slow stdout before it leaves


def exit_code_text() -> str:
    """The exit-code table, as --help shows it."""
    lines = ["exit codes:"]
    for code, meaning in EXIT_CODES:
        wrapped = textwrap.wrap(meaning, 72)
        lines.append(f"  {int(code):<4} {wrapped[0]}")
        lines += [f"       {more}" for more in wrapped[1:]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    for stream in (sys.stdout, sys.stderr):  # a C-locale cron must not lose a line to Unicode
        if stream is not None and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = parse(argv)
    console = Console(
        out=sys.stderr if args.command == "ensure" else sys.stdout,
        err=sys.stderr,
        json_lines=args.log_format == "json",
        quiet=args.quiet,
    )
    _setup_log(console, verbose=args.verbose)
    stop = Stop()
    signals = args.command in ("sync", "ensure")
    deadline = getattr(args, "deadline", None)
    with signals_to(stop, deadline=deadline) if signals else contextlib.nullcontext(stop):
        code = _handled(args, console, stop)
        console.close()
        drained = _drained(console, stop)
        code = stop.exit_code or code  # a signal while the last lines were written counts too
        if not drained:
            os._exit(code)  # stdout does not drain after a signal: the report is written
    return code


def _handled(args: argparse.Namespace, console: Console, stop: Stop) -> int:
    try:
        return int(args.handler(args, console, stop))
    except MirrorError as error:
        log.debug("traceback", exc_info=True)
        console.error(str(error))
        return int(error.exit_code)
    except KeyboardInterrupt:
        console.error("interrupted")
        return int(Exit.INTERRUPTED)
    except Exception as error:  # a bug: still one line, the traceback with --verbose
        log.debug("traceback", exc_info=True)
        console.error(bug_message(error))
        return int(Exit.SOFTWARE)


def _drained(console: Console, stop: Stop) -> bool:
    while not console.closed(0.1):
        if stop.event.is_set():
            return console.closed(DRAIN_AFTER_SIGNAL)
    return True


# --- parsing -------------------------------------------------------------------------------------


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, global options merged: given before the command, after it, or both
    with the same value (a usage error, exit 2, when the two differ)."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "ensure" and not any(item.startswith("-") for item in extra):
        args.images += extra  # IMAGEs after an option: `ensure postgres:16 -q redis:7-alpine`
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    for name, default in GLOBAL_DEFAULTS.items():
        before = vars(args).pop(BEFORE + name, None)
        after = getattr(args, name, None)
        if before is not None and after is not None and not _same(name, before, after):
            flag = GLOBAL_FLAGS[name]
            parser.error(
                f"{flag} given before and after the command, as {before!r} and {after!r}: "
                "give it once"
            )
        setattr(args, name, next((v for v in (after, before) if v is not None), default))
    return args


# The options every command takes, before its name (`mirror -v sync`) or after it (`mirror
# sync -v`), as git and the aws CLI take theirs; their values when given nowhere.
GLOBAL_DEFAULTS: dict[str, Any] = {
    "config": None,
    "verbose": False,
    "log_format": "text",
    "quiet": False,
}
GLOBAL_FLAGS = {
    "config": "-c/--config",
    "verbose": "-v/--verbose",
    "log_format": "--log-format",
    "quiet": "-q/--quiet",
}
BEFORE = "before_"  # where the main parser keeps a global option given before the command


def _same(name: str, before: object, after: object) -> bool:
    """Do two values of a global option mean the same? Two spellings of one config file do."""
    if name == "config" and before and after:
        return os.path.realpath(str(before)) == os.path.realpath(str(after))
    return before == after


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (no usage block): `mirror sync: argument
    --jobs: expected ... (mirror sync --help)`, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(Exit.USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mirror",
        description="Keep container base images in Amazon ECR, copied registry to registry with "
        "skopeo; unchanged images cost no Docker Hub pull.",
        epilog=exit_code_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_global_options(prefix=BEFORE)],
    )
    parser.add_argument("--version", action="version", version=f"mirror {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _global_options()
    running = _running_options()
    _sync_parser(commands, [common, running])
    _ensure_parser(commands, [common, running])
    repos_parser = _command(
        commands,
        "repos",
        parents=[common],
        help="show how the ECR repositories differ from repository_settings; --apply fixes it",
        description="List the configured ECR repositories with the differences between their "
        "repository_settings and what ECR has. --apply changes what ECR allows changing "
        "(scan_on_push, tag_mutability, lifecycle_policy, tags); encryption is fixed at "
        "creation. A missing repository counts as a difference when create_repositories is "
        "false. Exit 0 when nothing differs (after --apply), else 1.",
    )
    repos_parser.add_argument(
        "--apply", action="store_true", help="bring ECR in line with the config"
    )
    repos_parser.set_defaults(handler=repos.run)
    validate_parser = _command(
        commands,
        "validate",
        parents=[common],
        help="check the config file (and the AWS settings sync would refuse)",
        description="Check the config file, and the AWS settings sync would refuse before it "
        "starts (AWS_REGION, AWS_PROFILE, the AWS files, a region for every target), without "
        "asking AWS; exit 0 when all is well, 2 when not (1 when stdout cannot be written).",
    )
    validate_parser.set_defaults(handler=validate.run)
    return parser


def _global_options(prefix: str = "") -> argparse.ArgumentParser:
    """-c, -v, --log-format, -q: stored only when given (`prefix` + name), so that `parse`
    can tell where each came from."""
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("global options (before or after the command)")
    suppress = argparse.SUPPRESS
    group.add_argument(
        "-c",
        "--config",
        dest=prefix + "config",
        default=suppress,
        metavar="FILE",
        help="config file (default: $MIRROR_CONFIG, else ./mirror.yaml)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        dest=prefix + "verbose",
        action="store_true",
        default=suppress,
        help="debug log on stderr: every registry request (method, host, path, status, ms), "
        "token requests (scope), skopeo command lines, retries and why, budget decisions; "
        "tracebacks. Never a credential",
    )
    group.add_argument(
        "--log-format",
        dest=prefix + "log_format",
        choices=("text", "json"),
        default=suppress,
        help="text (default; timestamped when not on a terminal) or json, one object per line",
    )
    group.add_argument(
        "-q",
        "--quiet",
        dest=prefix + "quiet",
        action="store_true",
        default=suppress,
        help="print only failures, warnings, errors and the summary",
    )
    return options


def _running_options() -> argparse.ArgumentParser:
    running = argparse.ArgumentParser(add_help=False)
    running.add_argument(
        "--jobs",
        type=_positive,
        default=4,
        metavar="N",
        help="copies at once (default 4); the HEAD checks run 4*N at once, at most 32",
    )
    running.add_argument(
        "--timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="the most a registry request of mirror's own may take, retries included "
        "(default 30, at most 3600), a copy's reads from the source too (a blob's must keep "
        "moving: 256 KiB at least per SECONDS); a host that does not answer in time is not "
        "asked again in this run (a copy's writes are skopeo's: each attempt at one is "
        "stopped after an hour, or at --deadline)",
    )
    running.add_argument(
        "--deadline",
        type=_duration,
        metavar="DURATION",
        help="stop the whole run this long after it starts (3300, 3300s, 55m, 1h30m; at most "
        "7 days): no work starts after it, what runs is cut off as on SIGTERM (skopeo "
        "included, and every retry), the report (and sync's metrics) are written, and what "
        "was not done is deferred (exit 75, or 1 if an image failed)",
    )
    running.add_argument("--report", metavar="FILE", help="write a JSON report to FILE")
    running.add_argument(
        "--junit", metavar="FILE", help="write a JUnit XML file (one test case per image)"
    )
    return running


def _sync_parser(commands: argparse._SubParsersAction[_Parser], parents: list[Any]) -> None:
    sync_parser = _command(
        commands,
        "sync",
        parents=parents,
        help="mirror every image in the config",
        description="Mirror every image in the config. Unchanged images are found with HEAD "
        "requests, which cost no pull, and are not copied. One line per image as it settles; "
        "on a terminal, a status line on stderr.",
    )
    sync_parser.add_argument(
        "--dry-run",
        action="store_true",
        help="only look (HEAD requests): no GET on the source, no write anywhere",
    )
    sync_parser.add_argument(
        "--max-pulls",
        type=_whole,
        metavar="N",
        help="spend at most N pulls on the sources in this run; the rest is deferred",
    )
    sync_parser.add_argument(
        "--shard",
        metavar="K/N",
        help=f"take only shard K of N (1-based; default ${sync.SHARD_ENV}, else 1/1): a stable "
        "split by destination, for parallel builds",
    )
    sync_parser.add_argument(
        "--lock-file",
        metavar="PATH",
        help="lock held while syncing (default: one per config file in mirror-locks-<uid>, "
        "a directory of $TMPDIR, else /tmp, only this user may enter); an existing file "
        "that is not a mirror lock is refused, never changed",
    )
    sync_parser.add_argument(
        "--metrics-file",
        metavar="PATH",
        help="write the run's figures as Prometheus text for node_exporter's textfile "
        "collector (a name ending in .prom), replaced atomically at the end of every run, "
        "failed, refused or stopped ones too; mirror_last_success_timestamp_seconds is carried "
        "over from the file it replaces",
    )
    sync_parser.add_argument(
        "--metrics-label",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a label on every sample of --metrics-file (repeatable): two configs (or "
        "shards) on one host need one each, as node_exporter refuses a series two files give; "
        "with --shard K/N, N > 1, shard=K/N is added",
    )
    sync_parser.add_argument(
        "--metrics-emf",
        action="store_true",
        help="print the run's figures as CloudWatch Embedded Metric Format lines (namespace "
        "mirror), the last lines on stdout, as they are (no timestamp): CodeBuild's log group "
        "turns them into metrics",
    )
    sync_parser.add_argument(
        "--rescan-referrers",
        action="store_true",
        help="look for the referrers (signatures, SBOMs, attestations) of every image now, "
        "up to date or pinned, each platform too (default: those copied, and an up-to-date "
        "one's at most once a day)",
    )
    sync_parser.set_defaults(handler=sync.run)


def _ensure_parser(commands: argparse._SubParsersAction[_Parser], parents: list[Any]) -> None:
    ensure_parser = _command(
        commands,
        "ensure",
        parents=parents,
        help="mirror the named images if missing or stale; print their ECR references",
        description="Mirror each IMAGE (written as after FROM in a Dockerfile), and each image "
        "a --dockerfile's build, a --compose file's services or a --manifest's pods pull, if "
        "missing or stale in ECR; then print the ECR references, or the file pointed at ECR. "
        "Uses the config's source and ecr sections; the images need not be listed under "
        "images. Progress goes to stderr; stdout has only the result. When ECR "
        "has a copy and the source cannot refresh it (pull budget spent, 429, login locked "
        "out, 5xx, no answer, unreachable, tag or repository gone), the copy is served: its "
        "reference is printed, exit 0, and one warning line on stderr names the image, the "
        "source's reason and the copy's age (`stale` in the report). It fails (non-zero, "
        "nothing on stdout) only when an image cannot be had at all.",
    )
    ensure_parser.add_argument("images", nargs="*", metavar="IMAGE[:TAG]")
    ensure_parser.add_argument(
        "--dockerfile",
        action="append",
        default=[],
        metavar="PATH",
        help="also mirror every image this Dockerfile pulls: the # syntax= frontend, FROM, "
        "COPY --from and RUN --mount from= images",
    )
    ensure_parser.add_argument(
        "--build-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a build argument for the Dockerfile's ARG defaults (repeatable); NAME alone "
        "takes its value from the environment, as docker build does",
    )
    ensure_parser.add_argument(
        "--compose",
        action="append",
        default=[],
        metavar="FILE",
        help="also mirror the image of each service of this Compose file that pulls one (not "
        "those with build:), variables filled in from the environment and the .env file "
        "beside it, as docker compose does",
    )
    ensure_parser.add_argument(
        "--manifest",
        action="append",
        default=[],
        metavar="FILE",
        help="also mirror every image the pods of this Kubernetes YAML pull (every document; "
        "containers, init and ephemeral containers, image volumes; helm template output)",
    )
    ensure_parser.add_argument(
        "--format",
        choices=ENSURE_FORMATS,
        default="refs",
        help="refs: one ECR reference per line, in order of first use (default); dockerfile, "
        "compose, manifest: that file with every image it pulls pointed at ECR, every other "
        "byte unchanged; build-args: --build-arg NAME=ref for a Dockerfile's images written as "
        "a whole ARG (and BUILDKIT_SYNTAX for the # syntax= frontend). A format that prints a "
        "file takes that file only",
    )
    ensure_parser.add_argument(
        "--refresh",
        type=_refresh,
        default=Refresh.IF_POSSIBLE,
        metavar="{always,if-possible,never}",
        help="if-possible (default): refresh from the source, but when ECR has a copy, wait "
        f"at most {SOURCE_DEADLINE:g} s (or --timeout) for the source and serve the copy, "
        "with a warning, when it cannot refresh it; always: an image that cannot be "
        "refreshed fails; never: serve what ECR has without asking the source (it is asked "
        "only for images ECR lacks). A pinned reference ECR holds never needs the source",
    )
    ensure_parser.set_defaults(handler=_ensure)


def _ensure(args: argparse.Namespace, console: Console, stop: Stop) -> int:
    """`ensure`, its module loaded only now: its Dockerfile, Compose and Kubernetes parsers
    are no part of another command's start-up (issue 18)."""
    from mirror.commands import ensure  # noqa: PLC0415 - deferred on purpose

    return ensure.run(args, console, stop)


def _command(
    commands: argparse._SubParsersAction[_Parser], name: str, **kwargs: Any
) -> argparse.ArgumentParser:
    """A sub-command whose --help ends with the exit codes."""
    return commands.add_parser(
        name,
        epilog=exit_code_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )


def _positive(text: str) -> int:
    # ASCII digits only: int() also takes ' 3', '+3', '3_0' and '٣'.
    value = int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return value


def _whole(text: str) -> int:
    # ASCII digits only: int() also takes ' 3', '+3', '3_0' and '٣'.
    value = int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of 0 or more, got {text!r}")
    return value


def _refresh(text: str) -> Refresh:
    """`--refresh`: always, if-possible or never, in any letter case (`if_possible` too)."""
    word = text.strip().lower().replace("_", "-")
    modes = [str(mode) for mode in Refresh]
    if word in modes:
        return Refresh(word)
    close = difflib.get_close_matches(word, modes, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else "expected " + ", ".join(modes)
    raise argparse.ArgumentTypeError(f"{text!r} is not a refresh mode ({hint})")


DEADLINE_MAX = 7 * 24 * 3600  # seconds: --deadline at most (a week; CodeBuild's is 8 h)
_DURATION = re.compile(r"(?:(\d{1,6})h)?(?:(\d{1,7})m)?(?:(\d{1,9}(?:\.\d{1,3})?)s)?")
_NUMBER = re.compile(r"\d{1,9}(?:\.\d{1,3})?")


def _duration(text: str) -> float:
    """`--deadline`: seconds (`3300`, `3300s`, `2.5s`), or hours and minutes (`55m`, `2h`,
    `1h30m`, `1h30m15s`); more than 0, at most DEADLINE_MAX."""
    text = text.strip()
    found = _DURATION.fullmatch(text if not _NUMBER.fullmatch(text) else f"{text}s")
    value = 0.0
    if text.isascii() and found and any(found.groups()):
        hours, minutes, seconds = (float(part or 0) for part in found.groups())
        value = hours * 3600 + minutes * 60 + seconds
    if not 0 < value <= DEADLINE_MAX:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 3300, 55m or 1h30m (more than 0, at most 7 days), "
            f"got {text!r}"
        )
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text) if text.isascii() else 0.0
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds between 0 and 3600, got {text!r}")
    return value


def _setup_log(console: Console, *, verbose: bool) -> None:
    log.handlers[:] = [LogHandler(console)]
    log.setLevel(logging.DEBUG if verbose else logging.WARNING)
    log.propagate = False
