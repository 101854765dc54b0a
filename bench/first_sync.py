"""Where mirror's own time goes in a first sync of distinct images, copy by copy (issue 18).

    python -m bench.first_sync [--mirror LABEL=WHERE ...] [--images 32] [--repositories 16]
                               [--delay 0.03] [--scale 1] [--out bench/results/first-sync]

The distinct corpus (bench/corpus.py) in a source behind the Docker-Hub-like front, each run
into a fresh destination behind a timed pass-through (bench/timeline.py), so both ends record
every request:

- the bare loop: ``skopeo copy --all --preserve-digests`` once per tag, one after another
  (what mirror --jobs 1 does at its core): per copy, its wall time and how long skopeo took
  from its start to its first request (skopeo's own start-up);
- each ``--mirror`` version with ``--jobs 1`` (one copy at a time, so the parts add up): its
  wall time, then the same run again under py-spy, whose samples of the thread that runs the
  copies are put in phases (start-up, ECR login, the checks, reading an index, creating the
  repository, skopeo, the budget's re-read, the rest) by the mirror functions on their stacks.

Mirror's overhead per copy is (its wall time - the loop's) / copies; the requests each side
received per copy are counted for both. Writes ``first-sync.{md,json}`` and the timelines
(``timeline-LABEL.txt``) and profiles (``pyspy-LABEL.txt``) to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import cli, pyspy
from bench import corpus as corpora
from bench.run import HUB_LIMIT, machine
from bench.timeline import Event, Passthrough, TimedHub, gantt, summary
from bench.tools import Mirror, Setup, SkopeoLoop, Tool, environment
from bench.versions import Version
from tests.standins.aws import ECR_PASSWORD, ECR_USER, Moto
from tests.standins.registry import Registry

LOGIN = (ECR_USER, ECR_PASSWORD)
# (phase, what on a stack puts a sample in it), first match from the innermost frame out
PHASES = (
    ("imports", ("_find_and_load",)),
    ("skopeo --version probe", ("probe (mirror/skopeo.py",)),
    ("repository creation (CreateRepository)", ("ensure_repository (mirror/",)),
    ("skopeo copy (start, run, wait)", ("copy (mirror/skopeo.py", "Skopeo.copy")),
    ("index read / budget estimate", ("Pulls.manifest", "estimate (mirror/", "_platforms")),
    ("budget re-read after the copies", ("reread (mirror/", "_refresh_budget")),
    ("checks (HEADs at both ends)", ("_check (mirror/", "Pipeline._check", "Checker.check")),
    ("ECR login (boto3 client, token)", ("mirror/aws.py",)),
    ("config, lock, report, console", ("mirror/config.py", "mirror/lock.py", "mirror/console.py",
                                       "mirror/report.py")),
    ("other mirror code", ("mirror/",)),
)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out, work, versions = cli.prepare(args, "tmp")
    made = corpora.distinct(args.images, args.repositories, scale=args.scale)
    results: dict[str, Any] = {
        "machine": machine(),
        "load_before": cli.load_average(),
        "params": {k: v for k, v in vars(args).items() if k not in ("mirror", "out", "work")},
        "corpus": made.summary(),
        "versions": {v.label: {"where": v.where, "commit": v.commit} for v in versions},
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    out.mkdir(parents=True, exist_ok=True)
    with Moto() as moto, contextlib.ExitStack() as stack:
        env = environment(moto.url, work)
        source = stack.enter_context(Registry(work / "source"))
        corpora.push(made, source.host, work / "build")
        hub = stack.enter_context(TimedHub(source.url, limit=HUB_LIMIT, delay=args.delay))
        bench = _Bench(hub, env, work, out, made)
        results["loop"] = bench.loop()
        results["mirror"] = {version.label: bench.mirror(version) for version in versions}
    results["load_after"] = cli.load_average()
    (out / "first-sync.json").write_text(json.dumps(results, indent=2) + "\n")
    text = render(results)
    (out / "first-sync.md").write_text(text)
    print(text, end="")
    shutil.rmtree(work, ignore_errors=True)
    return 0


class _Bench:
    def __init__(
        self, hub: TimedHub, env: dict[str, str], work: Path, out: Path, made: corpora.Corpus
    ):
        self.hub, self.env, self.work, self.out, self.made = hub, env, work, out, made
        self.runs = 0

    @contextlib.contextmanager
    def destination(self, label: str, env: dict[str, str]) -> Any:
        """A fresh destination behind a timed pass-through, and a Setup writing to it."""
        self.runs += 1
        where = self.work / f"run-{self.runs}"
        with (
            Registry(where / "dest", htpasswd=LOGIN) as backend,
            Passthrough(backend.url) as front,
        ):
            prefix = f"r{self.runs}"
            yield front, Setup(label, self.hub.host, front.host, LOGIN, prefix, where, env)

    def loop(self) -> dict[str, Any]:
        """The bare skopeo copy loop, each copy timed from its start to its first request."""
        with self.destination("skopeo-loop", self.env) as (front, setup):
            tool = SkopeoLoop(setup, self.made.repositories)
            zero = self._mark(front)
            walls, starts = [], []
            for repository, tags in self.made.repositories.items():
                for tag in tags:
                    launched = time.monotonic() - zero
                    one = tool._measure(tool.copy_argv(repository, tag))
                    if one.exit_code:
                        raise SystemExit(f"skopeo copy {repository}:{tag}: {tool.failures()}")
                    walls.append(one.seconds)
                    first = min(
                        (e.arrived for e in self._events(front) if e.arrived >= launched),
                        default=launched,
                    )
                    starts.append(first - launched)
            events = self._events(front)
        cli.say(f"skopeo loop: {sum(walls):.2f} s, {statistics.mean(walls) * 1000:.0f} ms a copy")
        self._save("skopeo-loop", events)
        return {
            "seconds": round(sum(walls), 3),
            "per_copy_ms": round(statistics.mean(walls) * 1000, 1),
            "start_to_first_request_ms": round(statistics.median(starts) * 1000, 1),
            "requests_per_copy": _per_copy(events, len(walls)),
        }

    def mirror(self, version: Version) -> dict[str, Any]:
        env = {**self.env, **version.env}
        with self.destination(version.label, env) as (front, setup):
            tool: Tool = Mirror(setup, self.made.repositories, jobs=1)
            self._mark(front)
            run = tool.sync(check=False)
            events = self._events(front)
        if run.exit_code:
            raise SystemExit(f"{version.label}: {tool.failures()}")
        copies = self.made.tags
        cli.say(f"{version.label} --jobs 1: {run.seconds:.2f} s")
        self._save(version.label, events)
        with self.destination(version.label, env) as (_, setup):
            tool = Mirror(setup, self.made.repositories, jobs=1)
            raw = self.out / f"pyspy-{version.label}.txt"
            pyspy.record(tool.argv(), env=setup.env, cwd=setup.workdir, output=raw)
        phases = breakdown(raw)
        return {
            "seconds": round(run.seconds, 3),
            "per_copy_ms": round(run.seconds / copies * 1000, 1),
            "first_request_s": round(min(e.arrived for e in events if e.kind != "connect"), 3),
            "requests_per_copy": _per_copy(events, copies),
            "timeline": summary(events),
            "phases_s_under_pyspy": phases,
        }

    def _mark(self, front: Passthrough) -> float:
        zero = time.monotonic()
        self.hub.mark(zero)
        front.mark(zero)
        return zero

    def _events(self, front: Passthrough) -> list[Event]:
        return sorted([*self.hub.events, *front.events], key=lambda event: event.arrived)

    def _save(self, label: str, events: list[Event]) -> None:
        (self.out / f"timeline-{label}.txt").write_text(gantt(events, width=160))


def _per_copy(events: Sequence[Event], copies: int) -> dict[str, float]:
    counted = Counter(f"{e.side}/{e.kind}" for e in events if e.kind != "connect")
    counted.update(f"{e.side}/connections" for e in events if e.kind == "connect")
    return {key: round(count / copies, 2) for key, count in sorted(counted.items())}


def breakdown(raw: Path) -> dict[str, float]:
    """Seconds per phase of the main thread (where --jobs 1 runs the copies since the
    restructuring; before it, the one worker of the copy pool), from py-spy's raw stacks."""
    samples: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        head, *frames = stack.split(";")
        if not _copying_thread(head, frames):
            continue
        samples[_phase(frames)] += int(count)
    return {phase: round(count / pyspy.RATE, 2) for phase, count in samples.most_common()}


def _copying_thread(head: str, frames: Sequence[str]) -> bool:
    """The main thread, and the thread that copies where --jobs 1 still copies in a pool
    (8ad5280's engine; main before bb5f852): the main thread then only waits, left out."""
    copying = ("Transfer.run (mirror/transfer.py", "_copy_job (mirror/engine.py")
    waiting = ("Pipeline._transfer (mirror/pipeline.py", "_copy_all (mirror/engine.py")
    in_copy = any(needle in frame for frame in frames for needle in copying)
    waits = any(needle in frame for frame in frames for needle in waiting)
    return in_copy or ("MainThread" in head and not waits)


def _phase(frames: Sequence[str]) -> str:
    for phase, needles in PHASES:
        if any(needle in frame for frame in frames for needle in needles):
            return phase
    return "outside mirror (interpreter start, exit, idle)"


def render(results: dict[str, Any]) -> str:
    loop, corpus = results["loop"], results["corpus"]
    copies = corpus["tags"]
    lines = [
        "# First sync of distinct images: mirror's own time, copy by copy (issue 18)",
        "",
        f"{copies} tags, each its own image, in {corpus['repositories']} repositories "
        f"({corpus['multi_platform_images']} multi-platform); source "
        f"{results['params']['delay']} s per request; layer scale {results['params']['scale']}. "
        f"Load average before {results['load_before']}, after {results['load_after']}. "
        f"Started {results['started']}.",
        "",
        f"Bare `skopeo copy` loop: {loop['seconds']:.2f} s, {loop['per_copy_ms']:.0f} ms a copy; "
        f"skopeo's start to its first request: {loop['start_to_first_request_ms']:.0f} ms "
        "(median).",
        "",
        "| mirror --jobs 1 | wall s | ms a copy | overhead ms a copy | first request s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, entry in results["mirror"].items():
        overhead = (entry["seconds"] - loop["seconds"]) / copies * 1000
        lines.append(
            f"| {label} ({results['versions'][label]['commit']}) | {entry['seconds']:.2f} "
            f"| {entry['per_copy_ms']:.0f} | {overhead:+.0f} | {entry['first_request_s']} |"
        )
    for label, entry in results["mirror"].items():
        phases = entry["phases_s_under_pyspy"]
        total = sum(phases.values())
        lines += [
            "",
            f"### {label}: the copying thread under py-spy ({total:.2f} s sampled)",
            "",
            "| phase | s | ms a copy |",
            "| --- | ---: | ---: |",
            *(
                f"| {phase} | {seconds:.2f} | {seconds / copies * 1000:.0f} |"
                for phase, seconds in phases.items()
            ),
        ]
    keys = sorted({k for e in [loop, *results["mirror"].values()] for k in e["requests_per_copy"]})
    labels = ["skopeo-loop", *results["mirror"]]
    per_copy = [loop["requests_per_copy"]] + [
        e["requests_per_copy"] for e in results["mirror"].values()
    ]
    lines += [
        "",
        "### Requests received per copy",
        "",
        "| side/kind | " + " | ".join(labels) + " |",
        "| --- |" + " ---: |" * len(labels),
        *(f"| {key} | " + " | ".join(str(p.get(key, 0)) for p in per_copy) + " |" for key in keys),
    ]
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = cli.parser(
        "python -m bench.first_sync",
        __doc__,
        out="bench/results/first-sync",
        work="OUT/tmp",
        keep=False,
    )
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repositories", type=int, default=16)
    parser.add_argument("--delay", type=float, default=0.03, help="round trip per source request")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every layer size")
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
