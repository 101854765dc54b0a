"""A Docker-Hub-like front over a backend :class:`~tests.standins.registry.Registry` (pull only).

Like Docker Hub it answers ``/v2/...`` with 401 and a Bearer challenge until given a token from
its ``/token`` realm (anonymous, or Basic with the right credentials; wrong ones get 401), scopes
tokens to repositories, answers 401 (not 404) for a repository that does not exist, and with
``limit`` set puts ``ratelimit-*`` headers on every manifest response, spends one pull per
successful manifest GET (never a HEAD) and answers manifest GETs with 429 ``TOOMANYREQUESTS``
once none remain. A pull is taken (checked and spent in one step, under a lock) before the
manifest is read, and given back if none is served: parallel clients never get more pulls
than were left. It counts what it serves and can inject faults. All on 127.0.0.1, over plain
HTTP/1.1 with keep-alive.

What Docker Hub and registries in front of it do besides, each as an option or a method:

- ``rate_header_form``: the ``ratelimit-*`` values as ``100;w=21600`` (``"normal"``), empty
  (``";w=21600"``, ``"empty"``) or as a list (``"100, 100;w=21600"``, ``"list"``), all seen in
  the wild.
- :meth:`HubFront.abuse_limit`: the next N requests of any kind get Docker Hub's abuse-limit
  answer, a plain-text ``429 Too Many Requests`` with ``Retry-After`` (not the pull-limit JSON).
- ``lockout_after``: after that many failed logins for a username the token endpoint answers
  429 ``{"details": "too many failed login attempts for username or IP address"}`` for it, right
  password or not, for ``lockout_seconds`` (Docker Hub: about 10 minutes); see
  :meth:`HubFront.lock_out`.
- ``head``: manifest HEADs answered normally (``"digest"``), without ``Docker-Content-Digest``
  (``"no-digest"``) or with 405 (``"405"``), as some registries and proxies do.
- ``mismatch_digest``: a manifest GET by tag serves the JSON re-serialised, while HEAD and GET
  still announce the stored digest in ``Docker-Content-Digest`` (a GET by digest is left alone:
  clients check those).
- Two fronts over one backend are two registry hosts with their own budgets and counts.
- Tokens expire as Docker Hub's do: ``expires_in`` (``token_lifetime``, 300 s) after their
  ``issued_at``, both by the front's clock, which ``clock_offset`` sets ahead of the machine's
  (its ``Date`` header too); :meth:`HubFront.expire_tokens` ages every token issued past its
  end, as a long copy would.

- ``referrers``: whether Docker Hub serves the OCI 1.1 referrers API is not settled (FACTS.md
  has nothing; Docker's registry docs say Hub implements distribution-spec 1.0.1, an AWS
  maintainer wrote in December 2025 that Hub had added it, a Docker roadmap issue asking for
  it was still open). ``"none"`` (the default) answers ``/v2/<name>/referrers/<digest>`` 404
  ``NOT_FOUND``, so a client must fall back to the tag schema; ``"api"`` serves it (an OCI
  index of the descriptors of the manifests whose ``subject`` is that digest, read from the
  backend's storage, no ``artifactType`` filter), costing no pull; ``"api-pull"`` serves it
  and counts each listing as a pull, the strictest reading. Either way every manifest GET of
  a referrer (by digest) is a pull and a HEAD is not, as for any manifest.

The token realm is built from the request's ``Host`` header, so a front reached under another
name (through :class:`~tests.standins.proxy.ForwardProxy`) sends clients back through that name.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import urllib3

from tests.standins.front import (
    CHUNK,
    FrontHandler,
    HttpFront,
    basic_credentials,
    same_credentials,
)
from tests.standins.registry import referrers_at

SERVICE = "hub.test"
RATE_LIMIT_WINDOW = 21600
TOO_MANY_REQUESTS = (
    "You have reached your pull rate limit. You may increase the limit by authenticating and "
    "upgrading: https://www.docker.com/increase-rate-limit"
)
LOGIN_LOCKED = "too many failed login attempts for username or IP address"
ABUSE_BODY = "Too Many Requests\n"
FAULT_KINDS = ("manifest", "manifest_get", "manifest_head", "blob", "token", "tags", "any")
RATE_HEADER_FORMS = ("normal", "empty", "list")
HEAD_MODES = ("digest", "no-digest", "405")
REFERRERS_MODES = ("none", "api", "api-pull")
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
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
HOLD_LIMIT = 60.0  # seconds a held pull waits at most: a forgotten release() fails, not hangs
_V2_PATH = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs|tags|referrers)/(?P<ref>[^/]+)$")


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
    token_failed: int = 0  # wrong credentials (answered 401)
    token_locked: int = 0  # refused with 429 during a login lockout
    tags_list: int = 0
    referrers_list: int = 0  # referrers API requests that passed auth
    status_429: int = 0  # every 429, whatever its kind
    abuse_429: int = 0  # the plain-text abuse-limit 429s among them
    connections: int = 0  # TCP connections accepted (keep-alive reuse shows as fewer)
    requests: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status)


@dataclass
class _Token:
    repos: frozenset[str]
    authenticated: bool
    expires: float = float("inf")  # time.time() + clock_offset at which it stops working


@dataclass
class _Fault:
    kind: str
    status: int
    times: int


class HubFront(HttpFront):
    """A Docker-Hub-like registry front; see the module docstring.

    ``count_digest_gets=False`` spends pulls only on manifest GETs by tag. ``retry_after``
    adds ``Retry-After: <seconds>`` to 429 answers; Docker Hub sends none, and then skopeo 1.9
    retries a 429 five times over 30 s (2+4+8+16 s) before it fails; with ``retry_after=0`` it
    makes the same five GETs at once, which keeps tests of skopeo on a spent budget fast.
    """

    server_name = "hub-standin"

    def __init__(
        self,
        backend_url: str,
        *,
        limit: int | None = None,
        credentials: tuple[str, str] | None = None,
        delay: float = 0.0,
        count_digest_gets: bool = True,
        retry_after: int | None = None,
        rate_header_form: str = "normal",
        head: str = "digest",
        mismatch_digest: bool = False,
        lockout_after: int | None = None,
        lockout_seconds: float = 600.0,
        clock_offset: float = 0.0,
        token_lifetime: int = 300,
        tls: ssl.SSLContext | None = None,
        referrers: str = "none",
    ) -> None:
        super().__init__()
        if referrers not in REFERRERS_MODES:
            raise ValueError(f"referrers must be one of {REFERRERS_MODES}")
        self.referrers = referrers
        self.tls = tls  # HTTPS only (a private CA's certificate), its token realm too
        self.clock_offset = clock_offset
        self.token_lifetime = token_lifetime
        if rate_header_form not in RATE_HEADER_FORMS:
            raise ValueError(f"rate_header_form must be one of {RATE_HEADER_FORMS}")
        if head not in HEAD_MODES:
            raise ValueError(f"head must be one of {HEAD_MODES}")
        self.backend_url = backend_url.rstrip("/")
        self.limit = limit
        self.credentials = credentials
        self.delay = delay
        self.count_digest_gets = count_digest_gets
        self.retry_after = retry_after
        self.rate_header_form = rate_header_form
        self.head = head
        self.mismatch_digest = mismatch_digest
        self.lockout_after = lockout_after
        self.lockout_seconds = lockout_seconds
        self._remaining = limit if limit is not None else 0
        self._counts = HubCounts()
        self._tokens: dict[str, _Token] = {}
        self._faults: list[_Fault] = []
        self._abuse: tuple[int, int] | None = None  # (times left, Retry-After seconds)
        self._failed_logins: dict[str, int] = {}
        self._locked_until: dict[str | None, float] = {}  # None: every login from "this IP"
        self._cut_after: int | None = None
        self._cut_times: int | None = None
        self._open = threading.Event()  # cleared by hold(): pulls wait
        self._open.set()
        self._stall_after: int | None = None  # stall_blobs(): bytes of a blob sent, then a stall
        self._flowing = threading.Event()  # cleared by stall_blobs(): stalled blobs wait
        self._flowing.set()
        self._held = 0  # pulls waiting now
        self._backend = urllib3.PoolManager(
            maxsize=16, retries=False, timeout=urllib3.Timeout(connect=5, read=60)
        )

    def _stopped(self) -> None:
        self._flowing.set()  # a stalled blob ends with the front
        self._backend.clear()

    # -- test controls ----------------------------------------------------------------------

    @property
    def counts(self) -> HubCounts:
        with self._lock:
            return replace(self._counts, requests=list(self._counts.requests))

    def hold(self) -> None:
        """From now on, manifest and blob GETs wait until :meth:`release` (at most
        ``HOLD_LIMIT`` seconds); HEADs, tag lists and tokens do not. An image behind a held
        front cannot be copied until the test says so, whatever the machine's speed.
        """
        self._open.clear()

    def release(self) -> None:
        """Let held and later pulls through, and stalled blobs go on."""
        self._open.set()
        with self._lock:
            self._stall_after = None
        self._flowing.set()

    @property
    def held(self) -> int:
        """How many pulls wait behind :meth:`hold` now."""
        with self._lock:
            return self._held

    def expire_tokens(self) -> None:
        """Age every token issued past its ``expires_in``: the next request with one is 401,
        as after a long copy (the token endpoint still answers)."""
        with self._lock:
            for token in self._tokens.values():
                token.expires = self._now()

    def _now(self) -> float:
        return time.time() + self.clock_offset

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

    def abuse_limit(self, times: int = 1, *, retry_after: int = 60) -> None:
        """The next ``times`` requests, of any kind and before auth, hit the abuse limit.

        The answer is a plain ``429 Too Many Requests`` (text/plain, ``Retry-After``), not the
        pull-limit JSON, and spends no pull.
        """
        with self._lock:
            self._abuse = (times, retry_after)

    def lock_out(self, username: str | None = None, *, seconds: float | None = None) -> None:
        """Refuse logins of ``username`` (``None``: every request to the token endpoint, as
        when the IP address is locked) with 429 for ``seconds`` (default ``lockout_seconds``).
        """
        with self._lock:
            self._locked_until[username] = time.monotonic() + (
                self.lockout_seconds if seconds is None else seconds
            )

    def cut_blobs(self, after_bytes: int, *, times: int | None = None) -> None:
        """Blob GETs send the full Content-Length, ``after_bytes`` bytes, then drop the line."""
        with self._lock:
            self._cut_after, self._cut_times = after_bytes, times

    def stall_blobs(self, after_bytes: int) -> None:
        """From now on, blob GETs send the full Content-Length and ``after_bytes`` bytes, then
        send nothing more (the connection stays open) until :meth:`release` (at most
        ``HOLD_LIMIT`` seconds), as a blob store that stops mid-layer."""
        with self._lock:
            self._stall_after = after_bytes
        self._flowing.clear()

    def clear_faults(self) -> None:
        """Forget injected faults, the abuse limit, lockouts and failed-login counts."""
        with self._lock:
            self._faults.clear()
            self._abuse = None
            self._locked_until.clear()
            self._failed_logins.clear()
            self._cut_after = self._cut_times = None

    def revoke_tokens(self) -> None:
        """Forget every token issued, as if all had expired."""
        with self._lock:
            self._tokens.clear()

    # -- internals --------------------------------------------------------------------------

    def _connected(self) -> None:
        self._counts.connections += 1

    def _answered(self, req: FrontHandler, status: int) -> None:
        self._counts.requests.append((req.command, req.path, status))
        if status == 429:
            self._counts.status_429 += 1

    def _take_fault(self, *kinds: str) -> int | None:
        with self._lock:
            for fault in self._faults:
                if fault.kind in (*kinds, "any"):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault.status
        return None

    def _take_abuse(self) -> int | None:
        with self._lock:
            if self._abuse is None:
                return None
            times, retry_after = self._abuse
            self._abuse = (times - 1, retry_after) if times > 1 else None
            self._counts.abuse_429 += 1
            return retry_after

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

    def _handle(self, req: FrontHandler) -> None:
        if self.delay:
            time.sleep(self.delay)
        match = _V2_PATH.match(urlsplit(req.path).path)
        held = match is not None and match["kind"] in ("manifests", "blobs")
        if req.command == "GET" and held and not self._open.is_set():
            with self._lock:
                self._held += 1
            try:
                self._open.wait(HOLD_LIMIT)
            finally:
                with self._lock:
                    self._held -= 1
        self._route(req, req.command)

    def _route(self, req: FrontHandler, method: str) -> int:  # noqa: PLR0911 - a router
        abuse = self._take_abuse()
        if abuse is not None:
            return self._send_text(req, 429, ABUSE_BODY, {"Retry-After": str(abuse)})
        parts = urlsplit(req.path)
        path, query = parts.path, parse_qs(parts.query)
        if path == "/token" and method in ("GET", "HEAD"):
            return self._token(req, query)
        match = _V2_PATH.match(path)
        if match and match["kind"] == "referrers" and self.referrers == "none":
            match = None
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
        if kind == "referrers":
            return self._referrers(req, method, match["name"], ref)
        if ref == "list":
            return self._tags(req, method, match["name"], query)
        return self._error(req, 404, "NOT_FOUND", "no such endpoint")

    # auth

    def _token(self, req: FrontHandler, query: dict[str, list[str]]) -> int:
        with self._lock:
            self._counts.token += 1
        fault = self._take_fault("token")
        if fault is not None:
            return self._error(req, fault, _ERROR_CODES.get(fault, "UNKNOWN"), "injected fault")
        header = req.headers.get("Authorization", "")
        user, right = self._basic(header) if header else (None, False)
        if self._locked(user):
            with self._lock:
                self._counts.token_locked += 1
            return self._send_json(req, 429, {"details": LOGIN_LOCKED})
        if header and not right:
            self._failed_login(user)
            return self._send_json(req, 401, {"details": "incorrect username or password"})
        repos = set()
        for scope in query.get("scope", []):
            for one in scope.split(" "):
                bits = one.split(":")
                if len(bits) == 3 and bits[0] == "repository":
                    repos.add(bits[1])
        token = secrets.token_urlsafe(24)
        now = self._now()
        with self._lock:
            self._tokens[token] = _Token(frozenset(repos), right, now + self.token_lifetime)
            if right:
                self._counts.token_authenticated += 1
            else:
                self._counts.token_anonymous += 1
        issued = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "token": token,
            "access_token": token,
            "expires_in": self.token_lifetime,
            "issued_at": issued,
        }
        return self._send_json(req, 200, body)

    def _basic(self, header: str) -> tuple[str | None, bool]:
        """(user name, whether the credentials are right) from a Basic Authorization header."""
        given = basic_credentials(header)
        if given is None:
            return None, False
        return given[0], self.credentials is not None and same_credentials(given, self.credentials)

    def _locked(self, user: str | None) -> bool:
        now = time.monotonic()
        with self._lock:
            keys = (None,) if user is None else (None, user)
            return any(self._locked_until.get(key, 0.0) > now for key in keys)

    def _failed_login(self, user: str | None) -> None:
        with self._lock:
            self._counts.token_failed += 1
            if user is None or self.lockout_after is None:
                return
            failures = self._failed_logins.get(user, 0) + 1
            self._failed_logins[user] = failures
            if failures >= self.lockout_after:
                self._failed_logins[user] = 0
                self._locked_until[user] = time.monotonic() + self.lockout_seconds

    def _authorized(self, req: FrontHandler, name: str | None) -> bool:
        scheme, _, token = req.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        with self._lock:
            info = self._tokens.get(token.strip())
        if info is None or info.expires <= self._now():
            return False
        return name is None or name in info.repos

    def _challenge(self, req: FrontHandler, name: str | None, *, missing: bool = False) -> int:
        """401 as Docker Hub sends it; ``missing``: the token was fine but the repository does
        not exist, which Docker Hub does not admit to (no 404, ``error="insufficient_scope"``).
        """
        realm_host = req.headers.get("Host") or self.host
        scheme = "https" if self.tls else "http"
        challenge = f'Bearer realm="{scheme}://{realm_host}/token",service="{SERVICE}"'
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

    def _rate_value(self, n: int) -> str:
        window = f";w={RATE_LIMIT_WINDOW}"
        if self.rate_header_form == "empty":
            return window
        if self.rate_header_form == "list":
            return f"{n}, {n}{window}"
        return f"{n}{window}"

    def _rate_headers(self) -> dict[str, str]:
        if self.limit is None:
            return {}
        with self._lock:
            remaining = self._remaining
        return {
            "ratelimit-limit": self._rate_value(self.limit),
            "ratelimit-remaining": self._rate_value(remaining),
            "docker-ratelimit-source": "127.0.0.1",
        }

    def _manifest(self, req: FrontHandler, method: str, name: str, ref: str) -> int:
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
        if method == "HEAD" and self.head == "405":
            return self._send(req, 405, {"Allow": "GET", **self._rate_headers()}, b"")
        costs = method == "GET" and self.limit is not None
        costs = costs and (self.count_digest_gets or not ref.startswith("sha256:"))
        if costs and not self._take_pull():
            return self._error(req, 429, "TOOMANYREQUESTS", TOO_MANY_REQUESTS, self._rate_headers())
        accept = ", ".join(req.headers.get_all("Accept") or [])
        try:
            resp = self._backend.request(
                method,
                f"{self.backend_url}/v2/{name}/manifests/{ref}",
                headers={"Accept": accept} if accept else {},
            )
        except BaseException:
            if costs:
                self._give_back_pull()
            raise
        if costs and resp.status != 200:
            self._give_back_pull()  # only a manifest served is a pull
        if resp.status == 404 and not self._repo_exists(name):
            return self._challenge(req, name, missing=True)
        if resp.status == 200 and method == "GET":
            with self._lock:
                self._counts.manifest_get_ok += 1
        headers = {**self._passed(resp), **self._rate_headers()}
        if method == "HEAD" and self.head == "no-digest":
            headers.pop("Docker-Content-Digest", None)
        body = b"" if method == "HEAD" else resp.data
        if self.mismatch_digest and method == "GET" and resp.status == 200:
            body = _reserialised(body) if not ref.startswith("sha256:") else body
        return self._send(req, resp.status, headers, body)

    def _take_pull(self) -> bool:
        """Spend one pull if one is left. The check and the spend are one step under the lock,
        as on Docker Hub: parallel clients never get more pulls than were left."""
        with self._lock:
            if self._remaining <= 0:
                return False
            self._remaining -= 1
            return True

    def _give_back_pull(self) -> None:
        with self._lock:
            self._remaining += 1

    def _blob(self, req: FrontHandler, method: str, name: str, digest: str) -> int:
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
            with self._lock:
                stall = self._stall_after if resp.status in (200, 206) else None
            sent = 0
            for chunk in resp.stream(CHUNK):
                rest = chunk
                if stall is not None and sent + len(chunk) > stall:
                    req.wfile.write(chunk[: stall - sent])
                    req.wfile.flush()
                    with self._lock:
                        self._counts.blob_bytes += stall - sent
                    self._flowing.wait(HOLD_LIMIT)
                    rest, sent, stall = chunk[stall - sent :], stall, None
                piece = rest if limit is None else rest[: limit - sent]
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

    def _referrers(self, req: FrontHandler, method: str, name: str, digest: str) -> int:
        """The referrers API (``referrers="api"`` or ``"api-pull"``): see the module docstring."""
        with self._lock:
            self._counts.referrers_list += 1
        if not self._repo_exists(name):
            return self._challenge(req, name, missing=True)
        costs = self.referrers == "api-pull" and self.limit is not None and method == "GET"
        if costs and not self._take_pull():
            return self._error(req, 429, "TOOMANYREQUESTS", TOO_MANY_REQUESTS, self._rate_headers())
        found = referrers_at(self.backend_url, name, digest)
        if found is None:
            raise RuntimeError(f"{self.backend_url}: not a tests.standins.registry.Registry")
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": found}
        headers = {"Content-Type": OCI_INDEX, **self._rate_headers()}
        return self._send(req, 200, headers, json.dumps(index).encode())

    def _tags(self, req: FrontHandler, method: str, name: str, query: dict[str, list[str]]) -> int:
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

    def _error(
        self,
        req: FrontHandler,
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


def _reserialised(body: bytes) -> bytes:
    """The same JSON document in other bytes (so with another digest)."""
    again = (json.dumps(json.loads(body), indent=3) + "\n").encode()
    return again if again != body else again + b"\n"
