"""The benchmark (bench/run.py, issue 6) runs end to end at a smoke size.

Only that it completes and what it records: no timing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.tools import TOOLS

REPO = Path(__file__).resolve().parent.parent
PHASES = ("first", "noop", "changed")
RUN_KEYS = {"seconds", "peak_rss_mb", "processes", "exit_code", "source"}
SOURCE_KEYS = {"manifest_get", "manifest_head", "blob_get", "blob_bytes", "token", "connections"}


@pytest.mark.e2e
def test_benchmark_runs_at_a_smoke_size_and_mirror_no_op_spends_no_pull(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--sizes",
            "4",
            "--repeats",
            "1",
            "--delay",
            "0",
            "--scale",
            "0.01",
            "--no-plot",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| mirror |" in done.stdout
    assert (out / "results.md").read_text().startswith("# mirror benchmark")
    assert not (out / "tmp").exists()  # scratch registries removed

    results = json.loads((out / "results.json").read_text())
    assert {"machine", "params", "sizes", "tools"} <= results.keys()
    assert {"nproc", "memory_gb", "cpu_model", "kernel", "versions"} <= results["machine"].keys()
    size = results["sizes"]["4"]
    assert size["corpus"]["tags"] == 4
    assert set(size["tools"]) == set(TOOLS)
    for name in TOOLS:
        tool = size["tools"][name]
        assert set(PHASES) <= tool.keys()
        runs = [tool["first"], *tool["noop"]["runs"], tool["changed"]]
        assert len(tool["noop"]["runs"]) == 1
        for run in runs:
            assert run.keys() >= RUN_KEYS
            assert run["source"].keys() >= SOURCE_KEYS
            assert run["exit_code"] == 0
        assert tool["first"]["source"]["manifest_get"] > 0  # it did copy from the source
    for name in ("mirror", "mirror-j1"):
        noop = size["tools"][name]["noop"]["runs"][0]
        assert noop["source"]["manifest_get"] == 0
        assert noop["source"]["blob_get"] == 0
        assert noop["peak_rss_mb"] > 0
    assert {
        "noop_ratio",
        "first_ratio",
        "per_image_overhead_ms",
        "mirror_peak_rss_mb",
    } <= size["derived"].keys()
    assert {row["target"] for row in size["targets"]} >= {"noop_ratio", "first_ratio"}


@pytest.mark.e2e
def test_the_ensure_benchmark_runs_and_never_reaches_the_source(tmp_path: Path) -> None:
    out = tmp_path / "ensure.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench.ensure", "--runs", "1", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# bench.ensure")
    for case in ("healthy source", "source down", "source hanging", "--refresh never"):
        assert f"| {case}" in text
    assert "reached the source during the `--refresh never` runs: 0" in text


@pytest.mark.e2e
def test_the_hostile_benchmark_runs_its_cases_and_records_them(tmp_path: Path) -> None:
    cases = "403-1mb,link-60kb,dockerfile-quote-runs-1mb"
    done = subprocess.run(
        [sys.executable, "-m", "bench.hostile", "--cases", cases, "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "hostile-worktree.json").read_text())["results"]
    assert [result["case"] for result in results] == cases.split(",")
    assert [result["exit_code"] for result in results] == [1, 1, 2]  # each refused, none killed
    assert all(result["peak_rss_mb"] > 0 for result in results)


def _bench(module: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.e2e
def test_the_distinct_benchmark_compares_mirror_with_skopeo_sync(tmp_path: Path) -> None:
    _bench("bench.distinct", "--images", "2", "--repositories", "1", "--alias-tags", "2",
           "--repeats", "1", "--scale", "0.01", "--delay", "0", "--out", str(tmp_path))  # fmt: skip
    results = json.loads((tmp_path / "distinct.json").read_text())
    assert set(results["corpora"]) == {"distinct", "alias"}
    distinct = results["corpora"]["distinct"]
    assert distinct["corpus"]["tags"] == distinct["corpus"]["distinct_images"] == 2
    assert set(distinct["tools"]) == {"worktree", "skopeo-sync"}
    mirror, skopeo = distinct["tools"]["worktree"], distinct["tools"]["skopeo-sync"]
    assert mirror["first"]["exit_code"] == skopeo["first"]["exit_code"] == 0
    assert mirror["noop"][0]["source"]["manifest_get"] == 0
    assert skopeo["noop"][0]["source"]["manifest_get"] > 0  # skopeo sync reads to skip
    assert {row["phase"] for row in distinct["verdicts"]} == {"first", "noop"}
    assert "| skopeo-sync |" in (tmp_path / "distinct.md").read_text()


@pytest.mark.e2e
def test_the_regression_benchmark_records_timelines_of_both_ends(tmp_path: Path) -> None:
    _bench("bench.regression", "--images", "4", "--repositories", "2", "--repeats", "1",
           "--scale", "0.01", "--delay", "0", "--out", str(tmp_path))  # fmt: skip
    results = json.loads((tmp_path / "regression.json").read_text())
    run = results["runs"]["worktree"]["median_run"]
    assert run["exit_code"] == 0
    assert run["source"]["manifest_head"] == 4  # past auth: one per tag
    for side in ("source", "destination"):  # and a 401 challenge or so
        assert run["timeline"][f"{side}/manifest_head"]["count"] >= 4
    events = json.loads((tmp_path / "timeline-worktree.json").read_text())
    assert {event["side"] for event in events} == {"source", "destination"}
    assert all(event["arrived"] <= event["answered"] for event in events)
    assert "HEAD /v2/" in (tmp_path / "timeline-worktree.txt").read_text()


@pytest.mark.e2e
def test_the_many_tags_benchmark_builds_a_no_op_without_a_first_sync(tmp_path: Path) -> None:
    _bench("bench.many_tags", "--tags", "30", "--repositories", "3", "--repeats", "1",
           "--delay", "0", "--out", str(tmp_path))  # fmt: skip
    runs = json.loads((tmp_path / "many-tags.json").read_text())["runs"]["worktree"]
    assert runs[0]["exit_code"] == 0
    assert (runs[0]["source"]["manifest_head"], runs[0]["source"]["manifest_get"]) == (30, 0)
    assert runs[0]["tree_peak_rss_mb"] >= runs[0]["peak_rss_mb"] > 0


@pytest.mark.e2e
def test_the_shared_base_benchmark_counts_bytes_uploaded(tmp_path: Path) -> None:
    _bench("bench.shared_base", "--images", "2", "--base-mb", "0.2", "--own-kb", "10",
           "--delay", "0", "--out", str(tmp_path))  # fmt: skip
    results = json.loads((tmp_path / "shared-base.json").read_text())
    least, unmounted = results["minimum_bytes"], results["bytes_without_mounts"]
    assert least < unmounted
    by_case = {(run["tool"], run["blob_mounting"]): run for run in results["runs"]}
    assert all(run["exit_code"] == 0 for run in by_case.values())
    for tool in ("worktree", "worktree --jobs 1", "skopeo-sync"):
        assert by_case[(tool, False)]["upload_bytes"] == unmounted  # nothing mounted
        assert by_case[(tool, False)]["mounts"] == 0
    # one image after another: the second mounts the base the first uploaded
    assert by_case[("worktree --jobs 1", True)]["upload_bytes"] == least
    assert by_case[("skopeo-sync", True)]["upload_bytes"] == least


@pytest.mark.e2e
def test_the_first_sync_benchmark_puts_mirror_beside_the_bare_copy_loop(tmp_path: Path) -> None:
    _bench("bench.first_sync", "--images", "2", "--repositories", "1", "--scale", "0.01",
           "--delay", "0", "--out", str(tmp_path))  # fmt: skip
    results = json.loads((tmp_path / "first-sync.json").read_text())
    loop, mirror = results["loop"], results["mirror"]["worktree"]
    assert loop["requests_per_copy"]["destination/manifest_put"] >= 1  # each copy was made
    assert mirror["requests_per_copy"]["destination/manifest_put"] >= 1
    # skopeo reads the relay: the source's one `GET /v2/` is mirror's own, for the run (2 copies)
    assert mirror["requests_per_copy"].get("source/ping", 0) <= 0.5
    assert sum(mirror["phases_s_under_pyspy"].values()) > 0
    assert "skopeo copy (start, run, wait)" in mirror["phases_s_under_pyspy"]
