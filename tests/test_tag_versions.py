"""Tag rules over tag lists as registries serve them, end to end: what is copied, what it costs."""

from __future__ import annotations

import pytest

from tests.stage import Stage
from tests.standins.images import push_image
from tests.standins.signing import cosign_sig_manifest, key_signed, new_key, simple_signing


def push_alpine_like(stage: Stage) -> dict[str, str]:
    """Versions, words, an edge snapshot by date, and cosign's tags for 3.20: their digests."""
    digests = {tag: stage.push(tag, seed=tag) for tag in ("3.18", "3.19", "3.20", "latest")}
    digests["edge"] = stage.push("edge", seed="edge")
    digests["20240923"] = stage.push("20240923", seed="snapshot")
    subject = digests["3.20"]
    hexdigits = subject.removeprefix("sha256:")
    key = new_key()
    for suffix in (".sig", ".att", ""):  # "" : the referrers tag schema's own tag
        tag = f"sha256-{hexdigits}{suffix}"
        signed = key_signed(key, simple_signing(subject, reference=f"alpine{suffix}"))
        digests[tag] = push_image(
            stage.source.host, stage.repo, tag, *cosign_sig_manifest([signed])
        )
    return digests


def test_newest_never_takes_words_dates_or_signatures_and_semver_ranges(stage: Stage) -> None:
    digests = push_alpine_like(stage)
    # what rules choose, not what travels with the versions chosen (tests/test_signed.py)
    stage.config([{"source": stage.repo, "tags": {"newest": 2}, "referrers": False}])
    dry = stage.mirror("sync", "--dry-run")
    assert dry.code == 0, dry.stderr
    assert "tag rule chose 2 of 9 tags: 3.20, 3.19" in dry.stderr
    assert stage.hub.counts.manifest_get == 0

    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied", "copied"]), run.stderr
    assert stage.hub.counts.manifest_get_ok == 2  # one pull per version, none for the rest
    assert [stage.dest_digest(tag) for tag in ("3.20", "3.19")] == [
        digests["3.20"],
        digests["3.19"],
    ]
    for tag in ("latest", "edge", "20240923", "3.18", *(t for t in digests if "sha256-" in t)):
        assert stage.dest_digest(tag) is None, tag

    stage.hub.reset_counts()
    stage.config([{"source": stage.repo, "tags": {"semver": ">=3.18 <4"}, "referrers": False}])
    ranged = stage.mirror("sync")
    assert ranged.code == 0, ranged.stderr
    assert ranged.actions() == ["up-to-date", "up-to-date", "copied"]  # 3.20, 3.19, 3.18
    assert "tag rule chose 3 of 9 tags: 3.20, 3.19, 3.18" in ranged.stderr
    assert stage.hub.counts.manifest_get_ok == 1  # only 3.18 was new
    assert stage.dest_digest("3.18") == digests["3.18"]


def test_a_rule_whose_matches_are_all_words_says_why_it_chose_none(stage: Stage) -> None:
    push_alpine_like(stage)
    stage.config([{"source": stage.repo, "tags": {"match": "latest|edge", "newest": 1}}])
    run = stage.mirror("sync")
    assert run.code == 0, run.stderr
    assert run.report is not None and run.report["images"] == []
    assert run.report["warnings"] == [
        f"images[0] ({stage.hub.host}/{stage.repo}): tag rule chose no tag from 9 tags: newest "
        "ranks versions only, and none of the 2 it matched is a version (words such as latest "
        "or edge have none)"
    ]
    assert stage.hub.counts.manifest_get == 0


def test_signature_tags_listed_by_hand_are_copied_and_a_referrers_tag_is_refused(
    stage: Stage,
) -> None:
    digests = push_alpine_like(stage)
    signature = next(tag for tag in digests if tag.endswith(".sig"))
    stage.config([stage.image(signature)])
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"]), run.stderr
    assert stage.dest_digest(signature) == digests[signature]  # the signature, digest kept
    assert stage.hub.counts.manifest_get_ok == 1

    stage.hub.reset_counts()
    referrers = signature.removesuffix(".sig")
    stage.config([stage.image(referrers)])
    refused = stage.mirror("sync")
    assert refused.code == 2
    assert f"'{referrers}' is a referrers tag" in refused.error
    assert f"pin it: TAG@sha256:{referrers.removeprefix('sha256-')}" in refused.error
    assert stage.hub.counts.requests == []  # refused before anything is asked


@pytest.mark.parametrize(
    ("written", "key"),
    [
        ("{semver: }", "semver"),  # a range left to fill in
        ("{semver: ~}", "semver"),
        ("{match: null}", "match"),
        ("\n      newest:\n      exclude: '.*-rc.*'", "newest"),
    ],
)
def test_a_rule_key_written_without_a_value_is_refused_not_read_as_every_tag(
    stage: Stage, written: str, key: str
) -> None:
    """YAML reads `semver:` with nothing after it (or `~`, `null`) as no value: a rule with
    only such keys would choose every tag of the repository, each a pull."""
    for tag in ("1.0", "2.0", "latest"):
        stage.push(tag, seed=tag)
    path = stage.config([])
    path.write_text(
        path.read_text().replace(
            "images: []", f"images:\n  - source: {stage.repo}\n    tags: {written}"
        )
    )
    for command in ("validate", "sync"):
        run = stage.mirror(command)
        assert run.code == 2, run.stderr
        assert run.error.splitlines() == [
            f"mirror: {path}: images[0].tags.{key}: no value (YAML reads an empty value, ~ and "
            "null as none): give one, or leave the key out"
        ]
    assert stage.hub.counts.manifest_get == 0
    assert stage.dest_digest("1.0") is None
