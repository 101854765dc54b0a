"""The `mirror` command: argument parsing, one error handler, and the documented exit codes."""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from mirror import __version__, config, dockerfile, lock, report
from mirror.console import Console
from mirror.engine import COPIED, DEFERRED, FAILED, UP_TO_DATE, Engine, Result, Task
from mirror.errors import ConfigError, Exit, MirrorError
from mirror.reference import BadReference, ImageRef, parse_reference
from mirror.run import Options, RepositoryState, Stop, engine, repository_states, signals_to

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
SHARD_ENV = "MIRROR_SHARD"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    console = Console(
        out=sys.stdout,
        err=sys.stderr,
        json_lines=getattr(args, "log_format", "text") == "json",
        quiet=getattr(args, "quiet", False),
    )
    _setup_debug_log(verbose=args.verbose)
    try:
        return int(args.handler(args, console))
    except MirrorError as error:
        log.debug("traceback", exc_info=True)
        console.error(str(error))
        return int(error.exit_code)
    except KeyboardInterrupt:
        console.error("interrupted")
        return int(Exit.INTERRUPTED)
    except Exception as error:  # a bug: still one line, the traceback with --verbose
        log.debug("traceback", exc_info=True)
        console.error(f"internal error: {type(error).__name__}: {error} (run with -v for details)")
        return int(Exit.FAILED)


# --- commands ------------------------------------------------------------------------------------


def _validate(args: argparse.Namespace, console: Console) -> int:
    loaded = config.load(config.config_path(args.config))
    count = sum(len(image.tags) for image in loaded.images)
    rules = sum(image.rule is not None for image in loaded.images)
    text = f"{loaded.path}: ok ({len(loaded.images)} images, {count} tags"
    text += f", {rules} tag rules)" if rules else ")"
    print(text)
    return Exit.OK


def _sync(args: argparse.Namespace, console: Console) -> int:
    loaded = config.load(config.config_path(args.config))
    shard = parse_shard(args.shard or os.environ.get(SHARD_ENV) or "1/1")
    lock_path = Path(args.lock_file) if args.lock_file else lock.default_path(loaded.path)
    with lock.held(lock_path):
        result = _run(loaded, partial(_planned_tasks, loaded, shard), args, console)
    return _exit_code(result)


def _planned_tasks(
    loaded: config.Config, shard: tuple[int, int], runner: Engine, console: Console
) -> list[Task]:
    """Every tag to mirror: the listed ones, and those tag rules choose from the source's tag
    list (which costs no pull); then only this shard's share."""
    tasks = []
    for index, image in enumerate(loaded.images):
        entries = list(image.tags)
        if image.rule is not None:
            entries += _resolve_rule(index, image, runner, console)
        tasks += [_image_task(loaded, image, entry.tag, entry.digest) for entry in entries]
    return select_shard(tasks, *shard)


def _resolve_rule(
    index: int, image: config.Image, runner: Engine, console: Console
) -> list[config.TagEntry]:
    assert image.rule is not None
    available = runner.sources(image.source.registry).list_tags(image.source.path)
    chosen = image.rule.select(available)
    if chosen:
        console.info(
            f"images[{index}] ({image.source}): tag rule chose {len(chosen)} of "
            f"{len(available)} tags: {', '.join(chosen)}"
        )
    else:
        runner.warnings.append(
            f"images[{index}] ({image.source}): tag rule chose no tag from {len(available)} tags"
        )
    return [config.TagEntry(tag) for tag in chosen]


def _image_task(
    loaded: config.Config, image: config.Image, tag: str, digest: str | None = None
) -> Task:
    return Task(
        ImageRef(image.source, tag, digest),
        tag,
        tuple(loaded.destination_repository(image, target) for target in loaded.targets),
        image.platforms,
    )


def _ensure(args: argparse.Namespace, console: Console) -> int:
    loaded = config.load(config.config_path(args.config))
    lines: list[dockerfile.FromLine] = []
    text = ""
    names = list(args.images)
    if args.dockerfile:
        text, lines = _read_dockerfile(Path(args.dockerfile), args.build_arg)
        names += dockerfile.base_images(lines)
    elif args.format != "refs":
        raise ConfigError(f"--format {args.format} needs --dockerfile")
    if not names:
        raise ConfigError("name at least one IMAGE, or a --dockerfile with a base image")
    named = {name: _task(loaded, name) for name in names}
    tasks = _dedupe(list(named.values()))
    result = _run(loaded, lambda runner, console: tasks, args, console.moved_to_stderr())
    if any(o.action not in (COPIED, UP_TO_DATE) for o in result.outcomes):
        return _exit_code(result)
    # With several targets, the first one's reference: the registry builds pull from.
    done = {o.task.destination(""): o.destination for o in result.outcomes if o.target == 0}
    mapping = {name: done[task.destination("")] for name, task in named.items()}
    sys.stdout.write(_ensure_output(args.format, text, lines, mapping, names))
    return Exit.OK


def _ensure_output(
    form: str,
    text: str,
    lines: list[dockerfile.FromLine],
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


def _read_dockerfile(path: Path, build_args: list[str]) -> tuple[str, list[dockerfile.FromLine]]:
    overrides = {}
    for item in build_args:
        name, equals, value = item.partition("=")
        if not equals:
            raise ConfigError(f"--build-arg {item!r}: expected NAME=VALUE")
        overrides[name] = value
    try:
        with open(path, encoding="utf-8", newline="") as handle:  # keep CRLF as it is
            text = handle.read()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    try:
        return text, dockerfile.parse(text, overrides)
    except dockerfile.DockerfileError as error:
        raise ConfigError(f"{path}: {error}") from None


def _task(loaded: config.Config, name: str) -> Task:
    try:
        reference = parse_reference(name, default_registry=loaded.source.registry)
    except BadReference as error:
        raise ConfigError(f"{name!r}: {error}") from None
    image = loaded.image_for(reference.repository)
    return _image_task(loaded, image, _tag(reference), reference.digest)


def _dedupe(tasks: list[Task]) -> list[Task]:
    return list({task.destination(""): task for task in reversed(tasks)}.values())[::-1]


def _tag(reference: ImageRef) -> str:
    """The destination tag: the source's, or for a digest-only name `sha256-<hex>`."""
    if reference.tag:
        return reference.tag
    algorithm, _, hexdigits = (reference.digest or "").partition(":")
    return f"{algorithm}-{hexdigits}"


def parse_shard(text: str) -> tuple[int, int]:
    """`K/N`, 1-based: this run takes shard K of N."""
    index, _, count = text.partition("/")
    # ASCII digits only, and few: str.isdigit and int() take '²' and '٣'; int() refuses 5,000.
    digits = all(part.isascii() and part.isdigit() and len(part) <= 9 for part in (index, count))
    if not (digits and 1 <= int(index) <= int(count)):
        raise ConfigError(f"--shard / ${SHARD_ENV}: expected K/N with 1 <= K <= N, got {text!r}")
    return int(index), int(count)


def select_shard(tasks: list[Task], index: int, count: int) -> list[Task]:
    """A stable split by destination reference: disjoint shards that together cover all."""

    def shard_of(task: Task) -> int:
        key = f"{task.repositories[0]}:{task.tag}".encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % count + 1

    return [task for task in tasks if shard_of(task) == index]


def _run(
    loaded: config.Config,
    plan: Callable[[Engine, Console], list[Task]],
    args: argparse.Namespace,
    console: Console,
) -> Result:
    options = Options(
        jobs=args.jobs,
        dry_run=getattr(args, "dry_run", False),
        max_pulls=getattr(args, "max_pulls", None),
    )
    started = time.monotonic()
    with signals_to(Stop()) as stop, engine(loaded, options, stop) as runner:
        result = runner.run(plan(runner, console))
    result.signum = stop.signum
    for outcome in result.outcomes:
        console.image(outcome)
    console.summary(
        report.summary_line(result, time.monotonic() - started),
        summary=report.summary(result.outcomes),
    )
    budget = report.budget_line(result.budget)
    if budget:
        console.info(budget)
    for warning in result.warnings:
        console.warning(warning)
    if args.report:
        report.write(Path(args.report), result)
    if args.junit:
        report.write_junit(Path(args.junit), result)
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


def _repos(args: argparse.Namespace, console: Console) -> int:
    """List the configured repositories with their drift from the config; --apply fixes it."""
    loaded = config.load(config.config_path(args.config))
    states = repository_states(loaded, apply=args.apply)
    left = 0
    for state in states:
        for line, problem in _repository_lines(state):
            print(line)
            left += problem
    changed = sum(len(state.applied) for state in states)
    print(
        f"{len(states)} repositories, {left} differences left"
        + (f", {changed} settings changed" if args.apply else "")
    )
    return Exit.FAILED if left else Exit.OK


def _repository_lines(state: RepositoryState) -> list[tuple[str, bool]]:
    """(line, still a problem) for one repository."""
    where = f"{state.target}: {state.name}"
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mirror",
        description="Keep container base images in Amazon ECR, copied registry to registry with "
        "skopeo; unchanged images cost no Docker Hub pull.",
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
        "creation. Exit 0 when nothing differs (after --apply), else 1.",
    )
    repos.add_argument("--apply", action="store_true", help="bring ECR in line with the config")
    repos.set_defaults(handler=_repos)
    validate = commands.add_parser(
        "validate",
        parents=[common],
        help="check the config file",
        description="Check the config file; exit 0 when it is valid, 2 when it is not.",
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
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks")
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
        "-q", "--quiet", action="store_true", help="print only failures and the summary"
    )
    return running


def _sync_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[Any]
) -> None:
    sync = _command(
        commands,
        "sync",
        parents=parents,
        help="mirror every image in the config",
        description="Mirror every image in the config. Unchanged images are found with HEAD "
        "requests, which cost no pull, and are not copied.",
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
        "--shard",
        metavar="K/N",
        help=f"take only shard K of N (1-based; default ${SHARD_ENV}, else 1/1): a stable "
        "split by destination, for parallel builds",
    )
    sync.add_argument(
        "--lock-file",
        metavar="PATH",
        help="lock held while syncing (default: one per config file in the temporary directory)",
    )
    sync.set_defaults(handler=_sync)


def _ensure_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[Any]
) -> None:
    ensure = _command(
        commands,
        "ensure",
        parents=parents,
        help="mirror the named images if missing or stale; print their ECR references",
        description="Mirror each IMAGE (written as after FROM in a Dockerfile), and with "
        "--dockerfile each base image its FROM lines use, if missing or stale in ECR; then print "
        "the ECR references. Uses the config's source and ecr sections; the images need not be "
        "listed under images. Progress goes to stderr; stdout has only the result.",
    )
    ensure.add_argument("images", nargs="*", metavar="IMAGE[:TAG]")
    ensure.add_argument(
        "--dockerfile", metavar="PATH", help="also mirror the base images of this Dockerfile"
    )
    ensure.add_argument(
        "--build-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a build argument for the Dockerfile's ARG defaults (repeatable)",
    )
    ensure.add_argument(
        "--format",
        choices=("refs", "dockerfile", "build-args"),
        default="refs",
        help="refs: one ECR reference per line, in order of first use (default); dockerfile: "
        "the Dockerfile with its base images pointed at ECR, every other byte unchanged; "
        "build-args: --build-arg NAME=ref for FROM lines whose whole image is an ARG",
    )
    ensure.set_defaults(handler=_ensure)


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, **kwargs: Any
) -> argparse.ArgumentParser:
    """A sub-command whose --help ends with the exit codes."""
    return commands.add_parser(
        name, epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs
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


def _setup_debug_log(*, verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.WARNING)
    log.propagate = False
