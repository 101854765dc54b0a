"""Image names as the distribution reference grammar defines them, and Docker Hub's normalisation.

Grammar (github.com/distribution/reference, regexp.go):
    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [domain "/"] path-component ["/" path-component]*
    domain     := domain-component ["." domain-component]* [":" port]
    path-comp  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest     := algorithm ":" hex (at least 32 hex digits)
The first part is a domain when it holds "." or ":", or is "localhost"; otherwise the name
is on the default registry, where one-part names get "library/" (ruby -> library/ruby).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?\Z")
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*\Z")
_TAG = re.compile(r"[\w][\w.-]{0,127}\Z", re.ASCII)
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}\Z")
_ECR_REPOSITORY = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*\Z")
NAME_MAX = 255


class BadReference(ValueError):
    """A name, tag or digest that breaks the grammar; the message says how."""


@dataclass(frozen=True, order=True)
class Repository:
    """A repository on a registry: `registry` is as written (docker.io, quay.io, 127.0.0.1:5000)."""

    registry: str
    path: str

    def __str__(self) -> str:
        return f"{self.registry}/{self.path}"


@dataclass(frozen=True)
class ImageRef:
    """One image: a repository plus a tag and/or a digest."""

    repository: Repository
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = str(self.repository)
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def check_tag(tag: str) -> str:
    if not _TAG.match(tag):
        raise BadReference(
            f"bad tag {tag!r} (a tag is 1 to 128 letters, digits, '_', '.' or '-', "
            "and does not start with '.' or '-')"
        )
    return tag


def check_digest(digest: str) -> str:
    if not _DIGEST.match(digest):
        raise BadReference(f"bad digest {digest!r} (expected sha256: and 64 hex digits)")
    return digest


def check_ecr_repository(name: str) -> str:
    if not (2 <= len(name) <= 256 and _ECR_REPOSITORY.match(name)):
        raise BadReference(
            f"bad ECR repository name {name!r} (lowercase letters, digits, '.', '_', '-' "
            "separated by '/', 2 to 256 characters)"
        )
    return name


def _is_domain(part: str) -> bool:
    return "." in part or ":" in part or part == "localhost"


def parse_repository(name: str, *, default_registry: str = DOCKER_HUB) -> Repository:
    """Parse a repository name without tag or digest, filling in the default registry."""
    if not name or name.startswith("-"):
        raise BadReference(f"bad image name {name!r}")
    if len(name) > NAME_MAX:
        raise BadReference(f"bad image name {name[:40]!r}...: longer than {NAME_MAX} characters")
    first, _, rest = name.partition("/")
    has_host = bool(rest) and _is_domain(first)
    if has_host and not _DOMAIN.match(first):
        raise BadReference(f"bad registry host {first!r} in image name {name!r}")
    registry, path = (first, rest) if has_host else (default_registry, name)
    for component in path.split("/"):
        if not _PATH_COMPONENT.match(component):
            raise BadReference(
                f"bad image name {name!r} (path parts are lowercase letters and digits, "
                "joined by '.', '_', '__' or '-')"
            )
    if not has_host and "/" not in path:
        # As on Docker Hub, and on whatever registry stands in for it (source.registry).
        path = f"library/{path}"
    return Repository(registry, path)


def parse_reference(text: str, *, default_registry: str = DOCKER_HUB) -> ImageRef:
    """Parse `name[:tag][@digest]` as a user writes it after FROM; no tag and no digest = latest."""
    name, digest = text, None
    if "@" in text:
        name, _, digest = text.partition("@")
        check_digest(digest)
    tag = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], check_tag(name[colon + 1 :])
    repository = parse_repository(name, default_registry=default_registry)
    if tag is None and digest is None:
        tag = "latest"
    return ImageRef(repository, tag, digest)


def api_host(registry: str) -> str:
    """The host that serves the registry API: Docker Hub's is registry-1.docker.io."""
    return DOCKER_HUB_API if registry == DOCKER_HUB else registry
