"""Issue 14's figures: how soon `mirror ensure` prints when ECR already has the image, whatever
the source does. `python -m bench.ensure` (about a minute).

Each case runs `mirror ensure library/ruby:3.3-slim` (`--runs` times, median and worst) and
takes the seconds from the process's start to its reference on stdout, and to its exit:

- healthy: the Docker-Hub-like front answers (30 ms a request, about Docker Hub from an AWS
  region) and the image is unchanged: `up-to-date`;
- down: the source refuses connections: `stale`;
- hanging: the source accepts connections and never answers: `stale`, after ensure's own
  source deadline (5 s), not --timeout;
- never: `--refresh never`, the front healthy: `stale`, and no request reaches the front;
- `mirror --version`: the start-up that `never` is measured against.

Targets: hanging under 10 s; `never` within 1.5 times `mirror --version`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.tools import environment, mirror_config
from tests.standins.aws import ECR_PASSWORD, ECR_USER, Moto
from tests.standins.hub import HubFront
from tests.standins.images import make_image
from tests.standins.misbehaving import Raw, never_answers, refusing
from tests.standins.registry import Registry

RESULTS = Path(__file__).parent / "results" / "ensure.md"
IMAGE = "library/ruby:3.3-slim"
HANGING_TARGET = 10.0  # seconds
NEVER_TARGET = 1.5  # times mirror --version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ensure", description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="runs per case (default 5)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"default {RESULTS}")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mirror-bench-") as directory:
        work = Path(directory)
        with (
            Registry(work / "source") as backend,
            HubFront(backend.url, delay=0.03) as hub,
            Registry(work / "ecr", htpasswd=(ECR_USER, ECR_PASSWORD)) as ecr,
            Moto() as moto,
        ):
            make_image(backend.host, "library/ruby", "3.3-slim", workdir=work,
                       platforms=("linux/amd64", "linux/arm64"))  # fmt: skip
            env = environment(moto.url, work)
            run = Runner(work, ecr.host, env, args.runs)
            first = run.ensure(hub.host)
            assert first.code == 0, first.stderr
            rows = [run.version()]
            rows.append(run.case("healthy source (up to date)", hub.host, "up-to-date"))
            with refusing() as down:
                rows.append(run.case("source down (connection refused)", down, "stale"))
            with Raw(never_answers) as hanging:
                rows.append(run.case("source hanging (never answers)", hanging.host, "stale"))
            hub.reset_counts()
            rows.append(run.case("--refresh never", hub.host, "stale", "--refresh", "never"))
            requests = len(hub.counts.requests)
    text = report(rows, requests, args.runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


class Timed:
    """One run: seconds to the first line on stdout and to the exit; exit code; stderr."""

    def __init__(self, printed: float | None, ended: float, code: int, stderr: str):
        self.printed, self.ended, self.code, self.stderr = printed, ended, code, stderr


class Runner:
    def __init__(self, work: Path, ecr: str, env: dict[str, str], runs: int):
        self.work, self.ecr, self.env, self.runs = work, ecr, env, runs

    def ensure(self, source: str, *args: str) -> Timed:
        path = mirror_config(self.work / "ensure.yaml", source=source, endpoint=self.ecr,
                             prefix="bench", images=[])  # fmt: skip
        return timed([sys.executable, "-m", "mirror", "ensure", "-c", str(path), *args, IMAGE],
                     self.env)  # fmt: skip

    def version(self) -> Row:
        argv = [sys.executable, "-m", "mirror", "--version"]
        return Row("`mirror --version` (start-up)", self._repeat(lambda: timed(argv, self.env)))

    def case(self, name: str, source: str, action: str, *args: str) -> Row:
        runs = self._repeat(lambda: self.ensure(source, *args))
        for one in runs:
            assert one.code == 0 and one.printed is not None, one.stderr
            assert action in one.stderr, one.stderr
        return Row(f"{name}: {action}", runs)

    def _repeat(self, measure: Callable[[], Timed]) -> list[Timed]:
        return [measure() for _ in range(self.runs)]


class Row:
    def __init__(self, name: str, runs: list[Timed]):
        self.name = name
        self.printed = [one.printed if one.printed is not None else one.ended for one in runs]
        self.ended = [one.ended for one in runs]

    @property
    def median(self) -> float:
        return statistics.median(self.printed)


def timed(argv: list[str], env: dict[str, str]) -> Timed:
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    printed = time.monotonic() - started if line else None
    _, stderr = process.communicate()
    return Timed(printed, time.monotonic() - started, process.returncode, stderr)


def report(rows: list[Row], requests: int, runs: int) -> str:
    version, _healthy, _down, hanging, never = rows
    lines = [
        "# bench.ensure",
        "",
        f"`mirror ensure {IMAGE}` when ECR has the image; {runs} runs per case; seconds from",
        "the start to the reference on stdout (median, worst) and to the exit (median).",
        "",
        "| case | printed (median) | printed (worst) | exit (median) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {row.median:.2f} | {max(row.printed):.2f} | "
            f"{statistics.median(row.ended):.2f} |"
        )
    ratio = never.median / version.median
    worst = max(hanging.printed)
    lines += [
        "",
        f"- hanging source: worst {worst:.2f} s to print, target < {HANGING_TARGET:g} s: "
        f"{'PASS' if worst < HANGING_TARGET else 'FAIL'}",
        f"- `--refresh never` / `mirror --version`: {ratio:.2f}, target <= {NEVER_TARGET}: "
        f"{'PASS' if ratio <= NEVER_TARGET else 'FAIL'}",
        f"- requests that reached the source during the `--refresh never` runs: {requests}",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
