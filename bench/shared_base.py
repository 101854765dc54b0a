"""Images that share a base layer, copied into ECR: bytes uploaded with blob mounting on and off.

    python -m bench.shared_base [--images 8] [--base-mb 5] [--own-kb 200] [--delay 0.03]
                                [--mirror LABEL=WHERE ...] [--out bench/results]

``--images`` images, each in its own repository (``library/app0``, ``library/app1``, ...),
single-platform, each of a base layer of ``--base-mb`` MB that all share (every ``ruby``,
``node`` and ``python`` image shares its Debian base) and one layer of its own. Each tool copies
them all into a fresh ECR-like destination (tests/standins/ecr.py: moto for the API, the front
counts every byte uploaded), once with the registry's ``BLOB_MOUNTING`` off (ECR's default:
a mount request starts an ordinary upload) and once with it on. Tools: each ``--mirror``
version with default options and with ``--jobs 1``, and ``skopeo sync --all`` (one image after
another). The least a tool can upload is the base once plus every image's own layer and
config: ``minimum`` below; with mounting off it is the base once per image. The source's
manifest GETs (pulls) are counted too: knowing what to mount must cost none. Writes
``shared-base.{md,json}`` to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3

from bench import cli
from bench.run import machine
from bench.tools import SKOPEO_SYNC, Mirror, Setup, SkopeoSync, Tool, environment
from bench.versions import Version
from tests.standins.aws import ECR_PASSWORD, ECR_USER, Moto
from tests.standins.ecr import EcrFront
from tests.standins.hub import HubFront
from tests.standins.images import MANIFEST_TYPES, build_image, make_image
from tests.standins.registry import Registry

LOGIN = (ECR_USER, ECR_PASSWORD)
SEED = "shared-base"


def images(count: int) -> list[str]:
    return [f"library/app{number}" for number in range(count)]


def minimum_bytes(count: int, base: bytes, own: int) -> tuple[int, int]:
    """(the least bytes to upload: every distinct blob once, as with mounting on; the bytes
    with no mount: every image's blobs, the base once per image)."""
    distinct: dict[str, int] = {}
    every = 0
    for name in images(count):
        _, blobs = build_image(
            platforms=("linux/amd64",), layer_sizes=(own,), seed=name, base_layers=[base]
        )
        for digest, blob in blobs.items():
            if blob.media_type not in MANIFEST_TYPES:  # manifests are PUT, not uploaded
                distinct[digest] = len(blob.data)
                every += len(blob.data)
    return sum(distinct.values()), every


@dataclass(frozen=True)
class Contender:
    """A tool to measure: a mirror version (with --jobs, or its default), or skopeo sync."""

    label: str
    version: Version | None = None
    jobs: int | None = None

    def tool(self, setup: Setup, repositories: dict[str, list[str]]) -> Tool:
        if self.version is None:
            return SkopeoSync(setup, repositories)
        return Mirror(setup, repositories, jobs=self.jobs)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out, work, versions = cli.prepare(args, "tmp/shared-base")
    base = random.Random(f"{SEED}|base").randbytes(int(args.base_mb * 1_000_000))  # noqa: S311
    own = int(args.own_kb * 1000)
    least, unmounted = minimum_bytes(args.images, base, own)
    results: dict[str, Any] = {
        "machine": machine(),
        "load_before": cli.load_average(),
        "params": {k: v for k, v in vars(args).items() if k not in ("mirror", "out", "work")},
        "versions": {v.label: {"where": v.where, "commit": v.commit} for v in versions},
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "minimum_bytes": least,
        "bytes_without_mounts": unmounted,
        "runs": [],
    }
    with Moto() as moto, contextlib.ExitStack() as stack:
        env = environment(moto.url, work)
        source = stack.enter_context(Registry(work / "source"))
        for name in images(args.images):
            make_image(source.host, name, "1", layer_sizes=(own,), seed=name,
                       base_layers=[base], workdir=work)  # fmt: skip
        hub = stack.enter_context(HubFront(source.url, delay=args.delay))
        for number, contender in enumerate(contenders(versions)):
            for mounting in (False, True):
                where = work / f"case-{number}-{int(mounting)}"
                run = case(hub, moto, env, contender, where, mounting=mounting, count=args.images)
                results["runs"].append(run)
    results["load_after"] = cli.load_average()
    out.mkdir(parents=True, exist_ok=True)
    (out / "shared-base.json").write_text(json.dumps(results, indent=2) + "\n")
    text = render(results)
    (out / "shared-base.md").write_text(text)
    print(text, end="")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def contenders(versions: Sequence[Version]) -> list[Contender]:
    made = []
    for version in versions:
        made.append(Contender(version.label, version))
        made.append(Contender(f"{version.label} --jobs 1", version, jobs=1))
    return [*made, Contender(SKOPEO_SYNC)]


def case(
    hub: HubFront,
    moto: Moto,
    env: dict[str, str],
    contender: Contender,
    where: Path,
    *,
    mounting: bool,
    count: int,
) -> dict[str, Any]:
    """One tool's first sync of every image into a fresh destination."""
    version, label = contender.version, contender.label
    prefix = f"c{where.name.replace('-', '')}"
    repos = {name: ["1"] for name in images(count)}
    with (
        Registry(where / "dest", htpasswd=LOGIN) as backend,
        EcrFront(backend.url, moto.url, blob_mounting=mounting) as ecr,
    ):
        if version is None:  # skopeo sync pushes to prefix/<last part>: the repositories first
            client = boto3.client(
                "ecr",
                region_name="us-east-1",
                endpoint_url=moto.url,
                aws_access_key_id="bench",
                aws_secret_access_key="bench",
            )
            for name in repos:
                client.create_repository(repositoryName=f"{prefix}/{name.rsplit('/', 1)[-1]}")
        tool_env = env if version is None else {**env, **version.env}
        setup = Setup(label, hub.host, ecr.host, LOGIN, prefix, where / "tool", tool_env)
        tool = contender.tool(setup, repos)
        ecr.reset_counts()
        hub.reset_counts()
        run = tool.sync(check=False)
        counts = ecr.counts
        pulls = hub.counts.manifest_get
    result = {
        "tool": label,
        "blob_mounting": mounting,
        "seconds": round(run.seconds, 2),
        "exit_code": run.exit_code,
        "upload_bytes": counts.upload_bytes,
        "mounts": counts.of("upload_start", 201),
        "mount_refused": sum(
            1 for _, path, status in counts.requests if "mount=" in path and status == 202
        ),
        "uploads": counts.of("upload_start"),
        "manifest_gets": pulls,  # at the Docker-Hub-like front: pulls
    }
    if run.exit_code:
        result["error"] = tool.failures()
    cli.say(
        f"{label}, mounting {'on' if mounting else 'off'}: {result['seconds']} s, "
        f"{counts.upload_bytes / 1e6:.2f} MB uploaded, {result['mounts']} mounts"
        + (f", EXIT {run.exit_code}: {result['error']}" if run.exit_code else "")
    )
    return result


def render(results: dict[str, Any]) -> str:
    params = results["params"]
    least, unmounted = results["minimum_bytes"], results["bytes_without_mounts"]
    lines = [
        "# Shared base layers into ECR: bytes uploaded (issue 18)",
        "",
        f"{params['images']} images, each in its own repository, sharing a {params['base_mb']} MB "
        f"base layer, each with a {params['own_kb']} kB layer of its own; source "
        f"{params['delay']} s per request. The least to upload: {least / 1e6:.2f} MB (the base "
        f"once); without any mount: {unmounted / 1e6:.2f} MB. Load average before "
        f"{results['load_before']}, after {results['load_after']}. Started {results['started']}. "
        "Versions: "
        + ", ".join(f"`{k}` = {v['where']} ({v['commit']})" for k, v in results["versions"].items())
        + ".",
        "",
        "| tool | BLOB_MOUNTING | first sync s | MB uploaded | x the least | mounts | "
        "mounts refused (202) | manifest GETs | target |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for run in results["runs"]:
        ratio = run["upload_bytes"] / least
        target = ""
        if run["blob_mounting"] and run["tool"] != SKOPEO_SYNC:
            target = "PASS" if run["upload_bytes"] <= least and not run["exit_code"] else "FAIL"
        lines.append(
            f"| {run['tool']}{'*' if run['exit_code'] else ''} "
            f"| {'on' if run['blob_mounting'] else 'off'} | {run['seconds']:.2f} "
            f"| {run['upload_bytes'] / 1e6:.2f} | {ratio:.2f} | {run['mounts']} "
            f"| {run['mount_refused']} | {run.get('manifest_gets', '')} | {target} |"
        )
    lines += [
        "",
        "Target (issue 18): with mounting on, the base once plus the images' own layers "
        "(x the least <= 1.00). `*`: the run exited non-zero (its error is in the JSON).",
    ]
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = cli.parser(
        "python -m bench.shared_base", __doc__, out="bench/results", work="OUT/tmp/shared-base"
    )
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--base-mb", type=float, default=5.0, help="the shared base layer, MB")
    parser.add_argument("--own-kb", type=float, default=200.0, help="each image's own layer, kB")
    parser.add_argument("--delay", type=float, default=0.03, help="round trip per source request")
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
