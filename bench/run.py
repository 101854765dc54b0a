"""Benchmark mirror against `skopeo sync` and a `skopeo copy` loop on the local stand-ins.

For each corpus size: build a reproducible corpus in a source registry behind the Docker-Hub-like
front (a round-trip ``--delay`` per request), give each tool its own empty destination registry,
then measure side by side: the first sync, ``--repeats`` no-op syncs (tools alternated) and a sync
after one tag changed, with the front's counters reset for every run. Writes results.json,
results.md and bench.png to ``--out`` (after each size, so a long run keeps what it measured).

    python -m bench.run [--sizes 25,100,400] [--delay 0.03] [--repeats 3] [--out bench/results]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import corpus as corpora
from bench import report
from bench.tools import TOOLS, Run, Setup, Tool, environment, make_tool, versions
from bench.versions import snapshot
from tests.standins.aws import ECR_PASSWORD, ECR_USER, Moto
from tests.standins.hub import HubCounts, HubFront
from tests.standins.registry import Registry

HUB_LIMIT = 1_000_000_000  # ratelimit-* headers on, as on Docker Hub, but never spent
COUNTED = (
    "manifest_get",
    "manifest_head",
    "blob_get",
    "blob_head",
    "blob_bytes",
    "token",
    "connections",
    "status_429",
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    out = Path(args.out).resolve()
    work = Path(args.work).resolve() if args.work else out / "tmp"
    results: dict[str, Any] = {
        "machine": machine(),
        "params": {
            "sizes": args.sizes,
            "delay": args.delay,
            "repeats": args.repeats,
            "seed": args.seed,
            "scale": args.scale,
            "hub_limit": HUB_LIMIT,
        },
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tools": list(TOOLS),
        "sizes": {},
    }
    if args.append:
        results["sizes"] = previous_sizes(out / "results.json", results["params"])
    extra_env: dict[str, str] = {}
    if args.mirror_ref:
        commit, source = snapshot(args.mirror_ref, work / "mirror-src")
        results["params"]["mirror_commit"] = commit
        extra_env["PYTHONPATH"] = str(source)
    with Moto() as moto:
        for size in args.sizes:
            size_result = bench_size(size, args, moto, work / f"size-{size}", extra_env)
            size_result["mirror_commit"] = results["params"].get("mirror_commit")
            results["sizes"][str(size)] = size_result
            results["sizes"] = dict(sorted(results["sizes"].items(), key=lambda kv: int(kv[0])))
            report.write(results, out)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    json_path, md_path = report.write(results, out)
    print(report.markdown(results), end="")
    print(f"wrote {json_path} and {md_path}")
    if not args.no_plot:
        print(report.plot(results, out / "bench.png"))
    return 0


def previous_sizes(path: Path, params: dict[str, Any]) -> dict[str, Any]:
    """The sizes measured by an earlier run into the same results, if comparable (same delay,
    seed and layer scale); with --append a long run can be done one size at a time."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    same = ("delay", "seed", "scale")
    if any(earlier.get("params", {}).get(key) != params[key] for key in same):
        _say(f"--append: {path} was measured with other {'/'.join(same)}: not kept")
        return {}
    sizes: dict[str, Any] = earlier.get("sizes", {})
    return sizes


def bench_size(
    size: int, args: argparse.Namespace, moto: Moto, root: Path, extra_env: dict[str, str]
) -> dict[str, Any]:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    moto.reset()
    corpus = corpora.generate(size, seed=args.seed, scale=args.scale)
    with contextlib.ExitStack() as stack:
        backend = stack.enter_context(Registry(root / "source"))
        started = time.perf_counter()
        corpora.push(corpus, backend.host, root / "build")
        build_seconds = time.perf_counter() - started
        _say(f"{size} tags: corpus of {len(corpus.images)} images built in {build_seconds:.0f} s")
        hub = stack.enter_context(HubFront(backend.url, limit=HUB_LIMIT, delay=args.delay))
        (root / "tmp").mkdir()
        env = {**environment(moto.url, root / "tmp"), **extra_env}
        tools: dict[str, Tool] = {}
        for name in TOOLS:
            dest = stack.enter_context(
                Registry(root / f"dest-{name}", htpasswd=(ECR_USER, ECR_PASSWORD))
            )
            setup = Setup(
                tool=name,
                source_host=hub.host,
                dest_host=dest.host,
                dest_login=(ECR_USER, ECR_PASSWORD),
                prefix=name.replace("-", ""),
                workdir=root / name,
                env=env,
            )
            tools[name] = make_tool(setup, corpus.repositories)

        measured: dict[str, dict[str, Any]] = {name: {"noop": {"runs": []}} for name in TOOLS}
        notes: list[str] = []
        for name, tool in tools.items():
            measured[name]["first"] = _measure(hub, tool, f"{size} tags, first sync", notes)
        for repeat in range(args.repeats):
            for name, tool in tools.items():
                what = f"{size} tags, no-op {repeat + 1}/{args.repeats}"
                measured[name]["noop"]["runs"].append(_measure(hub, tool, what, notes))
        changed = corpus.changed()
        corpora.push_image(corpus, changed, backend.host, root / "build", seed=f"{changed.seed}|2")
        for name, tool in tools.items():
            measured[name]["changed"] = _measure(hub, tool, f"{size} tags, 1 changed tag", notes)
        for name in TOOLS:
            measured[name]["noop"]["median_seconds"] = round(report.noop_median(measured[name]), 3)

    result: dict[str, Any] = {
        "measured_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "corpus": {**corpus.summary(), "build_seconds": round(build_seconds, 1)},
        "changed_tag": f"{changed.repository}:{changed.tag}",
        "tools": measured,
        "notes": notes,
    }
    derived = report.derive(result)
    result["derived"] = {key: round(value, 4) for key, value in derived.items()}
    result["targets"] = report.judge(size, derived)
    for row in result["targets"]:
        verdict = "PASS" if row["pass"] else "FAIL"
        _say(f"{size} tags: {verdict} {row['text']}: {row['value']:g} (limit {row['limit']})")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return result


def _measure(hub: HubFront, tool: Tool, what: str, notes: list[str]) -> dict[str, Any]:
    """One measured sync. A failed one is recorded as it is (exit code, a note with its error)
    and then repaired by an unmeasured re-run, so the next measurement starts from a complete
    destination; a second failure stops the benchmark."""
    hub.reset_counts()
    run = tool.sync(check=False)
    counts = hub.counts
    _say(
        f"{what}: {tool.name} {run.seconds:.2f} s, {counts.manifest_get} manifest GETs, "
        f"{counts.manifest_head} HEADs, {counts.blob_bytes / 1e6:.1f} MB"
        + (f", EXIT {run.exit_code}" if run.exit_code else "")
    )
    if run.exit_code != 0:
        note = f"{what}: `{tool.name}` exited {run.exit_code}: {tool.failures()}"
        notes.append(note)
        _say(note)
        tool.sync()  # the repair, unmeasured; raises ToolFailed if it fails again
    return record(run, counts)


def record(run: Run, counts: HubCounts) -> dict[str, Any]:
    return {
        "seconds": round(run.seconds, 3),
        "peak_rss_mb": round(run.peak_rss_kb / 1024, 1),
        "cpu_seconds": round(run.cpu_seconds, 2),
        "processes": run.processes,
        "exit_code": run.exit_code,
        "source": {
            **{key: getattr(counts, key) for key in COUNTED},
            "requests": len(counts.requests),
        },
    }


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu_model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory_gb = 0.0
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    os_name = platform.system()
    with contextlib.suppress(OSError):
        os_name = platform.freedesktop_os_release().get("PRETTY_NAME", os_name)
    return {
        "nproc": os.cpu_count(),
        "memory_gb": memory_gb,
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "os": os_name,
        "versions": versions(),
    }


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        message = f"sizes are numbers of tags, like 25,100: {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("at least one size, each at least 1")
    return sizes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark mirror against skopeo sync and a skopeo copy loop (issue 6).",
    )
    parser.add_argument("--sizes", type=_sizes, default=[25, 100, 400], help="tags per corpus")
    parser.add_argument(
        "--delay", type=float, default=0.03, help="round trip per source request (s)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="no-op runs per tool (median)")
    parser.add_argument("--seed", type=int, default=6, help="corpus seed")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every layer size (0.01: smoke test)"
    )
    parser.add_argument("--out", default="bench/results", help="results directory")
    parser.add_argument(
        "--mirror-ref",
        metavar="REV",
        help="measure mirror/ as committed at REV (git archive) instead of the working tree",
    )
    parser.add_argument("--work", help="scratch directory (default: OUT/tmp)")
    parser.add_argument(
        "--append",
        action="store_true",
        help="keep the other sizes already in OUT/results.json (same delay, seed and scale)",
    )
    parser.add_argument("--keep", action="store_true", help="keep registries' data on disk")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    return parser


def _say(text: str) -> None:
    stamp = datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
