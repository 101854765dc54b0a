"""The benchmarks' own parts that need no process: corpora, request timelines, profiles.

Only what they compute is asserted, never a timing of the machine.
"""

from __future__ import annotations

from bench import corpus


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
