from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stage import Stage
from tests.standins.aws import Moto
from tests.standins.hub import HubFront
from tests.standins.registry import Registry

pytest_plugins = ["tests.standins.fixtures"]


@pytest.fixture
def stage(
    hub: HubFront,
    source_registry: Registry,
    dest_registry: Registry,
    moto: Moto,
    aws_env: dict[str, str],
    tmp_path: Path,
    repo_name: str,
) -> Iterator[Stage]:
    """Everything an end-to-end test needs; TMPDIR is the test's own, to see what is left in it."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    stage = Stage(
        hub, source_registry, dest_registry, moto, tmp_path, repo_name, env={"TMPDIR": str(scratch)}
    )
    yield stage
    stage.hub.stop()  # a test may have put its own front in
