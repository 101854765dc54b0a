"""`mirror ensure`: the named images (and those of a Dockerfile, a Compose file, Kubernetes
YAML) mirrored if missing or stale, then their ECR references printed: as refs, or the file
pointed at ECR (`--format dockerfile|compose|manifest`), or build args."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from mirror import config, dockerfile
from mirror.commands import ENSURE_FORMATS, write_result
from mirror.commands.inputs import (
    COMPOSE,
    DOCKERFILE,
    KINDS,
    MANIFEST,
    Input,
    Kind,
    read_compose,
    read_dockerfile,
    read_manifest,
)
from mirror.commands.run import Console, Stop, execute, reported, settings_of
from mirror.config import Config
from mirror.connect import Session
from mirror.errors import ConfigError, Exit
from mirror.model import Action, Plan, Unresolved
from mirror.plan import passes_through, plan_names
from mirror.reference import Repository

SERVED = (Action.COPIED, Action.UP_TO_DATE, Action.STALE)  # what ensure prints a reference for
FORMATS = ENSURE_FORMATS
# --format -> the kind of file it prints
_PRINTS = {
    "dockerfile": DOCKERFILE,
    "build-args": DOCKERFILE,
    "compose": COMPOSE,
    "manifest": MANIFEST,
}


def run(args: argparse.Namespace, console: Console, stop: Stop) -> int:
    """Mirror the images, then print their references (exit 0); nothing on stdout else."""
    settings = replace(
        settings_of(args, console),
        refresh=args.refresh,
        check_logins=False,
        referrers_count=False,
    )
    with reported(settings, console):
        check_combination(args)
        loaded = config.load(config.config_path(args.config))
        inputs = _inputs(args)
        for given in inputs:
            for note in given.notes:
                console.warning(f"{given.path}: {note}")
        names = [*args.images, *(image for given in inputs for image in given.images())]
        _check_each(loaded, inputs)
        fixed, by_name = plan_names(loaded, _to_mirror(loaded, names))
    printed = next((given for given in inputs if given.kind is _PRINTS.get(args.format)), None)
    if not by_name:  # nothing to mirror: FROM scratch, services that build, images in ECR
        write_result(_output(args.format, printed, {}, names))
        return Exit.OK
    done = execute(loaded, FixedPlanner(fixed), settings, console, stop)
    if done.report.error:
        console.error(done.report.error)
    if done.exit_code != Exit.OK or any(outcome.action not in SERVED for outcome in done.outcomes):
        return done.exit_code or Exit.FAILED
    # With several targets, the first one's reference: the registry builds pull from.
    mapping = {name: wanted.reference(done.hosts[0]) for name, wanted in by_name.items()}
    if args.format == "build-args" and printed is not None:
        left = [x for x in dockerfile.not_by_build_args(printed.dockerfile_uses) if x in mapping]
        if left:
            console.warning(
                f"--format build-args cannot point {len(left)} image(s) at ECR (not written as "
                f"a whole ARG): {', '.join(left)}; the build still pulls them from their "
                "registry: use --format dockerfile for those"
            )
    write_result(_output(args.format, printed, mapping, names))
    return Exit.OK


def _to_mirror(loaded: Config, names: Sequence[str]) -> list[str]:
    """The names to mirror: not those already on a target's host (printed as they are)."""
    return [name for name in names if not passes_through(loaded, name)]


def check_combination(args: argparse.Namespace) -> None:
    """What may be given together: each file option once; IMAGEs and files of every kind
    with --format refs; with a format that prints a file, that file and nothing else (what
    else was named would be mirrored and not printed)."""
    for kind in KINDS:
        given = _given(args, kind)
        if len(given) > 1:
            raise ConfigError(
                f"{kind.option} given {len(given)} times: give one (the result is one "
                f"{_name(kind)}); name a second one's images in another ensure"
            )
    prints = _PRINTS.get(args.format)
    if prints is not None:
        if not _given(args, prints):
            raise ConfigError(f"--format {args.format} needs {prints.option}")
        others = [kind.option for kind in KINDS if kind is not prints and _given(args, kind)]
        others = (["IMAGE arguments"] if args.images else []) + others
        if others:
            raise ConfigError(
                f"--format {args.format} prints {prints.what}: {' and '.join(others)} cannot "
                "come with it (their images would be mirrored, not printed); name them in "
                "another ensure, or use --format refs"
            )
    if args.build_arg and not args.dockerfile:
        raise ConfigError("--build-arg needs --dockerfile: build args are for its ARGs")
    if not args.images and not any(_given(args, kind) for kind in KINDS):
        raise ConfigError("name at least one IMAGE, or a --dockerfile, --compose or --manifest")


def _given(args: argparse.Namespace, kind: Kind) -> list[str]:
    return list(getattr(args, kind.option.removeprefix("--")))


def _name(kind: Kind) -> str:
    return kind.what.removeprefix("a ")


def _inputs(args: argparse.Namespace) -> list[Input]:
    """The files named, read and parsed, in the order of their options' kinds."""
    inputs = [read_dockerfile(Path(path), args.build_arg) for path in args.dockerfile]
    inputs += [read_compose(Path(path), os.environ) for path in args.compose]
    return inputs + [read_manifest(Path(path)) for path in args.manifest]


def _check_each(loaded: Config, inputs: Sequence[Input]) -> None:
    """An image of a file that cannot be mirrored is named with its place in the file."""
    for given in inputs:
        for use in given.uses:
            if passes_through(loaded, use.image):
                continue
            try:
                plan_names(loaded, [use.image])
            except ConfigError as error:
                raise ConfigError(f"{given.path}: {use.where}: {error}") from None


def _output(form: str, printed: Input | None, mapping: dict[str, str], names: list[str]) -> str:
    if form == "build-args" and printed is not None:
        pairs = dockerfile.build_args(printed.dockerfile_uses, mapping)
        return " ".join(f"--build-arg {name}={reference}" for name, reference in pairs) + "\n"
    if printed is not None:
        return printed.rewritten(mapping)
    ordered = list(dict.fromkeys(mapping.get(name, name) for name in names))  # in ECR: as is
    return "".join(f"{reference}\n" for reference in ordered)


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
