"""Layer reuse inside ECR (issue 18), end to end through the `mirror` command.

Images that share a base layer, each mirrored into its own repository with the default
--jobs (copies at once): with ECR's BLOB_MOUNTING on, the base is uploaded once and mounted
into the other repositories; with it off, every repository gets it uploaded and the run says
once how many bytes mounting would have saved. What the ECR-like front counted (bytes
uploaded, mounts) and what the Hub-like front counted (manifest GETs: pulls) are the proof;
no test waits on the clock: the order of the copies is left to the run, and every assertion
holds for any order.
"""

from __future__ import annotations

import json
import random
import re
import signal
from collections.abc import Sequence

import pytest

from mirror.mounts import ENABLE, size_text
from tests.stage import Stage, wait_until
from tests.standins.images import MANIFEST_TYPES, build_image

BASE = random.Random("test_mounts|base").randbytes(300_000)  # noqa: S311 - test data
OWN = (4096,)  # bytes of each image's own layer


def apps(count: int) -> list[str]:
    return [f"app{number}" for number in range(count)]


def blobs(
    name: str, platforms: Sequence[str] = ("linux/amd64",), base: Sequence[bytes] = (BASE,)
) -> dict[str, int]:
    """The blobs (not manifests) of image `name` as the stage pushes it, by digest: size."""
    _, built = build_image(platforms=platforms, layer_sizes=OWN, seed=name, base_layers=base)
    return {d: len(b.data) for d, b in built.items() if b.media_type not in MANIFEST_TYPES}


def shared(*images: dict[str, int]) -> dict[str, int]:
    """The blobs every one of `images` has: the base."""
    common = set(images[0]).intersection(*images[1:])
    return {digest: images[0][digest] for digest in common}


def push_apps(stage: Stage, count: int, **kwargs: object) -> list[str]:
    names = apps(count)
    for name in names:
        stage.push("1", repo=f"{stage.repo}/{name}", seed=name, layer_sizes=OWN,
                   base_layers=[BASE], **kwargs)  # fmt: skip
    stage.config([stage.image("1", repo=f"{stage.repo}/{name}") for name in names])
    return names


def test_with_mounting_on_the_shared_base_is_uploaded_once(stage: Stage) -> None:
    stage.use_ecr(blob_mounting=True)
    names = push_apps(stage, 4)
    each = [blobs(name) for name in names]
    base = sum(shared(*each).values())
    least = base + sum(sum(image.values()) - base for image in each)
    run = stage.mirror("sync")  # the default --jobs: four copies at once
    assert (run.code, run.actions()) == (0, ["copied"] * 4), run.stderr
    counts = stage.dest.counts
    assert counts.upload_bytes == least  # the base once, and each image's own blobs
    assert (counts.mounts, counts.mounted_bytes) == (3, 3 * base)
    assert run.report is not None
    mounted = sorted(image["mounted_bytes"] for image in run.report["images"])
    assert mounted == [0, base, base, base]  # one copy uploaded it, three mounted it
    assert run.report["blob_mounting"] == {
        stage.dest.host: {
            "mounts": 3,
            "mounted_bytes": 3 * base,
            "refused": False,
            "could_have_saved_bytes": 0,
            "error": None,
        }
    }
    line = (
        f"layers: {size_text(3 * base)} mounted from other repositories of {stage.dest.host} "
        "instead of uploaded (3 blobs)"
    )
    assert run.stderr.count(line) == 1, run.stderr
    # knowing the blobs cost no pull: one manifest GET per image, as skopeo alone made
    assert stage.hub.counts.manifest_get == 4
    assert run.report["rate_limit"][stage.hub.host]["spent"] == 4
    for name in names:
        assert stage.dest_digest("1", repo=f"{stage.repo}/{name}") == stage.source_digest(
            "1", repo=f"{stage.repo}/{name}"
        )


def test_with_mounting_off_every_repository_uploads_and_the_run_says_what_it_cost(
    stage: Stage,
) -> None:
    names = push_apps(stage, 4)  # the stage's ECR front: BLOB_MOUNTING off, ECR's default
    each = [blobs(name) for name in names]
    base = sum(shared(*each).values())
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"] * 4), run.stderr
    counts = stage.dest.counts
    assert counts.upload_bytes == sum(sum(image.values()) for image in each)
    assert counts.mounts == 0
    assert run.report is not None
    warning = (
        f"{stage.dest.host} does not mount layers across repositories (ECR's BLOB_MOUNTING "
        f"setting is off): mounting would have saved {size_text(3 * base)} of uploads in this "
        f"run; turn it on with `{ENABLE}`"
    )
    assert run.report["warnings"] == [warning]
    assert run.stderr.count(warning) == 1, run.stderr
    figures = run.report["blob_mounting"][stage.dest.host]
    assert (figures["refused"], figures["could_have_saved_bytes"], figures["mounts"]) == (
        True,
        3 * base,
        0,
    )
    assert [image["mounted_bytes"] for image in run.report["images"]] == [0] * 4
    assert stage.hub.counts.manifest_get == 4
    # the upload each refused mount started was cancelled
    refused = [path for method, path, status in counts.requests if "mount=" in path]
    assert refused and counts.mounts_refused >= 1
    assert counts.of("upload_delete", 204) >= 1


def test_with_mounting_off_a_copy_tried_again_counts_what_it_could_have_saved_once(
    stage: Stage,
) -> None:
    """ECR fails the second copy's manifest PUT once (503): that copy is tried again, and
    the base it had uploaded by then is counted once in what mounting would have saved."""
    names = push_apps(stage, 3)
    base = sum(shared(*[blobs(name) for name in names]).values())
    stage.dest.fail_next("manifest_put", every=2)  # the second copy's, whatever the order
    run = stage.mirror("sync", "--jobs", "1")
    assert (run.code, run.actions()) == (0, ["copied"] * 3), run.stderr
    assert stage.dest.counts.faulted["manifest_put"] == 1
    assert run.report is not None
    figures = run.report["blob_mounting"][stage.dest.host]
    assert (figures["refused"], figures["could_have_saved_bytes"]) == (True, 2 * base)
    assert f"mounting would have saved {size_text(2 * base)} of uploads" in run.stderr


def test_with_mounting_off_a_layer_the_repository_held_before_the_run_is_not_counted(
    stage: Stage,
) -> None:
    """Both images change their first layer; the second (BASE) is in both repositories since
    the first run: only the new layer is uploaded twice, and only it is what mounting would
    have saved."""
    old, new = (random.Random(f"test_mounts|{n}").randbytes(200_000) for n in ("old", "new"))  # noqa: S311
    names = apps(2)
    for tag, first_layer in (("1", old), ("2", new)):
        for name in names:
            stage.push(tag, repo=f"{stage.repo}/{name}", seed=name, layer_sizes=OWN,
                       base_layers=[first_layer, BASE])  # fmt: skip
    stage.config([stage.image("1", repo=f"{stage.repo}/{name}") for name in names])
    first = stage.mirror("sync")
    assert (first.code, first.actions()) == (0, ["copied"] * 2), first.stderr
    stage.config([stage.image("2", repo=f"{stage.repo}/{name}") for name in names])
    stage.dest.reset_counts()
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"] * 2), run.stderr
    before = [blobs(name, base=(old, BASE)) for name in names]
    now = [blobs(name, base=(new, BASE)) for name in names]
    uploaded = sum(
        sum(v for d, v in image.items() if d not in held)
        for image, held in zip(now, before, strict=True)
    )
    assert stage.dest.counts.upload_bytes == uploaded  # the new layer twice, the configs
    assert run.report is not None
    figures = run.report["blob_mounting"][stage.dest.host]
    fresh = sum(size for digest, size in shared(*now).items() if digest not in before[0])
    assert (figures["refused"], figures["could_have_saved_bytes"]) == (True, fresh)


def test_an_index_whole_and_a_platform_subset_mount_what_their_platforms_share(
    stage: Stage,
) -> None:
    stage.use_ecr(blob_mounting=True)
    both = ("linux/amd64", "linux/arm64")
    for name in apps(2):
        stage.push("1", repo=f"{stage.repo}/{name}", seed=name, layer_sizes=OWN,
                   base_layers=[BASE], platforms=both)  # fmt: skip
    whole = stage.image("1", repo=f"{stage.repo}/app0")
    subset = stage.image("1", repo=f"{stage.repo}/app1", platforms=["linux/arm64"])
    stage.config([whole, subset])
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied", "copied"]), run.stderr
    everything = blobs("app0", both)
    arm = blobs("app1", ("linux/arm64",))
    base = sum(shared(everything, arm).values())
    counts = stage.dest.counts
    assert counts.upload_bytes == sum(everything.values()) + sum(arm.values()) - base
    assert counts.mounts == 1
    assert run.report is not None
    assert run.report["blob_mounting"][stage.dest.host]["mounted_bytes"] == base
    # the index and both children of one, the index and the one child taken of the other
    assert stage.hub.counts.manifest_get == 5


def test_a_copy_that_fails_gives_its_uploads_to_the_copy_waiting(stage: Stage) -> None:
    """The copy uploading the base fails (ECR refuses an upload of it for good): the copy
    waiting for it does not wait for ever: it uploads the base itself (or mounts it, where
    the failed copy got it there first), and succeeds. Whichever started first: the other
    waits. (tests/test_layers.py pins who uploads what, without processes.)"""
    stage.use_ecr(blob_mounting=True)
    names = push_apps(stage, 2)
    stage.dest.fail_next("upload_start", status=403)
    run = stage.mirror("sync")
    assert sorted(run.actions()) == ["copied", "failed"], run.stderr
    assert run.report is not None
    copied = next(image for image in run.report["images"] if image["action"] == "copied")
    name = copied["destination"].rsplit("/", 1)[1].split(":")[0]
    assert name in names
    assert stage.dest_digest("1", repo=f"{stage.repo}/{name}") == stage.source_digest(
        "1", repo=f"{stage.repo}/{name}"
    )


def test_a_stop_ends_a_copy_waiting_for_another_copys_upload(stage: Stage) -> None:
    stage.use_ecr(blob_mounting=True)
    push_apps(stage, 2)
    log = stage.tmp / "stderr.log"
    report = stage.tmp / "stop-report.json"
    stage.hub.stall_blobs(after_bytes=1024)  # the first copy cannot end before the signal
    try:
        with log.open("w") as stderr:
            process = stage.popen("-v", "sync", "--report", str(report), stderr=stderr)
            wait_until(lambda: "waits for layers another copy" in log.read_text(), process)
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=60)
    finally:
        stage.hub.release()
    assert process.returncode == 143, log.read_text()
    written = json.loads(report.read_text())
    assert [image["action"] for image in written["images"]] == ["deferred", "deferred"]
    assert {image["error"] for image in written["images"]} == {"interrupted before it was done"}


@pytest.mark.parametrize(
    ("cap", "actions"), [(6, ["copied", "copied"]), (4, ["copied", "deferred"])]
)
def test_max_pulls_holds_while_the_blobs_of_indexes_are_read(
    stage: Stage, cap: int, actions: list[str]
) -> None:
    """Reading an index's children to know its blobs is the reading skopeo would do: within
    the pulls the copy was given, never past --max-pulls."""
    stage.use_ecr(blob_mounting=True)
    both = ("linux/amd64", "linux/arm64")
    for name in apps(2):
        stage.push("1", repo=f"{stage.repo}/{name}", seed=name, layer_sizes=OWN,
                   base_layers=[BASE], platforms=both)  # fmt: skip
    stage.config([stage.image("1", repo=f"{stage.repo}/{name}") for name in apps(2)])
    run = stage.mirror("sync", "--max-pulls", str(cap))
    assert sorted(run.actions()) == actions, run.stderr
    assert run.report is not None
    spent = run.report["rate_limit"][stage.hub.host]["spent"]
    assert stage.hub.counts.manifest_get == spent <= cap
    if "deferred" in actions:
        assert re.search(rf"--max-pulls {cap}: needs [23], 1 left", run.stdout), run.stdout
    else:
        assert spent == 6  # each index and its two children, once
        assert run.report["blob_mounting"][stage.dest.host]["mounts"] == 1


def test_repositories_created_with_kms_are_mounted_between_as_ecr_describes_their_keys(
    stage: Stage,
) -> None:
    """Two repositories mirror creates with `encryption: {type: KMS}` and no key: ECR picks
    the key (its AWS managed key; moto, here, one of each repository's own), so only what
    ECR then describes says whether a mount can work. Where the keys differ, no mount is
    tried, and the registry, whose BLOB_MOUNTING is on, is not said to have it off."""
    stage.use_ecr(blob_mounting=True)
    names = push_apps(stage, 3)
    images = [stage.image("1", repo=f"{stage.repo}/{name}") for name in names]
    for image in (images[0], images[2]):
        image["repository_settings"] = {"encryption": {"type": "KMS"}}
    stage.config(images)
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"] * 3), run.stderr
    described = {
        r["repositoryName"]: r["encryptionConfiguration"]
        for r in stage.ecr().describe_repositories()["repositories"]
    }
    kms = [described[stage.dest_repo(f"{stage.repo}/{name}")] for name in (names[0], names[2])]
    assert kms[0]["kmsKey"] != kms[1]["kmsKey"]  # the stand-in's keys: no mount between them
    assert stage.dest.counts.mounts_refused == 0
    assert run.report is not None
    figures = run.report["blob_mounting"][stage.dest.host]
    assert (figures["refused"], figures["could_have_saved_bytes"]) == (False, 0)
    assert "BLOB_MOUNTING" not in run.stderr
