"""The composition root alone (mirror/connect.py), without processes: an ECR target as the steps
see it (ECR's API stubbed with botocore's Stubber), the copier keeping skopeo's auth file in
step with ECR's token, metered source clients, and the source's credentials."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import boto3
import pytest
from botocore.stub import Stubber

from mirror import aws
from mirror.config import Config, Credentials, Target, parse
from mirror.connect import Copier, EcrTarget, Sources, clock_warnings, region_of, source_login
from mirror.errors import ConfigError, RateLimited, SetupError
from mirror.http import Http
from mirror.oci import Login
from mirror.registry import Registry
from mirror.repo_settings import RepositorySettings
from mirror.schedule import Ledger, Metered

NAME = "mirror/library/ruby"


@pytest.fixture
def stubbed() -> Iterator[tuple[aws.Ecr, Stubber]]:
    """ECR's API for one registry, its every answer given by the test."""
    client = boto3.client("ecr", region_name="us-east-1")
    with Stubber(client) as stub:
        yield aws.Ecr(region="us-east-1", client=client), stub
        stub.assert_no_pending_responses()


def target(ecr: aws.Ecr, *, create: bool = True, dry_run: bool = False) -> EcrTarget:
    registry = Registry("ecr.example", http=Http())
    config = Target(create_repositories=create)
    return EcrTarget(config, ecr, "ecr.example", registry, {}, dry_run)


def not_found(stub: Stubber) -> None:
    stub.add_client_error(
        "describe_repositories", "RepositoryNotFoundException", "no such repository"
    )


def test_a_missing_repository_mirror_may_not_create_is_named_before_a_copy(
    stubbed: tuple[aws.Ecr, Stubber],
) -> None:
    ecr, stub = stubbed
    not_found(stub)
    assert target(ecr, create=False).cannot_write(NAME) == (
        f"no repository {NAME} in ECR, and create_repositories is false: create it, or set "
        "create_repositories: true"
    )
    assert target(ecr, create=True).cannot_write(NAME) is None  # created when needed: no call


def test_a_repository_is_created_once_and_never_in_a_dry_run(
    stubbed: tuple[aws.Ecr, Stubber],
) -> None:
    ecr, stub = stubbed
    arn = f"arn:aws:ecr:us-east-1:123456789012:repository/{NAME}"
    stub.add_response(
        "create_repository",
        {"repository": {"repositoryArn": arn, "repositoryName": NAME}},
        {"repositoryName": NAME},
    )
    creating = target(ecr)
    creating.ensure_repository(NAME)
    creating.ensure_repository(NAME)  # once per run
    target(ecr, dry_run=True).ensure_repository(NAME)
    target(ecr, create=False).ensure_repository(NAME)


@dataclass
class Tokens(aws.Ecr):
    """ECR's token for one registry, renewed when the test says so."""

    passwords: list[str] = field(default_factory=lambda: ["first"])

    def __post_init__(self) -> None:
        super().__init__(region="us-east-1", client=object())

    def login(self) -> aws.EcrLogin:
        return aws.EcrLogin("ecr.example", Login("AWS", self.passwords[-1]), math.inf)


@dataclass
class Workspace:
    written: list[dict[str, Login]] = field(default_factory=list)

    def write_auths(self, logins: dict[str, Login]) -> None:
        self.written.append(dict(logins))


def test_a_renewed_token_reaches_the_registry_client_and_skopeos_auth_file() -> None:
    ecr = Tokens()
    registry = Registry("ecr.example", http=Http(), login=ecr.registry_login)
    connected = EcrTarget(Target(), ecr, "ecr.example", registry, {})
    workspace = Workspace()
    tool = cast(Any, type("Tool", (), {"workspace": workspace})())
    copier = Copier(
        tool, {"ecr.example": ecr.registry_login()}, [connected], cast(Any, None), cast(Any, None)
    )
    copier.refresh()
    assert workspace.written == []  # the same token: the auth file stays
    ecr.passwords.append("second")
    assert registry.login == Login("AWS", "second")  # asked for, not pushed in
    copier.refresh()
    copier.refresh()
    assert [logins["ecr.example"].password for logins in workspace.written] == ["second"]


def config(tmp_path: Path, **source: Any) -> Config:
    return parse({"source": source, "images": []}, tmp_path / "mirror.yaml")


def test_source_clients_are_made_once_per_host_and_metered(tmp_path: Path) -> None:
    ledger = Ledger()
    sources = Sources(config(tmp_path), Http(), {}, ledger)
    hub = sources("docker.io")
    assert isinstance(hub, Metered) and sources("docker.io") is hub
    assert [registry.host for registry in sources.made()] == ["docker.io"]
    assert isinstance(hub.source, Registry)
    assert hub.ledger is ledger


def test_the_sources_credentials_come_from_the_environment_or_say_which_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    credentials = Credentials(username_env="HUB_USER", password_env="HUB_TOKEN")
    monkeypatch.setenv("HUB_USER", "someone")
    monkeypatch.delenv("HUB_TOKEN", raising=False)
    with pytest.raises(ConfigError, match=r"^source\.credentials\.password_env: \$HUB_TOKEN is"):
        source_login(credentials, region="us-east-1", where="source.credentials", timeout=1)
    monkeypatch.setenv("HUB_TOKEN", "secret-token")
    login = source_login(credentials, region="us-east-1", where="source.credentials", timeout=1)
    assert login is not None
    assert (login.username, login.password, login.origin) == (
        "someone",
        "secret-token",
        "the credentials from $HUB_USER and $HUB_TOKEN",
    )
    assert source_login(None, region="us-east-1", where="x", timeout=1) is None


def test_a_target_without_a_region_is_a_setup_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(SetupError, match="no AWS region"):
        region_of(config(tmp_path))


def test_a_clock_far_from_a_registrys_is_named() -> None:
    behind = Registry("quay.io", http=Http())
    behind.clock_skew = 42.0
    close = Registry("docker.io", http=Http())
    close.clock_skew = 2.0
    (line,) = clock_warnings([close, behind])
    assert line.startswith("this machine's clock is 42 s behind quay.io's (its Date header)")


def test_a_rate_limited_source_is_entered_in_the_ledger_it_was_made_with(tmp_path: Path) -> None:
    ledger = Ledger()
    hub = Sources(config(tmp_path), Http(), {}, ledger)("docker.io")

    class Limited:
        host = "docker.io"

        def list_tags(self, path: str) -> None:
            raise RateLimited("docker.io")

    hub.source = cast(Any, Limited())
    with pytest.raises(RateLimited):
        hub.list_tags("library/ruby")
    assert ledger.blocked("docker.io") == (
        "docker.io: pull rate limit reached (429 TOOMANYREQUESTS); run again later"
    )


def test_repository_settings_reach_the_repository_created(
    stubbed: tuple[aws.Ecr, Stubber],
) -> None:
    ecr, stub = stubbed
    arn = f"arn:aws:ecr:us-east-1:123456789012:repository/{NAME}"
    stub.add_response(
        "create_repository",
        {"repository": {"repositoryArn": arn, "repositoryName": NAME}},
        {"repositoryName": NAME, "imageScanningConfiguration": {"scanOnPush": True}},
    )
    settings = {NAME: RepositorySettings(scan_on_push=True)}
    connected = EcrTarget(Target(), ecr, "ecr.example", Registry("e", http=Http()), settings)
    connected.ensure_repository(NAME)
