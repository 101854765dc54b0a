"""`mirror repos`: each configured ECR repository's settings against what ECR has, and fixes."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from mirror import aws
from mirror.commands import write_result
from mirror.commands.run import Console, Stop
from mirror.config import Config, config_path, load
from mirror.connect import region_of
from mirror.errors import Exit
from mirror.http import check_proxies
from mirror.repo_settings import Drift, RepositorySettings, drift


@dataclass
class RepositoryState:
    """`mirror repos`: one configured repository, what ECR has, and how it differs."""

    target: str
    name: str
    settings: RepositorySettings
    missing: bool
    drifts: list[Drift]
    applied: list[str] = field(default_factory=list)
    creatable: bool = True  # the target's create_repositories: mirror creates it when missing


def repository_states(config: Config, *, apply: bool) -> list[RepositoryState]:
    """Compare every configured repository's settings with ECR's; with `apply`, fix what
    ECR allows changing (scanning, mutability, lifecycle policy, tags)."""
    aws.check_environment()
    check_proxies(os.environ)
    states = []
    for target in config.targets:
        region = region_of(config, target)
        ecr = aws.Ecr(region=region, registry_id=target.registry_id)
        host = target.endpoint or aws.registry_host(
            region=region, registry_id=target.registry_id, token_host=ecr.login().host
        )
        for name, settings in sorted(config.repository_settings(target).items()):
            actual = ecr.actual(name)
            drifts = [] if actual is None else drift(settings, actual)
            state = RepositoryState(
                host, name, settings, actual is None, drifts, creatable=target.create_repositories
            )
            if apply and drifts:
                state.applied = ecr.apply(name, drifts, settings)
            states.append(state)
    return states


def run(args: argparse.Namespace, console: Console, stop: Stop) -> int:
    """List the configured repositories with their drift from the config; --apply fixes it."""
    loaded = load(config_path(args.config))
    states = repository_states(loaded, apply=args.apply)
    lines = [item for state in states for item in _repository_lines(state)]
    left = sum(problem for _, problem in lines)
    changed = sum(len(state.applied) for state in states)
    total = f"{len(states)} repositories, {left} differences left"
    total += f", {changed} settings changed" if args.apply else ""
    write_result("".join(f"{line}\n" for line, _ in lines) + total + "\n")
    return Exit.FAILED if left else Exit.OK


def _repository_lines(state: RepositoryState) -> list[tuple[str, bool]]:
    """(line, still a problem) for one repository."""
    where = f"{state.target}: {state.name}"
    if state.missing and not state.creatable:
        why = "create_repositories is false: its images fail until someone creates it"
        return [(f"missing     {where} ({why})", True)]
    if state.missing:
        return [
            (f"missing     {where} (mirror creates it, with its settings, on first copy)", False)
        ]
    if not state.drifts:
        return [(f"ok          {where}", False)]
    lines = []
    for item in state.drifts:
        fixed = item.setting in state.applied
        label = "fixed" if fixed else ("drift" if item.fixable else "cannot-fix")
        note = "" if item.fixable else " (ECR cannot change it after creation)"
        lines.append(
            (
                f"{label:<11} {where} {item.setting}: wanted {item.wanted}, "
                f"ECR has {item.actual}{note}",
                not fixed,
            )
        )
    return lines
