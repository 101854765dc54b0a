"""The source relay and the pulls behind it, without stand-ins: fake sources, a real socket.

What skopeo meets on 127.0.0.1 (auth, routes, manifests by digest, blobs, the source's faults)
and what `Pulls` promises (one GET per digest and run, checked, counted, 429 told to the budget).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import math
import socket
import threading
from collections.abc import Iterator
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import pytest
import urllib3

from mirror.errors import CopyError, MirrorError, RateLimited, RegistryError, Stopped
from mirror.http import Body, Http, Policy, Response, hurried
from mirror.oci import Descriptor, Manifest, RateLimit, TagList
from mirror.pulls import Pulls
from mirror.referrers import Listing
from mirror.registry import clock_skew
from mirror.relay import Relay, Route
from mirror.schedule import Ledger
from tests.standins.misbehaving import Raw, never_answers

MANIFEST = b'{"schemaVersion":2}'
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
BLOB = b"layer bytes " * 10_000
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


class FakeBody:
    def __init__(self, data: bytes, *, cut: bool = False):
        self.data, self.cut, self.closed = data, cut, False

    def pieces(self) -> Iterator[bytes]:
        yield self.data[:1000]
        if self.cut:
            raise RegistryError("hub: connection closed without an answer", transient=True)
        yield self.data[1000:]

    def close(self) -> None:
        self.closed = True


class FakeSource:
    """A source registry: manifests by digest, one blob; counts its GETs."""

    host = "hub"

    def __init__(self, *, fail: MirrorError | None = None, cut: bool = False) -> None:
        self.gets = 0
        self.fail = fail
        self.cut = cut
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.release.set()

    def describe_manifest(self, path: str, reference: str, *, get: bool = True) -> Descriptor:
        return self.read_manifest(path, reference) if get else Descriptor(found=True)

    def read_manifest(self, path: str, reference: str) -> Descriptor:
        with self.lock:
            self.gets += 1
        return Descriptor(found=True, digest=DIGEST, fetched=True, body=MANIFEST, media_type="x")

    def pull_manifest(self, path: str, reference: str) -> Manifest | None:
        self.release.wait(5)
        with self.lock:
            self.gets += 1
        if self.fail is not None:
            raise self.fail
        if reference != DIGEST:
            return None
        return Manifest("application/vnd.oci.image.manifest.v1+json", MANIFEST, RateLimit(100, 7))

    @contextlib.contextmanager
    def blob(self, path: str, digest: str) -> Iterator[Response]:
        if digest != BLOB_DIGEST:
            yield Response(404, {}, b"")
            return
        body = FakeBody(BLOB, cut=self.cut)
        yield Response(200, {"Content-Length": str(len(BLOB))}, b"", body=cast(Body, body))

    def head_blob(self, path: str, digest: str) -> Response:
        return Response(200 if digest == BLOB_DIGEST else 404, {"Content-Length": "5"}, b"")

    def head_manifest(self, path: str, reference: str) -> Descriptor:
        return Descriptor(found=True, digest=DIGEST)

    def list_tags(self, path: str) -> TagList:
        return TagList(())

    def list_referrers(self, path: str, digest: str) -> Listing | None:
        return None

    def check_login(self, path: str) -> None:
        pass


@pytest.fixture
def world() -> Iterator[tuple[Relay, FakeSource, Ledger, Pulls]]:
    source = FakeSource()
    budgets = Ledger()
    pulls = Pulls(lambda host: budgets.meter(source))
    with closing(Relay(pulls, lambda host: cast(Any, source))) as relay:
        yield relay, source, budgets, pulls


def ask(relay: Relay, path: str, *, method: str = "GET", login: bool = True) -> Any:
    headers = {}
    if login:
        token = f"{relay.login.username}:{relay.login.password}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
    http = urllib3.PoolManager(retries=False, timeout=10)
    return http.request(method, f"http://{relay.host}{path}", headers=headers)


def test_the_relay_asks_for_its_password_and_answers_nothing_without_it(world: Any) -> None:
    relay, source, _, _ = world
    assert relay.host.startswith("127.0.0.1:")
    with relay.route("hub", "library/ruby", "hub/library/ruby") as route:
        answer = ask(relay, f"/v2/{route.name}/library/ruby/manifests/{DIGEST}", login=False)
        assert answer.status == 401
        assert answer.headers["WWW-Authenticate"] == 'Basic realm="mirror relay"'
        wrong = ask(relay, "/v2/", login=False)
        assert wrong.status == 401
    assert source.gets == 0
    assert ask(relay, "/v2/").status == 200


def test_a_manifest_is_pulled_once_per_run_however_often_skopeo_asks(world: Any) -> None:
    relay, source, budgets, _ = world
    for _ in range(3):  # a copy and two retries, each with a route of its own
        with relay.route("hub", "library/ruby", "hub/library/ruby") as route:
            answer = ask(relay, f"/v2/{route.name}/library/ruby/manifests/{DIGEST}")
            assert (answer.status, answer.data) == (200, MANIFEST)
            assert answer.headers["Docker-Content-Digest"] == DIGEST
    assert source.gets == 1
    (budget,) = budgets.snapshot()
    assert (budget.spent, budget.last) == (1, RateLimit(100, 7))


def test_two_copies_asking_at_once_make_one_get(world: Any) -> None:
    relay, source, _, _ = world
    source.release.clear()
    answers: list[int] = []
    with relay.route("hub", "library/ruby", "hub/library/ruby") as route:
        path = f"/v2/{route.name}/library/ruby/manifests/{DIGEST}"
        threads = [
            threading.Thread(target=lambda: answers.append(ask(relay, path).status))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        source.release.set()
        for thread in threads:
            thread.join(10)
    assert (answers, source.gets) == ([200] * 4, 1)


def test_only_the_routes_repository_and_digests_are_served(world: Any) -> None:
    relay, source, _, _ = world
    with relay.route("hub", "library/ruby", "hub/library/ruby") as route:
        other = ask(relay, f"/v2/{route.name}/library/node/manifests/{DIGEST}")
        by_tag = ask(relay, f"/v2/{route.name}/library/ruby/manifests/latest")
        unknown = ask(relay, f"/v2/r999/library/ruby/manifests/{DIGEST}")
        put = ask(relay, f"/v2/{route.name}/library/ruby/manifests/{DIGEST}", method="PUT")
    gone = ask(relay, f"/v2/{route.name}/library/ruby/manifests/{DIGEST}")  # closed route
    assert [a.status for a in (other, by_tag, unknown, gone)] == [404] * 4
    assert put.status == 501
    assert source.gets == 0


def test_a_blob_is_streamed_whole_and_a_missing_one_is_404(world: Any) -> None:
    relay, _, budgets, _ = world
    with relay.route("hub", "library/ruby", "hub/library/ruby") as route:
        answer = ask(relay, f"/v2/{route.name}/library/ruby/blobs/{BLOB_DIGEST}")
        head = ask(relay, f"/v2/{route.name}/library/ruby/blobs/{BLOB_DIGEST}", method="HEAD")
        missing = ask(relay, f"/v2/{route.name}/library/ruby/blobs/sha256:{'0' * 64}")
        fault = route.fault
    assert (answer.status, answer.data) == (200, BLOB)
    assert (head.status, head.headers["Content-Length"]) == (200, "5")
    assert missing.status == 404 and fault is not None
    assert budgets.snapshot() == []  # a blob is no pull


def test_a_source_fault_is_kept_for_the_copy_that_met_it() -> None:
    source = FakeSource(fail=RateLimited("hub", "pull rate limit reached (429 TOOMANYREQUESTS)"))
    budgets = Ledger()
    with closing(
        Relay(Pulls(lambda host: budgets.meter(source)), lambda host: cast(Any, source))
    ) as relay:
        with relay.route("hub", "library/ruby", "hub/library/ruby") as route:
            answer = ask(relay, f"/v2/{route.name}/library/ruby/manifests/{DIGEST}")
        assert answer.status == 502  # not a 429: skopeo would sleep through five of them
        explained = route.explain(CopyError("reading manifest: 502 Bad Gateway"))
    assert isinstance(explained, RateLimited)
    assert budgets.blocked("hub") == (
        "hub: pull rate limit reached (429 TOOMANYREQUESTS); run again later"
    )


def test_a_blob_cut_at_the_source_drops_skopeos_line_and_is_named() -> None:
    source = FakeSource(cut=True)
    with closing(
        Relay(Pulls(lambda host: Ledger().meter(source)), lambda host: cast(Any, source))
    ) as relay:
        with (
            relay.route("hub", "library/ruby", "hub/library/ruby") as route,
            pytest.raises(urllib3.exceptions.ProtocolError),
        ):
            ask(relay, f"/v2/{route.name}/library/ruby/blobs/{BLOB_DIGEST}")
        explained = route.explain(CopyError("reading blob: unexpected EOF", transient=True))
    assert str(explained) == "hub: connection closed without an answer"
    assert getattr(explained, "transient", False)


def test_without_a_source_fault_skopeos_words_name_the_source_not_the_relay() -> None:
    route = Route("r3", "127.0.0.1:4000", "docker.io", "library/ruby", "docker.io/library/ruby")
    error = CopyError(
        "initializing source docker://127.0.0.1:4000/r3/library/ruby@sha256:1: pinging "
        "container registry 127.0.0.1:4000: refused",
        transient=True,
    )
    explained = route.explain(error)
    assert str(explained) == (
        "initializing source docker://docker.io/library/ruby@sha256:1: pinging container "
        "registry docker.io: refused"
    )
    assert isinstance(explained, CopyError) and explained.transient


def test_a_tls_hello_is_answered_by_closing_so_skopeo_falls_back_to_http(world: Any) -> None:
    relay, _, _, _ = world
    host, port = relay.host.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03")
        assert connection.recv(100) == b""  # closed at once, no wait for a newline


def test_pulls_keep_the_checks_get_for_the_copy(world: Any) -> None:
    _, source, budgets, pulls = world
    head = pulls.describe("hub", "library/ruby", "a", get=True)
    assert head.digest == DIGEST
    assert pulls.manifest("hub", "library/ruby", DIGEST).body == MANIFEST
    assert source.gets == 1
    assert budgets.snapshot()[0].spent == 1
    assert pulls.warnings() == [
        "hub gives no digest on a manifest HEAD: every run reads each tag's manifest with a "
        "GET, a pull (1 pull in this run)"
    ]


def test_pulls_refuse_a_manifest_that_is_not_the_digest_asked_for() -> None:
    class Liar(FakeSource):
        def pull_manifest(self, path: str, reference: str) -> Manifest | None:
            return Manifest("x", b"something else")

    pulls = Pulls(lambda host: Ledger().meter(Liar()))
    with pytest.raises(MirrorError, match="served a manifest whose digest is sha256:"):
        pulls.manifest("hub", "library/ruby", DIGEST)


@pytest.mark.parametrize(
    ("date", "skew"),
    [
        ("Sun, 07 Dec 2026 14:00:30 GMT", 30.0),
        ("Sun, 07 Dec 2026 13:59:00 GMT", -60.0),
        ("yesterday", None),
        (None, None),
    ],
)
def test_a_registrys_clock_is_read_from_its_date_header(date: str | None, skew: float) -> None:
    now = 1796652000.0  # Sun, 07 Dec 2026 14:00:00 GMT
    assert clock_skew(date, now) == skew


# --- a blob streamed by mirror/http.py -----------------------------------------------------------


class _Blobs(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    stall = threading.Event()  # set: let a stalled answer go on

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BLOB)))
        self.end_headers()
        if self.path == "/stalls":
            self.wfile.write(BLOB[:10])
            self.wfile.flush()
            self.stall.wait(30)
            return
        self.wfile.write(BLOB)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def blobs() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Blobs)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Blobs.stall.clear()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        _Blobs.stall.set()
        server.shutdown()
        server.server_close()


def test_a_streamed_body_waits_for_its_reader_without_a_deadline(blobs: str) -> None:
    http = Http(policy=Policy(timeout=5))
    response = http.request("GET", f"{blobs}/blob", stream=True)
    assert response.status == 200 and response.body is not None
    pieces = response.body.pieces()
    first = next(pieces)
    # While the reader holds a piece (skopeo slowed by its destination), no deadline runs.
    assert response.body._watched.deadline == math.inf
    assert first + b"".join(pieces) == BLOB
    response.body.close()


def test_a_streamed_body_that_stalls_is_cut_and_named(blobs: str) -> None:
    http = Http(policy=Policy(timeout=0.5))
    response = http.request("GET", f"{blobs}/stalls", stream=True)
    assert response.body is not None
    with pytest.raises(RegistryError, match=r"the answer stalled: no progress within 0\.5 s"):
        b"".join(response.body.pieces())
    response.body.close()


def test_a_hurried_body_that_stalls_is_cut_at_the_shorter_deadline_for_good(blobs: str) -> None:
    """ensure's source deadline during a copy it can do without: each piece within it, and
    a stall is not worth another try (the copy is served from ECR instead)."""
    http = Http(policy=Policy(timeout=30))
    with hurried(0.3):
        response = http.request("GET", f"{blobs}/stalls", stream=True)
    assert response.body is not None
    with pytest.raises(RegistryError, match=r"no progress within 0\.3 s") as stalled:
        b"".join(response.body.pieces())
    response.body.close()
    assert stalled.value.transient is False


def test_a_hurried_deadline_holds_inside_code_that_hurries_by_none(blobs: str) -> None:
    """The relay hurries a copy's reads; what it calls (Pulls.manifest, deadline None: 'as you
    were') must not lift it: a held manifest GET waited the whole --timeout."""
    http = Http(policy=Policy(timeout=30))
    with hurried(0.3), hurried(None), hurried(5):
        response = http.request("GET", f"{blobs}/stalls", stream=True)
    assert response.body is not None
    with pytest.raises(RegistryError, match=r"no progress within 0\.3 s"):
        b"".join(response.body.pieces())
    response.body.close()


def test_a_hurried_request_gives_up_on_its_host_for_hurried_requests_only() -> None:
    """A source that does not answer a hurried request within its deadline is not asked
    again by hurried ones, but an image nothing else can give still gets the whole time."""
    http = Http(policy=Policy(timeout=0.6))
    with Raw(never_answers) as silent:
        url = f"http://{silent.host}/v2/"
        with hurried(0.2), pytest.raises(RegistryError) as first:
            http.request("GET", url)
        assert (str(first.value), first.value.transient) == (
            f"{silent.host}: no answer within 0.2 s",
            False,
        )
        with hurried(0.2), pytest.raises(RegistryError, match="earlier in this run"):
            http.request("GET", url)
        with pytest.raises(RegistryError) as whole:
            http.request("GET", url)  # not hurried: asked, for its whole deadline
        assert str(whole.value) == f"{silent.host}: no answer within 0.6 s"
        with hurried(5), pytest.raises(RegistryError, match=r"no answer within 0\.6 s \(earlier"):
            http.request("GET", url)  # a deadline longer than the policy's changes nothing


def test_a_streamed_body_is_cut_when_mirror_stops(blobs: str) -> None:
    http = Http(policy=Policy(timeout=30))
    response = http.request("GET", f"{blobs}/stalls", stream=True)
    assert response.body is not None
    threading.Timer(0.2, http.stop).start()
    with pytest.raises(Stopped):
        b"".join(response.body.pieces())
    response.body.close()


def test_answers_to_pulls_that_cross_in_flight_only_lower_the_budget() -> None:
    budgets = Ledger()
    budgets.see("hub", RateLimit(100, 2))  # the check's HEAD
    budgets.pulled("hub", RateLimit(100, 0))  # the second pull's answer came back first
    budgets.pulled("hub", RateLimit(100, 1))
    (budget,) = budgets.snapshot()
    assert (budget.spent, budget.last) == (2, RateLimit(100, 0))
    assert budgets.shortfall("hub", 1) == (
        "hub: pull budget: needs 1, 0 left of 100; run again later"
    )
