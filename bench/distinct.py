"""Distinct images beside the alias-rich corpus: mirror versions against `skopeo sync` (issue 18).

    python -m bench.distinct [--mirror LABEL=WHERE ...] [--corpora distinct,alias]
                             [--repeats 3] [--delay 0.03] [--scale 1] [--out bench/results]

Two corpora (bench/corpus.py), each in its own source behind the Docker-Hub-like front (``--delay``
per request): ``distinct``, 32 tags (``--images``), each its own image, in 16 repositories
(``--repositories``), a quarter multi-platform (nothing for mirror to fill from an alias);
``alias``, the 100-tag (``--alias-tags``) alias-rich corpus of bench.run. Every tool (each
``--mirror`` version, with default options, and ``skopeo sync --src yaml --all
--preserve-digests``, the reference) has its own destination registry. Per corpus: every tool's
first sync, then ``--repeats`` no-op syncs (tools alternated; median), each with the source's
counters reset. Ratios are to skopeo sync in the same run; the targets are issue 18's. Writes
``distinct.{md,json}`` to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import cli
from bench import corpus as corpora
from bench.run import HUB_LIMIT, machine, record
from bench.tools import SKOPEO_SYNC, Mirror, Setup, SkopeoSync, Tool, environment
from bench.versions import Version
from tests.standins.aws import ECR_PASSWORD, ECR_USER, Moto
from tests.standins.hub import HubFront
from tests.standins.registry import Registry

CORPORA = ("distinct", "alias")
# issue 18: (corpus, phase) -> the most mirror / skopeo sync may take
TARGETS = {
    ("distinct", "first"): 0.5,
    ("distinct", "noop"): 0.25,
    ("alias", "first"): 0.35,
    ("alias", "noop"): 0.1,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out, work, versions = cli.prepare(args, "tmp/distinct")
    results: dict[str, Any] = {
        "machine": machine(),
        "load_before": cli.load_average(),
        "params": {
            "delay": args.delay,
            "repeats": args.repeats,
            "scale": args.scale,
            "corpora": args.corpora,
            "images": args.images,
            "repositories": args.repositories,
            "alias_tags": args.alias_tags,
        },
        "versions": {v.label: {"where": v.where, "commit": v.commit} for v in versions},
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "corpora": {},
    }
    with Moto() as moto:
        env = environment(moto.url, work)
        for name in args.corpora:
            moto.reset()
            made = build(name, args)
            results["corpora"][name] = bench_corpus(
                name, made, versions, env, args=args, root=work / name
            )
    results["load_after"] = cli.load_average()
    out.mkdir(parents=True, exist_ok=True)
    (out / "distinct.json").write_text(json.dumps(results, indent=2) + "\n")
    text = render(results)
    (out / "distinct.md").write_text(text)
    print(text, end="")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def build(name: str, args: argparse.Namespace) -> corpora.Corpus:
    if name == "distinct":
        return corpora.distinct(args.images, args.repositories, scale=args.scale)
    return corpora.generate(args.alias_tags, seed=6, scale=args.scale)


def bench_corpus(
    name: str,
    made: corpora.Corpus,
    versions: Sequence[Version],
    env: dict[str, str],
    *,
    args: argparse.Namespace,
    root: Path,
) -> dict[str, Any]:
    """First sync and no-ops of every tool on one corpus."""
    labels = [(v.label, {**env, **v.env}) for v in versions] + [(SKOPEO_SYNC, env)]
    with contextlib.ExitStack() as stack:
        backend = stack.enter_context(Registry(root / "source"))
        started = time.perf_counter()
        corpora.push(made, backend.host, root / "build")
        cli.say(f"{name}: {made.summary()} built in {time.perf_counter() - started:.0f} s")
        hub = stack.enter_context(HubFront(backend.url, limit=HUB_LIMIT, delay=args.delay))
        tools: dict[str, Tool] = {}
        for number, (label, tool_env) in enumerate(labels):
            dest = stack.enter_context(
                Registry(root / f"dest-{number}", htpasswd=(ECR_USER, ECR_PASSWORD))
            )
            prefix = "".join(char for char in label.lower() if char.isalnum()) or f"m{number}"
            setup = Setup(
                label,
                hub.host,
                dest.host,
                (ECR_USER, ECR_PASSWORD),
                prefix,
                root / f"tool-{number}",
                tool_env,
            )
            made_tool = Mirror if label != SKOPEO_SYNC else SkopeoSync
            tools[label] = made_tool(setup, made.repositories)
        measured: dict[str, dict[str, Any]] = {label: {"noop": []} for label in tools}
        for label, tool in tools.items():
            measured[label]["first"] = one(hub, tool, f"{name}: {label} first sync")
        for repeat in range(args.repeats):
            for label, tool in tools.items():
                what = f"{name}: {label} no-op {repeat + 1}/{args.repeats}"
                measured[label]["noop"].append(one(hub, tool, what))
    for entry in measured.values():
        entry["noop_median_s"] = round(statistics.median(r["seconds"] for r in entry["noop"]), 3)
    return {"corpus": made.summary(), "tools": measured, "verdicts": verdicts(name, measured)}


def one(hub: HubFront, tool: Tool, what: str) -> dict[str, Any]:
    hub.reset_counts()
    run = tool.sync(check=False)
    counts = hub.counts
    cli.say(
        f"{what}: {run.seconds:.2f} s, {counts.manifest_get} manifest GETs, "
        f"{counts.manifest_head} HEADs" + (f", EXIT {run.exit_code}" if run.exit_code else "")
    )
    result = record(run, counts)
    if run.exit_code:
        result["error"] = tool.failures()
        cli.say(f"{what}: {result['error']}")
    return result


def verdicts(name: str, measured: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each mirror version against issue 18's targets for this corpus."""
    reference = measured[SKOPEO_SYNC]
    rows = []
    for label, entry in measured.items():
        if label == SKOPEO_SYNC:
            continue
        for phase in ("first", "noop"):
            limit = TARGETS.get((name, phase))
            if limit is None:
                continue
            ratio = _seconds(entry, phase) / _seconds(reference, phase)
            gets = max(run["source"]["manifest_get"] for run in entry["noop"])
            ok = ratio <= limit and (phase != "noop" or gets == 0)
            rows.append(
                {"mirror": label, "phase": phase, "ratio": round(ratio, 3), "limit": limit}
                | {"noop_manifest_gets": gets, "pass": ok}
            )
    return rows


def _seconds(entry: dict[str, Any], phase: str) -> float:
    return float(entry["noop_median_s"] if phase == "noop" else entry["first"]["seconds"])


def render(results: dict[str, Any]) -> str:
    params = results["params"]
    lines = [
        "# Distinct images beside alias-rich tags: mirror versions and skopeo sync (issue 18)",
        "",
        f"Source {params['delay']} s per request, layer scale {params['scale']}, no-op median "
        f"of {params['repeats']} runs (tools alternated). Load average before "
        f"{results['load_before']}, after {results['load_after']}. Started {results['started']}. "
        "Versions: "
        + ", ".join(f"`{k}` = {v['where']} ({v['commit']})" for k, v in results["versions"].items())
        + ".",
        "",
    ]
    for name, entry in results["corpora"].items():
        corpus = entry["corpus"]
        reference = entry["tools"][SKOPEO_SYNC]
        lines += [
            f"## {name}: {corpus['tags']} tags, {corpus['distinct_images']} images, "
            f"{corpus['repositories']} repositories, {corpus['multi_platform_images']} "
            "multi-platform",
            "",
            "| tool | first s | x skopeo sync | first CPU s | no-op s (median) | x skopeo sync "
            "| no-op runs | no-op CPU s | no-op manifest GETs / HEADs | peak RSS MB |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
        ]
        for label, tool in entry["tools"].items():
            first, noops = tool["first"], tool["noop"]
            runs = ", ".join(f"{run['seconds']:.2f}" for run in noops)
            flag = "*" if any(r["exit_code"] for r in (first, *noops)) else ""
            lines.append(
                f"| {label}{flag} | {first['seconds']:.2f} "
                f"| {first['seconds'] / reference['first']['seconds']:.2f} "
                f"| {first.get('cpu_seconds', 0):.1f} "
                f"| {tool['noop_median_s']:.2f} "
                f"| {tool['noop_median_s'] / reference['noop_median_s']:.2f} "
                f"| {runs} | {statistics.median(r.get('cpu_seconds', 0) for r in noops):.1f} "
                f"| {max(r['source']['manifest_get'] for r in noops)} / "
                f"{max(r['source']['manifest_head'] for r in noops)} "
                f"| {max(r['peak_rss_mb'] for r in (first, *noops)):.0f} |"
            )
        lines += ["", "Targets (issue 18):", ""]
        for row in entry["verdicts"]:
            verdict = "PASS" if row["pass"] else "FAIL"
            lines.append(
                f"- {row['mirror']}, {row['phase']}: {row['ratio']:.3f} x skopeo sync "
                f"(limit {row['limit']}{', 0 manifest GETs' if row['phase'] == 'noop' else ''})"
                f": {verdict}"
            )
        lines.append("")
    lines.append("`*`: a run exited non-zero (its error is in distinct.json).")
    return "\n".join(lines) + "\n"


def _corpora(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in CORPORA]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"corpora are {', '.join(CORPORA)}, not {text!r}")
    return names


def _parser() -> argparse.ArgumentParser:
    parser = cli.parser(
        "python -m bench.distinct", __doc__, out="bench/results", work="OUT/tmp/distinct"
    )
    parser.add_argument("--corpora", type=_corpora, default=list(CORPORA))
    parser.add_argument("--images", type=int, default=32, help="distinct: images (= tags)")
    parser.add_argument("--repositories", type=int, default=16, help="distinct: repositories")
    parser.add_argument("--alias-tags", type=int, default=100, help="alias: tags")
    parser.add_argument("--delay", type=float, default=0.03, help="round trip per source request")
    parser.add_argument("--repeats", type=int, default=3, help="no-op runs per tool (median)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every layer size")
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
