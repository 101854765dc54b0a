"""Repository settings: what a mirrored ECR repository should look like, and how it differs.

`ecr.repository_settings` and `images[].repository_settings` in the config parse into
`RepositorySettings`; a field left out (None, or no tags) is not managed: mirror neither sets
nor checks it. `create_arguments` turns settings into CreateRepository's arguments, `drift`
compares them with what ECR reports (`ActualSettings`). Plain typed Python: mirror/aws.py
talks to ECR. The only I/O is reading a lifecycle policy given as the path of a JSON file.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mirror.errors import ConfigError
from mirror.yamlfile import Unread
from mirror.yamlfile import kind as _kind

SETTINGS_KEYS = ("scan_on_push", "tag_mutability", "encryption", "lifecycle_policy", "tags")
ENCRYPTION_KEYS = ("type", "kms_key")
TAG_MUTABILITIES = ("MUTABLE", "IMMUTABLE", "IMMUTABLE_WITH_EXCLUSION", "MUTABLE_WITH_EXCLUSION")
EXCLUSION_MODES = ("IMMUTABLE_WITH_EXCLUSION", "MUTABLE_WITH_EXCLUSION")
MUTABILITY_KEYS = ("mode", "exclusions")
MAX_EXCLUSIONS = 5  # ECR's imageTagMutabilityExclusionFilters: 1 to 5 wildcard filters
# botocore's ImageTagMutabilityExclusionFilterValue
_EXCLUSION = re.compile(r"[0-9a-zA-Z._*-]{1,128}\Z")
# ECR's EncryptionType (botocore's model): KMS_DSSE is dual-layer encryption with a KMS key.
ENCRYPTION_TYPES = ("AES256", "KMS", "KMS_DSSE")
KMS_TYPES = ("KMS", "KMS_DSSE")  # those that take a kms_key
MAX_TAGS = 50  # per ECR repository
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256
MIN_LIFECYCLE_POLICY = 100  # characters: ECR's (and botocore's) limits for lifecyclePolicyText
MAX_LIFECYCLE_POLICY = 30720
MAX_KMS_KEY = 2048
_RULE_KEYS = ("rulePriority", "selection", "action")
T = TypeVar("T")
NOT_SET = "(not set)"  # how an absent lifecycle policy or tag reads in a Drift


@dataclass(frozen=True)
class Encryption:
    """How ECR encrypts a repository: AES256, or KMS or KMS_DSSE (dual-layer) with a key
    (None: the AWS managed key)."""

    type: str
    kms_key: str | None = None

    def __str__(self) -> str:
        return f"{self.type} {self.kms_key}" if self.kms_key else self.type


@dataclass(frozen=True)
class TagMutability:
    """ECR's tag mutability: a mode and, for the *_WITH_EXCLUSION modes, wildcard filters
    (`*` matches any run of characters) naming the tags that are the exception."""

    mode: str = "MUTABLE"
    exclusions: tuple[str, ...] = ()  # sorted

    def immutable(self, tag: str) -> bool:
        """Does ECR refuse to move `tag`? (ECR API reference: imageTagMutability,
        imageTagMutabilityExclusionFilters.)"""
        excluded = any(_wildcard(pattern).fullmatch(tag) for pattern in self.exclusions)
        if self.mode == "IMMUTABLE_WITH_EXCLUSION":
            return not excluded
        if self.mode == "MUTABLE_WITH_EXCLUSION":
            return excluded
        return self.mode == "IMMUTABLE"

    def filters(self) -> list[dict[str, str]]:
        """imageTagMutabilityExclusionFilters, as CreateRepository and PutImageTagMutability
        take them."""
        return [{"filterType": "WILDCARD", "filter": pattern} for pattern in self.exclusions]

    def __str__(self) -> str:
        return f"{self.mode} ({', '.join(self.exclusions)})" if self.exclusions else self.mode


def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


@dataclass(frozen=True)
class RepositorySettings:
    """Wanted repository settings; None (or no tags) means "not managed"."""

    scan_on_push: bool | None = None
    tag_mutability: TagMutability | None = None
    encryption: Encryption | None = None
    lifecycle_policy: str | None = None  # canonical JSON text (see canonical_json)
    tags: tuple[tuple[str, str], ...] = ()  # sorted by key

    def merged_over(self, base: RepositorySettings) -> RepositorySettings:
        """These settings over `base`, key by key: a field set here wins; tags merge by key."""
        tags = dict(base.tags)
        tags.update(self.tags)
        return RepositorySettings(
            scan_on_push=_first(self.scan_on_push, base.scan_on_push),
            tag_mutability=_first(self.tag_mutability, base.tag_mutability),
            encryption=_first(self.encryption, base.encryption),
            lifecycle_policy=_first(self.lifecycle_policy, base.lifecycle_policy),
            tags=tuple(sorted(tags.items())),
        )


@dataclass(frozen=True)
class ActualSettings:
    """What ECR reports for an existing repository."""

    scan_on_push: bool
    tag_mutability: TagMutability
    encryption_type: str
    kms_key: str | None = None
    lifecycle_policy: str | None = None  # as ECR returns it; None: no policy
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Drift:
    """One managed setting that differs from the config. `fixable`: mirror can change it in
    place (encryption cannot be changed after a repository is created)."""

    setting: str  # scan_on_push, tag_mutability, encryption, lifecycle_policy or tags.<key>
    wanted: str
    actual: str
    fixable: bool


def _first(mine: T | None, base: T | None) -> T | None:
    return base if mine is None else mine


def canonical_json(data: Any) -> str:
    """The one text of a JSON value that settings are compared by."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


# --- parsing -------------------------------------------------------------------------------------


def parse_settings(data: Any, where: str, *, base_dir: Path) -> RepositorySettings:
    """Turn loaded YAML (`where` is its key path) into RepositorySettings; None gives the empty
    settings. A lifecycle policy given as a string is a JSON file relative to `base_dir` (the
    config file's directory). Every mistake raises ConfigError naming the key path."""
    if data is None:
        return RepositorySettings()
    table = _mapping(data, where, SETTINGS_KEYS)
    scan = table.get("scan_on_push")
    if scan is not None and not isinstance(scan, bool):
        raise ConfigError(f"{where}.scan_on_push: expected true or false, got {_kind(scan)}")
    return RepositorySettings(
        scan_on_push=scan,
        tag_mutability=_mutability(table.get("tag_mutability"), f"{where}.tag_mutability"),
        encryption=_encryption(table.get("encryption"), f"{where}.encryption"),
        lifecycle_policy=_lifecycle(
            table.get("lifecycle_policy"), f"{where}.lifecycle_policy", base_dir
        ),
        tags=_tags(table.get("tags"), f"{where}.tags"),
    )


def _mutability(data: Any, where: str) -> TagMutability | None:
    """`IMMUTABLE` (a mode), or `{mode: IMMUTABLE_WITH_EXCLUSION, exclusions: [latest]}`."""
    if data is None:
        return None
    table = _mapping(data, where, MUTABILITY_KEYS) if isinstance(data, dict) else {"mode": data}
    mode = table.get("mode")
    if mode not in TAG_MUTABILITIES:
        raise ConfigError(
            f"{where}: expected one of {', '.join(TAG_MUTABILITIES)}, got {_kind(mode)}"
        )
    exclusions = table.get("exclusions")
    if mode not in EXCLUSION_MODES:
        if exclusions is not None:
            raise ConfigError(
                f"{where}.exclusions: only with IMMUTABLE_WITH_EXCLUSION or MUTABLE_WITH_EXCLUSION"
            )
        return TagMutability(str(mode))
    if not isinstance(exclusions, list) or not 1 <= len(exclusions) <= MAX_EXCLUSIONS:
        raise ConfigError(
            f"{where}.exclusions: {mode} needs a list of 1 to {MAX_EXCLUSIONS} tag filters "
            f"(like latest or nightly-*), got {_kind(exclusions)}"
        )
    for index, pattern in enumerate(exclusions):
        if not isinstance(pattern, str) or not _EXCLUSION.match(pattern):
            raise ConfigError(
                f"{where}.exclusions[{index}]: expected a tag filter of 1 to 128 letters, digits, "
                f"'.', '_', '-' and '*', got {_kind(pattern)}"
            )
    return TagMutability(str(mode), tuple(sorted(set(exclusions))))


def _encryption(data: Any, where: str) -> Encryption | None:
    if data is None:
        return None
    table = _mapping(data, where, ENCRYPTION_KEYS)
    if "type" not in table:
        raise ConfigError(f"{where}.type: required (AES256, KMS or KMS_DSSE)")
    kind = table["type"]
    if kind not in ENCRYPTION_TYPES:
        raise ConfigError(f"{where}.type: expected AES256, KMS or KMS_DSSE, got {_kind(kind)}")
    key = table.get("kms_key")
    if key is None:
        return Encryption(str(kind))
    if kind not in KMS_TYPES:
        raise ConfigError(f"{where}.kms_key: only allowed with type KMS or KMS_DSSE")
    if not isinstance(key, str) or not key:
        raise ConfigError(f"{where}.kms_key: expected a KMS key ARN, ID or alias, got {_kind(key)}")
    if len(key) > MAX_KMS_KEY:
        raise ConfigError(f"{where}.kms_key: longer than {MAX_KMS_KEY} characters")
    return Encryption(str(kind), key)


def _lifecycle(data: Any, where: str, base_dir: Path) -> str | None:
    if data is None:
        return None
    if isinstance(data, str) and data:
        data = _policy_file(base_dir / data, where)
    elif not isinstance(data, dict):
        raise ConfigError(
            f"{where}: expected a mapping (ECR's lifecycle policy) or the path of a JSON file, "
            f"got {_kind(data)}"
        )
    rules = data.get("rules")
    if not isinstance(rules, list) or not rules:
        raise ConfigError(f"{where}: expected 'rules', a non-empty list of lifecycle rules")
    for index, rule in enumerate(rules):
        missing = [key for key in _RULE_KEYS if not isinstance(rule, dict) or key not in rule]
        if missing:
            raise ConfigError(
                f"{where}: rules[{index}] has no {missing[0]!r} (a lifecycle rule has "
                f"{', '.join(_RULE_KEYS)})"
            )
    bound = 4 * MAX_LIFECYCLE_POLICY  # counted before serialising: YAML aliases can make a
    if _json_size(data, bound) > bound:  # few lines a thousand million characters of JSON
        raise ConfigError(
            f"{where}: more than {MAX_LIFECYCLE_POLICY} characters as JSON; ECR takes "
            f"{MIN_LIFECYCLE_POLICY} to {MAX_LIFECYCLE_POLICY}"
        )
    try:
        text = canonical_json(data)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: holds a value JSON cannot express (a date?)") from None
    if not MIN_LIFECYCLE_POLICY <= len(text) <= MAX_LIFECYCLE_POLICY:
        raise ConfigError(
            f"{where}: {len(text)} characters as JSON; ECR takes {MIN_LIFECYCLE_POLICY} to "
            f"{MAX_LIFECYCLE_POLICY}"
        )
    return text


def _policy_file(path: Path, where: str) -> dict[str, Any]:
    """The lifecycle policy object in a JSON file."""
    if path.exists() and not (path.is_file() or path.is_dir()):
        # /dev/zero never ends, a FIFO blocks: only a regular file can hold a policy
        raise ConfigError(f"{where}: {str(path)!r} is not a regular file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file {str(path)!r}") from None
    except (OSError, ValueError) as error:  # ValueError: not UTF-8, or a NUL in the name
        problem = error.strerror if isinstance(error, OSError) else str(error)
        raise ConfigError(f"{where}: cannot read {str(path)!r}: {problem}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{where}: {str(path)!r} is not JSON: line {error.lineno}, column {error.colno}: "
            f"{error.msg}"
        ) from None
    except (ValueError, RecursionError) as error:  # a 5,000-digit number; nesting too deep
        raise ConfigError(
            f"{where}: {str(path)!r}: JSON that Python cannot read ({type(error).__name__})"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: {str(path)!r} holds {_kind(data)}, not a lifecycle policy object"
        )
    return data


def _json_size(data: Any, limit: int) -> int:
    """About how long `data` is as JSON, counting only until past `limit` (so a structure of
    shared YAML aliases is never expanded)."""
    size, stack = 0, [data]
    while stack and size <= limit:
        item = stack.pop()
        if isinstance(item, dict):
            size += 2 + 2 * len(item)
            for key, value in item.items():
                stack += [key, value]
        elif isinstance(item, list):
            size += 2 + len(item)
            stack += item
        else:
            size += len(str(item)) + 2
    return size


def _tags(data: Any, where: str) -> tuple[tuple[str, str], ...]:
    if data is None:
        return ()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of tag names to values, got {_kind(data)}")
    tags: list[tuple[str, str]] = []
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"{where}: tag name {_kind(key)} is not a string{_quote_it(key)}")
        if not 1 <= len(key) <= MAX_TAG_KEY:
            raise ConfigError(f"{where}: tag name {key!r} is not 1 to {MAX_TAG_KEY} characters")
        if key.lower().startswith("aws:"):
            raise ConfigError(f"{where}.{key}: tag names starting with 'aws:' are reserved")
        if not isinstance(value, str):
            raise ConfigError(
                f"{where}.{key}: expected a string, got {_kind(value)}{_quote_it(value)}"
            )
        if len(value) > MAX_TAG_VALUE:
            raise ConfigError(f"{where}.{key}: value longer than {MAX_TAG_VALUE} characters")
        tags.append((key, value))
    if len(tags) > MAX_TAGS:
        raise ConfigError(f"{where}: {len(tags)} tags, more than ECR's {MAX_TAGS}")
    return tuple(sorted(tags))


def _mapping(data: Any, where: str, allowed: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_kind(data)}")
    for key in data:
        if key not in allowed:
            message = f"{where}.{key}: unknown key"
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            if close:
                message += f" (did you mean {close[0]!r}?)"
            else:
                message += f" (expected one of: {', '.join(allowed)})"
            raise ConfigError(message)
    return data


def _quote_it(data: Any) -> str:
    """The hint for a number or boolean where YAML needs a string."""
    return " (write it in quotes)" if isinstance(data, (bool, int, float, Unread)) else ""


# --- ECR arguments and drift ---------------------------------------------------------------------


def create_arguments(settings: RepositorySettings) -> dict[str, Any]:
    """CreateRepository's arguments for the managed settings (not repositoryName/registryId).
    The lifecycle policy is not among them: it is put after creation (PutLifecyclePolicy)."""
    arguments: dict[str, Any] = {}
    if settings.scan_on_push is not None:
        arguments["imageScanningConfiguration"] = {"scanOnPush": settings.scan_on_push}
    if settings.tag_mutability is not None:
        arguments["imageTagMutability"] = settings.tag_mutability.mode
        if settings.tag_mutability.exclusions:
            arguments["imageTagMutabilityExclusionFilters"] = settings.tag_mutability.filters()
    if settings.encryption is not None:
        encryption = {"encryptionType": settings.encryption.type}
        if settings.encryption.kms_key:
            encryption["kmsKey"] = settings.encryption.kms_key
        arguments["encryptionConfiguration"] = encryption
    if settings.tags:
        arguments["tags"] = [{"Key": key, "Value": value} for key, value in settings.tags]
    return arguments


def drift(settings: RepositorySettings, actual: ActualSettings) -> list[Drift]:
    """How the repository differs from the managed settings, in a stable order. Tags the
    repository has beyond the configured ones are not drift."""
    found: list[Drift] = []
    if settings.scan_on_push is not None and settings.scan_on_push != actual.scan_on_push:
        found.append(
            Drift("scan_on_push", _bool(settings.scan_on_push), _bool(actual.scan_on_push), True)
        )
    if settings.tag_mutability is not None and settings.tag_mutability != actual.tag_mutability:
        found.append(
            Drift("tag_mutability", str(settings.tag_mutability), str(actual.tag_mutability), True)
        )
    if settings.encryption is not None and not _same_encryption(settings.encryption, actual):
        have = Encryption(actual.encryption_type, actual.kms_key)
        found.append(Drift("encryption", str(settings.encryption), str(have), False))
    if settings.lifecycle_policy is not None:
        have_policy = _canonical_text(actual.lifecycle_policy)
        if have_policy != settings.lifecycle_policy:
            found.append(
                Drift("lifecycle_policy", settings.lifecycle_policy, have_policy or NOT_SET, True)
            )
    for key, value in settings.tags:
        have_tag = actual.tags.get(key)
        if have_tag != value:
            found.append(
                Drift(f"tags.{key}", value, NOT_SET if have_tag is None else have_tag, True)
            )
    return found


def _same_encryption(wanted: Encryption, actual: ActualSettings) -> bool:
    if wanted.type != actual.encryption_type:
        return False
    if wanted.kms_key is None or wanted.kms_key == actual.kms_key:
        return True
    key = wanted.kms_key
    if key.startswith("alias/") or ":alias/" in key:
        # ECR reports the key's ARN, never the alias: the alias cannot be compared.
        return True
    # A bare key ID names the key whose ARN ends in key/<id>.
    return ":" not in key and (actual.kms_key or "").endswith(f":key/{key}")


def _canonical_text(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return canonical_json(json.loads(text))
    except (ValueError, RecursionError):
        return text


def _bool(value: bool) -> str:
    return "true" if value else "false"
