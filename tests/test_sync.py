"""`mirror sync` end to end: real skopeo, real registries, moto, the Docker-Hub-like front."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.stage import Stage
from tests.standins.aws import ECR_PASSWORD


def test_first_sync_copies_with_digests_preserved_and_second_spends_no_pull(stage: Stage) -> None:
    single = stage.push("single", seed="s1")
    multi = stage.push("multi", platforms=("linux/amd64", "linux/arm64", "linux/arm/v7"), seed="m1")
    stage.config([stage.image("single", "multi")])

    first = stage.mirror("sync")
    assert first.code == 0, first.stderr
    assert first.actions() == ["copied", "copied"]
    assert stage.dest_digest("single") == single
    assert stage.dest_digest("multi") == multi
    media_type, index = stage.dest_manifest("multi")
    assert media_type == "application/vnd.oci.image.index.v1+json"
    assert len(index["manifests"]) == 3
    assert stage.ecr_repositories() == [stage.dest_repo()]
    assert first.report is not None
    assert first.report["images"][0] == {
        "source": f"{stage.hub.host}/{stage.repo}:single",
        "destination": f"{stage.dest.host}/{stage.dest_repo()}:single",
        "action": "copied",
        "source_digest": single,
        "destination_digest": single,
        "error": None,
        "seconds": first.report["images"][0]["seconds"],
        "verified": None,  # no verify gate
        "mounted_bytes": 0,  # no other repository holds a blob of it
        "referrers": {"copied": [], "already_there": 0, "deferred": None, "error": None},
    }  # its referrers were looked for: it has none
    assert first.report["summary"] == {"copied": 2}
    assert stage.hub.counts.manifest_get_ok >= 2  # skopeo pulled both (plus children)

    stage.hub.reset_counts()
    second = stage.mirror("sync")
    assert second.code == 0, second.stderr
    assert second.actions() == ["up-to-date", "up-to-date"]
    counts = stage.hub.counts
    assert counts.manifest_get == 0
    assert counts.blob_get == 0
    assert counts.manifest_head == 2
    assert "2 up-to-date" in second.stdout


def test_a_changed_tag_is_copied_again(stage: Stage) -> None:
    stage.push("t", seed="old")
    stage.config([stage.image("t")])
    assert stage.mirror("sync").code == 0
    new = stage.push("t", seed="new")
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"])
    assert stage.dest_digest("t") == new


def test_dry_run_looks_but_writes_nothing(stage: Stage) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    run = stage.mirror("sync", "--dry-run")
    assert (run.code, run.actions()) == (0, ["would-copy"])
    assert stage.dest_digest("a") is None
    assert stage.ecr_repositories() == []
    counts = stage.hub.counts
    assert (counts.manifest_get, counts.blob_get, counts.manifest_head) == (0, 0, 1)


def test_one_failure_does_not_stop_the_others(stage: Stage) -> None:
    digest = stage.push("here", seed="h")
    stage.config([stage.image("missing", "here")])
    run = stage.mirror("sync", "--jobs", "1")
    assert run.code == 1
    assert run.actions() == ["failed", "copied"]
    assert run.report is not None
    assert run.report["images"][0]["error"] == (
        f"{stage.hub.host}/{stage.repo}:missing: tag not found on the source"
    )
    assert stage.dest_digest("here") == digest


def test_no_credential_in_any_argv_and_no_file_left(stage: Stage) -> None:
    """While skopeo copies, no process's command line holds the ECR or Docker Hub password."""
    hub_password = "hub-secret-7f3a"
    front = stage.use_hub(credentials=("hubuser", hub_password), delay=0.05)
    stage.push("big", layer_sizes=(3_000_000, 2_000_000), seed="big")
    stage.config(
        [stage.image("big")],
        source={"credentials": {"username_env": "HUB_USER", "password_env": "HUB_TOKEN"}},
    )
    process = stage.popen("sync", HUB_USER="hubuser", HUB_TOKEN=hub_password)
    seen_skopeo = False
    while process.poll() is None:
        for cmdline in _all_cmdlines():
            assert ECR_PASSWORD not in cmdline
            assert hub_password not in cmdline
            seen_skopeo = seen_skopeo or ("skopeo" in cmdline and "copy" in cmdline)
        time.sleep(0.01)
    stdout, stderr = process.communicate()
    assert process.returncode == 0, stderr
    assert seen_skopeo, "the copy ended before it could be watched"
    assert front.counts.token_anonymous == 0  # the configured credentials were used
    for text in (stdout, stderr):
        assert hub_password not in text and ECR_PASSWORD not in text
    locks = f"mirror-locks-{os.geteuid()}"  # the private directory of the default lock
    left = [p.name for p in Path(stage.env["TMPDIR"]).iterdir() if p.name != locks]
    assert left == []  # the private auth directory is gone (the lock file holds only a PID)


def _all_cmdlines() -> list[str]:
    lines = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                raw = Path(f"/proc/{pid}/cmdline").read_bytes()
                lines.append(raw.replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
    return lines


def test_tags_of_one_image_cost_one_pull(stage: Stage) -> None:
    """3.3, 3.3-slim and latest point at one image: it is pulled once, then retagged in ECR."""
    digest = stage.push("3.3", platforms=("linux/amd64", "linux/arm64"), seed="one")
    for alias in ("3.3-slim", "latest"):
        stage.push(alias, platforms=("linux/amd64", "linux/arm64"), seed="one")
    other = stage.push("3.2", seed="two")
    stage.config([stage.image("3.3", "3.3-slim", "3.2", "latest")])
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"] * 4), run.stderr
    assert stage.hub.counts.manifest_get_ok == 3 + 1  # the index and its 2 platforms, once
    assert [stage.dest_digest(t) for t in ("3.3", "3.3-slim", "latest", "3.2")] == [digest] * 3 + [
        other
    ]
    stage.push("edge", platforms=("linux/amd64", "linux/arm64"), seed="one")
    stage.config([stage.image("3.3", "edge")])
    stage.hub.reset_counts()
    again = stage.mirror("sync")
    assert again.actions() == ["up-to-date", "copied"]  # filled from 3.3, already in ECR
    assert stage.hub.counts.manifest_get == 0
    assert stage.dest_digest("edge") == digest


def test_each_registry_is_introduced_by_one_get_v2_and_no_check_waits_for_a_401(
    stage: Stage,
) -> None:
    """Issue 18: a registry's first request taught the others how to ask (401, token, the
    request again: three round trips while every other check waited); one `GET /v2/` does."""
    for repo in ("a/one", "a/two"):
        for tag in ("1", "2", "3"):
            stage.push(tag, repo=repo, seed=f"{repo}-{tag}")
    stage.config([stage.image("1", "2", "3", repo=repo) for repo in ("a/one", "a/two")])
    assert stage.mirror("sync").code == 0
    stage.hub.reset_counts()
    stage.dest.reset_counts()

    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["up-to-date"] * 6), run.stderr
    source = stage.hub.counts.requests
    assert [r for r in source if r[1] == "/v2/"] == [("GET", "/v2/", 401)]
    assert [r for r in source if r[2] == 401] == [("GET", "/v2/", 401)]
    assert stage.hub.counts.manifest_head == 6
    destination = stage.dest.counts.requests
    assert [r for r in destination if r[1] == "/v2/"] == [("GET", "/v2/", 401)]
    assert [r for r in destination if r[2] == 401] == [("GET", "/v2/", 401)]
