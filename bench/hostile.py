"""Issue 15: what a hostile registry or Dockerfile costs mirror, worst cases, end to end.

Each case runs the real `mirror` command (`sync` against a hostile registry on 127.0.0.1, or
`ensure --dockerfile` on a hostile file) with moto and an ECR-like front as the destination,
and measures the wall time to its exit and the peak RSS of the mirror process (VmHWM). A run
still going after `--timeout` seconds is killed and shown as `>N s`: the cases that took hours
before issue 15 would otherwise never end.

    python -m bench.hostile                       # the working tree's mirror
    python -m bench.hostile --mirror-ref main     # mirror/ as committed at main (before/after)
    python -m bench.hostile --cases 403-4mb,tag-pages-30mb --timeout 60

Writes a table on stdout and `--out`/hostile-<ref>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from bench.run import snapshot
from bench.tools import environment, peak_rss_kb
from tests.standins.aws import ECR_PASSWORD, ECR_USER, Moto
from tests.standins.ecr import EcrFront
from tests.standins.misbehaving import Answer, Scripted
from tests.standins.registry import Registry

MB = 1 << 20


@dataclass
class Result:
    case: str
    seconds: float
    peak_rss_mb: float
    exit_code: int | None  # None: killed at the time-out
    timed_out: bool


def _denied(size: int) -> Callable[[str, str], Answer]:
    message = "a" * size  # a run of letters: the old password-hiding pattern's worst case

    def script(method: str, path: str) -> Answer:
        if path == "/v2/":
            return Answer.json(200, {})
        return Answer.json(403, {"errors": [{"code": "DENIED", "message": message}]})

    return script


def _header(name: str, value: str) -> Callable[[str, str], Answer]:
    def script(method: str, path: str) -> Answer:
        if path == "/v2/":
            return Answer.json(200, {})
        if name == "Link":
            return Answer.json(200, {"tags": ["1"]}, Link=value)
        return Answer.json(401, {"errors": []}, **{name: value})

    return script


def _tag_pages(page_bytes: int) -> Callable[[str, str], Answer]:
    """Pages of distinct tags, `page_bytes` each, 1,000 pages linked by rel=next."""

    def script(method: str, path: str) -> Answer:
        if path == "/v2/":
            return Answer.json(200, {})
        page = int(path.rpartition("page=")[2]) if "page=" in path else 0
        count = page_bytes // 24  # "0-0000000000000000", is 22 to 24 bytes
        tags = [f"{page}-{n:016d}" for n in range(count)]
        link = f'</v2/x/y/tags/list?page={page + 1}>; rel="next"' if page < 999 else ""
        return Answer(
            200,
            {"Content-Type": "application/json", "Link": link},
            json.dumps({"tags": tags}).encode(),
        )

    return script


def _nested_tags(method: str, path: str) -> Answer:
    if path == "/v2/":
        return Answer.json(200, {})
    if "/tags/list" in path:
        return Answer.json(200, {"tags": ["1" * 40 + "x"]})
    return Answer.json(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "no"}]})


REGISTRY_CASES: dict[str, tuple[Callable[[str, str], Answer], dict[str, object]]] = {
    "403-100kb": (_denied(100_000), {"match": ".*"}),
    "403-1mb": (_denied(MB), {"match": ".*"}),
    "403-4mb": (_denied(4 * MB), {"match": ".*"}),
    "www-authenticate-60kb": (_header("WWW-Authenticate", "Bearer " + "a" * 60_000), {}),
    "link-60kb": (_header("Link", "<" * 60_000), {"match": ".*"}),
    "tag-pages-30mb": (_tag_pages(30 * MB), {"match": "no"}),
    "tag-rule-(\\d+\\.?)+": (_nested_tags, {"match": r"(\d+\.?)+"}),
}

DOCKERFILE_CASES: dict[str, str] = {
    "dockerfile-50mb-line": "FROM a\nRUN " + "x" * 50 * MB + "\n",
    "dockerfile-arg-doubling-30": "ARG A0=xx\n"
    + "".join(f"ARG A{n + 1}=${{A{n}}}${{A{n}}}\n" for n in range(30))
    + "FROM a\n",
    "dockerfile-quote-runs-1mb": "FROM a AS b\nCOPY --from="
    + '"' * (MB // 2)
    + "img"
    + '"' * (MB // 2)
    + " / /\n",
    "dockerfile-padded-syntax-1mb": "# syntax=x" + " " * MB + "y\nFROM a\n",
}
CASES = (*REGISTRY_CASES, *DOCKERFILE_CASES)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cases = args.cases.split(",") if args.cases else list(CASES)
    unknown = [case for case in cases if case not in CASES]
    if unknown:
        raise SystemExit(f"unknown cases: {', '.join(unknown)} (known: {', '.join(CASES)})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as scratch, ExitStack() as stack:
        work = Path(scratch)
        extra: dict[str, str] = {}
        label = "working tree"
        if args.mirror_ref:
            commit, source = snapshot(args.mirror_ref, work / "mirror-src")
            extra["PYTHONPATH"] = str(source)
            label = f"{args.mirror_ref} ({commit[:10]})"
        moto = stack.enter_context(Moto())
        registry = stack.enter_context(Registry(work / "dest", htpasswd=(ECR_USER, ECR_PASSWORD)))
        front = stack.enter_context(EcrFront(registry.url, moto.url))
        env = {**environment(moto.url, work), **extra}
        results = []
        for case in cases:
            with _target(case, work, front.host) as command:
                result = _measure(case, command, env, work, args.timeout)
            results.append(result)
            shown = f">{args.timeout:g}" if result.timed_out else f"{result.seconds:.2f}"
            print(
                f"{case:32} {shown:>8} s  {result.peak_rss_mb:8.1f} MB  exit {result.exit_code}",
                flush=True,
            )
    name = (args.mirror_ref or "worktree").replace("/", "-")
    document = {"mirror": label, "timeout": args.timeout, "results": [asdict(r) for r in results]}
    (out / f"hostile-{name}.json").write_text(json.dumps(document, indent=2) + "\n")
    return 0


@contextmanager
def _target(case: str, work: Path, dest: str) -> Iterator[list[str]]:
    """The config (and Dockerfile) for `case`, and the mirror command line to run."""
    config = work / f"{case}.yaml"
    document: dict[str, object] = {
        "source": {"tls_verify": False},
        "ecr": {"region": "us-east-1", "endpoint": dest, "tls_verify": False},
        "images": [],
    }
    command = [sys.executable, "-m", "mirror"]
    if case in DOCKERFILE_CASES:
        dockerfile = work / f"{case}.Dockerfile"
        dockerfile.write_text(DOCKERFILE_CASES[case])
        config.write_text(yaml.safe_dump(document))
        yield [*command, "ensure", "-c", str(config), "--dockerfile", str(dockerfile)]
        return
    script, rule = REGISTRY_CASES[case]
    with Scripted(script) as odd:
        tags: object = rule or ["1"]
        document["images"] = [{"source": f"{odd.host}/x/y", "tags": tags, "repository": "m/x"}]
        config.write_text(yaml.safe_dump(document))
        yield [*command, "sync", "-c", str(config), "--lock-file", str(work / "sync.lock")]


def _measure(case: str, argv: list[str], env: dict[str, str], cwd: Path, limit: float) -> Result:
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    peak = 0
    while True:
        peak = max(peak, peak_rss_kb(process.pid))
        try:
            code: int | None = process.wait(timeout=0.01)
            break
        except subprocess.TimeoutExpired:
            if time.perf_counter() - started > limit:
                process.kill()
                process.wait()
                code = None
                break
    seconds = time.perf_counter() - started
    return Result(case, round(seconds, 2), round(peak / 1024, 1), code, code is None)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__)
    parser.add_argument("--cases", help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a case may run")
    parser.add_argument("--mirror-ref", help="measure mirror/ as committed at this git ref")
    parser.add_argument("--out", default="bench/results", help="where the JSON goes")
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
