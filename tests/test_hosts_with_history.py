"""Hosts with history (issue 16): a build host as it is after years of use.

An old `docker login` in the user's home, a credential helper cron cannot find, no writable or
no free temporary directory, two runs racing on the same immutable tags, a clock behind the
registry's during a long copy. Each test asserts what the source counted. Against the mirror
before the source relay, each of them failed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.stage import Run, Stage
from tests.standins.tls import Authority

PLATFORMS = ("linux/amd64", "linux/arm64")


def said(run: Run) -> str:
    errors = [image["error"] for image in (run.report or {}).get("images", [])]
    return f"{run.stderr}\nreport errors: {errors}"


def auth(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))


# --- an old docker login, a credential helper cron cannot find --------------------------------


HISTORIES = ["docker-config", "containers-auth", "xdg-runtime", "docker-config-env", "helpers"]


def leave_history(stage: Stage, history: str, home: Path) -> dict[str, str]:
    """What a user left on the host; returns the environment of the cron job that runs mirror."""
    revoked = {"auths": {stage.hub.host: auth("olduser", "revoked-token")}}
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}  # cron's bare environment
    if history == "docker-config":
        write_json(home / ".docker" / "config.json", revoked)
    elif history == "containers-auth":
        write_json(home / ".config" / "containers" / "auth.json", revoked)
    elif history == "xdg-runtime":
        write_json(home / "run" / "containers" / "auth.json", revoked)
        env["XDG_RUNTIME_DIR"] = str(home / "run")
    elif history == "docker-config-env":
        write_json(home / "docker" / "config.json", revoked)
        env["DOCKER_CONFIG"] = str(home / "docker")
    else:  # helpers that are not on cron's PATH, for the source and for ECR itself
        helpers = {stage.hub.host: "desktop", stage.dest.host: "ecr-login"}
        write_json(home / ".docker" / "config.json", {"credHelpers": helpers, "credsStore": "pass"})
    return env


@pytest.mark.parametrize("history", HISTORIES)
def test_an_old_login_on_the_host_leaves_an_anonymous_source_anonymous(
    stage: Stage, history: str
) -> None:
    stage.use_hub(limit=100, credentials=("olduser", "new-token"))  # the old token was revoked
    digest = stage.push("a", seed="a")
    stage.config([stage.image("a")])
    stage.env.update(leave_history(stage, history, stage.tmp / "home"))
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"]), said(run)
    assert stage.dest_digest("a") == digest
    counts = stage.hub.counts
    assert (counts.token_failed, counts.token_authenticated) == (0, 0)  # never a failed login
    assert counts.manifest_get == 1


# --- no writable, or no free, temporary directory -------------------------------------------


@contextlib.contextmanager
def tmpfs(where: Path, *options: str) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(("size=64k", *options)), "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def full(directory: Path) -> None:
    with contextlib.suppress(OSError), (directory / "filler").open("wb") as filler:
        while True:
            filler.write(b"\0" * 4096)
            filler.flush()


def test_a_read_only_tmpdir_is_exit_2_naming_it_with_a_report(stage: Stage) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    with tmpfs(stage.tmp / "ro", "ro") as read_only:
        run = stage.mirror(
            "sync", "--lock-file", str(stage.tmp / "sync.lock"), TMPDIR=str(read_only)
        )
    message = (
        f"cannot write in the temporary directory {read_only} (Read-only file system): mirror "
        "keeps skopeo's auth file and signature policy there; set TMPDIR to a writable "
        "directory with some free space"
    )
    assert (run.code, run.actions()) == (2, ["failed"]), said(run)
    assert message in run.error
    assert run.report is not None and run.report["error"] == message
    assert stage.hub.counts.manifest_get == 0


def test_a_full_tmpdir_is_exit_2_naming_it_for_the_lock_and_for_skopeo(stage: Stage) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    with tmpfs(stage.tmp / "full") as small:
        full(small)
        locked = stage.mirror("sync", TMPDIR=str(small))
        given = stage.mirror("sync", "--lock-file", str(stage.tmp / "sync.lock"), TMPDIR=str(small))
    assert (locked.code, locked.actions()) == (2, ["failed"]), said(locked)
    assert re.search(
        rf"lock file \(by default in \$TMPDIR, else /tmp; --lock-file names another\) "
        rf"{re.escape(str(small))}/mirror-locks-\d+/mirror-[0-9a-f]+\.lock: cannot create it: "
        "No space left on "
        "device",
        locked.error,
    ), locked.error
    assert (given.code, given.actions()) == (2, ["failed"]), said(given)
    assert f"cannot write in the temporary directory {small} (No space left on device)" in (
        given.error
    )
    assert stage.hub.counts.manifest_get == 0


def test_read_only_tmp_and_var_tmp_without_tmpdir_are_exit_2_naming_tmp(stage: Stage) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    report = Path("/dev/shm") / f"{stage.repo.replace('/', '-')}.json"  # outside /tmp
    script = (
        "mount --bind /tmp /tmp && mount -o remount,bind,ro /tmp && "
        'mount --bind /var/tmp /var/tmp && mount -o remount,bind,ro /var/tmp && exec "$@"'
    )
    command = [
        "unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
        *stage.command("sync", "-c", str(stage.tmp / "mirror.yaml"), "--report", str(report)),
    ]  # fmt: skip
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **stage.env, "TMPDIR": ""},
            cwd="/",
            check=False,
        )
        if "unshare failed" in done.stderr or "mount: " in done.stderr:
            pytest.skip(f"cannot make a private mount namespace here: {done.stderr.strip()}")
        document = json.loads(report.read_text())
    finally:
        report.unlink(missing_ok=True)
    assert done.returncode == 2, done.stderr
    assert re.search(
        r"cannot make the lock directory /tmp/mirror-locks-\d+: Read-only file system \(it is "
        r"in the temporary directory: set TMPDIR to a writable one, or give --lock-file\)",
        done.stderr,
    ), done.stderr
    assert document["exit_code"] == 2
    assert document["error"].startswith("cannot make the lock directory /tmp/mirror-locks-")
    assert stage.hub.counts.manifest_get == 0


# --- two runs racing on the same immutable tags ----------------------------------------------


def wait_for(condition: Any, what: str, limit: float = 60.0) -> None:
    end = time.monotonic() + limit
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


def test_two_runs_racing_on_immutable_tags_both_end_well(stage: Stage) -> None:
    stage.use_hub(limit=100)
    stage.create_dest_repo(imageTagMutability="IMMUTABLE")
    single = stage.push("a", seed="a")
    index = stage.push("m", seed="m", platforms=PLATFORMS)
    stage.config([stage.image("a", "m")])
    stage.hub.hold()  # both runs check, then wait at their first pull
    runs = []
    for name in ("one", "two"):
        runs.append(
            stage.popen(
                "sync",
                "--lock-file",
                str(stage.tmp / f"{name}.lock"),
                "--report",
                str(stage.tmp / f"{name}.json"),
            )
        )
    try:
        wait_for(lambda: stage.hub.held == 4, "both runs waiting for both images")
    finally:
        stage.hub.release()
    actions = []
    for name, process in zip(("one", "two"), runs, strict=True):
        _, stderr = process.communicate(timeout=120)
        document = json.loads((stage.tmp / f"{name}.json").read_text())
        assert process.returncode == 0, f"{stderr}\n{document['images']}"
        actions.append([image["action"] for image in document["images"]])
    for image in zip(*actions, strict=True):  # one run wrote each tag; the other found it
        assert sorted(image) == ["copied", "up-to-date"], actions
    assert (stage.dest_digest("a"), stage.dest_digest("m")) == (single, index)
    assert stage.hub.counts.manifest_get == 2 * (1 + 1 + len(PLATFORMS))  # each run's own


# --- a long copy, with the machine's clock behind the registry's -----------------------------


def test_a_token_that_expires_during_a_copy_is_renewed_and_a_far_clock_named(
    stage: Stage,
) -> None:
    stage.use_hub(limit=100, clock_offset=30)  # the machine's clock is 30 s behind the hub's
    digest = stage.push("a", seed="a")
    stage.config([stage.image("a")])
    stage.hub.hold()
    report = stage.tmp / "report.json"
    process = stage.popen("sync", "--report", str(report))
    try:
        wait_for(lambda: stage.hub.held == 1, "the copy waiting for its pull")
        stage.hub.expire_tokens()  # a long copy: its token ran out meanwhile
    finally:
        stage.hub.release()
    _, stderr = process.communicate(timeout=120)
    document = json.loads(report.read_text())
    assert process.returncode == 0, f"{stderr}\n{document['images']}"
    assert [image["action"] for image in document["images"]] == ["copied"]
    assert stage.dest_digest("a") == digest
    counts = stage.hub.counts
    assert (counts.manifest_get, counts.token_anonymous) == (1, 2)  # a fresh token, no new pull
    clock = re.compile(
        rf"this machine's clock is (29|30|31) s behind {re.escape(stage.hub.host)}'s \(its Date "
        r"header\): tokens and certificates are judged by clocks; set the clock right \(NTP\)"
    )
    assert any(clock.fullmatch(warning) for warning in document["warnings"]), document
    assert clock.search(stderr), stderr


# --- a source behind a private certificate authority ----------------------------------------


def test_a_source_behind_a_private_ca_is_copied_with_ssl_cert_file_and_named_without(
    stage: Stage,
) -> None:
    """A company registry whose certificate a private CA signed: trusted through
    SSL_CERT_FILE, it is read over HTTPS by mirror (skopeo reads the relay); not trusted, the
    message says which host and what to do, not Python's SSL error."""
    authority = Authority(stage.tmp)
    stage.use_hub(limit=100, tls=authority.server_context())
    digest = stage.push("a", seed="a", platforms=PLATFORMS)
    stage.config([stage.image("a")], source={"tls_verify": True})

    untrusted = stage.mirror("sync")
    assert (untrusted.code, untrusted.actions()) == (1, ["failed"]), said(untrusted)
    assert untrusted.report is not None
    assert untrusted.report["images"][0]["error"] == (
        f"{stage.hub.host}: its TLS certificate is not trusted (unable to get local issuer "
        "certificate): if a private CA signed it, set SSL_CERT_FILE to a file that holds the "
        "CA's certificate (or tls_verify: false, which checks nothing)"
    )
    assert stage.hub.counts.manifest_get == 0

    run = stage.mirror("sync", SSL_CERT_FILE=str(authority.ca_file))
    assert (run.code, run.actions()) == (0, ["copied"]), said(run)
    assert stage.dest_digest("a") == digest
    assert stage.hub.counts.manifest_get == 3  # the index and two platforms, once each
    assert run.report is not None and run.report["rate_limit"][stage.hub.host]["spent"] == 3
