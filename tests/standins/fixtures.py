"""pytest fixtures for the stand-ins; load with ``pytest_plugins = ["tests.standins.fixtures"]``.

Session-scoped services keep their state across tests: use a repository name per test
(the ``repo_name`` fixture gives one).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.standins.aws import ECR_PASSWORD, ECR_USER, REGION, Moto
from tests.standins.ecr import EcrFront
from tests.standins.hub import HubFront
from tests.standins.registry import Registry


@pytest.fixture(scope="session")
def source_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """The registry behind the Docker-Hub front (no auth); push test images here."""
    with Registry(tmp_path_factory.mktemp("source-registry")) as registry:
        yield registry


@pytest.fixture
def hub(source_registry: Registry) -> Iterator[HubFront]:
    """A fresh Docker-Hub-like front over ``source_registry``: no rate limit, zero counts."""
    with HubFront(source_registry.url) as front:
        yield front


@pytest.fixture(scope="session")
def dest_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """The ECR stand-in: Basic auth with the user and password of moto's ECR token."""
    with Registry(
        tmp_path_factory.mktemp("dest-registry"), htpasswd=(ECR_USER, ECR_PASSWORD)
    ) as registry:
        yield registry


@pytest.fixture
def ecr_front(dest_registry: Registry, moto: Moto, aws_env: dict[str, str]) -> Iterator[EcrFront]:
    """A fresh ECR-like front over ``dest_registry``, sharing repositories with ``moto`` (reset
    by ``aws_env``): create a repository there before pushing through the front.
    """
    with EcrFront(dest_registry.url, moto.url) as front:
        yield front


@pytest.fixture(scope="session")
def moto() -> Iterator[Moto]:
    with Moto() as server:
        yield server


@pytest.fixture
def aws_env(moto: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point boto3 at ``moto`` (reset first) with dummy keys; no profile, auth file or ~ of ours.

    HOME is ``tmp_path``, DOCKER_CONFIG ``tmp_path/docker`` and XDG_RUNTIME_DIR ``tmp_path/run``
    (skopeo's default auth file lives there), all empty. Returns the variables it set. Both
    spellings of the Secrets Manager endpoint variable are set; botocore reads only
    ``AWS_ENDPOINT_URL_SECRETS_MANAGER``. ``AWS_ENDPOINT_URL`` catches every other service.
    """
    moto.reset()
    (tmp_path / "docker").mkdir(exist_ok=True)
    (tmp_path / "run").mkdir(mode=0o700, exist_ok=True)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": moto.url,
        "AWS_ENDPOINT_URL_ECR": moto.url,
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": moto.url,
        "AWS_ENDPOINT_URL_SECRETSMANAGER": moto.url,
        "AWS_ENDPOINT_URL_STS": moto.url,
        "HOME": str(tmp_path),
        "DOCKER_CONFIG": str(tmp_path / "docker"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
    }
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "REGISTRY_AUTH_FILE",
        "XDG_STATE_HOME",  # mirror's memory (refused images, referrers looked for): under HOME
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def repo_name(request: pytest.FixtureRequest) -> str:
    """A repository name unique to the test, valid for registries and ECR."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    return f"test/{name}"[:200]
