"""Try mirror with no AWS account: `.ci/demo` (or `python -m tests.standins.demo`).

Starts the local stand-ins — a Docker-Hub-like source (bearer tokens, a pull budget of 100,
429 when spent), a registry standing in for ECR, moto for the ECR API — pushes a few base
images to the source, runs `mirror sync` twice and shows what each run cost at the source.
Everything listens on 127.0.0.1 and is stopped and removed at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

from tests.standins.aws import ECR_PASSWORD, ECR_USER, Moto
from tests.standins.hub import HubFront
from tests.standins.images import make_image
from tests.standins.registry import Registry

IMAGES = {
    # repository on the source: (tag, platforms)
    "library/ruby": ("3.3-slim", ("linux/amd64", "linux/arm64")),
    "library/node": ("20-slim", ("linux/amd64", "linux/arm64", "linux/arm/v7")),
    "library/alpine": ("3.20", ("linux/amd64",)),
    "bitnami/redis": ("7.2", ("linux/amd64",)),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.03, help="round trip to the source (s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mirror-demo-") as work:
        return _demo(Path(work), args.delay)


def _demo(work: Path, delay: float) -> int:
    with (
        Registry(work / "source") as backend,
        HubFront(backend.url, limit=100, delay=delay) as hub,
        Registry(work / "ecr", htpasswd=(ECR_USER, ECR_PASSWORD)) as ecr,
        Moto() as moto,
    ):
        _say(f"Docker-Hub-like source on {hub.host} (pull budget 100), ECR stand-in on {ecr.host}")
        for repository, (tag, platforms) in IMAGES.items():
            make_image(
                backend.host,
                repository,
                tag,
                platforms=platforms,
                seed=repository,
                layer_sizes=(400_000, 60_000),
                workdir=work,
            )
        config = _write_config(work, hub.host, ecr.host)
        _say(f"config {config}:\n{config.read_text()}")
        env = environment(moto.url, work)
        for run in ("first", "second"):
            hub.reset_counts()
            _say(f"{run} run: mirror sync -c {config.name}")
            code = subprocess.call(
                [sys.executable, "-m", "mirror", "sync", "-c", str(config)], env=env, cwd=work
            )
            counts = hub.counts
            _say(
                f"{run} run exited {code}; the source served {counts.manifest_get} manifest "
                f"GETs (pulls), {counts.manifest_head} HEADs (free), {counts.blob_bytes:,} "
                f"bytes of layers; pull budget left: {hub.remaining} of 100"
            )
            if code != 0:
                return code
        if counts.manifest_get != 0:
            _say("unexpected: the second run spent pulls")
            return 1
        _say("the second run found every image up to date with HEAD requests: no pull spent")
    return 0


def _write_config(work: Path, source: str, ecr: str) -> Path:
    document = {
        "source": {"registry": source, "tls_verify": False},
        "ecr": {
            "region": "us-east-1",
            "repository_prefix": "dockerhub",
            "endpoint": ecr,  # the local registry instead of <account>.dkr.ecr.<region>...
            "tls_verify": False,
        },
        "images": [
            {"source": repository.removeprefix("library/"), "tags": [tag]}
            for repository, (tag, _) in IMAGES.items()
        ],
    }
    path = work / "mirror.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def environment(moto_url: str, work: Path) -> dict[str, str]:
    """What `mirror` needs to run on the stand-ins: dummy AWS keys, moto as the ECR API, and
    mirror's memory (`$XDG_STATE_HOME/mirror`) under `work`, kept across the runs of one demo
    or benchmark as on a cron host, and never mixed with the user's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="demo",
        AWS_SECRET_ACCESS_KEY="demo",
        AWS_REGION="us-east-1",
        AWS_ENDPOINT_URL_ECR=moto_url,
        AWS_ENDPOINT_URL_SECRETS_MANAGER=moto_url,
        TMPDIR=str(work),
        XDG_STATE_HOME=str(work / "state"),
    )
    env.pop("REGISTRY_AUTH_FILE", None)
    return env


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
