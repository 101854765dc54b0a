"""py-spy around a command, and its raw stacks read back: where each thread's wall time went.

``record`` runs a command under ``py-spy record --idle --threads --format raw`` (wall clock:
waiting counts, which is what a run that waits on the network spends; with ``gil``, Python's
CPU time only). ``read`` groups the
samples by thread name (``check-3`` and ``check-7`` are ``check``) and, per group, by the
innermost frame of the code asked about (``focus``, e.g. ``mirror/``) and by the innermost
frame of all (where it waited: a lock, a socket, a sleep).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

RATE = 100  # samples per second and thread
_THREAD = re.compile(r"^thread \((?P<tid>\w+)\)(?:: (?P<name>[^;]*))?$")


def record(
    argv: list[str], *, env: dict[str, str], cwd: Path, output: Path, gil: bool = False
) -> int:
    """Run ``argv`` under py-spy, raw stacks to ``output``; the command's exit code. With
    ``gil``, only the samples of the thread holding the GIL: where Python's CPU time goes
    (py-spy's own idle detection misses threads waiting on sockets here)."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    flags = ["--gil" if gil else "--idle", "--threads", "--rate", str(RATE), "--format", "raw"]
    done = subprocess.run(
        [spy, "record", *flags, "--output", str(output), "--", *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        timeout=1800,
        check=False,
    )
    return done.returncode


@dataclass
class Profile:
    """Samples (``RATE`` a second) per thread group: in all, by innermost ``focus`` frame, by
    innermost frame."""

    samples: Counter[str] = field(default_factory=Counter)
    focus: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    leaves: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def as_dict(self, top: int = 15) -> dict[str, object]:
        """Seconds per thread group, innermost focus frame and innermost frame."""
        return {
            group: {
                "seconds": round(count / RATE, 2),
                "innermost_focus": _top(self.focus[group], top),
                "leaves": _top(self.leaves[group], top),
            }
            for group, count in self.samples.most_common()
        }


def read(raw: Path, *, focus: str = "mirror/") -> Profile:
    profile = Profile()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        head, *frames = stack.split(";")
        match = _THREAD.match(head)
        name = (match["name"] if match else None) or "unnamed"
        group = re.sub(r"[-_]\d+(_\d+)?$", "", name)
        samples = int(count)
        profile.samples[group] += samples
        mine = [frame for frame in frames if focus in frame]
        profile.focus[group][mine[-1] if mine else "(outside " + focus + ")"] += samples
        profile.leaves[group][frames[-1] if frames else "(idle)"] += samples
    return profile


def render(label: str, profile: Profile, top: int = 12) -> list[str]:
    lines = [f"### {label}", ""]
    for group, count in profile.samples.most_common():
        lines += [f"Thread group `{group}`: {count / RATE:.2f} s of samples.", ""]
        lines += ["| innermost mirror frame | s |", "| --- | ---: |"]
        lines += [f"| `{frame}` | {s} |" for frame, s in _top(profile.focus[group], top)]
        lines += ["", "| innermost frame (where it waits) | s |", "| --- | ---: |"]
        lines += [f"| `{frame}` | {s} |" for frame, s in _top(profile.leaves[group], 6)]
        lines.append("")
    return lines


def _top(counter: Counter[str], top: int) -> list[tuple[str, float]]:
    return [(frame, round(count / RATE, 2)) for frame, count in counter.most_common(top)]
