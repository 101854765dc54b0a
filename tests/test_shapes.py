"""Content of every shape, end to end: indexes of indexes, zstd Docker v2, schema 1, Windows
images with foreign layers, and KMS_DSSE repositories. Every test counts the pulls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.stage import Stage
from tests.standins.aws import ECR_PASSWORD
from tests.standins.ecr import EcrFront
from tests.standins.images import (
    nested_index,
    push_image,
    push_schema1,
    windows_image,
    zstd_docker_image,
)
from tests.standins.registry import manifest_digest

ZSTD_REFUSAL = (
    "a Docker v2 manifest with zstd-compressed layers (application/vnd.docker.image.rootfs."
    "diff.tar.zstd): the Docker v2 format has no zstd layer type (only OCI manifests carry "
    "zstd), and this skopeo refuses to read it, so mirror does not copy it; ask its publisher "
    "for an OCI image"
)
SCHEMA1_REFUSAL = (
    "a Docker schema 1 image (the format of Docker 1.9 and older, deprecated): its signed "
    "manifest names its own repository and tag, so no copy into another repository can keep "
    "its digest, and mirror does not copy it; ask its publisher for a schema 2 or OCI image"
)


def dest_has(stage: Stage, digest: str) -> bool:
    found = manifest_digest(stage.backend.url, stage.dest_repo(), digest, auth=stage.dest_auth)
    return found == digest


def assert_next_run_is_free(stage: Stage) -> None:
    stage.hub.reset_counts()
    again = stage.mirror("sync")
    assert (again.code, again.actions()) == (0, ["up-to-date"])
    assert stage.hub.counts.manifest_get == 0


@pytest.mark.parametrize("family", ["oci", "docker"])
def test_an_index_of_indexes_is_copied_whole_with_every_digest(stage: Stage, family: str) -> None:
    top, blobs = nested_index(f"whole-{family}", media_types=family)
    digest = push_image(stage.source.host, stage.repo, "1", top, blobs)
    inner = json.loads(top.data)["manifests"][0]["digest"]
    leaves = [m["digest"] for m in json.loads(blobs[inner].data)["manifests"]]
    stage.config([stage.image("1")])

    first = stage.mirror("sync")
    assert (first.code, first.actions()) == (0, ["copied"]), first.stderr
    assert stage.dest_digest("1") == digest  # the top index's own bytes
    assert all(dest_has(stage, d) for d in (inner, *leaves))  # the inner index, each leaf
    s390x = json.loads(top.data)["manifests"][1]["digest"]
    assert dest_has(stage, s390x)
    # skopeo reads the top and the inner index (through the relay) before it gives up, then
    # mirror walks it: the top, the inner index and the three leaves, each pulled once (5)
    assert stage.hub.counts.manifest_get_ok == 5

    assert_next_run_is_free(stage)


def test_an_index_of_indexes_fills_a_second_target_without_a_pull(
    stage: Stage, second_ecr: EcrFront
) -> None:
    top, blobs = nested_index("two-targets")
    digest = push_image(stage.source.host, stage.repo, "1", top, blobs)
    second = {"region": "us-east-1", "registry_id": "111122223333", "repository_prefix": "copy",
              "endpoint": second_ecr.host, "tls_verify": False}  # fmt: skip
    path = stage.config([stage.image("1")])
    document = yaml.safe_load(path.read_text())
    document["ecr"] = [document["ecr"], second]
    path.write_text(yaml.safe_dump(document))

    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied", "copied"]), run.stderr
    auth = ("AWS", ECR_PASSWORD)
    assert manifest_digest(second_ecr.url, f"copy/{stage.repo}", "1", auth=auth) == digest
    assert stage.hub.counts.manifest_get_ok == 5  # as for one target: the second costs none


def test_a_platform_subset_of_an_index_of_indexes_looks_inside(stage: Stage) -> None:
    top, blobs = nested_index("subset")
    digest = push_image(stage.source.host, stage.repo, "1", top, blobs)
    inner = json.loads(top.data)["manifests"][0]["digest"]
    arm64 = next(
        m for m in json.loads(blobs[inner].data)["manifests"]
        if m["platform"]["architecture"] == "arm64"
    )  # fmt: skip
    stage.config([stage.image("1", platforms=["linux/arm64"])])

    first = stage.mirror("sync")
    assert (first.code, first.actions()) == (0, ["copied"]), first.stderr
    _, index = stage.dest_manifest("1")
    assert [m["digest"] for m in index["manifests"]] == [arm64["digest"]]  # its digest kept
    assert index["annotations"]["io.github.mirror.source.digest"] == digest
    assert stage.hub.counts.manifest_get_ok == 3  # the top, the inner index, arm64

    assert_next_run_is_free(stage)


def test_zstd_docker_v2_is_refused_once_then_costs_no_pull_until_it_changes(
    stage: Stage, tmp_path: Path
) -> None:
    digest = push_image(stage.source.host, stage.repo, "1", *zstd_docker_image("one"))
    stage.config([stage.image("1")])

    first = stage.mirror("sync")
    assert (first.code, first.actions()) == (1, ["failed"])
    assert first.report is not None
    where = f"{stage.hub.host}/{stage.repo}:1"
    assert first.report["images"][0]["error"] == f"{where}: {ZSTD_REFUSAL}"
    assert stage.hub.counts.manifest_get_ok == 1  # skopeo read the manifest once: not retried
    memory = json.loads((tmp_path / ".local/state/mirror/refused.json").read_text())
    assert list(memory["refused"]) == [f"{stage.hub.host}/{stage.repo}@{digest}"]

    stage.hub.reset_counts()
    again = stage.mirror("sync")
    assert (again.code, again.actions()) == (1, ["failed"])
    assert again.report is not None
    error = again.report["images"][0]["error"]
    assert error.startswith(f"{where}: {ZSTD_REFUSAL} (found by an earlier run on ")
    assert error.endswith("; not tried again until the source changes)")
    assert stage.hub.counts.manifest_get == 0  # a HEAD, no pull

    push_image(stage.source.host, stage.repo, "1", *zstd_docker_image("two"))  # it changes
    stage.hub.reset_counts()
    changed = stage.mirror("sync")
    assert changed.report is not None
    assert changed.report["images"][0]["error"] == f"{where}: {ZSTD_REFUSAL}"  # tried again
    assert stage.hub.counts.manifest_get_ok == 1

    stage.hub.reset_counts()
    fresh = tmp_path / "fresh"  # a new CodeBuild container: no memory, so one pull again
    fresh.mkdir()
    anew = stage.mirror("sync", HOME=str(fresh))
    assert anew.code == 1
    assert stage.hub.counts.manifest_get_ok == 1


@pytest.mark.parametrize("platforms", [None, ["linux/amd64"]], ids=["whole", "subset"])
def test_schema1_is_refused_from_its_head_without_a_pull(
    stage: Stage, platforms: list[str] | None
) -> None:
    push_schema1(stage.source.host, stage.repo, "1", seed="old")
    stage.config([stage.image("1", platforms=platforms) if platforms else stage.image("1")])
    for _ in range(2):
        run = stage.mirror("sync")
        assert (run.code, run.actions()) == (1, ["failed"])
        assert run.report is not None
        error = run.report["images"][0]["error"]
        assert error == f"{stage.hub.host}/{stage.repo}:1: {SCHEMA1_REFUSAL}"
        assert "another digest" not in error and "announced" not in error
    assert stage.hub.counts.manifest_get == 0  # the HEAD's media type said it: no pull, ever
    assert stage.dest_digest("1") is None


def test_a_windows_image_is_copied_and_its_foreign_layers_named(stage: Stage) -> None:
    top, blobs = windows_image("win")
    digest = push_image(stage.source.host, stage.repo, "ltsc2022", top, blobs)
    stage.config([stage.image("ltsc2022")])
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"]), run.stderr
    assert stage.dest_digest("ltsc2022") == digest
    assert run.report is not None
    destination = run.report["images"][0]["destination"]
    warning = (
        f"{destination}: 1 foreign layer (Windows base layers) not copied: the image's manifest "
        "points to mcr.microsoft.com for it, as Docker Hub's does, so a build host without "
        "access to that host cannot pull this image from ECR"
    )
    assert run.report["warnings"] == [warning]
    assert f"mirror: {warning}" in run.error
    counts = stage.hub.counts
    assert counts.manifest_get_ok == 1
    assert counts.blob_get == 2  # the config and the layer on top; never the foreign one


def test_kms_dsse_repositories_are_created_and_checked(stage: Stage) -> None:
    stage.push("1", seed="dsse")
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    settings = {"encryption": {"type": "KMS_DSSE", "kms_key": key}}
    stage.config([stage.image("1")], ecr={"repository_settings": settings})
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"]), run.stderr
    assert stage.hub.counts.manifest_get_ok == 1
    described = stage.ecr().describe_repositories(repositoryNames=[stage.dest_repo()])
    assert described["repositories"][0]["encryptionConfiguration"] == {
        "encryptionType": "KMS_DSSE",
        "kmsKey": key,
    }
    repos = stage.mirror("repos")
    assert (repos.code, repos.stdout.splitlines()[-1]) == (0, "1 repositories, 0 differences left")

    stage.config([stage.image("1")], ecr={"repository_settings": {"encryption": {"type": "KMS"}}})
    drift = stage.mirror("repos")
    assert drift.code == 1
    assert "cannot-fix" in drift.stdout and f"KMS_DSSE {key}" in drift.stdout


@pytest.mark.parametrize("cap", ["--max-pulls 2", "2 pulls left"])
def test_a_platform_subset_of_an_index_of_indexes_never_pulls_past_the_budget(
    stage: Stage, cap: str
) -> None:
    """The inner index tells where linux/arm64 is only once read: the top, the inner index
    and arm64 are three pulls, one more than allowed. What the walk pulls is checked against
    the budget before each pull, as for a whole copy."""
    stage.use_hub(limit=100)
    top, blobs = nested_index("tight")
    digest = push_image(stage.source.host, stage.repo, "1", top, blobs)
    stage.config([stage.image("1", platforms=["linux/arm64"])])
    if cap == "2 pulls left":
        stage.hub.set_remaining(2)
    short = stage.mirror("sync", *(cap.split() if cap.startswith("--") else []))
    assert (short.code, short.actions()) == (75, ["deferred"]), short.stderr
    counts = stage.hub.counts
    assert counts.manifest_get <= 2 and counts.status_429 == 0
    assert short.report is not None
    assert short.report["rate_limit"][stage.hub.host]["spent"] == counts.manifest_get_ok
    assert stage.dest_digest("1") is None

    stage.hub.reset_counts()
    stage.hub.set_remaining(3)
    run = stage.mirror("sync", "--max-pulls", "3")
    assert (run.code, run.actions()) == (0, ["copied"]), run.stderr
    _, index = stage.dest_manifest("1")
    assert index["annotations"]["io.github.mirror.source.digest"] == digest
    assert stage.hub.counts.manifest_get_ok == 3
