"""The composition root: a Config becomes connected boundaries (registries, ECR, skopeo).

Everything here is wiring; the steps of a run (mirror/plan.py, check.py, schedule.py,
transfer.py, pipeline.py) know only the small protocols they are handed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from mirror import aws, skopeo
from mirror.config import Config, Credentials, Target, target_region
from mirror.errors import ConfigError, CopyError, MirrorError, SetupError
from mirror.http import Http, Policy, check_proxies
from mirror.model import Copied, Refresh, Settings
from mirror.mounts import READERS, Mounts
from mirror.oci import INDEX_TYPES, Login, Manifest, index_of
from mirror.pulls import Pulls
from mirror.reference import Repository
from mirror.registry import Registry
from mirror.relay import Relay
from mirror.repo_settings import Encryption, RepositorySettings
from mirror.schedule import Backpressure, Ledger, Metered, WriteRate
from mirror.workers import Workers

log = logging.getLogger("mirror")


def region_of(config: Config, target: Target | None = None) -> str:
    """The target's region (the first target's by default); SetupError when none is set."""
    region = target_region(target or config.ecr)
    if not region:
        raise SetupError("no AWS region: set ecr.region in the config, or AWS_REGION")
    return region


def source_login(
    credentials: Credentials | None, *, region: str, where: str, timeout: float
) -> Login | None:
    """The source's username and password, from the environment or Secrets Manager.
    `where` is the credentials' key path, for messages (which never hold a value)."""
    if credentials is None:
        return None
    if credentials.secrets_manager:
        return aws.secret_login(credentials.secrets_manager, region=region, timeout=timeout)
    values = []
    for key in ("username_env", "password_env"):
        name = getattr(credentials, key)
        value = os.environ.get(name)
        if not value:
            raise ConfigError(f"{where}.{key}: ${name} is not set or empty")
        values.append(value)
    origin = f"the credentials from ${credentials.username_env} and ${credentials.password_env}"
    return Login(values[0], values[1], origin)


class Sources:
    """Source registry clients, one per host, made on first use, each with its credentials,
    and each metered: every answer goes to the run's pull budgets (mirror.schedule)."""

    def __init__(self, config: Config, http: Http, logins: dict[str, Login], ledger: Ledger):
        self._config, self._http, self._logins, self._ledger = config, http, logins, ledger
        self._clients: dict[str, tuple[Registry, Metered]] = {}
        self._lock = threading.Lock()

    def __call__(self, host: str) -> Metered:
        with self._lock:
            if host not in self._clients:
                registry = Registry(
                    host,
                    http=self._http,
                    tls_verify=self._config.source.tls_verify,
                    login=self._logins.get(host),
                )
                self._clients[host] = (registry, self._ledger.meter(registry))
            return self._clients[host][1]

    def learn_scheme(self, host: str) -> None:
        """Let `host`'s client find out its scheme now, in the background (Registry)."""
        self(host)
        with self._lock:
            registry = self._clients[host][0]
        registry.learn_scheme()

    def made(self) -> list[Registry]:
        """The registry clients made so far (their clocks are told at the end)."""
        with self._lock:
            return [registry for registry, _ in self._clients.values()]


@dataclass
class EcrTarget:
    """One configured ECR target, connected: its API client, host and registry client (the
    steps' `Target`)."""

    config: Target
    ecr: aws.Ecr
    host: str
    registry: Registry
    settings: dict[str, RepositorySettings]  # per configured repository
    dry_run: bool = False  # nothing is created
    fallback: RepositorySettings | None = None  # a repository no listed image names
    created: list[tuple[str, RepositorySettings]] = field(default_factory=list)  # in this run
    writes: WriteRate | None = None  # its manifest writes, paced (None: not paced)
    _created: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def is_immutable(self, name: str, tag: str) -> bool:
        return self.ecr.is_immutable(name, tag)

    def cannot_write(self, name: str) -> str | None:
        """Why nothing can be copied into `name`: it does not exist and may not be created."""
        if self.config.create_repositories or self.ecr.exists(name):
            return None
        return (
            f"no repository {name} in ECR, and create_repositories is false: create it, "
            "or set create_repositories: true"
        )

    def encryption(self, name: str) -> str:
        """How repository `name` is encrypted: AES256 when mirror created it so in this run
        (with no encryption setting, ECR's default), else as ECR describes it (once per run),
        KMS keys included: ECR picks the key of `{type: KMS}` with none, and resolves an
        alias or key ID (AWS API reference: EncryptionConfiguration); a text of its own
        when ECR does not know it (no mount into it or from it)."""
        with self._lock:
            created = dict(self.created).get(name)
        made = None if created is None else created.encryption or Encryption("AES256")
        if made is not None and made.type == "AES256":
            return str(made)
        return self.ecr.encryption(name) or f"unknown ({name})"

    def ensure_repository(self, name: str) -> None:
        """Create the repository once, with its repository_settings (an existing one is left
        as it is: `mirror repos` shows and fixes its drift); not in a dry run, nor when
        create_repositories is false."""
        if self.dry_run or not self.config.create_repositories:
            return
        with self._lock:
            if name not in self._created:
                settings = self.settings.get(name, self.fallback or self.config.repository_settings)
                if self.ecr.create(name, settings):
                    self.created.append((name, settings))
                self._created.add(name)


class Copier:
    """skopeo, with the auth file kept in step with the ECR tokens (renewed on long runs), and
    the source relay in front of every source."""

    def __init__(
        self,
        tool: skopeo.Skopeo,
        logins: dict[str, Login],
        targets: list[EcrTarget],
        relay: Relay,
        pulls: Pulls,
    ):
        self.tool, self.logins, self.targets, self.relay = tool, logins, targets, relay
        self.pulls = pulls  # the source manifests kept: what a copy will write, told free
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Fetch new ECR tokens when the old ones near expiry; a no-op otherwise."""
        with self._lock:
            changed = False
            for target in self.targets:
                login = target.ecr.registry_login()
                if self.logins.get(target.host) != login:
                    self.logins[target.host] = login
                    changed = True
            if changed:
                self.tool.workspace.write_auths(self.logins)

    def pull(
        self,
        source: Repository,
        digest: str,
        destination: str,
        *,
        dest_tls_verify: bool,
        deadline: float | None = None,
    ) -> Copied:
        """Copy `source@digest` from its registry, through the relay: skopeo reads what mirror
        pulled (once per run), never the source itself; each read within `deadline` seconds
        when given (else --timeout). Paced by the manifests it will write (`_pace`)."""
        self.refresh()
        where = (source.registry, source.path, str(source))
        paced = self._pace(destination, self.pulls.kept(source.registry, source.path, digest))
        with paced, self.relay.route(*where, deadline=deadline) as route:
            try:
                return self.tool.copy(
                    route.reference(digest),
                    destination,
                    src_tls_verify=False,  # the relay speaks plain HTTP on 127.0.0.1
                    dest_tls_verify=dest_tls_verify,
                )
            except CopyError as error:
                raise route.explain(error) from None

    def copy(
        self, source: str, destination: str, *, src_tls_verify: bool, dest_tls_verify: bool
    ) -> Copied:
        """Copy registry to registry between targets (no pull). Paced as `pull` is."""
        self.refresh()
        with self._pace(destination, self._held(source)):
            return self.tool.copy(
                source, destination, src_tls_verify=src_tls_verify, dest_tls_verify=dest_tls_verify
            )

    def _pace(
        self, destination: str, manifest: Manifest | None
    ) -> contextlib.AbstractContextManager[None]:
        """Around a copy: wait until the manifests it will write fit the destination's PutImage
        pace (an index and each of its entries: skopeo copies an index whole; else one), and
        count them as written when it ends (skopeo writes them last)."""
        target = self._target(destination)
        if target is None or target.writes is None:
            return contextlib.nullcontext()
        count = 1
        if manifest is not None and manifest.media_type in INDEX_TYPES:
            count += len(index_of(manifest.body, destination).get("manifests") or [])
        return target.writes.writing(count)

    def _target(self, reference: str) -> EcrTarget | None:
        return next((t for t in self.targets if reference.startswith(f"{t.host}/")), None)

    def _held(self, reference: str) -> Manifest | None:
        """The manifest a target holds under `reference` (host/path@digest or :tag), read
        from that target (no pull); None when it cannot be read."""
        holder = self._target(reference)
        if holder is None:
            return None
        name = reference[len(holder.host) + 1 :]
        path, separator, digest = name.partition("@")
        if not separator:
            path, _, digest = name.rpartition(":")
        try:
            return holder.registry.pull_manifest(path, digest)
        except MirrorError as error:
            log.debug("%s: %s", reference, error)
            return None


@dataclass
class Session:
    """A run's connected boundaries. `stop()` cuts off every request and skopeo in flight."""

    sources: Sources
    targets: list[EcrTarget]
    copier: Copier
    http: Http
    tool: skopeo.Skopeo
    backpressure: Backpressure
    pulls: Pulls
    mounts: Mounts | None = None  # layer reuse across each target's repositories
    tool_version: str | None = None  # skopeo's ("1.9.3"); None in a dry run, which runs none
    registries: list[Registry] = field(default_factory=list)  # the targets'
    shards: int = 1  # sync --shard K/N: N

    def stop(self) -> None:
        self.http.stop()
        self.tool.terminate_all()
        for target in self.targets:
            if target.writes is not None:
                target.writes.stop()

    def pacing_notes(self) -> list[str]:
        """One line per target whose manifest writes waited for the PutImage pace."""
        lines = []
        for host in dict.fromkeys(target.host for target in self.targets):
            sharing = [target for target in self.targets if target.host == host]
            writes, rate = sharing[0].writes, configured_rate(t.config for t in sharing)
            if writes is not None and rate is not None and writes.waits:
                count = f"{writes.writes} manifest write{'s' if writes.writes != 1 else ''}"
                lines.append(
                    f"{host}: {count} paced at {writes.per_second:g} a "
                    f"second ({pace_source(rate, self.shards)}): waited {writes.waited:.1f} s "
                    "in all"
                )
        return lines

    def clock_warnings(self) -> list[str]:
        """The registries asked in this run whose clocks are far from this machine's."""
        return clock_warnings([*self.sources.made(), *self.registries])


CLOCK_SKEW = 10.0  # seconds between this machine's clock and a registry's Date worth a warning


def clock_warnings(registries: list[Registry]) -> list[str]:
    """One line per registry whose clock (its Date header) is CLOCK_SKEW or more off ours."""
    lines = []
    for registry in sorted(registries, key=lambda r: r.host):
        skew = registry.clock_skew
        if skew is not None and abs(skew) >= CLOCK_SKEW:
            side = "behind" if skew > 0 else "ahead of"
            lines.append(
                f"this machine's clock is {abs(skew):.0f} s {side} {registry.host}'s (its Date "
                "header): tokens and certificates are judged by clocks; set the clock right "
                "(NTP)"
            )
    return lines


def hosts(config: Config) -> list[str]:
    """Each target's registry host as far as the config alone tells (for early reports)."""
    return [target.endpoint or "" for target in config.targets]


@contextlib.contextmanager
def session(config: Config, settings: Settings, *, ledger: Ledger) -> Iterator[Session]:
    """Connect everything; the private workspace with credentials is removed on every way out.
    skopeo's auth file names the targets and the relay only: no source credential, and every
    host skopeo talks to is in it, so it never falls back to the files in the user's home."""
    skopeo.remove_leftovers()
    check_proxies(os.environ)
    region = region_of(config)
    source_logins = {
        host: login
        for host, credentials in config.source.credential_hosts().items()
        if (
            login := source_login(
                credentials,
                region=region,
                where=_credentials_where(config, host),
                timeout=settings.timeout,
            )
        )
        is not None
    }
    # skopeo's version is asked while boto3 builds its client and ECR gives the token (issue
    # 18: they were one after the other before the first request); its error comes first.
    probing = None
    if not settings.dry_run:
        with Workers(1, "probe") as background:  # its thread ends after the probe
            probing = background.submit(skopeo.probe)
    backpressure = Backpressure(settings.jobs)
    http = Http(
        policy=Policy(timeout=settings.timeout),
        pool_size=settings.check_jobs,
        on_throttled=backpressure.throttled,
    )
    sources = Sources(config, http, source_logins, ledger)
    if settings.refresh is Refresh.ALWAYS:  # ensure may not ask the source at all
        sources.learn_scheme(config.source.registry)
    try:
        targets = _connect_targets(config, http, settings)
    except BaseException:
        if probing is not None:
            probing.result()
        raise
    version = None if probing is None else ".".join(map(str, probing.result()))
    pulls = Pulls(sources)
    with skopeo.Workspace() as workspace, contextlib.closing(Relay(pulls, sources)) as relay:
        logins = {relay.host: relay.login, **{t.host: t.ecr.registry_login() for t in targets}}
        workspace.write_auths(logins)
        tool = skopeo.Skopeo(workspace, on_throttled=backpressure.throttled)
        yield Session(
            sources=sources,
            targets=list(targets),
            copier=Copier(tool, logins, targets, relay, pulls),
            http=http,
            tool=tool,
            tool_version=version,
            backpressure=backpressure,
            pulls=pulls,
            mounts=Mounts(targets, pulls, readers=1 if settings.jobs == 1 else READERS),
            registries=[target.registry for target in targets],
            shards=shard_count(settings),
        )


def _credentials_where(config: Config, host: str) -> str:
    listed = dict(config.source.host_credentials)
    return f'source.credentials["{host}"]' if host in listed else "source.credentials"


def _connect_targets(config: Config, http: Http, settings: Settings) -> list[EcrTarget]:
    """An ECR client, token and registry client for every target (`ecr:` may be a list)."""
    logged_in = []
    for target in config.targets:
        region = region_of(config, target)
        early = None
        if target.endpoint:  # known before the token: its scheme is learnt while it comes
            early = Registry(target.endpoint, http=http, tls_verify=target.tls_verify)
            early.learn_scheme()
        ecr = aws.Ecr(region=region, registry_id=target.registry_id, timeout=settings.timeout)
        login = ecr.login()
        host = target.endpoint or aws.registry_host(
            region=region, registry_id=target.registry_id, token_host=login.host
        )
        logged_in.append((target, ecr, host, early))
    rates = write_rates([(host, target) for target, _, host, _ in logged_in], shard_count(settings))
    targets: list[EcrTarget] = []
    for target, ecr, host, early in logged_in:
        writes = rates[host]
        registry = _target_registry(
            host, http, target, ecr.registry_login, learnt=early, writes=writes
        )
        settings_of = config.repository_settings(target)
        fallback = config.default_repository_settings(target)
        targets.append(
            EcrTarget(
                target, ecr, host, registry, settings_of, settings.dry_run, fallback, writes=writes
            )
        )
    return targets


def shard_count(settings: Settings) -> int:
    """N of the run's shard K/N (1 when not sharded)."""
    return int(settings.shard.partition("/")[2] or 1)


def write_rates(targets: Sequence[tuple[str, Target]], shards: int) -> dict[str, WriteRate | None]:
    """The pace of manifest writes to each host: one per host, shared by every target on it
    (one account and Region: one PutImage quota), at this shard's share of the lowest rate
    its targets configure; None (not paced) when none of them sets one."""
    rates: dict[str, WriteRate | None] = {}
    for host in dict.fromkeys(host for host, _ in targets):
        rate = configured_rate(target for on, target in targets if on == host)
        rates[host] = None if rate is None else WriteRate(rate / shards)
    return rates


def configured_rate(targets: Iterable[Target]) -> float | None:
    """The lowest `put_image_rate` of targets sharing a registry; None when none sets one."""
    return min((t.put_image_rate for t in targets if t.put_image_rate is not None), default=None)


def pace_source(rate: float, shards: int) -> str:
    """Where a pace comes from, in words: "ecr.put_image_rate 10 / 4 shards"."""
    words = f"ecr.put_image_rate {rate:g}"
    return f"{words} / {shards} shards" if shards > 1 else words


def _target_registry(
    host: str,
    http: Http,
    target: Target,
    login: Callable[[], Login],
    *,
    learnt: Registry | None = None,
    writes: WriteRate | None = None,
) -> Registry:
    """A target's registry client; it asks for the login each time (ECR's token is renewed).
    `learnt`: a client of the same host made earlier, whose scheme this one shares; `writes`:
    the pace of its manifest PUTs."""
    registry = Registry(
        host,
        http=http,
        tls_verify=target.tls_verify,
        login=login,
        throttled=True,
        pace=None if writes is None else writes.writing,
    )
    if learnt is not None:
        registry.share_scheme(learnt)
    return registry
