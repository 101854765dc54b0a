"""What mirror remembers between runs (mirror.state): refused images, and when each image's
referrers were looked for; no I/O but a temporary directory."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mirror import state
from mirror.state import Looks, Refusals

IMAGE = "docker.io/library/x"
DIGEST = "sha256:" + "a" * 64


def test_where_the_memory_lives() -> None:
    assert state.refusals_path({"XDG_STATE_HOME": "/s", "HOME": "/h"}) == Path(
        "/s/mirror/refused.json"
    )
    assert state.refusals_path({"HOME": "/var/lib/mirror"}) == Path(
        "/var/lib/mirror/.local/state/mirror/refused.json"
    )
    assert state.refusals_path({"XDG_STATE_HOME": "relative", "HOME": "/h"}) == Path(
        "/h/.local/state/mirror/refused.json"
    )  # the XDG spec: a relative path is ignored
    assert state.refusals_path({}) is None  # cron without HOME: nothing remembered


def test_a_refusal_is_kept_for_the_skopeo_that_made_it(tmp_path: Path) -> None:
    path = tmp_path / "state" / "refused.json"
    first, warning = Refusals.load(path, tool="skopeo 1.9.3")
    assert warning is None and first.why(IMAGE, DIGEST) is None
    first.add(IMAGE, DIGEST, "zstd")
    assert first.save() is None
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"

    same, _ = Refusals.load(path, tool="skopeo 1.9.3")
    refusal = same.why(IMAGE, DIGEST)
    assert refusal is not None and refusal.reason == "zstd"
    assert same.why(IMAGE, "sha256:" + "b" * 64) is None  # the source changed: tried again
    newer, _ = Refusals.load(path, tool="skopeo 1.18.0")
    assert newer.why(IMAGE, DIGEST) is None  # another skopeo may copy it: tried again
    dry, _ = Refusals.load(path)  # a dry run runs no skopeo: what was refused is shown
    assert dry.why(IMAGE, DIGEST) is not None


def test_two_runs_saving_at_once_keep_both(tmp_path: Path) -> None:
    path = tmp_path / "refused.json"
    one, _ = Refusals.load(path)
    other, _ = Refusals.load(path)
    one.add(IMAGE, DIGEST, "one")
    other.add("quay.io/y/z", DIGEST, "other")
    assert one.save() is None and other.save() is None
    assert sorted(json.loads(path.read_text())["refused"]) == [
        f"{IMAGE}@{DIGEST}",
        f"quay.io/y/z@{DIGEST}",
    ]


def test_a_broken_file_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    path = tmp_path / "refused.json"
    path.write_text("{not json")
    refusals, warning = Refusals.load(path)
    assert (
        warning == f"cannot read {path} (not a mirror state file): refused images are tried again"
    )
    assert refusals.why(IMAGE, DIGEST) is None
    refusals.add(IMAGE, DIGEST, "zstd")
    assert refusals.save() is None  # replaced by a good one


def test_an_unwritable_place_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "mirror").write_text("a file where the directory should be")
    refusals, _ = Refusals.load(tmp_path / "mirror" / "refused.json")
    refusals.add(IMAGE, DIGEST, "zstd")
    warning = refusals.save()
    assert warning is not None
    assert warning.startswith(f"cannot write {tmp_path / 'mirror' / 'refused.json'} (")
    assert warning.endswith("): the images refused in this run will cost a pull again next run")


def test_without_a_home_a_refusal_is_not_remembered_and_the_run_says_so() -> None:
    refusals, warning = Refusals.load(state.refusals_path({}))
    assert warning is None
    assert refusals.save() is None  # nothing refused: nothing to say
    refusals.add(IMAGE, DIGEST, "zstd")
    assert refusals.save() == (
        "neither $XDG_STATE_HOME nor $HOME is set: the images refused in this run are not "
        "remembered and will cost a pull again next run"
    )


# --- when each image's referrers were last looked for -------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def test_an_images_referrers_are_looked_for_again_after_a_day(tmp_path: Path) -> None:
    path = tmp_path / "state" / "referrers.json"
    clock = Clock()
    looks = Looks(path, now=clock)
    key = f"ecr/mirror/x@{DIGEST}"
    assert looks.due(key)  # never looked for
    looks.add(key, {DIGEST: "sha256:" + "c" * 64})
    assert looks.save() is None
    again, warning = Looks.load(path)
    assert warning is None
    again.now = clock
    assert not again.due(key) and again.indexes(key) == {DIGEST: "sha256:" + "c" * 64}
    clock.now += timedelta(hours=23)
    assert not again.due(key)
    clock.now += timedelta(hours=2)
    assert again.due(key)  # more than a day ago
    clock.now -= timedelta(days=3)
    assert again.due(key)  # a clock set back: the time recorded is in its future


def test_looks_saved_at_once_keep_both_and_a_broken_file_warns(tmp_path: Path) -> None:
    path = tmp_path / "referrers.json"
    first, second = Looks(path), Looks(path)
    first.add("a", {})
    second.add("b", {})
    assert first.save() is None and second.save() is None
    both, _ = Looks.load(path)
    assert not both.due("a") and not both.due("b")
    path.write_text("{")
    broken, warning = Looks.load(path)
    assert broken.due("a")
    assert warning == (
        f"cannot read {path} (not a mirror state file): the referrers of every image are "
        "looked for again in this run"
    )
    assert Looks(None).save() is None  # nothing added: nothing to say
    homeless = Looks(None)
    homeless.add("a", {})
    assert homeless.save() == (
        "neither $XDG_STATE_HOME nor $HOME is set: when the referrers were looked for is not "
        "remembered, and the next run looks for them again"
    )


def test_looks_older_than_a_month_are_forgotten_when_the_file_is_written(tmp_path: Path) -> None:
    """Digests no longer mirrored (a tag moved on) would otherwise stay in the file, read at
    every start, until 20,000 of them had piled up."""
    path = tmp_path / "referrers.json"
    clock = Clock()
    old = Looks(path, now=clock)
    old.add("moved-on", {})
    assert old.save() is None
    clock.now += timedelta(days=31)
    new = Looks(path, now=clock)
    new.add("current", {})
    assert new.save() is None
    kept = json.loads(path.read_text())["looked"]
    assert sorted(kept) == ["current"]
    assert kept["current"]["at"] == "2026-06-01T12:00:00Z"


@pytest.mark.parametrize(
    "written", ["2026-06-01 12:00:00Z", "2026-06-01T12:00:00", "2026-06-01T12:00:00+00:00", "x"]
)
def test_a_look_time_in_another_form_is_a_broken_file(tmp_path: Path, written: str) -> None:
    path = tmp_path / "referrers.json"
    path.write_text(json.dumps({"version": 1, "looked": {"a": {"at": written, "indexes": {}}}}))
    looks, warning = Looks.load(path)
    assert looks.due("a") and warning is not None and "not a mirror state file" in warning
