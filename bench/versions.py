"""Versions of mirror to measure side by side: ``--mirror LABEL=WHERE``, repeatable.

``WHERE`` is one of:

- ``worktree``: the tree the benchmark runs from (mirror/ as it is on disk here);
- a directory holding ``mirror/`` (another worktree, a patched checkout): its files as they are;
- a git revision (``main``, ``8ad5280``): ``mirror/`` as committed there, extracted with git
  archive (bench.run's ``--mirror-ref``), so the tree may change while it is measured.

``LABEL=`` may be left out: the label is then ``WHERE`` itself. Each version runs as
``python -m mirror`` with its directory first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

WORKTREE = "worktree"
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Version:
    """One mirror to run: its label in tables, what was asked for, the commit it is (with
    ``+changes`` when its files differ from it) and the environment that selects it."""

    label: str
    where: str
    commit: str
    env: dict[str, str] = field(default_factory=dict)


def spec(text: str) -> tuple[str, str]:
    """``LABEL=WHERE`` or ``WHERE`` -> (label, where); argparse type of ``--mirror``."""
    label, equals, where = text.partition("=")
    if not equals:
        label, where = text, text
    if not label or not where:
        raise argparse.ArgumentTypeError(f"expected LABEL=WHERE or WHERE, not {text!r}")
    return label, where


def resolve(specs: Sequence[tuple[str, str]], work: Path) -> list[Version]:
    """The versions asked for (default: the worktree), each made ready to run."""
    labels = [label for label, _ in specs]
    if len(set(labels)) != len(labels):
        raise SystemExit(f"--mirror: labels must differ: {', '.join(labels)}")
    return [_version(label, where, work) for label, where in specs or [(WORKTREE, WORKTREE)]]


def snapshot(ref: str, into: Path) -> tuple[str, Path]:
    """Extract ``mirror/`` as committed at ``ref`` into ``into``: a stable mirror to measure
    while the working tree changes. Returns the commit and the directory for PYTHONPATH."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "mirror"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return commit, into


def _version(label: str, where: str, work: Path) -> Version:
    if where == WORKTREE:
        return Version(label, where, _described(REPO))
    directory = Path(where)
    if (directory / "mirror" / "__init__.py").is_file():
        directory = directory.resolve()
        return Version(label, where, _described(directory), {"PYTHONPATH": str(directory)})
    commit, source = snapshot(where, work / "versions" / _safe(label))
    return Version(label, where, commit[:12], {"PYTHONPATH": str(source)})


def _described(directory: Path) -> str:
    """The commit checked out in ``directory`` (``+changes`` if mirror/ differs from it)."""
    git = ["git", "-C", str(directory)]
    done = subprocess.run(
        [*git, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return "unknown"
    changed = subprocess.run(
        [*git, "status", "--porcelain", "--", "mirror"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return done.stdout.strip() + ("+changes" if changed else "")


def _safe(label: str) -> str:
    return "".join(char if char.isalnum() or char in "-_." else "_" for char in label)
