"""The composition root: turns a Config into a ready Engine with the real boundaries plugged in."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from mirror import aws, skopeo
from mirror.config import Config, Credentials
from mirror.engine import Engine, Settings
from mirror.errors import ConfigError, SetupError
from mirror.registry import Http, Login, Registry


@dataclass
class Options:
    jobs: int = 4
    dry_run: bool = False
    max_pulls: int | None = None


def region_of(config: Config) -> str:
    region = (
        config.ecr.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
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
    """Source registry clients, one per host, made on first use."""

    def __init__(self, config: Config, http: Http, login: Login | None):
        self._config, self._http, self._login = config, http, login
        self._clients: dict[str, Registry] = {}
        self._lock = threading.Lock()

    def __call__(self, host: str) -> Registry:
        with self._lock:
            if host not in self._clients:
                default = host == self._config.source.registry
                self._clients[host] = Registry(
                    host,
                    http=self._http,
                    tls_verify=self._config.source.tls_verify,
                    login=self._login if default else None,
                )
            return self._clients[host]


class Copier:
    """skopeo, with the auth file kept in step with the ECR token (renewed on long runs)."""

    def __init__(
        self, tool: skopeo.Skopeo, ecr: aws.Ecr, logins: dict[str, Login], destination: Registry
    ):
        self.tool, self.ecr, self.logins, self.destination = tool, ecr, logins, destination
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Fetch a new ECR token when the old one nears expiry; a no-op otherwise."""
        login = self.ecr.login().login
        with self._lock:
            if self.logins.get(self.destination.host) != login:
                self.logins[self.destination.host] = login
                self.destination.login = login
                self.tool.workspace.write_auths(self.logins)

    def copy(
        self, source: str, destination: str, *, src_tls_verify: bool, dest_tls_verify: bool
    ) -> str:
        self.refresh()
        return self.tool.copy(
            source, destination, src_tls_verify=src_tls_verify, dest_tls_verify=dest_tls_verify
        )


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
    region = region_of(config)
    login = source_login(config.source.credentials, region=region)
    if not options.dry_run:
        skopeo.probe()
    ecr = aws.Ecr(region=region, registry_id=config.ecr.registry_id)
    ecr_login = ecr.login()
    host = config.ecr.endpoint or ecr_login.host
    http = Http(pool_size=max(4, options.jobs * 2))
    destination = Registry(host, http=http, tls_verify=config.ecr.tls_verify, login=ecr_login.login)
    logins = {host: ecr_login.login}
    if login is not None:
        logins[config.source.registry] = login
    with skopeo.Workspace() as workspace:
        workspace.write_auths(logins)
        tool = skopeo.Skopeo(workspace)
        stop.on_stop(tool.terminate_all)
        copier = Copier(tool, ecr, logins, destination)
        creating = config.ecr.create_repositories and not options.dry_run
        yield Engine(
            sources=Sources(config, http, login),
            destination=destination,
            destination_host=host,
            copier=copier,
            ensure_repository=ecr.ensure_repository if creating else _no_repository,
            is_immutable=ecr.is_immutable,
            settings=Settings(
                jobs=options.jobs, dry_run=options.dry_run, max_pulls=options.max_pulls
            ),
            stop=stop.event,
        )


def _no_repository(name: str) -> None:
    return None
