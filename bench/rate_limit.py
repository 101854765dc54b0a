"""Issue 3's figures: how fast mirror stops on a 429, and what a budget-limited run and its
rerun cost at the source. `python -m bench.rate_limit` (about a minute; 30 s of it is the
baseline: a bare `skopeo copy` sitting in its own 429 retries).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.tools import mirror_config
from tests.standins.aws import ECR_PASSWORD, ECR_USER, Moto
from tests.standins.demo import environment
from tests.standins.hub import HubFront
from tests.standins.images import make_image, skopeo_policy_file
from tests.standins.registry import Registry

IMAGES = [(f"library/app{n}", ("linux/amd64", "linux/arm64") if n % 3 == 0 else ("linux/amd64",))
          for n in range(8)]  # fmt: skip


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="mirror-bench-") as directory:
        work = Path(directory)
        with (
            Registry(work / "source") as backend,
            HubFront(backend.url, limit=100, delay=0.03) as hub,
            Registry(work / "ecr", htpasswd=(ECR_USER, ECR_PASSWORD)) as ecr,
            Moto() as moto,
        ):
            for repository, platforms in IMAGES:
                make_image(backend.host, repository, "1", platforms=platforms, seed=repository,
                           layer_sizes=(300_000,), workdir=work)  # fmt: skip
            env = environment(moto.url, work)
            budget_runs(work, hub, ecr, env)
            first_429_to_exit(work, hub, ecr, env)
            skopeo_baseline(work, hub, ecr)
    return 0


def write_config(work: Path, hub: HubFront, ecr: Registry, prefix: str) -> Path:
    images: list[dict[str, Any]] = [{"source": name, "tags": ["1"]} for name, _ in IMAGES]
    return mirror_config(
        work / f"{prefix}.yaml", source=hub.host, endpoint=ecr.host, prefix=prefix, images=images
    )


def sync(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mirror", "sync", "-c", str(config), "--jobs", "2"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip


def budget_runs(work: Path, hub: HubFront, ecr: Registry, env: dict[str, str]) -> None:
    config = write_config(work, hub, ecr, "budget")
    for title, remaining in (
        ("budget-limited run (6 pulls left, 8 images, 3 with 2 platforms)", 6),
        ("rerun after the window reset (100 pulls left)", 100),
    ):
        hub.set_remaining(remaining)
        hub.reset_counts()
        done = sync(config, env)
        print(f"{title}: exit {done.returncode}")
        print(_counts(hub))
        print("  " + done.stdout.strip().splitlines()[-1].split(" ", 1)[-1])


def _counts(hub: HubFront) -> str:
    counts = hub.counts
    return (
        f"  manifest GETs {counts.manifest_get} (429s: {counts.status_429}), "
        f"HEADs {counts.manifest_head}"
    )


def first_429_to_exit(work: Path, hub: HubFront, ecr: Registry, env: dict[str, str]) -> None:
    """The budget says yes, the source says 429 inside the copy: how long until mirror exits?"""
    config = write_config(work, hub, ecr, "limited")
    hub.reset_counts()
    hub.fail_next(429, kind="manifest_get", times=10_000)
    process = subprocess.Popen(
        [sys.executable, "-m", "mirror", "sync", "-c", str(config)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    first_429 = None
    while process.poll() is None:
        if first_429 is None and hub.counts.status_429:
            first_429 = time.monotonic()
        time.sleep(0.005)
    ended = time.monotonic()
    hub.clear_faults()
    waited = ended - (first_429 or ended)
    print(f"429 inside a copy: exit {process.returncode}, {waited:.2f} s from the first 429 to "
          f"exit, {hub.counts.status_429} manifest GETs answered 429 in all")  # fmt: skip


def skopeo_baseline(work: Path, hub: HubFront, ecr: Registry) -> None:
    """The same 429 met by a bare skopeo copy (what a tool that just runs skopeo gets)."""
    hub.fail_next(429, kind="manifest_get", times=10_000)
    hub.reset_counts()
    auth = work / "auth.json"
    auth.write_text("{}")
    started = time.monotonic()
    done = subprocess.run(
        ["skopeo", "--policy", str(skopeo_policy_file(work)), "copy", "--authfile", str(auth),
         "--all", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false",
         f"docker://{hub.host}/library/app1:1", f"docker://{ecr.host}/baseline/app1:1"],
        capture_output=True, check=False,
    )  # fmt: skip
    hub.clear_faults()
    seconds = time.monotonic() - started
    print(
        f"bare skopeo copy against the same 429: exit {done.returncode} after {seconds:.1f} s, "
        f"{hub.counts.status_429} manifest GETs answered 429"
    )


if __name__ == "__main__":
    raise SystemExit(main())
