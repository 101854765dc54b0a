"""Pins end to end through `ensure` and `sync`, what skopeo's children see, and a config with
no images."""

from __future__ import annotations

import os
import time
from pathlib import Path

from mirror import skopeo
from tests.stage import Stage
from tests.standins.aws import ECR_PASSWORD


def pin(digest: str) -> str:
    return "pin-sha256-" + digest.removeprefix("sha256:")


def test_a_pinned_reference_never_moves_whatever_later_runs_do(stage: Stage) -> None:
    old = stage.push("1.0", seed="old")
    stage.config([stage.image("1.0")])
    destination = f"{stage.dest.host}/{stage.dest_repo()}"

    pinned = stage.mirror("ensure", f"{stage.repo}:1.0@{old}")
    assert pinned.code == 0, pinned.stderr
    assert pinned.stdout == f"{destination}:1.0@{old}\n"
    assert stage.dest_digest(pin(old)) == old
    assert stage.dest_digest("1.0") is None  # ensure of a pin moves no tag

    new = stage.push("1.0", seed="new")  # upstream moves the tag
    moved = stage.mirror("ensure", f"{stage.repo}:1.0")
    assert moved.stdout == f"{destination}:1.0\n"
    assert stage.mirror("sync").code == 0
    assert stage.dest_digest("1.0") == new
    assert stage.dest_digest(pin(old)) == old  # still tagged: no lifecycle rule expires it

    again = stage.mirror("ensure", f"{stage.repo}:1.0@{old}")
    assert again.stdout == f"{destination}:1.0@{old}\n"
    assert again.actions() == ["up-to-date"]


def test_a_pin_tag_of_an_earlier_mirror_is_kept_as_it_is(stage: Stage) -> None:
    """An earlier mirror tagged pins `sha256-<hex>`, the referrers tag schema's name. Now the
    pin tag is `pin-sha256-<hex>`, written inside ECR at no pull; the old tag is left alone."""
    digest = stage.push("1.0", seed="legacy")
    stage.config([stage.image("1.0")])
    assert stage.mirror("sync").code == 0
    legacy = "sha256-" + digest.removeprefix("sha256:")
    stage.tag_dest(digest, legacy)  # what the earlier mirror left
    stage.config([stage.image(f"1.0@{digest}")])
    stage.hub.reset_counts()
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["up-to-date", "copied"]), run.stderr
    assert run.report is not None
    assert run.report["images"][1]["destination"].endswith(f":{pin(digest)}")
    assert stage.dest_digest(pin(digest)) == digest
    assert stage.dest_digest(legacy) == digest  # kept, not moved, not deleted
    assert stage.hub.counts.requests == []  # written from ECR's copy: not a request


def test_a_digest_only_name_comes_out_with_its_digest(stage: Stage) -> None:
    digest = stage.push("x", seed="x")
    stage.config()
    run = stage.mirror("ensure", f"{stage.repo}@{digest}")
    assert run.code == 0, run.stderr
    assert run.stdout == f"{stage.dest.host}/{stage.dest_repo()}@{digest}\n"


def test_pins_keep_their_digest_in_every_format(stage: Stage) -> None:
    base = stage.push("base", seed="base")
    tool = stage.push("tool", seed="tool")
    stage.config()
    dockerfile = stage.tmp / "Dockerfile"
    dockerfile.write_text(
        f"ARG BASE={stage.repo}:base@{base}\n"
        "FROM $BASE\n"
        f"COPY --from={stage.repo}:tool@{tool} /x /x\n"
    )
    destination = f"{stage.dest.host}/{stage.dest_repo()}"
    refs = stage.mirror("ensure", "--dockerfile", str(dockerfile))
    assert refs.stdout.splitlines() == [f"{destination}:base@{base}", f"{destination}:tool@{tool}"]
    rewritten = stage.mirror("ensure", "--dockerfile", str(dockerfile), "--format", "dockerfile")
    assert rewritten.stdout == (
        f"ARG BASE={stage.repo}:base@{base}\n"
        f"FROM {destination}:base@{base}\n"
        f"COPY --from={destination}:tool@{tool} /x /x\n"
    )
    args = stage.mirror("ensure", "--dockerfile", str(dockerfile), "--format", "build-args")
    assert args.stdout == f"--build-arg BASE={destination}:base@{base}\n"


def test_skopeo_children_get_a_minimal_environment(stage: Stage) -> None:
    stage.use_hub(credentials=("hubuser", "Hub-Token-77"), delay=0.3)
    stage.push("a", seed="a", layer_sizes=(300_000,) * 4)
    stage.config(
        [stage.image("a")],
        source={"credentials": {"username_env": "HUB_USER", "password_env": "HUB_TOKEN"}},
    )
    process = stage.popen(
        "sync", HUB_USER="hubuser", HUB_TOKEN="Hub-Token-77", AWS_SECRET_ACCESS_KEY="Aws-Key-99",
        HTTPS_PROXY="", NO_PROXY="*", LC_ALL="C.UTF-8", UNRELATED="visible?",
    )  # fmt: skip
    seen: dict[str, str] = {}
    deadline = time.monotonic() + 30
    while not seen and process.poll() is None and time.monotonic() < deadline:
        seen = _skopeo_environment(stage.env["TMPDIR"])
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert seen, "never saw skopeo running"
    assert {name for name in seen if not name.startswith("LC_")} <= set(skopeo.CHILD_ENV)
    assert {"PATH", "HOME", "TMPDIR", "NO_PROXY", "LC_ALL"} <= set(seen)
    assert not {name for name in seen if name.startswith(("AWS_", "HUB_", "DOCKER"))}
    for secret in ("Hub-Token-77", "Aws-Key-99", "testing", ECR_PASSWORD, "visible?"):
        assert secret not in "".join(seen.values())
    assert "Hub-Token-77" not in stdout + stderr


def _skopeo_environment(scratch: str) -> dict[str, str]:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"skopeo" not in cmdline or scratch.encode() not in cmdline:
                continue
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        pairs = (item.partition(b"=") for item in environ.split(b"\0") if item)
        return {key.decode(): value.decode() for key, _, value in pairs}
    return {}


def test_sync_over_a_config_with_no_images_warns(stage: Stage) -> None:
    stage.config([])
    run = stage.mirror("sync")
    assert run.code == 0
    assert "mirror: nothing to mirror: the config lists no images" in run.error
