"""A hostile registry, end to end: each finding of issue 15, tried as an attacker would, through
the `mirror` command. Whatever a registry sends, the work on it is bounded (its images fail
at once, with a short message, and the others are done), and credentials go only where they
belong. Fronts run on 127.0.0.x; the ones that must look like a public host are reached by a
made-up name through the forward proxy stand-in."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3

from mirror.model import Settings
from tests.stage import Run, Stage
from tests.standins.misbehaving import Answer, Asked, Scripted
from tests.standins.proxy import ForwardProxy
from tests.standins.registry import manifest_digest
from tests.standins.tls import Authority

MB = 1 << 20
SECRET_USER, SECRET_PASSWORD = "builder", "Pa55-w0rd-that-is-secret"
BASIC = "Basic " + base64.b64encode(f"{SECRET_USER}:{SECRET_PASSWORD}".encode()).decode()
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _odd_image(odd: str, **extra: object) -> dict[str, object]:
    return {"source": f"{odd}/x/y", "tags": ["1"], "repository": "mirror/odd", **extra}


def _with_good(stage: Stage, odd: str, **extra: object) -> list[dict[str, object]]:
    """A config of one image from the stage's good source and one from the odd host."""
    stage.push("ok", seed="ok")
    return [stage.image("ok"), _odd_image(odd, **extra)]


def _everything(run: Run, stage: Stage) -> str:
    """All a run printed and stored: stdout, stderr, the report and the JUnit file."""
    junit = stage.tmp / "junit.xml"
    return (
        run.stdout
        + run.stderr
        + json.dumps(run.report)
        + (junit.read_text() if junit.exists() else "")
    )


# --- bounded work on what a registry sends --------------------------------------------------


def _denied(message: str) -> Answer:
    return Answer.json(403, {"errors": [{"code": "DENIED", "message": message}]})


def test_a_4_mb_error_message_fails_its_image_at_once_and_is_quoted_short(stage: Stage) -> None:
    huge = "://x:" * (MB // 5) + "a" * MB  # the old password-hiding pattern's worst case

    def script(method: str, path: str) -> Answer:
        return Answer.json(200, {}) if path == "/v2/" else _denied(huge)

    with Scripted(script) as odd:
        stage.config(_with_good(stage, odd.host, tags={"match": ".*"}))
        run = stage.mirror("sync", "--junit", str(stage.tmp / "junit.xml"))
    assert (run.code, run.actions()) == (1, ["copied", "failed"]), run.stderr[-2000:]
    assert run.report is not None
    error = run.report["images"][1]["error"]
    assert error.startswith(f"tag rule: {odd.host}/x/y (tag list): access denied (403 DENIED: ")
    assert f"... ({len(huge):,} characters))" in error
    assert len(error) < 800
    assert len(_everything(run, stage)) < 20_000


@pytest.mark.parametrize(
    ("header", "value"),
    [("WWW-Authenticate", "Bearer " + "a" * 60_000), ("Link", "<" * 60_000)],
)
def test_a_long_header_fails_its_image_at_once(stage: Stage, header: str, value: str) -> None:
    def script(method: str, path: str) -> Answer:
        if path == "/v2/":
            return Answer.json(200, {})
        if header == "Link":
            return Answer.json(200, {"tags": ["1"]}, Link=value)
        return Answer.json(401, {"errors": []}, **{header: value})

    with Scripted(script) as odd:
        stage.config(_with_good(stage, odd.host, tags={"match": ".*"}))
        run = stage.mirror("sync")
    assert (run.code, run.actions()) == (1, ["copied", "failed"]), run.stderr[-2000:]
    assert run.report is not None
    assert run.report["images"][1]["error"] == (
        f"tag rule: {odd.host}/x/y: a {header} header of {len(value):,} characters (mirror "
        "reads at most 8,192)"
        if header == "Link"
        else f"tag rule: {odd.host}: a {header} header of {len(value):,} characters (mirror "
        "reads at most 8,192)"
    )


def test_a_signal_after_a_hostile_answer_still_ends_the_run_within_seconds(stage: Stage) -> None:
    """A tag rule fails on a 4 MB error body (its line is printed when the checks start); the
    other image's HEAD waits: the run is busy when SIGTERM comes, and must end within seconds
    (before issue 15, printing that line held the interpreter for hours)."""
    huge = "a" * (4 * MB)  # the old password-hiding pattern's worst case
    waiting = threading.Event()
    release = threading.Event()

    def script(method: str, path: str) -> Answer:
        if path == "/v2/":
            return Answer.json(200, {})
        if "/tags/list" in path:
            return _denied(huge)
        waiting.set()
        release.wait(60)
        return Answer.json(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "no"}]})

    with Scripted(script) as odd:
        stage.config(
            [
                {"source": f"{odd.host}/x/rule", "tags": {"match": ".*"}, "repository": "m/r"},
                {"source": f"{odd.host}/x/held", "tags": ["1"], "repository": "m/h"},
            ]
        )
        report = stage.tmp / "signalled.json"
        process = stage.popen("sync", "--report", str(report))
        try:
            assert waiting.wait(60), "the other image's HEAD never came"
            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            out, stderr = process.communicate(timeout=30)
            took = time.monotonic() - sent
        finally:
            release.set()
            if process.poll() is None:  # it ignored the signal: leave nothing running
                process.kill()
                process.communicate()
    assert (process.returncode, took < Settings().grace) == (143, True), (took, stderr[-2000:])
    written = json.loads(report.read_text())
    assert written["error"] == "interrupted by SIGTERM"
    assert [image["action"] for image in written["images"]] == ["failed", "deferred"]
    assert "failed      " in out and len(out) < 5000


def _tag_pages(pages: int, per_page: int, *, page_bytes: int = 0) -> Scripted:
    """A registry with `pages` pages of distinct tags (or pages of `page_bytes` bytes)."""

    def script(method: str, path: str) -> Answer:
        if path == "/v2/":
            return Answer.json(200, {})
        if "/tags/list" not in path:
            return Answer.json(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "no"}]})
        page = int(path.rpartition("page=")[2]) if "page=" in path else 0
        if page_bytes:
            body = b'{"tags": ["' + b"x" * page_bytes + b'"]}'
        else:
            tags = [f"{page}.{n}" for n in range(per_page)]
            body = json.dumps({"tags": tags}).encode()
        link = f'</v2/x/y/tags/list?page={page + 1}>; rel="next"' if page + 1 < pages else ""
        return Answer(200, {"Content-Type": "application/json", "Link": link}, body)

    return Scripted(script)


def test_a_tags_list_is_read_up_to_100000_tags(stage: Stage) -> None:
    with _tag_pages(150, 1000) as odd:
        stage.config([_odd_image(odd.host, tags={"match": "no"})])
        run = stage.mirror("sync")
    assert run.report is not None, run.stderr
    pages = [path for _, _, path in odd.requests if "/tags/list" in path]
    assert len(pages) == 100  # 100,000 tags: no more is read
    assert run.report["warnings"][0] == (
        f"images[0] ({odd.host}/x/y): the tags list of {odd.host}/x/y has more than 100,000 "
        "tags: only those were read: stopped after 100 pages"
    )


def test_a_30_mb_tags_page_is_not_read_whole(stage: Stage) -> None:
    with _tag_pages(1000, 0, page_bytes=30 * MB) as odd:
        stage.config(_with_good(stage, odd.host, tags={"match": ".*"}))
        run = stage.mirror("sync")
    assert (run.code, run.actions()) == (1, ["copied", "failed"]), run.stderr[-2000:]
    assert run.report is not None
    assert run.report["images"][1]["error"] == f"tag rule: {odd.host}: an answer over 8 MiB"
    assert len([path for _, _, path in odd.requests if "/tags/list" in path]) == 1


def test_json_nested_deep_in_a_token_answer_fails_its_own_image(stage: Stage) -> None:
    def script(method: str, path: str) -> Answer:
        if path.startswith("/token"):
            return Answer(200, {}, b'{"token": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
        challenge = f'Bearer realm="http://{odd.host}/token",service="odd"'
        return Answer.json(401, {"errors": []}, **{"WWW-Authenticate": challenge})

    with Scripted(script) as odd:
        stage.config(_with_good(stage, odd.host))
        run = stage.mirror("sync")
    assert (run.code, run.actions()) == (1, ["copied", "failed"]), run.stderr[-2000:]
    assert run.report is not None
    assert run.report["images"][1]["error"] == (
        f"{odd.host}: the token service's answer is JSON nested too deeply to read"
    )


def test_an_ecr_index_nested_deep_is_copied_over_not_an_internal_error(stage: Stage) -> None:
    digest = stage.push("m", platforms=("linux/amd64", "linux/arm64"), seed="m")
    stage.create_dest_repo()
    hostile = (
        b'{"schemaVersion": 2, "mediaType": "' + OCI_INDEX.encode() + b'", "manifests": [], '
        b'"x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    )
    _put_manifest(stage, "m", hostile, OCI_INDEX)
    stage.config([stage.image("m")])
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"]), run.stderr[-2000:]
    assert stage.dest_digest("m") == digest


def _put_manifest(stage: Stage, tag: str, body: bytes, media_type: str) -> None:
    response = urllib3.request(
        "PUT",
        f"{stage.backend.url}/v2/{stage.dest_repo()}/manifests/{tag}",
        body=body,
        headers={
            "Content-Type": media_type,
            **urllib3.make_headers(basic_auth=":".join(stage.dest_auth)),
        },
    )
    assert response.status == 201, response.data


def test_a_tag_rule_with_nested_quantifiers_matches_at_once(stage: Stage) -> None:
    digest = stage.push("1.2", seed="v")
    stage.push("1" * 40 + "x", seed="long")  # Python's re takes hours on this one
    stage.config([{"source": stage.repo, "tags": {"match": r"(\d+\.?)+"}}])
    run = stage.mirror("sync", timeout=60)
    assert (run.code, run.actions()) == (0, ["copied"]), run.stderr[-2000:]
    assert stage.dest_digest("1.2") == digest


# --- credentials only where they belong -----------------------------------------------------


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return Authority(tmp_path)


def _tls_config(stage: Stage, host: str) -> None:
    stage.config(
        [_odd_image(host)],
        source={
            "tls_verify": True,
            "credentials": {host: {"username_env": "U", "password_env": "P"}},
        },
    )


def _secret_sent_in_clear(odd: Scripted) -> list[Asked]:
    return [
        asked
        for asked in odd.asked
        if not asked.tls and ("Authorization" in asked.headers or "Bearer" in str(asked.headers))
    ]


def test_https_to_http_redirect_on_the_same_host_and_port_gets_no_credentials(
    stage: Stage, authority: Authority
) -> None:
    def answer(asked: Asked) -> Answer:
        if not asked.tls:
            return Answer.json(404, {"errors": [{"code": "NOT_FOUND", "message": "plain"}]})
        if "Authorization" not in asked.headers:
            return Answer.json(401, {"errors": []}, **{"WWW-Authenticate": 'Basic realm="x"'})
        if asked.path == "/v2/":
            return Answer.json(200, {})
        return Answer(307, {"Location": f"http://{odd.host}{asked.path}"})

    with Scripted(answer=answer, tls=authority.server_context()) as odd:
        _tls_config(stage, odd.host)
        run = stage.mirror(
            "sync", U=SECRET_USER, P=SECRET_PASSWORD, SSL_CERT_FILE=str(authority.ca_file)
        )
    assert any(asked.tls and "Authorization" in asked.headers for asked in odd.asked)
    assert _secret_sent_in_clear(odd) == []
    assert run.report is not None, run.stderr
    assert (run.code, run.actions()) == (1, ["failed"])
    assert run.report["images"][0]["error"] == (
        f"{odd.host}: a redirect from https to '{odd.host}/v2/x/y/manifests/1' (http) refused: "
        "a registry spoken to over HTTPS is never followed to plain HTTP"
    )


def test_a_plain_http_token_realm_of_an_https_registry_gets_no_credentials(
    stage: Stage, authority: Authority
) -> None:
    def answer(asked: Asked) -> Answer:
        if not asked.tls:
            return Answer.json(200, {"token": "a-token-sent-in-clear"})
        realm = f'Bearer realm="http://{odd.host}/token",service="odd"'
        return Answer.json(401, {"errors": []}, **{"WWW-Authenticate": realm})

    with Scripted(answer=answer, tls=authority.server_context()) as odd:
        _tls_config(stage, odd.host)
        run = stage.mirror(
            "sync", U=SECRET_USER, P=SECRET_PASSWORD, SSL_CERT_FILE=str(authority.ca_file)
        )
    assert [asked for asked in odd.asked if not asked.tls] == []
    assert run.report is not None, run.stderr
    assert run.report["images"][0]["error"] == (
        f"{odd.host}: its token realm 'http://{odd.host}/token' is plain HTTP while the "
        "registry is HTTPS: refused (the credentials and tokens would travel in clear text)"
    )


def test_a_redirected_hosts_401_never_chooses_where_the_credentials_go(stage: Stage) -> None:
    """containerd's CVE-2020-15157: registry A redirects; host B answers 401 with a token
    realm of its own, which must not receive A's credentials."""

    def elsewhere(asked: Asked) -> Answer:
        if asked.path.startswith("/token"):
            return Answer.json(200, {"token": "b-token"})
        realm = f'Bearer realm="http://{other.host}/token",service="b"'
        return Answer.json(401, {"errors": []}, **{"WWW-Authenticate": realm})

    with Scripted(answer=elsewhere) as other:
        redirect = Scripted(lambda m, p: Answer(307, {"Location": f"http://{other.host}{p}"}))
        with redirect as registry:
            stage.config(
                _with_good(stage, registry.host),
                source={"credentials": {registry.host: {"username_env": "U", "password_env": "P"}}},
            )
            run = stage.mirror("sync", U=SECRET_USER, P=SECRET_PASSWORD)
    assert [a.path for a in other.asked if a.path.startswith("/token")] == []
    assert [a for a in other.asked if "Authorization" in a.headers] == []
    assert (run.code, run.actions()) == (1, ["copied", "failed"]), run.stderr[-2000:]


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    with ForwardProxy(hosts={"odd.proxied.test": "127.0.0.1"}) as forward:
        yield forward


@pytest.mark.parametrize("way", ["realm redirects there", "realm is there"])
def test_a_public_registry_is_not_followed_to_a_loopback_address(
    stage: Stage, proxy: ForwardProxy, way: str
) -> None:
    """The registry is reached by a name (through the proxy, as a public registry would be);
    its token realm is, or redirects to, an address inside: refused, and the inside's "token"
    is never sent back to the registry."""

    def inside(asked: Asked) -> Answer:
        return Answer.json(200, {"token": "INSIDE-CREDENTIAL-1234"})

    def registry(asked: Asked) -> Answer:
        if asked.path.startswith("/token"):
            return Answer(307, {"Location": f"http://{metadata.host}/latest/credentials"})
        if "INSIDE-CREDENTIAL" in asked.headers.get("Authorization", ""):
            return Answer.json(200, {})
        token = f"{name}/token" if way == "realm redirects there" else f"{metadata.host}/token"
        realm = f'Bearer realm="http://{token}",service="odd"'
        return Answer.json(401, {"errors": []}, **{"WWW-Authenticate": realm})

    with Scripted(answer=inside) as metadata, Scripted(answer=registry) as odd:
        name = f"odd.proxied.test:{odd.host.rpartition(':')[2]}"
        stage.config(_with_good(stage, name))
        via = f"http://{proxy.host}"
        run = stage.mirror("sync", HTTP_PROXY=via, HTTPS_PROXY=via, NO_PROXY="127.0.0.1")
    assert metadata.asked == []
    assert not any("INSIDE" in str(asked.headers) for asked in odd.asked)
    assert (run.code, run.actions()) == (1, ["copied", "failed"]), run.stderr[-2000:]
    assert run.report is not None
    assert run.report["images"][1]["error"] == (
        f"{name}: a redirect to {metadata.host}, a loopback, private or link-local address, "
        "refused: the registry is not on one"
        if way == "realm redirects there"
        else f"{metadata.host}: a loopback, private or link-local address, refused: the "
        "registry that sent mirror there is not on one"
    )


@pytest.mark.parametrize(
    "spelling", ["2130706433", "127.1", "0x7f.0.0.1", "0177.0.0.1", "localhost."]
)
def test_a_loopback_address_spelled_otherwise_is_refused_through_a_proxy(
    stage: Stage, spelling: str
) -> None:
    """Through a proxy, mirror cannot see the address the proxy reaches; the proxy resolves
    what mirror sends (as getaddrinfo does: decimal, short, hex and octal IPv4, a trailing
    dot). Every spelling of an inner address is refused as the address it is."""

    def inside(asked: Asked) -> Answer:
        return Answer.json(200, {"token": "INSIDE-CREDENTIAL-1234"})

    def registry(asked: Asked) -> Answer:
        if "INSIDE-CREDENTIAL" in asked.headers.get("Authorization", ""):
            return Answer.json(200, {})
        realm = f'Bearer realm="http://{spelling}:{metadata.host.rpartition(":")[2]}/token",service="odd"'
        return Answer.json(401, {"errors": []}, **{"WWW-Authenticate": realm})

    with Scripted(answer=inside) as metadata, Scripted(answer=registry) as odd:
        hosts = {"odd.proxied.test": "127.0.0.1", spelling: "127.0.0.1"}
        with ForwardProxy(hosts=hosts) as forward:
            name = f"odd.proxied.test:{odd.host.rpartition(':')[2]}"
            stage.config(_with_good(stage, name))
            via = f"http://{forward.host}"
            run = stage.mirror("sync", HTTP_PROXY=via, HTTPS_PROXY=via, NO_PROXY="127.0.0.1")
    assert metadata.asked == []
    assert not any("INSIDE" in str(asked.headers) for asked in odd.asked)
    assert (run.code, run.actions()) == (1, ["copied", "failed"]), run.stderr[-2000:]
    assert run.report is not None
    assert run.report["images"][1]["error"] == (
        f"{spelling}:{metadata.host.rpartition(':')[2]}: a loopback, private or link-local "
        "address, refused: the registry that sent mirror there is not on one"
    )


def test_a_registry_on_loopback_may_redirect_to_another_loopback_address(stage: Stage) -> None:
    digest = stage.push("1", repo="x/y", seed="redirected")
    backend = stage.source.host

    def script(method: str, path: str) -> Answer:
        return Answer(307, {"Location": f"http://{backend}{path}"})

    with Scripted(script, address="127.0.0.2") as redirector:
        stage.config([{"source": f"{redirector.host}/x/y", "tags": ["1"], "repository": "k8/y"}])
        run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"]), run.stderr
    assert manifest_digest(stage.source.url, "x/y", "1") == digest


def test_a_registry_quoting_the_request_never_gets_a_secret_printed_or_stored(
    stage: Stage,
) -> None:
    def answer(asked: Asked) -> Answer:
        if "Authorization" not in asked.headers:
            return Answer.json(401, {"errors": []}, **{"WWW-Authenticate": 'Basic realm="x"'})
        if asked.path == "/v2/":
            return Answer.json(200, {})
        said = f"Authorization: {asked.headers['Authorization']} password={SECRET_PASSWORD}"
        return _denied(f"{said} in request {asked.method} {asked.path} {asked.headers}")

    with Scripted(answer=answer) as odd:
        stage.config(
            _with_good(stage, odd.host, tags={"match": ".*"}),
            source={"credentials": {odd.host: {"username_env": "U", "password_env": "P"}}},
        )
        for form in ("text", "json"):
            run = stage.mirror(
                "sync",
                "-v",
                "--log-format",
                form,
                "--junit",
                str(stage.tmp / "junit.xml"),
                U=SECRET_USER,
                P=SECRET_PASSWORD,
            )
            assert (run.code, run.actions()[1]) == (1, "failed"), run.stderr[-2000:]
            shown = _everything(run, stage)
            assert BASIC.split()[1] not in shown
            assert SECRET_PASSWORD not in shown
            assert "Basic ***" in shown  # the registry's quote is there, the secret not


def test_a_proxy_quoting_the_request_never_gets_its_password_printed(stage: Stage) -> None:
    def answer(asked: Asked) -> Answer:
        said = {k.lower(): v for k, v in asked.headers.items()}.get("proxy-authorization")
        return _denied(f"proxy saw Proxy-Authorization: {said} in {asked.headers}")

    with Scripted(answer=answer) as proxy:
        stage.config(_with_good(stage, "odd.proxied.test:5000", tags={"match": ".*"}))
        via = f"http://proxyuser:{SECRET_PASSWORD}@{proxy.host}"
        run = stage.mirror("sync", HTTP_PROXY=via, HTTPS_PROXY=via, NO_PROXY="127.0.0.1")
    assert any("proxy-authorization" in str(asked.headers).lower() for asked in proxy.asked)
    assert (run.code, run.actions()) == (1, ["copied", "failed"]), run.stderr[-2000:]
    shown = _everything(run, stage)
    sent = base64.b64encode(f"proxyuser:{SECRET_PASSWORD}".encode()).decode()
    assert sent not in shown
    assert SECRET_PASSWORD not in shown


# --- a hostile Dockerfile for ensure --------------------------------------------------------


def _ensure(stage: Stage, dockerfile: Path) -> Run:
    stage.config([])
    return stage.mirror("ensure", "--dockerfile", str(dockerfile), timeout=60)


def test_a_dockerfile_that_is_a_symlink_to_dev_zero_or_a_fifo_is_refused_at_once(
    stage: Stage,
) -> None:
    zero = stage.tmp / "Dockerfile.zero"
    zero.symlink_to("/dev/zero")
    fifo = stage.tmp / "Dockerfile.fifo"
    subprocess.run(["mkfifo", str(fifo)], check=True)
    for path in (zero, fifo):
        run = _ensure(stage, path)
        assert (run.code, run.error) == (
            2,
            f"mirror: {path}: not a regular file (a Dockerfile is one)",
        )


def test_a_dockerfile_that_is_a_device_or_a_socket_is_never_opened(stage: Stage) -> None:
    """A pull request's Dockerfile may be a symbolic link to any device: opening one can act
    (/dev/watchdog arms a reboot, a tape rewinds), so mirror looks before it opens. A device
    with no driver behind it, and a socket, fail to open (ENXIO): the message shows they were
    not opened."""
    device = stage.tmp / "driverless"
    os.mknod(device, stat.S_IFCHR | 0o600, os.makedev(250, 77))  # 240-254: local use
    (stage.tmp / "Dockerfile.device").symlink_to(device)
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(stage.tmp / "Dockerfile.socket"))
    with listening:
        for name in ("Dockerfile.device", "Dockerfile.socket"):
            path = stage.tmp / name
            run = _ensure(stage, path)
            assert (run.code, run.error) == (
                2,
                f"mirror: {path}: not a regular file (a Dockerfile is one)",
            )


def test_a_dockerfile_over_1_mib_is_not_read(stage: Stage) -> None:
    path = stage.tmp / "Dockerfile"
    path.write_text("FROM a\nRUN " + "x" * 50 * MB + "\n")
    run = _ensure(stage, path)
    assert (run.code, run.error) == (
        2,
        f"mirror: {path}: over 1 MiB: not read (a Dockerfile is a few kB)",
    )


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "ARG doubling",
            "ARG A0=xx\n"
            + "".join(f"ARG A{n + 1}=${{A{n}}}${{A{n}}}\n" for n in range(40))
            + "FROM a:${A40}\n",
            "line 42: expands to more than 4,096 characters",
        ),
        (
            "quote runs",
            "FROM a AS b\nCOPY --from=" + '"' * 400_000 + "img" + '"' * 400_000 + " / /\n",
            "line 2: COPY --from=img: its quotes leave no place to write another image",
        ),
    ],
)
def test_hostile_dockerfiles_fail_at_once_with_a_short_message(
    stage: Stage, name: str, text: str, message: str
) -> None:
    path = stage.tmp / "Dockerfile"
    path.write_text(text)
    run = _ensure(stage, path)
    assert run.code == 2, run.stderr[-2000:]
    assert run.error.startswith(f"mirror: {path}: {message}")
    assert len(run.error) < 600


def test_a_padded_syntax_line_is_read_at_once(stage: Stage) -> None:
    stage.push("a", seed="a")
    image = f"{stage.repo}:a"
    path = stage.tmp / "Dockerfile"
    path.write_text(f"# syntax={image}" + " " * 900_000 + "x\n" + f"FROM {image}\n")
    stage.config([])
    run = stage.mirror("ensure", "--dockerfile", str(path), timeout=60)
    assert run.code == 0, run.stderr[-2000:]
    assert run.stdout == f"{stage.dest.host}/{stage.dest_repo()}:a\n"


def test_validate_refuses_a_tag_rule_re2_cannot_match_in_linear_time(stage: Stage) -> None:
    stage.config([{"source": stage.repo, "tags": {"match": r"(\d+)\.\1", "newest": 3}}])
    run = stage.mirror("validate")
    assert run.code == 2, run.stderr
    assert run.error == (
        f"mirror: {stage.tmp / 'mirror.yaml'}: images[0].tags.match: bad regular expression "
        "'(\\\\d+)\\\\.\\\\1': invalid escape sequence: \\1 (tag rules use RE2 syntax, "
        "which matches in linear time: no backreferences or lookarounds; \\z, not \\Z)"
    )
