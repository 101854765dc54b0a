"""The end-to-end stage: the stand-ins wired together, and the real `mirror` command run on them.

A test asks for the `stage` fixture, pushes images to the source with `stage.push(...)`, writes a
config with `stage.config(...)`, runs `stage.mirror("sync", ...)` as a separate process, and
asserts on digests at the destination, requests counted at the Docker-Hub-like front, exit codes
and the report.

The destination mirror writes to is `stage.dest`, the ECR-like front (as strict as ECR: no
repository without CreateRepository in moto, immutable tags, no digest header on GET, ...);
`stage.backend` is the registry behind it, which `dest_digest` and `dest_manifest` read directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import boto3
import urllib3
import yaml

from tests.standins.aws import ECR_PASSWORD, ECR_USER, Moto
from tests.standins.ecr import EcrFront
from tests.standins.hub import HubFront
from tests.standins.images import make_image
from tests.standins.registry import MANIFEST_ACCEPT, Registry, get_manifest, manifest_digest

ROOT = Path(__file__).resolve().parent.parent
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


@dataclass
class Run:
    """A finished `mirror` process."""

    code: int
    stdout: str
    stderr: str
    report: dict[str, Any] | None = None

    @property
    def error(self) -> str:
        """stderr without the timestamps mirror puts on lines when not writing to a terminal."""
        return "\n".join(TIMESTAMP.sub("", line) for line in self.stderr.strip().splitlines())

    def actions(self) -> list[str]:
        assert self.report is not None, self.stderr
        return [image["action"] for image in self.report["images"]]


@dataclass
class Stage:
    hub: HubFront
    source: Registry
    dest: EcrFront  # the ECR-like front mirror is pointed at
    backend: Registry  # the registry behind it, for assertions
    moto: Moto
    tmp: Path
    repo: str  # a repository path unique to the test
    env: dict[str, str] = field(default_factory=dict)
    extra_hubs: list[HubFront] = field(default_factory=list)

    # --- the source -----------------------------------------------------------------------------

    def use_hub(self, **kwargs: Any) -> HubFront:
        """Put a new Docker-Hub-like front (a budget, credentials, a delay...) before the source."""
        self.hub.stop()
        self.hub = HubFront(self.source.url, **kwargs).start()
        return self.hub

    def second_hub(self, **kwargs: Any) -> HubFront:
        """Another Docker-Hub-like host over the same source (its own port, budget and counts);
        stopped with the stage.
        """
        front = HubFront(self.source.url, **kwargs).start()
        self.extra_hubs.append(front)
        return front

    def push(self, tag: str, *, repo: str | None = None, **kwargs: Any) -> str:
        """Build and push an image to the source (behind the front); return its digest."""
        return make_image(self.source.host, repo or self.repo, tag, workdir=self.tmp, **kwargs)

    def source_digest(self, tag: str, *, repo: str | None = None) -> str | None:
        return manifest_digest(self.source.url, repo or self.repo, tag)

    # --- the destination ------------------------------------------------------------------------

    def use_ecr(self, **kwargs: Any) -> EcrFront:
        """Put a new ECR-like front (blob mounting, Retry-After...) before the destination."""
        self.dest.stop()
        self.dest = EcrFront(self.backend.url, self.moto.url, **kwargs).start()
        return self.dest

    def dest_digest(self, tag: str, *, repo: str | None = None) -> str | None:
        """The digest at the destination, read from the backend (not counted by the front)."""
        return manifest_digest(self.backend.url, self.dest_repo(repo), tag, auth=self.dest_auth)

    def tag_dest(self, reference: str, tag: str, *, repo: str | None = None) -> None:
        """Put `tag` on what the destination holds under `reference` (written to the backend,
        as another client or an earlier mirror would have)."""
        name = self.dest_repo(repo)
        auth = urllib3.make_headers(basic_auth=":".join(self.dest_auth))
        url = f"{self.backend.url}/v2/{name}/manifests"
        accept = {"Accept": MANIFEST_ACCEPT}
        got = urllib3.request("GET", f"{url}/{reference}", headers={**auth, **accept})
        assert got.status == 200, got.data
        content = {"Content-Type": got.headers["Content-Type"]}
        put = urllib3.request("PUT", f"{url}/{tag}", body=got.data, headers={**auth, **content})
        assert put.status == 201, put.data

    def dest_manifest(self, tag: str, *, repo: str | None = None) -> tuple[str, dict[str, Any]]:
        return get_manifest(self.backend.url, self.dest_repo(repo), tag, auth=self.dest_auth)

    def create_dest_repo(self, repo: str | None = None, **settings: Any) -> str:
        """Create the destination repository in moto (ECR), unless it exists; returns its name.

        ``settings`` are ``CreateRepository`` arguments (``imageTagMutability=...``).
        """
        name = self.dest_repo(repo)
        ecr = self.ecr()
        with contextlib.suppress(ecr.exceptions.RepositoryAlreadyExistsException):
            ecr.create_repository(repositoryName=name, **settings)
        return name

    def dest_repo(self, repo: str | None = None) -> str:
        return f"mirror/{repo or self.repo}"

    @property
    def dest_auth(self) -> tuple[str, str]:
        return (ECR_USER, ECR_PASSWORD)

    def ecr_repositories(self, *, registry_id: str | None = None) -> list[str]:
        ids = {"registryId": registry_id} if registry_id else {}
        repositories = self.ecr().describe_repositories(**ids)["repositories"]
        return sorted(r["repositoryName"] for r in repositories)

    def ecr(self) -> Any:
        """A boto3 ECR client on moto, as the tests' own hand on the repositories."""
        return boto3.client("ecr", region_name="us-east-1", endpoint_url=self.moto.url)

    # --- config and the command -----------------------------------------------------------------

    def config(self, images: Sequence[dict[str, Any]] | None = None, **sections: Any) -> Path:
        """Write mirror.yaml: the Hub front as source, the ECR front as ECR's endpoint."""
        document: dict[str, Any] = {
            "source": {"registry": self.hub.host, "tls_verify": False},
            "ecr": {
                "region": "us-east-1",
                "repository_prefix": "mirror",
                "endpoint": self.dest.host,
                "tls_verify": False,
            },
            "images": list(images if images is not None else []),
        }
        for key, value in sections.items():
            document[key] = {**document.get(key, {}), **value}
        path = self.tmp / "mirror.yaml"
        path.write_text(yaml.safe_dump(document))
        return path

    def image(self, *tags: str, repo: str | None = None, **extra: Any) -> dict[str, Any]:
        return {"source": repo or self.repo, "tags": list(tags), **extra}

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "mirror", *args]

    def mirror(self, *args: str, report: bool = True, timeout: float = 120, **env: str) -> Run:
        """Run `python -m mirror ARGS -c mirror.yaml` in its own process; read its report."""
        report_path = self.tmp / "report.json"
        report_path.unlink(missing_ok=True)
        argv = list(args)
        if "-c" not in argv and "--config" not in argv:
            argv += ["-c", str(self.tmp / "mirror.yaml")]
        if report and _command_of(args) in ("sync", "ensure"):
            argv += ["--report", str(report_path)]
        completed = subprocess.run(
            self.command(*argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **self.env, **env},
            cwd=self.tmp,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        loaded = json.loads(report_path.read_text()) if report_path.exists() else None
        return Run(completed.returncode, completed.stdout, completed.stderr, loaded)

    def popen(
        self,
        *args: str,
        stdout: int | IO[Any] = subprocess.PIPE,
        stderr: int | IO[Any] = subprocess.PIPE,
        text: bool = True,
        **env: str,
    ) -> subprocess.Popen[Any]:
        """Start `python -m mirror ARGS -c mirror.yaml` (stdout and stderr piped unless
        given: a terminal, a full pipe, /dev/full...); `env` adds environment variables."""
        return subprocess.Popen(
            self.command(*args, "-c", str(self.tmp / "mirror.yaml")),
            stdout=stdout,
            stderr=stderr,
            text=text,
            env={**os.environ, **self.env, **env},
            cwd=self.tmp,
            stdin=subprocess.DEVNULL,
        )


COMMANDS = ("sync", "ensure", "repos", "validate")


def _command_of(args: Sequence[str]) -> str | None:
    """The command in `args`, which global options may come before (`-v sync`, `-c F sync`)."""
    taking_value = ("-c", "--config", "--log-format")
    after_option = False
    for arg in args:
        if not after_option and arg in COMMANDS:
            return arg
        after_option = arg in taking_value
    return None


def help_text(*command: str) -> str:
    """What `mirror COMMAND --help` prints."""
    return subprocess.run(
        [sys.executable, "-m", "mirror", *command, "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def wait_until(ready: Callable[[], bool], process: subprocess.Popen[Any]) -> None:
    """Wait until `ready()` (at most a minute), while `process` runs."""
    deadline = time.monotonic() + 60
    while not ready():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "never ready"
        time.sleep(0.05)
