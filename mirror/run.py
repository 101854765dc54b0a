"""The composition root: turns a Config into a ready Engine with the real boundaries plugged in."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from mirror import aws, skopeo
from mirror.config import Config, Credentials, Ecr
from mirror.engine import Engine, Settings, Target
from mirror.errors import ConfigError, SetupError
from mirror.registry import Http, Login, Registry
from mirror.repo_settings import Drift, RepositorySettings, drift


@dataclass
class Options:
    jobs: int = 4
    dry_run: bool = False
    max_pulls: int | None = None


def region_of(config: Config, target: Ecr | None = None) -> str:
    region = (
        (target or config.ecr).region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
    )
    if not region:
        raise SetupError("no AWS region: set ecr.region in the config, or AWS_REGION")
    return region


def source_login(credentials: Credentials | None, *, region: str) -> Login | None:
    """The source's username and password, from the environment or Secrets Manager."""
    if credentials is None:
        return None
    if credentials.secrets_manager:
        return aws.secret_login(credentials.secrets_manager, region=region)
    values = []
    for key in ("username_env", "password_env"):
        name = getattr(credentials, key)
        value = os.environ.get(name)
        if not value:
            raise ConfigError(f"source.credentials.{key}: ${name} is not set or empty")
        values.append(value)
    return Login(values[0], values[1])


class Sources:
    """Source registry clients, one per host, made on first use, each with its credentials."""

    def __init__(self, config: Config, http: Http, logins: dict[str, Login]):
        self._config, self._http, self._logins = config, http, logins
        self._clients: dict[str, Registry] = {}
        self._lock = threading.Lock()

    def __call__(self, host: str) -> Registry:
        with self._lock:
            if host not in self._clients:
                self._clients[host] = Registry(
                    host,
                    http=self._http,
                    tls_verify=self._config.source.tls_verify,
                    login=self._logins.get(host),
                )
            return self._clients[host]


class Copier:
    """skopeo, with the auth file kept in step with the ECR tokens (renewed on long runs)."""

    def __init__(self, tool: skopeo.Skopeo, logins: dict[str, Login], targets: list[_Target]):
        self.tool, self.logins, self.targets = tool, logins, targets
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Fetch new ECR tokens when the old ones near expiry; a no-op otherwise."""
        with self._lock:
            changed = False
            for target in self.targets:
                login = target.ecr.login().login
                if self.logins.get(target.host) != login:
                    self.logins[target.host] = login
                    target.registry.login = login
                    changed = True
            if changed:
                self.tool.workspace.write_auths(self.logins)

    def copy(
        self, source: str, destination: str, *, src_tls_verify: bool, dest_tls_verify: bool
    ) -> str:
        self.refresh()
        return self.tool.copy(
            source, destination, src_tls_verify=src_tls_verify, dest_tls_verify=dest_tls_verify
        )


@dataclass
class _Target:
    """One configured ECR target, connected: its API client, host and registry client."""

    config: Ecr
    ecr: aws.Ecr
    host: str
    registry: Registry

    settings: dict[str, RepositorySettings]  # per configured repository
    _created: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def engine_target(self, *, dry_run: bool) -> Target:
        target = Target(host=self.host, registry=self.registry, is_immutable=self.ecr.is_immutable)
        if self.config.create_repositories and not dry_run:
            target = replace(target, ensure_repository=self.ensure_repository)
        return target

    def ensure_repository(self, name: str) -> None:
        """Create the repository once, with its repository_settings (an existing one is left
        as it is: `mirror repos` shows and fixes its drift)."""
        with self._lock:
            if name not in self._created:
                settings = self.settings.get(name, self.config.repository_settings)
                aws.Repositories.of(self.ecr).create(name, settings)
                self._created.add(name)


def connect_targets(config: Config, http: Http) -> list[_Target]:
    """An ECR client, token and registry client for every target (`ecr:` may be a list)."""
    targets = []
    for target in config.targets:
        ecr = aws.Ecr(region=region_of(config, target), registry_id=target.registry_id)
        login = ecr.login()
        host = target.endpoint or login.host
        registry = Registry(host, http=http, tls_verify=target.tls_verify, login=login.login)
        targets.append(_Target(target, ecr, host, registry, config.repository_settings(target)))
    return targets


class Stop:
    """Set by SIGINT or SIGTERM: the engine starts nothing new, running copies are stopped."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self._callbacks: list[Callable[[], None]] = []

    def on_stop(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def handle(self, signum: int, frame: object = None) -> None:
        self.signum = self.signum or signum
        self.event.set()
        for callback in self._callbacks:
            callback()


@contextlib.contextmanager
def signals_to(stop: Stop) -> Iterator[Stop]:
    """Route SIGINT and SIGTERM to `stop` for the duration of a run (main thread only)."""
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


@contextlib.contextmanager
def engine(config: Config, options: Options, stop: Stop) -> Iterator[Engine]:
    """Build the engine; the private workspace with credentials is removed on every way out."""
    aws.check_environment()
    region = region_of(config)
    source_logins = {
        host: login
        for host, credentials in config.source.credential_hosts().items()
        if (login := source_login(credentials, region=region)) is not None
    }
    if not options.dry_run:
        skopeo.probe()
    http = Http(pool_size=Settings(jobs=options.jobs).check_jobs)
    targets = connect_targets(config, http)
    logins = {**source_logins, **{target.host: target.ecr.login().login for target in targets}}
    with skopeo.Workspace() as workspace:
        workspace.write_auths(logins)
        tool = skopeo.Skopeo(workspace)
        stop.on_stop(tool.terminate_all)
        yield Engine(
            sources=Sources(config, http, source_logins),
            targets=[target.engine_target(dry_run=options.dry_run) for target in targets],
            copier=Copier(tool, logins, targets),
            settings=Settings(
                jobs=options.jobs, dry_run=options.dry_run, max_pulls=options.max_pulls
            ),
            stop=stop.event,
        )


@dataclass
class RepositoryState:
    """`mirror repos`: one configured repository, what ECR has, and how it differs."""

    target: str
    name: str
    settings: RepositorySettings
    missing: bool
    drifts: list[Drift]
    applied: list[str] = field(default_factory=list)


def repository_states(config: Config, *, apply: bool) -> list[RepositoryState]:
    """Compare every configured repository's settings with ECR's; with `apply`, fix what
    ECR allows changing (scanning, mutability, lifecycle policy, tags)."""
    aws.check_environment()
    states = []
    for target in config.targets:
        ecr = aws.Ecr(region=region_of(config, target), registry_id=target.registry_id)
        repositories = aws.Repositories.of(ecr)
        host = target.endpoint or ecr.login().host
        for name, settings in sorted(config.repository_settings(target).items()):
            actual = repositories.actual(name)
            drifts = [] if actual is None else drift(settings, actual)
            state = RepositoryState(host, name, settings, actual is None, drifts)
            if apply and drifts:
                state.applied = repositories.apply(name, drifts, settings)
            states.append(state)
    return states
