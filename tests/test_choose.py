"""Choosing what to mirror, end to end: tag rules, pins, platform subsets, targets, sources."""

from __future__ import annotations

import json
from pathlib import Path

from tests.stage import Stage
from tests.standins.aws import ECR_PASSWORD
from tests.standins.ecr import EcrFront
from tests.standins.hub import HubFront
from tests.standins.registry import get_manifest, manifest_digest

VERSIONS = ["1.2.0", "1.9.9", "1.10.0", "1.10.1", "1.10.0-rc1", "2.0.0-alpine", "0.9.0",
            "1.3.0", "latest", "edge"]  # fmt: skip


def test_tag_rule_newest_three_by_version_costs_three_pulls(stage: Stage) -> None:
    for tag in VERSIONS:
        stage.push(tag, seed=tag)
    stage.config([{"source": stage.repo, "tags": {"match": r"\d+\.\d+\.\d+", "newest": 3}}])
    dry = stage.mirror("sync", "--dry-run")
    assert dry.code == 0, dry.stderr
    assert dry.report is not None
    chosen = [image["destination"].rsplit(":", 1)[1] for image in dry.report["images"]]
    assert chosen == ["1.10.1", "1.10.0", "1.9.9"]  # version order, not text order
    assert "tag rule chose 3 of 10 tags: 1.10.1, 1.10.0, 1.9.9" in dry.stderr
    assert stage.hub.counts.manifest_get == 0

    stage.hub.reset_counts()
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"] * 3)
    counts = stage.hub.counts
    assert counts.manifest_get_ok == 3  # one pull per chosen tag, none for the seven others
    assert counts.tags_list >= 1
    assert [stage.dest_digest(tag) is not None for tag in VERSIONS] == [
        tag in chosen for tag in VERSIONS
    ]


def test_tag_rule_that_chooses_nothing_is_a_warning(stage: Stage) -> None:
    stage.push("1.0", seed="x")
    stage.config([{"source": stage.repo, "tags": {"match": "nothing.*"}}])
    run = stage.mirror("sync")
    assert run.code == 0, run.stderr
    assert run.report is not None
    assert run.report["images"] == []
    assert run.report["warnings"] == [
        f"images[0] ({stage.hub.host}/{stage.repo}): tag rule chose no tag from 1 tag"
    ]
    assert "tag rule chose no tag" in run.stderr


def test_pinned_tag_stays_when_upstream_moves_and_then_costs_nothing(stage: Stage) -> None:
    pinned = stage.push("stable", seed="one")
    stage.config([stage.image(f"stable@{pinned}")])
    first = stage.mirror("sync")
    assert (first.code, first.actions()) == (0, ["copied", "copied"])  # the tag and its pin tag
    pin = "pin-sha256-" + pinned.removeprefix("sha256:")
    assert stage.dest_digest("stable") == stage.dest_digest(pin) == pinned
    assert stage.hub.counts.manifest_get_ok == 1  # one pull: the pin tag is a manifest PUT

    stage.push("stable", seed="two")  # upstream moves the tag
    stage.hub.reset_counts()
    again = stage.mirror("sync")
    assert (again.code, again.actions()) == (0, ["up-to-date", "up-to-date"])
    assert stage.dest_digest("stable") == stage.dest_digest(pin) == pinned
    assert stage.hub.counts.requests == []  # not a single request to the source


PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7")


def test_platform_subset_copies_only_that_platform_and_next_run_spends_no_pull(
    stage: Stage,
) -> None:
    stage.push("3", platforms=PLATFORMS, seed="p", layer_sizes=(50_000,))
    _, source_index = get_manifest(stage.source.url, stage.repo, "3")
    arm64 = next(m for m in source_index["manifests"] if m["platform"]["architecture"] == "arm64")
    stage.config([stage.image("3", platforms=["linux/arm64"])])

    first = stage.mirror("sync")
    assert (first.code, first.actions()) == (0, ["copied"]), first.stderr
    assert stage.hub.counts.manifest_get_ok == 2  # the index and the one platform
    media_type, index = stage.dest_manifest("3")
    assert media_type == "application/vnd.oci.image.index.v1+json"
    assert [m["digest"] for m in index["manifests"]] == [arm64["digest"]]  # digest kept
    assert index["annotations"]["io.github.mirror.source.digest"] == stage.source_digest("3")
    amd64 = next(m for m in source_index["manifests"] if m["platform"]["architecture"] == "amd64")
    assert (
        manifest_digest(stage.dest.url, stage.dest_repo(), amd64["digest"], auth=stage.dest_auth)
        is None
    )

    stage.hub.reset_counts()
    fresh_tmp = stage.tmp / "fresh"  # a new machine: nothing kept but what ECR has
    fresh_tmp.mkdir()
    again = stage.mirror("sync", TMPDIR=str(fresh_tmp), HOME=str(fresh_tmp))
    assert (again.code, again.actions()) == (0, ["up-to-date"])
    assert stage.hub.counts.manifest_get == 0

    stage.push("3", platforms=PLATFORMS, seed="p2", layer_sizes=(50_000,))
    moved = stage.mirror("sync")
    assert (moved.code, moved.actions()) == (0, ["copied"])
    _, index = stage.dest_manifest("3")
    assert index["annotations"]["io.github.mirror.source.digest"] == stage.source_digest("3")


def test_platform_not_in_the_index_fails_clearly(stage: Stage) -> None:
    stage.push("3", platforms=PLATFORMS[:2], seed="q")
    stage.config([stage.image("3", platforms=["linux/s390x"])])
    run = stage.mirror("sync")
    assert run.code == 1
    assert run.report is not None
    assert run.report["images"][0]["error"] == (
        f"{stage.hub.host}/{stage.repo}:3: none of linux/s390x in the source index "
        "(it has linux/amd64, linux/arm64)"
    )


def _target(endpoint: str, **keys: str) -> dict[str, object]:
    return {"region": "us-east-1", "endpoint": endpoint, "tls_verify": False, **keys}


def test_two_targets_filled_with_one_pull_per_image(stage: Stage, second_ecr: EcrFront) -> None:
    single = stage.push("single", seed="s")
    multi = stage.push("multi", platforms=PLATFORMS[:2], seed="m")
    stage.config([stage.image("single", "multi")])
    targets = [
        {"region": "us-east-1", "repository_prefix": "mirror", "endpoint": stage.dest.host,
         "tls_verify": False},
        {"region": "us-east-1", "registry_id": "111122223333", "repository_prefix": "copy",
         "endpoint": second_ecr.host, "tls_verify": False},
    ]  # fmt: skip
    document = json.loads(
        json.dumps(
            {
                "source": {"registry": stage.hub.host, "tls_verify": False},
                "ecr": targets,
                "images": [stage.image("single", "multi")],
            }
        )
    )
    (stage.tmp / "mirror.yaml").write_text(json.dumps(document))

    run = stage.mirror("sync")
    assert run.code == 0, run.stderr
    assert run.report is not None
    assert [(i["destination"].split("/")[0], i["action"]) for i in run.report["images"]] == [
        (stage.dest.host, "copied"),
        (second_ecr.host, "copied"),
        (stage.dest.host, "copied"),
        (second_ecr.host, "copied"),
    ]
    # one pull for the single image, index + two platforms for the multi-arch one: once each
    assert stage.hub.counts.manifest_get_ok == 1 + 3
    auth = ("AWS", ECR_PASSWORD)
    assert manifest_digest(second_ecr.url, f"copy/{stage.repo}", "single", auth=auth) == single
    assert manifest_digest(second_ecr.url, f"copy/{stage.repo}", "multi", auth=auth) == multi
    assert stage.dest_digest("multi") == multi

    stage.hub.reset_counts()
    again = stage.mirror("sync")
    assert again.actions() == ["up-to-date"] * 4
    assert stage.hub.counts.manifest_get == 0


def test_a_new_target_is_filled_from_the_first_without_a_pull(
    stage: Stage, second_ecr: EcrFront
) -> None:
    digest = stage.push("a", seed="a")
    stage.config([stage.image("a")])
    assert stage.mirror("sync").code == 0
    document = {
        "source": {"registry": stage.hub.host, "tls_verify": False},
        "ecr": [
            _target(stage.dest.host, repository_prefix="mirror"),
            _target(second_ecr.host, registry_id="111122223333"),
        ],
        "images": [stage.image("a")],
    }
    (stage.tmp / "mirror.yaml").write_text(json.dumps(document))
    stage.hub.reset_counts()
    run = stage.mirror("sync")
    assert run.actions() == ["up-to-date", "copied"]
    assert stage.hub.counts.manifest_get == 0  # filled from the first ECR, not Docker Hub
    auth = ("AWS", ECR_PASSWORD)
    assert manifest_digest(second_ecr.url, stage.repo, "a", auth=auth) == digest


def test_another_source_registry_with_its_own_credentials(stage: Stage, tmp_path: Path) -> None:
    with HubFront(stage.source.url, credentials=("quayuser", "quaytoken")) as quay:
        digest = stage.push("v1", seed="quay")
        document = {
            "source": {
                "registry": stage.hub.host,
                "tls_verify": False,
                "credentials": {
                    quay.host: {"username_env": "QUAY_USER", "password_env": "QUAY_TOKEN"}
                },
            },
            "ecr": {"region": "us-east-1", "endpoint": stage.dest.host, "tls_verify": False},
            "images": [
                {"source": f"{quay.host}/{stage.repo}", "tags": ["v1"], "repository": "infra/x"}
            ],
        }
        (stage.tmp / "mirror.yaml").write_text(json.dumps(document))
        run = stage.mirror("sync", QUAY_USER="quayuser", QUAY_TOKEN="quaytoken")
        assert (run.code, run.actions()) == (0, ["copied"]), run.stderr
        assert quay.counts.token_anonymous == 0 and quay.counts.token_authenticated >= 1
        assert stage.hub.counts.requests == []  # the default source was not asked
        assert manifest_digest(stage.dest.url, "infra/x", "v1", auth=stage.dest_auth) == digest
