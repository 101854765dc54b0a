"""A hostile local user on the build host, end to end: root runs `mirror` (as from cron) while
another user, `mirror-neighbour`, works in the same /tmp-like directory (mode 1777) and tries
to take the lock or to choose the files root writes.

The second user is real: .ci/setup creates it (so does the fixture, when missing), and the
commands run as it with `runuser`. These tests need root, as CI and .ci/test have; without it
they fail rather than skip, since a skipped test would hide the feature.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.stage import Stage

NEIGHBOUR = "mirror-neighbour"


@dataclass
class Neighbour:
    name: str
    uid: int
    shared: Path  # a directory like /tmp: mode 1777, where both users write

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", self.name, "--", *command],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )

    def start(self, *command: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["runuser", "-u", self.name, "--", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )


@pytest.fixture
def neighbour(stage: Stage) -> Iterator[Neighbour]:
    if os.geteuid() != 0:
        pytest.fail("these tests play two users: run them as root (CI and .ci/test do)")
    try:
        entry = pwd.getpwnam(NEIGHBOUR)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", NEIGHBOUR],
            check=True,
        )
        entry = pwd.getpwnam(NEIGHBOUR)
    shared = Path(tempfile.mkdtemp(prefix="mirror-shared-", dir="/tmp"))
    shared.chmod(0o1777)
    stage.env["TMPDIR"] = str(shared)  # root's temporary directory is the shared one
    try:
        yield Neighbour(NEIGHBOUR, entry.pw_uid, shared)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def _old_default_lock(stage: Stage, shared: Path) -> Path:
    """Where mirror put the default lock before: straight in the temporary directory."""
    config = (stage.tmp / "mirror.yaml").resolve()
    return shared / f"mirror-{hashlib.sha256(str(config).encode()).hexdigest()[:16]}.lock"


def _holding(neighbour: Neighbour, path: Path) -> subprocess.Popen[str]:
    """The neighbour holds a flock on `path` (creating it if it can) until stopped."""
    holder = neighbour.start(
        "flock", "--nonblock", str(path), "sh", "-c", "echo held; exec sleep 60"
    )
    assert holder.stdout is not None
    line = holder.stdout.readline()
    assert line == "held\n", holder.communicate()
    return holder


def _stop(holder: subprocess.Popen[str]) -> None:
    os.killpg(holder.pid, 9)
    holder.communicate()


def test_a_neighbour_cannot_take_the_default_lock(stage: Stage, neighbour: Neighbour) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    holder = _holding(neighbour, _old_default_lock(stage, neighbour.shared))
    try:
        run = stage.mirror("sync")
    finally:
        _stop(holder)
    assert (run.code, run.actions()) == (0, ["copied"]), run.stderr
    private = neighbour.shared / f"mirror-locks-{os.geteuid()}"
    info = private.lstat()
    assert (info.st_uid, info.st_mode & 0o7777) == (0, 0o700)
    tried = neighbour.run("touch", str(private / "x.lock"))
    assert tried.returncode != 0  # the neighbour cannot put anything there


def test_a_lock_directory_the_neighbour_made_first_is_refused(
    stage: Stage, neighbour: Neighbour
) -> None:
    stage.config([stage.image("a")])
    private = neighbour.shared / f"mirror-locks-{os.geteuid()}"
    assert neighbour.run("mkdir", "-m", "0777", str(private)).returncode == 0
    run = stage.mirror("sync")
    assert run.code == 2, run.stderr
    assert run.error == (
        f"mirror: the lock directory {private} belongs to user {neighbour.name} (uid "
        f"{neighbour.uid}), not to this user: another user made it; remove it (or give "
        "--lock-file)"
    )
    assert run.report is not None and run.report["exit_code"] == 2
    assert stage.hub.counts.manifest_head == 0


def test_a_lock_file_the_neighbour_holds_is_not_another_mirror_run(
    stage: Stage, neighbour: Neighbour
) -> None:
    stage.config([stage.image("a")])
    path = neighbour.shared / "sync.lock"
    path.touch(mode=0o644)  # as README says: a lock needs no write access
    holder = _holding(neighbour, path)
    try:
        run = stage.mirror("sync", "--lock-file", str(path))
    finally:
        _stop(holder)
    assert run.code == 2, run.stderr
    assert re.match(rf"mirror: --lock-file {path}: held by PID \d+ \('flock --nonblock ", run.error)
    assert run.error.endswith(
        f"user {neighbour.name} (uid {neighbour.uid})), which is not a mirror run: mirror does "
        "not wait on it; find out why it holds the lock, or name another lock file"
    )


@pytest.mark.parametrize("option", ["--report", "--junit"])
def test_a_neighbours_symlink_never_chooses_the_file_root_writes(
    stage: Stage, neighbour: Neighbour, option: str
) -> None:
    stage.config([stage.image("a")])
    victim = stage.tmp / "private" / "victim"  # where the neighbour may not write itself
    victim.parent.mkdir(mode=0o700)
    link = neighbour.shared / "out.file"
    assert neighbour.run("ln", "-s", str(victim), str(link)).returncode == 0
    run = stage.mirror("sync", option, str(link), report=False)
    assert (run.code, run.error) == (
        2,
        f"mirror: {option} {link}: {link} is a symbolic link of user {neighbour.name} (uid "
        f"{neighbour.uid}), another user: not followed (it would choose the file mirror "
        "writes)",
    )
    assert not victim.exists()


def test_a_report_the_neighbour_made_writable_is_replaced_by_roots_own(
    stage: Stage, neighbour: Neighbour
) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    report = neighbour.shared / "report.json"
    assert neighbour.run("install", "-m", "0666", "/dev/null", str(report)).returncode == 0
    run = stage.mirror("sync", "--report", str(report), report=False)
    assert run.code == 0, run.stderr
    info = report.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (0, 0o644)
    rewrite = neighbour.run("sh", "-c", f'echo "{{}}" > {report}')
    assert rewrite.returncode != 0
    assert report.read_text().startswith("{\n")
    assert '"copied"' in report.read_text()


def _listening_ports(pid: int) -> set[int]:
    """The loopback TCP ports process `pid` listens on (its relay), from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and inode in inodes and local.startswith("0100007F:"):
            ports.add(int(local.split(":")[1], 16))
    return ports


_IDLE_CONNECTIONS = """
import socket, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
held = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
print("connected", flush=True)
time.sleep(120)
"""


def test_a_neighbours_idle_connections_to_the_relay_stall_nothing(
    stage: Stage, neighbour: Neighbour
) -> None:
    """The relay listens on 127.0.0.1, where every user can connect: connections that send
    nothing (more than the relay serves at once) must not keep skopeo waiting."""
    stage.push("a", seed="a")
    stage.push("b", seed="b")
    stage.config([stage.image("a", "b")])
    stage.hub.hold()
    process = stage.popen("sync", "--jobs", "1")
    idle = None
    try:
        while not stage.hub.held:  # the first copy reads through the relay now
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        (port,) = _listening_ports(process.pid)
        idle = neighbour.start("python3", "-c", _IDLE_CONNECTIONS, str(port), "300")
        assert idle.stdout is not None
        assert idle.stdout.readline() == "connected\n", idle.communicate()
        stage.hub.release()
        _, err = process.communicate(timeout=90)
    finally:
        stage.hub.release()
        if process.poll() is None:
            process.kill()
            process.communicate()
        if idle is not None:
            _stop(idle)
    assert process.returncode == 0, err
    assert (
        f"mirror's relay refused a connection from user {neighbour.name} (uid {neighbour.uid}): "
        "only this run's skopeo may use it"
    ) in err
    assert stage.dest_digest("a") == stage.source_digest("a")
    assert stage.dest_digest("b") == stage.source_digest("b")
