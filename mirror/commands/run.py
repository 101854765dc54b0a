"""A run of `sync` or `ensure`, from the loaded config to the report, whatever happens on the way.

    connect -> plan (tag lists) -> check -> schedule -> transfer -> report

Every run writes its report (and JUnit file) when asked, also when it stops early: on an
error, the images not done are `failed` (or `deferred`, for "try again later" errors) with
the error; on SIGTERM or SIGINT, `deferred`. The report is written before the last lines are
printed, so a reader of stdout that is slow or gone can delay the exit, not lose the report.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from mirror import aws, connect, lock, report, state
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
from mirror.model import INTERRUPTED, Action, Attached, Outcome, Plan, Settings, Unresolved
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


class Bug(MirrorError):
    """An exception mirror did not expect, as the report tells it."""

    exit_code = Exit.SOFTWARE

    def __init__(self, error: Exception):
        super().__init__(bug_message(error))


class Interrupted(BaseException):
    """SIGINT or SIGTERM during set-up: unwinds whatever the main thread was waiting for."""


class Stop:
    """Set by SIGINT or SIGTERM: nothing new starts, what runs is cut off, the report is
    written. During set-up (`raising`), the signal also unwinds the main thread."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
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
        if first and self._raising:
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
    def exit_code(self) -> int | None:
        if self.signum is None:
            return None
        return Exit.INTERRUPTED if self.signum == signal.SIGINT else Exit.TERMINATED


@contextlib.contextmanager
def signals_to(stop: Stop) -> Iterator[Stop]:
    """Route SIGINT and SIGTERM to `stop` for the duration of a command (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {number: signal.signal(number, stop.handle) for number in _SIGNALS}
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
                sink=self.console,
                backpressure=session.backpressure,
                refusals=refusals,
                pulls=session.pulls,
                looks=looks,
            )
            try:
                self.result = pipeline.run(self.known)
                self.result.warnings.extend(session.clock_warnings())
                for warning in self.result.warnings[len(self.known.warnings) :]:
                    self.console.warning(warning)  # what the run learnt on the way
                for note in _creation_notes(session):
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
        if self.result is not None:
            outcomes, warnings = self.result.outcomes, self.result.warnings
            attached = self.result.attached
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
            if done.throttled:
                self.console.info(
                    f"ECR throttled {done.throttled} requests; each was waited out and sent again"
                )
            self.console.summary(report.summary_line(done), summary=report.summary(outcomes))
        return Run(done, code, outcomes, self.hosts or connect.hosts(self.config))

    def _unfinished(self) -> list[Outcome]:
        """Every entry of a run that stopped before its pipeline: failed or deferred, with why."""
        error = self.error
        action = Action.FAILED
        if error is None or error.exit_code == Exit.TRY_LATER:
            action = Action.DEFERRED
        why = str(error) if error is not None else INTERRUPTED
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
    if stop.signum is not None:
        return f"interrupted by {signal.Signals(stop.signum).name}"
    return None if error is None else str(error)


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
    if settings.report is not None:
        report.write(settings.report, done)
    if settings.junit is not None:
        report.write_junit(settings.junit, done)


@contextlib.contextmanager
def reported(settings: Settings) -> Iterator[None]:
    """A usage or config error before the run starts still leaves a report saying so."""
    try:
        yield
    except MirrorError as error:
        now = datetime.now(timezone.utc)  # it ended where it started
        done = report.Report(
            (), error=str(error), exit_code=error.exit_code, started=now, ended=now
        )
        write_reports(done, settings)
        raise


def settings_of(args: argparse.Namespace) -> Settings:
    """The run's options; --report and --junit are checked here, before anything is done."""
    written = report.usable(Path(args.report), "--report") if args.report else None
    junit = report.usable(Path(args.junit), "--junit", junit=True) if args.junit else None
    if written is not None and written == junit:
        raise ConfigError(f"--report and --junit name the same file, {args.report}")
    return Settings(
        jobs=args.jobs,
        dry_run=getattr(args, "dry_run", False),
        max_pulls=getattr(args, "max_pulls", None),
        rescan_referrers=getattr(args, "rescan_referrers", False),
        timeout=args.timeout,
        report=written,
        junit=junit,
    )
