"""The no-op of mirror versions side by side, with request timelines and profiles (issue 18).

    python -m bench.regression --mirror good=8ad5280 --mirror split=f02eaeb --mirror head=main
        [--corpus distinct] [--repeats 3] [--jobs N] [--profile N] [--out bench/results/regression]

One source (the Docker-Hub-like front, ``--delay`` per request) holds the corpus; each version
gets its own destination registry behind a pass-through that times every request (as the
source's front does), and a first sync fills it. Then ``--repeats`` no-op runs per version,
versions alternated, each timed with both fronts' timelines: how many manifest HEADs of each
side were in flight at once (at most, and on average while any was), the most of one
repository's at once, tokens, ``/v2/`` pings and the connections accepted (a TLS probe sent to
a plain-HTTP front is a connection with no request). With ``--profile N``, N more no-ops per
version run under py-spy (wall clock, every thread; their samples added up). Writes
``regression.{md,json}`` and, per version, the median run's timeline (``timeline-LABEL.txt``,
``.json``) and the profile (``pyspy-LABEL.md``, raw stacks in ``pyspy-LABEL.txt``) to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import ssl
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import cli, pyspy
from bench import corpus as corpora
from bench.run import HUB_LIMIT, machine
from bench.timeline import Event, Passthrough, TimedHub, gantt, summary
from bench.tools import Mirror, Run, Setup, environment
from bench.versions import Version
from tests.standins.aws import ECR_PASSWORD, ECR_USER, Moto
from tests.standins.registry import Registry
from tests.standins.tls import Authority

CORPORA = ("distinct", "alias")
SHOWN = (
    ("source/manifest_head", "src HEAD"),
    ("destination/manifest_head", "dst HEAD"),
    ("source/token", "token"),
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out, work, versions = cli.prepare(args, "tmp")
    corpus = build_corpus(args)
    results: dict[str, Any] = {
        "machine": machine(),
        "load_before": cli.load_average(),
        "params": {**{k: v for k, v in vars(args).items() if k != "mirror"}, "out": str(out)},
        "corpus": corpus.summary(),
        "versions": {v.label: {"where": v.where, "commit": v.commit} for v in versions},
        "started": _now(),
    }
    with Moto() as moto, contextlib.ExitStack() as stack:
        env = environment(moto.url, work)
        tls = https(work, env) if args.tls else None
        source = stack.enter_context(Registry(work / "source"))
        corpora.push(corpus, source.host, work / "build")
        hub = stack.enter_context(TimedHub(source.url, limit=HUB_LIMIT, delay=args.delay, tls=tls))
        tools = {}
        for version in versions:
            dest = stack.enter_context(
                Registry(work / f"dest-{version.label}", htpasswd=(ECR_USER, ECR_PASSWORD))
            )
            front = stack.enter_context(Passthrough(dest.url, tls=tls))
            setup = Setup(
                tool=version.label,
                source_host=hub.host,
                dest_host=front.host,
                dest_login=(ECR_USER, ECR_PASSWORD),
                prefix="mirror",
                workdir=work / f"tool-{version.label}",
                env={**env, **version.env},
                tls=args.tls,
            )
            tools[version.label] = (Mirror(setup, corpus.repositories, jobs=args.jobs), front)
        measured = measure_all(versions, tools, hub, args, out)
    results["runs"] = measured
    results["load_after"] = cli.load_average()
    out.mkdir(parents=True, exist_ok=True)
    (out / "regression.json").write_text(json.dumps(results, indent=2) + "\n")
    text = render(results)
    (out / "regression.md").write_text(text)
    print(text, end="")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def https(work: Path, env: dict[str, str]) -> ssl.SSLContext:
    """Both fronts on HTTPS with a private CA, which mirror trusts through SSL_CERT_FILE: the
    system's bundle with the CA added, so reading it costs what it costs on a real host."""
    authority = Authority(work)
    system = Path(env.get("SSL_CERT_FILE") or ssl.get_default_verify_paths().openssl_cafile)
    bundle = work / "bundle.pem"
    bundle.write_bytes(system.read_bytes() + b"\n" + authority.ca_file.read_bytes())
    env["SSL_CERT_FILE"] = str(bundle)
    return authority.server_context()


def build_corpus(args: argparse.Namespace) -> corpora.Corpus:
    if args.corpus == "distinct":
        return corpora.distinct(args.images, args.repositories, seed=args.seed, scale=args.scale)
    return corpora.generate(args.images, seed=6, scale=args.scale)


def measure_all(
    versions: list[Version],
    tools: dict[str, tuple[Mirror, Passthrough]],
    hub: TimedHub,
    args: argparse.Namespace,
    out: Path,
) -> dict[str, Any]:
    runs: dict[str, Any] = {v.label: {"noop": []} for v in versions}
    for version in versions:
        mirror, front = tools[version.label]
        runs[version.label]["first"] = timed(mirror, hub, front, f"{version.label}: first sync")
    for repeat in range(args.repeats):
        for version in versions:
            mirror, front = tools[version.label]
            what = f"{version.label}: no-op {repeat + 1}/{args.repeats}"
            runs[version.label]["noop"].append(timed(mirror, hub, front, what))
    out.mkdir(parents=True, exist_ok=True)
    for version in versions:
        entry = runs[version.label]
        noops = entry["noop"]
        median = statistics.median(run["seconds"] for run in noops)
        chosen = min(noops, key=lambda run: abs(run["seconds"] - median))
        entry["noop_median_s"] = round(median, 3)
        entry["noop_seconds"] = [run["seconds"] for run in noops]
        entry["median_run"] = {k: v for k, v in chosen.items() if k != "events"}
        save_timeline(out, version.label, chosen["events"])
        for run in noops:
            run.pop("events")
        entry["first"].pop("events")
        if args.profile:
            mirror, _ = tools[version.label]
            entry["profile"] = profile(mirror, out, version.label, args.profile)
    return runs


def timed(mirror: Mirror, hub: TimedHub, front: Passthrough, what: str) -> dict[str, Any]:
    zero = time.monotonic()
    for timed_front in (hub, front):
        timed_front.mark(zero)
    hub.reset_counts()
    run: Run = mirror.sync(check=False)
    events = sorted([*hub.events, *front.events], key=lambda event: event.arrived)
    counts = hub.counts
    found = summary(events)
    cli.say(
        f"{what}: {run.seconds:.2f} s, exit {run.exit_code}, source {counts.manifest_head} HEADs "
        f"{counts.manifest_get} GETs; "
        + ", ".join(
            f"{label} max {found[key]['max_in_flight']} mean {found[key]['mean_in_flight']}"
            for key, label in SHOWN
            if key in found
        )
    )
    if run.exit_code:
        cli.say(f"{what}: {mirror.failures()}")
    return {
        "seconds": round(run.seconds, 3),
        "exit_code": run.exit_code,
        "peak_rss_mb": round(run.peak_rss_kb / 1024, 1),
        "source": {"manifest_head": counts.manifest_head, "manifest_get": counts.manifest_get},
        "timeline": found,
        "first_request_s": _first_request(events),
        "last_answer_s": round(max((e.answered for e in events), default=0.0), 3),
        "events": events,
    }


def _first_request(events: Sequence[Event]) -> float | None:
    requests = [event.arrived for event in events if event.kind != "connect"]
    return round(min(requests), 3) if requests else None


def save_timeline(out: Path, label: str, events: Sequence[Event]) -> None:
    (out / f"timeline-{label}.json").write_text(
        json.dumps([asdict(event) for event in events], indent=1) + "\n"
    )
    (out / f"timeline-{label}.txt").write_text(gantt(events))


def profile(
    mirror: Mirror, out: Path, label: str, runs: int, *, gil: bool = False
) -> dict[str, object]:
    """``runs`` no-ops under py-spy, their raw stacks in one file; seconds per thread group
    and frame, summed over the runs (with ``gil``: seconds holding the GIL)."""
    raw = out / f"pyspy-{label}.txt"
    one = out / f"pyspy-{label}.part"
    raw.write_text("")
    for _ in range(runs):
        code = pyspy.record(
            mirror.argv(), env=mirror.setup.env, cwd=mirror.setup.workdir, output=one, gil=gil
        )
        if code != 0:
            cli.say(f"{label}: a run under py-spy exited {code}")
        with raw.open("a") as whole:
            whole.write(one.read_text())
    one.unlink(missing_ok=True)
    (out / f"pyspy-{label}.md").write_text("\n".join(pyspy.render(label, pyspy.read(raw))))
    return pyspy.read(raw).as_dict()


def render(results: dict[str, Any]) -> str:
    params = results["params"]
    lines = [
        "# No-op of mirror versions side by side (issue 18)",
        "",
        f"Corpus `{params['corpus']}`: {results['corpus']}. Source {params['delay']} s per "
        f"request; {'HTTPS (verified) at both ends' if params['tls'] else 'plain HTTP'}; "
        f"--jobs {params['jobs'] or 'default'}; no-op median of {params['repeats']} "
        f"runs, versions alternated. Load average before {results['load_before']}, after "
        f"{results['load_after']}. Started {results['started']}.",
        "",
        "In flight: the most requests of that kind at once / the mean while any was. "
        "Per repository: the most HEADs of one repository at once (mean over repositories).",
        "",
        "| version | commit | no-op s (median) | runs | src HEADs | src HEAD in flight "
        "| dst HEAD in flight | src per repo | dst per repo | tokens | first request s "
        "| last answer s |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, entry in results["runs"].items():
        run = entry["median_run"]
        line = run["timeline"]

        def flight(key: str, line: dict[str, Any] = line) -> str:
            found = line.get(key)
            return f"{found['max_in_flight']} / {found['mean_in_flight']}" if found else "-"

        def per_repo(side: str, line: dict[str, Any] = line) -> str:
            found = line.get(f"{side}/manifest_head per repository")
            return f"{found['max_in_flight']} ({found['mean_of_max_in_flight']})" if found else "-"

        tokens = line.get("source/token", {}).get("count", 0)
        lines.append(
            f"| {label} | {results['versions'][label]['commit']} | {entry['noop_median_s']:.2f} "
            f"| {', '.join(f'{s:.2f}' for s in entry['noop_seconds'])} "
            f"| {run['source']['manifest_head']} | {flight('source/manifest_head')} "
            f"| {flight('destination/manifest_head')} | {per_repo('source')} "
            f"| {per_repo('destination')} | {tokens} | {run['first_request_s']} "
            f"| {run['last_answer_s']} |"
        )
    lines += ["", "Timelines: `timeline-LABEL.txt` (the median no-op run of each version).", ""]
    for label, entry in results["runs"].items():
        if "profile" in entry:
            lines += [
                f"Profile of `{label}`: `pyspy-{label}.md` (from `pyspy-{label}.txt`, raw "
                "py-spy stacks)."
            ]
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = cli.parser(
        "python -m bench.regression", __doc__, out="bench/results/regression", work="OUT/tmp"
    )
    parser.add_argument("--corpus", choices=CORPORA, default="distinct")
    parser.add_argument("--images", type=int, default=32, help="tags (alias: tags in all)")
    parser.add_argument("--repositories", type=int, default=16)
    parser.add_argument("--delay", type=float, default=0.03, help="round trip per source request")
    parser.add_argument("--repeats", type=int, default=3, help="no-op runs per version")
    parser.add_argument("--jobs", type=int, help="mirror --jobs (default: mirror's own)")
    parser.add_argument(
        "--tls", action="store_true", help="both ends on HTTPS (a private CA), verified"
    )
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every layer size")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="N more no-ops under py-spy"
    )
    return parser


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


if __name__ == "__main__":
    raise SystemExit(main())
