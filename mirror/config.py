"""The YAML config, parsed into frozen records; every mistake is one line naming its key path.

The keys are a public contract; README's "Config reference" documents each one.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mirror import aws, patterns, versions, yamlfile
from mirror.errors import ConfigError
from mirror.model import NO_REFERRERS, ReferrerRule
from mirror.reference import (
    DIGEST_LENGTHS,
    DOCKER_HUB,
    LEGACY_PIN_TAG,
    PIN_TAG,
    BadReference,
    Repository,
    canonical_registry,
    check_digest,
    check_host,
    check_tag,
    host_part,
    is_docker_hub,
    parse_repository,
    pin_tag,
    reads_as_host_part,
)
from mirror.referrers import MOVING_TAG_FILTERS, artifact_type_problem
from mirror.repo_settings import (
    MAX_EXCLUSIONS,
    RepositorySettings,
    TagMutability,
    parse_settings,
)
from mirror.yamlfile import WrittenInt
from mirror.yamlfile import kind as _kind

if TYPE_CHECKING:  # cryptography and sigstore: imported when a config has a verify policy
    from mirror.signatures import Identity, Policy

T = TypeVar("T")
IMMUTABLE_MODES = ("IMMUTABLE", "IMMUTABLE_WITH_EXCLUSION")
DEFAULT_PATH = "mirror.yaml"
ENV_PATH = "MIRROR_CONFIG"
# A variable's name as people write them: capitals, digits, underscores. Anything else (a
# mixed-case string that happens to be an identifier) may be the secret itself: not shown.
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,63}\Z")
# Access tokens people paste where a variable's name belongs (Docker Hub, GitHub, AWS keys).
_TOKEN_PREFIXES = (
    "dckr_pat_", "dckr_oat_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "AKIA", "ASIA"
)  # fmt: skip
_SECRET_ID = re.compile(r"[A-Za-z0-9/_+=.@:-]{1,2048}\Z")  # a Secrets Manager name or ARN


@dataclass(frozen=True)
class Credentials:
    """Where the source registry's username and password come from (never the values):
    two environment variables, or one Secrets Manager secret holding {"username", "password"}."""

    username_env: str | None = None
    password_env: str | None = None
    secrets_manager: str | None = None


@dataclass(frozen=True)
class Source:
    registry: str = DOCKER_HUB  # Docker Hub, or the registry that stands in for it
    tls_verify: bool = True
    credentials: Credentials | None = None  # for source.registry (and any host not listed)
    host_credentials: tuple[tuple[str, Credentials], ...] = ()  # per registry host

    def credential_hosts(self) -> dict[str, Credentials]:
        """Every host with credentials: the listed ones, and source.registry's default."""
        hosts = dict(self.host_credentials)
        if self.credentials is not None:
            hosts.setdefault(self.registry, self.credentials)
        return hosts


PUT_IMAGE_RATE = 10.0  # PutImage requests a second per account and Region (ECR's service quotas)


@dataclass(frozen=True)
class Target:
    """One entry of `ecr:` (a mapping, or each item of a list): an ECR registry the images
    are copied to, and how (aws.Ecr is ECR's API for it)."""

    region: str | None = None
    registry_id: str | None = None
    repository_prefix: str = ""
    create_repositories: bool = True
    endpoint: str | None = None
    tls_verify: bool = True
    repository_settings: RepositorySettings = field(default_factory=RepositorySettings)
    # manifest writes a second this account and Region allows (ECR's PutImage quota), shared
    # by every shard; None: not paced
    put_image_rate: float | None = PUT_IMAGE_RATE


@dataclass(frozen=True)
class TagEntry:
    """A listed tag; with `digest` it is pinned: exactly that digest, whatever upstream does."""

    tag: str
    digest: str | None = None


@dataclass(frozen=True)
class TagRule:
    """Tags chosen from the source's tag list: those `match` matches whole, minus those
    `exclude` matches, within the `semver` range (npm's grammar), then the `newest` N by
    version order. Version order, what is version-like and what a range sees are
    mirror.versions'; referrer-shaped tags (`sha256-<hex>`, `.sig`...) are never chosen. The
    `match` and `exclude` patterns are RE2's (mirror/patterns.py): linear in the tag, whatever
    the pattern."""

    match: str | None = None
    exclude: str | None = None
    newest: int | None = None
    semver: str | None = None

    def select(self, tags: Iterable[str]) -> list[str]:
        """The chosen tags, highest version first (words last, by text)."""
        chosen = [
            tag
            for tag in tags
            if not versions.is_referrer_tag(tag)
            and (self.match is None or patterns.fullmatch(self.match, tag))
            and not (self.exclude is not None and patterns.fullmatch(self.exclude, tag))
            and (self.semver is None or versions.in_range(tag, self.semver))
        ]
        keyed = sorted(((versions.sort_key(tag), tag) for tag in chosen), reverse=True)
        if self.newest is None:
            return [tag for _, tag in keyed]
        return [tag for key, tag in keyed if key[0] > 0][: self.newest]  # versions, then dates


ALL_PLATFORMS: tuple[str, ...] = ()


@dataclass(frozen=True)
class Image:
    source: Repository
    tags: tuple[TagEntry, ...] = ()
    rule: TagRule | None = None  # tags chosen from the source's tag list instead of listed
    repository: str | None = None  # explicit ECR repository; None = prefix + source path
    platforms: tuple[str, ...] = ALL_PLATFORMS  # () = all, digests preserved
    repository_settings: RepositorySettings = field(default_factory=RepositorySettings)
    referrers: ReferrerRule = field(default_factory=ReferrerRule)  # what travels with it
    verify: Policy | None = field(default=None, compare=False)  # the verify gate's policy


@dataclass(frozen=True)
class Config:
    path: Path
    source: Source = field(default_factory=Source)
    targets: tuple[Target, ...] = (Target(),)
    platforms: tuple[str, ...] = ALL_PLATFORMS
    images: tuple[Image, ...] = ()
    referrers: ReferrerRule = field(default_factory=ReferrerRule)  # defaults.referrers
    verify: Policy | None = field(default=None, compare=False)  # defaults.verify

    @property
    def ecr(self) -> Target:
        """The first ECR target: where images are copied from the source."""
        return self.targets[0]

    def destination_repository(self, image: Image, target: Target | None = None) -> str:
        """The ECR repository an image lands in: explicit, or <prefix>/<derived path>."""
        if image.repository:
            return image.repository
        prefix = (target or self.ecr).repository_prefix
        path = self.derived_path(image.source)
        return f"{prefix}/{path}" if prefix else path

    def derived_path(self, source: Repository) -> str:
        """A source repository's part of its ECR name: its path on `source.registry` (Docker
        Hub's names as they are, `library/ruby`); on any other registry, the host first, so
        that two registries' `org/app` never share a repository (`ghcr.io/org/app`,
        `127.0.0.1_5000/org/app`: `host_part`)."""
        if source.registry == self.source.registry:
            return source.path
        return f"{host_part(source.registry)}/{source.path}"

    def derived_problem(self, source: Repository) -> str | None:
        """Why `source` cannot have a derived ECR name: a path on `source.registry` whose first
        part reads as another registry's host (`docker.io/localhost/app` would derive what
        `localhost/app` derives). None when it can."""
        first, slash, _ = source.path.partition("/")
        if source.registry != self.source.registry or not slash or not reads_as_host_part(first):
            return None
        return (
            f"its path {source.path!r} starts with {first!r}, which is also how another "
            "registry's host is written in derived names: give it an explicit repository"
        )

    def repository_settings(self, target: Target) -> dict[str, RepositorySettings]:
        """Each configured repository of a target, with its settings (image over target; with
        referrers on, immutable tags get the exclusion filters of the tags that move)."""
        return {
            self.destination_repository(image, target): moving_tags_excluded(
                image.repository_settings.merged_over(target.repository_settings),
                image.referrers,
            )
            for image in self.images
        }

    def default_repository_settings(self, target: Target) -> RepositorySettings:
        """The settings of a repository no listed image names (one `ensure` mirrors)."""
        return moving_tags_excluded(target.repository_settings, self.referrers)

    def image_for(self, source: Repository) -> Image:
        """For `ensure`: the listed image when the config has it, else a default one."""
        for image in self.images:
            if image.source == source:
                return image
        return Image(source, platforms=self.platforms, referrers=self.referrers, verify=self.verify)


def moving_tags_excluded(settings: RepositorySettings, rule: ReferrerRule) -> RepositorySettings:
    """`settings`, with the tags that move (cosign's `sha256-<hex>.sig`, referrers tag-schema
    indexes: MOVING_TAG_FILTERS) let move in a repository whose tags are immutable, when
    referrers travel: IMMUTABLE becomes IMMUTABLE_WITH_EXCLUSION with those filters, and an
    IMMUTABLE_WITH_EXCLUSION gets them besides its own. Anything else is left as it is."""
    mutability = settings.tag_mutability
    if not rule.enabled or mutability is None or mutability.mode not in IMMUTABLE_MODES:
        return settings
    exclusions = tuple(sorted({*mutability.exclusions, *MOVING_TAG_FILTERS}))
    return replace(settings, tag_mutability=TagMutability(IMMUTABLE_MODES[1], exclusions))


def config_path(cli_value: str | None) -> Path:
    """-c/--config, else $MIRROR_CONFIG, else ./mirror.yaml."""
    return Path(cli_value or os.environ.get(ENV_PATH) or DEFAULT_PATH)


def load(path: Path) -> Config:
    """Read and validate the config file; any problem raises ConfigError with one line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such config file (name one with -c or $MIRROR_CONFIG)"
        ) from None
    except OSError as error:  # a directory, no permission: the reason, not Python's repr
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: cannot read: {error}") from None
    try:
        data = yamlfile.load(text)
        if data is None:
            # A cron job on an empty file would mirror nothing and exit 0, every night.
            raise ConfigError("the config file is empty (no keys, only comments or blank lines)")
        return parse(data, path)
    except ConfigError as error:
        raise ConfigError(yamlfile.one_line(f"{path}: {error}")) from None


# --- parsing -------------------------------------------------------------------------------------

_TOP_KEYS = ("source", "ecr", "defaults", "images")
_RULE_KEYS = ("match", "exclude", "semver", "newest")
_PLATFORM = re.compile(r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?\Z")
_SOURCE_KEYS = ("registry", "tls_verify", "credentials")
_CREDENTIAL_KEYS = ("username_env", "password_env", "secrets_manager")
_ECR_KEYS = (
    "region",
    "registry_id",
    "repository_prefix",
    "create_repositories",
    "endpoint",
    "tls_verify",
    "repository_settings",
    "put_image_rate",
)
_DEFAULTS_KEYS = ("platforms", "referrers", "verify")
_IMAGE_KEYS = (
    "source",
    "tags",
    "repository",
    "platforms",
    "repository_settings",
    "referrers",
    "verify",
)
_VERIFY_KEYS = ("keys", "identities", "trust_root")
_IDENTITY_KEYS = ("issuer", "subject", "subject_regex")


def parse(data: Any, path: Path) -> Config:
    """Turn loaded YAML (`yamlfile.load`) into a Config. Errors name the key path
    (`images[2].tags[0]`), on one line whatever the keys and values hold."""
    try:
        return _parse(data, path)
    except ConfigError as error:
        raise ConfigError(yamlfile.one_line(str(error))) from None


def _parse(data: Any, path: Path) -> Config:
    top = _mapping(data, "the file", _TOP_KEYS)
    source = _parse_source(top.get("source"), "source")
    targets = _parse_targets(top.get("ecr"), path.parent)
    defaults = _mapping(_or_empty(top.get("defaults")), "defaults", _DEFAULTS_KEYS)
    platforms = _platforms(defaults.get("platforms", "all"), "defaults.platforms")
    base = Image(
        Repository(source.registry, "-"),
        platforms=platforms,
        referrers=_referrers(defaults.get("referrers", True), "defaults.referrers"),
        verify=_verify(defaults, "defaults.verify", path.parent),
    )
    images = _parse_images(top.get("images"), source, base, path.parent)
    config = Config(path, source, targets, platforms, images, base.referrers, base.verify)
    _check_distinct_targets(config)
    _check_same_images(config, list(top.get("images") or ()))
    _check_derived_repositories(config)
    _check_unique_destinations(config)
    _check_shared_repository_settings(config)
    _check_moving_tags(config)
    return config


def _or_empty(data: Any) -> Any:
    """An optional section: absent or empty (`defaults:`) is {}; anything else is checked."""
    return {} if data is None else data


def _parse_source(data: Any, where: str) -> Source:
    if data is None:
        return Source()
    table = _mapping(data, where, _SOURCE_KEYS)
    registry = _string(table.get("registry", DOCKER_HUB), f"{where}.registry")
    registry = canonical_registry(_check(check_host, registry, f"{where}.registry"))
    default, per_host = _parse_credentials(
        table.get("credentials"), f"{where}.credentials", hub=registry
    )
    return Source(
        registry=registry,
        tls_verify=_bool(table.get("tls_verify", True), f"{where}.tls_verify"),
        credentials=default,
        host_credentials=tuple(sorted(per_host.items())),
    )


def _parse_credentials(
    data: Any, where: str, *, hub: str
) -> tuple[Credentials | None, dict[str, Credentials]]:
    """The default credentials, and per registry host ones (`credentials: {"ghcr.io": {...}}`).
    A Docker Hub host key (index.docker.io...) is for `hub`, where Docker Hub names resolve."""
    if data is None:
        return None, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_unshown(data)}")
    hosts = {
        key: value for key, value in data.items() if isinstance(key, str) and _looks_like_host(key)
    }
    own = {key: value for key, value in data.items() if key not in hosts}
    per_host: dict[str, Credentials] = {}
    written: dict[str, str] = {}
    for key, value in hosts.items():
        key_where = f'{where}["{key}"]'
        host = canonical_registry(_check(check_host, key, key_where))
        host = hub if is_docker_hub(host) else host
        if host in written:
            raise ConfigError(
                f'{key_where}: the same registry as {where}["{written[host]}"] ({host})'
            )
        written[host] = key
        per_host[host] = _one_credentials(value, key_where)
    default = _one_credentials(own, where) if own else None
    if default is not None and hub in per_host:
        raise ConfigError(
            f'{where}["{written[hub]}"]: the same registry as the default {where} ({hub}); '
            "give its credentials once"
        )
    return default, per_host


def _looks_like_host(key: str) -> bool:
    return "." in key or ":" in key or key == "localhost"


def _one_credentials(data: Any, where: str) -> Credentials:
    if not isinstance(data, dict):  # a token pasted in place of the mapping: never shown
        raise ConfigError(f"{where}: expected a mapping, got {_unshown(data)}")
    table = _mapping(data, where, _CREDENTIAL_KEYS)
    if "secrets_manager" in table:
        if "username_env" in table or "password_env" in table:
            raise ConfigError(
                f"{where}: give either secrets_manager or username_env and password_env, not both"
            )
        secret = table["secrets_manager"]
        if not isinstance(secret, str) or not _SECRET_ID.match(secret):
            raise ConfigError(
                f"{where}.secrets_manager: expected a Secrets Manager secret's name or ARN, "
                f"got {_unshown(secret)}"
            )
        return Credentials(secrets_manager=secret)
    for key in ("username_env", "password_env"):
        if key not in table:
            raise ConfigError(f"{where}.{key}: required (the name of an environment variable)")
    return Credentials(
        username_env=_env_name(table["username_env"], f"{where}.username_env"),
        password_env=_env_name(table["password_env"], f"{where}.password_env"),
    )


def _parse_targets(data: Any, base_dir: Path) -> tuple[Target, ...]:
    """`ecr:` is one target (a mapping) or several (a list): other regions, accounts, endpoints."""
    if isinstance(data, list):
        if not data:
            raise ConfigError("ecr: expected a mapping or a non-empty list of targets, got a list")
        return tuple(_parse_ecr(item, f"ecr[{index}]", base_dir) for index, item in enumerate(data))
    return (_parse_ecr(data, "ecr", base_dir),)


def _parse_ecr(data: Any, where: str, base_dir: Path) -> Target:
    if data is None:
        return Target()
    table = _mapping(data, where, _ECR_KEYS)
    account = table.get("registry_id")
    if isinstance(account, WrittenInt):
        raise ConfigError(
            f"{where}.registry_id: write the account ID in quotes, as a string "
            f'("{account.text}"): a number loses leading zeros'
        )
    registry_id = _optional_string(account, f"{where}.registry_id")
    if registry_id is not None and not re.fullmatch("[0-9]{12}", registry_id):
        raise ConfigError(
            f"{where}.registry_id: expected a 12-digit account ID, got {_kind(registry_id)}"
        )
    prefix_data = table.get("repository_prefix")
    prefix = (
        "" if prefix_data == "" else _optional_string(prefix_data, f"{where}.repository_prefix")
    )
    prefix = (prefix or "").strip("/")
    if prefix:
        _check_prefix(prefix, f"{where}.repository_prefix")
    endpoint = _optional_string(table.get("endpoint"), f"{where}.endpoint")
    if endpoint is not None:
        _check(check_host, endpoint, f"{where}.endpoint")
    region = _optional_string(table.get("region"), f"{where}.region")
    if region is not None:
        aws.check_region(region, f"{where}.region")
    return Target(
        region=region,
        registry_id=registry_id,
        repository_prefix=prefix,
        create_repositories=_bool(
            table.get("create_repositories", True), f"{where}.create_repositories"
        ),
        endpoint=endpoint,
        tls_verify=_bool(table.get("tls_verify", True), f"{where}.tls_verify"),
        repository_settings=parse_settings(
            table.get("repository_settings"), f"{where}.repository_settings", base_dir=base_dir
        ),
        put_image_rate=_rate(
            table.get("put_image_rate", PUT_IMAGE_RATE), f"{where}.put_image_rate"
        ),
    )


def _rate(data: Any, where: str) -> float | None:
    """A rate a second above 0, or null (not paced)."""
    if data is None:
        return None
    number = isinstance(data, (int, float)) and not isinstance(data, bool)
    if not number or not 0 < _float(data) < math.inf:
        raise ConfigError(
            f"{where}: expected PutImage requests a second above 0 (ECR's default quota is "
            f"{PUT_IMAGE_RATE:g}), or null to not pace them, got {_kind(data)}"
        )
    return float(data)


def _float(number: float) -> float:
    """A YAML number as a float; an integer past float's range is infinite."""
    try:
        return float(number)
    except OverflowError:
        return math.inf


def _parse_images(data: Any, source: Source, base: Image, base_dir: Path) -> tuple[Image, ...]:
    """The images; `base` holds the defaults (platforms, referrers, verify)."""
    if data is None:
        return ()
    if not isinstance(data, list):
        raise ConfigError(f"images: expected a list of images, got {_kind(data)}")
    return tuple(
        _parse_image(item, f"images[{index}]", source, base, base_dir)
        for index, item in enumerate(data)
    )


def _parse_image(data: Any, where: str, source: Source, base: Image, base_dir: Path) -> Image:
    table = _mapping(data, where, _IMAGE_KEYS)
    for key in ("source", "tags"):
        if key not in table:
            raise ConfigError(f"{where}.{key}: required")
    name = _string(table["source"], f"{where}.source")
    if "@" in name or ":" in name.rpartition("/")[2]:
        raise ConfigError(
            f"{where}.source: {name!r} names a tag or digest; give the bare name and list tags "
            f"under {where}.tags"
        )
    repository = _check(
        partial(parse_repository, default_registry=source.registry), name, f"{where}.source"
    )
    explicit = _optional_string(table.get("repository"), f"{where}.repository")
    if explicit is not None:
        check_repository_name(explicit, f"{where}.repository")
    tags = table["tags"]
    return Image(
        source=repository,
        tags=() if isinstance(tags, dict) else _tags(tags, f"{where}.tags"),
        rule=_rule(tags, f"{where}.tags") if isinstance(tags, dict) else None,
        repository=explicit,
        platforms=(
            _platforms(table["platforms"], f"{where}.platforms")
            if "platforms" in table
            else base.platforms
        ),
        repository_settings=parse_settings(
            table.get("repository_settings"), f"{where}.repository_settings", base_dir=base_dir
        ),
        referrers=(
            _referrers(table["referrers"], f"{where}.referrers")
            if "referrers" in table
            else base.referrers
        ),
        verify=_verify(table, f"{where}.verify", base_dir) if "verify" in table else base.verify,
    )


def _tags(data: Any, where: str) -> tuple[TagEntry, ...]:
    if not isinstance(data, list) or not data:
        raise ConfigError(
            f"{where}: expected a non-empty list of tags or a rule {{match, exclude, semver, "
            "newest}, "
            f"got {_kind(data)}"
        )
    entries = [_tag_entry(item, f"{where}[{index}]") for index, item in enumerate(data)]
    seen: set[str] = set()
    for entry in entries:
        if entry.tag in seen:
            raise ConfigError(f"{where}: tag {entry.tag!r} is listed twice")
        seen.add(entry.tag)
    return tuple(entries)


def _tag_entry(data: Any, where: str) -> TagEntry:
    """`TAG`, or `TAG@sha256:DIGEST` to pin that digest."""
    text = _string(data, where)
    tag, at, digest = text.partition("@")
    _check(check_tag, tag, where)
    if at:
        _check(check_digest, digest, where)
    refused = tag_refusal(tag, digest or None)
    if refused:
        raise ConfigError(f"{where}: {refused}")
    return TagEntry(tag, digest or None)


def tag_refusal(tag: str, digest: str | None = None) -> str | None:
    """Why `tag` (pinned to `digest`, if given) is not a tag to mirror by name, or None:
    a referrers tag (`sha256-<hex>`), or the form of mirror's pin tags (`pin-sha256-<hex>`)
    other than the pin tag of `digest` itself."""
    if LEGACY_PIN_TAG.match(tag):
        return referrers_tag_refusal(tag)
    if PIN_TAG.match(tag) and not (digest and tag == pin_tag(digest)):
        algorithm, _, hexdigits = tag.removeprefix("pin-").partition("-")
        return (
            f"{tag!r} is the form of mirror's pin tags, which mirror writes itself for a pin: "
            f"pin the image instead, TAG@{algorithm}:{hexdigits[:12]}... (its pin tag is added)"
        )
    return None


def referrers_tag_refusal(tag: str) -> str:
    """Why a `sha256-<hex>` tag is not mirrored by name: in the OCI referrers tag schema it
    holds the index of another image's signatures and attestations (an earlier mirror also
    wrote its pin tags in that form). cosign's `sha256-<hex>.sig`, `.att` and `.sbom` are copied
    as listed."""
    algorithm, _, hexdigits = tag.partition("-")
    whole = DIGEST_LENGTHS.get(algorithm) == len(hexdigits)
    pin = f"pin it: TAG@{algorithm}:{hexdigits}" if whole else "pin it: TAG@<its digest>"
    return (
        f"{tag!r} is a referrers tag (OCI's referrers tag schema: the signatures and "
        f"attestations of the image {algorithm}:{hexdigits[:12]}...), not an image to mirror "
        f"by name (mirror's pin tags are pin-{algorithm}-<hex>); to mirror that image, {pin}"
    )


def _rule(data: Mapping[str, Any], where: str) -> TagRule:
    table = _mapping(data, where, _RULE_KEYS)
    if not table:
        raise ConfigError(f"{where}: a tag rule needs match, exclude, semver or newest")
    for key, value in table.items():  # `semver:` left empty: no narrowing, every tag chosen
        if value is None:
            raise ConfigError(
                f"{where}.{key}: no value (YAML reads an empty value, ~ and null as none): "
                "give one, or leave the key out"
            )
    patterns = {key: _regex(table.get(key), f"{where}.{key}") for key in ("match", "exclude")}
    semver = _semver(table.get("semver"), f"{where}.semver")
    newest = table.get("newest")
    if newest is not None and (
        isinstance(newest, bool) or not isinstance(newest, int) or newest < 1
    ):
        raise ConfigError(
            f"{where}.newest: expected a whole number of 1 or more, got {_kind(newest)}"
        )
    return TagRule(
        patterns["match"], patterns["exclude"], None if newest is None else int(newest), semver
    )


def _semver(data: Any, where: str) -> str | None:
    """A version range in npm's grammar ('>=3.18 <4', '^3.18', '3.x', '||')."""
    if data is None:
        return None
    text = _string(data, where)
    try:
        versions.check_range(text)
    except versions.BadRange as error:
        raise ConfigError(f"{where}: bad version range {_kind(text)}: {error}") from None
    return text


def _regex(data: Any, where: str) -> str | None:
    if data is None:
        return None
    pattern = _string(data, where)
    try:
        patterns.compiled(pattern)
    except patterns.PatternError as error:
        raise ConfigError(
            f"{where}: bad regular expression {_kind(pattern)}: {error} (tag rules use RE2 "
            "syntax, which matches in linear time: no backreferences or lookarounds; \\z, "
            "not \\Z)"
        ) from None
    return pattern


def _referrers(data: Any, where: str) -> ReferrerRule:
    """`true` (every referrer travels), `false` (none), or a list of artifact types (a media
    type, or a prefix of one ending in `*`)."""
    if data is True:
        return ReferrerRule()
    if data is False:
        return NO_REFERRERS
    if data == []:
        raise ConfigError(f"{where}: an empty list: list artifact types, or write false")
    if not isinstance(data, list):
        raise ConfigError(
            f"{where}: expected true, false or a list of artifact types like "
            f"[application/spdx+json], got {_kind(data)}"
        )
    for index, item in enumerate(data):
        problem = artifact_type_problem(item)
        if problem:
            raise ConfigError(f"{where}[{index}]: {problem}")
    seen: dict[str, str] = {}
    for item in data:  # media types are case-insensitive (RFC 6838)
        if item.lower() in seen:
            raise ConfigError(
                f"{where}: the artifact type {item!r} is listed twice"
                + (f" (also as {seen[item.lower()]!r})" if seen[item.lower()] != item else "")
            )
        seen[item.lower()] = item
    return ReferrerRule(types=tuple(data))


def _verify(table: Mapping[str, Any], where: str, base_dir: Path) -> Policy | None:
    """The verify gate's policy under `where` (`defaults.verify`, `images[0].verify`): keys
    (cosign public key files, relative to the config file), keyless identities, and a trust
    root file; `false` for none. Every file is read and checked now (PolicyError)."""
    key = where.rpartition(".")[2]
    if key not in table:
        return None
    data = table[key]
    if data is False:
        return None
    if data is None:
        raise ConfigError(
            f"{where}: no value (YAML reads an empty value, ~ and null as none): give keys "
            "or identities, or false"
        )
    policy = _mapping(data, where, _VERIFY_KEYS)
    keys = [
        base_dir / _string(path, f"{where}.keys[{index}]")
        for index, path in enumerate(_list(policy.get("keys", []), f"{where}.keys"))
    ]
    identities = [
        _identity(item, f"{where}.identities[{index}]")
        for index, item in enumerate(_list(policy.get("identities", []), f"{where}.identities"))
    ]
    root = policy.get("trust_root")
    trust_root = None if root is None else base_dir / _string(root, f"{where}.trust_root")
    from mirror.signatures import load_policy  # noqa: PLC0415 - cryptography: only here

    return load_policy(keys=keys, identities=identities, trust_root=trust_root, where=where)


def _identity(data: Any, where: str) -> Identity:
    from mirror.signatures import Identity  # noqa: PLC0415 - cryptography: only with a policy

    table = _mapping(data, where, _IDENTITY_KEYS)
    if "issuer" not in table:
        raise ConfigError(f"{where}.issuer: required (the OIDC issuer URL)")
    issuer = _string(table["issuer"], f"{where}.issuer")
    if not issuer.startswith(("https://", "http://")):
        raise ConfigError(
            f"{where}.issuer: expected the OIDC issuer's URL as Fulcio certificates carry it "
            f"(https://{issuer}), got {issuer!r}: without its scheme it never matches"
        )
    return Identity(
        issuer=issuer,
        subject=_optional_string(table.get("subject"), f"{where}.subject"),
        subject_regex=_optional_string(table.get("subject_regex"), f"{where}.subject_regex"),
    )


def _list(data: Any, where: str) -> list[Any]:
    if not isinstance(data, list):
        raise ConfigError(f"{where}: expected a list, got {_kind(data)}")
    return data


def _platforms(data: Any, where: str) -> tuple[str, ...]:
    """`all` (every platform, digests preserved) or a list like [linux/amd64, linux/arm64]."""
    if data == "all":
        return ALL_PLATFORMS
    if not isinstance(data, list) or not data:
        raise ConfigError(
            f"{where}: expected 'all' or a list of platforms like [linux/amd64], got {_kind(data)}"
        )
    for index, item in enumerate(data):
        if not isinstance(item, str) or not _PLATFORM.match(item):
            raise ConfigError(
                f"{where}[{index}]: expected os/arch or os/arch/variant, got {_kind(item)}"
            )
    if len(set(data)) != len(data):
        raise ConfigError(f"{where}: a platform is listed twice")
    return tuple(data)


def target_region(target: Target) -> str | None:
    """The target's region: its own, else AWS_REGION, else AWS_DEFAULT_REGION (botocore's
    order for these two); None when none is set."""
    return target.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


def _check_distinct_targets(config: Config) -> None:
    """Two `ecr` targets naming one registry and prefix (a region written in one and taken
    from the environment in the other is the same region): every image would be copied twice
    into the same repositories."""
    seen: dict[tuple[str | None, ...], int] = {}
    for index, target in enumerate(config.targets):
        key = (target.endpoint, target_region(target), target.registry_id, target.repository_prefix)
        first = seen.setdefault(key, index)
        if first != index:
            raise ConfigError(
                f"ecr[{index}]: the same registry and repository_prefix as ecr[{first}]: every "
                "image would be copied twice into the same repositories"
            )


def _check_same_images(config: Config, written: list[Any]) -> None:
    """One image and tag listed twice for one repository, perhaps in two spellings (`alpine`,
    `docker.io/alpine`). The same tag into another repository (a platform subset beside the
    whole image, say) is no mistake."""
    seen: dict[tuple[Repository, str, str], tuple[int, int]] = {}
    for index, image in enumerate(config.images):
        repository = config.destination_repository(image)
        for number, entry in enumerate(image.tags):
            key = (image.source, entry.tag, repository)
            first, first_number = seen.setdefault(key, (index, number))
            if (first, first_number) == (index, number):
                continue
            names = (written[first]["source"], written[index]["source"])
            same = f" ({names[0]!r} and {names[1]!r} are one image)" if names[0] != names[1] else ""
            raise ConfigError(
                f"images[{index}].tags[{number}]: {image.source}:{entry.tag} is already listed "
                f"at images[{first}].tags[{first_number}]{same}"
            )


def _check_derived_repositories(config: Config) -> None:
    """ECR's rule for every repository name `<prefix>/<source path>`, in every target: a name
    it refuses would fail every copy at CreateRepository."""
    rule = aws.repository_name_rule()
    for index, image in enumerate(config.images):
        ambiguous = None if image.repository else config.derived_problem(image.source)
        if ambiguous:
            raise ConfigError(f"images[{index}].source: {ambiguous}")
    for target_index, target in enumerate(config.targets):
        prefix_key = f"ecr[{target_index}]" if len(config.targets) > 1 else "ecr"
        for index, image in enumerate(config.images):
            if image.repository:
                continue
            name = config.destination_repository(image, target)
            problem = rule.problem(name)
            if problem:
                path = config.derived_path(image.source)
                what = "the source path" if path == image.source.path else "the host and path"
                origin = (
                    f"{prefix_key}.repository_prefix + {what}" if target.repository_prefix else what
                )
                raise ConfigError(
                    f"images[{index}].source: bad ECR repository name {name!r} from {origin} "
                    f"({problem})"
                )


def _check_unique_destinations(config: Config) -> None:
    """Two images never share an ECR repository and tag; nor a repository at all when one of
    them has a tag rule (its tags are not known before the run)."""
    for target_index, target in enumerate(config.targets):
        where = f" in ecr[{target_index}]" if len(config.targets) > 1 else ""
        seen: dict[tuple[str, str], int] = {}
        users: dict[str, list[int]] = {}
        for index, image in enumerate(config.images):
            repository = config.destination_repository(image, target)
            users.setdefault(repository, []).append(index)
            for entry in image.tags:
                earlier = seen.setdefault((repository, entry.tag), index)
                if earlier != index:
                    raise ConfigError(
                        f"images[{index}]: {repository}:{entry.tag} is already the destination "
                        f"of images[{earlier}]{where}"
                    )
        for repository, indexes in users.items():
            _check_rule_alone(config, repository, indexes, where)


def _check_rule_alone(config: Config, repository: str, indexes: list[int], where: str) -> None:
    """A repository that an image with a tag rule lands in holds no other source's images."""
    ruled = next((index for index in indexes if config.images[index].rule), None)
    if ruled is None:
        return
    source = config.images[ruled].source
    other = next((index for index in indexes if config.images[index].source != source), None)
    if other is not None:
        first, second = sorted((ruled, other))
        raise ConfigError(
            f"images[{second}]: {repository} is also the repository of images[{first}] "
            f"({config.images[first].source}), and a tag rule may choose any tag{where}: give "
            "one of them another repository"
        )


def _check_shared_repository_settings(config: Config) -> None:
    """Two images landing in one repository must not ask for different settings."""
    for target in config.targets:
        seen: dict[str, tuple[int, RepositorySettings]] = {}
        for index, image in enumerate(config.images):
            repository = config.destination_repository(image, target)
            settings = image.repository_settings.merged_over(target.repository_settings)
            earlier = seen.setdefault(repository, (index, settings))
            if earlier[1] != settings:
                raise ConfigError(
                    f"images[{index}].repository_settings: {repository} is also the repository "
                    f"of images[{earlier[0]}], with other settings"
                )


def _check_moving_tags(config: Config) -> None:
    """ECR takes at most MAX_EXCLUSIONS exclusion filters: with referrers on, mirror adds its
    own to an immutable repository's, which must leave room for them."""
    for target in config.targets:
        for repository, settings in config.repository_settings(target).items():
            mutability = settings.tag_mutability
            if mutability is None or len(mutability.exclusions) <= MAX_EXCLUSIONS:
                continue
            own = MAX_EXCLUSIONS - len(MOVING_TAG_FILTERS)
            raise ConfigError(
                f"repository_settings.tag_mutability of {repository}: with referrers on, "
                f"mirror adds the exclusion filters {', '.join(MOVING_TAG_FILTERS)} (the tags "
                f"cosign and the referrers tag schema move), and ECR takes at most "
                f"{MAX_EXCLUSIONS}: give at most {own} of your own, or referrers: false"
            )


# --- small typed readers -------------------------------------------------------------------------


def _mapping(data: Any, where: str, allowed: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_kind(data)}")
    for key in data:
        if key not in allowed:
            raise ConfigError(_unknown_key(key, where, allowed))
    return data


def _unknown_key(key: Any, where: str, allowed: Sequence[str]) -> str:
    plain = isinstance(key, str) and key.isprintable() and 0 < len(key) <= 80
    name = key if plain else _kind(key)
    path = name if where == "the file" else f"{where}.{name}"
    message = f"{path}: unknown key"
    close = difflib.get_close_matches(str(key)[:80], allowed, n=1, cutoff=0.6)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    else:
        message += f" (expected one of: {', '.join(allowed)})"
    return message


def _string(data: Any, where: str) -> str:
    if isinstance(data, str) and data:
        return data
    advice = yamlfile.not_a_string(data)
    if advice:
        raise ConfigError(f"{where}: {advice}")
    raise ConfigError(f"{where}: expected a non-empty string, got {_kind(data)}")


def _optional_string(data: Any, where: str) -> str | None:
    return None if data is None else _string(data, where)


def _bool(data: Any, where: str) -> bool:
    if not isinstance(data, bool):
        raise ConfigError(f"{where}: expected true or false, got {_kind(data)}")
    return data


def _unshown(data: Any) -> str:
    """How a wrong value under `credentials` is named: by its type only, as it may be a secret."""
    if data is None:
        return "nothing"
    kind = "text" if isinstance(data, str) else yamlfile.type_name(data)
    return f"{kind} (not shown: it may be a secret)"


def _env_name(data: Any, where: str) -> str:
    """The name of an environment variable. What is written instead is never shown: people
    paste the token itself here."""
    if isinstance(data, str) and _ENV_NAME.match(data) and not data.startswith(_TOKEN_PREFIXES):
        return data
    if data is None:
        got = "nothing"
    elif isinstance(data, str) and data.startswith(_TOKEN_PREFIXES):
        got = "what looks like an access token (not shown)"
    else:
        got = "text that is not a name" if isinstance(data, str) else yamlfile.type_name(data)
        got += " (not shown: it may be a secret)"
    raise ConfigError(
        f"{where}: expected the name of an environment variable (capitals, digits and '_'), "
        f"like DOCKERHUB_TOKEN; got {got}"
    )


def _check(parse_it: Callable[[str], T], value: str, where: str) -> T:
    try:
        return parse_it(value)
    except BadReference as error:
        raise ConfigError(f"{where}: {error}") from None


def check_repository_name(name: str, where: str) -> None:
    """ECR's own rule for repository names (botocore's model); ConfigError naming `where`."""
    problem = aws.repository_name_rule().problem(name)
    if problem:
        raise ConfigError(f"{where}: bad ECR repository name {name!r} ({problem})")


def _check_prefix(prefix: str, where: str) -> None:
    """The prefix's own pattern; the names it makes are checked whole, for their length."""
    rule = aws.repository_name_rule()
    if not rule.matches(prefix):
        raise ConfigError(f"{where}: bad ECR repository prefix {_kind(prefix)} ({rule})")
