"""The files `ensure` reads a build's images from, and prints back pointed at ECR: a Dockerfile
(`--dockerfile`), a Compose file (`--compose`) and Kubernetes YAML (`--manifest`).

Each is read the same careful way (`read_file`): a regular file only (a FIFO, a device, a
socket or a directory is refused at once, before it is opened), at most its parser's
MAX_SIZE, its bytes kept as they are (CRLF stays CRLF), so that `--format dockerfile`,
`compose` or `manifest` changes nothing but the image values. A Compose file is read with
the `.env` file beside it, as `docker compose` reads it (its project directory is the
file's). A file that cannot be read for its images is one ConfigError (exit 2) naming the
file and, from its parser, the line (the document and the key, in YAML).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from mirror import composefile, dockerfile, kubefile, yamlnodes
from mirror.errors import ConfigError, MirrorError


@dataclass(frozen=True)
class Kind:
    """A kind of file ensure reads: its option, its name in messages, its size limit."""

    option: str  # "--compose"
    format: str  # the --format that prints it: "compose"
    what: str  # "a Compose file"
    limit: int  # bytes read at most
    usual: str  # its usual size, for the message about one too big


DOCKERFILE = Kind(
    "--dockerfile", "dockerfile", "a Dockerfile", dockerfile.MAX_SIZE, "a Dockerfile is a few kB"
)
COMPOSE = Kind(
    "--compose", "compose", "a Compose file", composefile.MAX_SIZE, "a Compose file is a few kB"
)
MANIFEST = Kind(
    "--manifest",
    "manifest",
    "a manifest",
    kubefile.MAX_SIZE,
    "helm template of a big chart prints about 1 MB",
)
ENV = Kind("", "", "a .env file", composefile.MAX_SIZE, "a .env file is a few lines")
KINDS = (DOCKERFILE, COMPOSE, MANIFEST)
ENV_FILE = ".env"  # the file beside a Compose file that docker compose takes variables from


@dataclass(frozen=True)
class Use:
    """One image value of a file, and where it is written (for messages)."""

    image: str
    where: str  # "line 3", or "document 2, line 14: spec.template.spec.containers[0].image"


@dataclass(frozen=True)
class Input:
    """A file ensure read: its images, and how to print it pointed at ECR."""

    kind: Kind
    path: Path
    text: str
    uses: tuple[Use, ...]
    dockerfile_uses: tuple[dockerfile.ImageUse, ...] = ()  # a Dockerfile's, for build-args
    yaml_uses: tuple[yamlnodes.ImageUse, ...] = ()  # a Compose file's or a manifest's
    notes: tuple[str, ...] = ()  # what of the file is not read (images in other files)

    def images(self) -> list[str]:
        """The images, each once, in order of first use."""
        return list(dict.fromkeys(use.image for use in self.uses))

    def rewritten(self, mapping: Mapping[str, str]) -> str:
        """The file with each image in `mapping` pointed at its reference, every other byte
        as it was. MirrorError (exit 1) in the unlikely case a value cannot be written so."""
        if self.kind is DOCKERFILE:
            return dockerfile.rewrite(self.text, self.dockerfile_uses, mapping)
        try:
            return yamlnodes.rewrite(self.text, self.yaml_uses, mapping)
        except ValueError as error:
            raise MirrorError(f"{self.path}: cannot point it at ECR: {error}") from None


def read_dockerfile(path: Path, build_args: Sequence[str]) -> Input:
    """A Dockerfile, its ARG defaults overridden by `build_args` (`NAME=VALUE`, or `NAME`
    alone: the environment's value, as docker build takes it)."""
    overrides = {}
    for item in build_args:
        name, equals, value = item.partition("=")
        if not name:
            raise ConfigError(f"--build-arg {item!r}: expected NAME=VALUE or NAME")
        if equals:
            overrides[name] = value
        elif name in os.environ:  # as docker build: NAME alone takes the environment's value
            overrides[name] = os.environ[name]
    raw = read_file(path, DOCKERFILE)
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(f"{path}: UTF-16 text; BuildKit reads a Dockerfile as UTF-8")
    # Bytes that are not UTF-8 (a Latin-1 comment) are carried through as they are, and
    # CRLF stays CRLF: --format dockerfile changes nothing but the image texts.
    text = raw.decode("utf-8", "surrogateescape")
    try:
        lines = dockerfile.parse(text, overrides)
    except dockerfile.DockerfileError as error:
        raise ConfigError(f"{path}: {error}") from None
    uses = tuple(Use(line.image, f"line {line.line}") for line in lines)
    return Input(DOCKERFILE, path, text, uses, dockerfile_uses=tuple(lines))


def read_compose(path: Path, environment: Mapping[str, str]) -> Input:
    """A Compose file, its variables filled in from `environment` over the `.env` file beside
    it (docker compose's precedence)."""
    text = _utf8(path, read_file(path, COMPOSE))
    known = _variables(path.parent / ENV_FILE, environment)
    notes: list[str] = []
    try:
        found = composefile.parse(text, known, notes=notes)
    except composefile.ComposeError as error:
        raise ConfigError(f"{path}: {error}") from None
    return replace(_yaml_input(COMPOSE, path, text, found), notes=tuple(notes))


def read_manifest(path: Path) -> Input:
    """Kubernetes YAML: every document (kubectl apply -f, helm template, kubectl get -o yaml)."""
    text = _utf8(path, read_file(path, MANIFEST))
    try:
        found = kubefile.parse(text)
    except kubefile.ManifestError as error:
        raise ConfigError(f"{path}: {error}") from None
    return _yaml_input(MANIFEST, path, text, found)


def _yaml_input(kind: Kind, path: Path, text: str, found: list[yamlnodes.ImageUse]) -> Input:
    many = any(use.document > 1 for use in found)
    uses = tuple(
        Use(
            use.image,
            (f"document {use.document}, " if many else "") + f"line {use.line}: {use.path}",
        )
        for use in found
    )
    return Input(kind, path, text, uses, yaml_uses=tuple(found))


def _variables(env_file: Path, environment: Mapping[str, str]) -> dict[str, str]:
    """What docker compose interpolates with: `environment` over the `.env` file, if any."""
    text = None
    if os.path.lexists(env_file):
        text = _utf8(env_file, read_file(env_file, ENV))
    try:
        return composefile.variables(environment, text)
    except composefile.ComposeError as error:  # ".env line 3: ..."
        raise ConfigError(f"{env_file}: {str(error).removeprefix(ENV_FILE + ' ')}") from None


def _utf8(path: Path, raw: bytes) -> str:
    """YAML (and .env) text: UTF-8, a byte-order mark kept (yamlnodes keeps it too)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(f"{path}: UTF-16 text; mirror reads YAML files as UTF-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: line {line}: byte 0x{raw[error.start]:02x} is not UTF-8 (YAML files are "
            "UTF-8 text)"
        ) from None


def read_file(path: Path, kind: Kind) -> bytes:
    """A file's bytes: a regular file (through a symbolic link is fine) of at most
    `kind.limit` bytes. A FIFO, a device (/dev/zero), a socket or a directory is refused at
    once, without being opened (opening a device can act: /dev/watchdog arms a reboot) and
    without a wait; ConfigError naming the file."""
    not_regular = ConfigError(f"{path}: not a regular file ({kind.what} is one)")
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise not_regular
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):  # swapped since the look
            raise not_regular
        try:
            raw = handle.read(kind.limit + 1)
        except OSError as error:
            raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    if len(raw) > kind.limit:
        raise ConfigError(f"{path}: over {kind.limit >> 20} MiB: not read ({kind.usual})")
    return raw
