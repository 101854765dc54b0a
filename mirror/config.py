"""The YAML config, parsed into frozen records; every mistake is one line naming its key path.

The keys are a public contract; README's "Config reference" documents each one.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mirror.errors import ConfigError
from mirror.reference import (
    DOCKER_HUB,
    BadReference,
    Repository,
    check_ecr_repository,
    check_tag,
    parse_repository,
)

T = TypeVar("T")
DEFAULT_PATH = "mirror.yaml"
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?\Z")
ENV_PATH = "MIRROR_CONFIG"


@dataclass(frozen=True)
class Credentials:
    """Where the source registry's username and password come from (never the values):
    two environment variables, or one Secrets Manager secret holding {"username", "password"}."""

    username_env: str | None = None
    password_env: str | None = None
    secrets_manager: str | None = None


@dataclass(frozen=True)
class Source:
    registry: str = DOCKER_HUB
    tls_verify: bool = True
    credentials: Credentials | None = None


@dataclass(frozen=True)
class Ecr:
    region: str | None = None
    registry_id: str | None = None
    repository_prefix: str = ""
    create_repositories: bool = True
    endpoint: str | None = None
    tls_verify: bool = True


@dataclass(frozen=True)
class Image:
    source: Repository
    tags: tuple[str, ...]
    repository: str | None = None  # explicit ECR repository; None = prefix + source path
    platforms: str = "all"


@dataclass(frozen=True)
class Config:
    path: Path
    source: Source = field(default_factory=Source)
    ecr: Ecr = field(default_factory=Ecr)
    platforms: str = "all"
    images: tuple[Image, ...] = ()

    def destination_repository(self, image: Image) -> str:
        """The ECR repository an image lands in: explicit, or <prefix>/<path on the source>."""
        if image.repository:
            return image.repository
        prefix = self.ecr.repository_prefix
        return f"{prefix}/{image.source.path}" if prefix else image.source.path

    def repository_for(self, source: Repository) -> str:
        """For `ensure`: the listed image's repository when the config has it, else the default."""
        for image in self.images:
            if image.source == source:
                return self.destination_repository(image)
        return self.destination_repository(Image(source, ()))


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
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: {_yaml_problem(error)}") from None
    try:
        return parse(data, path)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or "not valid YAML"
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: YAML syntax error: {problem}"
    return f"YAML syntax error: {problem}"


# --- parsing -------------------------------------------------------------------------------------

_TOP_KEYS = ("source", "ecr", "defaults", "images")
_SOURCE_KEYS = ("registry", "tls_verify", "credentials")
_CREDENTIAL_KEYS = ("username_env", "password_env", "secrets_manager")
_ECR_KEYS = (
    "region",
    "registry_id",
    "repository_prefix",
    "create_repositories",
    "endpoint",
    "tls_verify",
)
_DEFAULTS_KEYS = ("platforms",)
_IMAGE_KEYS = ("source", "tags", "repository", "platforms")


def parse(data: Any, path: Path) -> Config:
    """Turn loaded YAML into a Config. Errors name the key path (`images[2].tags[0]`)."""
    if data is None:
        data = {}
    top = _mapping(data, "the file", _TOP_KEYS)
    source = _parse_source(top.get("source"), "source")
    ecr = _parse_ecr(top.get("ecr"), "ecr")
    defaults = _mapping(top.get("defaults") or {}, "defaults", _DEFAULTS_KEYS)
    platforms = _platforms(defaults.get("platforms", "all"), "defaults.platforms")
    images = _parse_images(top.get("images"), source, platforms)
    config = Config(path, source, ecr, platforms, images)
    _check_unique_destinations(config)
    return config


def _parse_source(data: Any, where: str) -> Source:
    if data is None:
        return Source()
    table = _mapping(data, where, _SOURCE_KEYS)
    registry = _string(table.get("registry", DOCKER_HUB), f"{where}.registry")
    _check(_host_name, registry, f"{where}.registry")
    return Source(
        registry=registry,
        tls_verify=_bool(table.get("tls_verify", True), f"{where}.tls_verify"),
        credentials=_parse_credentials(table.get("credentials"), f"{where}.credentials"),
    )


def _parse_credentials(data: Any, where: str) -> Credentials | None:
    if data is None:
        return None
    table = _mapping(data, where, _CREDENTIAL_KEYS)
    if "secrets_manager" in table:
        if "username_env" in table or "password_env" in table:
            raise ConfigError(
                f"{where}: give either secrets_manager or username_env and password_env, not both"
            )
        return Credentials(
            secrets_manager=_string(table["secrets_manager"], f"{where}.secrets_manager")
        )
    for key in ("username_env", "password_env"):
        if key not in table:
            raise ConfigError(f"{where}.{key}: required (the name of an environment variable)")
    return Credentials(
        username_env=_env_name(table["username_env"], f"{where}.username_env"),
        password_env=_env_name(table["password_env"], f"{where}.password_env"),
    )


def _parse_ecr(data: Any, where: str) -> Ecr:
    if data is None:
        return Ecr()
    table = _mapping(data, where, _ECR_KEYS)
    if isinstance(table.get("registry_id"), int):
        raise ConfigError(
            f"{where}.registry_id: write the account ID in quotes, as a string "
            f'("{table["registry_id"]}"): a number loses leading zeros'
        )
    registry_id = _optional_string(table.get("registry_id"), f"{where}.registry_id")
    if registry_id is not None and not (registry_id.isdigit() and len(registry_id) == 12):
        raise ConfigError(
            f"{where}.registry_id: expected a 12-digit account ID, got {registry_id!r}"
        )
    prefix = _optional_string(table.get("repository_prefix"), f"{where}.repository_prefix")
    prefix = (prefix or "").strip("/")
    if prefix:
        _check(_prefix, prefix, f"{where}.repository_prefix")
    endpoint = _optional_string(table.get("endpoint"), f"{where}.endpoint")
    if endpoint is not None:
        _check(_host_name, endpoint, f"{where}.endpoint")
    return Ecr(
        region=_optional_string(table.get("region"), f"{where}.region"),
        registry_id=registry_id,
        repository_prefix=prefix,
        create_repositories=_bool(
            table.get("create_repositories", True), f"{where}.create_repositories"
        ),
        endpoint=endpoint,
        tls_verify=_bool(table.get("tls_verify", True), f"{where}.tls_verify"),
    )


def _parse_images(data: Any, source: Source, platforms: str) -> tuple[Image, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        raise ConfigError(f"images: expected a list of images, got {_kind(data)}")
    return tuple(
        _parse_image(item, f"images[{index}]", source, platforms) for index, item in enumerate(data)
    )


def _parse_image(data: Any, where: str, source: Source, platforms: str) -> Image:
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
        _check(check_ecr_repository, explicit, f"{where}.repository")
    return Image(
        source=repository,
        tags=_tags(table["tags"], f"{where}.tags"),
        repository=explicit,
        platforms=_platforms(table.get("platforms", platforms), f"{where}.platforms"),
    )


def _tags(data: Any, where: str) -> tuple[str, ...]:
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{where}: expected a non-empty list of tags, got {_kind(data)}")
    tags = []
    for index, item in enumerate(data):
        tag = _string(item, f"{where}[{index}]")
        _check(check_tag, tag, f"{where}[{index}]")
        tags.append(tag)
    duplicates = sorted({tag for tag in tags if tags.count(tag) > 1})
    if duplicates:
        raise ConfigError(f"{where}: tag {duplicates[0]!r} is listed twice")
    return tuple(tags)


def _platforms(data: Any, where: str) -> str:
    if data != "all":
        raise ConfigError(f"{where}: expected 'all', got {data!r}")
    return "all"


def _check_unique_destinations(config: Config) -> None:
    seen: dict[tuple[str, str], int] = {}
    for index, image in enumerate(config.images):
        repository = config.destination_repository(image)
        for tag in image.tags:
            earlier = seen.setdefault((repository, tag), index)
            if earlier != index:
                raise ConfigError(
                    f"images[{index}]: {repository}:{tag} is already the destination of "
                    f"images[{earlier}]"
                )


# --- small typed readers -------------------------------------------------------------------------


def _mapping(data: Any, where: str, allowed: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_kind(data)}")
    for key in data:
        if key not in allowed:
            raise ConfigError(_unknown_key(str(key), where, allowed))
    return data


def _unknown_key(key: str, where: str, allowed: Sequence[str]) -> str:
    path = key if where == "the file" else f"{where}.{key}"
    message = f"{path}: unknown key"
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    else:
        message += f" (expected one of: {', '.join(allowed)})"
    return message


def _string(data: Any, where: str) -> str:
    if not isinstance(data, str) or not data:
        raise ConfigError(f"{where}: expected a non-empty string, got {_kind(data)}")
    return data


def _optional_string(data: Any, where: str) -> str | None:
    return None if data is None else _string(data, where)


def _bool(data: Any, where: str) -> bool:
    if not isinstance(data, bool):
        raise ConfigError(f"{where}: expected true or false, got {_kind(data)}")
    return data


def _env_name(data: Any, where: str) -> str:
    name = _string(data, where)
    if not name.replace("_", "a").isalnum() or name[0].isdigit():
        raise ConfigError(f"{where}: expected an environment variable name, got {name!r}")
    return name


def _check(parse_it: Callable[[str], T], value: str, where: str) -> T:
    try:
        return parse_it(value)
    except BadReference as error:
        raise ConfigError(f"{where}: {error}") from None


def _kind(data: Any) -> str:
    """How a wrong value is named in a message: its value when short, else its type."""
    if isinstance(data, bool):
        return f"{str(data).lower()} (a boolean)"
    if isinstance(data, (int, float)):
        return f"{data!r} (a number)"
    if isinstance(data, str):
        return repr(data)
    names = {type(None): "nothing", list: "a list", dict: "a mapping"}
    return names.get(type(data), type(data).__name__)


def _host_name(host: str) -> str:
    if not _HOST.match(host):
        raise BadReference(f"bad registry host {host!r} (expected host or host:port)")
    return host


def _prefix(prefix: str) -> str:
    return check_ecr_repository(f"{prefix}/x")
