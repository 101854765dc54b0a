"""The registry API (OCI distribution) over mirror/http.py: token flow, manifests, tags, budgets.

A HEAD on a manifest costs no Docker Hub pull, so change detection lives here. Tokens are
cached per repository scope until they expire. Every request goes through `Http`, which bounds
it in time, retries it and gives up on a host that does not answer.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any
from urllib.parse import urlencode, urlsplit

from mirror.errors import (
    AuthError,
    RateLimited,
    RegistryError,
    Stopped,
    Unreadable,
    quoted,
    remember_secret,
)
from mirror.http import Http, Response, retry_after, same_origin
from mirror.oci import MANIFEST_TYPES, Descriptor, Login, Manifest, RateLimit, TagList, sha256
from mirror.reference import BadReference, api_host, check_digest, is_tag

log = logging.getLogger("mirror")

ACCEPT = ", ".join(MANIFEST_TYPES)  # FACTS.md: what a pull accepts, so HEAD gets its digest
MAX_TAG_PAGES = 1000  # a tags list longer than this many pages is cut, with a warning
MAX_TAGS = 100_000  # tags kept from one repository's list; past it the list is cut, with a warning
MAX_TAG_PAGE = 8 << 20  # bytes: one page of a tags list (1,000 tags of 128 characters: 140 kB)
MAX_TAG_BYTES = 64 << 20  # bytes: all the pages of one tags list together
MAX_HEADER = 8192  # characters of a WWW-Authenticate or Link header mirror reads
_FIRST_NUMBER = re.compile(r"\s*(\d{1,18})\b")
_TOKEN_MARGIN = 10.0  # seconds: renew a token this long before it expires
_LOCKED_OUT = "too many failed login attempts"  # Docker Hub's token answer during a lockout
# A token is the registry's own choice: a short one ("failed", a digest prefix) would let it
# blank out ordinary words in every line mirror prints. Real tokens are far longer (JWTs).
_SHORTEST_HIDDEN_TOKEN = 16
_HEADER_SAFE = re.compile(r"[\x21-\x7e]{1,8192}\Z")  # visible ASCII: what a header can carry


@dataclass
class _Challenge:
    scheme: str  # "bearer" or "basic"
    realm: str = ""
    service: str = ""


def parse_challenge(header: str) -> _Challenge:
    """`Bearer realm="https://auth.docker.io/token",service="registry.docker.io"` (RFC 7235
    auth-params: quoted or bare values, backslash escapes in quotes), by one scan of the
    header: linear in its length. Parameters other than realm and service are ignored."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    pos, size = 0, len(rest)
    while pos < size:
        while pos < size and rest[pos] in ", \t":
            pos += 1
        equals = rest.find("=", pos)
        if equals < 0:
            break
        key = rest[pos:equals].strip().lower()
        value, pos = _param_value(rest, equals + 1)
        params.setdefault(key, value)
    return _Challenge(scheme.lower(), params.get("realm", ""), params.get("service", ""))


def _param_value(text: str, pos: int) -> tuple[str, int]:
    """An auth-param's value starting at `pos` (quoted or not) and where the next one starts."""
    if not text.startswith('"', pos):
        comma = text.find(",", pos)
        end = len(text) if comma < 0 else comma
        return text[pos:end].strip(), end
    chars: list[str] = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(chars), pos + 1
        if char == "\\" and pos + 1 < len(text):
            pos += 1
            char = text[pos]
        chars.append(char)
        pos += 1
    return "".join(chars), pos


def parse_rate_limit(headers: Mapping[str, str], *, host: str = "") -> RateLimit | None:
    """`ratelimit-limit: 100;w=21600` and `ratelimit-remaining: 76;w=21600`; absent = unlimited.

    Docker Hub also sends a list form (`100, 100;w=21600`): the first number counts. A header
    that carries no number (`;w=21600`, seen in the wild) is logged and read as no limit.
    """
    limit, remaining = headers.get("ratelimit-limit"), headers.get("ratelimit-remaining")
    if limit is None or remaining is None:
        return None
    numbers = [_FIRST_NUMBER.match(value) for value in (limit, remaining)]
    if numbers[0] is None or numbers[1] is None:
        log.debug(
            "%s: rate-limit headers without a number (limit %r, remaining %r): no budget known",
            host,
            quoted(limit, 80),
            quoted(remaining, 80),
        )
        return None
    return RateLimit(int(numbers[0].group(1)), int(numbers[1].group(1)))


class Registry:
    """One registry host, spoken to with its token flow (Bearer or Basic) as it asks."""

    def __init__(
        self,
        host: str,
        *,
        http: Http,
        tls_verify: bool = True,
        login: Login | Callable[[], Login] | None = None,
        throttled: bool = False,
        pace: Callable[[int], contextlib.AbstractContextManager[None]] | None = None,
    ):
        self.host = host
        self.throttled = throttled  # a 429 is back-pressure (ECR): waited out and sent again
        self._pace = pace  # around each manifest PUT: writing(1), ECR's PutImage quota
        self.api = api_host(host)
        self.tls_verify = tls_verify
        self._login = login  # or where it comes from, asked each time (ECR's is renewed)
        self._http = http
        self._lock = threading.Lock()
        self._scheme: str | None = "https" if tls_verify else None
        self._challenge: _Challenge | None = None
        self._tokens: dict[str, tuple[str, float]] = {}
        self._token_locks: dict[str, threading.Lock] = {}
        self._first = threading.Lock()
        self._introduced = False  # `GET /v2/` was sent: the challenge is known, if any
        self._probed: Response | None = None  # the HTTPS probe's answer to `GET /v2/`
        self._inner: bool | None = None  # on a loopback, private or link-local address
        # Seconds the registry's clock (its Date header) is ahead of this machine's, from the
        # first answer that carried one; None until then.
        self.clock_skew: float | None = None

    @property
    def login(self) -> Login | None:
        """The credentials as they are now."""
        return self._login() if callable(self._login) else self._login

    def head_manifest(self, path: str, reference: str) -> Descriptor:
        """HEAD /v2/<path>/manifests/<reference>: the digest a pull would get, for free."""
        response = self._request("HEAD", f"/v2/{path}/manifests/{reference}", path)
        rate_limit = parse_rate_limit(response.headers, host=self.host)
        if response.status == 404:
            return Descriptor(found=False, rate_limit=rate_limit)
        self._raise_for_status(response, f"{path}:{reference}")
        return Descriptor(
            found=True,
            digest=self._digest_header(response, f"{path}:{reference}"),
            rate_limit=rate_limit,
            media_type=_media_type(response),
            size=_length(response),
        )

    def describe_manifest(self, path: str, reference: str, *, get: bool = True) -> Descriptor:
        """A HEAD; when it gives no `Docker-Content-Digest` (the distribution spec allows
        that) or the registry answers HEAD with 405, with `get` a GET (`read_manifest`), whose
        body's sha256 is the digest a pull gets. Otherwise such a Descriptor has no digest (a
        405 is then found, without a digest)."""
        try:
            head = self.head_manifest(path, reference)
        except RegistryError as error:
            if error.status != 405:
                raise
            head = Descriptor(found=True)
        if not head.found or head.digest or not get:
            return head
        return self.read_manifest(path, reference)

    def read_manifest(self, path: str, reference: str) -> Descriptor:
        """A manifest GET, described: its digest is its body's sha256, what a pull gets (a
        pull on Docker Hub); not found is a Descriptor with `found` false."""
        log.debug(
            "%s/%s:%s: reading the manifest with a GET for its digest", self.host, path, reference
        )
        response = self._request("GET", f"/v2/{path}/manifests/{reference}", path)
        rate_limit = parse_rate_limit(response.headers, host=self.host)
        if response.status == 404:
            return Descriptor(found=False, rate_limit=rate_limit, fetched=True)
        self._raise_for_status(response, f"{path}:{reference}")
        return Descriptor(
            found=True,
            digest=sha256(response.data),
            rate_limit=rate_limit,
            media_type=_media_type(response),
            size=len(response.data),
            fetched=True,
            body=response.data,
        )

    def get_manifest(self, path: str, reference: str) -> dict[str, Any] | None:
        """GET a manifest and parse it. On Docker Hub this costs a pull: use it on ECR only.
        RegistryError, naming the host, when it is not JSON (or nested too deep to read)."""
        manifest = self.pull_manifest(path, reference)
        if manifest is None:
            return None
        document = json_document(manifest.body, f"{self.host}/{path}:{reference}: the manifest")
        return document if isinstance(document, dict) else None

    def pull_manifest(self, path: str, reference: str) -> Manifest | None:
        """GET a manifest (a pull on Docker Hub), with the budget its answer reported; None
        when there is none."""
        response = self._request("GET", f"/v2/{path}/manifests/{reference}", path)
        if response.status == 404:
            return None
        self._raise_for_status(response, f"{path}:{reference}")
        rate_limit = parse_rate_limit(response.headers, host=self.host)
        return Manifest(_media_type(response), response.data, rate_limit)

    @contextlib.contextmanager
    def blob(self, path: str, digest: str) -> Iterator[Response]:
        """GET a blob (no pull), its body left on the wire: the answer's `body` (http.Body),
        closed on leaving. An answer other than 200 comes whole, without a body."""
        url_path = f"/v2/{path}/blobs/{digest}"
        response = self._request("GET", url_path, path, stream=True)
        try:
            yield response
        finally:
            if response.body is not None:
                response.body.close()

    def head_blob(self, path: str, digest: str) -> Response:
        """HEAD a blob: whether the source has it, and its size."""
        return self._request("HEAD", f"/v2/{path}/blobs/{digest}", path)

    def get_blob(self, path: str, digest: str) -> bytes | None:
        """GET a small blob (an image config: the body is read whole) and check it against its
        digest; None when the registry has none. ECR answers with a redirect to S3, followed
        without the registry's credentials."""
        response = self._request("GET", f"/v2/{path}/blobs/{digest}", path)
        if response.status == 404:
            return None
        self._raise_for_status(response, f"{path}@{digest}")
        if sha256(response.data) != digest:
            raise RegistryError(f"{self.host}/{path}@{digest}: the blob does not match its digest")
        return response.data

    def put_manifest(self, path: str, reference: str, body: bytes, media_type: str) -> str:
        """PUT a manifest (an image index mirror wrote); return its digest. Paced, when the
        registry was given `pace` (ECR: each PUT is a PutImage)."""
        with self._pace(1) if self._pace is not None else contextlib.nullcontext():
            response = self._request(
                "PUT",
                f"/v2/{path}/manifests/{reference}",
                path,
                body=body,
                headers={"Content-Type": media_type},
                actions="pull,push",
            )
        self._raise_for_status(response, f"{path}:{reference}")
        return response.headers.get("Docker-Content-Digest") or sha256(body)

    def list_tags(
        self, path: str, *, page_size: int = 1000, max_pages: int = MAX_TAG_PAGES
    ) -> TagList:
        """Every tag of a repository, following the API's pagination (costs no pull).

        Stops, with a warning in the TagList, on a `next` link to a page already read (a
        loop) and after `max_pages` pages.
        """
        tags: dict[str, None] = {}
        url_path = f"/v2/{path}/tags/list?n={page_size}"
        read: set[str] = set()
        bad = size = 0
        where = f"{self.host}/{path}"
        for _ in range(max_pages):
            read.add(url_path)
            response = self._request("GET", url_path, path, limit=MAX_TAG_PAGE)
            if response.status == 404:
                raise RegistryError(f"{where}: repository not found", status=404)
            self._raise_for_status(response, f"{path} (tag list)")
            page, passed_over = _tags_of(response.data, where)
            tags.update(dict.fromkeys(page[: MAX_TAGS - len(tags)]))
            bad += passed_over
            size += len(response.data)
            following = _next_page(_header(response, "Link", where))
            cut = _cut_short(where, len(tags), size)
            if cut and following is not None:
                return TagList(tuple(tags), f"{cut}: stopped after {len(read)} pages")
            if following is None:
                warning = (
                    f"the tags list of {self.host}/{path} has {bad} entries that are not tags: "
                    "passed over"
                    if bad
                    else None
                )
                return TagList(tuple(tags), cut or warning)
            if following in read:
                return TagList(
                    tuple(tags),
                    f"the tags list of {self.host}/{path} links back to a page already read "
                    f"({quoted(following)}): stopped after {len(read)} pages, {len(tags)} tags",
                )
            url_path = following
        return TagList(
            tuple(tags),
            f"the tags list of {self.host}/{path} has more than {max_pages} pages: "
            f"only the first {len(tags)} tags were read",
        )

    def check_login(self, path: str) -> None:
        """Use the credentials once, up front, so a wrong password is one clear error.

        Asks for a pull token for `path` (Bearer) or sends Basic to /v2/; no manifest is read.
        """
        if self.login is None:
            return
        if self._challenge is None:
            response = self._send("GET", "/v2/", {})
            if response.status == 401 and self._own(response):
                self._learn_challenge(response)
        challenge = self._challenge
        if challenge is not None and challenge.scheme == "bearer":
            self._token(challenge, _scope(path))
        elif challenge is not None and challenge.scheme == "basic":
            response = self._send("GET", "/v2/", {"Authorization": self.login.basic()})
            if response.status in (401, 403):
                raise AuthError(f"{self.host}: {self.login.origin} were refused")

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
        limit: int | None = None,
        stream: bool = False,
    ) -> Response:
        send = partial(
            self._authorized,
            method,
            url_path,
            repo,
            body,
            headers or {},
            actions,
            limit,
            stream=stream,
        )
        if not self._introduced:
            with self._first:  # one thread learns how this registry wants to be asked
                if not self._introduced:
                    try:
                        self._introduce()
                    finally:
                        self._introduced = True  # also after a failure: never one at a time
        # The threads that waited for the introduction go at once, not one by one under the
        # lock (they did: a no-op's HEADs went one at a time, issue 18).
        return send()

    def _introduce(self) -> None:
        """Learn how the registry wants to be asked with one `GET /v2/` (the API version check
        of the distribution spec, which answers 401 with its challenge when it wants one), so
        the threads that wait for it wait one round trip, not a first request's three (401,
        token, the request again). With `tls_verify: false`, the HTTPS probe's own answer
        serves. A 429 fails the request that came first, as it would have; a registry that
        answers anything else is left to each request's 401."""
        self._url("/v2/")  # the scheme first: with tls_verify false, its probe is this GET
        with self._lock:
            response, self._probed = self._probed, None
        if self._challenge is not None:  # check_login learnt it
            return
        if response is None:
            response = self._send("GET", "/v2/", {})
        if response.status == 401 and self._own(response):
            self._learn_challenge(response)
        elif response.status == 429:  # Docker Hub's abuse limit is on every request: as one
            self._raise_for_status(response, "v2/")

    def _authorized(  # noqa: PLR0917 - the private twin of _request, same arguments
        self,
        method: str,
        url_path: str,
        repo: str,
        body: bytes | None,
        extra: dict[str, str],
        actions: str,
        limit: int | None = None,
        *,
        stream: bool = False,
    ) -> Response:
        """Send with the Authorization the registry asked for; on a 401 learn and retry once
        (a token expired or revoked is replaced by a fresh one; a token fetched for this very
        request, under the same challenge, is refused, not stale: no second). Only the
        registry's own 401 teaches how to log in: a 401 from a host a redirect led to is an
        answer like any other (it must not choose where the credentials go)."""
        headers = {"Accept": ACCEPT, **extra}
        cached = self._tokens.get(_scope(repo, actions))
        sent = self._authorization(repo, actions)
        if sent:
            headers["Authorization"] = sent
        response = self._send(method, url_path, headers, body, limit, stream=stream)
        if response.status == 401 and self._own(response):
            challenge = self._challenge
            self._learn_challenge(response)
            if sent and sent.startswith("Bearer "):
                just_fetched = cached is None or "Bearer " + cached[0] != sent
                if just_fetched and self._challenge == challenge:
                    return response  # a token fetched for this very request refused: no scope
                self._tokens.pop(_scope(repo, actions), None)  # expired or revoked
            fresh = self._authorization(repo, actions)
            if fresh and fresh != sent:
                headers["Authorization"] = fresh
                response = self._send(method, url_path, headers, body, limit, stream=stream)
        return response

    def _own(self, response: Response) -> bool:
        """Did the registry itself give this answer (not a host a redirect led to)?"""
        own = same_origin(response.url, self._url("/v2/")) if response.url else True
        if not own:
            log.debug(
                "%s: a 401 from %s, where a redirect led: not a challenge of this registry",
                self.host,
                quoted(response.url),
            )
        return own

    def _url(self, url_path: str) -> str:
        return f"{self._scheme or self._detect_scheme()}://{self.api}{url_path}"

    def _send(
        self,
        method: str,
        url_path: str,
        headers: dict[str, str],
        body: bytes | None = None,
        limit: int | None = None,
        *,
        stream: bool = False,
    ) -> Response:
        response = self._http.request(
            method,
            self._url(url_path),
            headers,
            tls_verify=self.tls_verify,
            body=body,
            throttled=self.throttled,
            limit=limit,
            stream=stream,
        )
        if self.clock_skew is None:
            self.clock_skew = clock_skew(response.headers.get("Date"))
        return response

    def learn_scheme(self) -> None:
        """With `tls_verify: false`, start finding out in the background whether the registry
        speaks HTTPS or plain HTTP (a /v2/ probe over HTTPS first, which on a plain-HTTP host
        waits for a failed handshake), so the first request does not wait for it while the
        run is still starting (issue 18). Nothing to learn with `tls_verify: true`: HTTPS."""
        if self._scheme is None:
            threading.Thread(target=self._quietly_detect, name="scheme", daemon=True).start()

    def share_scheme(self, other: Registry) -> None:
        """Speak the scheme `other` (a client of the same host) learnt, or is learning; its
        probe's answer to `GET /v2/` introduces this one too."""
        scheme = other._detect_scheme()
        with other._lock:
            probed = other._probed
        with self._lock:
            self._scheme = scheme
            self._probed = self._probed or probed

    def _quietly_detect(self) -> None:
        try:
            self._detect_scheme()
        except Exception as error:  # the first request learns it again and says what failed
            log.debug("%s: %s", self.host, error)

    def _detect_scheme(self) -> str:
        # tls_verify: false means "HTTPS without verification, else plain HTTP", as skopeo does.
        with self._lock:
            if self._scheme is None:
                try:
                    self._probed = self._http.request(
                        "GET", f"https://{self.api}/v2/", {}, tls_verify=False, probe=True
                    )
                    self._scheme = "https"
                except RegistryError:
                    self._scheme = "http"
                log.debug("%s: speaking %s", self.host, self._scheme)
            return self._scheme

    def _learn_challenge(self, response: Response) -> None:
        """Remember how the registry wants to be asked (WWW-Authenticate: Bearer or Basic).
        A Bearer realm must be an http(s) URL, and plain http only when the registry itself
        is spoken to over plain http: credentials never travel in clear text from an HTTPS
        registry."""
        challenge = parse_challenge(_header(response, "WWW-Authenticate", self.host))
        if challenge.scheme == "bearer":
            self._check_realm(challenge.realm)
        with self._lock:
            self._challenge = challenge
            self._inner = response.inner

    def _check_realm(self, realm: str) -> None:
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RegistryError(
                f"{self.host}: its token realm {quoted(realm)!r} is not an http(s) URL"
            )
        if parts.scheme == "http" and self._url("/").startswith("https:"):
            raise RegistryError(
                f"{self.host}: its token realm {quoted(realm)!r} is plain HTTP while the "
                "registry is HTTPS: refused (the credentials and tokens would travel in clear "
                "text)"
            )

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
        who = self.login.origin if self.login else "anonymous access"
        log.debug(
            "%s: token for %s (%s)",
            self.host,
            scope,
            "anonymous" if not self.login else "with credentials",
        )
        response = self._http.request(  # inside only if the registry itself is inside
            "GET",
            f"{challenge.realm}?{query}",
            headers,
            tls_verify=self.tls_verify,
            inner=self._inner,
        )
        if response.status in (401, 403):
            raise AuthError(f"{self.host}: the token service refused {who} (check the credentials)")
        if response.status == 429 and _LOCKED_OUT in response.data.decode(errors="replace").lower():
            raise AuthError(
                f"{self.host}: login locked out after repeated failed logins (429: too many "
                f"failed login attempts), for {who}: check the credentials, then wait about "
                "10 minutes"
            )
        if response.status == 429:
            raise RateLimited(self.host, too_many_requests(response))
        if response.status != 200:
            raise RegistryError(
                f"{self.host}: token service answered HTTP {response.status}",
                status=response.status,
                transient=response.status >= 500,
            )
        token, lifetime = _read_token(response.data, self.host)
        self._tokens[scope] = (token, now + max(lifetime - _TOKEN_MARGIN, 1.0))
        return token

    def _digest_header(self, response: Response, what: str) -> str | None:
        """Docker-Content-Digest, checked: a value that is not a digest is the answer's fault."""
        digest = response.headers.get("Docker-Content-Digest")
        if digest is None:
            return None
        try:
            return check_digest(digest)
        except BadReference:
            raise RegistryError(
                f"{self.host}/{what}: Docker-Content-Digest {quoted(digest, 80)!r} is not a digest"
            ) from None

    def _raise_for_status(self, response: Response, what: str) -> None:
        """Name the fault for what it is: pull limit, request limit, ECR throttling, ECR
        quota, an immutable tag, not found, access denied, a server error."""
        status = response.status
        if status < 300:
            return
        code, message = error_of(response)
        where = f"{self.host}/{what}"
        detail = f" ({status} {code}: {message})" if code or message else f" (HTTP {status})"
        if status == 429 and self.throttled:
            raise RegistryError(
                f"{where}: ECR throttling{detail}, still after waiting and retrying",
                status=status,
                transient=True,
            )
        if status == 429:
            raise RateLimited(self.host, too_many_requests(response))
        if status == 403 and "maximum allowed number of images" in message:
            raise RegistryError(f"{where}: ECR's images-per-repository quota is reached{detail}")
        if code == "TAG_INVALID":
            raise RegistryError(f"{where}: the tag is immutable in this repository{detail}")
        if status == 404:
            raise RegistryError(f"{where}: not found{detail}", status=status)
        if status in (401, 403):
            raise RegistryError(
                f"{where}: access denied{detail}: the repository does not exist or the "
                "credentials may not use it",
                status=status,
            )
        said = f" {code}: {message}".rstrip(": ") if code or message else ""
        raise RegistryError(f"{where}: HTTP {status}{said}", status=status, transient=status >= 500)

    # --- OCI 1.1 referrers and the blobs they carry (mirror.attach) ----------------------------

    def list_referrers(self, path: str, digest: str) -> referrers.Listing | None:
        """The referrers of `digest`, or None without the referrers API (`list_referrers`)."""
        return list_referrers(self, path, digest)

    def has_blob(self, path: str, digest: str) -> bool:
        """Does the repository hold the blob (a HEAD)?"""
        response = self.head_blob(path, digest)
        if response.status == 404:
            return False
        self._raise_for_status(response, f"{path}@{digest}")
        return True

    def push_blob(self, path: str, digest: str, pieces: Iterable[bytes], *, size: int) -> None:
        """Upload a blob as it comes (`push_blob`)."""
        push_blob(self, path, digest, pieces, size=size)

    def mount_blob(self, path: str, digest: str, source: str) -> bool:
        """Mount blob `digest` of repository `source` (same registry) into `path`: `POST
        /v2/<path>/blobs/uploads/?mount=<digest>&from=<source>` (OCI distribution spec). True
        on 201 (mounted); False on 202: the registry started an ordinary upload instead (ECR
        does when its BLOB_MOUNTING setting is off or the repositories' encryption differs,
        FACTS.md), which is cancelled with a DELETE of its Location, as containers/image
        does (docker_image_dest.go: mountBlob); RegistryError on any other answer."""
        query = urlencode({"mount": digest, "from": source})
        response = self._request(
            "POST", f"/v2/{path}/blobs/uploads/?{query}", path, body=b"", actions="pull,push"
        )
        what = f"{path}@{digest} (mount from {source})"
        if response.status == 201:
            return True
        if response.status == 202:
            self._cancel_upload(path, response, what)
            return False
        self._raise_for_status(response, what)
        raise RegistryError(f"{self.host}/{what}: HTTP {response.status}", status=response.status)

    def _cancel_upload(self, path: str, response: Response, what: str) -> None:
        """DELETE an upload the registry started (best effort: an upload left behind expires
        on the registry; the copy goes on either way)."""
        try:
            location = _upload_location(self, path, response, what)
            cancelled = self._request("DELETE", location, path, actions="pull,push")
        except RegistryError as error:
            if isinstance(error, Stopped):
                raise
            log.debug("%s: the upload a mount started was not cancelled: %s", what, error)
            return
        if cancelled.status >= 300:
            log.debug("%s: cancelling the upload a mount started: HTTP %d", what, cancelled.status)


def too_many_requests(response: Response) -> str:
    """A source's 429 in plain words: Docker Hub's pull limit (`TOOMANYREQUESTS` "You have
    reached your pull rate limit") or, anything else, a limit on requests (Docker Hub's abuse
    limit answers a plain-text 429, sometimes with Retry-After)."""
    code, message = error_of(response)
    if code == "TOOMANYREQUESTS" and "pull rate limit" in message.lower():
        return "pull rate limit reached (429 TOOMANYREQUESTS)"
    wait = retry_after(response.headers)
    later = f"; it asks to wait {wait:g} s" if wait is not None else ""
    said = f" {code}: {message}" if code else ""
    return f"too many requests (429{said}): a limit on requests, not the pull limit{later}"


def error_of(response: Response) -> tuple[str, str]:
    """The first error of a registry's JSON error body: (code, message); ("", "") if none.
    Both are cut to a few hundred characters (`quoted`), whatever the registry sent."""
    try:
        first = json.loads(response.data or b"{}").get("errors")[0]
        code, message = first.get("code") or "", first.get("message") or ""
    except (ValueError, AttributeError, IndexError, TypeError, KeyError, RecursionError):
        return "", ""
    return quoted(str(code), 80), quoted(str(message))


def json_document(body: bytes, what: str) -> Any:
    """Outside JSON, parsed; Unreadable saying `what` is not JSON when it is not, or is
    nested deeper than Python's recursion limit (about 1,000) lets it be read."""
    try:
        return json.loads(body)
    except RecursionError:
        raise Unreadable(f"{what} is JSON nested too deeply to read") from None
    except ValueError:
        raise Unreadable(f"{what} is not JSON") from None


def _header(response: Response, name: str, where: str) -> str:
    """A header mirror parses, at most MAX_HEADER characters (RegistryError if longer)."""
    value = response.headers.get(name, "")
    if len(value) > MAX_HEADER:
        raise RegistryError(
            f"{where}: a {name} header of {len(value):,} characters (mirror reads at most "
            f"{MAX_HEADER:,})"
        )
    return value


def _cut_short(where: str, tags: int, size: int) -> str | None:
    """Why a tags list is not read further (too many tags, too many bytes), or None."""
    if tags >= MAX_TAGS:
        return f"the tags list of {where} has more than {MAX_TAGS:,} tags: only those were read"
    if size >= MAX_TAG_BYTES:
        return (
            f"the tags list of {where} is over {MAX_TAG_BYTES >> 20} MiB: only its first "
            f"{tags:,} tags were read"
        )
    return None


def clock_skew(date: str | None, now: float | None = None) -> float | None:
    """Seconds an answer's `Date` header (RFC 9110: an HTTP date, one-second precision) is
    ahead of this machine's clock (`now`, default time.time()); None without a readable one."""
    if not date:
        return None
    try:
        stamp = email.utils.parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return stamp - (time.time() if now is None else now)


def _media_type(response: Response) -> str:
    return response.headers.get("Content-Type", "").split(";")[0].strip()


def _scope(repo: str, actions: str = "pull") -> str:
    return f"repository:{repo}:{actions}"


def _length(response: Response) -> int:
    """Content-Length, or 0 when it is missing or not one number (`258, 258` is seen)."""
    value = response.headers.get("Content-Length") or ""
    return int(value) if value.isascii() and value.isdigit() and len(value) < 16 else 0


def _tags_of(body: bytes, where: str) -> tuple[list[str], int]:
    """The tags of one page, and how many entries were not tags (passed over: a tag is
    never allowed to become a path)."""
    document = json_document(body, f"{where}: the tags list")
    tags = (document.get("tags") if isinstance(document, dict) else None) or []
    if not isinstance(tags, list):
        raise RegistryError(f"{where}: the tags list is not a list")
    good = [tag for tag in tags if isinstance(tag, str) and is_tag(tag)]
    return good, len(tags) - len(good)


def _next_page(link: str) -> str | None:
    """`</v2/x/tags/list?last=t&n=100>; rel="next"` -> the path to ask next (None at the end,
    and for a link that leads anywhere but this registry's /v2/ API). One scan of the header
    (RFC 8288: links separated by commas, each `<target>` with `; param=value`s)."""
    pos = 0
    while (opening := link.find("<", pos)) >= 0:
        closing = link.find(">", opening)
        if closing < 0:
            return None
        following = link.find("<", closing)
        params = link[closing + 1 : following if following >= 0 else len(link)]
        if _is_next(params):
            target = urlsplit(link[opening + 1 : closing])
            if not target.path.startswith("/v2/"):
                return None
            return target.path + (f"?{target.query}" if target.query else "")
        pos = closing + 1
    return None


def _is_next(params: str) -> bool:
    """Do a link's parameters (`; rel="next"`) say rel=next?"""
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "rel" and "next" in value.strip().strip('",').lower().split():
            return True
    return False


def _read_token(body: bytes, host: str) -> tuple[str, float]:
    where = f"{host}: the token service's answer"
    data = json_document(body, where)
    token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
    try:
        lifetime = float(data.get("expires_in") or 60)
    except (ValueError, TypeError, OverflowError, AttributeError):
        lifetime = 60.0
    if not isinstance(token, str) or not token:
        raise RegistryError(f"{host}: the token service answered without a token")
    if not _HEADER_SAFE.match(token):  # never quoted: it is a credential
        raise RegistryError(
            f"{host}: the token service answered a token that cannot go in a header"
        )
    if len(token) >= _SHORTEST_HIDDEN_TOKEN:  # hidden wherever a registry quotes it back
        remember_secret(token)
    return token, lifetime


# --- OCI 1.1 referrers (kept together at the end) ---------------------------------------------

from mirror import referrers  # noqa: E402 - beside its only user

MAX_REFERRER_PAGES = 100  # pages of one referrers listing read at most


def list_referrers(
    registry: Registry,
    path: str,
    digest: str,
    *,
    artifact_type: str | None = None,
    max_pages: int = MAX_REFERRER_PAGES,
) -> referrers.Listing | None:
    """GET /v2/<path>/referrers/<digest> (OCI distribution-spec v1.1), following `Link`
    pages: the referrers of `digest`, or None when the registry has no referrers API (a 404
    other than NAME_UNKNOWN: fall back to the tag schema, `referrers.tag_schema_name`).

    `artifact_type` is sent as the API's filter, which a registry may ignore (the spec makes it
    optional): filter with `referrers.keep` either way. RegistryError for a missing repository
    or an error answer; Unreadable for an answer that is not a referrers index. A listing that
    links back to a page already read, or runs past `max_pages`, ends there with a warning.
    Docker Hub: whether a listing costs a pull is not settled (tests/standins/hub.py).
    `list_referrers(registry, "library/ruby", "sha256:ab…")`
    """
    url_path = referrers.referrers_path(path, digest, artifact_type)
    where = f"{registry.host}/{path}@{digest}: the referrers"
    pages: list[referrers.Listing] = []
    read: set[str] = set()
    rate_limit: RateLimit | None = None
    for _ in range(max_pages):
        read.add(url_path)
        response = registry._request("GET", url_path, path, limit=referrers.MAX_INDEX_BYTES)
        rate_limit = parse_rate_limit(response.headers, host=registry.host) or rate_limit
        if response.status == 404 and not pages and error_of(response)[0] != "NAME_UNKNOWN":
            return None
        registry._raise_for_status(response, f"{path}@{digest} (referrers)")
        try:
            pages.append(
                referrers.parse_listing(
                    response.data,
                    where=where,
                    filters_applied=_header(response, "OCI-Filters-Applied", where),
                )
            )
        except referrers.ReferrersError as error:
            raise Unreadable(str(error)) from None
        following = _next_page(_header(response, "Link", where))
        if following is None:
            return replace(referrers.merge(pages), rate_limit=rate_limit)
        if following in read:
            warning = f"{where} link back to a page already read"
            return _with_warning(pages, warning, rate_limit)
        url_path = following
    warning = f"{where} run past {max_pages} pages: only those were read"
    return _with_warning(pages, warning, rate_limit)


def _with_warning(
    pages: list[referrers.Listing], warning: str, rate_limit: RateLimit | None
) -> referrers.Listing:
    listing = referrers.merge(pages)
    return replace(listing, warning=listing.warning or warning, rate_limit=rate_limit)


UPLOAD_PART = 8 << 20  # bytes of a blob sent in one PATCH (ECR's layer parts: 5 MiB at least)


def push_blob(
    registry: Registry, path: str, digest: str, pieces: Iterable[bytes], *, size: int
) -> None:
    """Upload a blob of `size` bytes, given as it comes (`pieces`), under `digest`: the OCI
    distribution spec's upload (POST, a PATCH per UPLOAD_PART bytes with its Content-Range,
    then a PUT with the digest); a blob of one part goes whole in the PUT (a monolithic
    upload, as oras sends one). At most UPLOAD_PART bytes are held at once. The bytes are
    checked against `digest` and `size` as they go: a blob that is not what its descriptor
    says is never committed (RegistryError naming it)."""
    algorithm = digest.partition(":")[0]
    hasher = hashlib.new(algorithm)
    where = f"{registry.host}/{path}@{digest}"
    started = registry._request(
        "POST", f"/v2/{path}/blobs/uploads/", path, body=b"", actions="pull,push"
    )
    location = _upload_location(registry, path, started, where)
    part, offset = bytearray(), 0
    for piece in pieces:
        hasher.update(piece)
        part += piece
        if offset + len(part) > size:
            raise RegistryError(f"{where}: the source sent more than its {size:,} bytes")
        if len(part) >= UPLOAD_PART:
            location = _patch(registry, path, location, bytes(part), offset=offset, where=where)
            offset, part = offset + len(part), bytearray()
    if offset + len(part) != size or f"{algorithm}:{hasher.hexdigest()}" != digest:
        raise RegistryError(f"{where}: the source sent a blob that is not what its digest says")
    last = bytes(part)
    if offset and last:
        location = _patch(registry, path, location, last, offset=offset, where=where)
        last = b""
    joiner = "&" if "?" in location else "?"
    response = registry._request(
        "PUT",
        f"{location}{joiner}{urlencode({'digest': digest})}",
        path,
        body=last,
        headers={"Content-Type": "application/octet-stream"},
        actions="pull,push",
    )
    registry._raise_for_status(response, f"{path}@{digest} (blob upload)")


def _patch(
    registry: Registry, path: str, location: str, part: bytes, *, offset: int, where: str
) -> str:
    """One PATCH of an upload: `part`, at `offset`; where the upload goes on."""
    response = registry._request(
        "PATCH",
        location,
        path,
        body=part,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{offset}-{offset + len(part) - 1}",
        },
        actions="pull,push",
    )
    return _upload_location(registry, path, response, where)


def _upload_location(registry: Registry, path: str, response: Response, where: str) -> str:
    """Where an upload goes on (the answer's Location), as a path on this registry: a
    Location on another origin is refused (the registry's credentials go nowhere else)."""
    registry._raise_for_status(response, f"{path} (blob upload)")
    location = _header(response, "Location", where)
    parts = urlsplit(location)
    if not location or (parts.netloc and not same_origin(location, registry._url("/v2/"))):
        raise RegistryError(
            f"{where}: the upload's Location {quoted(location, 80)!r} is not on the registry"
        )
    if not parts.path.startswith("/v2/"):
        raise RegistryError(f"{where}: the upload's Location {quoted(location, 80)!r} is not /v2/")
    return parts.path + (f"?{parts.query}" if parts.query else "")
