"""Where mirror's time goes: start-up, a no-op sync and a first sync, on the local stand-ins.

    python -m bench.profile [--tags 100] [--delay 0.03] [--out bench/results/profile]
                            [--mirror-ref REV]

Measures, and writes to ``OUT/profile.json`` and ``OUT/profile.md``:

- start-up: a bare interpreter, ``import mirror.cli``, ``-X importtime`` of a no-op run (the
  heaviest imports), ``skopeo --version``, a boto3 ECR client and its token call against moto;
- a no-op sync: wall time per ``--jobs``, the source requests (HEADs, tokens, 401 challenges,
  TCP connections), a wall-clock breakdown of the main thread sampled by py-spy (``--idle``),
  and cProfile's top functions (``OUT/noop-cprofile.txt``);
- a first sync with ``--jobs 1`` against a bare ``skopeo copy`` loop over the same tags: the
  requests each makes and a py-spy breakdown of mirror's worker thread (checks, copies, the
  budget HEAD after each copy, repository creation), and skopeo run as mirror runs it
  (``--debug``, stderr read line by line) against a plain ``skopeo copy``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import pstats
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import corpus as corpora
from bench.run import HUB_LIMIT, snapshot
from bench.tools import Mirror, Setup, SkopeoLoop, environment, measure
from tests.standins.aws import ECR_PASSWORD, ECR_USER, Moto
from tests.standins.hub import HubCounts, HubFront
from tests.standins.registry import Registry

IMPORTS_SHOWN = 18
PYSPY_RATE = 100  # samples per second and thread
# (label, frame substring): a sample goes to the first label one of its frames matches
MAIN_PHASES = (
    ("imports", "_find_and_load"),
    ("wait for the worker threads (checks and copies)", "_gather (mirror/engine.py"),
    ("ECR token (boto3 client + GetAuthorizationToken)", "mirror/aws.py"),
    ("skopeo --version probe", "probe (mirror/skopeo.py"),
    ("source credential check", "_check_logins (mirror/engine.py"),
    ("config load", "load (mirror/config.py"),
    ("lock", "mirror/lock.py"),
    ("report and console", "mirror/console.py"),
    ("other mirror code", "mirror/"),
)
WORKER_PHASES = (
    ("ensure_repository (moto CreateRepository)", "ensure_repository (mirror/aws.py"),
    ("skopeo copy (spawn, run, wait)", "copy (mirror/skopeo.py"),
    ("budget HEAD after each copy", "_refresh_budget (mirror/engine.py"),
    ("check: HEAD source + HEAD destination", "_check (mirror/engine.py"),
    ("other in the worker", "mirror/"),
    ("idle in the thread pool", "_worker (concurrent/futures/thread.py"),
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out).resolve()
    root = Path(args.work).resolve() if args.work else out.parent / "tmp" / "profile"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    extra: dict[str, str] = {}
    findings: dict[str, Any] = {"params": {"tags": args.tags, "delay": args.delay}}
    if args.mirror_ref:
        commit, source = snapshot(args.mirror_ref, root / "mirror-src")
        extra["PYTHONPATH"] = str(source)
        findings["params"]["mirror_commit"] = commit
    with Moto() as moto, contextlib.ExitStack() as stack:
        env = {**environment(moto.url, root), **extra}
        corpus = corpora.generate(args.tags, seed=args.seed)
        backend = stack.enter_context(Registry(root / "source"))
        corpora.push(corpus, backend.host, root / "build")
        hub = stack.enter_context(HubFront(backend.url, limit=HUB_LIMIT, delay=args.delay))

        def setup(name: str) -> Setup:
            dest = stack.enter_context(
                Registry(root / f"dest-{name}", htpasswd=(ECR_USER, ECR_PASSWORD))
            )
            return Setup(
                name, hub.host, dest.host, (ECR_USER, ECR_PASSWORD), name, root / name, env
            )

        repositories = corpus.repositories
        findings["startup"] = startup(env, root)
        _say(f"start-up: {findings['startup']['summary']}")
        mirror1 = Mirror(setup("m1"), repositories, jobs=1)
        findings["first_sync"] = first_sync(hub, mirror1, SkopeoLoop(setup("loop"), repositories))
        _say(f"first sync: {findings['first_sync']['summary']}")
        findings["noop"] = noop(hub, mirror1, root / "noop", out)
        _say(f"no-op: {findings['noop']['summary']}")
        findings["skopeo_as_mirror_runs_it"] = skopeo_styles(
            hub, corpus, [setup("plain"), setup("debug")]
        )
        findings["spawn"] = spawn_cost()
    shutil.rmtree(root, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.json").write_text(json.dumps(findings, indent=2) + "\n")
    text = render(findings)
    (out / "profile.md").write_text(text)
    print(text, end="")
    return 0


# --- start-up -----------------------------------------------------------------------------------


def _median_wall(argv: list[str], env: dict[str, str], cwd: Path, times: int = 5) -> float:
    walls = []
    for _ in range(times):
        started = time.perf_counter()
        subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=True, timeout=120)
        walls.append(time.perf_counter() - started)
    return statistics.median(walls)


def startup(env: dict[str, str], cwd: Path) -> dict[str, Any]:
    python = sys.executable
    bare = _median_wall([python, "-c", "pass"], env, cwd)
    cli = _median_wall([python, "-c", "import mirror.cli"], env, cwd)
    imports = importtime(env, cwd)
    skopeo = _median_wall(["skopeo", "--version"], env, cwd)
    boto = subprocess.run(
        [python, "-c", _BOTO_TIMING],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    aws = json.loads(boto.stdout)
    result = {
        "python_bare_s": round(bare, 3),
        "import_mirror_cli_s": round(cli, 3),
        "importtime_top": imports,
        "skopeo_version_s": round(skopeo, 3),
        "aws": aws,
    }
    result["summary"] = (
        f"bare python {bare * 1000:.0f} ms, import mirror.cli {cli * 1000:.0f} ms, "
        f"skopeo --version {skopeo * 1000:.0f} ms, boto3 import {aws['import_s'] * 1000:.0f} ms, "
        f"client {aws['client_s'] * 1000:.0f} ms, token call {aws['token_s'] * 1000:.0f} ms"
    )
    return result


_BOTO_TIMING = """
import json, time
t0 = time.perf_counter()
import boto3
t1 = time.perf_counter()
client = boto3.client("ecr", region_name="us-east-1")
t2 = time.perf_counter()
client.get_authorization_token()
t3 = time.perf_counter()
print(json.dumps({"import_s": round(t1 - t0, 3), "client_s": round(t2 - t1, 3),
                  "token_s": round(t3 - t2, 3)}))
"""


def importtime(env: dict[str, str], cwd: Path, runs: int = 3) -> list[dict[str, Any]]:
    """The heaviest modules imported by ``import mirror.cli`` (``-X importtime``): the
    cumulative time of each (nested ones are part of their importer's), best of ``runs``."""
    best: dict[str, int] = {}
    depth: dict[str, int] = {}
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import mirror.cli"],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        for line in done.stderr.splitlines():
            match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
            if match is not None:
                name, cumulative = match[4], int(match[2])
                best[name] = min(best.get(name, cumulative), cumulative)
                depth[name] = len(match[3]) // 2
    heaviest = sorted(best.items(), key=lambda item: -item[1])[:IMPORTS_SHOWN]
    return [
        {"module": name, "depth": depth[name], "cumulative_ms": round(us / 1000, 1)}
        for name, us in heaviest
    ]


# --- no-op ---------------------------------------------------------------------------------------


def _counts(counts: HubCounts) -> dict[str, int]:
    challenges = sum(1 for _, _, status in counts.requests if status == 401)
    return {
        "manifest_get": counts.manifest_get,
        "manifest_head": counts.manifest_head,
        "token": counts.token,
        "challenges_401": challenges,
        "connections": counts.connections,
        "requests": len(counts.requests),
    }


def noop(hub: HubFront, mirror1: Mirror, workdir: Path, out: Path) -> dict[str, Any]:
    """The destination of ``mirror1`` (already synced) is reused: every run below is a no-op."""
    same_dest = dataclasses.replace(mirror1.setup, workdir=workdir)
    repositories = mirror1.repositories
    setup = same_dest
    per_jobs: dict[str, Any] = {}
    for jobs in (1, 4, 8, 16):
        tool = Mirror(same_dest, repositories, jobs=jobs)
        walls, counts = [], {}
        for _ in range(3):
            hub.reset_counts()
            walls.append(tool.sync().seconds)
            counts = _counts(hub.counts)
        per_jobs[str(jobs)] = {"median_s": round(statistics.median(walls), 3), **counts}
    tool = Mirror(same_dest, repositories)
    spy = pyspy(tool.argv(), setup.env, setup.workdir, out / "noop-pyspy.txt")
    main_thread = breakdown(spy, MAIN_PHASES, main=True)
    profile_path = setup.workdir / "noop.prof"
    subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(profile_path), *tool.argv()[1:]],
        env=setup.env,
        cwd=setup.workdir,
        capture_output=True,
        check=True,
        timeout=600,
    )
    with (out / "noop-cprofile.txt").open("w") as text:
        stats = pstats.Stats(str(profile_path), stream=text)
        stats.sort_stats("cumulative").print_stats(40)
    default = per_jobs["4"]
    return {
        "per_jobs": per_jobs,
        "main_thread_breakdown_s": main_thread,
        "summary": (
            f"jobs 4: {default['median_s']} s, {default['manifest_head']} HEADs, "
            f"{default['token']} token requests, {default['challenges_401']} 401s, "
            f"{default['connections']} connections; jobs 16: {per_jobs['16']['median_s']} s"
        ),
    }


def pyspy(argv: list[str], env: dict[str, str], cwd: Path, output: Path) -> Path:
    """Run ``argv`` under ``py-spy record --idle --threads`` (raw stacks, wall-clock)."""
    if shutil.which("py-spy") is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    subprocess.run(
        [
            "py-spy",
            "record",
            "--idle",
            "--threads",
            "--rate",
            str(PYSPY_RATE),
            "--format",
            "raw",
            "--output",
            str(output),
            "--",
            *argv,
        ],
        env=env,
        cwd=cwd,
        capture_output=True,
        check=True,
        timeout=1800,
    )
    return output


def breakdown(raw: Path, phases: Sequence[tuple[str, str]], *, main: bool) -> dict[str, float]:
    """Seconds per phase in the main thread (``main``) or in the pool's worker threads."""
    samples: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        is_worker = any("_worker (concurrent/futures/thread.py" in f for f in frames)
        is_main = any("_run_module_as_main" in f for f in frames[:3])
        if (main and not is_main) or (not main and not is_worker):
            continue
        label = "other"
        for name, needle in phases:
            if any(needle in frame for frame in frames):
                label = name
                break
        samples[label] += int(count)
    return {label: round(count / PYSPY_RATE, 2) for label, count in samples.most_common()}


# --- first sync ---------------------------------------------------------------------------------


def first_sync(hub: HubFront, mirror1: Mirror, loop: SkopeoLoop) -> dict[str, Any]:
    tags = sum(len(tags) for tags in mirror1.repositories.values())
    hub.reset_counts()
    spy_out = mirror1.setup.workdir / "first-pyspy.txt"
    started = time.perf_counter()
    pyspy(mirror1.argv(), mirror1.setup.env, mirror1.setup.workdir, spy_out)
    mirror_wall = time.perf_counter() - started
    mirror_counts = _counts(hub.counts)
    worker = breakdown(spy_out, WORKER_PHASES, main=False)
    hub.reset_counts()
    loop_wall = loop.sync().seconds
    loop_counts = _counts(hub.counts)
    per_tag = {label: round(value / tags * 1000, 1) for label, value in worker.items()}
    overhead = (mirror_wall - loop_wall) / tags * 1000
    return {
        "tags": tags,
        "mirror_j1_wall_s_under_pyspy": round(mirror_wall, 2),
        "skopeo_loop_wall_s": round(loop_wall, 2),
        "overhead_ms_per_tag": round(overhead, 1),
        "mirror_counts": mirror_counts,
        "loop_counts": loop_counts,
        "worker_breakdown_s": worker,
        "worker_breakdown_ms_per_tag": per_tag,
        "summary": (
            f"mirror --jobs 1 {mirror_wall:.1f} s (under py-spy) vs skopeo loop "
            f"{loop_wall:.1f} s: {overhead:.0f} ms per tag; source requests "
            f"{mirror_counts['requests']} vs {loop_counts['requests']}, tokens "
            f"{mirror_counts['token']} vs {loop_counts['token']}"
        ),
    }


def skopeo_styles(
    hub: HubFront, corpus: corpora.Corpus, setups: Sequence[Setup], sample: int = 10
) -> dict[str, Any]:
    """The same copies as plain ``skopeo copy`` and as mirror runs it (``--debug``,
    ``--retry-times 0``, ``--digestfile``, every stderr line read by Python), each into its own
    registry (so neither mounts blobs the other pushed)."""
    plain, debug = (SkopeoLoop(setup, corpus.repositories) for setup in setups)
    images = list(corpus.images)[:sample]
    walls: dict[str, list[float]] = {"plain": [], "mirror_style": []}
    lines: list[int] = []
    for image in images:
        argv = plain.copy_argv(image.repository, image.tag)
        walls["plain"].append(
            measure(argv, env=plain.setup.env, cwd=plain.setup.workdir, log=plain.log).seconds
        )
        argv = debug.copy_argv(image.repository, image.tag)
        argv[1:1] = ["--debug"]
        argv[argv.index("copy") + 1 : argv.index("copy") + 1] = [
            "--retry-times",
            "0",
            "--digestfile",
            str(debug.setup.workdir / "digest"),
        ]
        started = time.perf_counter()
        count = 0
        with subprocess.Popen(
            argv, env=debug.setup.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        ) as proc:
            assert proc.stderr is not None
            for _line in proc.stderr:
                count += 1
        walls["mirror_style"].append(time.perf_counter() - started)
        lines.append(count)
    return {
        "copies": len(images),
        "plain_median_s": round(statistics.median(walls["plain"]), 3),
        "mirror_style_median_s": round(statistics.median(walls["mirror_style"]), 3),
        "debug_lines_median": statistics.median(lines),
    }


def spawn_cost(times: int = 16) -> dict[str, float]:
    """Extra wall time over a child of 0.3 to 0.5 s (like a skopeo copy here; a seeded spread,
    since a poll loop's cost depends on where the exit falls in it) when it is started and
    waited for with subprocess, with `sh` in the background (as mirror runs skopeo), and with
    `sh` and ``_timeout`` (mirror passes one). Mean milliseconds of ``times`` runs each."""
    import sh

    sleep = sh.Command("sleep")
    durations = [0.3 + 0.2 * random.Random(i).random() for i in range(times)]  # noqa: S311

    def with_sh(seconds: float, **options: Any) -> None:
        sleep(
            f"{seconds:.3f}",
            _bg=True,
            _bg_exc=False,
            _tty_out=False,
            _out=lambda text: None,
            _err=lambda text, stdin, process: None,
            **options,
        ).wait()

    kinds: dict[str, Callable[[float], object]] = {
        "subprocess_ms": lambda seconds: subprocess.run(["sleep", f"{seconds:.3f}"], check=True),
        "sh_bg_ms": with_sh,
        "sh_bg_timeout_ms": lambda seconds: with_sh(seconds, _timeout=3600),
    }
    extra: dict[str, float] = {}
    for name, run in kinds.items():
        started = time.perf_counter()
        for seconds in durations:
            run(seconds)
        spent = time.perf_counter() - started - sum(durations)
        extra[name] = round(spent / times * 1000, 1)
    return extra


# --- output --------------------------------------------------------------------------------------


def render(findings: dict[str, Any]) -> str:
    start, first, nop = findings["startup"], findings["first_sync"], findings["noop"]
    lines = [
        f"# Where mirror's time goes ({findings['params']['tags']} tags, "
        f"{findings['params']['delay']} s per source request)",
        "",
        "## Start-up",
        "",
        start["summary"] + ".",
        "",
        "| module (`-X importtime` of `import mirror.cli`, nesting by dots) | cumulative ms |",
        "| --- | ---: |",
        *(
            f"| {'. ' * row['depth']}{row['module']} | {row['cumulative_ms']} |"
            for row in start["importtime_top"]
        ),
        "",
        "## No-op sync",
        "",
        "| --jobs | median s | manifest HEADs | tokens | 401s | connections | requests |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {jobs} | {row['median_s']} | {row['manifest_head']} | {row['token']} "
            f"| {row['challenges_401']} | {row['connections']} | {row['requests']} |"
            for jobs, row in nop["per_jobs"].items()
        ),
        "",
        "Main thread, wall clock (py-spy --idle, default --jobs):",
        "",
        *(f"- {label}: {value} s" for label, value in nop["main_thread_breakdown_s"].items()),
        "",
        "## First sync, --jobs 1",
        "",
        first["summary"] + ".",
        "",
        "Worker thread, wall clock per tag (py-spy --idle):",
        "",
        *(
            f"- {label}: {value} ms"
            for label, value in first["worker_breakdown_ms_per_tag"].items()
        ),
        "",
        f"Source requests, mirror: {first['mirror_counts']}; skopeo loop: {first['loop_counts']}.",
        "",
        f"skopeo as mirror runs it: {findings['skopeo_as_mirror_runs_it']}.",
        f"Extra wall time to start and wait for a 0.3-0.5 s child: {findings['spawn']}.",
        "",
    ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--tags", type=int, default=100)
    parser.add_argument("--delay", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--out", default="bench/results/profile")
    parser.add_argument("--work", help="scratch directory (default: OUT/../tmp/profile)")
    parser.add_argument("--mirror-ref", metavar="REV")
    return parser


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
