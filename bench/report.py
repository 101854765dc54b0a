"""Figures derived from the measurements, the targets of issue 6, and the outputs: Markdown,
JSON and a PNG plot (the plot only when matplotlib is installed)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.tools import DESCRIPTIONS, MIRROR, MIRROR_J1, SKOPEO_LOOP, SKOPEO_SYNC, TOOLS

PHASES = ("first", "noop", "changed")
BIG_SIZE = 400  # the size at which the absolute targets apply

Result = dict[str, Any]


@dataclass(frozen=True)
class Target:
    key: str
    text: str
    limit: float
    at_most: bool  # value <= limit passes (else value < limit)
    applies: Callable[[int], bool]


TARGETS = (
    Target("noop_ratio", "no-op time, mirror / skopeo sync", 0.2, True, lambda size: True),
    Target("noop_manifest_gets", "no-op source manifest GETs, mirror", 0, True, lambda size: True),
    Target("first_ratio", "first sync time, mirror / skopeo sync", 0.7, True, lambda size: True),
    Target(
        "per_image_overhead_ms",
        "per-image overhead over bare skopeo copy (ms)",
        50,
        False,
        lambda size: True,
    ),
    Target(
        "mirror_noop_seconds",
        f"no-op wall time, mirror (s), at {BIG_SIZE} tags",
        10,
        False,
        lambda size: size >= BIG_SIZE,
    ),
    Target(
        "mirror_peak_rss_mb",
        f"peak RSS of the mirror process (MB), at {BIG_SIZE} tags",
        150,
        False,
        lambda size: size >= BIG_SIZE,
    ),
)


def noop_median(tool: Result) -> float:
    return float(statistics.median(run["seconds"] for run in tool["noop"]["runs"]))


def derive(size_result: Result) -> dict[str, float]:
    """The ratios and overheads of one size, from its tools' measurements."""
    tools = size_result["tools"]
    tags = size_result["corpus"]["tags"]
    mirror_runs = [
        run
        for name in (MIRROR, MIRROR_J1)
        for run in (tools[name]["first"], *tools[name]["noop"]["runs"], tools[name]["changed"])
    ]
    loop_first = tools[SKOPEO_LOOP]["first"]["seconds"]
    return {
        "noop_ratio": noop_median(tools[MIRROR]) / noop_median(tools[SKOPEO_SYNC]),
        "noop_ratio_vs_loop": noop_median(tools[MIRROR]) / noop_median(tools[SKOPEO_LOOP]),
        "noop_manifest_gets": max(
            run["source"]["manifest_get"]
            for name in (MIRROR, MIRROR_J1)
            for run in tools[name]["noop"]["runs"]
        ),
        "first_ratio": tools[MIRROR]["first"]["seconds"] / tools[SKOPEO_SYNC]["first"]["seconds"],
        "first_ratio_vs_loop": tools[MIRROR]["first"]["seconds"] / loop_first,
        "per_image_overhead_ms": (tools[MIRROR_J1]["first"]["seconds"] - loop_first) / tags * 1000,
        "mirror_noop_seconds": noop_median(tools[MIRROR]),
        "mirror_peak_rss_mb": max(run["peak_rss_mb"] for run in mirror_runs),
    }


def judge(size: int, derived: dict[str, float]) -> list[Result]:
    rows = []
    for target in TARGETS:
        if not target.applies(size):
            continue
        value = derived[target.key]
        ok = value <= target.limit if target.at_most else value < target.limit
        rows.append(
            {
                "target": target.key,
                "text": target.text,
                "value": round(value, 4),
                "limit": ("<= " if target.at_most else "< ") + f"{target.limit:g}",
                "pass": ok,
            }
        )
    return rows


# --- Markdown ----------------------------------------------------------------------------------


def markdown(results: Result) -> str:
    machine = results["machine"]
    params = results["params"]
    lines = [
        "# mirror benchmark (issue 6)",
        "",
        f"Machine: {machine['cpu_model']}, {machine['nproc']} cores, "
        f"{machine['memory_gb']} GB, {machine['os']}, kernel {machine['kernel']}.  ",
        "Versions: "
        + ", ".join(f"{name}: {version}" for name, version in machine["versions"].items())
        + ".  ",
        f"Parameters: delay {params['delay']} s per source request, no-op median of "
        f"{params['repeats']} runs (tools alternated), seed {params['seed']}, layer scale "
        f"{params['scale']}, started {results['started']}"
        + (
            f", mirror at commit {params['mirror_commit'][:12]}"
            if "mirror_commit" in params
            else ""
        )
        + ".",
        "",
        "Tools: "
        + "; ".join(f"`{name}` = {DESCRIPTIONS[name]}" for name in TOOLS)
        + ". Each tool has its own destination registry; source counters are reset per run.",
        "",
    ]
    for size, size_result in results["sizes"].items():
        lines += size_table(int(size), size_result)
    lines += targets_table(results)
    return "\n".join(lines) + "\n"


_STAMPS = (("Measured", "measured_at", 20), ("mirror", "mirror_commit", 12))


def size_table(size: int, result: Result) -> list[str]:
    corpus = result["corpus"]
    lines = [
        f"## {size} tags",
        "",
        f"Corpus: {corpus['tags']} tags in {corpus['repositories']} repositories, "
        f"{corpus['distinct_images']} distinct images ({corpus['multi_platform_images']} "
        f"multi-platform, {corpus['platform_manifests']} platform manifests), "
        f"{corpus['approx_blob_bytes'] / 1e6:.0f} MB of blobs; built in "
        f"{corpus['build_seconds']:.0f} s. Changed tag: `{result['changed_tag']}`."
        + "".join(
            f" {label} {result[key][:width]}." for label, key, width in _STAMPS if result.get(key)
        ),
        "",
        "| tool | first s | no-op s (median) | 1 changed s | manifest GET first/no-op/chg "
        "| manifest HEAD first/no-op/chg | MB read first/no-op/chg | tokens no-op "
        "| conns no-op | peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in TOOLS:
        tool = result["tools"][name]
        first, changed = tool["first"], tool["changed"]
        noop = tool["noop"]["runs"]

        def trio(
            key: str, first: Result = first, noop: list[Result] = noop, changed: Result = changed
        ) -> str:
            worst = max(run["source"][key] for run in noop)
            return f"{first['source'][key]}/{worst}/{changed['source'][key]}"

        def mb(run: Result) -> str:
            return f"{run['source']['blob_bytes'] / 1e6:.1f}"

        worst_bytes = max(noop, key=lambda run: run["source"]["blob_bytes"])
        peak = max(run["peak_rss_mb"] for run in (first, *noop, changed))
        lines.append(
            f"| {name} | {_seconds(first)} | {noop_median(tool):.2f}{_flag(*noop)} "
            f"| {_seconds(changed)} | {trio('manifest_get')} | {trio('manifest_head')} "
            f"| {mb(first)}/{mb(worst_bytes)}/{mb(changed)} "
            f"| {max(run['source']['token'] for run in noop)} "
            f"| {max(run['source']['connections'] for run in noop)} | {peak:.0f} |"
        )
    derived = result["derived"]
    lines += [
        "",
        f"Derived: no-op mirror/skopeo-sync {derived['noop_ratio']:.3f}, "
        f"mirror/skopeo-loop {derived['noop_ratio_vs_loop']:.3f}; first sync "
        f"mirror/skopeo-sync {derived['first_ratio']:.3f}, mirror/skopeo-loop "
        f"{derived['first_ratio_vs_loop']:.3f}; per-image overhead of mirror --jobs 1 over the "
        f"bare skopeo copy loop {derived['per_image_overhead_ms']:.1f} ms "
        "(first sync, (mirror-j1 - skopeo-loop) / tags).",
        "",
        "`*`: a run exited non-zero (see below). "
        "GETs and HEADs count the no-op column as the worst of its runs; peak RSS is the top "
        "process's own VmHWM (for mirror: the Python process, not its skopeo children).",
        "",
    ]
    if result.get("notes"):
        lines += [
            "Failed runs (measured as they were, then repaired by an unmeasured re-run):",
            "",
            *(f"- {note}" for note in result["notes"]),
            "",
        ]
    return lines


def _seconds(run: Result) -> str:
    return f"{run['seconds']:.2f}{_flag(run)}"


def _flag(*runs: Result) -> str:
    return "*" if any(run["exit_code"] for run in runs) else ""


def targets_table(results: Result) -> list[str]:
    lines = [
        "## Targets",
        "",
        "| tags | target | value | limit | result |",
        "| ---: | --- | ---: | --- | --- |",
    ]
    big_measured = False
    for size, size_result in results["sizes"].items():
        big_measured = big_measured or int(size) >= BIG_SIZE
        for row in size_result["targets"]:
            verdict = "PASS" if row["pass"] else "FAIL"
            lines.append(
                f"| {size} | {row['text']} | {row['value']:g} | {row['limit']} | {verdict} |"
            )
    if not big_measured:
        lines.append(f"| {BIG_SIZE} | no-op < 10 s, RSS < 150 MB | not measured | | n/a |")
    return [*lines, ""]


# --- files -------------------------------------------------------------------------------------


def write(results: Result, out: Path) -> tuple[Path, Path]:
    """results.json and results.md in ``out`` (written whole, then renamed into place)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = (out / "results.json", out / "results.md")
    texts = (json.dumps(results, indent=2) + "\n", markdown(results))
    for path, text in zip(paths, texts, strict=True):
        temporary = path.with_suffix(path.suffix + ".new")
        temporary.write_text(text)
        temporary.replace(path)
    return paths


def plot(results: Result, path: Path) -> str:
    """Time against tags, one line per tool, first sync and no-op; a message either way."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install matplotlib)"
    sizes = sorted(int(size) for size in results["sizes"])
    if not sizes:
        return "plot skipped: nothing measured"
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    panels = (
        ("first", "first sync (empty destination)"),
        ("noop", "no-op sync (median)"),
        ("changed", "one changed tag"),
    )
    for axis, (phase, title) in zip(axes, panels, strict=True):
        for name in TOOLS:
            values = []
            for size in sizes:
                tool = results["sizes"][str(size)]["tools"][name]
                values.append(noop_median(tool) if phase == "noop" else tool[phase]["seconds"])
            axis.plot(sizes, values, marker="o", label=name)
        axis.set_title(title)
        axis.set_xlabel("tags")
        axis.set_ylabel("wall time (s)")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xticks(sizes, [str(size) for size in sizes])
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.yaxis.set_major_formatter(ScalarFormatter())
        axis.yaxis.set_minor_formatter(NullFormatter())
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    delay = results["params"]["delay"]
    figure.suptitle(f"mirror vs skopeo sync vs skopeo copy loop ({delay} s per source request)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return f"plot written to {path}"
