"""The `mirror` command: parses arguments, hands the work to mirror/run.py, prints the result.

One error handler; the exit codes are mirror.errors.EXIT_CODES.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import logging
import os
import stat
import sys
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

from mirror import __version__, aws, config, dockerfile, lock, report
from mirror.connect import region_of
from mirror.console import Console, LogHandler
from mirror.errors import EXIT_CODES, ConfigError, Exit, MirrorError, bug_message
from mirror.model import Action
from mirror.plan import Shard, plan_names
from mirror.repos import RepositoryState, repository_states
from mirror.run import FixedPlanner, Options, Stop, SyncPlanner, execute, signals_to, write_reports
from mirror.stale import SOURCE_DEADLINE, Refresh

log = logging.getLogger("mirror")

SHARD_ENV = "MIRROR_SHARD"
SERVED = (Action.COPIED, Action.UP_TO_DATE, Action.STALE)  # what ensure prints a reference for
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
    args = _parser().parse_args(argv)
    console = Console(
        out=sys.stderr if args.command == "ensure" else sys.stdout,
        err=sys.stderr,
        json_lines=getattr(args, "log_format", "text") == "json",
        quiet=getattr(args, "quiet", False),
    )
    _setup_log(console, verbose=args.verbose)
    stop = Stop()
    signals = args.command in ("sync", "ensure")
    with signals_to(stop) if signals else contextlib.nullcontext(stop):
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


# --- commands ------------------------------------------------------------------------------------


def _validate(args: argparse.Namespace, console: Console, stop: Stop) -> int:
    loaded = config.load(config.config_path(args.config))
    aws.check_environment()  # what sync would refuse before it starts, without asking AWS
    for target in loaded.targets:
        region_of(loaded, target)
    count = sum(len(image.tags) for image in loaded.images)
    rules = sum(image.rule is not None for image in loaded.images)
    text = f"{loaded.path}: ok ({_count(len(loaded.images), 'image')}, {_count(count, 'tag')}"
    text += f", {_count(rules, 'tag rule')})" if rules else ")"
    _write_result(text + "\n")
    return Exit.OK


def _sync(args: argparse.Namespace, console: Console, stop: Stop) -> int:
    options = _options(args)
    with _reported(options):
        shard = parse_shard(args.shard or os.environ.get(SHARD_ENV) or "1/1")
        loaded = config.load(config.config_path(args.config))
        lock_path = Path(args.lock_file) if args.lock_file else lock.default_path(loaded.path)
    if lock_path.resolve() in (options.report, options.junit):
        raise ConfigError(f"--lock-file {lock_path}: also named by --report or --junit")
    done = execute(
        loaded,
        SyncPlanner(loaded, shard),
        options,
        console,
        stop,
        lock_path=lock_path,
        lock_option="--lock-file" if args.lock_file else lock.DEFAULT_OPTION,
    )
    if done.report.error:
        console.error(done.report.error)
    return done.exit_code


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}" + ("" if number == 1 else "s")


def _ensure(args: argparse.Namespace, console: Console, stop: Stop) -> int:
    options = replace(_options(args), refresh=args.refresh, check_logins=False)
    with _reported(options):
        loaded = config.load(config.config_path(args.config))
        names, text, lines = _ensure_names(args)
        fixed, by_name = plan_names(loaded, names)
    if not names:  # a Dockerfile that pulls nothing (FROM scratch): nothing to mirror
        _write_result(_ensure_output(args.format, text, lines, {}, names))
        return Exit.OK
    done = execute(loaded, FixedPlanner(fixed), options, console, stop)
    if done.report.error:
        console.error(done.report.error)
    if done.exit_code != Exit.OK or any(outcome.action not in SERVED for outcome in done.outcomes):
        return done.exit_code or Exit.FAILED
    # With several targets, the first one's reference: the registry builds pull from.
    first = {o.order: o.destination for o in done.outcomes if o.target == 0}
    mapping = {name: wanted.reference(first[wanted.task.order]) for name, wanted in by_name.items()}
    if args.format == "build-args" and (left := dockerfile.not_by_build_args(lines)):
        console.warning(
            f"--format build-args cannot point {len(left)} image(s) at ECR (not written as a "
            f"whole ARG): {', '.join(left)}; the build still pulls them from their registry: "
            "use --format dockerfile for those"
        )
    _write_result(_ensure_output(args.format, text, lines, mapping, names))
    return Exit.OK


def _write_result(output: str) -> None:
    """A command's result on stdout, byte for byte (a Dockerfile's bytes that are not UTF-8
    included); MirrorError (exit 1) when stdout is closed, full or gone."""
    try:
        sys.stdout.flush()
        sys.stdout.buffer.write(output.encode("utf-8", "surrogateescape"))
        sys.stdout.buffer.flush()
    except (OSError, AttributeError) as error:  # closed, full or gone: say so, once
        why = getattr(error, "strerror", None) or "closed"
        raise MirrorError(f"cannot write the result to stdout: {why}") from None


def _ensure_names(args: argparse.Namespace) -> tuple[list[str], str, list[dockerfile.ImageUse]]:
    lines: list[dockerfile.ImageUse] = []
    text = ""
    names = list(args.images)
    if len(args.dockerfile) > 1:
        raise ConfigError(
            f"--dockerfile given {len(args.dockerfile)} times: give one (the result is one "
            "Dockerfile); name a second one's images in another ensure"
        )
    if args.dockerfile:
        text, lines = _read_dockerfile(Path(args.dockerfile[0]), args.build_arg)
        names += dockerfile.images(lines)
    elif args.format != "refs":
        raise ConfigError(f"--format {args.format} needs --dockerfile")
    elif args.build_arg:
        raise ConfigError("--build-arg needs --dockerfile: build args are for its ARGs")
    if not names and not args.dockerfile:
        raise ConfigError("name at least one IMAGE, or a --dockerfile")
    return names, text, lines


@contextlib.contextmanager
def _reported(options: Options) -> Iterator[None]:
    """A usage or config error before the run starts still leaves a report saying so."""
    try:
        yield
    except MirrorError as error:
        now = datetime.now(timezone.utc)  # it ended where it started
        done = report.Report(
            (), error=str(error), exit_code=error.exit_code, started=now, ended=now
        )
        write_reports(done, options)
        raise


def _options(args: argparse.Namespace) -> Options:
    """The run's options; --report and --junit are checked here, before anything is done."""
    written = report.usable(Path(args.report), "--report") if args.report else None
    junit = report.usable(Path(args.junit), "--junit", junit=True) if args.junit else None
    if written is not None and written == junit:
        raise ConfigError(f"--report and --junit name the same file, {args.report}")
    return Options(
        jobs=args.jobs,
        dry_run=getattr(args, "dry_run", False),
        max_pulls=getattr(args, "max_pulls", None),
        timeout=args.timeout,
        report=written,
        junit=junit,
    )


def _ensure_output(
    form: str,
    text: str,
    lines: list[dockerfile.ImageUse],
    mapping: dict[str, str],
    names: list[str],
) -> str:
    if form == "dockerfile":
        return dockerfile.rewrite(text, lines, mapping)
    if form == "build-args":
        pairs = dockerfile.build_args(lines, mapping)
        return " ".join(f"--build-arg {name}={reference}" for name, reference in pairs) + "\n"
    ordered = list(dict.fromkeys(mapping[name] for name in names))
    return "".join(f"{reference}\n" for reference in ordered)


def _read_dockerfile(path: Path, build_args: list[str]) -> tuple[str, list[dockerfile.ImageUse]]:
    overrides = {}
    for item in build_args:
        name, equals, value = item.partition("=")
        if not name:
            raise ConfigError(f"--build-arg {item!r}: expected NAME=VALUE or NAME")
        if equals:
            overrides[name] = value
        elif name in os.environ:  # as docker build: NAME alone takes the environment's value
            overrides[name] = os.environ[name]
    raw = read_dockerfile(path)
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(f"{path}: UTF-16 text; BuildKit reads a Dockerfile as UTF-8")
    # Bytes that are not UTF-8 (a Latin-1 comment) are carried through as they are, and
    # CRLF stays CRLF: --format dockerfile changes nothing but the image texts.
    text = raw.decode("utf-8", "surrogateescape")
    try:
        return text, dockerfile.parse(text, overrides)
    except dockerfile.DockerfileError as error:
        raise ConfigError(f"{path}: {error}") from None


def read_dockerfile(path: Path) -> bytes:
    """A Dockerfile's bytes: a regular file (through a symbolic link is fine) of at most
    dockerfile.MAX_SIZE bytes. A FIFO, a device (/dev/zero), a socket or a directory is
    refused at once, without being opened (opening a device can act: /dev/watchdog arms a
    reboot) and without a wait; ConfigError naming the file."""
    not_regular = ConfigError(f"{path}: not a regular file (a Dockerfile is one)")
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise not_regular
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):  # swapped since the look
            raise not_regular
        try:
            raw = handle.read(dockerfile.MAX_SIZE + 1)
        except OSError as error:
            raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    if len(raw) > dockerfile.MAX_SIZE:
        raise ConfigError(
            f"{path}: over {dockerfile.MAX_SIZE >> 20} MiB: not read (a Dockerfile is a few kB)"
        )
    return raw


def parse_shard(text: str) -> Shard:
    """`K/N`, 1-based: this run takes shard K of N."""
    index, _, count = text.partition("/")
    # ASCII digits only, and few: str.isdigit and int() take '²' and '٣'; int() refuses 5,000.
    digits = all(part.isascii() and part.isdigit() and len(part) <= 9 for part in (index, count))
    if not (digits and 1 <= int(index) <= int(count)):
        raise ConfigError(f"--shard / ${SHARD_ENV}: expected K/N with 1 <= K <= N, got {text!r}")
    return Shard(int(index), int(count))


def _repos(args: argparse.Namespace, console: Console, stop: Stop) -> int:
    """List the configured repositories with their drift from the config; --apply fixes it."""
    loaded = config.load(config.config_path(args.config))
    states = repository_states(loaded, apply=args.apply)
    lines = [item for state in states for item in _repository_lines(state)]
    left = sum(problem for _, problem in lines)
    changed = sum(len(state.applied) for state in states)
    total = f"{len(states)} repositories, {left} differences left"
    total += f", {changed} settings changed" if args.apply else ""
    _write_result("".join(f"{line}\n" for line, _ in lines) + total + "\n")
    return Exit.FAILED if left else Exit.OK


def _repository_lines(state: RepositoryState) -> list[tuple[str, bool]]:
    """(line, still a problem) for one repository."""
    where = f"{state.target}: {state.name}"
    if state.missing and not state.creatable:
        why = "create_repositories is false: its images fail until someone creates it"
        return [(f"missing     {where} ({why})", True)]
    if state.missing:
        return [
            (f"missing     {where} (mirror creates it, with its settings, on first copy)", False)
        ]
    if not state.drifts:
        return [(f"ok          {where}", False)]
    lines = []
    for item in state.drifts:
        fixed = item.setting in state.applied
        label = "fixed" if fixed else ("drift" if item.fixable else "cannot-fix")
        note = "" if item.fixable else " (ECR cannot change it after creation)"
        lines.append(
            (
                f"{label:<11} {where} {item.setting}: wanted {item.wanted}, "
                f"ECR has {item.actual}{note}",
                not fixed,
            )
        )
    return lines


# --- parsing -------------------------------------------------------------------------------------


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
    )
    parser.add_argument("--version", action="version", version=f"mirror {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_options()
    running = _running_options()
    _sync_parser(commands, [common, running])
    _ensure_parser(commands, [common, running])
    repos = _command(
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
    repos.add_argument("--apply", action="store_true", help="bring ECR in line with the config")
    repos.set_defaults(handler=_repos)
    validate = _command(
        commands,
        "validate",
        parents=[common],
        help="check the config file (and the AWS settings sync would refuse)",
        description="Check the config file, and the AWS settings sync would refuse before it "
        "starts (AWS_REGION, AWS_PROFILE, the AWS files, a region for every target), without "
        "asking AWS; exit 0 when all is well, 2 when not (1 when stdout cannot be written).",
    )
    validate.set_defaults(handler=_validate)
    return parser


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="config file (default: $MIRROR_CONFIG, else ./mirror.yaml)",
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="debug log on stderr: every registry request (method, host, path, status, ms), "
        "token requests (scope), skopeo command lines, retries and why, budget decisions; "
        "tracebacks. Never a credential",
    )
    return common


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
        "stopped after an hour)",
    )
    running.add_argument("--report", metavar="FILE", help="write a JSON report to FILE")
    running.add_argument(
        "--junit", metavar="FILE", help="write a JUnit XML file (one test case per image)"
    )
    running.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text (default; timestamped when not on a terminal) or json, one object per line",
    )
    running.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print only failures, warnings, errors and the summary",
    )
    return running


def _sync_parser(commands: argparse._SubParsersAction[_Parser], parents: list[Any]) -> None:
    sync = _command(
        commands,
        "sync",
        parents=parents,
        help="mirror every image in the config",
        description="Mirror every image in the config. Unchanged images are found with HEAD "
        "requests, which cost no pull, and are not copied. One line per image as it settles; "
        "on a terminal, a status line on stderr.",
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
        help="spend at most N pulls on the sources in this run; the rest is deferred",
    )
    sync.add_argument(
        "--shard",
        metavar="K/N",
        help=f"take only shard K of N (1-based; default ${SHARD_ENV}, else 1/1): a stable "
        "split by destination, for parallel builds",
    )
    sync.add_argument(
        "--lock-file",
        metavar="PATH",
        help="lock held while syncing (default: one per config file in mirror-locks-<uid>, "
        "a directory of $TMPDIR, else /tmp, only this user may enter); an existing file "
        "that is not a mirror lock is refused, never changed",
    )
    sync.set_defaults(handler=_sync)


def _ensure_parser(commands: argparse._SubParsersAction[_Parser], parents: list[Any]) -> None:
    ensure = _command(
        commands,
        "ensure",
        parents=parents,
        help="mirror the named images if missing or stale; print their ECR references",
        description="Mirror each IMAGE (written as after FROM in a Dockerfile), and with "
        "--dockerfile each image the build pulls, if missing or stale in ECR; then print "
        "the ECR references. Uses the config's source and ecr sections; the images need not be "
        "listed under images. Progress goes to stderr; stdout has only the result. When ECR "
        "has a copy and the source cannot refresh it (pull budget spent, 429, login locked "
        "out, 5xx, no answer, unreachable, tag or repository gone), the copy is served: its "
        "reference is printed, exit 0, and one warning line on stderr names the image, the "
        "source's reason and the copy's age (`stale` in the report). It fails (non-zero, "
        "nothing on stdout) only when an image cannot be had at all.",
    )
    ensure.add_argument("images", nargs="*", metavar="IMAGE[:TAG]")
    ensure.add_argument(
        "--dockerfile",
        action="append",
        default=[],
        metavar="PATH",
        help="also mirror every image this Dockerfile pulls: the # syntax= frontend, FROM, "
        "COPY --from and RUN --mount from= images",
    )
    ensure.add_argument(
        "--build-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a build argument for the Dockerfile's ARG defaults (repeatable); NAME alone "
        "takes its value from the environment, as docker build does",
    )
    ensure.add_argument(
        "--format",
        choices=("refs", "dockerfile", "build-args"),
        default="refs",
        help="refs: one ECR reference per line, in order of first use (default); dockerfile: "
        "the Dockerfile with every image it pulls pointed at ECR, every other byte unchanged; "
        "build-args: --build-arg NAME=ref for images written as a whole ARG (and "
        "BUILDKIT_SYNTAX for the # syntax= frontend)",
    )
    ensure.add_argument(
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
    ensure.set_defaults(handler=_ensure)


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
