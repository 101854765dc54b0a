"""An ECR-like front over the destination :class:`~tests.standins.registry.Registry`.

The CNCF registry alone is kinder than ECR (it creates repositories on push, has no tag
immutability, sends ``Docker-Content-Digest`` on GET, always mounts blobs, never throttles).
This front makes it as strict as ECR's registry API, sharing its state with moto (the ECR API
stand-in): on every request it asks moto about the repository, so what a test or mirror does
with ``CreateRepository`` / ``PutImageTagMutability`` takes effect at once. Nothing is cached.

What it does, each as ECR does it (sources in /work/shared/FACTS.md and the report that added
this module):

- ``/v2/...`` without credentials: 401 ``WWW-Authenticate: Basic realm="https://<host>/",
  service="ecr.amazonaws.com"``, body ``Not Authorized``; Basic with moto's token user and
  password (:data:`~tests.standins.aws.ECR_USER`, :data:`~tests.standins.aws.ECR_PASSWORD`) is
  accepted, anything else is 401. The front passes the backend's own Basic auth itself.
- A repository moto does not know: 404 ``NAME_UNKNOWN`` "The repository with name '<repo>' does
  not exist in the registry with id '<account>'" for every operation, push included (no create on
  push). A missing tag or digest: 404 ``MANIFEST_UNKNOWN`` "Requested image not found".
- Tag immutability from the repository's ``imageTagMutability`` and
  ``imageTagMutabilityExclusionFilters`` (:func:`tag_is_immutable`): a manifest PUT by tag onto an
  existing immutable tag is 400 ``TAG_INVALID`` "The image tag '<tag>' already exists in the
  '<repo>' repository and cannot be overwritten because the repository is immutable.", even when
  the digest is the same (400 is distribution's status for TAG_INVALID and what clients report
  for ECR's answer). Writes of a tag are decided one at a time, as ECR's are: of two runs
  racing on one immutable tag, exactly one wins.
- Manifest GET answers carry no ``Docker-Content-Digest`` (nor ``ETag``); HEAD answers do. The
  manifest PUT answer carries ``Docker-Content-Digest`` but no ``Location``.
- Manifests over 4 MiB (4194304 bytes, PutImage's limit) are refused with 405 ``UNSUPPORTED``,
  the way ECR answers the manifests PutImage rejects ("Invalid parameter at 'ImageManifest'
  failed to satisfy constraint: ..."); the exact wording ECR uses for the size is unverified.
- Throttling (:meth:`EcrFront.throttle_next`, :meth:`EcrFront.throttle_for`): 429
  ``{"errors":[{"code":"TOOMANYREQUESTS","message":"Rate exceeded"}]}`` on chosen request kinds.
- PutImage's quota (``put_image_rate``: ECR's is 10 a second per account and Region, shared by
  every client): every manifest PUT takes a token from a bucket refilled at that rate and
  holding one second's worth (the burst ECR allows is not documented; one second's is the
  least plausible); a PUT that finds it empty is answered 429 ``TOOMANYREQUESTS``, counted in
  ``throttled["manifest_put"]``. Off (None) unless a test sets it. ``put_times`` lists when
  (``time.monotonic()``) each manifest PUT arrived.
- Other faults on chosen request kinds (:meth:`EcrFront.fail_next`): a 5xx answer with the
  registry error JSON, or (``status=None``) a dropped connection: the request's body is read
  and the connection closed without an answer, as a load balancer dropping an upload does.
- Images-per-repository quota (:meth:`EcrFront.fill_image_quota`): a manifest PUT of a digest
  the repository does not hold yet is 403 ``DENIED`` "The repository with name '<repo>' in
  registry with id '<account>' already has the maximum allowed number of images which is '<n>'".
- Cross-repository blob mounts only with ``blob_mounting=True`` (ECR's ``BLOB_MOUNTING``
  registry setting, off by default) and only between repositories whose
  ``encryptionConfiguration`` (type and KMS key, as moto describes them) is the same, as ECR
  mounts; otherwise the mount POST starts an ordinary upload (202 with a ``Location``), as ECR
  does, so the client uploads (and may DELETE that upload: 204). Mounts are counted
  (``counts.mounts``, ``counts.mounted_bytes``, ``counts.mounts_refused``).
- A blob GET answers ``307 Temporary Redirect`` to a presigned URL on another host (ECR's
  layers come from S3, ``prod-<region>-starport-layer-bucket``; here ``localhost:<port>``, a
  host name other than the ``127.0.0.1`` the client asked; a front reached through the test
  proxy serves them itself). That "bucket" refuses a request
  that also carries an ``Authorization`` header with S3's ``400 InvalidArgument`` "Only one
  auth mechanism allowed": a client must not send the registry's credentials there.

- The OCI 1.1 referrers API (ECR serves it since 2024-06-27): ``GET /v2/<name>/referrers/<digest>``
  answers 200 with an OCI index (``application/vnd.oci.image.index.v1+json``) of a descriptor
  (mediaType, digest, size, artifactType, annotations) for every manifest of the repository
  whose ``subject`` is that digest, computed from the backend's storage
  (:func:`~tests.standins.registry.referrers_at`); an empty index for a digest with none (even
  one the repository does not hold), 404 ``NAME_UNKNOWN`` for a missing repository, 400
  ``DIGEST_INVALID`` for a reference that is not a digest. A manifest PUT with a ``subject``
  is answered with ``OCI-Subject: <subject digest>`` (distribution-spec v1.1: the registry
  processed the subject, so no tag-schema index is needed). Whether ECR applies the
  ``artifactType`` filter is unverified, so by default the front ignores it (and sends no
  ``OCI-Filters-Applied``): a client must filter itself, as the spec makes it do whenever that
  header is absent; ``referrers_filter=True`` applies it with the header. Pages hold
  ``referrers_page`` entries, the next one behind an opaque ``Link: <...>; rel="next"``.
  ``referrers_api=False`` stands for a registry without the API (ECR before June 2024, or
  another registry named by ``ecr.endpoint``): the listing is 404 as distribution 2.8 answers
  a path it does not serve, and a PUT gets no ``OCI-Subject``.

Request kinds (for counts and throttling): ``ping``, ``manifest_get``, ``manifest_head``,
``manifest_put``, ``manifest_delete``, ``blob_get``, ``blob_head``, ``blob_delete``,
``upload_start`` (the POST), ``upload_patch``, ``upload_put``, ``upload_get``, ``upload_delete``,
``tags_list``, ``referrers_list``; groups ``manifest`` (GET, HEAD, PUT), ``upload`` (POST, PATCH,
PUT) and ``any``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import random
import re
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import boto3
import urllib3

from tests.standins.aws import ACCOUNT, ECR_PASSWORD, ECR_USER, REGION
from tests.standins.front import (
    CHUNK,
    FrontHandler,
    HttpFront,
    basic_credentials,
    same_credentials,
)
from tests.standins.registry import MANIFEST_ACCEPT, referrers_at

SERVICE = "ecr.amazonaws.com"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # PutImage: imageManifest of at most 4194304 characters
IMAGES_PER_REPOSITORY = 100_000  # the default quota (adjustable)
RATE_EXCEEDED = "Rate exceeded"
KINDS = (
    "ping",
    "manifest_get",
    "manifest_head",
    "manifest_put",
    "manifest_delete",
    "blob_get",
    "blob_head",
    "blob_delete",
    "upload_start",
    "upload_patch",
    "upload_put",
    "upload_get",
    "upload_delete",
    "tags_list",
    "referrers_list",
)
GROUPS: dict[str, frozenset[str]] = {
    **{kind: frozenset({kind}) for kind in KINDS},
    "manifest": frozenset({"manifest_get", "manifest_head", "manifest_put"}),
    "upload": frozenset({"upload_start", "upload_patch", "upload_put"}),
    "any": frozenset(KINDS),
}
MUTABILITIES = ("MUTABLE", "IMMUTABLE", "MUTABLE_WITH_EXCLUSION", "IMMUTABLE_WITH_EXCLUSION")
_UPLOADS = re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<id>[^/]*)$")
_BLOBS = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<ref>[^/]+)$")
_MANIFESTS = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)$")
_TAGS = re.compile(r"^/v2/(?P<name>.+)/tags/list$")
_REFERRERS = re.compile(r"^/v2/(?P<name>.+)/referrers/(?P<ref>[^/]+)$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$|^sha384:[0-9a-f]{96}$|^sha512:[0-9a-f]{128}$")
_UPLOAD_KINDS = {
    "POST": "upload_start",
    "PATCH": "upload_patch",
    "PUT": "upload_put",
    "GET": "upload_get",
    "DELETE": "upload_delete",
}


def wildcard_match(pattern: str, tag: str) -> bool:
    """ECR's WILDCARD tag filter: ``*`` matches any run of characters, all else is literal."""
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, tag) is not None


def tag_is_immutable(mutability: str, exclusion_filters: Iterable[str], tag: str) -> bool:
    """Whether ``tag`` may not be overwritten in a repository with these settings.

    ``IMMUTABLE_WITH_EXCLUSION``: immutable unless the tag matches a filter;
    ``MUTABLE_WITH_EXCLUSION``: mutable unless the tag matches a filter.
    """
    if mutability not in MUTABILITIES:
        raise ValueError(f"unknown imageTagMutability {mutability!r}")
    if mutability == "MUTABLE":
        return False
    if mutability == "IMMUTABLE":
        return True
    matched = any(wildcard_match(pattern, tag) for pattern in exclusion_filters)
    return matched if mutability == "MUTABLE_WITH_EXCLUSION" else not matched


@dataclass
class EcrCounts:
    """What the front answered. ``EcrFront.counts`` hands out a copy (a snapshot).

    ``kinds`` counts requests that passed auth, by kind; ``statuses`` counts their answers by
    (kind, status); ``throttled`` the 429 ``TOOMANYREQUESTS`` the front chose to send, by kind;
    ``faulted`` the other faults it chose (:meth:`EcrFront.fail_next`); ``upload_bytes`` the
    blob bytes clients sent in uploads (POST, PATCH and PUT bodies: what a mount saves).
    A 401 challenge is in ``unauthorized`` and ``requests`` only. ``requests`` lists every answer
    in the order sent, as (method, path, status).
    """

    kinds: Counter[str] = field(default_factory=Counter)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    throttled: Counter[str] = field(default_factory=Counter)
    faulted: Counter[str] = field(default_factory=Counter)  # fail_next: 5xx and drops, by kind
    unauthorized: int = 0
    connections: int = 0
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    upload_bytes: int = 0
    mounts: int = 0  # mount POSTs answered 201
    mounted_bytes: int = 0  # the bytes of the blobs they mounted
    mounts_refused: int = 0  # mount POSTs answered 202 (an upload started instead)

    def of(self, kind: str, status: int | None = None) -> int:
        """How many requests of ``kind`` (or a group) there were, answered ``status`` if given."""
        kinds = GROUPS[kind]
        if status is None:
            return sum(self.kinds[k] for k in kinds)
        return sum(self.statuses[(k, status)] for k in kinds)

    def copy(self) -> EcrCounts:
        return EcrCounts(
            Counter(self.kinds),
            Counter(self.statuses),
            Counter(self.throttled),
            Counter(self.faulted),
            self.unauthorized,
            self.connections,
            list(self.requests),
            self.upload_bytes,
            self.mounts,
            self.mounted_bytes,
            self.mounts_refused,
        )


@dataclass
class _Throttle:
    """One throttling rule: of each kind's requests, every ``every``-th (counted per kind from
    the rule's start) answers 429, at most ``times`` times and only until ``until`` (either
    may be None), or each with probability ``fraction`` when ``rng`` is set.
    """

    kinds: frozenset[str]
    times: int | None = None
    until: float | None = None
    every: int = 1
    rng: random.Random | None = None
    fraction: float = 0.0
    seen: Counter[str] = field(default_factory=Counter)
    status: int | None = 429  # None: drop the connection without an answer

    def fires(self, kind: str) -> bool:
        self.seen[kind] += 1
        if self.rng is not None:
            chosen = self.rng.random() < self.fraction
        else:
            chosen = self.seen[kind] % self.every == 0
        if chosen and self.times is not None:
            self.times -= 1
        return chosen

    def expired(self, now: float) -> bool:
        return (self.times is not None and self.times <= 0) or (
            self.until is not None and now >= self.until
        )


class EcrFront(HttpFront):
    """An ECR-like registry front; see the module docstring.

    ``backend_url`` is the destination registry (Basic auth ``backend_auth``), ``moto_url`` the
    moto server holding the repositories (account :data:`~tests.standins.aws.ACCOUNT`).
    ``retry_after`` adds ``Retry-After`` to the 429s (ECR sends none; skopeo then backs off
    2 s, 4 s, ... on a throttled request without a body).
    """

    server_name = "ecr-standin"

    def __init__(
        self,
        backend_url: str,
        moto_url: str,
        *,
        credentials: tuple[str, str] = (ECR_USER, ECR_PASSWORD),
        backend_auth: tuple[str, str] = (ECR_USER, ECR_PASSWORD),
        region: str = REGION,
        account: str = ACCOUNT,
        blob_mounting: bool = False,
        retry_after: int | None = None,
        blob_redirect: bool = True,
        referrers_filter: bool = False,
        referrers_page: int = 100,
        referrers_api: bool = True,
        put_image_rate: float | None = None,
    ) -> None:
        super().__init__()
        self.put_image_rate = put_image_rate
        self._put_tokens = max(1.0, put_image_rate or 0.0)
        self._put_stamp = time.monotonic()
        self.put_times: list[float] = []
        self.referrers_api = referrers_api
        self.referrers_filter = referrers_filter
        self.referrers_page = referrers_page
        self.backend_url = backend_url.rstrip("/")
        self.moto_url = moto_url
        self.credentials = credentials
        self.region = region
        self.account = account
        self.blob_mounting = blob_mounting
        self.retry_after = retry_after
        self.blob_redirect = blob_redirect
        self._presign_key = secrets.token_bytes(16)
        self._backend_headers = urllib3.make_headers(basic_auth=":".join(backend_auth))
        self._backend = urllib3.PoolManager(
            maxsize=16, retries=False, timeout=urllib3.Timeout(connect=5, read=60)
        )
        self._ecr = boto3.client(
            "ecr",
            region_name=region,
            endpoint_url=moto_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        self._counts = EcrCounts()
        self._throttles: list[_Throttle] = []
        self._tag_writes = threading.Lock()
        self._quota: tuple[frozenset[str] | None, int] | None = None

    def _stopped(self) -> None:
        self._backend.clear()

    # -- test controls ----------------------------------------------------------------------

    @property
    def counts(self) -> EcrCounts:
        with self._lock:
            return self._counts.copy()

    def fail_next(
        self, kind: str = "any", status: int | None = 503, times: int | None = 1, *, every: int = 1
    ) -> None:
        """The next ``times`` requests of ``kind`` (every one until :meth:`clear_faults` when
        ``times`` is None; with ``every``, only every ``every``-th) answer ``status`` with the
        registry error JSON (``UNAVAILABLE`` for 502/503/504, ``UNKNOWN`` otherwise), or with
        ``status=None`` are dropped: the body is read, the connection closed, no answer sent.
        Counted in ``counts.faulted`` by kind.
        """
        with self._lock:
            self._throttles.append(_Throttle(_kinds(kind), times=times, every=every, status=status))

    def reset_counts(self) -> None:
        with self._lock:
            self._counts = EcrCounts()

    def throttle_next(self, kind: str = "any", times: int = 1, *, every: int = 1) -> None:
        """The next ``times`` requests of ``kind`` (a kind or a group) answer 429; with
        ``every``, only every ``every``-th request of each kind does, ``times`` times in all.

        ``throttle_next("upload_put", times=4, every=5)``: the 5th, 10th, 15th and 20th upload
        finish from now, whatever the timing.
        """
        with self._lock:
            self._throttles.append(_Throttle(_kinds(kind), times=times, every=every))

    def throttle_for(
        self,
        seconds: float,
        kind: str = "any",
        *,
        every: int | None = None,
        fraction: float | None = None,
        seed: int | str = 0,
    ) -> None:
        """For ``seconds``, throttle every ``every``-th request of each kind in ``kind``
        (counted per kind from now), or each with probability ``fraction`` drawn from a RNG
        seeded with ``seed``.

        ``throttle_for(30, "upload", every=5)``: a fifth of each kind of upload request.
        """
        if (every is None) == (fraction is None):
            raise ValueError("give exactly one of every= and fraction=")
        rule = _Throttle(_kinds(kind), until=time.monotonic() + seconds, every=every or 1)
        if fraction is not None:
            rule.rng = random.Random(seed)  # noqa: S311 - deterministic on purpose
            rule.fraction = fraction
        with self._lock:
            self._throttles.append(rule)

    def fill_image_quota(self, *repos: str, limit: int = IMAGES_PER_REPOSITORY) -> None:
        """Treat ``repos`` (all repositories if none given) as holding ``limit`` images: a
        manifest PUT of a digest a repository does not hold yet gets ECR's 403.
        """
        with self._lock:
            self._quota = (frozenset(repos) or None, limit)

    def clear_faults(self) -> None:
        """Forget throttling rules and the quota."""
        with self._lock:
            self._throttles.clear()
            self._quota = None

    # -- internals --------------------------------------------------------------------------

    def _connected(self) -> None:
        self._counts.connections += 1

    def _over_put_quota(self, now: float) -> bool:
        """Does this manifest PUT exceed ``put_image_rate`` (a token bucket, as AWS's)?"""
        with self._lock:
            self.put_times.append(now)
            rate = self.put_image_rate
            if rate is None:
                return False
            burst = max(1.0, rate)
            self._put_tokens = min(burst, self._put_tokens + (now - self._put_stamp) * rate)
            self._put_stamp = now
            if self._put_tokens < 1:
                self._counts.throttled["manifest_put"] += 1
                return True
            self._put_tokens -= 1
            return False

    def _answered(self, req: FrontHandler, status: int) -> None:
        self._counts.requests.append((req.command, req.path, status))
        if req.kind:
            self._counts.statuses[(req.kind, status)] += 1
        elif status == 401:
            self._counts.unauthorized += 1

    def _fault(self, kind: str) -> _Throttle | None:
        """The rule that answers this request instead of the registry, if one fires."""
        now = time.monotonic()
        if kind == "manifest_put" and self._over_put_quota(now):
            return _Throttle(frozenset({kind}))
        with self._lock:
            self._throttles = [rule for rule in self._throttles if not rule.expired(now)]
            for rule in self._throttles:
                if kind in rule.kinds and rule.fires(kind):
                    counter = self._counts.throttled if rule.status == 429 else self._counts.faulted
                    counter[kind] += 1
                    return rule
        return None

    def _handle(self, req: FrontHandler) -> None:
        parts = urlsplit(req.path)
        path, query = parts.path, parse_qs(parts.query)
        if path.startswith(_BUCKET):  # another host, as far as clients know: S3
            self._layer_bucket(req, path, query)
        elif not path.startswith("/v2/"):
            self._error(req, 404, "NOT_FOUND", "Not Found")
        elif not self._authenticated(req):
            self._challenge(req)
        else:
            self._handle_api(req, path, query)

    def _handle_api(self, req: FrontHandler, path: str, query: dict[str, list[str]]) -> None:
        kind, name, ref = _classify(req.command, path)
        if kind is None:
            self._error(req, 404, "NOT_FOUND", "Not Found")
            return
        req.kind = kind
        with self._lock:
            self._counts.kinds[kind] += 1
        fault = self._fault(kind)
        if fault is not None:
            self._answer_fault(req, fault.status)
            return
        if kind == "ping":
            self._send_json(req, 200, {}, _API_VERSION)
            return
        repository = self._repository(name)
        if repository is None:
            self._error(req, 404, "NAME_UNKNOWN", self._name_unknown(name))
            return
        self._route(req, kind, name, ref, query, repository)

    def _route(  # noqa: PLR0911 - a router
        self,
        req: FrontHandler,
        kind: str,
        name: str,
        ref: str,
        query: dict[str, list[str]],
        repository: dict[str, Any],
    ) -> int:
        if kind in ("manifest_get", "manifest_head"):
            return self._manifest_read(req, name, ref)
        if kind == "manifest_put":
            return self._manifest_put(req, name, ref, repository)
        if kind == "manifest_delete":
            return self._manifest_delete(req, name, ref)
        # A front reached under a made-up name (through tests.standins.proxy, which knows no
        # other name for it) serves blobs itself.
        direct = req.headers.get("Host", self.host) != self.host
        if kind == "blob_get" and self.blob_redirect and not direct:
            return self._to_bucket(req, name, ref)
        if kind in ("blob_get", "blob_head"):
            return self._forward(req, f"/v2/{name}/blobs/{ref}")
        if kind == "blob_delete":
            return self._error(req, 405, "UNSUPPORTED", "The operation is unsupported.")
        if kind == "upload_start":
            return self._upload_start(req, name, query, repository)
        if kind == "tags_list":
            return self._tags(req, name)
        if kind == "referrers_list" and self.referrers_api:
            return self._referrers(req, name, ref, query)
        if kind == "referrers_list":  # as distribution 2.8 answers a path it does not serve
            return self._send_text(req, 404, "404 page not found\n", _API_VERSION)
        return self._forward(req, req.path)

    # blobs come from the "layer bucket" (S3, for ECR)

    def _to_bucket(self, req: FrontHandler, name: str, digest: str) -> int:
        head = self._backend_request("HEAD", f"/v2/{name}/blobs/{digest}")
        if head.status != 200:
            return self._error(req, 404, "BLOB_UNKNOWN", "The specified blob does not exist.")
        key = f"{name}/{digest}"
        query = urlencode(
            {"X-Amz-Algorithm": "AWS4-HMAC-SHA256", "X-Amz-Signature": self._sign(key)}
        )
        location = f"http://localhost:{self.port}{_BUCKET}{key}?{query}"  # 127.0.0.1's other name
        return self._send(req, 307, {"Location": location, **_API_VERSION}, b"")

    def _layer_bucket(self, req: FrontHandler, path: str, query: dict[str, list[str]]) -> None:
        key = path.removeprefix(_BUCKET)
        if req.headers.get("Authorization"):
            self._send_text(req, 400, _S3_TWO_AUTHS, {"Content-Type": "application/xml"})
            return
        if query.get("X-Amz-Signature") != [self._sign(key)] or req.command not in ("GET", "HEAD"):
            self._send_text(req, 403, _S3_DENIED, {"Content-Type": "application/xml"})
            return
        name, _, digest = key.rpartition("/")
        resp = self._backend.request(
            req.command,
            f"{self.backend_url}/v2/{name}/blobs/{digest}",
            headers=self._backend_headers,
            preload_content=False,
        )
        try:
            self._relay(req, resp, {}, streamed=True)
        finally:
            resp.release_conn()

    def _sign(self, key: str) -> str:
        return hmac.new(self._presign_key, key.encode(), hashlib.sha256).hexdigest()

    def _answer_fault(self, req: FrontHandler, status: int | None) -> None:
        if status is None:  # dropped: the body taken, no answer
            if req.has_body:
                req.read_body()
            req.close_connection = True
            with contextlib.suppress(OSError):
                req.connection.shutdown(socket.SHUT_RDWR)
            return
        if status == 429:
            headers = {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}
            self._error(req, 429, "TOOMANYREQUESTS", RATE_EXCEEDED, headers)
            return
        code = "UNAVAILABLE" if status in (502, 503, 504) else "UNKNOWN"
        self._error(req, status, code, HTTPStatus(status).phrase)

    # auth and moto

    def _authenticated(self, req: FrontHandler) -> bool:
        given = basic_credentials(req.headers.get("Authorization", ""))
        return given is not None and same_credentials(given, self.credentials)

    def _challenge(self, req: FrontHandler) -> int:
        realm = f"https://{self.account}.dkr.ecr.{self.region}.amazonaws.com/"
        headers = {
            "WWW-Authenticate": f'Basic realm="{realm}",service="{SERVICE}"',
            **_API_VERSION,
        }
        return self._send_text(req, 401, "Not Authorized\n", headers)

    def _repository(self, name: str) -> dict[str, Any] | None:
        """moto's description of repository ``name``, asked now (never cached)."""
        try:
            found = self._ecr.describe_repositories(
                registryId=self.account, repositoryNames=[name]
            )["repositories"]
        except self._ecr.exceptions.RepositoryNotFoundException:
            return None
        except self._ecr.exceptions.InvalidParameterException:  # not a valid ECR name
            return None
        return dict(found[0]) if found else None

    def _name_unknown(self, name: str) -> str:
        return (
            f"The repository with name '{name}' does not exist in the registry with id "
            f"'{self.account}'"
        )

    # manifests

    def _manifest_read(self, req: FrontHandler, name: str, ref: str) -> int:
        accept = ", ".join(req.headers.get_all("Accept") or []) or MANIFEST_ACCEPT
        resp = self._backend_request(req.command, f"/v2/{name}/manifests/{ref}", Accept=accept)
        if resp.status == 404:
            return self._error(req, 404, "MANIFEST_UNKNOWN", "Requested image not found")
        keep = ["Content-Type", "Content-Length"]
        if req.command == "HEAD":
            keep.append("Docker-Content-Digest")  # on HEAD only, as ECR
        headers = {key: resp.headers[key] for key in keep if key in resp.headers}
        return self._send(req, resp.status, {**headers, **_API_VERSION}, resp.data)

    def _manifest_put(
        self, req: FrontHandler, name: str, ref: str, repository: dict[str, Any]
    ) -> int:
        body = req.read_body()
        if len(body) > MAX_MANIFEST_BYTES:
            message = (
                "Invalid parameter at 'ImageManifest' failed to satisfy constraint: "
                f"'Member must have length less than or equal to {MAX_MANIFEST_BYTES}'"
            )
            return self._error(req, 405, "UNSUPPORTED", message)
        with self._tag_writes:  # ECR decides a tag's write atomically: one of two racers wins
            return self._manifest_write(req, name, ref, repository, body)

    def _manifest_write(
        self, req: FrontHandler, name: str, ref: str, repository: dict[str, Any], body: bytes
    ) -> int:
        if not ref.startswith("sha256:") and self._tag_locked(name, ref, repository):
            message = (
                f"The image tag '{ref}' already exists in the '{name}' repository and cannot "
                "be overwritten because the repository is immutable."
            )
            return self._error(req, 400, "TAG_INVALID", message)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        quota = self._quota_for(name)
        if quota is not None and not self._holds(name, digest):
            message = (
                f"The repository with name '{name}' in registry with id '{self.account}' "
                f"already has the maximum allowed number of images which is '{quota}'"
            )
            return self._error(req, 403, "DENIED", message)
        content_type = req.headers.get("Content-Type", "")
        resp = self._backend_request(
            "PUT", f"/v2/{name}/manifests/{ref}", body, **{"Content-Type": content_type}
        )
        headers = {"Docker-Content-Digest": resp.headers.get("Docker-Content-Digest", digest)}
        if resp.status >= 300:
            return self._relay(req, resp, {})
        subject = _subject_of(body)
        if subject and self.referrers_api:
            headers["OCI-Subject"] = subject  # distribution-spec v1.1: the subject was processed
        return self._send(req, resp.status, {**headers, **_API_VERSION}, b"")

    def _manifest_delete(self, req: FrontHandler, name: str, ref: str) -> int:
        resp = self._backend_request("DELETE", f"/v2/{name}/manifests/{ref}")
        if resp.status == 404:
            return self._error(req, 404, "MANIFEST_UNKNOWN", "Requested image not found")
        return self._relay(req, resp, {})

    def _tag_locked(self, name: str, tag: str, repository: dict[str, Any]) -> bool:
        mutability = repository.get("imageTagMutability", "MUTABLE")
        filters = [f["filter"] for f in repository.get("imageTagMutabilityExclusionFilters") or []]
        if not tag_is_immutable(mutability, filters, tag):
            return False
        return self._holds(name, tag)

    def _holds(self, name: str, ref: str) -> bool:
        resp = self._backend_request("HEAD", f"/v2/{name}/manifests/{ref}", Accept=MANIFEST_ACCEPT)
        return resp.status == 200

    def _quota_for(self, name: str) -> int | None:
        with self._lock:
            if self._quota is None:
                return None
            repos, limit = self._quota
        return limit if repos is None or name in repos else None

    # blobs and uploads

    def _upload_start(
        self,
        req: FrontHandler,
        name: str,
        query: dict[str, list[str]],
        repository: dict[str, Any],
    ) -> int:
        mount = query.get("mount", [""])[0]
        source = query.get("from", [""])[0]
        path = f"/v2/{name}/blobs/uploads/"
        if mount and source and self._mounts_between(source, repository):
            path += "?" + urlencode({"mount": mount, "from": source})

        def count(status: int) -> None:  # before the answer: a client that has it sees it
            if mount and status == 201:
                size = self._backend_request("HEAD", f"/v2/{name}/blobs/{mount}").headers
                with self._lock:
                    self._counts.mounts += 1
                    self._counts.mounted_bytes += int(size.get("Content-Length", 0))
            elif mount and status == 202:
                with self._lock:
                    self._counts.mounts_refused += 1

        return self._forward(req, path, seen=count)

    def _mounts_between(self, source: str, repository: dict[str, Any]) -> bool:
        """Does ECR mount from repository ``source`` into ``repository``? Only with the
        registry setting on, and between repositories of the same encryption."""
        if not self.blob_mounting:
            return False
        other = self._repository(source)
        return other is not None and _encryption(other) == _encryption(repository)

    def _tags(self, req: FrontHandler, name: str) -> int:
        resp = self._backend_request("GET", f"/v2/{name}/tags/list")
        if resp.status == 404:  # moto knows it, the backend holds nothing yet
            return self._send_json(req, 200, {"name": name, "tags": []}, _API_VERSION)
        return self._relay(req, resp, {})

    # referrers

    def _referrers(
        self, req: FrontHandler, name: str, digest: str, query: dict[str, list[str]]
    ) -> int:
        """The referrers API, as ECR answers it: see the module docstring."""
        if not _DIGEST.match(digest):
            return self._error(req, 400, "DIGEST_INVALID", "Invalid digest format")
        found = referrers_at(self.backend_url, name, digest)
        if found is None:
            raise RuntimeError(f"{self.backend_url}: not a tests.standins.registry.Registry")
        headers = {"Content-Type": OCI_INDEX, **_API_VERSION}
        wanted = query.get("artifactType")
        if wanted and self.referrers_filter:
            found = [entry for entry in found if entry["artifactType"] in wanted]
            headers["OCI-Filters-Applied"] = "artifactType"
        start = int(query.get("next", ["0"])[0] or 0)
        page = found[start : start + self.referrers_page]
        if start + self.referrers_page < len(found):
            following = urlencode(
                {
                    **{key: values[0] for key, values in query.items()},
                    "next": str(start + len(page)),
                }
            )
            headers["Link"] = f'</v2/{name}/referrers/{digest}?{following}>; rel="next"'
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": page}
        return self._send(req, 200, headers, json.dumps(index).encode())

    # plumbing

    def _backend_request(
        self, method: str, path: str, body: bytes | None = None, **headers: str
    ) -> urllib3.BaseHTTPResponse:
        return self._backend.request(
            method,
            self.backend_url + path,
            body=body,
            headers={**self._backend_headers, **headers},
        )

    def _forward(
        self, req: FrontHandler, path: str, *, seen: Callable[[int], None] | None = None
    ) -> int:
        """Send the request on to the backend (body included) and relay the answer
        (`seen` is told the backend's status first)."""
        headers = {
            key: req.headers[key]
            for key in ("Content-Type", "Content-Range", "Range", "Accept")
            if req.headers.get(key)
        }
        body = req.read_body() if req.has_body else None
        if body and req.kind in GROUPS["upload"]:
            with self._lock:
                self._counts.upload_bytes += len(body)
        resp = self._backend.request(
            req.command,
            self.backend_url + path,
            body=body,
            headers={**self._backend_headers, **headers},
            preload_content=False,
        )
        try:
            if seen is not None:
                seen(resp.status)
            return self._relay(req, resp, {}, streamed=True)
        finally:
            resp.release_conn()

    def _relay(
        self,
        req: FrontHandler,
        resp: urllib3.BaseHTTPResponse,
        extra: dict[str, str],
        *,
        streamed: bool = False,
    ) -> int:
        """Answer with the backend's status, headers (``Location`` made relative) and body;
        ``streamed``: the body is still on the wire (``preload_content=False``), else it was
        read whole (and ``stream()`` would give nothing of it)."""
        headers = {key: resp.headers[key] for key in _RELAYED if key in resp.headers}
        if "Location" in headers:
            headers["Location"] = _relative(headers["Location"])
        headers = {**headers, **_API_VERSION, **extra}
        if req.command == "HEAD" or "Content-Length" not in headers or not streamed:
            return self._send(
                req,
                resp.status,
                headers,
                b"" if req.command == "HEAD" else resp.read() if streamed else resp.data,
            )
        self._start_response(req, resp.status, headers)
        for chunk in resp.stream(CHUNK):
            req.wfile.write(chunk)
        return resp.status

    def _error(
        self,
        req: FrontHandler,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> int:
        doc = {"errors": [{"code": code, "message": message}]}
        return self._send_json(req, status, doc, {**_API_VERSION, **(headers or {})})


_API_VERSION = {"Docker-Distribution-Api-Version": "registry/2.0"}
_BUCKET = "/starport-layer-bucket/"
_S3_TWO_AUTHS = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidArgument</Code><Message>Only '
    "one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query "
    "string parameter or the Authorization header should be specified</Message></Error>"
)
_S3_DENIED = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access '
    "Denied</Message></Error>"
)
_RELAYED = (
    "Content-Type",
    "Content-Length",
    "Content-Range",
    "Range",
    "Location",
    "Docker-Upload-UUID",
    "Docker-Content-Digest",
)


def _kinds(kind: str) -> frozenset[str]:
    if kind not in GROUPS:
        raise ValueError(f"kind must be one of {sorted(GROUPS)}")
    return GROUPS[kind]


def _classify(method: str, path: str) -> tuple[str | None, str, str]:  # noqa: PLR0911 - a router
    """(kind, repository, reference) of a /v2 request; kind None for what ECR does not serve."""
    if path == "/v2/":
        return ("ping" if method in ("GET", "HEAD") else None), "", ""
    if match := _UPLOADS.match(path):
        return _UPLOAD_KINDS.get(method), match["name"], match["id"]
    if match := _BLOBS.match(path):
        kinds = {"GET": "blob_get", "HEAD": "blob_head", "DELETE": "blob_delete"}
        return kinds.get(method), match["name"], match["ref"]
    if match := _MANIFESTS.match(path):
        kind = f"manifest_{method.lower()}"
        return (kind if kind in KINDS else None), match["name"], match["ref"]
    if (match := _TAGS.match(path)) and method == "GET":
        return "tags_list", match["name"], ""
    if (match := _REFERRERS.match(path)) and method == "GET":
        return "referrers_list", match["name"], match["ref"]
    return None, "", ""


def _encryption(repository: dict[str, Any]) -> tuple[str, str | None]:
    """A repository's encryption as moto describes it: (type, KMS key)."""
    config = repository.get("encryptionConfiguration") or {}
    return (config.get("encryptionType", "AES256"), config.get("kmsKey"))


def _subject_of(manifest: bytes) -> str | None:
    """The digest a manifest's ``subject`` names, if it has one."""
    try:
        doc = json.loads(manifest)
    except (ValueError, RecursionError):
        return None
    subject = doc.get("subject") if isinstance(doc, dict) else None
    digest = subject.get("digest") if isinstance(subject, dict) else None
    return digest if isinstance(digest, str) else None


def _relative(location: str) -> str:
    """The path and query of a backend URL, so the client comes back to this front."""
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def repository_settings(
    mutability: str = "MUTABLE", exclusions: Sequence[str] = ()
) -> dict[str, Any]:
    """``CreateRepository`` keyword arguments for a tag mutability setting, e.g.
    ``ecr.create_repository(repositoryName=n, **repository_settings("IMMUTABLE_WITH_EXCLUSION",
    ["latest", "dev-*"]))``.
    """
    settings: dict[str, Any] = {"imageTagMutability": mutability}
    if exclusions:
        settings["imageTagMutabilityExclusionFilters"] = [
            {"filterType": "WILDCARD", "filter": pattern} for pattern in exclusions
        ]
    return settings
