"""mirror end to end against what the strict stand-ins can do and the kind ones could not.

Each test states what mirror should do when ECR or Docker Hub answers as they really do
(/work/shared/FACTS.md). Against the mirror of the time they were written, 13 of them failed
(ECR's 429 taken for the pull limit, exclusion filters ignored, the list form of the rate-limit
headers, one budget for two hosts, proxies, HEAD without digest or 405, ...); all pass now. A
test found failing later is marked xfail(strict=True) with a reason that says what mirror does
instead, until mirror is fixed.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.stage import Run, Stage
from tests.standins.ecr import EcrFront, repository_settings
from tests.standins.images import build_image, push_image
from tests.standins.proxy import ForwardProxy
from tests.standins.registry import get_manifest, manifest_digest

PLATFORMS = ("linux/amd64", "linux/arm64")


def said(run: Run) -> str:
    """What a run told: its stderr and the errors in its report (for assertion messages)."""
    errors = [image["error"] for image in (run.report or {}).get("images", [])]
    return f"{run.stderr}\nreport errors: {errors}"


def copied_once(stage: Stage, tag: str = "a", **push: Any) -> str:
    digest = stage.push(tag, seed=tag, **push)
    stage.config([stage.image(tag)])
    return digest


# --- ECR throttling is back-pressure, not Docker Hub's pull limit --------------------------------


def test_a_throttled_manifest_put_at_ecr_is_retried(stage: Stage) -> None:
    digest = copied_once(stage)
    stage.dest.throttle_next("manifest_put")
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"]), said(run)
    assert stage.dest_digest("a") == digest
    assert stage.dest.counts.throttled["manifest_put"] == 1


def test_a_throttled_upload_at_ecr_is_left_to_skopeo_s_own_retry(stage: Stage) -> None:
    stage.use_ecr(retry_after=0)  # skopeo retries at once: the test stays fast
    digest = copied_once(stage)
    stage.dest.throttle_next("upload_start")
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"]), said(run)
    assert stage.dest_digest("a") == digest
    assert stage.dest.counts.throttled["upload_start"] == 1


def test_a_throttled_head_at_ecr_is_retried(stage: Stage) -> None:
    digest = copied_once(stage)
    stage.dest.throttle_next("manifest_head")
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"]), said(run)
    assert stage.dest_digest("a") == digest
    assert "pull rate limit" not in run.stderr
    assert stage.dest.counts.throttled["manifest_head"] == 1


# --- ECR's other refusals -----------------------------------------------------------------------


def test_images_per_repository_quota_is_a_clear_failure(stage: Stage) -> None:
    copied_once(stage)
    stage.dest.fill_image_quota(limit=20_000)
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (1, ["failed"]), said(run)
    assert run.report is not None
    error = run.report["images"][0]["error"]
    assert "already has the maximum allowed number of images which is '20000'" in error
    assert stage.dest_digest("a") is None


def test_immutable_with_exclusion_moves_the_excluded_tag_only(stage: Stage) -> None:
    stage.create_dest_repo(**repository_settings("IMMUTABLE_WITH_EXCLUSION", ["latest"]))
    stage.push("latest", seed="one")
    first = stage.push("v1", seed="one")
    stage.config([stage.image("latest", "v1")])
    assert stage.mirror("sync").actions() == ["copied", "copied"]
    moved = stage.push("latest", seed="two")
    stage.push("v1", seed="two")
    run = stage.mirror("sync")
    assert run.actions() == ["copied", "failed"], said(run)
    assert (stage.dest_digest("latest"), stage.dest_digest("v1")) == (moved, first)


def test_mutable_with_exclusion_keeps_the_matching_tag(stage: Stage) -> None:
    stage.create_dest_repo(**repository_settings("MUTABLE_WITH_EXCLUSION", ["v*"]))
    first = stage.push("v1", seed="one", platforms=PLATFORMS)
    stage.config([stage.image("v1")])
    assert stage.mirror("sync").actions() == ["copied"]
    moved = stage.push("v1", seed="two", platforms=PLATFORMS)
    stage.dest.reset_counts()
    run = stage.mirror("sync")
    assert run.actions() == ["failed"], said(run)
    assert run.report is not None
    assert run.report["images"][0]["error"] == (
        f"{stage.dest.host}/{stage.dest_repo()}:v1 holds {first} and the tag is immutable in "
        f"{stage.dest_repo()}: not overwritten with {moved}"
    )
    assert stage.dest.counts.of("manifest_put") == 0


# --- Docker Hub as it really answers ----------------------------------------------------------


def test_rate_limit_headers_in_the_list_form_are_a_budget(stage: Stage) -> None:
    stage.use_hub(limit=100, rate_header_form="list")
    stage.hub.set_remaining(2)
    for tag in ("a", "b", "c"):
        stage.push(tag, seed=tag)
    stage.config([stage.image("a", "b", "c")])
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (75, ["copied", "copied", "deferred"]), said(run)
    assert run.report is not None
    assert run.report["rate_limit"] == {
        stage.hub.host: {
            "limit": 100,
            "remaining_at_start": 2,
            "remaining": 0,
            "spent": 2,
            "rate_limited": None,
        }
    }
    assert stage.hub.counts.status_429 == 0


def test_the_abuse_limit_is_not_taken_for_the_pull_limit(stage: Stage) -> None:
    """Docker Hub's abuse limit (a plain-text 429 with Retry-After, on any request) is not the
    pull limit, and the message must not say it is. That source's images wait for a later run."""
    copied_once(stage)
    stage.hub.abuse_limit(1, retry_after=60)
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (75, ["deferred"]), said(run)
    assert run.report is not None
    assert run.report["images"][0]["error"] == (
        f"{stage.hub.host}: too many requests (429): a limit on requests, not the pull limit; "
        "it asks to wait 60 s; run again later"
    )
    assert "pull rate limit" not in said(run)
    assert stage.hub.counts.abuse_429 == 1


def test_a_login_lockout_is_named(stage: Stage) -> None:
    stage.use_hub(credentials=("hubuser", "right"))
    copied_once(stage)
    stage.config(
        [stage.image("a")],
        source={"credentials": {"username_env": "HUB_USER", "password_env": "HUB_TOKEN"}},
    )
    stage.hub.lock_out("hubuser")
    run = stage.mirror("sync", HUB_USER="hubuser", HUB_TOKEN="right")
    assert run.code == 2, said(run)
    assert run.error == (
        f"mirror: {stage.hub.host}: login locked out after repeated failed logins (429: too many "
        "failed login attempts), for the credentials from $HUB_USER and $HUB_TOKEN: check the "
        "credentials, then wait about 10 minutes"
    )
    assert stage.hub.counts.token_locked == 1


@pytest.mark.parametrize("head", ["no-digest", "405"])
def test_a_source_without_digest_on_head_is_still_copied(stage: Stage, head: str) -> None:
    stage.use_hub(head=head)
    digest = copied_once(stage, platforms=PLATFORMS)
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"]), said(run)
    assert stage.dest_digest("a") == digest


def test_a_source_without_digest_on_head_is_not_copied_every_run(stage: Stage) -> None:
    stage.use_hub(head="no-digest")
    copied_once(stage, platforms=PLATFORMS)
    assert stage.mirror("sync").actions() == ["copied"]
    stage.hub.reset_counts()
    again = stage.mirror("sync")
    assert again.actions() == ["up-to-date"]
    assert stage.hub.counts.manifest_get_ok <= 1


def test_a_source_serving_other_bytes_by_tag_still_gives_the_announced_digest(
    stage: Stage,
) -> None:
    """A GET by tag may serve other bytes than the digest its HEAD announced (the same JSON
    re-serialised): a copy by tag would write another digest and look changed on every run.
    mirror copies by the announced digest, whose bytes the registry must serve unchanged."""
    stage.use_hub(mismatch_digest=True)
    announced = copied_once(stage, platforms=PLATFORMS)
    first = stage.mirror("sync")
    assert first.actions() == ["copied"], said(first)
    assert first.report is not None
    image = first.report["images"][0]
    assert image["source_digest"] == image["destination_digest"] == announced
    assert stage.dest_digest("a") == announced
    stage.hub.reset_counts()
    assert stage.mirror("sync").actions() == ["up-to-date"]
    assert stage.hub.counts.manifest_get == 0


def test_two_rate_limited_hosts_keep_their_own_budgets(stage: Stage) -> None:
    stage.use_hub(limit=100)
    stage.hub.set_remaining(0)
    other = stage.second_hub(limit=100)
    stage.push("a", seed="a")
    digest = stage.push("b", seed="b")
    stage.config(
        [
            stage.image("a"),
            {"source": f"{other.host}/{stage.repo}", "tags": ["b"], "repository": "other/b"},
        ]
    )
    run = stage.mirror("sync", "--jobs", "1")  # one order of HEADs: a deterministic outcome
    assert (run.code, run.actions()) == (75, ["deferred", "copied"]), said(run)
    assert manifest_digest(stage.backend.url, "other/b", "b", auth=stage.dest_auth) == digest
    assert (stage.hub.counts.manifest_get_ok, other.counts.manifest_get_ok) == (0, 1)
    assert other.remaining == 99


# --- proxies ---------------------------------------------------------------------------------


def test_mirror_and_skopeo_both_go_through_the_proxy(stage: Stage) -> None:
    digest = stage.push("a", seed="a")
    with ForwardProxy({"hub.proxied.test": "127.0.0.1"}) as proxy:
        source = f"hub.proxied.test:{stage.hub.port}"
        stage.config([stage.image("a")], source={"registry": source})
        stage.env.update(proxy.env(no_proxy="127.0.0.1"))  # ECR stays direct, on 127.0.0.1
        run = stage.mirror("sync")
        counts = proxy.counts
    assert (run.code, run.actions()) == (0, ["copied"]), said(run)
    assert stage.dest_digest("a") == digest
    assert ("HEAD", source, 200) in counts.requests  # mirror's own check went through it
    assert counts.hosts["hub.proxied.test"] >= 4


# --- more of the real world: a throttling storm, IMMUTABLE without digests, another account,
# --- Docker Official Images, header forms, retried pulls ----------------------------------------


def test_a_throttling_storm_over_a_first_sync_of_40_images_ends_with_exit_0(stage: Stage) -> None:
    stage.use_ecr(retry_after=0)  # skopeo's own retries go at once: the test stays fast
    digests = {}
    for number in range(40):
        top, blobs = build_image(platforms=("linux/amd64",), layer_sizes=(1024,), seed=f"s{number}")
        digests[f"t{number}"] = push_image(stage.source.host, stage.repo, f"t{number}", top, blobs)
    stage.config([stage.image(*digests)])
    # Every fifth request of each kind, four times a kind: whatever order the four jobs'
    # requests come in, each kind is throttled (a time window or a count shared by the kinds
    # left that to the timing of the machine).
    kinds = ("upload_start", "upload_patch", "upload_put", "manifest_put")
    for kind in kinds:
        stage.dest.throttle_next(kind, times=4, every=5)
    run = stage.mirror("sync", "--jobs", "4", timeout=300)
    assert (run.code, run.actions()) == (0, ["copied"] * 40), said(run)
    assert {tag: stage.dest_digest(tag) for tag in digests} == digests
    throttled = stage.dest.counts.throttled
    # Throttled requests of each kind: skopeo waited out those without a body itself (upload
    # start and finish), mirror tried again the copies it failed with (upload parts, manifests).
    assert {kind: throttled[kind] for kind in kinds} == dict.fromkeys(kinds, 4), throttled
    assert run.report is not None and run.report["throttled_requests"] >= throttled["manifest_put"]
    assert "pull rate limit" not in run.stdout + run.stderr


@pytest.mark.parametrize("head", ["no-digest", "405"])
def test_without_digests_on_head_an_immutable_tag_stays_up_to_date(stage: Stage, head: str) -> None:
    stage.use_hub(head=head, limit=100)
    stage.create_dest_repo(imageTagMutability="IMMUTABLE")
    digest = copied_once(stage)
    assert stage.mirror("sync").actions() == ["copied"]
    stage.hub.reset_counts()
    again = stage.mirror("sync")
    assert (again.code, again.actions()) == (0, ["up-to-date"]), said(again)
    assert stage.dest_digest("a") == digest
    assert again.report is not None
    assert (
        again.report["rate_limit"][stage.hub.host]["spent"] == 1
    )  # the GET the HEAD could not spare
    assert stage.hub.counts.manifest_get_ok == 1


def test_a_target_in_another_account_is_reached_at_its_own_host(stage: Stage) -> None:
    digest = stage.push("a", seed="a")
    account = "111122223333"
    host = f"{account}.dkr.ecr.us-east-1.amazonaws.com"
    with (
        EcrFront(stage.backend.url, stage.moto.url, account=account) as theirs,
        ForwardProxy({host: f"127.0.0.1:{theirs.port}"}) as proxy,
    ):
        stage.config(
            [stage.image("a")],
            ecr={"registry_id": account, "endpoint": None},  # the host is built, not given
        )
        stage.env.update(proxy.env(no_proxy="127.0.0.1"))
        run = stage.mirror("sync")
        counts = proxy.counts
    assert (run.code, run.actions()) == (0, ["copied"]), said(run)
    assert run.report is not None
    assert run.report["images"][0]["destination"] == f"{host}/{stage.dest_repo()}:a"
    assert stage.dest_digest("a") == digest
    assert counts.hosts[host] >= 3  # mirror's checks and skopeo's push went there
    assert stage.ecr_repositories(registry_id=account) == [stage.dest_repo()]


@pytest.mark.parametrize("family", ["oci", "docker"])
def test_docker_official_images_with_attestations_copy_whole_and_as_a_subset(
    stage: Stage, family: str
) -> None:
    stage.use_hub(limit=100)
    digest = stage.push("1", seed="doi", platforms=PLATFORMS, media_types=family, attestations=True)
    _, source_index = get_manifest(stage.source.url, stage.repo, "1")
    assert len(source_index["manifests"]) == 4  # two platforms, two attestations
    subset = {"source": stage.repo, "tags": ["1"], "repository": f"subset/{stage.repo}",
              "platforms": ["linux/arm64"]}  # fmt: skip
    stage.config([stage.image("1"), subset])
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied", "copied"]), said(run)
    assert stage.dest_digest("1") == digest  # whole: attestations and all, digest kept
    media_type, written = get_manifest(
        stage.backend.url, f"subset/{stage.repo}", "1", auth=stage.dest_auth
    )
    arm64 = [m for m in source_index["manifests"] if m["platform"]["architecture"] == "arm64"]
    assert written["manifests"] == arm64  # the platform's own digest; no attestation
    assert media_type == source_index["mediaType"]  # the index is of its children's family
    stage.hub.reset_counts()
    again = stage.mirror("sync")
    assert again.actions() == ["up-to-date", "up-to-date"]
    assert stage.hub.counts.manifest_get == 0


def test_rate_limit_headers_without_numbers_are_logged_not_a_budget(stage: Stage) -> None:
    stage.use_hub(limit=100, rate_header_form="empty")
    copied_once(stage)
    run = stage.mirror("sync", "-v")
    assert (run.code, run.actions()) == (0, ["copied"]), said(run)
    assert run.report is not None
    budget = run.report["rate_limit"].get(stage.hub.host, {"limit": None})
    assert budget["limit"] is None  # a pull was spent there, but no budget is known
    assert "rate-limit headers without a number" in run.stderr


def test_a_copy_tried_again_after_a_source_blob_fault_pulls_no_manifest_again(
    stage: Stage,
) -> None:
    stage.use_hub(limit=100)
    copied_once(stage)
    stage.hub.cut_blobs(100, times=1)  # the source drops a blob midway: the copy fails once
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"]), said(run)
    assert run.report is not None
    budget = run.report["rate_limit"][stage.hub.host]
    assert stage.hub.counts.blob_get == 3  # the cut blob was read twice
    assert budget["spent"] == 1 == stage.hub.counts.manifest_get_ok  # kept from the first try
    assert budget["remaining"] == stage.hub.remaining == 99


@pytest.mark.parametrize("dry_run", [False, True], ids=["sync", "dry-run"])
def test_a_repository_mirror_may_not_create_fails_before_any_pull(
    stage: Stage, dry_run: bool
) -> None:
    digest = stage.push("a", seed="a")
    stage.config([stage.image("a")], ecr={"create_repositories": False})
    stage.hub.reset_counts()
    run = stage.mirror("sync", *(["--dry-run"] if dry_run else []))
    assert (run.code, run.actions()) == (1, ["failed"]), said(run)
    assert run.report is not None
    repository = stage.dest_repo()
    assert run.report["images"][0]["error"] == (
        f"{stage.dest.host}/{repository}:a: no repository {repository} in ECR, and "
        "create_repositories is false: create it, or set create_repositories: true"
    )
    assert stage.hub.counts.manifest_get == 0  # no pull spent on a copy ECR would refuse
    assert stage.ecr_repositories() == []
    stage.create_dest_repo()  # once someone creates it, the same config copies into it
    again = stage.mirror("sync")
    assert (again.code, again.actions()) == (0, ["copied"]), said(again)
    assert stage.dest_digest("a") == digest
