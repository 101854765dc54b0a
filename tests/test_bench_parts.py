"""The benchmarks' own parts that need no process: corpora, request timelines, profiles.

Only what they compute is asserted, never a timing of the machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench import corpus, pyspy
from bench.timeline import Event, kind_of, stats, summary
from bench.versions import spec


def test_the_distinct_corpus_has_one_image_per_tag_spread_over_its_repositories() -> None:
    made = corpus.distinct(32, 16)
    summary_ = made.summary()
    assert summary_["tags"] == summary_["distinct_images"] == 32
    assert summary_["repositories"] == 16
    assert all(len(tags) == 2 for tags in made.repositories.values())
    assert summary_["multi_platform_images"] == 8  # a quarter
    assert {len(image.platforms) for image in made.images} == {1, 2, 3}
    assert not any(image.aliases for image in made.images)
    assert len({(image.repository, image.tag) for image in made.images}) == 32
    assert repr(corpus.distinct(32, 16)) == repr(made)  # reproducible
    assert repr(corpus.distinct(32, 16, seed=19)) != repr(made)


def test_the_alias_rich_corpus_is_unchanged_by_the_distinct_one() -> None:
    made = corpus.generate(100)
    assert made.summary() == {
        "tags": 100,
        "distinct_images": 51,
        "repositories": 10,
        "multi_platform_images": 25,
        "platform_manifests": 85,
        "approx_blob_bytes": 98_506_058,
    }


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("GET", "/v2/", "ping"),
        ("GET", "/token?scope=repository:a:pull", "token"),
        ("HEAD", "/v2/library/ruby/manifests/3.3", "manifest_head"),
        ("GET", "/v2/a/manifests/sha256:ab", "manifest_get"),
        ("PUT", "/v2/a/manifests/1", "manifest_put"),
        ("DELETE", "/v2/a/manifests/1", "other"),
        ("POST", "/v2/a/b/blobs/uploads/", "upload"),
        ("PATCH", "/v2/a/blobs/uploads/3f2a?_state=x", "upload"),
        ("HEAD", "/v2/a/blobs/sha256:ab", "blob_head"),
        ("GET", "/v2/a/blobs/sha256:ab", "blob_get"),
        ("GET", "/v2/a/tags/list?n=100", "tags"),
        ("GET", "/starport-layer-bucket/x", "other"),
    ],
)
def test_requests_are_told_apart_by_their_path(method: str, path: str, kind: str) -> None:
    assert kind_of(method, path) == kind


def _head(repository: str, arrived: float, answered: float, side: str = "source") -> Event:
    path = f"/v2/{repository}/manifests/1"
    return Event(side, "manifest_head", "HEAD", path, 200, arrived, answered)


def test_concurrency_is_counted_from_arrivals_and_answers() -> None:
    # two at once for 1 s, then one alone for 1 s; then a gap; then one more for 1 s
    events = [_head("a", 0.0, 2.0), _head("b", 0.0, 1.0), _head("b", 3.0, 4.0)]
    found = stats(events)
    assert found is not None
    assert (found.count, found.max_in_flight, found.busy_s) == (3, 2, 3.0)
    assert found.mean_in_flight == pytest.approx(4 / 3, abs=0.01)
    assert found.mean_ms == pytest.approx(4000 / 3, abs=0.1)
    per_repository = summary(events)["source/manifest_head per repository"]
    assert per_repository == {"repositories": 2, "max_in_flight": 1, "mean_of_max_in_flight": 1.0}


def test_one_after_another_is_one_in_flight() -> None:
    events = [_head("a", n, n + 1.0, side="destination") for n in range(5)]
    found = summary(events)["destination/manifest_head"]
    assert (found["max_in_flight"], found["mean_in_flight"]) == (1, 1.0)


def test_py_spy_samples_are_grouped_by_thread_name_and_innermost_frame(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "thread (1): MainThread;<module> (mirror/__main__.py:25);wait (threading.py:331) 50\n"
        "thread (2): check-1;_work (mirror/workers.py:65);get (queue.py:171) 20\n"
        "thread (3): check-12;_work (mirror/workers.py:65);"
        "_request (mirror/registry.py:356);acquire (threading.py:1) 30\n"
        "garbage line\n"
    )
    profile = pyspy.read(raw).as_dict()
    assert profile["MainThread"] == {
        "seconds": 0.5,
        "innermost_focus": [("<module> (mirror/__main__.py:25)", 0.5)],
        "leaves": [("wait (threading.py:331)", 0.5)],
    }
    check = profile["check"]
    assert isinstance(check, dict)
    assert check["seconds"] == 0.5
    assert check["innermost_focus"] == [
        ("_request (mirror/registry.py:356)", 0.3),
        ("_work (mirror/workers.py:65)", 0.2),
    ]


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("good=8ad5280", ("good", "8ad5280")),
        ("main", ("main", "main")),
        ("patched=/work/x=y", ("patched", "/work/x=y")),
    ],
)
def test_mirror_versions_are_label_equals_where(text: str, parsed: tuple[str, str]) -> None:
    assert spec(text) == parsed


@pytest.mark.parametrize("text", ["=main", "label="])
def test_a_mirror_version_needs_a_label_and_a_place(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        spec(text)
