"""A Docker-Hub-like front over a backend :class:`~tests.standins.registry.Registry` (pull only).

Like Docker Hub it answers ``/v2/...`` with 401 and a Bearer challenge until given a token from
its ``/token`` realm (anonymous, or Basic with the right credentials; wrong ones get 401), scopes
tokens to repositories, answers 401 (not 404) for a repository that does not exist, and with
``limit`` set puts ``ratelimit-*`` headers on every manifest response, spends one pull per
successful manifest GET (never a HEAD) and answers manifest GETs with 429 ``TOOMANYREQUESTS``
once none remain. It counts what it serves and can inject faults. All on 127.0.0.1, over plain
HTTP/1.1 with keep-alive.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import urllib3

from tests.standins.service import Service

SERVICE = "hub.test"
RATE_LIMIT_WINDOW = 21600
TOO_MANY_REQUESTS = (
    "You have reached your pull rate limit. You may increase the limit by authenticating and "
    "upgrading: https://www.docker.com/increase-rate-limit"
)
FAULT_KINDS = ("manifest", "manifest_get", "manifest_head", "blob", "token", "tags", "any")
_ERROR_CODES = {
    400: "UNSUPPORTED",
    401: "UNAUTHORIZED",
    403: "DENIED",
    404: "NOT_FOUND",
    405: "UNSUPPORTED",
    429: "TOOMANYREQUESTS",
    500: "UNKNOWN",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "UNAVAILABLE",
}
_PASSED_HEADERS = (
    "Content-Type",
    "Content-Length",
    "Content-Range",
    "Docker-Content-Digest",
    "Docker-Distribution-Api-Version",
    "ETag",
    "Link",
)
_V2_PATH = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs|tags)/(?P<ref>[^/]+)$")
_CHUNK = 64 * 1024


@dataclass
class HubCounts:
    """What the front served. ``HubFront.counts`` hands out a copy (a snapshot).

    The per-endpoint counters count requests that got past auth (a 401 challenge is in
    ``requests`` only); ``requests`` lists every answer, in the order they were sent.
    """

    manifest_get: int = 0  # every manifest GET, whatever its answer
    manifest_get_ok: int = 0  # manifest GETs answered 200
    manifest_head: int = 0
    blob_get: int = 0
    blob_head: int = 0
    blob_bytes: int = 0  # blob body bytes actually sent
    token: int = 0  # requests to the token endpoint
    token_anonymous: int = 0  # tokens issued without credentials
    token_authenticated: int = 0  # tokens issued for the right Basic credentials
    tags_list: int = 0
    status_429: int = 0
    connections: int = 0  # TCP connections accepted (keep-alive reuse shows as fewer)
    requests: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status)


@dataclass
class _Token:
    repos: frozenset[str]
    authenticated: bool


@dataclass
class _Fault:
    kind: str
    status: int
    times: int


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # the default 5 drops bursts of parallel connects
    front: HubFront

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients dropping connections (skopeo probing with TLS, cut blobs) are normal here;
        # anything else is a bug in the stand-in and gets the usual traceback on stderr.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hub-standin"
    sys_version = ""
    timeout = 60  # idle keep-alive connections end eventually
    server: _Server
    response_started = False

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.server.front._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.front._track(self.connection, add=False)

    def handle_one_request(self) -> None:
        self.response_started = False
        super().handle_one_request()

    def do_GET(self) -> None:
        self.server.front._handle(self, "GET")

    def do_HEAD(self) -> None:
        self.server.front._handle(self, "HEAD")

    def _not_supported(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.front._handle(self, self.command)

    do_POST = do_PUT = do_PATCH = do_DELETE = _not_supported


class HubFront(Service):
    """A Docker-Hub-like registry front; see the module docstring.

    ``count_digest_gets=False`` spends pulls only on manifest GETs by tag. ``retry_after``
    adds ``Retry-After: <seconds>`` to 429 answers; Docker Hub sends none, and then skopeo 1.9
    retries a 429 five times over 30 s (2+4+8+16 s) before it fails; with ``retry_after=0`` it
    makes the same five GETs at once, which keeps tests of skopeo on a spent budget fast.
    """

    def __init__(
        self,
        backend_url: str,
        *,
        limit: int | None = None,
        credentials: tuple[str, str] | None = None,
        delay: float = 0.0,
        count_digest_gets: bool = True,
        retry_after: int | None = None,
    ) -> None:
        self.backend_url = backend_url.rstrip("/")
        self.limit = limit
        self.credentials = credentials
        self.delay = delay
        self.count_digest_gets = count_digest_gets
        self.retry_after = retry_after
        self._lock = threading.Lock()
        self._remaining = limit if limit is not None else 0
        self._counts = HubCounts()
        self._tokens: dict[str, _Token] = {}
        self._faults: list[_Fault] = []
        self._cut_after: int | None = None
        self._cut_times: int | None = None
        self._connections: set[socket.socket] = set()
        self._backend = urllib3.PoolManager(
            maxsize=16, retries=False, timeout=urllib3.Timeout(connect=5, read=60)
        )
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> HubFront:
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", 0), _Handler)
        server.front = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # wake handler threads parked on idle keep-alive reads
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._backend.clear()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("HubFront not started")
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    # -- test controls ----------------------------------------------------------------------

    @property
    def counts(self) -> HubCounts:
        with self._lock:
            return replace(self._counts, requests=list(self._counts.requests))

    def reset_counts(self) -> None:
        with self._lock:
            self._counts = HubCounts()

    @property
    def remaining(self) -> int:
        with self._lock:
            return self._remaining

    def set_remaining(self, n: int) -> None:
        with self._lock:
            self._remaining = n

    def fail_next(self, status: int, *, times: int = 1, kind: str = "manifest") -> None:
        """The next ``times`` requests of ``kind`` (that passed auth) answer ``status``.

        Kinds: ``manifest`` (GET and HEAD), ``manifest_get``, ``manifest_head``, ``blob``,
        ``token``, ``tags`` or ``any`` of them.
        The body is Docker's error JSON (``TOOMANYREQUESTS`` for 429, ``UNAVAILABLE`` for 503,
        ``UNKNOWN`` for 500, ...); manifest answers keep their ``ratelimit-*`` headers.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {FAULT_KINDS}")
        with self._lock:
            self._faults.append(_Fault(kind, status, times))

    def cut_blobs(self, after_bytes: int, *, times: int | None = None) -> None:
        """Blob GETs send the full Content-Length, ``after_bytes`` bytes, then drop the line."""
        with self._lock:
            self._cut_after, self._cut_times = after_bytes, times

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._cut_after = self._cut_times = None

    def revoke_tokens(self) -> None:
        """Forget every token issued, as if all had expired."""
        with self._lock:
            self._tokens.clear()

    # -- internals --------------------------------------------------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
                self._counts.connections += 1
            else:
                self._connections.discard(conn)

    def _take_fault(self, *kinds: str) -> int | None:
        with self._lock:
            for fault in self._faults:
                if fault.kind in (*kinds, "any"):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault.status
        return None

    def _take_cut(self) -> int | None:
        with self._lock:
            if self._cut_after is None:
                return None
            after = self._cut_after
            if self._cut_times is not None:
                self._cut_times -= 1
                if self._cut_times <= 0:
                    self._cut_after = self._cut_times = None
            return after

    def _handle(self, req: _Handler, method: str) -> None:
        if self.delay:
            time.sleep(self.delay)
        try:
            self._route(req, method)
        except urllib3.exceptions.HTTPError as err:  # backend unreachable or cut off
            req.close_connection = True
            if not req.response_started:
                self._error(req, 502, "UNAVAILABLE", f"backend: {err}")
        except OSError:  # the client went away
            req.close_connection = True

    def _route(self, req: _Handler, method: str) -> int:  # noqa: PLR0911 - a router
        parts = urlsplit(req.path)
        path, query = parts.path, parse_qs(parts.query)
        if path == "/token" and method in ("GET", "HEAD"):
            return self._token(req, query)
        match = _V2_PATH.match(path)
        if path != "/v2/" and match is None:
            return self._error(req, 404, "NOT_FOUND", "no such endpoint")
        name = match["name"] if match else None
        if not self._authorized(req, name):
            return self._challenge(req, name)
        if method not in ("GET", "HEAD"):
            return self._error(req, 405, "UNSUPPORTED", "this front serves pulls only")
        if match is None:
            api_version = {"Docker-Distribution-Api-Version": "registry/2.0"}
            return self._send_json(req, 200, {}, api_version)
        kind, ref = match["kind"], match["ref"]
        if kind == "manifests":
            return self._manifest(req, method, match["name"], ref)
        if kind == "blobs":
            return self._blob(req, method, match["name"], ref)
        if ref == "list":
            return self._tags(req, method, match["name"], query)
        return self._error(req, 404, "NOT_FOUND", "no such endpoint")

    # auth

    def _token(self, req: _Handler, query: dict[str, list[str]]) -> int:
        with self._lock:
            self._counts.token += 1
        fault = self._take_fault("token")
        if fault is not None:
            return self._error(req, fault, _ERROR_CODES.get(fault, "UNKNOWN"), "injected fault")
        authenticated = False
        header = req.headers.get("Authorization", "")
        if header:
            if not self._basic_ok(header):
                return self._send_json(req, 401, {"details": "incorrect username or password"})
            authenticated = True
        repos = set()
        for scope in query.get("scope", []):
            for one in scope.split(" "):
                bits = one.split(":")
                if len(bits) == 3 and bits[0] == "repository":
                    repos.add(bits[1])
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = _Token(frozenset(repos), authenticated)
            if authenticated:
                self._counts.token_authenticated += 1
            else:
                self._counts.token_anonymous += 1
        issued = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {"token": token, "access_token": token, "expires_in": 300, "issued_at": issued}
        return self._send_json(req, 200, body)

    def _basic_ok(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or self.credentials is None:
            return False
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, _, password = decoded.partition(":")
        want_user, want_password = self.credentials
        return secrets.compare_digest(user, want_user) and secrets.compare_digest(
            password, want_password
        )

    def _authorized(self, req: _Handler, name: str | None) -> bool:
        scheme, _, token = req.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        with self._lock:
            info = self._tokens.get(token.strip())
        return info is not None and (name is None or name in info.repos)

    def _challenge(self, req: _Handler, name: str | None, *, missing: bool = False) -> int:
        """401 as Docker Hub sends it; ``missing``: the token was fine but the repository does
        not exist, which Docker Hub does not admit to (no 404, ``error="insufficient_scope"``).
        """
        challenge = f'Bearer realm="{self.url}/token",service="{SERVICE}"'
        detail = None
        if name is not None:
            challenge += f',scope="repository:{name}:pull"'
            detail = [{"Type": "repository", "Class": "", "Name": name, "Action": "pull"}]
        if missing:
            challenge += ',error="insufficient_scope"'
        return self._error(
            req,
            401,
            "UNAUTHORIZED",
            "authentication required",
            {"WWW-Authenticate": challenge},
            detail=detail,
        )

    def _repo_exists(self, name: str) -> bool:
        return self._backend.request("GET", f"{self.backend_url}/v2/{name}/tags/list").status == 200

    # endpoints

    def _rate_headers(self) -> dict[str, str]:
        if self.limit is None:
            return {}
        with self._lock:
            remaining = self._remaining
        return {
            "ratelimit-limit": f"{self.limit};w={RATE_LIMIT_WINDOW}",
            "ratelimit-remaining": f"{remaining};w={RATE_LIMIT_WINDOW}",
            "docker-ratelimit-source": "127.0.0.1",
        }

    def _manifest(self, req: _Handler, method: str, name: str, ref: str) -> int:
        with self._lock:
            if method == "GET":
                self._counts.manifest_get += 1
            else:
                self._counts.manifest_head += 1
        fault = self._take_fault("manifest", f"manifest_{method.lower()}")
        if fault is not None:
            code = _ERROR_CODES.get(fault, "UNKNOWN")
            message = TOO_MANY_REQUESTS if fault == 429 else "injected fault"
            return self._error(req, fault, code, message, self._rate_headers())
        costs = method == "GET" and self.limit is not None
        costs = costs and (self.count_digest_gets or not ref.startswith("sha256:"))
        if costs:
            with self._lock:
                spent = self._remaining <= 0
            if spent:
                return self._error(
                    req, 429, "TOOMANYREQUESTS", TOO_MANY_REQUESTS, self._rate_headers()
                )
        accept = ", ".join(req.headers.get_all("Accept") or [])
        resp = self._backend.request(
            method,
            f"{self.backend_url}/v2/{name}/manifests/{ref}",
            headers={"Accept": accept} if accept else {},
        )
        if resp.status == 404 and not self._repo_exists(name):
            return self._challenge(req, name, missing=True)
        if resp.status == 200 and method == "GET":
            with self._lock:
                self._counts.manifest_get_ok += 1
                if costs:
                    self._remaining = max(0, self._remaining - 1)
        headers = {**self._passed(resp), **self._rate_headers()}
        return self._send(req, resp.status, headers, b"" if method == "HEAD" else resp.data)

    def _blob(self, req: _Handler, method: str, name: str, digest: str) -> int:
        with self._lock:
            if method == "GET":
                self._counts.blob_get += 1
            else:
                self._counts.blob_head += 1
        fault = self._take_fault("blob")
        if fault is not None:
            return self._error(req, fault, _ERROR_CODES.get(fault, "UNKNOWN"), "injected fault")
        headers = {}
        if req.headers.get("Range"):
            headers["Range"] = req.headers["Range"]
        resp = self._backend.request(
            method,
            f"{self.backend_url}/v2/{name}/blobs/{digest}",
            headers=headers,
            preload_content=False,
        )
        try:
            if method == "GET" and "Content-Length" not in resp.headers:  # not from distribution
                return self._send(req, resp.status, self._passed(resp), resp.read())
            self._start_response(req, resp.status, self._passed(resp))
            if method == "HEAD":
                return resp.status
            limit = self._take_cut() if resp.status in (200, 206) else None
            sent = 0
            for chunk in resp.stream(_CHUNK):
                piece = chunk if limit is None else chunk[: limit - sent]
                req.wfile.write(piece)
                sent += len(piece)
                with self._lock:
                    self._counts.blob_bytes += len(piece)
                if limit is not None and sent >= limit:
                    req.wfile.flush()
                    req.connection.shutdown(socket.SHUT_RDWR)
                    req.close_connection = True
                    break
            return resp.status
        finally:
            resp.release_conn()

    def _tags(self, req: _Handler, method: str, name: str, query: dict[str, list[str]]) -> int:
        """Tags sorted, paginated with ``n``/``last`` and a ``Link`` to the next page.

        Docker Hub paginates; distribution 2.8 ignores ``n`` and ``last`` on tags and returns
        them unsorted, so the front pages the backend's full list itself.
        """
        with self._lock:
            self._counts.tags_list += 1
        fault = self._take_fault("tags")
        if fault is not None:
            return self._error(req, fault, _ERROR_CODES.get(fault, "UNKNOWN"), "injected fault")
        resp = self._backend.request("GET", f"{self.backend_url}/v2/{name}/tags/list")
        if resp.status == 404:
            return self._challenge(req, name, missing=True)
        if resp.status != 200:
            return self._send(req, resp.status, self._passed(resp), resp.data)
        tags = sorted(json.loads(resp.data).get("tags") or [])
        if "last" in query:
            tags = [tag for tag in tags if tag > query["last"][0]]
        headers = {}
        n = int(query["n"][0]) if "n" in query else None
        if n is not None and len(tags) > n > 0:
            tags = tags[:n]
            next_page = urlencode({"last": tags[-1], "n": n})
            headers["Link"] = f'</v2/{name}/tags/list?{next_page}>; rel="next"'
        elif n is not None:
            tags = tags[: max(n, 0)]
        return self._send_json(req, 200, {"name": name, "tags": tags}, headers)

    # responses

    @staticmethod
    def _passed(resp: urllib3.BaseHTTPResponse) -> dict[str, str]:
        return {key: resp.headers[key] for key in _PASSED_HEADERS if key in resp.headers}

    def _start_response(self, req: _Handler, status: int, headers: dict[str, str]) -> None:
        req.response_started = True
        with self._lock:  # logged as answered, so the order is the order of the answers
            self._counts.requests.append((req.command, req.path, status))
            if status == 429:
                self._counts.status_429 += 1
        req.send_response(status)
        for key, value in headers.items():
            req.send_header(key, value)
        if "Content-Length" not in headers:
            req.send_header("Content-Length", "0")
        req.end_headers()

    def _send(self, req: _Handler, status: int, headers: dict[str, str], body: bytes) -> int:
        if req.command != "HEAD" or "Content-Length" not in headers:
            headers = {**headers, "Content-Length": str(len(body))}
        self._start_response(req, status, headers)
        if req.command != "HEAD":
            req.wfile.write(body)
        return status

    def _send_json(
        self, req: _Handler, status: int, doc: Any, headers: dict[str, str] | None = None
    ) -> int:
        body = json.dumps(doc).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        return self._send(req, status, all_headers, body)

    def _error(
        self,
        req: _Handler,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        detail: Any = None,
    ) -> int:
        doc = {"errors": [{"code": code, "message": message, "detail": detail}]}
        if status == 429 and self.retry_after is not None:
            headers = {**(headers or {}), "Retry-After": str(self.retry_after)}
        return self._send_json(req, status, doc, headers)
