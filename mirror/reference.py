"""Image names as the distribution reference grammar defines them, and Docker Hub's normalisation.

Grammar (github.com/distribution/reference, regexp.go):
    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [domain "/"] path-component ["/" path-component]*
    domain     := domain-component ["." domain-component]* [":" port]
    path-comp  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest     := algorithm ":" hex (sha256: 64, sha384: 96, sha512: 128 lowercase hex digits)
The first part is a domain when it holds "." or ":", or is "localhost"; otherwise the name
is on Docker Hub, where one-part names get "library/" (ruby -> library/ruby).

Docker Hub has several spellings (normalize.go's splitDockerDomain): `ruby`, `library/ruby`,
`docker.io/ruby`, `index.docker.io/ruby` all name docker.io/library/ruby; so does
`registry-1.docker.io/ruby` (Docker Hub's API host), and host names are not case-sensitive.
Every spelling parses to one canonical Repository, so that the checks, the ECR repository, the
de-duplication and the report agree. The registry that stands in for Docker Hub
(`source.registry`, e.g. a pull-through mirror) receives every Docker Hub spelling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mirror.errors import shortened

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
# normalize.go canonicalises docker.io and index.docker.io (the legacy "Docker Index");
# registry-1.docker.io is where Docker Hub's registry API answers, the same repositories.
DOCKER_HUB_HOSTS = frozenset({DOCKER_HUB, "index.docker.io", DOCKER_HUB_API})
OFFICIAL_PREFIX = "library/"

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::([0-9]+))?\Z")
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*\Z")
_TAG = re.compile(r"[\w][\w.-]{0,127}\Z", re.ASCII)
_IDENTIFIER = re.compile(r"[a-f0-9]{64}\Z")  # an image ID: normalize.go refuses it as a name
# The algorithms registries verify (opencontainers/go-digest): lowercase hex of a fixed length.
DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
NAME_MAX = 255
PORT_MAX = 65535
HOST_MAX = 253  # a DNS name's longest text form


class BadReference(ValueError):
    """A name, tag or digest that breaks the grammar; the message says how."""


@dataclass(frozen=True, order=True)
class Repository:
    """A repository on a registry. `registry` is `docker.io` for every Docker Hub spelling (or
    the registry standing in for Docker Hub); other hosts are as written (quay.io,
    127.0.0.1:5000)."""

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


def is_tag(text: str) -> bool:
    """Does `text` keep the distribution grammar's rule for a tag?"""
    return _TAG.match(text) is not None


def check_tag(tag: str) -> str:
    if not is_tag(tag):
        raise BadReference(
            f"bad tag {tag!r} (a tag is 1 to 128 letters, digits, '_', '.' or '-', "
            "and does not start with '.' or '-')"
        )
    return tag


def check_digest(digest: str) -> str:
    """`sha256:` and 64 lowercase hex digits (or sha384: 96, sha512: 128): what registries take.
    Anything else passes a loose grammar but fails on every registry with an HTTP error."""
    algorithm, colon, hexdigits = digest.partition(":")
    length = DIGEST_LENGTHS.get(algorithm)
    if not colon:
        raise BadReference(
            f"bad digest {shortened(digest)!r} (expected sha256: and 64 lowercase hex digits)"
        )
    if length is None:
        raise BadReference(
            f"bad digest {shortened(digest)!r} (registries take sha256, sha384 or sha512, "
            f"not {shortened(algorithm)!r})"
        )
    wrong = next((char for char in hexdigits if char not in "0123456789abcdef"), None)
    if wrong is not None or len(hexdigits) != length:
        got = f"got {wrong!r}" if wrong is not None else f"got {len(hexdigits)}"
        raise BadReference(
            f"bad digest {shortened(digest)!r} ({algorithm} takes {length} lowercase hex digits, "
            f"{got})"
        )
    return digest


def check_host(host: str) -> str:
    """A registry host: DNS name or IPv4 address, with an optional port from 1 to 65535."""
    match = _DOMAIN.match(host)
    if not match:
        raise BadReference(f"bad registry host {shortened(host)!r} (expected host or host:port)")
    if len(host.partition(":")[0]) > HOST_MAX:
        raise BadReference(
            f"bad registry host {shortened(host)!r} (longer than {HOST_MAX} characters)"
        )
    port = match.group(1)
    if port is not None and not (len(port) <= 5 and 1 <= int(port) <= PORT_MAX):
        raise BadReference(
            f"bad registry host {shortened(host)!r} (port {shortened(port)} is not 1 to {PORT_MAX})"
        )
    return host


def is_docker_hub(host: str) -> bool:
    """True for every spelling of Docker Hub's host: docker.io, index.docker.io,
    registry-1.docker.io, in any letter case."""
    return host.lower() in DOCKER_HUB_HOSTS


def canonical_registry(host: str) -> str:
    """`docker.io` for any Docker Hub spelling; other hosts in lower case (host names are
    case-insensitive), with the port as a plain number (`Ghcr.IO:0443` is `ghcr.io:443`)."""
    if is_docker_hub(host):
        return DOCKER_HUB
    name, colon, port = host.lower().partition(":")
    return f"{name}:{int(port)}" if colon and port.isdigit() else name + colon + port


def host_part(registry: str) -> str:
    """A registry host as one part of an ECR repository name (ECR names take no `:`):
    `ghcr.io` as it is, `127.0.0.1:5000` as `127.0.0.1_5000`. A DNS name never holds `_`, so
    the part names one host only. `registry` is canonical (`canonical_registry`)."""
    return registry.replace(":", "_")


# A dotless host with a port (localhost:5000, registry:443), as host_part writes it.
_HOST_PART = re.compile(r"[a-z0-9-]+_[0-9]+\Z")


def reads_as_host_part(component: str) -> bool:
    """Could this first part of a path be `host_part` of some registry (it holds a `.`, is
    `localhost`, or is `name_port`)? Then `<that>/rest` is also what another registry's `rest`
    derives."""
    return "." in component or component == "localhost" or bool(_HOST_PART.match(component))


def _is_domain(part: str) -> bool:
    return "." in part or ":" in part or part == "localhost"


def parse_repository(name: str, *, default_registry: str = DOCKER_HUB) -> Repository:
    """Parse a repository name without tag or digest into its canonical Repository.

    Names without a host, and names on any Docker Hub host, are on `default_registry` (Docker
    Hub, or the registry standing in for it): there one-part names get `library/`. So `alpine`,
    `docker.io/alpine` and `INDEX.DOCKER.IO/library/alpine` all give docker.io/library/alpine.
    """
    if not name or name.startswith("-"):
        raise BadReference(f"bad image name {shortened(name)!r}")
    if len(name) > NAME_MAX:
        raise BadReference(f"bad image name {name[:40]!r}...: longer than {NAME_MAX} characters")
    if _IDENTIFIER.match(name):
        raise BadReference(
            f"bad image name {name!r}: 64 hex digits are an image ID, not a name (as in docker)"
        )
    first, _, rest = name.partition("/")
    has_host = bool(rest) and _is_domain(first)
    if has_host:
        try:
            check_host(first)
        except BadReference as error:
            raise BadReference(f"{error} in image name {name!r}") from None
    on_hub = not has_host or is_docker_hub(first)
    path = rest if has_host else name
    for component in path.split("/"):
        if not _PATH_COMPONENT.match(component):
            raise BadReference(
                f"bad image name {name!r} (path parts are lowercase letters and digits, "
                "joined by '.', '_', '__' or '-')"
            )
    if not on_hub:
        return Repository(canonical_registry(first), path)
    if "/" not in path:
        # As on Docker Hub, and on whatever registry stands in for it (source.registry).
        path = OFFICIAL_PREFIX + path
    return Repository(canonical_registry(default_registry), path)


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
    return DOCKER_HUB_API if is_docker_hub(registry) else registry


# The form of pin_tag(): mirror's own prefix, then the digest with `:` made `-` (at most 128
# characters: ECR's tag limit, so a sha512 pin keeps 117 of its hex digits).
PIN_TAG = re.compile(r"pin-sha(256|384|512)-[0-9a-f]{64,117}\Z")
# The pin tags an earlier mirror wrote: `sha256-<hex>`, which is also the OCI referrers tag
# schema's name for the referrers index of that digest (referrers.tag_role tells them apart by
# what the tag holds). Still recognised, kept, never written again.
LEGACY_PIN_TAG = re.compile(r"sha(256|384|512)-[0-9a-f]{64,128}\Z")


def pin_tag(digest: str) -> str:
    """The ECR tag that keeps a pinned digest: `pin-sha256-<hex>`. It only ever names that
    digest, so no run moves it, and an "expire untagged images" lifecycle rule never deletes
    it. Not `sha256-<hex>` (the referrers tag schema's name, which an earlier mirror used),
    nor matched by the exclusion filter `sha256-*` that lets referrer tags move in an
    immutable repository: a pin tag stays immutable there."""
    algorithm, _, hexdigits = digest.partition(":")
    return f"pin-{algorithm}-{hexdigits}"[:128]  # ECR's tag limit (a sha512 pin is cut)
