"""Issue 9's figures: how soon a run shows its work, and how fast it ends when told to or when
a registry stops answering. `python -m bench.watch` (about a minute and a half).

- lead: in a run where one image copies slowly (its source front answers every request after
  0.6 s) and eight others quickly, the seconds between the first image line on stdout and the
  process's exit (before issue 9, every line came at the end: a lead of 0);
- SIGTERM to exit: a `sync` whose destination accepts connections and never answers (the
  default 30 s time-out), signalled once the destination has a connection;
- 16 tags against a destination that never answers, `--timeout 5`: the whole run;
- a tags list whose `Link: rel="next"` points back at a page already read: the whole run.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.tools import mirror_config
from tests.standins.aws import ECR_PASSWORD, ECR_USER, Moto
from tests.standins.demo import environment
from tests.standins.hub import HubFront
from tests.standins.images import make_image
from tests.standins.misbehaving import Answer, Raw, Scripted, never_answers
from tests.standins.registry import Registry

RESULTS = Path(__file__).parent / "results" / "watch.md"


def main() -> int:
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="mirror-bench-") as directory:
        work = Path(directory)
        with (
            Registry(work / "source") as backend,
            HubFront(backend.url) as hub,
            HubFront(backend.url, delay=0.6) as slow,
            Registry(work / "ecr", htpasswd=(ECR_USER, ECR_PASSWORD)) as ecr,
            Moto() as moto,
        ):
            for number in range(9):
                layers = (200_000,) * (6 if number == 0 else 1)  # app0 is the slow one
                make_image(backend.host, f"library/app{number}", "1", seed=number,
                           layer_sizes=layers, workdir=work)  # fmt: skip
            env = environment(moto.url, work)
            rows.append(lead(work, hub, slow, ecr, env))
            rows.append(sigterm_to_exit(work, hub, env))
            rows.append(dead_destination(work, hub, env))
            rows.append(looping_tags(work, env))
    table = "| measure | result |\n| --- | --- |\n" + "".join(f"| {a} | {b} |\n" for a, b in rows)
    RESULTS.write_text(f"# bench.watch\n\n{table}")
    print(table)
    return 0


def config(
    work: Path, name: str, source: str, endpoint: str, images: list[dict[str, object]]
) -> Path:
    return mirror_config(
        work / f"{name}.yaml", source=source, endpoint=endpoint, prefix=name, images=images
    )


def command(path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "mirror", "sync", "-c", str(path), *args]


def lead(
    work: Path, hub: HubFront, slow: HubFront, ecr: Registry, env: dict[str, str]
) -> tuple[str, str]:
    images: list[dict[str, object]] = [
        {"source": f"{slow.host}/library/app0", "tags": ["1"], "repository": "lead/slow"}
    ]
    images += [{"source": f"app{number}", "tags": ["1"]} for number in range(1, 9)]
    path = config(work, "lead", hub.host, ecr.host, images)
    started = time.monotonic()
    process = subprocess.Popen(command(path), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, env=env)  # fmt: skip
    assert process.stdout is not None
    first = None
    for _line in process.stdout:
        first = first or time.monotonic()
    process.wait()
    ended = time.monotonic()
    assert first is not None and process.returncode == 0
    return (
        "first image line before exit (1 slow image, 8 fast)",
        f"{ended - first:.1f} s before exit (first line {first - started:.1f} s after start, "
        f"run {ended - started:.1f} s)",
    )


def sigterm_to_exit(work: Path, hub: HubFront, env: dict[str, str]) -> tuple[str, str]:
    took = []
    with Raw(never_answers) as dead:
        path = config(work, "term", hub.host, dead.host,
                      [{"source": f"app{n}", "tags": ["1"]} for n in range(1, 9)])  # fmt: skip
        for _ in range(5):
            before = dead.connections
            process = subprocess.Popen(command(path), stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, env=env)  # fmt: skip
            while dead.connections == before:
                time.sleep(0.02)
            time.sleep(0.5)
            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            process.wait()
            took.append(time.monotonic() - sent)
            assert process.returncode == 143
    return (
        "SIGTERM to exit, destination never answers (5 runs)",
        f"median {statistics.median(took):.2f} s, max {max(took):.2f} s",
    )


def dead_destination(work: Path, hub: HubFront, env: dict[str, str]) -> tuple[str, str]:
    with Raw(never_answers) as dead:
        path = config(work, "dead", hub.host, dead.host,
                      [{"source": "app1", "tags": [f"t{n}" for n in range(16)]}])  # fmt: skip
        started = time.monotonic()
        done = subprocess.run(command(path, "--timeout", "5"), capture_output=True, env=env,
                              check=False)  # fmt: skip
        took = time.monotonic() - started
    assert done.returncode == 1
    return ("16 tags, destination never answers, --timeout 5", f"{took:.1f} s, exit 1")


def looping_tags(work: Path, env: dict[str, str]) -> tuple[str, str]:
    def script(method: str, path: str) -> Answer:
        if "/tags/list" in path:
            link = '</v2/x/y/tags/list?n=1000&last=b>; rel="next"'
            return Answer.json(200, {"tags": ["a", "b"]}, Link=link)
        return Answer.json(404 if path != "/v2/" else 200, {})

    with Scripted(script) as looping:
        path = config(work, "loop", looping.host, "127.0.0.1:9",
                      [{"source": "x/y", "tags": {"newest": 1}}])  # fmt: skip
        started = time.monotonic()
        subprocess.run(command(path, "--dry-run"), capture_output=True, env=env, check=False)
        took = time.monotonic() - started
    return ("a tags list that links back to itself", f"{took:.1f} s, stopped after 2 pages")


if __name__ == "__main__":
    raise SystemExit(main())
