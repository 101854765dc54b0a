"""A run of `sync` or `ensure`, from the loaded config to the report, whatever happens on the way.

    connect -> plan (tag lists) -> check -> schedule -> transfer -> report

Every run writes its report (and JUnit file, and sync's metrics file and EMF lines) when
asked, also when it stops early: on an error, the images not done are `failed` (or
`deferred`, for "try again later" errors) with the error; on SIGTERM or SIGINT, `deferred`.
A usage or config error found after the options were parsed (`reported`), a held lock and a
bug are recorded too. The files are written before the last lines are printed, so a reader
of stdout that is slow or gone can delay the exit, not lose them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from mirror import aws, connect, lock, metrics, report, state
from mirror.config import Config
from mirror.errors import (
    BUG,
    ConfigError,
    Exit,
    MirrorError,
    RateLimited,
    RegistryError,
    Stopped,
    bug_message,
)
from mirror.model import (
    INTERRUPTED,
    Action,
    Attached,
    Mounting,
    Outcome,
    Plan,
    Progress,
    Settings,
    Unresolved,
)
from mirror.pipeline import Pipeline, Result
from mirror.ports import Sink
from mirror.reference import Repository
from mirror.referrers import MOVING_TAG_FILTERS
from mirror.schedule import Ledger
from mirror.state import Looks, Refusals

log = logging.getLogger("mirror")


class Console(Sink, Protocol):
    def info(self, text: str) -> None: ...

    def warning(self, text: str) -> None: ...

    def error(self, text: str) -> None: ...

    def summary(self, text: str, **fields: Any) -> None: ...

    def raw(self, text: str) -> None: ...


class Bug(MirrorError):
    """An exception mirror did not expect, as the report tells it."""

    exit_code = Exit.SOFTWARE

    def __init__(self, error: Exception):
        super().__init__(bug_message(error))


class Interrupted(BaseException):
    """SIGINT, SIGTERM or the deadline during set-up: unwinds whatever the main thread was
    waiting for."""


DEADLINE = signal.SIGALRM  # how the --deadline comes: an interval timer of the process


class Stop:
    """Set by SIGINT, SIGTERM or the --deadline: nothing new starts, what runs is cut off, the
    report is written. During set-up (`raising`), it also unwinds the main thread. A signal
    decides the exit code (130, 143); the deadline leaves it to the outcomes, the work it
    cut off being `deferred` (75)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self.deadline: float | None = None  # seconds --deadline gave, once it is armed
        self.ends: datetime | None = None  # when the deadline comes
        self._callbacks: list[Callable[[], None]] = []
        self._raising = False

    def on_stop(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)
        if self.event.is_set():
            callback()

    def handle(self, signum: int, frame: object = None) -> None:
        first = self.signum is None
        self.signum = self.signum or signum
        self.event.set()
        for callback in self._callbacks:
            callback()
        main = threading.current_thread() is threading.main_thread()
        if first and self._raising and main:
            raise Interrupted

    @contextlib.contextmanager
    def raising(self) -> Iterator[None]:
        self._raising = True
        try:
            if self.event.is_set():
                raise Interrupted
            yield
        finally:
            self._raising = False

    @property
    def expired(self) -> bool:
        """Did the --deadline stop the run (before any signal did)?"""
        return self.signum == DEADLINE

    @property
    def exit_code(self) -> int | None:
        if self.signum is None or self.expired:
            return None
        return Exit.INTERRUPTED if self.signum == signal.SIGINT else Exit.TERMINATED

    def unfinished(self) -> str:
        """Why the work a stop cut short is deferred, as its outcome says it."""
        if self.expired and self.deadline is not None:
            return f"not reached before the deadline (--deadline {duration_text(self.deadline)})"
        return INTERRUPTED

    def why(self) -> str | None:
        """Why the run stopped early, as the report's `error` says it; None: it did not."""
        if self.expired and self.deadline is not None:
            return (
                f"stopped at the deadline (--deadline {duration_text(self.deadline)}): what was "
                "not done is deferred; run again later"
            )
        if self.signum is not None:
            return f"interrupted by {signal.Signals(self.signum).name}"
        return None


@contextlib.contextmanager
def signals_to(stop: Stop, *, deadline: float | None = None) -> Iterator[Stop]:
    """Route SIGINT and SIGTERM to `stop` for the duration of a command, and after `deadline`
    seconds stop it too (main thread only: elsewhere, only the deadline, by a timer thread)."""
    stop.deadline = deadline
    stop.ends = datetime.now(timezone.utc) + timedelta(seconds=deadline) if deadline else None
    if threading.current_thread() is not threading.main_thread():
        timer = threading.Timer(deadline or 0, stop.handle, (DEADLINE,)) if deadline else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            yield stop
        finally:
            if timer is not None:
                timer.cancel()
        return
    numbers = (*_SIGNALS, DEADLINE) if deadline else _SIGNALS
    previous = {number: signal.signal(number, stop.handle) for number in numbers}
    if deadline:  # not inherited by skopeo: a fork's child starts with no interval timer
        signal.setitimer(signal.ITIMER_REAL, deadline)
    try:
        yield stop
    finally:
        if deadline:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for number, handler in previous.items():
            signal.signal(number, handler)


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def duration_text(seconds: float) -> str:
    """`55m`, `1h30m`, `90s`, `2.5s`: a duration as --deadline takes it."""
    if seconds != int(seconds) or seconds < 60:
        return f"{seconds:g}s"
    hours, rest = divmod(int(seconds), 3600)
    minutes, rest = divmod(rest, 60)
    parts = [(hours, "h"), (minutes, "m"), (rest, "s")]
    return "".join(f"{number}{unit}" for number, unit in parts if number)


@dataclass(frozen=True)
class _Told:
    """The console as the pipeline's sink, each outcome as `told` says it."""

    console: Sink
    told: Callable[[Outcome], Outcome]

    def settled(self, outcome: Outcome) -> None:
        self.console.settled(self.told(outcome))

    def progress(self, progress: Progress) -> None:
        self.console.progress(progress)

    def attached(self, attached: Attached) -> None:
        self.console.attached(attached)


class Planner(Protocol):
    """How a command turns its config (and the source's tag lists) into a plan."""

    def static(self, hosts: Sequence[str], error: Unresolved) -> Plan:
        """The plan as far as it is known without asking a registry (tag rules: `error`)."""

    def resolve(self, session: connect.Session, stop: Stop, hosts: Sequence[str]) -> Plan: ...

    def sources(self) -> list[Repository]:
        """Every source repository the run may read, tag rules' included."""


@dataclass
class Run:
    """What a finished run tells the command: its report and exit code, and the targets'
    registry hosts (as connected; as far as the config tells when it stopped before)."""

    report: report.Report
    exit_code: int
    outcomes: list[Outcome] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)


def execute(
    config: Config,
    planner: Planner,
    settings: Settings,
    console: Console,
    stop: Stop,
    *,
    lock_path: Path | None = None,
    lock_option: str = "--lock-file",
) -> Run:
    """Run the steps, holding `lock_path` meanwhile; always end with the report written.
    `lock_option` names the lock in messages (the option that gave it)."""
    return _Execution(config, planner, settings, console, stop, lock_option=lock_option).run(
        lock_path
    )


@dataclass
class _Execution:
    config: Config
    planner: Planner
    settings: Settings
    console: Console
    stop: Stop
    lock_option: str = "--lock-file"
    started: float = field(default_factory=time.monotonic)
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    known: Plan | None = None
    result: Result | None = None
    error: MirrorError | None = None
    throttled: int = 0
    hosts: list[str] = field(default_factory=list)  # the targets' registry hosts, once known
    state_warnings: list[str] = field(default_factory=list)  # the memory of refused images

    def __post_init__(self) -> None:
        self.ledger = Ledger(self.settings.max_pulls)

    def run(self, lock_path: Path | None) -> Run:
        try:
            self._steps(lock_path)
        except Stopped:
            pass  # a signal cut a request off: the run was interrupted, nothing failed
        except MirrorError as error:
            self.error = error
        except Interrupted:
            pass
        except Exception as bug:  # still a report; then the CLI says "internal error"
            self.error = Bug(bug)
            self._finish()
            raise
        return self._finish()

    def _steps(self, lock_path: Path | None) -> None:
        settings = self.settings
        if self.stop.deadline is not None and self.stop.ends is not None:
            self.console.info(
                f"--deadline {duration_text(self.stop.deadline)}: the run stops at "
                f"{report.utc_text(self.stop.ends)} at the latest; what is not done then is "
                "deferred"
            )
        aws.check_environment()  # a broken AWS set-up stops the run before anything is written
        with contextlib.ExitStack() as stack:
            with self.stop.raising():
                if lock_path is not None:
                    stack.enter_context(lock.held(lock_path, option=self.lock_option))
                session = stack.enter_context(
                    connect.session(self.config, settings, ledger=self.ledger)
                )
            self.stop.on_stop(session.stop)
            refusals = self._remembered(session.tool_version)
            looks = self._looks()
            self.hosts = [target.host for target in session.targets]
            if settings.check_logins:
                _check_logins(session, self.planner.sources())
            self.known = self.planner.resolve(session, self.stop, self.hosts)
            _say_plan(self.known, self.console)
            pipeline = Pipeline(
                sources=session.sources,
                targets=session.targets,
                copier=session.copier,
                ledger=self.ledger,
                settings=settings,
                stop=self.stop.event,
                sink=_Told(self.console, self._told),
                backpressure=session.backpressure,
                refusals=refusals,
                pulls=session.pulls,
                looks=looks,
                mounts=session.mounts,
            )
            try:
                self.result = pipeline.run(self.known)
                self.result.warnings.extend(session.clock_warnings())
                for warning in self.result.warnings[len(self.known.warnings) :]:
                    self.console.warning(warning)  # what the run learnt on the way
                for note in [*_creation_notes(session), *session.pacing_notes()]:
                    self.console.info(note)
            finally:
                self.throttled = session.backpressure.throttled_requests
                session.http.stop()  # requests given up on (a source past its deadline) end
                self._remember(refusals)
                self._remember(looks)

    def _remembered(self, tool: str | None) -> Refusals:
        """The images earlier runs on this machine refused with this skopeo (mirror.state)."""
        tool_name = None if tool is None else f"skopeo {tool}"
        refusals, warning = Refusals.load(state.refusals_path(), tool=tool_name)
        if warning:
            self._state_warning(warning)
        return refusals

    def _looks(self) -> Looks:
        """When earlier runs on this machine looked for each image's referrers."""
        looks, warning = Looks.load(state.looks_path())
        if warning:
            self._state_warning(warning)
        return looks

    def _remember(self, memory: Refusals | Looks) -> None:
        warning = None if self.settings.dry_run else memory.save()
        if warning:
            self._state_warning(warning)

    def _state_warning(self, warning: str) -> None:
        self.console.warning(warning)
        self.state_warnings.append(warning)

    def _finish(self) -> Run:
        attached: list[Attached] = []
        mounting: list[Mounting] = []
        if self.result is not None:
            outcomes = [self._told(outcome) for outcome in self.result.outcomes]
            warnings = self.result.warnings
            attached = self.result.attached
            mounting = self.result.mounting
        else:  # stopped before any image was looked at: the report lists them, the log not
            outcomes, warnings = self._unfinished(), []
        warnings = [*warnings, *self.state_warnings]
        counted = attached if self.settings.referrers_count else []
        code = _exit_code(outcomes, self.error, self.stop, counted)
        done = report.Report(
            outcomes,
            self.ledger.snapshot(),
            warnings,
            error=_why_stopped(self.error, self.stop),
            exit_code=code,
            seconds=time.monotonic() - self.started,
            throttled=self.throttled,
            started=self.started_at,
            ended=datetime.now(timezone.utc),
            attached=attached,
            mounting=mounting,
        )
        try:
            write_reports(done, self.settings)
        except MirrorError as error:  # the work is done; its record could not be written
            self.console.error(str(error))
            code = code or Exit.FAILED
        if self.result is not None or not self.error:
            for line in report.budget_lines(done.budgets):
                self.console.info(line)
            referrers = report.referrers_summary(done.attached)
            if referrers:
                self.console.info(referrers)
            for line in report.mount_lines(done.mounting):
                self.console.info(line)
            if done.throttled:
                self.console.info(
                    f"ECR throttled {done.throttled} requests; each was waited out and sent again"
                )
            self.console.summary(report.summary_line(done), summary=report.summary(outcomes))
        print_emf(done, self.settings, self.console)
        return Run(done, code, outcomes, self.hosts or connect.hosts(self.config))

    def _told(self, outcome: Outcome) -> Outcome:
        """The outcome as it is told: work the deadline cut short says so."""
        if outcome.error == INTERRUPTED and self.stop.expired:
            return replace(outcome, error=self.stop.unfinished())
        return outcome

    def _unfinished(self) -> list[Outcome]:
        """Every entry of a run that stopped before its pipeline: failed or deferred, with why."""
        error = self.error
        action = Action.FAILED
        if error is None or error.exit_code == Exit.TRY_LATER:
            action = Action.DEFERRED
        why = str(error) if error is not None else self.stop.unfinished()
        hosts = connect.hosts(self.config)
        shown = self.known or self.planner.static(
            hosts, Unresolved(f"tag rule not resolved: {why}", action)
        )
        outcomes = list(shown.outcomes)
        for task in shown.tasks:
            outcomes += Outcome.everywhere(task, hosts, action, error=why)
        return sorted(outcomes, key=lambda outcome: outcome.sort_key)


def _check_logins(session: connect.Session, sources: Sequence[Repository]) -> None:
    """Try each source's credentials once, before any image: wrong ones are one error (exit 2).
    A source that cannot be asked now (down, or 429) is that source's images' fault only."""
    first: dict[str, str] = {}
    for repository in sources:
        first.setdefault(repository.registry, repository.path)
    for host, path in first.items():
        try:
            session.sources(host).check_login(path)
        except RateLimited:  # the metered source told the ledger: this source's images wait
            pass
        except Stopped:  # a RegistryError, but the run's, not this source's
            raise
        except RegistryError as error:  # the breaker remembers a dead host for its images
            log.debug("%s: the login check failed: %s", host, error)


def _creation_notes(session: connect.Session) -> list[str]:
    """What a repository created in this run got besides what the config says: immutable
    tags, but the exclusion filters of the tags that move (cosign's, the tag schema's)."""
    notes = []
    for target in session.targets:
        for name, settings in target.created:
            mutability = settings.tag_mutability
            if mutability is None or not set(MOVING_TAG_FILTERS) <= set(mutability.exclusions):
                continue
            notes.append(
                f"created {target.host}/{name} with tag mutability {mutability}: its tags are "
                f"immutable, but for {', '.join(MOVING_TAG_FILTERS)}, the tags of cosign's "
                "signatures and of referrers indexes, which move when one is added"
            )
    return notes


def _say_plan(known: Plan, console: Console) -> None:
    for note in known.notes:
        console.info(note)
    for warning in known.warnings:
        console.warning(warning)
    if not known.tasks and not known.outcomes:
        console.warning("nothing to mirror: the config lists no images")


def _why_stopped(error: MirrorError | None, stop: Stop) -> str | None:
    return stop.why() or (None if error is None else str(error))


def _exit_code(
    outcomes: Sequence[Outcome],
    error: MirrorError | None,
    stop: Stop,
    attached: Sequence[Attached] = (),
) -> int:
    """The run's exit code; `attached`: the referrers left behind count as their image would
    (failed: 1, deferred: 75)."""
    if stop.exit_code is not None:
        return stop.exit_code
    if error is not None:
        return error.exit_code
    if any((text or "").startswith(BUG) for text in _errors(outcomes, attached)):
        return Exit.SOFTWARE  # every other image was still done
    actions = {outcome.action for outcome in outcomes}
    if Action.FAILED in actions or any(item.failed for item in attached):
        return Exit.FAILED
    if Action.DEFERRED in actions or any(item.deferred for item in attached):
        return Exit.TRY_LATER
    return Exit.OK


def _errors(outcomes: Sequence[Outcome], attached: Sequence[Attached]) -> list[str | None]:
    return [outcome.error for outcome in outcomes] + [item.failed for item in attached]


def write_reports(done: report.Report, settings: Settings) -> None:
    """Write every file asked for (the report, the JUnit file, the metrics file), each
    whatever became of the others; MirrorError (exit 1) naming those that could not be."""
    failures = []
    for path, write in _writers(settings):
        try:
            write(path, done)
        except MirrorError as error:
            failures.append(str(error))
    if failures:
        raise MirrorError("; ".join(failures))


def _writers(settings: Settings) -> list[tuple[Path, Callable[[Path, report.Report], None]]]:
    labels = dict(settings.metrics_labels)
    writers: list[tuple[Path | None, Callable[[Path, report.Report], None]]] = [
        (settings.report, report.write),
        (settings.junit, report.write_junit),
        (
            settings.metrics_file,
            lambda path, done: metrics.write_prometheus(path, done, labels=labels),
        ),
    ]
    return [(path, write) for path, write in writers if path is not None]


def print_emf(done: report.Report, settings: Settings, console: Console) -> None:
    """With --metrics-emf, the run's figures as CloudWatch EMF lines, the last on stdout."""
    if settings.emf:
        for line in metrics.emf(done, shard=settings.shard):
            console.raw(line)


@contextlib.contextmanager
def reported(settings: Settings, console: Console) -> Iterator[None]:
    """A usage or config error (or a bug) before the run starts still leaves the report, the
    metrics file and the EMF lines saying so, as far as `settings` knows them."""
    try:
        yield
    except MirrorError as error:
        _record_early(settings, console, str(error), error.exit_code)
        raise
    except Exception as bug:
        _record_early(settings, console, bug_message(bug), Exit.SOFTWARE)
        raise


def _record_early(settings: Settings, console: Console, why: str, code: int) -> None:
    now = datetime.now(timezone.utc)  # it ended where it started
    done = report.Report((), error=why, exit_code=code, started=now, ended=now)
    try:
        write_reports(done, settings)
    except MirrorError as error:  # said first; the error that stopped the run is said last
        console.error(str(error))
    print_emf(done, settings, console)


def settings_of(args: argparse.Namespace, console: Console) -> Settings:
    """The run's options; the files it writes are checked here, before anything is done (and
    a problem with one is recorded in those already found good)."""
    emf = Settings(emf=getattr(args, "metrics_emf", False))
    with reported(emf, console):
        metrics_file = _metrics_file(args)
        labels = _metrics_labels(args)
    early = replace(emf, metrics_file=metrics_file, metrics_labels=labels)
    with reported(early, console):
        written = report.usable(Path(args.report), "--report") if args.report else None
        junit = report.usable(Path(args.junit), "--junit", junit=True) if args.junit else None
        named = {"--report": written, "--junit": junit, "--metrics-file": metrics_file}
        check_distinct(named)
    return replace(
        early,
        jobs=args.jobs,
        dry_run=getattr(args, "dry_run", False),
        max_pulls=getattr(args, "max_pulls", None),
        rescan_referrers=getattr(args, "rescan_referrers", False),
        timeout=args.timeout,
        report=written,
        junit=junit,
    )


def check_distinct(named: dict[str, Path | None]) -> None:
    """ConfigError when two options name the same file."""
    seen: dict[Path, str] = {}
    for option, path in named.items():
        if path is None:
            continue
        if path in seen:
            raise ConfigError(f"{seen[path]} and {option} name the same file, {path}")
        seen[path] = option


def _metrics_file(args: argparse.Namespace) -> Path | None:
    given = getattr(args, "metrics_file", None)
    return metrics.usable_metrics_file(Path(given)) if given else None


def _metrics_labels(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    """`--metrics-label NAME=VALUE`, each checked as the Prometheus text format takes it."""
    given: list[str] = getattr(args, "metrics_label", [])
    if given and not getattr(args, "metrics_file", None):
        raise ConfigError("--metrics-label needs --metrics-file: the labels are on its samples")
    labels: dict[str, str] = {}
    for item in given:
        name, equals, value = item.partition("=")
        if not equals:
            raise ConfigError(f"--metrics-label {item!r}: expected NAME=VALUE")
        if name in labels:
            raise ConfigError(f"--metrics-label {name}: given twice")
        labels[name] = value
    try:
        metrics.prometheus(report.Report(()), labels=labels)
    except ValueError as error:
        raise ConfigError(f"--metrics-label: {error}") from None
    return tuple(labels.items())
