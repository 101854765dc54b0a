"""Watchable, bounded runs end to end: lines as images settle, keep going, truthful reports,
output paths checked first, bounded waits, signals in every phase, the debug log."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import queue
import re
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import urllib3

from mirror import cli, lock
from mirror.cli import exit_code_text
from mirror.errors import EXIT_CODES
from mirror.http import Http
from mirror.model import Settings
from mirror.registry import Registry
from tests.stage import ROOT, TIMESTAMP, Stage, help_text
from tests.standins.aws import ECR_PASSWORD
from tests.standins.misbehaving import (
    Answer,
    Raw,
    Scripted,
    drops,
    never_answers,
    refusing,
    trickles,
)
from tests.standins.registry import MANIFEST_ACCEPT

# --- streaming -----------------------------------------------------------------------------------


def _stdout_lines(process: subprocess.Popen[str]) -> queue.Queue[str | None]:
    """stdout's lines as they come (None at the end), read by a thread."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _read_until(lines: queue.Queue[str | None], wanted: Callable[[list[str]], bool]) -> list[str]:
    """Lines from ``lines`` until ``wanted`` holds for those read (or stdout ends)."""
    seen: list[str] = []
    while not wanted(seen):
        line = lines.get(timeout=60)
        if line is None:
            break
        seen.append(line)
    return seen


def _rest(lines: queue.Queue[str | None]) -> list[str]:
    return _read_until(lines, lambda seen: False)


def test_each_image_line_appears_as_it_settles_not_at_the_end(stage: Stage) -> None:
    stage.push("fast1", seed="fast1")
    stage.push("fast2", seed="fast2")
    stage.push("slow", seed="slow")
    slow = stage.second_hub()
    slow.hold()  # the slow image's copy waits until both fast lines have been read
    stage.config(
        [
            {
                "source": f"{slow.host}/{stage.repo}",
                "tags": ["slow"],
                "repository": "mirror/slow",
            },
            stage.image("fast1", "fast2"),
        ]
    )
    process = stage.popen("sync")
    lines = _stdout_lines(process)
    early = _read_until(lines, lambda seen: sum(":fast" in line for line in seen) == 2)
    assert process.poll() is None, "the run ended before the slow image was let through"
    slow.release()
    late = _rest(lines)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    texts = [TIMESTAMP.sub("", line) for line in early + late]
    assert [text.split()[0] for text in texts] == ["copied", "copied", "copied", "3"]
    assert len(early) == 2, "the fast images' lines came only at the end"
    assert texts[2].startswith(f"copied      {slow.host}/{stage.repo}:slow")  # finished last
    assert texts[-1].startswith("3 copied (3 images in ")  # the summary is last
    assert all(TIMESTAMP.match(line) for line in early + late)  # off a terminal: timestamped


def test_report_keeps_config_order_whatever_order_the_work_finished_in(stage: Stage) -> None:
    stage.push("fast", seed="fast")
    stage.push("slow", seed="slow2")
    slow = stage.second_hub()
    slow.hold()
    stage.config(
        [
            {"source": f"{slow.host}/{stage.repo}", "tags": ["slow"], "repository": "mirror/s"},
            stage.image("fast"),
        ]
    )
    report = stage.tmp / "report.json"
    process = stage.popen("sync", "--log-format", "json", "--report", str(report))
    lines = _stdout_lines(process)
    early = _read_until(lines, lambda seen: len(seen) == 1)
    slow.release()
    late = _rest(lines)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    events = [json.loads(line) for line in early + late]
    assert [e.get("source", "").rsplit(":", 1)[-1] for e in events[:2]] == ["fast", "slow"]
    assert events[-1]["event"] == "summary"
    images = json.loads(report.read_text())["images"]
    assert [i["source"].rsplit(":", 1)[1] for i in images] == ["slow", "fast"]


def test_status_line_on_a_terminal_only(stage: Stage) -> None:
    stage.push("a", seed="a")
    stage.push("b", seed="b")
    stage.config([stage.image("a", "b")])
    leader, follower = pty.openpty()
    process = stage.popen("sync", stderr=follower, COLUMNS="200")
    os.close(follower)
    seen = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 30)
        assert ready, "no output on the terminal"
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        seen += chunk
    process.communicate(timeout=30)
    os.close(leader)
    terminal = seen.decode()
    assert process.returncode == 0
    assert re.search(r"\r\x1b\[K\[\d/2\] \d copied · \d up to date", terminal), terminal
    assert "\r\x1b[K[2/2] 2 copied · 0 up to date" in terminal
    assert terminal.endswith("\r\x1b[K")  # removed at the end
    piped = stage.mirror("sync")  # stderr is a pipe here: no status line, no carriage return
    assert "\r" not in piped.stderr and "·" not in piped.stderr


# --- keep going ----------------------------------------------------------------------------------


def test_a_tag_rule_that_cannot_be_resolved_fails_only_its_image(stage: Stage) -> None:
    digest = stage.push("1.0", seed="good")
    stage.config(
        [
            {"source": f"{stage.repo}-missing", "tags": {"match": r"\d+"}},
            stage.image("1.0"),
        ]
    )
    run = stage.mirror("sync")
    assert run.code == 1, run.stderr
    assert run.report is not None
    first, second = run.report["images"]
    assert (first["action"], second["action"]) == ("failed", "copied")
    assert first["source"] == f"{stage.hub.host}/{stage.repo}-missing"
    assert first["error"].startswith(
        f"tag rule: {stage.hub.host}/{stage.repo}-missing (tag list): access denied "
        "(401 UNAUTHORIZED: authentication required): the repository does not exist"
    )
    assert stage.dest_digest("1.0") == digest


# --- reports tell the truth ----------------------------------------------------------------------


def test_a_run_that_stops_early_replaces_the_previous_report(stage: Stage) -> None:
    stage.use_hub(credentials=("hubuser", "right"))
    stage.push("a", seed="a")
    stage.config(
        [stage.image("a")],
        source={"credentials": {"username_env": "HUB_USER", "password_env": "HUB_TOKEN"}},
    )
    good = stage.mirror(
        "sync", "--junit", str(stage.tmp / "junit.xml"), HUB_USER="hubuser", HUB_TOKEN="right"
    )
    assert good.actions() == ["copied"]
    bad = stage.mirror(
        "sync", "--junit", str(stage.tmp / "junit.xml"), HUB_USER="hubuser", HUB_TOKEN="bad"
    )
    assert bad.code == 2
    assert bad.report is not None
    assert bad.report["error"] == (
        f"{stage.hub.host}: the token service refused the credentials from $HUB_USER and "
        "$HUB_TOKEN (check the credentials)"
    )
    assert bad.report["exit_code"] == 2
    assert bad.actions() == ["failed"]
    assert 'failures="1"' in (stage.tmp / "junit.xml").read_text()

    stage.hub.fail_next(429, kind="token")
    limited = stage.mirror("sync", HUB_USER="hubuser", HUB_TOKEN="right")
    assert (limited.code, limited.actions()) == (75, ["deferred"])


def test_a_config_error_still_leaves_a_report(stage: Stage) -> None:
    (stage.tmp / "mirror.yaml").write_text("images: [{source: ruby, tags: [3.3], nope: 1}]\n")
    run = stage.mirror("sync")
    assert run.code == 2
    assert run.report is not None
    assert run.report.pop("started") == run.report.pop("ended")  # ISO-8601 UTC: ends at once
    assert run.report == {
        "exit_code": 2,
        "error": f"{stage.tmp / 'mirror.yaml'}: images[0].nope: unknown key "
        "(expected one of: source, tags, repository, platforms, repository_settings, referrers, "
        "verify)",
        "images": [],
        "summary": {},
        "warnings": [],
        "rate_limit": {},
        "blob_mounting": {},
        "throttled_requests": 0,
        "seconds": 0.0,
    }


def test_registry_text_is_printed_on_one_line(stage: Stage) -> None:
    forged = "bad\n2026-01-01T00:00:00.000Z 99 copied (99 images in 0.1s)\x1b[2J"

    def script(method: str, path: str) -> Answer:
        return Answer.json(400, {"errors": [{"code": "DENIED", "message": forged}]})

    with Scripted(script) as liar:
        stage.config(
            [{"source": f"{liar.host}/x/y", "tags": {"newest": 1}, "repository": "mirror/x"}]
        )
        run = stage.mirror("sync")
    assert run.code == 1
    out = run.stdout.splitlines()
    assert len(out) == 2  # the image's line and the summary: nothing forged
    assert "bad\\n2026-01-01T00:00:00.000Z 99 copied" in out[0]
    assert "\\x1b[2J" in out[0] and "\x1b" not in run.stdout
    assert re.fullmatch(TIMESTAMP.pattern + r"1 failed \(1 image in [\d.]+s\)", out[1])


# --- output paths checked first ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "path", "message"),
    [
        ("--report", "missing/report.json", "--report {p}: directory {d} does not exist"),
        ("--report", ".", "--report {p}: is a directory; name a file"),
        ("--junit", ".", "--junit {p}: is a directory; name a file"),
        ("--report", "/proc/report.json", "--report {p}: cannot write in /proc: "),
        ("--lock-file", "missing/sync.lock", "--lock-file {p}: directory {d} does not exist"),
        ("--lock-file", ".", "--lock-file {p}: is a directory; name a file in it"),
        ("--lock-file", "/proc/sync.lock", "--lock-file {p}: cannot create it: "),
    ],
)
def test_unusable_output_paths_are_usage_errors_before_anything_is_done(
    stage: Stage, option: str, path: str, message: str
) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    where = Path(path) if path.startswith("/") else stage.tmp / path
    given = str(where) if path != "." else str(stage.tmp)
    run = stage.mirror("sync", option, given, report=False)
    assert run.code == 2, run.stderr
    expected = message.format(p=given, d=where.parent.resolve())
    assert run.error.startswith(f"mirror: {expected}"), run.error
    assert len(run.error.splitlines()) == 1
    assert stage.ecr_repositories() == []
    assert stage.hub.counts.requests == []


def test_a_lock_file_that_is_not_a_lock_is_refused_and_left_byte_for_byte(stage: Stage) -> None:
    stage.push("a", seed="a")
    config = stage.config([stage.image("a")])
    before = config.read_bytes()
    run = stage.mirror("sync", "--lock-file", str(config))
    assert run.code == 2
    assert run.error == (
        f"mirror: --lock-file {config}: exists and is not a mirror lock file; name another path "
        "(mirror never writes into a file it did not create)"
    )
    assert config.read_bytes() == before
    assert stage.ecr_repositories() == []


def test_empty_and_old_lock_files_are_used_as_they_are(stage: Stage) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    for content in (b"", b"12345\n"):
        path = stage.tmp / "sync.lock"
        path.write_bytes(content)
        run = stage.mirror("sync", "--lock-file", str(path))
        assert run.code == 0, run.stderr
        assert path.read_bytes() == content


def test_a_new_lock_file_is_written_once_whole(stage: Stage) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    path = stage.tmp / "new.lock"
    assert stage.mirror("sync", "--lock-file", str(path)).code == 0
    assert path.read_bytes() == lock.MARK


# --- bounded -------------------------------------------------------------------------------------


def test_a_tags_list_that_links_back_to_itself_ends_within_seconds(stage: Stage) -> None:
    def script(method: str, path: str) -> Answer:
        if "/tags/list" in path:
            link = '</v2/x/y/tags/list?n=1000&last=b>; rel="next"'
            return Answer.json(200, {"name": "x/y", "tags": ["a", "b"]}, Link=link)
        if path == "/v2/":
            return Answer.json(200, {})
        return Answer.json(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "no"}]})

    with Scripted(script) as looping:
        stage.config(
            [{"source": f"{looping.host}/x/y", "tags": {"match": "b"}, "repository": "mirror/x"}]
        )
        run = stage.mirror("sync", timeout=30)
        pages = sum("/tags/list" in path for _, _, path in looping.requests)
    assert pages == 2
    assert run.report is not None
    (warning,) = run.report["warnings"]
    assert warning == (
        f"images[0] ({looping.host}/x/y): the tags list of {looping.host}/x/y links back to a page "
        "already read (/v2/x/y/tags/list?n=1000&last=b): stopped after 2 pages, 2 tags"
    )
    assert warning in run.error


@pytest.mark.parametrize(
    ("behaviour", "why"),
    [
        (never_answers, "no answer within 2 s"),
        (trickles(0.5), "no answer within 2 s"),
        (drops, "connection closed without an answer"),
    ],
    ids=["never-answers", "trickles", "drops"],
)
def test_a_destination_that_does_not_answer_costs_one_time_out_not_one_per_tag(
    stage: Stage, behaviour: object, why: str
) -> None:
    tags = [f"t{number}" for number in range(16)]
    stage.push("t0", seed="t")
    with Raw(behaviour) as dead:  # type: ignore[arg-type]
        stage.config([stage.image(*tags)], ecr={"endpoint": dead.host})
        # One time-out per tag, even sixteen at once, would take past the 30 s hang guard.
        run = stage.mirror("sync", "--timeout", "2", timeout=30)
    assert run.code == 1, run.stderr
    assert run.actions() == ["failed"] * 16
    assert run.report is not None
    errors = [image["error"] for image in run.report["images"]]
    assert all(error.startswith(f"{dead.host}: {why}") for error in errors), errors
    asked = [
        error for error in errors if not error.endswith("(earlier in this run; not asked again)")
    ]
    assert len(asked) <= 1, f"each tag waited out its own time-out: {asked}"


def test_a_refused_destination_fails_every_tag_at_once(stage: Stage) -> None:
    tags = [f"t{number}" for number in range(16)]
    with refusing() as host:
        stage.config([stage.image(*tags)], ecr={"endpoint": host})
        run = stage.mirror("sync", timeout=30)
    assert run.actions() == ["failed"] * 16
    assert run.report is not None
    assert run.report["images"][0]["error"].startswith(f"{host}: ")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_against_an_unresponsive_destination_ends_the_run_within_seconds(
    stage: Stage, signum: int, code: int
) -> None:
    stage.push("a", seed="a")
    with Raw(never_answers) as dead:
        stage.config([stage.image("a", "b", "c")], ecr={"endpoint": dead.host})
        report = stage.tmp / "stopped.json"
        process = stage.popen("sync", "--report", str(report))  # the default 30 s time-out
        took, stderr = _signal_once(process, lambda: dead.connections > 0, signum)
    assert process.returncode == code, stderr
    assert took < Settings().grace, f"{took:.1f} s from the signal to the exit"
    written = json.loads(report.read_text())
    assert [image["action"] for image in written["images"]] == ["deferred"] * 3
    assert written["exit_code"] == code


def test_a_signal_while_stdout_does_not_drain_still_leaves_the_report(stage: Stage) -> None:
    tags = [f"t{number}" for number in range(40)]
    _alias(stage, stage.push("t0", seed="t"), tags)
    stage.config([stage.image(*tags)])
    first = stage.mirror("sync")  # every tag in place: the next run is all up to date
    assert first.code == 0, first.stderr
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, 1031, 4096)  # F_SETPIPE_SZ: one page, far less than the lines
    report = stage.tmp / "late.json"
    process = stage.popen(
        "sync", "--report", str(report), "--log-format", "json",
        stdout=write_end, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(write_end)
    # Once the report is written, all work is done and stdout still full.
    took, _ = _signal_once(process, report.exists)
    os.close(read_end)
    assert process.returncode == 143
    assert took < cli.DRAIN_AFTER_SIGNAL + Settings().grace
    written = json.loads(report.read_text())
    assert [image["action"] for image in written["images"]] == ["up-to-date"] * 40


def _alias(stage: Stage, digest: str, tags: list[str]) -> None:
    """Tag the source image `digest` under every tag in `tags` (a manifest PUT each)."""
    url = f"{stage.source.url}/v2/{stage.repo}/manifests"
    answer = urllib3.request("GET", f"{url}/{digest}", headers={"Accept": MANIFEST_ACCEPT})
    media_type = answer.headers["Content-Type"]
    for tag in tags:
        put = urllib3.request(
            "PUT", f"{url}/{tag}", body=answer.data, headers={"Content-Type": media_type}
        )
        assert put.status == 201, put.data


def test_a_killed_runs_workspace_is_removed_by_the_next_run(stage: Stage) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    scratch = Path(stage.env["TMPDIR"])
    left = scratch / "mirror-leftover"
    left.mkdir(mode=0o700)
    (left / "auth.json").write_text('{"auths": {}}')
    dead = subprocess.Popen(["true"])
    dead.wait()
    (left / "owner").write_text(f"{dead.pid} 1\n")
    alive = scratch / "mirror-alive"
    alive.mkdir(mode=0o700)
    (alive / "owner").write_text(f"{os.getpid()} {_started(os.getpid())}\n")
    assert stage.mirror("sync").code == 0
    assert not left.exists()
    assert alive.exists()  # a running process's workspace is left alone


def test_a_killed_runs_skopeo_dies_with_it(stage: Stage) -> None:
    stage.push("a", seed="a")
    slow = stage.second_hub()
    # skopeo's blob read stalls: the copy is in flight when mirror is killed (its manifests
    # pass: mirror reads them before skopeo starts, to know the blobs)
    slow.stall_blobs(1000)
    stage.config([{"source": f"{slow.host}/{stage.repo}", "tags": ["a"], "repository": "k/a"}])
    process = stage.popen("sync")
    deadline = time.monotonic() + 30
    while not (children := _children(process.pid, "skopeo", argument="copy")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "skopeo never started"
        time.sleep(0.05)
    process.kill()
    process.communicate(timeout=10)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in children):
        assert time.monotonic() < deadline, f"skopeo {children} outlived the killed run"
        time.sleep(0.05)
    slow.release()
    again = stage.mirror("sync")  # takes the lock, removes the leftover workspace, copies
    assert (again.code, again.actions()) == (0, ["copied"]), again.stderr
    assert not list(Path(stage.env["TMPDIR"]).glob("mirror-*/owner"))


def _children(parent: int, name: str, *, argument: str = "") -> list[int]:
    """The PIDs of `parent`'s children called `name` (from /proc/PID/stat) with `argument`
    among their arguments (`copy`: not the `skopeo --version` probe)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            arguments = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        wanted = not argument or argument.encode() in arguments
        if ppid == parent and comm == name and wanted:
            found.append(int(stat.parent.name))
    return found


def _started(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]


# --- the debug log -------------------------------------------------------------------------------


def test_verbose_logs_requests_tokens_and_skopeo_but_no_secret(stage: Stage) -> None:
    stage.use_hub(credentials=("hubuser", "hub-Secret-42"), limit=100)
    stage.push("a", seed="a")
    stage.config(
        [stage.image("a")],
        source={"credentials": {"username_env": "HUB_USER", "password_env": "HUB_TOKEN"}},
    )
    run = stage.mirror("sync", "-v", HUB_USER="hubuser", HUB_TOKEN="hub-Secret-42")
    assert run.code == 0, run.stderr
    log = run.error
    host = re.escape(stage.hub.host)
    assert re.search(rf"mirror: HEAD {host}/v2/{stage.repo}/manifests/a -> 200 in \d+ ms", log)
    assert re.search(rf"mirror: GET {host}/token\?service=hub.test&scope=repository%3A", log)
    assert (
        f"mirror: {stage.hub.host}: token for repository:{stage.repo}:pull (with credentials)"
        in log
    )
    running = (
        r"mirror: running skopeo --debug --policy \S+ --registries-conf \S+ --registries.d \S+ "
        r"copy --authfile \S+ --all .* docker://127\.0\.0\.1:\d+/r\d+/"  # from the relay
    )
    assert re.search(running, log)
    assert re.search(rf"mirror: starting {host}/{stage.repo}:a \(1 pull\(s\) from {host}\)", log)
    for secret in ("hub-Secret-42", ECR_PASSWORD, "Authorization", "Bearer ", "Basic "):
        assert secret not in run.stderr + run.stdout


# --- budget and exit codes -----------------------------------------------------------------------


def test_the_budget_at_the_end_is_the_sources_own_figure(stage: Stage) -> None:
    stage.use_hub(limit=100)
    for tag in ("a", "b", "c"):
        stage.push(tag, seed=tag)
    stage.push("m", seed="m", platforms=("linux/amd64", "linux/arm64"))
    stage.config([stage.image("a", "b", "c", "m")])
    run = stage.mirror("sync", "--jobs", "4")
    assert run.code == 0, run.stderr
    assert run.report is not None
    left = stage.hub.remaining
    assert run.report["rate_limit"][stage.hub.host]["remaining"] == left
    assert (
        f"pull budget of {stage.hub.host}: 100 of 100 left at the start, {left} at the end"
        in run.error
    )


def test_exit_codes_are_one_table_in_readme_and_help() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", section, re.MULTILINE)
    assert [(int(code), meaning) for code, meaning in rows] == [
        (int(code), meaning) for code, meaning in EXIT_CODES
    ]
    for command in ((), ("sync",), ("ensure",), ("repos",), ("validate",)):
        assert exit_code_text() in help_text(*command)


def _signal_once(
    process: subprocess.Popen[Any], ready: Callable[[], bool], signum: int = signal.SIGTERM
) -> tuple[float, str]:
    """Wait until `ready()`, send `signum`; the seconds until the process exits, and its
    stderr (when piped)."""
    deadline = time.monotonic() + 30
    while not ready():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    sent = time.monotonic()
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=20)
    return time.monotonic() - sent, stderr or ""


def test_a_signal_while_tag_lists_are_read_ends_the_run_within_seconds(stage: Stage) -> None:
    stage.push("a", seed="a")
    with Raw(never_answers) as silent:
        stage.config(
            [stage.image("a"), {"source": f"{silent.host}/x/y", "tags": {"newest": 1},
                                "repository": "mirror/x"}]
        )  # fmt: skip
        report = stage.tmp / "planning.json"
        process = stage.popen("sync", "--report", str(report))
        took, _ = _signal_once(process, lambda: silent.connections > 0)
    assert (process.returncode, took < Settings().grace) == (143, True), took
    written = json.loads(report.read_text())
    assert [image["action"] for image in written["images"]] == ["deferred", "deferred"]


def test_a_signal_while_the_ecr_api_does_not_answer_ends_the_run_within_seconds(
    stage: Stage,
) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    with Raw(never_answers) as silent:
        report = stage.tmp / "setup.json"
        process = stage.popen(
            "sync", "--report", str(report), AWS_ENDPOINT_URL_ECR=f"http://{silent.host}",
            AWS_ENDPOINT_URL=f"http://{silent.host}",
        )  # fmt: skip
        took, _ = _signal_once(process, lambda: silent.connections > 0)
    assert (process.returncode, took < Settings().grace) == (143, True), took
    written = json.loads(report.read_text())
    assert [(i["action"], i["error"]) for i in written["images"]] == [
        ("deferred", "interrupted before it was done")
    ]
    assert written["exit_code"] == 143


def test_a_tags_list_is_cut_after_so_many_pages(tmp_path: Path) -> None:
    def script(method: str, path: str) -> Answer:
        page = int(path.rpartition("last=t")[2] or 0) if "last=" in path else 0
        link = f'</v2/x/y/tags/list?n=1&last=t{page + 1}>; rel="next"'  # for ever, never twice
        return Answer.json(200, {"tags": [f"t{page + 1}"]}, Link=link)

    with Scripted(script) as endless:
        registry = Registry(endless.host, http=Http(), tls_verify=False)
        listed = registry.list_tags("x/y", page_size=1, max_pages=5)
    assert listed.tags == ("t1", "t2", "t3", "t4", "t5")
    assert listed.warning == (
        f"the tags list of {endless.host}/x/y has more than 5 pages: only the first 5 tags "
        "were read"
    )
