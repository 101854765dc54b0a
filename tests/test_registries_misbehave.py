"""Registries that answer oddly, end to end: one image's trouble stays its own, every answer
is bounded, redirects are followed, and a source's 429 or fault touches its own images only."""

from __future__ import annotations

import socket
import threading
import time

from tests.stage import Stage
from tests.standins.misbehaving import Answer, Raw, Scripted, refusing

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _good_and(stage: Stage, odd: str, **odd_image: object) -> list[dict[str, object]]:
    """A config of one image from the stage's good source and one from the odd host."""
    stage.push("ok", seed="ok")
    image = {"source": f"{odd}/x/y", "tags": ["1"], "repository": "mirror/odd", **odd_image}
    return [stage.image("ok"), image]


def test_odd_answers_fail_their_own_image_only(stage: Stage) -> None:
    def script(method: str, path: str) -> Answer:
        if path == "/v2/":
            return Answer.json(200, {})
        return Answer(200, {"Content-Type": MANIFEST, "Content-Length": "258, 258"})

    with Scripted(script) as odd:
        stage.config(_good_and(stage, odd.host))
        run = stage.mirror("sync")
    assert run.code == 1, run.stderr
    assert run.actions() == ["copied", "failed"]
    assert "internal error" not in run.stdout + run.stderr


def test_a_token_that_cannot_go_in_a_header_is_never_shown(stage: Stage) -> None:
    token = "SeCrEtToKeN\r\nX-Injected: 1"

    def script(method: str, path: str) -> Answer:
        if path.startswith("/token"):
            return Answer.json(200, {"token": token})
        challenge = f'Bearer realm="http://{odd_host[0]}/token",service="odd"'
        return Answer.json(401, {"errors": []}, **{"WWW-Authenticate": challenge})

    odd_host: list[str] = []
    with Scripted(script) as odd:
        odd_host.append(odd.host)
        stage.config(_good_and(stage, odd.host))
        run = stage.mirror("sync")
    assert run.actions() == ["copied", "failed"], run.stderr
    assert run.report is not None
    assert run.report["images"][1]["error"].endswith(
        "the token service answered a token that cannot go in a header"
    )
    assert "SeCrEtToKeN" not in run.stdout + run.stderr + str(run.report)


def test_a_tags_list_may_not_smuggle_a_path(stage: Stage) -> None:
    def script(method: str, path: str) -> Answer:
        if "/tags/list" in path:
            return Answer.json(200, {"tags": ["../../../../v2/other/manifests/x", "1"]})
        if path == "/v2/":
            return Answer.json(200, {})
        return Answer.json(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "no"}]})

    with Scripted(script) as odd:
        stage.config([{"source": f"{odd.host}/x/y", "tags": {"match": ".*"}, "repository": "m/x"}])
        run = stage.mirror("sync")
    assert odd.requests, "the stand-in was never asked"
    assert not any("/v2/other/" in path for _, _, path in odd.requests)
    assert run.report is not None
    assert [image["source"].rsplit(":", 1)[1] for image in run.report["images"]] == ["1"]
    assert "1 entries that are not tags: passed over" in " ".join(run.report["warnings"])


def test_an_answer_that_streams_for_ever_ends_at_the_deadline(stage: Stage) -> None:
    def streams(conn: socket.socket, stopped: threading.Event) -> None:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n")
        while not stopped.is_set():
            conn.sendall(b"x" * 65536)
            time.sleep(0.01)

    with Raw(streams) as endless:
        stage.config(_good_and(stage, endless.host))
        run = stage.mirror("sync", "--timeout", "2", timeout=30)  # an endless read: past 30 s
    assert run.actions() == ["copied", "failed"], run.stderr
    assert run.report is not None
    error = run.report["images"][1]["error"]
    assert error.startswith(f"{endless.host}: no answer within 2 s"), error


def test_redirects_are_followed_as_registry_k8s_io_needs(stage: Stage) -> None:
    digest = stage.push("1", repo="x/y", seed="redirected")
    backend = stage.source.host

    def script(method: str, path: str) -> Answer:
        return Answer(307, {"Location": f"http://{backend}{path}"})

    with Scripted(script) as redirector:
        stage.config([{"source": f"{redirector.host}/x/y", "tags": ["1"], "repository": "k8s/y"}])
        run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"]), run.stderr
    assert run.report is not None
    assert run.report["images"][0]["destination_digest"] == digest


def test_a_source_down_at_the_login_check_fails_its_own_images_only(stage: Stage) -> None:
    with refusing() as host:
        stage.config(
            _good_and(stage, host),
            source={"credentials": {host: {"username_env": "U", "password_env": "P"}}},
        )
        run = stage.mirror("sync", U="user", P="password")
    assert run.actions() == ["copied", "failed"], run.stderr
    assert run.code == 1


def test_a_429_on_a_tags_list_stops_that_source_for_the_run(stage: Stage) -> None:
    stage.push("1.0", seed="one")
    stage.hub.fail_next(429, kind="tags")
    stage.config([{"source": stage.repo, "tags": {"newest": 1}}, stage.image("1.0")])
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (75, ["deferred", "deferred"]), run.stderr
    assert stage.hub.counts.manifest_get == 0


def test_a_head_without_digest_reads_it_only_within_max_pulls(stage: Stage) -> None:
    stage.use_hub(head="no-digest")
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    run = stage.mirror("sync", "--max-pulls", "0")
    assert (run.code, run.actions()) == (75, ["deferred"]), run.stderr
    assert run.report is not None
    assert run.report["images"][0]["error"].startswith("--max-pulls 0 reached")
    assert stage.hub.counts.manifest_get == 0
