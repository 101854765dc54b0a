"""The vocabulary of images and registries, at the bottom of the tree: no I/O, no other step.

Media types, descriptors, manifests, tag lists and the pull budget a registry reports, in the
terms of the OCI distribution and image specs (and Docker's, where registries still serve them);
an image index's entries and platforms; the annotations mirror writes on an index of its own.
Every module above speaks these; only mirror/registry.py makes them from HTTP answers.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mirror.errors import MirrorError, remember_login

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_TYPES = (OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
# Docker's schema 1 (Docker 1.9 and older): registries still serve the images pushed so.
SCHEMA1_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.docker.distribution.manifest.v1+json",
    }
)
# Annotations on an index mirror writes for a platform subset: where it came from.
SOURCE_DIGEST = "io.github.mirror.source.digest"
PLATFORMS = "io.github.mirror.platforms"


@dataclass(frozen=True)
class RateLimit:
    """Docker Hub's `ratelimit-limit` / `ratelimit-remaining` headers (pulls per window)."""

    limit: int
    remaining: int


@dataclass(frozen=True)
class Descriptor:
    """What a manifest HEAD told (go-containerregistry's remote.Descriptor): whether it
    exists, its digest, size and media type, and the pull budget the answer reported.
    `fetched`: the HEAD told too little (no digest, or 405) and a GET was made instead, which
    Docker Hub counts as a pull; `body` is then the manifest."""

    found: bool
    digest: str | None = None
    rate_limit: RateLimit | None = None
    media_type: str = ""
    size: int = 0
    fetched: bool = False
    body: bytes = field(default=b"", repr=False)  # the manifest, when `fetched`

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


@dataclass(frozen=True)
class Manifest:
    """A manifest read with a GET (a pull on Docker Hub): its media type and bytes, and the
    budget the answer reported."""

    media_type: str
    body: bytes = field(repr=False)
    rate_limit: RateLimit | None = None


@dataclass(frozen=True)
class TagList:
    """A repository's tags; `warning` says why the list may be incomplete."""

    tags: tuple[str, ...]
    warning: str | None = None


@dataclass(frozen=True)
class Login:
    """A username and password for one registry; neither ever shows in a repr or a message.

    `origin` says where they came from ("$DOCKERHUB_USERNAME and $DOCKERHUB_TOKEN"), for
    messages: a message names the origin, never a value.
    """

    username: str = field(repr=False)
    password: str = field(repr=False)
    origin: str = "the configured credentials"

    def __post_init__(self) -> None:
        remember_login(self.username, self.password)  # hidden wherever a registry quotes it

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def sha256(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def digest_of(body: bytes, like: str) -> str:
    """The digest of `body` in the algorithm of `like` (sha256, sha384 or sha512)."""
    algorithm = like.partition(":")[0]
    if algorithm not in ("sha256", "sha384", "sha512"):
        algorithm = "sha256"
    return f"{algorithm}:{hashlib.new(algorithm, body).hexdigest()}"


# --- image indexes ------------------------------------------------------------------------------


def index_of(body: bytes, source: object) -> dict[str, Any]:
    """An image index's JSON, checked as far as a subset needs: entries with a digest.
    MirrorError naming `source` when it is not one."""
    try:
        index = json.loads(body)
    except (ValueError, RecursionError):
        index = None
    entries = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(entries, list) or not all(
        isinstance(entry, dict) and isinstance(entry.get("digest"), str) for entry in entries
    ):
        raise MirrorError(f"{source}: the source's image index is not valid JSON of an index")
    checked: dict[str, Any] = index
    return checked


def choose_platforms(
    manifests: list[dict[str, Any]], wanted: Sequence[str]
) -> list[dict[str, Any]]:
    """The index entries for the wanted platforms. `linux/arm64` matches any variant;
    `linux/arm/v7` only that variant. Attestations (platform unknown/unknown) are left out."""
    chosen = []
    for entry in manifests:
        os_arch, full = _platform(entry)
        if os_arch in wanted or full in wanted:
            chosen.append(entry)
    return chosen


def platform_names(manifests: list[dict[str, Any]]) -> list[str]:
    return [_platform(entry)[1] for entry in manifests]


def _platform(entry: dict[str, Any]) -> tuple[str, str]:
    """An index entry's platform as the config writes it: (`os/arch`, `os/arch/variant`, or
    `os/arch` again when it has no variant)."""
    platform = entry.get("platform")
    platform = platform if isinstance(platform, dict) else {}
    os_arch = f"{platform.get('os')}/{platform.get('architecture')}"
    return os_arch, f"{os_arch}/{platform['variant']}" if platform.get("variant") else os_arch


def filtered_index(
    index: dict[str, Any],
    chosen: list[dict[str, Any]],
    source_digest: str,
    platforms: Sequence[str],
    media_type: str = OCI_INDEX,
) -> bytes:
    """An index of the chosen entries, of the source's own type (an OCI index, or a Docker
    manifest list: the family of its children, FACTS.md), recording where it came from in its
    annotations (which a Docker manifest list's parsers pass over)."""
    annotations = dict(index.get("annotations") or {})
    annotations[SOURCE_DIGEST] = source_digest
    annotations[PLATFORMS] = ",".join(platforms)
    document = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": chosen,
        "annotations": annotations,
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def made_from(index: dict[str, Any], source_digest: str, platforms: Sequence[str]) -> bool:
    """Is `index` one mirror wrote from `source_digest` for exactly `platforms` (its
    annotations say so)?"""
    annotations = index.get("annotations") or {}
    return bool(
        isinstance(annotations, dict)
        and annotations.get(SOURCE_DIGEST) == source_digest
        and annotations.get(PLATFORMS) == ",".join(platforms)
    )
