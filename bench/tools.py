"""The tools measured, each run as its own processes against its own destination registry.

- ``mirror`` / ``mirror-j1``: ``python -m mirror sync -c CONFIG`` (default jobs, ``--jobs 1``),
  with moto for the ECR API and ``ecr.endpoint`` pointing at the tool's local registry;
- ``skopeo-sync``: ``skopeo sync --src yaml --dest docker --all --preserve-digests``;
- ``skopeo-loop``: ``skopeo copy --all --preserve-digests`` once per tag, one after another, as
  a shell loop in a buildspec would (the hand-made flow without the Docker daemon).

Peak RSS is read from ``/proc/PID/status`` (``VmHWM``, the process's own high-water mark) while
the process runs: ``/usr/bin/time -v`` and ``RUSAGE_CHILDREN`` would report the largest of the
process *and its children*, i.e. skopeo's RSS for mirror.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from tests.standins.demo import environment as demo_environment
from tests.standins.images import skopeo_policy_file, write_auth_file

MIRROR = "mirror"
MIRROR_J1 = "mirror-j1"
SKOPEO_SYNC = "skopeo-sync"
SKOPEO_LOOP = "skopeo-loop"
TOOLS = (MIRROR, MIRROR_J1, SKOPEO_SYNC, SKOPEO_LOOP)
DESCRIPTIONS = {
    MIRROR: "mirror sync (default --jobs)",
    MIRROR_J1: "mirror sync --jobs 1",
    SKOPEO_SYNC: "skopeo sync --src yaml --all --preserve-digests",
    SKOPEO_LOOP: "skopeo copy --all --preserve-digests, one per tag, sequential",
}
_POLL = 0.01  # seconds between two reads of /proc/PID/status
PROCESS_TIMEOUT = 3600.0


@dataclass
class Run:
    """One measured run of a tool: wall time, peak RSS of its top process(es), exit codes, and
    (when asked for) the peak of the whole process tree's RSS, sampled."""

    seconds: float
    peak_rss_kb: int
    processes: int
    exit_code: int
    tree_peak_rss_kb: int = 0
    cpu_seconds: float = 0.0  # user + system of it and the children it waited for


class ToolFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Setup:
    """Where a tool reads and writes: the hub front, its destination, its private files."""

    tool: str
    source_host: str
    dest_host: str
    dest_login: tuple[str, str]
    prefix: str
    workdir: Path
    env: dict[str, str]
    tls: bool = False  # both ends speak HTTPS, verified (mirror only: a CA in SSL_CERT_FILE)


def peak_rss_kb(pid: int) -> int:
    """``VmHWM`` of a running process in kB; 0 once it has exited (a zombie has none)."""
    return _status_kb(pid, "VmHWM:")


def tree_rss_kb(pid: int) -> int:
    """``VmRSS`` of ``pid`` and of every process below it, summed, in kB (0 once gone)."""
    total, waiting = 0, [pid]
    while waiting:
        current = waiting.pop()
        total += _status_kb(current, "VmRSS:")
        waiting.extend(_children(current))
    return total


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as children:
                found.extend(int(child) for child in children.read().split())
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return found


def measure(
    argv: list[str], *, env: dict[str, str], cwd: Path, log: Path, tree: bool = False
) -> Run:
    """Run ``argv`` to its end, output appended to ``log``; poll its peak RSS meanwhile (with
    ``tree``, also the RSS of it and its children together, each poll: a sampled peak)."""
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
        peak = tree_peak = 0
        deadline = started + PROCESS_TIMEOUT
        while True:
            peak = max(peak, peak_rss_kb(proc.pid))
            if tree:
                tree_peak = max(tree_peak, tree_rss_kb(proc.pid))
            try:
                code = proc.wait(timeout=_POLL)
                break
            except subprocess.TimeoutExpired:
                if time.perf_counter() > deadline:
                    proc.kill()
                    proc.wait()
                    raise ToolFailed(f"{argv[0]} ran over {PROCESS_TIMEOUT:.0f} s") from None
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return Run(seconds, peak, 1, code, tree_peak, cpu)


class Tool:
    """A tool ready to sync the corpus (``repositories``: repository -> tags) to its registry."""

    tree = False  # measure the peak RSS of the whole process tree too

    def __init__(self, setup: Setup, repositories: dict[str, list[str]]) -> None:
        self.setup = setup
        self.repositories = repositories
        self.name = setup.tool
        setup.workdir.mkdir(parents=True, exist_ok=True)
        self.log = setup.workdir / "tool.log"
        self._log_offset = 0
        self.policy = skopeo_policy_file(setup.workdir)
        self.authfile = write_auth_file(
            setup.workdir / "auth.json", setup.dest_host, *setup.dest_login
        )

    def sync(self, *, check: bool = True) -> Run:
        """One full sync of the corpus; with ``check``, raises ToolFailed on a non-zero exit."""
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        run = self._sync()
        if check and run.exit_code != 0:
            raise ToolFailed(f"{self.name} exited {run.exit_code}: {self.failures()}")
        return run

    def failures(self, most: int = 3) -> str:
        """The error lines of the last sync, from its log: mirror's ``failed`` lines, skopeo's
        fatal message; else the log's last line."""
        with self.log.open("rb") as log:
            log.seek(self._log_offset)
            lines = log.read().decode(errors="replace").splitlines()
        errors = [
            re.sub(r"\s+", " ", line).strip()
            for line in lines
            if re.search(r"\bfailed\b|level=fatal|^FATA|Error", line)
            and not re.search(r"\d+ copied, \d+ failed", line)
        ]
        chosen = errors[:most] or [line for line in lines if line.strip()][-1:]
        more = f" (+{len(errors) - most} more)" if len(errors) > most else ""
        return " | ".join(chosen) + more

    def _sync(self) -> Run:
        raise NotImplementedError

    def _measure(self, argv: list[str]) -> Run:
        return measure(
            argv, env=self.setup.env, cwd=self.setup.workdir, log=self.log, tree=self.tree
        )


class Mirror(Tool):
    def __init__(
        self, setup: Setup, repositories: dict[str, list[str]], *, jobs: int | None = None
    ) -> None:
        super().__init__(setup, repositories)
        self.jobs = jobs
        self.config = write_mirror_config(setup, repositories)

    def argv(self) -> list[str]:
        """`mirror sync`; `$BENCH_MIRROR_JOBS` sets --jobs of a tool measured with the default."""
        chosen = self.jobs if self.jobs is not None else os.environ.get("BENCH_MIRROR_JOBS")
        jobs = [] if chosen is None else ["--jobs", str(chosen)]
        return [sys.executable, "-m", "mirror", "sync", "-c", str(self.config), *jobs]

    def _sync(self) -> Run:
        return self._measure(self.argv())


class SkopeoSync(Tool):
    def __init__(self, setup: Setup, repositories: dict[str, list[str]]) -> None:
        super().__init__(setup, repositories)
        self.source_yaml = setup.workdir / "sync.yaml"
        document = {
            setup.source_host: {"images": repositories, "tls-verify": False},
        }
        self.source_yaml.write_text(yaml.safe_dump(document, sort_keys=False))

    def _sync(self) -> Run:
        return self._measure(
            [
                "skopeo",
                "--policy",
                str(self.policy),
                "sync",
                "--src",
                "yaml",
                "--dest",
                "docker",
                "--all",
                "--preserve-digests",
                "--dest-tls-verify=false",
                "--authfile",
                str(self.authfile),
                str(self.source_yaml),
                f"{self.setup.dest_host}/{self.setup.prefix}",
            ]
        )


class SkopeoLoop(Tool):
    def _sync(self) -> Run:
        total = Run(0.0, 0, 0, 0)
        started = time.perf_counter()
        for repository, tags in self.repositories.items():
            for tag in tags:
                one = self._measure(self.copy_argv(repository, tag))
                total.peak_rss_kb = max(total.peak_rss_kb, one.peak_rss_kb)
                total.processes += 1
                if one.exit_code != 0:
                    total.exit_code = one.exit_code
                    break
        total.seconds = time.perf_counter() - started
        return total

    def copy_argv(self, repository: str, tag: str) -> list[str]:
        return [
            "skopeo",
            "--policy",
            str(self.policy),
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--authfile",
            str(self.authfile),
            f"docker://{self.setup.source_host}/{repository}:{tag}",
            f"docker://{self.setup.dest_host}/{self.setup.prefix}/{repository}:{tag}",
        ]


def make_tool(setup: Setup, repositories: dict[str, list[str]]) -> Tool:
    if setup.tool == MIRROR:
        return Mirror(setup, repositories)
    if setup.tool == MIRROR_J1:
        return Mirror(setup, repositories, jobs=1)
    if setup.tool == SKOPEO_SYNC:
        return SkopeoSync(setup, repositories)
    if setup.tool == SKOPEO_LOOP:
        return SkopeoLoop(setup, repositories)
    raise ValueError(f"unknown tool {setup.tool!r}")


def write_mirror_config(setup: Setup, repositories: dict[str, list[str]]) -> Path:
    """mirror.yaml as in tests/standins/demo.py: the hub front as the source, the tool's
    registry as ``ecr.endpoint``, plain HTTP on both sides. ``$BENCH_PUT_IMAGE_RATE`` (a
    number, or ``null``) sets ``ecr.put_image_rate``: the stand-in keeps no PutImage quota, so
    ``null`` measures mirror as if AWS had raised it (versions before issue 18 refuse the key).
    """
    rate = os.environ.get("BENCH_PUT_IMAGE_RATE")
    ecr = None if rate is None else {"put_image_rate": None if rate == "null" else float(rate)}
    return mirror_config(
        setup.workdir / "mirror.yaml",
        source=setup.source_host,
        endpoint=setup.dest_host,
        prefix=setup.prefix,
        images=[{"source": repo, "tags": tags} for repo, tags in repositories.items()],
        tls=setup.tls,
        ecr=ecr,
    )


def mirror_config(
    path: Path,
    *,
    source: str,
    endpoint: str,
    prefix: str,
    images: list[dict[str, Any]],
    tls: bool = False,
    ecr: dict[str, Any] | None = None,
) -> Path:
    """Write a mirror config at ``path``: ``source`` as the registry of the images (plain
    HTTP, or with ``tls`` HTTPS verified), ``endpoint`` as ECR's registry, repositories under
    ``prefix``; ``ecr`` adds keys to its ``ecr:`` (``put_image_rate``)."""
    document: dict[str, Any] = {
        "source": {"registry": source, "tls_verify": tls},
        "ecr": {
            "region": "us-east-1",
            "repository_prefix": prefix,
            "endpoint": endpoint,
            "tls_verify": tls,
            **(ecr or {}),
        },
        "images": images,
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def environment(moto_url: str, tmpdir: Path) -> dict[str, str]:
    """The environment of every tool: the demo's (dummy AWS keys, moto for ECR, own TMPDIR)."""
    return demo_environment(moto_url, tmpdir)


def versions() -> dict[str, str]:
    """Versions of what is measured, as the tools print them."""
    found: dict[str, str] = {"python": sys.version.split()[0]}
    for name, argv in {
        "skopeo": ["skopeo", "--version"],
        "docker-registry": ["docker-registry", "--version"],
    }.items():
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
            found[name] = (done.stdout or done.stderr).strip()
        except OSError as error:
            found[name] = f"unavailable: {error}"
    for package in ("mirror", "boto3", "urllib3", "moto"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found
