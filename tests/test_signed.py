"""What vouches for an image travels with it, end to end through `mirror`: cosign's tags and
OCI 1.1 referrers copied with their digests and found at the ECR-like front by its referrers
API, and the pulls each costs, counted at the Docker-Hub-like front."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import urllib3

from mirror.referrers import cosign_tag, tag_schema_name
from mirror.state import looks_path
from tests.stage import Stage
from tests.standins.registry import MANIFEST_ACCEPT, get_manifest
from tests.standins.signing import (
    SPDX,
    KeyPair,
    attach_cosign,
    attach_referrer,
    key_signed,
    new_key,
    sbom_referrer,
    simple_signing,
)

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"


def subject(stage: Stage, digest: str, *, repo: str | None = None) -> tuple[str, str, int]:
    """(media type, digest, size) of a manifest at the source: a referrer's `subject`."""
    answer = urllib3.request(
        "HEAD",
        f"{stage.source.url}/v2/{repo or stage.repo}/manifests/{digest}",
        headers={"Accept": MANIFEST_ACCEPT},
    )
    assert answer.status == 200
    return answer.headers["Content-Type"], digest, int(answer.headers["Content-Length"])


def sign(stage: Stage, digest: str, key: KeyPair, signed: str | None = None) -> str:
    """cosign's `.sig` beside the image `digest`, signing `signed` (default: that digest)."""
    payload = simple_signing(signed or digest)
    return attach_cosign(stage.source.host, stage.repo, digest, [key_signed(key, payload)]).digest


def ecr_referrers(stage: Stage, digest: str) -> list[dict[str, Any]]:
    """What the ECR-like front's referrers API lists for `digest`."""
    auth = urllib3.make_headers(basic_auth=":".join(stage.dest_auth))
    answer = urllib3.request(
        "GET", f"{stage.dest.url}/v2/{stage.dest_repo()}/referrers/{digest}", headers=auth
    )
    assert answer.status == 200, answer.data
    entries: list[dict[str, Any]] = json.loads(answer.data)["manifests"]
    return entries


def public_key(stage: Stage, key: KeyPair, name: str = "cosign.pub") -> str:
    key.write_public(stage.tmp / name)
    return name


def sbom(stage: Stage, digest: str, seed: str = "", *, tag_schema: bool = True) -> str:
    """An SBOM attached to `digest` at the source (by digest; in the tag schema's index too,
    as a client does for a registry without the referrers API, such as Docker Hub)."""
    referrer = sbom_referrer(subject(stage, digest), seed)
    return attach_referrer(
        stage.source.host, stage.repo, digest, referrer, tag_schema=tag_schema
    ).digest


def copied(run_report: dict[str, Any] | None, index: int = 0) -> list[tuple[str, str, Any]]:
    """(digest, artifact type, tag) of the referrers the report says were copied."""
    assert run_report is not None
    found = run_report["images"][index]["referrers"]
    return sorted((r["digest"], r["artifact_type"], r["tag"]) for r in found["copied"])


def age_looks(stage: Stage, hours: float) -> None:
    """Make every look at referrers recorded so far `hours` older, as a day passing would."""
    path = looks_path({"HOME": str(stage.tmp)})
    assert path is not None and path.exists()
    data = json.loads(path.read_text())
    for entry in data["looked"].values():
        moment = datetime.strptime(entry["at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        entry["at"] = (moment - timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")
    path.write_text(json.dumps(data))


def pulled(stage: Stage) -> int:
    return stage.hub.counts.manifest_get_ok


def test_a_signed_image_travels_with_its_signature_and_sbom(stage: Stage) -> None:
    """cosign's .sig and an SBOM in the tag schema (Docker Hub has no referrers API): both
    copied, digests kept; the SBOM found at ECR by its referrers API. Then a no-op run."""
    hub = stage.use_hub(limit=100)
    digest = stage.push("1.0", seed="signed")
    sig = sign(stage, digest, new_key())
    document = sbom(stage, digest)
    stage.config([stage.image("1.0")])

    first = stage.mirror("sync")
    assert (first.code, first.actions()) == (0, ["copied"]), first.stderr
    assert copied(first.report) == sorted(
        [(document, SPDX, None), (sig, SIMPLE_SIGNING, cosign_tag(digest))]
    )
    assert stage.dest_digest("1.0") == digest
    assert stage.dest_digest(cosign_tag(digest)) == sig  # the tag, its digest kept
    assert [entry["digest"] for entry in ecr_referrers(stage, digest)] == [document]
    assert stage.dest_digest(tag_schema_name(digest)) is None  # ECR has the API: no index tag
    # the image, the .sig, the tag-schema index and the SBOM's manifest: a pull each
    assert pulled(stage) == 4
    assert first.report is not None and first.report["rate_limit"][hub.host]["spent"] == 4
    assert hub.remaining == 96
    assert "referrers: 2 copied for 1 image" in first.error

    hub.reset_counts()
    again = stage.mirror("sync")
    assert (again.code, again.actions()) == (0, ["up-to-date"]), again.stderr
    assert hub.counts.manifest_get == 0  # a no-op run: no pull, nor any request for referrers
    assert [path for _, path, _ in hub.counts.requests if "sha256" in path] == []
    assert again.report is not None and again.report["images"][0]["referrers"] is None


def test_an_sbom_found_by_the_referrers_api(stage: Stage) -> None:
    """A source with the referrers API: listed there (no pull), copied (one)."""
    hub = stage.use_hub(limit=100, referrers="api")
    digest = stage.push("1.0", seed="api")
    document = sbom(stage, digest, tag_schema=False)
    stage.config([stage.image("1.0")])
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"]), run.stderr
    assert copied(run.report) == [(document, SPDX, None)]
    assert [entry["digest"] for entry in ecr_referrers(stage, digest)] == [document]
    assert hub.counts.referrers_list == 1
    assert pulled(stage) == 2  # the image and the SBOM's manifest


def test_the_platforms_of_an_index_bring_their_referrers(stage: Stage) -> None:
    """Copied whole, an index's platforms are subjects too: each one's referrers travel."""
    stage.use_hub(limit=100, referrers="api")
    digest = stage.push("1.0", seed="multi", platforms=("linux/amd64", "linux/arm64"))
    _, index = get_manifest(stage.source.url, stage.repo, digest)
    platforms = [entry["digest"] for entry in index["manifests"]]
    sig = sign(stage, digest, new_key())
    documents = [sbom(stage, child, child, tag_schema=False) for child in platforms]
    stage.config([stage.image("1.0")])
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"]), run.stderr
    assert copied(run.report) == sorted(
        [(sig, SIMPLE_SIGNING, cosign_tag(digest)), *((d, SPDX, None) for d in documents)]
    )
    for child, document in zip(platforms, documents, strict=True):
        assert [entry["digest"] for entry in ecr_referrers(stage, child)] == [document]
    assert pulled(stage) == 3 + 1 + 2  # the index and its platforms, the .sig, the SBOMs


def test_a_pinned_image_brings_its_referrers_once(stage: Stage) -> None:
    digest = stage.push("1.0", seed="pinned")
    sig = sign(stage, digest, new_key())
    stage.config([stage.image(f"1.0@{digest}")])
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied", "copied"]), run.stderr
    assert (
        copied(run.report, 0)
        == copied(run.report, 1)
        == [(sig, SIMPLE_SIGNING, cosign_tag(digest))]
    )  # the tag and its pin tag: one image, its referrers copied once
    assert stage.dest_digest(cosign_tag(digest)) == sig
    assert pulled(stage) == 2
    stage.hub.reset_counts()
    again = stage.mirror("sync")
    assert again.actions() == ["up-to-date", "up-to-date"]
    assert stage.hub.counts.requests == []  # a pin in place: not a request to the source


def test_referrers_added_later_are_found_once_a_day_or_on_request(stage: Stage) -> None:
    digest = stage.push("1.0", seed="later")
    first_sbom = sbom(stage, digest, "first")
    stage.config([stage.image("1.0")])
    assert copied(stage.mirror("sync").report) == [(first_sbom, SPDX, None)]

    second_sbom = sbom(stage, digest, "second")  # attached after the image was mirrored
    stage.hub.reset_counts()
    quiet = stage.mirror("sync")
    assert quiet.report is not None and quiet.report["images"][0]["referrers"] is None
    assert pulled(stage) == 0  # looked for less than a day ago: not again

    age_looks(stage, 25)
    stage.hub.reset_counts()
    daily = stage.mirror("sync")
    assert (daily.code, daily.actions()) == (0, ["up-to-date"]), daily.stderr
    assert copied(daily.report) == [(second_sbom, SPDX, None)]
    assert daily.report is not None
    assert daily.report["images"][0]["referrers"]["already_there"] == 1
    assert pulled(stage) == 2  # the tag-schema index, which changed, and the new SBOM

    third_sbom = sbom(stage, digest, "third")
    stage.hub.reset_counts()
    asked = stage.mirror("sync", "--rescan-referrers")
    assert copied(asked.report) == [(third_sbom, SPDX, None)]
    assert pulled(stage) == 2

    age_looks(stage, 25)
    stage.hub.reset_counts()
    unchanged = stage.mirror("sync")
    assert unchanged.report is not None
    assert unchanged.report["images"][0]["referrers"]["already_there"] == 0
    assert pulled(stage) == 0  # the index is the one read last time: not read again


def test_referrers_the_budget_cannot_cover_wait_for_a_later_run(stage: Stage) -> None:
    hub = stage.use_hub(limit=3)
    digest = stage.push("1.0", seed="budget")
    documents = [sbom(stage, digest, "one"), sbom(stage, digest, "two")]
    stage.config([stage.image("1.0")])
    short = stage.mirror("sync")
    assert (short.code, short.actions()) == (75, ["copied"]), short.stderr
    assert stage.dest_digest("1.0") == digest  # the image itself is copied
    assert copied(short.report) == [(documents[0], SPDX, None)]
    assert short.report is not None
    deferred = short.report["images"][0]["referrers"]["deferred"]
    assert deferred == f"{hub.host}: pull budget: needs 1, 0 left of 3; run again later"
    assert "referrers " in short.stdout and "deferred: " in short.stdout
    assert hub.counts.status_429 == 0 and hub.remaining == 0  # spent, never overrun

    hub.set_remaining(3)
    hub.reset_counts()
    later = stage.mirror("sync")
    assert (later.code, later.actions()) == (0, ["up-to-date"]), later.stderr
    assert copied(later.report) == [(documents[1], SPDX, None)]
    assert pulled(stage) == 2  # the index again (the look was not finished), the second SBOM


def test_a_target_without_the_referrers_api_gets_the_tag_schema_index(stage: Stage) -> None:
    """A registry without the API keeps its referrers in the tag schema's index, which mirror
    writes, keeping the entries there; a pin tag an earlier mirror wrote is never taken for one."""
    stage.use_ecr(referrers_api=False)
    digest = stage.push("1.0", seed="no-api")
    document = sbom(stage, digest)
    pinned = stage.push("2.0", seed="legacy-pin")
    sbom(stage, pinned, "pinned")
    stage.config([stage.image("1.0"), stage.image("2.0", referrers=False)])
    first = stage.mirror("sync")
    assert (first.code, first.actions()) == (0, ["copied", "copied"]), first.stderr
    _, index = stage.dest_manifest(tag_schema_name(digest))
    assert [entry["digest"] for entry in index["manifests"]] == [document]
    assert stage.dest_digest(document) == document

    legacy = "sha256-" + pinned.removeprefix("sha256:")
    stage.tag_dest(pinned, legacy)  # an earlier mirror's pin tag, the tag schema's name
    stage.config([stage.image("1.0"), stage.image("2.0")])
    again = stage.mirror("sync", "--rescan-referrers")
    assert again.code == 0, again.stderr
    assert stage.dest_digest(legacy) == pinned  # kept: not overwritten with an index
    assert f"{legacy}: the tag holds the image {pinned} itself" in again.error


def test_repositories_mirror_creates_immutable_let_cosigns_tags_move(stage: Stage) -> None:
    digest = stage.push("1.0", seed="immutable")
    key = new_key()
    first_sig = sign(stage, digest, key)
    stage.config(
        [stage.image("1.0")],
        ecr={"repository_settings": {"tag_mutability": "IMMUTABLE"}},
    )
    run = stage.mirror("sync")
    assert run.code == 0, run.stderr
    repository = stage.ecr().describe_repositories(repositoryNames=[stage.dest_repo()])
    described = repository["repositories"][0]
    assert described["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    assert sorted(f["filter"] for f in described["imageTagMutabilityExclusionFilters"]) == [
        "sha256-*",
        "sha512-*",
    ]
    assert (
        f"created {stage.dest.host}/{stage.dest_repo()} with tag mutability "
        "IMMUTABLE_WITH_EXCLUSION (sha256-*, sha512-*)"
    ) in run.error
    assert stage.dest_digest(cosign_tag(digest)) == first_sig

    payloads = [key_signed(key, simple_signing(digest)), key_signed(new_key(), b"{}")]
    moved = attach_cosign(stage.source.host, stage.repo, digest, payloads).digest  # cosign adds
    again = stage.mirror("sync", "--rescan-referrers")
    assert again.code == 0, again.stderr
    assert stage.dest_digest(cosign_tag(digest)) == moved  # the .sig tag moved
    stage.push("1.0", seed="another")  # upstream moves 1.0: ECR keeps it immutable
    refused = stage.mirror("sync")
    assert refused.code == 1
    assert "the tag is immutable" in refused.stdout
