"""The one module that speaks HTTP to registries: manifest HEADs, token flow, rate-limit headers.

A HEAD on a manifest costs no Docker Hub pull, so change detection lives here. Connections are
pooled and reused across threads; tokens are cached per repository scope until they expire.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import urllib3
from urllib3.util import Retry, Timeout

from mirror.errors import AuthError, RateLimited, RegistryError
from mirror.reference import api_host

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
ACCEPT = ", ".join(MANIFEST_TYPES)
INDEX_TYPES = MANIFEST_TYPES[:2]
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_TOKEN_MARGIN = 10.0  # seconds: renew a token this long before it expires


@dataclass(frozen=True)
class Login:
    """A username and password for one registry; the password never shows in a repr."""

    username: str
    password: str = field(repr=False)

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


@dataclass(frozen=True)
class RateLimit:
    """Docker Hub's `ratelimit-limit` / `ratelimit-remaining` headers (pulls per window)."""

    limit: int
    remaining: int


@dataclass(frozen=True)
class Head:
    """What a manifest HEAD told: whether the tag exists, its digest, and the budget left."""

    found: bool
    digest: str | None = None
    rate_limit: RateLimit | None = None
    media_type: str = ""
    size: int = 0

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


@dataclass
class _Challenge:
    scheme: str  # "bearer" or "basic"
    realm: str = ""
    service: str = ""


def parse_rate_limit(headers: Any) -> RateLimit | None:
    """`ratelimit-limit: 100;w=21600` and `ratelimit-remaining: 76;w=21600`; absent = unlimited."""
    limit, remaining = headers.get("ratelimit-limit"), headers.get("ratelimit-remaining")
    if limit is None or remaining is None:
        return None
    try:
        return RateLimit(int(limit.split(";")[0]), int(remaining.split(";")[0]))
    except ValueError:
        return None


def _retry_policy(retries: int) -> Retry:
    # Transient faults only; 429 is never retried here: the caller stops pulling instead.
    return Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        status_forcelist=(500, 502, 503, 504),
        allowed_methods=("HEAD", "GET"),
        backoff_factor=0.3,
        backoff_jitter=0.3,
        backoff_max=5.0,
        raise_on_status=False,
        respect_retry_after_header=False,
    )


class Http:
    """The shared connection pool; one per run, safe to use from many threads."""

    def __init__(self, *, retries: int = 3, timeout: float = 30.0, pool_size: int = 8):
        self.retries = retries
        self._verified = urllib3.PoolManager(
            maxsize=pool_size, timeout=Timeout(connect=10.0, read=timeout)
        )
        self._unverified = urllib3.PoolManager(
            maxsize=pool_size, timeout=Timeout(connect=10.0, read=timeout), cert_reqs="CERT_NONE"
        )

    def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        *,
        tls_verify: bool = True,
        retries: int | None = None,
        body: bytes | None = None,
    ) -> urllib3.BaseHTTPResponse:
        pool = self._verified if tls_verify else self._unverified
        policy = _retry_policy(self.retries if retries is None else retries)
        try:
            return pool.request(
                method, url, headers=headers, body=body, retries=policy, redirect=True
            )
        except urllib3.exceptions.MaxRetryError as error:
            raise RegistryError(
                f"cannot reach {_host_of(url)}: {_reason(error.reason)}", transient=True
            ) from None
        except urllib3.exceptions.HTTPError as error:
            raise RegistryError(
                f"cannot reach {_host_of(url)}: {_reason(error)}", transient=True
            ) from None


class Registry:
    """One registry host, spoken to with its token flow (Bearer or Basic) as it asks."""

    def __init__(
        self, host: str, *, http: Http, tls_verify: bool = True, login: Login | None = None
    ):
        self.host = host
        self.api = api_host(host)
        self.tls_verify = tls_verify
        self.login = login
        self._http = http
        self._lock = threading.Lock()
        self._scheme: str | None = "https" if tls_verify else None
        self._challenge: _Challenge | None = None
        self._tokens: dict[str, tuple[str, float]] = {}
        self._token_locks: dict[str, threading.Lock] = {}
        self._first = threading.Lock()
        self._introduced = False  # a first request has been answered

    def head_manifest(self, path: str, reference: str) -> Head:
        """HEAD /v2/<path>/manifests/<reference>: the digest a pull would get, for free."""
        response = self._request("HEAD", f"/v2/{path}/manifests/{reference}", path)
        rate_limit = parse_rate_limit(response.headers)
        if response.status == 404:
            return Head(found=False, rate_limit=rate_limit)
        self._raise_for_status(response, f"{path}:{reference}")
        return Head(
            found=True,
            digest=response.headers.get("Docker-Content-Digest"),
            rate_limit=rate_limit,
            media_type=response.headers.get("Content-Type", "").split(";")[0].strip(),
            size=int(response.headers.get("Content-Length") or 0),
        )

    def get_manifest(self, path: str, reference: str) -> dict[str, Any] | None:
        """GET a manifest and parse it. On Docker Hub this costs a pull: use it on ECR only."""
        raw = self.get_manifest_raw(path, reference)
        if raw is None:
            return None
        try:
            document = json.loads(raw[1])
        except ValueError:
            raise RegistryError(f"{self.host}/{path}:{reference}: manifest is not JSON") from None
        return document if isinstance(document, dict) else None

    def get_manifest_raw(self, path: str, reference: str) -> tuple[str, bytes] | None:
        """GET a manifest as bytes with its media type (a pull on Docker Hub)."""
        response = self._request("GET", f"/v2/{path}/manifests/{reference}", path)
        if response.status == 404:
            return None
        self._raise_for_status(response, f"{path}:{reference}")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return media_type, bytes(response.data)

    def put_manifest(self, path: str, reference: str, body: bytes, media_type: str) -> str:
        """PUT a manifest (an image index mirror wrote); return its digest."""
        response = self._request(
            "PUT",
            f"/v2/{path}/manifests/{reference}",
            path,
            body=body,
            headers={"Content-Type": media_type},
            actions="pull,push",
        )
        self._raise_for_status(response, f"{path}:{reference}")
        return response.headers.get("Docker-Content-Digest") or (
            "sha256:" + hashlib.sha256(body).hexdigest()
        )

    def list_tags(self, path: str, *, page_size: int = 1000) -> list[str]:
        """Every tag of a repository, following the API's pagination (costs no pull)."""
        tags: list[str] = []
        url_path: str | None = f"/v2/{path}/tags/list?n={page_size}"
        while url_path:
            response = self._request("GET", url_path, path)
            if response.status == 404:
                raise RegistryError(f"{self.host}/{path}: repository not found", status=404)
            self._raise_for_status(response, f"{path} (tag list)")
            try:
                tags += json.loads(response.data).get("tags") or []
            except (ValueError, AttributeError):
                raise RegistryError(f"{self.host}/{path}: tag list is not JSON") from None
            url_path = _next_page(response.headers.get("Link", ""))
        return tags

    def check_login(self, path: str) -> None:
        """Use the credentials once, up front, so a wrong password is one clear error.

        Asks for a pull token for `path` (Bearer) or sends Basic to /v2/; no manifest is read.
        """
        if self.login is None:
            return
        if self._challenge is None:
            response = self._send("GET", "/v2/", {})
            if response.status == 401:
                self._learn_challenge(response)
        challenge = self._challenge
        if challenge is not None and challenge.scheme == "bearer":
            self._token(challenge, _scope(path))
        elif challenge is not None and challenge.scheme == "basic":
            response = self._send("GET", "/v2/", {"Authorization": self.login.basic()})
            if response.status in (401, 403):
                raise AuthError(f"{self.host}: user {self.login.username!r} was refused")

    # --- the request and its auth ----------------------------------------------------------------

    def _request(
        self,
        method: str,
        url_path: str,
        repo: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        actions: str = "pull",
    ) -> urllib3.BaseHTTPResponse:
        if not self._introduced:
            with self._first:  # one thread learns how this registry wants to be asked
                if not self._introduced:
                    response = self._authorized(
                        method, url_path, repo, body, headers or {}, actions
                    )
                    self._introduced = True
                    return response
        return self._authorized(method, url_path, repo, body, headers or {}, actions)

    def _authorized(  # noqa: PLR0917 - the private twin of _request, same arguments
        self,
        method: str,
        url_path: str,
        repo: str,
        body: bytes | None,
        extra: dict[str, str],
        actions: str,
    ) -> urllib3.BaseHTTPResponse:
        """Send with the Authorization the registry asked for; on a 401 learn and retry once."""
        headers = {"Accept": ACCEPT, **extra}
        sent = self._authorization(repo, actions)
        if sent:
            headers["Authorization"] = sent
        response = self._send(method, url_path, headers, body)
        if response.status == 401:
            self._learn_challenge(response)
            if sent and sent.startswith("Bearer "):
                self._tokens.pop(_scope(repo, actions), None)  # expired or revoked
            fresh = self._authorization(repo, actions)
            if fresh and fresh != sent:
                headers["Authorization"] = fresh
                response = self._send(method, url_path, headers, body)
        return response

    def _send(
        self, method: str, url_path: str, headers: dict[str, str], body: bytes | None = None
    ) -> urllib3.BaseHTTPResponse:
        scheme = self._scheme or self._detect_scheme()
        url = f"{scheme}://{self.api}{url_path}"
        return self._http.request(method, url, headers, tls_verify=self.tls_verify, body=body)

    def _detect_scheme(self) -> str:
        # tls_verify: false means "HTTPS without verification, else plain HTTP", as skopeo does.
        with self._lock:
            if self._scheme is None:
                try:
                    url = f"https://{self.api}/v2/"
                    self._http.request("GET", url, {}, tls_verify=False, retries=0)
                    self._scheme = "https"
                except RegistryError:
                    self._scheme = "http"
            return self._scheme

    def _learn_challenge(self, response: urllib3.BaseHTTPResponse) -> None:
        """Remember how the registry wants to be asked (WWW-Authenticate: Bearer or Basic)."""
        header = response.headers.get("WWW-Authenticate", "")
        scheme, _, rest = header.partition(" ")
        params = dict(_CHALLENGE_PARAM.findall(rest))
        challenge = _Challenge(scheme.lower(), params.get("realm", ""), params.get("service", ""))
        with self._lock:
            self._challenge = challenge

    def _authorization(self, repo: str, actions: str = "pull") -> str | None:
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return self.login.basic() if self.login else None
        if challenge.scheme == "bearer":
            return "Bearer " + self._token(challenge, _scope(repo, actions))
        return None

    def _token(self, challenge: _Challenge, scope: str) -> str:
        """A token for the scope, fetched once however many threads ask at the same time."""
        with self._lock:
            scope_lock = self._token_locks.setdefault(scope, threading.Lock())
        with scope_lock:
            cached = self._tokens.get(scope)
            if cached and cached[1] > time.monotonic():
                return cached[0]
            return self._fetch_token(challenge, scope)

    def _fetch_token(self, challenge: _Challenge, scope: str) -> str:
        now = time.monotonic()
        query = urlencode({"service": challenge.service, "scope": scope})
        headers = {"Authorization": self.login.basic()} if self.login else {}
        response = self._http.request(
            "GET", f"{challenge.realm}?{query}", headers, tls_verify=self.tls_verify
        )
        if response.status in (401, 403):
            who = f"user {self.login.username!r}" if self.login else "anonymous access"
            raise AuthError(f"{self.host}: the token service refused {who} (check the credentials)")
        if response.status == 429:
            raise RateLimited()
        if response.status != 200:
            raise RegistryError(
                f"{self.host}: token service answered HTTP {response.status}",
                status=response.status,
                transient=response.status >= 500,
            )
        token, lifetime = _read_token(response.data)
        self._tokens[scope] = (token, now + max(lifetime - _TOKEN_MARGIN, 1.0))
        return token

    def _raise_for_status(self, response: urllib3.BaseHTTPResponse, what: str) -> None:
        status = response.status
        if status < 300:
            return
        if status == 429:
            raise RateLimited()
        if status in (401, 403):
            raise RegistryError(
                f"{self.host}/{what}: access denied (HTTP {status}): the repository does not "
                "exist or the credentials may not pull it",
                status=status,
            )
        raise RegistryError(
            f"{self.host}/{what}: HTTP {status}{_error_detail(response)}",
            status=status,
            transient=status >= 500,
        )


def _scope(repo: str, actions: str = "pull") -> str:
    return f"repository:{repo}:{actions}"


def _next_page(link: str) -> str | None:
    """`</v2/x/tags/list?last=t&n=100>; rel="next"` -> the path to ask next (None at the end)."""
    match = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', link)
    if not match:
        return None
    target = match.group(1)
    return "/" + target.split("://", 1)[1].split("/", 1)[1] if "://" in target else target


def _read_token(body: bytes) -> tuple[str, float]:
    try:
        data = json.loads(body)
        token = data.get("token") or data.get("access_token")
        lifetime = float(data.get("expires_in") or 60)
    except (ValueError, AttributeError, TypeError):
        token = None
    if not isinstance(token, str) or not token:
        raise RegistryError("the token service answered without a token")
    return token, lifetime


def _error_detail(response: urllib3.BaseHTTPResponse) -> str:
    try:
        errors = json.loads(response.data or b"{}").get("errors") or []
        first = errors[0]
        return f" {first.get('code', '')}: {first.get('message', '')}".rstrip(": ")
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""


def _host_of(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


def _reason(error: BaseException | None) -> str:
    text = str(error) if error else "unknown error"
    # urllib3 wraps: "<urllib3.connection.HTTPConnection object at 0x..>: Failed to establish..."
    return re.sub(r"<[^>]+>: ", "", text)
