"""`mirror repos`: each configured ECR repository's settings against what ECR has, and fixes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from mirror import aws
from mirror.config import Config
from mirror.connect import region_of
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
