"""A no-op over thousands of tags: time and memory (issue 18: 2,000 tags under 15 s, 100 MB).

    python -m bench.many_tags [--tags 2000] [--repositories 100] [--mirror LABEL=WHERE ...]
                              [--repeats 3] [--delay 0.03] [--skopeo] [--out bench/results]

Built without a first sync, in seconds: every tag is its own image manifest (its digest set
apart by an annotation naming the tag) over one small config and layer that all share, PUT
straight into the source registry and, under each tool's prefix, into that tool's destination
registry, so every run is a no-op. Each ``--mirror`` version (default options) runs
``--repeats`` times, versions alternated; each run's wall time, the peak RSS of the mirror
process (VmHWM) and of its whole process tree (RSS summed over it, sampled every 10 ms), and
the source's manifest HEADs and GETs are kept. ``--skopeo`` adds ``skopeo sync`` (which GETs
every manifest: about a minute at 30 ms); ``--profile N`` N more no-ops per version under py-spy
(``pyspy-many-tags-LABEL.{md,txt}``; with ``--cpu``, the GIL's holder only:
``pyspy-many-tags-cpu-LABEL``). Writes ``many-tags.{md,json}`` to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import urllib3

from bench import cli
from bench.corpus import repository_name
from bench.regression import profile
from bench.run import HUB_LIMIT, machine, record
from bench.timeline import TimedHub, summary
from bench.tools import SKOPEO_SYNC, Mirror, Setup, SkopeoSync, Tool, environment
from tests.standins.aws import ECR_PASSWORD, ECR_USER, Moto
from tests.standins.images import OCI_MANIFEST, Blob, build_image, push_blobs
from tests.standins.registry import Registry

TARGET_SECONDS = 15.0
TARGET_MB = 100.0
LOGIN = (ECR_USER, ECR_PASSWORD)


def repositories(tags: int, count: int) -> dict[str, list[str]]:
    """``tags`` tags spread evenly over ``count`` repositories (``1.0.0``, ``1.0.1``, ...)."""
    count = max(1, min(count, tags))
    spread = [tags // count + (n < tags % count) for n in range(count)]
    return {
        repository_name(n): [f"1.{i // 100}.{i % 100}" for i in range(size)]
        for n, size in enumerate(spread)
    }


def manifests(repos: dict[str, list[str]]) -> tuple[list[Blob], dict[tuple[str, str], Blob]]:
    """The shared blobs (config, layer) and each tag's own manifest."""
    top, blobs = build_image(platforms=("linux/amd64",), layer_sizes=(512,), seed="many-tags")
    shared = [blob for digest, blob in blobs.items() if digest != top.digest]
    document = json.loads(top.data)
    made = {}
    for repository, tags in repos.items():
        for tag in tags:
            document["annotations"] = {"bench.many-tags": f"{repository}:{tag}"}
            body = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
            made[(repository, tag)] = Blob(OCI_MANIFEST, body)
    return shared, made


def put_all(
    host: str,
    shared: list[Blob],
    made: dict[tuple[str, str], Blob],
    *,
    prefix: str = "",
    auth: tuple[str, str] | None = None,
    workers: int = 8,
) -> None:
    """The shared blobs into every repository, then every tag's manifest, a few at a time."""
    names = sorted({repository for repository, _ in made})
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda name: push_blobs(host, prefix + name, shared, auth=auth), names))
    http = urllib3.PoolManager(maxsize=workers, retries=False)
    headers = {"Content-Type": OCI_MANIFEST}
    if auth is not None:
        headers.update(urllib3.make_headers(basic_auth=":".join(auth)))

    def put(item: tuple[tuple[str, str], Blob]) -> None:
        (repository, tag), blob = item
        url = f"http://{host}/v2/{prefix}{repository}/manifests/{tag}"
        answer = http.request("PUT", url, body=blob.data, headers=headers)
        if answer.status != 201:
            raise RuntimeError(f"PUT {url}: HTTP {answer.status}: {answer.data[:200]!r}")

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(put, made.items()))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out, work, versions = cli.prepare(args, "tmp/many-tags")
    repos = repositories(args.tags, args.repositories)
    shared, made = manifests(repos)
    results: dict[str, Any] = {
        "machine": machine(),
        "load_before": cli.load_average(),
        "params": {k: v for k, v in vars(args).items() if k not in ("mirror", "out", "work")},
        "versions": {v.label: {"where": v.where, "commit": v.commit} for v in versions},
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    with Moto() as moto, contextlib.ExitStack() as stack:
        env = environment(moto.url, work)
        source = stack.enter_context(Registry(work / "source"))
        started = time.perf_counter()
        put_all(source.host, shared, made)
        hub = stack.enter_context(TimedHub(source.url, limit=HUB_LIMIT, delay=args.delay))
        tools: dict[str, Tool] = {}
        wanted = [(v.label, {**env, **v.env}) for v in versions]
        if args.skopeo:
            wanted.append((SKOPEO_SYNC, env))
        for number, (label, tool_env) in enumerate(wanted):
            dest = stack.enter_context(Registry(work / f"dest-{number}", htpasswd=LOGIN))
            prefix = f"t{number}"
            where = work / f"tool-{number}"
            setup = Setup(label, hub.host, dest.host, LOGIN, prefix, where, tool_env)
            tool: Tool = SkopeoSync(setup, repos) if label == SKOPEO_SYNC else Mirror(setup, repos)
            tool.tree = True
            put_all(dest.host, shared, made, prefix=f"{prefix}/", auth=LOGIN)
            tools[label] = tool
        results["build_seconds"] = round(time.perf_counter() - started, 1)
        cli.say(
            f"{args.tags} tags in {len(repos)} repositories, built in {results['build_seconds']} s"
        )
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label in tools}
        for repeat in range(args.repeats):
            for label, tool in tools.items():
                runs[label].append(one(hub, tool, f"{label} no-op {repeat + 1}/{args.repeats}"))
        if args.profile:
            out.mkdir(parents=True, exist_ok=True)
            for label, tool in tools.items():
                if isinstance(tool, Mirror):
                    name = f"many-tags-{'cpu-' if args.cpu else ''}{label}"
                    profile(tool, out, name, args.profile, gil=args.cpu)
    results["runs"] = runs
    results["load_after"] = cli.load_average()
    out.mkdir(parents=True, exist_ok=True)
    (out / "many-tags.json").write_text(json.dumps(results, indent=2) + "\n")
    text = render(results)
    (out / "many-tags.md").write_text(text)
    print(text, end="")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def one(hub: TimedHub, tool: Tool, what: str) -> dict[str, Any]:
    hub.reset_counts()
    hub.mark()
    run = tool.sync(check=False)
    counts = hub.counts
    result = record(run, counts)
    result["tree_peak_rss_mb"] = round(run.tree_peak_rss_kb / 1024, 1)
    result["cpu_seconds"] = round(run.cpu_seconds, 2)
    heads = summary(hub.events).get("source/manifest_head")
    result["source_heads"] = heads  # how long each took at the front, how many at once
    cli.say(
        f"{what}: {run.seconds:.2f} s ({run.cpu_seconds:.1f} s CPU), {result['peak_rss_mb']} MB "
        f"(tree {result['tree_peak_rss_mb']} MB), {counts.manifest_head} HEADs, "
        f"{counts.manifest_get} GETs" + (f", EXIT {run.exit_code}" if run.exit_code else "")
    )
    if run.exit_code:
        result["error"] = tool.failures()
        cli.say(f"{what}: {result['error']}")
    return result


def render(results: dict[str, Any]) -> str:
    params = results["params"]
    lines = [
        f"# A no-op over {params['tags']} tags (issue 18)",
        "",
        f"{params['tags']} tags in {params['repositories']} repositories, each its own manifest; "
        f"source {params['delay']} s per request; {params['repeats']} runs per tool, tools "
        f"alternated. Load average before {results['load_before']}, after "
        f"{results['load_after']}. Started {results['started']}.",
        "",
        "| tool | commit | no-op s (median) | runs | peak RSS MB (process) | peak RSS MB (tree) "
        "| CPU s | manifest HEADs / GETs | source HEAD ms (at the front) | HEADs in flight "
        "| target |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for label, runs in results["runs"].items():
        seconds = statistics.median(run["seconds"] for run in runs)
        process = max(run["peak_rss_mb"] for run in runs)
        tree = max(run["tree_peak_rss_mb"] for run in runs)
        heads = max(run["source"]["manifest_head"] for run in runs)
        gets = max(run["source"]["manifest_get"] for run in runs)
        failed = any(run["exit_code"] for run in runs)
        verdict = "PASS" if seconds < TARGET_SECONDS and tree < TARGET_MB and not failed else "FAIL"
        commit = results["versions"].get(label, {}).get("commit", "")
        each = ", ".join(f"{run['seconds']:.2f}" for run in runs)
        at_front = [run["source_heads"] for run in runs if run.get("source_heads")]
        head_ms = statistics.median(h["mean_ms"] for h in at_front) if at_front else 0.0
        flight = statistics.median(h["mean_in_flight"] for h in at_front) if at_front else 0.0
        lines.append(
            f"| {label} | {commit} | {seconds:.2f} | {each} | {process:.0f} | {tree:.0f} "
            f"| {statistics.median(run['cpu_seconds'] for run in runs):.1f} "
            f"| {heads} / {gets} | {head_ms:.0f} | {flight:.1f} "
            f"| {verdict if label != SKOPEO_SYNC else ''} |"
        )
    lines += [
        "",
        f"Target: under {TARGET_SECONDS:g} s and under {TARGET_MB:g} MB (the whole process "
        "tree's RSS, sampled every 10 ms; the process's own VmHWM beside it). Source HEAD ms: "
        "from a HEAD's arrival at the front to its answer (the front's delay included), mean; "
        "in flight: the mean number at once while any was. CPU: user + system of mirror and "
        "its children (median).",
    ]
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = cli.parser(
        "python -m bench.many_tags", __doc__, out="bench/results", work="OUT/tmp/many-tags"
    )
    parser.add_argument("--tags", type=int, default=2000)
    parser.add_argument("--repositories", type=int, default=100)
    parser.add_argument("--delay", type=float, default=0.03, help="round trip per source request")
    parser.add_argument("--repeats", type=int, default=3, help="no-op runs per tool (median)")
    parser.add_argument("--skopeo", action="store_true", help="also skopeo sync (slow)")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="N more no-ops under py-spy"
    )
    parser.add_argument(
        "--cpu", action="store_true", help="profile Python's CPU time (py-spy --gil)"
    )
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
