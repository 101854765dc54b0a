"""Pull budget and failure safety end to end: budgets, 429s, faults, locks, signals, credentials."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import boto3
import pytest

from mirror import lock
from tests.stage import Stage, wait_until


@pytest.fixture
def limited(stage: Stage) -> Stage:
    """The stage with a Docker-Hub-like front that has a pull budget (100 until set)."""
    stage.use_hub(limit=100)
    return stage


def three_images(stage: Stage) -> list[str]:
    digests = [stage.push(tag, seed=tag) for tag in ("a", "b", "c")]
    stage.config([stage.image("a", "b", "c")])
    return digests


def test_budget_smaller_than_the_work_copies_in_order_and_defers_the_rest(limited: Stage) -> None:
    digests = three_images(limited)
    limited.hub.set_remaining(2)
    first = limited.mirror("sync")
    assert first.code == 75, first.stderr
    assert first.actions() == ["copied", "copied", "deferred"]
    assert first.report is not None
    host = limited.hub.host
    assert first.report["images"][2]["error"] == (
        f"{host}: pull budget: needs 1, 0 left of 100; run again later"
    )
    assert first.report["rate_limit"] == {
        host: {
            "limit": 100,
            "remaining_at_start": 2,
            "remaining": 0,
            "spent": 2,
            "rate_limited": None,
        }
    }
    assert f"pull budget of {host}: 2 of 100 left at the start, 0 at the end" in first.stderr
    counts = limited.hub.counts
    assert (counts.manifest_get, counts.status_429) == (2, 0)

    limited.hub.reset_counts()
    limited.hub.set_remaining(10)
    second = limited.mirror("sync")
    assert (second.code, second.actions()) == (0, ["up-to-date", "up-to-date", "copied"])
    assert limited.hub.counts.manifest_get == 1
    assert [limited.dest_digest(tag) for tag in ("a", "b", "c")] == digests


def test_max_pulls_caps_a_run(limited: Stage) -> None:
    three_images(limited)
    run = limited.mirror("sync", "--max-pulls", "1")
    assert (run.code, run.actions()) == (75, ["copied", "deferred", "deferred"])
    assert limited.hub.counts.manifest_get == 1


def test_multi_arch_estimate_never_runs_into_a_429(limited: Stage) -> None:
    limited.push("m", platforms=("linux/amd64", "linux/arm64"), seed="m")
    limited.push("s", seed="s")
    limited.config([limited.image("m", "s")])
    limited.hub.set_remaining(3)  # exactly the index and its two platforms
    run = limited.mirror("sync", "--jobs", "1")
    assert run.code == 75, run.stderr
    assert run.actions() == ["copied", "deferred"]
    assert limited.hub.counts.status_429 == 0


def test_budget_zero_from_the_start_makes_no_get(limited: Stage) -> None:
    three_images(limited)
    limited.hub.set_remaining(0)
    run = limited.mirror("sync")
    assert (run.code, run.actions()) == (75, ["deferred"] * 3)
    counts = limited.hub.counts
    assert (counts.manifest_get, counts.blob_get, counts.manifest_head) == (0, 0, 3)
    assert limited.dest_digest("a") is None


def test_429_inside_a_copy_stops_at_once(limited: Stage) -> None:
    three_images(limited)
    limited.hub.fail_next(429, kind="manifest_get", times=100)  # budget says yes, the source no
    run = limited.mirror("sync", "--jobs", "1")
    assert run.code == 75, run.stderr
    assert run.actions() == ["deferred"] * 3
    assert run.report is not None
    assert run.report["images"][0]["error"] == (
        f"{limited.hub.host}: pull rate limit reached (429 TOOMANYREQUESTS); run again later"
    )
    # The relay's pull met the 429 (skopeo never sees it: it would retry five times over
    # 30 s); the copy ended at once and no other copy was started after it.
    assert limited.hub.counts.status_429 == 1


def test_5xx_then_success(stage: Stage) -> None:
    digest = stage.push("a", seed="a")
    stage.config([stage.image("a")])
    stage.hub.fail_next(503, kind="manifest_head", times=2)  # urllib3 retries the HEAD
    stage.hub.fail_next(500, kind="blob")  # the relay's GET of the blob is tried again
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"])
    assert stage.dest_digest("a") == digest
    statuses = [status for _, _, status in stage.hub.counts.requests]
    assert statuses.count(503) == 2 and statuses.count(500) == 1


def test_permanent_failures_are_not_retried(stage: Stage) -> None:
    stage.config([stage.image("nope")])
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (1, ["failed"])
    assert stage.hub.counts.manifest_head == 1


def test_source_cut_mid_copy_never_leaves_a_half_image(stage: Stage) -> None:
    old = stage.push("t", seed="old", layer_sizes=(200_000,))
    stage.config([stage.image("t")])
    assert stage.mirror("sync").code == 0
    new = stage.push("t", seed="new", layer_sizes=(2_000_000, 1_000_000))
    stage.hub.cut_blobs(100_000)  # every blob GET breaks after 100 kB
    cut = stage.mirror("sync")
    assert (cut.code, cut.actions()) == (1, ["failed"])
    assert cut.report is not None
    assert "(after 3 attempts)" in cut.report["images"][0]["error"]
    assert stage.dest_digest("t") == old  # the tag still points at the old, whole image
    pulled = stage.tmp / "pulled"
    assert _pull(stage, pulled) == 0  # and every blob of it is there

    stage.hub.clear_faults()
    repaired = stage.mirror("sync")
    assert (repaired.code, repaired.actions()) == (0, ["copied"])
    assert stage.dest_digest("t") == new


def _pull(stage: Stage, target: Path) -> int:

    from tests.standins.images import skopeo_policy_file, write_auth_file

    auth = write_auth_file(stage.tmp / "pull-auth.json", stage.dest.host, *stage.dest_auth)
    return subprocess.run(
        [
            "skopeo",
            "--policy",
            str(skopeo_policy_file(stage.tmp)),
            "copy",
            "--authfile",
            str(auth),
            "--src-tls-verify=false",
            f"docker://{stage.dest.host}/{stage.dest_repo()}:t",
            f"dir:{target}",
        ],
        capture_output=True,
        check=False,
    ).returncode


def test_immutable_repository(stage: Stage) -> None:
    client = boto3.client("ecr", region_name="us-east-1", endpoint_url=stage.moto.url)
    client.create_repository(repositoryName=stage.dest_repo(), imageTagMutability="IMMUTABLE")
    first = stage.push("v1", seed="one")
    stage.config([stage.image("v1")])
    assert stage.mirror("sync").actions() == ["copied"]
    again = stage.mirror("sync")
    assert (again.code, again.actions()) == (0, ["up-to-date"])
    moved = stage.push("v1", seed="two")
    refused = stage.mirror("sync")
    assert (refused.code, refused.actions()) == (1, ["failed"])
    assert refused.report is not None
    assert refused.report["images"][0]["error"] == (
        f"{stage.dest.host}/{stage.dest_repo()}:v1 holds {first} and the tag is immutable "
        f"in {stage.dest_repo()}: not overwritten with {moved}"
    )
    assert stage.dest_digest("v1") == first


def test_a_second_run_exits_75_while_a_mirror_run_holds_the_lock(stage: Stage) -> None:
    stage.push("a", seed="a")
    stage.push("b", seed="b")
    scratch = Path(stage.env["TMPDIR"])
    mine = stage.tmp / "my.lock"
    for tag, args in (("a", ()), ("b", ("--lock-file", str(mine)))):
        config = stage.config([stage.image(tag)])
        digest = hashlib.sha256(str(config.resolve()).encode()).hexdigest()[:16]
        path = mine if args else scratch / f"mirror-locks-{os.geteuid()}" / f"mirror-{digest}.lock"
        stage.hub.hold()  # the first run holds the lock while its copy waits
        heads = stage.hub.counts.manifest_head
        first = stage.popen("sync", *args)
        try:  # it has the lock once it checks its image
            wait_until(functools.partial(_heads_over, stage, heads), first)
            run = stage.mirror("sync", *args)
        finally:
            stage.hub.release()
            first.communicate(timeout=60)
        assert run.code == 75, run.stderr
        assert run.error == (
            f"mirror: another mirror run (PID {first.pid}) holds {path}; try again later"
        )
        assert path.read_bytes() == lock.MARK  # the holder's file is untouched
        assert first.returncode == 0
    heads = stage.hub.counts.manifest_head
    assert stage.mirror("sync").code == 0  # free again
    assert stage.hub.counts.manifest_head == heads + 1


def test_a_lock_held_by_a_process_that_is_not_mirror_is_not_another_run(stage: Stage) -> None:
    stage.config([stage.image("a")])
    path = stage.tmp / "my.lock"
    with lock.held(path):  # this test's own process: python -m pytest
        run = stage.mirror("sync", "--lock-file", str(path))
    assert run.code == 2, run.stderr
    assert run.error.startswith(f"mirror: --lock-file {path}: held by PID {os.getpid()} (")
    assert run.error.endswith(
        "which is not a mirror run: mirror does not wait on it; find out why it holds the "
        "lock, or name another lock file"
    )
    assert stage.hub.counts.manifest_head == 0


def _heads_over(stage: Stage, heads: int) -> bool:
    return stage.hub.counts.manifest_head > heads


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_copy_stops_children_cleans_up_and_reports(
    stage: Stage, signum: int, code: int
) -> None:
    stage.push("a", seed="a", layer_sizes=(500_000,) * 4)
    stage.push("b", seed="b")
    stage.config([stage.image("a", "b")])
    report = stage.tmp / "signal-report.json"
    # The copy cannot end before the signal, however busy the machine: its manifests pass
    # (mirror reads them before skopeo starts, to know the blobs), its first blob stalls.
    stage.hub.stall_blobs(1000)
    try:
        process = stage.popen("sync", "--jobs", "1", "--report", str(report))
        scratch = stage.env["TMPDIR"]
        deadline = time.monotonic() + 30
        while not _skopeo_children(scratch, f"{stage.repo}:a"):  # the first copy is under way
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "skopeo never started"
            time.sleep(0.02)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=20)
    finally:
        stage.hub.release()
    assert process.returncode == code, stderr
    assert _skopeo_children(scratch) == []
    locks = f"mirror-locks-{os.geteuid()}"  # the private directory of the default lock
    assert [p.name for p in Path(scratch).iterdir() if p.name != locks] == []
    written = json.loads(report.read_text())
    assert [image["action"] for image in written["images"]] == ["deferred", "deferred"]
    assert written["images"][0]["error"] == "interrupted before it was done"


def _skopeo_children(scratch: str, argument: str = "") -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "skopeo" in cmdline and scratch in cmdline and argument in cmdline:
                found.append(pid)
    return found


def test_wrong_docker_hub_credentials_are_one_clear_error(stage: Stage) -> None:
    stage.use_hub(credentials=("hubuser", "right"))
    three_images(stage)
    stage.config(
        [stage.image("a", "b", "c")],
        source={"credentials": {"username_env": "HUB_USER", "password_env": "HUB_TOKEN"}},
    )
    run = stage.mirror("sync", HUB_USER="hubuser", HUB_TOKEN="Sekr1t-Wr0ng")
    assert run.code == 2
    assert run.error == (
        f"mirror: {stage.hub.host}: the token service refused the credentials from $HUB_USER "
        "and $HUB_TOKEN (check the credentials)"
    )
    assert "Sekr1t-Wr0ng" not in run.stderr + run.stdout
    assert "hubuser" not in run.stderr + run.stdout
    assert run.actions() == ["failed"] * 3  # the report tells this run, not an earlier one
    counts = stage.hub.counts
    assert (counts.token, counts.manifest_head, counts.manifest_get) == (1, 0, 0)


def test_credentials_from_secrets_manager(stage: Stage) -> None:
    stage.use_hub(credentials=("hubuser", "s3cret-from-sm"))
    digest = stage.push("a", seed="a")
    client = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=stage.moto.url)
    client.create_secret(
        Name="mirror/dockerhub",
        SecretString=json.dumps({"username": "hubuser", "password": "s3cret-from-sm"}),
    )
    stage.config(
        [stage.image("a")], source={"credentials": {"secrets_manager": "mirror/dockerhub"}}
    )
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"]), run.stderr
    assert stage.dest_digest("a") == digest
    counts = stage.hub.counts
    # mirror's token only: skopeo copies through the relay and never holds a source credential
    assert (counts.token_anonymous, counts.token_authenticated) == (0, 1)


def test_missing_secret_is_a_setup_error(stage: Stage) -> None:
    stage.config([stage.image("a")], source={"credentials": {"secrets_manager": "nope"}})
    run = stage.mirror("sync")
    assert run.code == 2
    assert run.error.startswith("mirror: cannot read secret nope: ")


def test_wrong_credentials_are_one_error_also_when_every_image_is_a_tag_rule(stage: Stage) -> None:
    stage.use_hub(credentials=("hubuser", "right"))
    stage.push("1.0", seed="a")
    stage.config(
        [{"source": stage.repo, "tags": {"newest": 1}}],
        source={"credentials": {"username_env": "HUB_USER", "password_env": "HUB_TOKEN"}},
    )
    run = stage.mirror("sync", HUB_USER="hubuser", HUB_TOKEN="wrong-one")
    assert run.code == 2, run.stderr
    assert run.error == (
        f"mirror: {stage.hub.host}: the token service refused the credentials from $HUB_USER "
        "and $HUB_TOKEN (check the credentials)"
    )
    assert stage.hub.counts.tags_list == 0
