"""`mirror ensure`: the named images (and a Dockerfile's) mirrored if missing or stale, then
their ECR references printed, as refs, a rewritten Dockerfile or build args."""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from mirror import config, dockerfile
from mirror.commands import write_result
from mirror.commands.run import Console, Stop, execute, reported, settings_of
from mirror.connect import Session
from mirror.errors import ConfigError, Exit
from mirror.model import Action, Plan, Unresolved
from mirror.plan import plan_names
from mirror.reference import Repository

SERVED = (Action.COPIED, Action.UP_TO_DATE, Action.STALE)  # what ensure prints a reference for


def run(args: argparse.Namespace, console: Console, stop: Stop) -> int:
    """Mirror the images, then print their references (exit 0); nothing on stdout else."""
    settings = replace(
        settings_of(args), refresh=args.refresh, check_logins=False, referrers_count=False
    )
    with reported(settings):
        loaded = config.load(config.config_path(args.config))
        names, text, lines = _names(args)
        fixed, by_name = plan_names(loaded, names)
    if not names:  # a Dockerfile that pulls nothing (FROM scratch): nothing to mirror
        write_result(_output(args.format, text, lines, {}, names))
        return Exit.OK
    done = execute(loaded, FixedPlanner(fixed), settings, console, stop)
    if done.report.error:
        console.error(done.report.error)
    if done.exit_code != Exit.OK or any(outcome.action not in SERVED for outcome in done.outcomes):
        return done.exit_code or Exit.FAILED
    # With several targets, the first one's reference: the registry builds pull from.
    mapping = {name: wanted.reference(done.hosts[0]) for name, wanted in by_name.items()}
    if args.format == "build-args" and (left := dockerfile.not_by_build_args(lines)):
        console.warning(
            f"--format build-args cannot point {len(left)} image(s) at ECR (not written as a "
            f"whole ARG): {', '.join(left)}; the build still pulls them from their registry: "
            "use --format dockerfile for those"
        )
    write_result(_output(args.format, text, lines, mapping, names))
    return Exit.OK


def _names(args: argparse.Namespace) -> tuple[list[str], str, list[dockerfile.ImageUse]]:
    lines: list[dockerfile.ImageUse] = []
    text = ""
    names = list(args.images)
    if len(args.dockerfile) > 1:
        raise ConfigError(
            f"--dockerfile given {len(args.dockerfile)} times: give one (the result is one "
            "Dockerfile); name a second one's images in another ensure"
        )
    if args.dockerfile:
        text, lines = _read_dockerfile(Path(args.dockerfile[0]), args.build_arg)
        names += dockerfile.images(lines)
    elif args.format != "refs":
        raise ConfigError(f"--format {args.format} needs --dockerfile")
    elif args.build_arg:
        raise ConfigError("--build-arg needs --dockerfile: build args are for its ARGs")
    if not names and not args.dockerfile:
        raise ConfigError("name at least one IMAGE, or a --dockerfile")
    return names, text, lines


def _output(
    form: str,
    text: str,
    lines: list[dockerfile.ImageUse],
    mapping: dict[str, str],
    names: list[str],
) -> str:
    if form == "dockerfile":
        return dockerfile.rewrite(text, lines, mapping)
    if form == "build-args":
        pairs = dockerfile.build_args(lines, mapping)
        return " ".join(f"--build-arg {name}={reference}" for name, reference in pairs) + "\n"
    ordered = list(dict.fromkeys(mapping[name] for name in names))
    return "".join(f"{reference}\n" for reference in ordered)


def _read_dockerfile(path: Path, build_args: list[str]) -> tuple[str, list[dockerfile.ImageUse]]:
    overrides = {}
    for item in build_args:
        name, equals, value = item.partition("=")
        if not name:
            raise ConfigError(f"--build-arg {item!r}: expected NAME=VALUE or NAME")
        if equals:
            overrides[name] = value
        elif name in os.environ:  # as docker build: NAME alone takes the environment's value
            overrides[name] = os.environ[name]
    raw = read_dockerfile(path)
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(f"{path}: UTF-16 text; BuildKit reads a Dockerfile as UTF-8")
    # Bytes that are not UTF-8 (a Latin-1 comment) are carried through as they are, and
    # CRLF stays CRLF: --format dockerfile changes nothing but the image texts.
    text = raw.decode("utf-8", "surrogateescape")
    try:
        return text, dockerfile.parse(text, overrides)
    except dockerfile.DockerfileError as error:
        raise ConfigError(f"{path}: {error}") from None


def read_dockerfile(path: Path) -> bytes:
    """A Dockerfile's bytes: a regular file (through a symbolic link is fine) of at most
    dockerfile.MAX_SIZE bytes. A FIFO, a device (/dev/zero), a socket or a directory is
    refused at once, without being opened (opening a device can act: /dev/watchdog arms a
    reboot) and without a wait; ConfigError naming the file."""
    not_regular = ConfigError(f"{path}: not a regular file (a Dockerfile is one)")
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
            raw = handle.read(dockerfile.MAX_SIZE + 1)
        except OSError as error:
            raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    if len(raw) > dockerfile.MAX_SIZE:
        raise ConfigError(
            f"{path}: over {dockerfile.MAX_SIZE >> 20} MiB: not read (a Dockerfile is a few kB)"
        )
    return raw


@dataclass(frozen=True)
class FixedPlanner:
    """`mirror ensure`: a plan known in advance (the named images)."""

    fixed: Plan

    def static(self, hosts: Sequence[str], error: Unresolved) -> Plan:
        return self.fixed

    def resolve(self, session: Session, stop: Stop, hosts: Sequence[str]) -> Plan:
        return self.fixed

    def sources(self) -> list[Repository]:
        return [task.source.repository for task in self.fixed.tasks]
