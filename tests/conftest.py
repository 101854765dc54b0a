from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests.stage import Stage
from tests.standins.aws import ECR_PASSWORD, Moto
from tests.standins.ecr import EcrFront
from tests.standins.hub import HubFront
from tests.standins.registry import Registry

pytest_plugins = ["tests.standins.fixtures"]

# Where AWS would be: a closed port on 127.0.0.1 (nothing listens on port 1), so a call that
# escapes every fake is refused at once, here, and never reaches AWS.
NO_AWS = "http://127.0.0.1:1"


@pytest.fixture(autouse=True)
def no_real_aws(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test reaches real AWS by accident, whatever the machine holds: fake keys (they win
    over a profile), no profile, no ~/.aws files (a config there can say to ignore endpoint
    URLs), no container or instance role, no per-service endpoint (AWS_ENDPOINT_URL_ECR beats
    AWS_ENDPOINT_URL), no cached boto3 session, and every AWS endpoint a closed local port.
    Tests that need AWS set their own (`aws_env`: moto)."""
    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL_") or name in _AWS_UNSET:
            monkeypatch.delenv(name, raising=False)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    nowhere = tmp_path_factory.getbasetemp() / "no-aws-files"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(nowhere / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nowhere / "credentials"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", NO_AWS)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)


_AWS_UNSET = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
)


@pytest.fixture
def stage(
    hub: HubFront,
    source_registry: Registry,
    dest_registry: Registry,
    ecr_front: EcrFront,
    moto: Moto,
    aws_env: dict[str, str],
    tmp_path: Path,
    repo_name: str,
) -> Iterator[Stage]:
    """Everything an end-to-end test needs; TMPDIR is the test's own, to see what is left in it."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    stage = Stage(
        hub,
        source_registry,
        ecr_front,
        dest_registry,
        moto,
        tmp_path,
        repo_name,
        env={"TMPDIR": str(scratch)},
    )
    yield stage
    for front in (stage.hub, stage.dest, *stage.extra_hubs):  # a test may have put its own in
        front.stop()


@pytest.fixture
def second_ecr(stage: Stage) -> Iterator[EcrFront]:
    """Another account's registry, as strict as ECR: the caller's one token opens it too
    (GetAuthorizationToken's registryIds is deprecated; the token works for every registry the
    principal may use)."""
    login = ("AWS", ECR_PASSWORD)
    with (
        Registry(stage.tmp / "ecr2", htpasswd=login) as registry,
        EcrFront(registry.url, stage.moto.url, account="111122223333", credentials=login) as front,
    ):
        yield front


STAND_INS = frozenset(
    {"stage", "hub", "source_registry", "dest_registry", "ecr_front", "moto", "aws_env"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use a stand-in (a registry, the Docker-Hub-like front, moto) or run the
    `mirror` command are end to end: marked `e2e`. `pytest -m "not e2e"` runs the rest, the
    pure tests, in seconds."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & STAND_INS or item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.e2e)
