"""The stand-ins behave like what they stand in for: Docker Hub's front, a registry, ECR's API."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import boto3
import pytest
import requests
import urllib3

from tests.standins.aws import ECR_AUTHORIZATION_TOKEN, ECR_PASSWORD, ECR_USER, Moto
from tests.standins.ecr import EcrFront
from tests.standins.front import FrontHandler, HttpFront
from tests.standins.hub import HOLD_LIMIT, LOGIN_LOCKED, SERVICE, TOO_MANY_REQUESTS, HubFront
from tests.standins.images import (
    ATTESTATION_PREDICATES,
    FAMILIES,
    IN_TOTO,
    build_image,
    make_image,
    nested_index,
    push_image,
    push_schema1,
    skopeo_copy,
    skopeo_inspect,
    windows_image,
    write_auth_file,
    write_oci_layout,
    zstd_docker_image,
)
from tests.standins.proxy import ForwardProxy
from tests.standins.registry import MANIFEST_ACCEPT, Registry, get_manifest, manifest_digest

PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7")
INDEX_ACCEPT = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"


def bearer(session: requests.Session, front: HubFront, repo: str) -> dict[str, str]:
    answer = session.get(
        f"{front.url}/token", params={"service": SERVICE, "scope": f"repository:{repo}:pull"}
    )
    assert answer.status_code == 200
    return {"Authorization": f"Bearer {answer.json()['token']}", "Accept": INDEX_ACCEPT}


def copy_all(
    src: str, dest: str, auth_file: Path, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """Every platform of ``src``, digests kept, to ``dest`` with ``auth_file``."""
    return skopeo_copy(
        src, dest, tmp_path, "--all", "--preserve-digests", auth_file=auth_file, timeout=60
    )


def ecr_auth_file(tmp_path: Path, dest: Registry) -> Path:
    """The auth file a mirror writes from moto's ECR token (its ``auth`` value unchanged)."""
    ecr = boto3.client("ecr")
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"auths": {dest.host: {"auth": token}}}))
    path.chmod(0o600)
    return path


def test_token_flow_401_then_token_then_200(
    source_registry: Registry, hub: HubFront, repo_name: str
) -> None:
    digest = make_image(source_registry.host, repo_name, "1", seed="flow")
    manifest_url = f"{hub.url}/v2/{repo_name}/manifests/1"
    with requests.Session() as session:
        denied = session.head(manifest_url)
        assert denied.status_code == 401
        assert denied.headers["WWW-Authenticate"] == (
            f'Bearer realm="{hub.url}/token",service="{SERVICE}",'
            f'scope="repository:{repo_name}:pull"'
        )
        ping = session.get(f"{hub.url}/v2/")
        assert ping.status_code == 401
        assert "scope=" not in ping.headers["WWW-Authenticate"]
        assert ping.json()["errors"][0]["code"] == "UNAUTHORIZED"

        headers = bearer(session, hub, repo_name)
        head = session.head(manifest_url, headers=headers)
        get = session.get(manifest_url, headers=headers)
        assert head.status_code == get.status_code == 200
        assert head.headers["Docker-Content-Digest"] == get.headers["Docker-Content-Digest"]
        assert get.headers["Docker-Content-Digest"] == digest
        assert "ratelimit-limit" not in get.headers  # no limit: no headers, like a paid plan
        assert session.get(f"{hub.url}/v2/", headers=headers).status_code == 200

        other = bearer(session, hub, "library/other")  # tokens are scoped to repositories
        assert session.head(manifest_url, headers=other).status_code == 401
        missing_repo = session.get(f"{hub.url}/v2/library/other/manifests/1", headers=other)
        assert missing_repo.status_code == 401  # Docker Hub does not admit a repo is missing
        assert 'error="insufficient_scope"' in missing_repo.headers["WWW-Authenticate"]
        missing_tag = session.get(f"{hub.url}/v2/{repo_name}/manifests/2", headers=headers)
        assert missing_tag.status_code == 404
        assert missing_tag.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        hub.revoke_tokens()
        assert session.head(manifest_url, headers=headers).status_code == 401

    counts = hub.counts
    assert (counts.token, counts.token_anonymous, counts.token_authenticated) == (2, 2, 0)
    # a 401 for a bad token is in .requests only; the missing repo's 401 got past the token
    assert (counts.manifest_head, counts.manifest_get, counts.manifest_get_ok) == (1, 3, 1)


def test_rate_limit_spent_by_gets_only_then_429(source_registry: Registry, repo_name: str) -> None:
    make_image(source_registry.host, repo_name, "1", seed="limit")
    url = f"{repo_name}/manifests/1"
    with HubFront(source_registry.url, limit=2) as front, requests.Session() as session:
        headers = bearer(session, front, repo_name)

        def ask(method: str) -> requests.Response:
            return session.request(method, f"{front.url}/v2/{url}", headers=headers)

        remaining = []
        for method in ("HEAD", "HEAD", "GET", "HEAD", "GET", "HEAD"):
            answer = ask(method)
            assert answer.status_code == 200, method
            assert answer.headers["ratelimit-limit"] == "2;w=21600"
            assert answer.headers["docker-ratelimit-source"] == "127.0.0.1"
            remaining.append(answer.headers["ratelimit-remaining"])
        assert remaining == ["2;w=21600"] * 2 + ["1;w=21600"] * 2 + ["0;w=21600"] * 2

        spent = ask("GET")
        assert spent.status_code == 429
        assert spent.json() == {
            "errors": [{"code": "TOOMANYREQUESTS", "message": TOO_MANY_REQUESTS, "detail": None}]
        }
        assert spent.headers["ratelimit-remaining"] == "0;w=21600"
        assert ask("HEAD").status_code == 200  # HEADs still work, as on Docker Hub
        front.set_remaining(1)
        assert ask("GET").status_code == 200
        counts = front.counts
    assert (counts.manifest_get, counts.manifest_get_ok, counts.status_429) == (4, 3, 1)
    assert counts.manifest_head == 5
    assert ("GET", f"/v2/{url}", 429) in counts.requests


class GatedBackend(HttpFront):
    """A pass-through to a registry that holds every manifest GET until ``release``: what
    happens between a front's budget check and its answer can be seen, whatever the timing."""

    server_name = "gated-backend"

    def __init__(self, backend_url: str) -> None:
        super().__init__()
        self.backend_url = backend_url
        self.arrived = 0  # manifest GETs that reached the backend
        self.gate = threading.Event()
        self.changed = threading.Condition()
        self._pool = urllib3.PoolManager(maxsize=16, retries=False)

    def _handle(self, req: FrontHandler) -> None:
        if req.command == "GET" and "/manifests/" in req.path:
            with self.changed:
                self.arrived += 1
                self.changed.notify_all()
            self.gate.wait(HOLD_LIMIT)
        headers = {"Accept": req.headers.get("Accept", "")}
        resp = self._pool.request(req.command, self.backend_url + req.path, headers=headers)
        passed = {k: v for k, v in resp.headers.items() if k.lower() != "transfer-encoding"}
        self._send(req, resp.status, passed, resp.data)


def test_parallel_pulls_never_spend_more_than_is_left(
    source_registry: Registry, repo_name: str
) -> None:
    """Three clients pulling two manifests each at once, 5 pulls left: 5 are served and 1
    gets the 429, even when all six pass the front before any is answered (Docker Hub's
    budget is one counter)."""
    make_image(source_registry.host, repo_name, "1", seed="atomic")
    with (
        GatedBackend(source_registry.url) as backend,
        HubFront(backend.url, limit=5) as front,
    ):
        statuses: list[int] = []
        url = f"{front.url}/v2/{repo_name}/manifests/1"

        def pull(headers: dict[str, str]) -> None:
            status = requests.get(url, headers=headers, timeout=HOLD_LIMIT).status_code
            with backend.changed:
                statuses.append(status)
                backend.changed.notify_all()

        with requests.Session() as session:
            tokens = [bearer(session, front, repo_name) for _client in range(3)]
        threads = [threading.Thread(target=pull, args=(headers,)) for headers in tokens * 2]
        for thread in threads:
            thread.start()
        with backend.changed:  # every GET is held at the backend or already answered
            assert backend.changed.wait_for(
                lambda: backend.arrived + len(statuses) >= 6, timeout=HOLD_LIMIT
            )
        backend.gate.set()
        for thread in threads:
            thread.join(HOLD_LIMIT)
        counts = front.counts
    assert sorted(statuses) == [200] * 5 + [429]
    assert (backend.arrived, counts.manifest_get_ok, counts.status_429) == (5, 5, 1)
    assert front.remaining == 0


def test_token_endpoint_checks_basic_credentials(source_registry: Registry) -> None:
    with (
        HubFront(source_registry.url, credentials=("hubuser", "hubpass")) as front,
        requests.Session() as session,
    ):
        token_url = f"{front.url}/token?service={SERVICE}&scope=repository:library/x:pull"
        wrong = session.get(token_url, auth=("hubuser", "nope"))
        assert wrong.status_code == 401
        assert wrong.json() == {"details": "incorrect username or password"}
        assert session.get(token_url, auth=("hubuser", "hubpass")).status_code == 200
        assert session.get(token_url).status_code == 200  # anonymous still works
        counts = front.counts
    assert (counts.token, counts.token_authenticated, counts.token_anonymous) == (3, 1, 1)


def test_skopeo_sends_basic_credentials_to_the_token_realm(
    source_registry: Registry, tmp_path: Path, repo_name: str
) -> None:
    make_image(source_registry.host, repo_name, "1", seed="basic")
    with HubFront(source_registry.url, credentials=("hubuser", "hubpass")) as front:

        def inspect(password: str) -> subprocess.CompletedProcess[str]:
            return skopeo_inspect(
                front.host, f"{repo_name}:1", tmp_path, creds=("hubuser", password)
            )

        wrong = inspect("nope")
        assert wrong.returncode != 0
        assert "incorrect username or password" in wrong.stderr
        assert inspect("hubpass").returncode == 0
        counts = front.counts
    assert (counts.token, counts.token_authenticated, counts.token_anonymous) == (2, 1, 0)


def test_faults_tags_pagination_and_keep_alive(
    source_registry: Registry, hub: HubFront, repo_name: str
) -> None:
    for tag in ("a", "b", "c"):
        make_image(source_registry.host, repo_name, tag, seed="tags")
    with requests.Session() as session:
        headers = bearer(session, hub, repo_name)
        hub.fail_next(503, times=2)
        statuses = [
            session.head(f"{hub.url}/v2/{repo_name}/manifests/a", headers=headers).status_code
            for _ in range(3)
        ]
        assert statuses == [503, 503, 200]

        first = session.get(f"{hub.url}/v2/{repo_name}/tags/list?n=2", headers=headers)
        assert first.json()["tags"] == ["a", "b"]
        assert first.links["next"]["url"].startswith(f"/v2/{repo_name}/tags/list?")
        rest = session.get(hub.url + first.links["next"]["url"], headers=headers)
        assert rest.json()["tags"] == ["c"]
        assert "Link" not in rest.headers
    assert hub.counts.tags_list == 2

    hub.reset_counts()
    errors: list[BaseException] = []

    def pull_config_blobs() -> None:
        try:
            with requests.Session() as own:
                hdrs = bearer(own, hub, repo_name)
                for _ in range(5):  # one connection each: keep-alive with Content-Length
                    manifest = own.get(f"{hub.url}/v2/{repo_name}/manifests/a", headers=hdrs)
                    config = manifest.json()["config"]
                    blob = own.get(f"{hub.url}/v2/{repo_name}/blobs/{config['digest']}")
                    assert blob.status_code == 401  # no token on purpose
                    blob = own.get(
                        f"{hub.url}/v2/{repo_name}/blobs/{config['digest']}", headers=hdrs
                    )
                    assert len(blob.content) == config["size"]
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=pull_config_blobs) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    counts = hub.counts
    assert (counts.blob_get, counts.manifest_get_ok, counts.token) == (30, 30, 6)
    assert counts.connections == 6  # one per session: every answer kept the connection open


def test_fronts_send_each_write_at_once(source_registry: Registry) -> None:
    """TCP_NODELAY on every accepted connection: an answer's body (a second write, after the
    headers) does not wait for the client's delayed ACK, about 40 ms a token or manifest."""
    with HubFront(source_registry.url) as front, requests.Session() as session:
        assert session.get(f"{front.url}/v2/").status_code == 401  # the connection stays open
        with front._lock:
            connections = list(front._connections)
        assert connections
        for conn in connections:
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_stop_is_prompt_with_idle_keep_alive(source_registry: Registry) -> None:
    front = HubFront(source_registry.url).start()
    with requests.Session() as session:
        assert session.get(f"{front.url}/v2/").status_code == 401  # connection stays open
        started = time.monotonic()
        front.stop()
        assert time.monotonic() - started < 15  # not the handler's 60 s read time-out


def test_make_image_is_deterministic(source_registry: Registry, tmp_path: Path) -> None:
    def layout(name: str, seed: int) -> str:
        return write_oci_layout(
            tmp_path / name, "t", platforms=PLATFORMS, layer_sizes=(100, 200), seed=seed
        )

    assert layout("a", 1) == layout("b", 1) != layout("c", 2)
    repo = "test/determinism"
    pushed = make_image(source_registry.host, repo, "t", platforms=PLATFORMS, seed=1)
    again = make_image(source_registry.host, repo, "u", platforms=PLATFORMS, seed=1)
    assert pushed == again == manifest_digest(source_registry.url, repo, "t")
    assert manifest_digest(source_registry.url, repo, "missing") is None

    shared = [b"base layer"]
    one = make_image(source_registry.host, repo, "b1", seed=1, base_layers=shared)
    two = make_image(source_registry.host, repo, "b2", seed=2, base_layers=shared)
    layers = [get_manifest(source_registry.url, repo, ref)[1]["layers"] for ref in (one, two)]
    assert layers[0][0] == layers[1][0]
    assert layers[0][1] != layers[1][1]


@pytest.mark.usefixtures("aws_env")
def test_skopeo_copies_from_front_to_ecr_standin_keeping_the_index_digest(
    source_registry: Registry,
    hub: HubFront,
    dest_registry: Registry,
    tmp_path: Path,
    repo_name: str,
) -> None:
    digest = make_image(
        source_registry.host, repo_name, "1", platforms=PLATFORMS, layer_sizes=(512, 1024, 2048)
    )
    auth_file = ecr_auth_file(tmp_path, dest_registry)
    done = copy_all(
        f"{hub.host}/{repo_name}:1", f"{dest_registry.host}/{repo_name}:1", auth_file, tmp_path
    )
    assert done.returncode == 0, done.stderr

    ecr_login = (ECR_USER, ECR_PASSWORD)
    assert manifest_digest(dest_registry.url, repo_name, "1", auth=ecr_login) == digest
    media_type, index = get_manifest(dest_registry.url, repo_name, "1", auth=ecr_login)
    assert media_type == "application/vnd.oci.image.index.v1+json"
    platforms = [
        "/".join(
            filter(
                None,
                (m["platform"]["os"], m["platform"]["architecture"], m["platform"].get("variant")),
            )
        )
        for m in index["manifests"]
    ]
    assert platforms == list(PLATFORMS)
    counts = hub.counts
    assert counts.manifest_get_ok == 4  # the index and one manifest per platform
    assert counts.blob_get == 12  # 3 layers and a config per platform
    assert counts.token_anonymous == 1


@pytest.mark.usefixtures("aws_env")
def test_skopeo_fails_when_blobs_are_cut(
    source_registry: Registry,
    hub: HubFront,
    dest_registry: Registry,
    tmp_path: Path,
    repo_name: str,
) -> None:
    make_image(source_registry.host, repo_name, "1", layer_sizes=(100_000,), seed="cut")
    hub.cut_blobs(50)
    auth_file = ecr_auth_file(tmp_path, dest_registry)
    done = copy_all(
        f"{hub.host}/{repo_name}:1", f"{dest_registry.host}/{repo_name}:1", auth_file, tmp_path
    )
    assert done.returncode != 0
    assert "unexpected EOF" in done.stderr
    assert hub.counts.blob_bytes == 50
    assert manifest_digest(dest_registry.url, repo_name, "1", auth=(ECR_USER, ECR_PASSWORD)) is None


def test_moto_token_opens_the_ecr_standin(
    moto: Moto, dest_registry: Registry, aws_env: dict[str, str]
) -> None:
    data = boto3.client("ecr").get_authorization_token()["authorizationData"][0]
    assert data["authorizationToken"] == ECR_AUTHORIZATION_TOKEN
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    assert (user, password) == (ECR_USER, ECR_PASSWORD)
    assert data["proxyEndpoint"] == "https://123456789012.dkr.ecr.us-east-1.amazonaws.com"
    with requests.Session() as session:
        assert session.get(f"{dest_registry.url}/v2/").status_code == 401
        assert session.get(f"{dest_registry.url}/v2/", auth=(user, "wrong")).status_code == 401
        assert session.get(f"{dest_registry.url}/v2/", auth=(user, password)).status_code == 200

    secrets = boto3.client("secretsmanager")  # same server, AWS_ENDPOINT_URL_SECRETS_MANAGER
    secrets.create_secret(Name="dockerhub", SecretString='{"username": "u"}')
    assert secrets.get_secret_value(SecretId="dockerhub")["SecretString"] == '{"username": "u"}'
    assert boto3.client("sts").get_caller_identity()["Account"] == "123456789012"
    boto3.client("ecr").create_repository(repositoryName="library/ruby")
    moto.reset()
    assert boto3.client("ecr").describe_repositories()["repositories"] == []


@pytest.mark.usefixtures("aws_env")
def test_skopeo_on_a_spent_budget_with_retry_after_zero_fails_at_once(
    source_registry: Registry, dest_registry: Registry, tmp_path: Path, repo_name: str
) -> None:
    make_image(source_registry.host, repo_name, "1", seed="spent")
    auth_file = ecr_auth_file(tmp_path, dest_registry)
    with HubFront(source_registry.url, limit=5, retry_after=0) as front:
        front.set_remaining(0)
        started = time.monotonic()
        done = copy_all(
            f"{front.host}/{repo_name}:1",
            f"{dest_registry.host}/{repo_name}:1",
            auth_file,
            tmp_path,
        )
        elapsed = time.monotonic() - started
        counts = front.counts
    assert done.returncode != 0
    assert "toomanyrequests: You have reached your pull rate limit" in done.stderr
    assert elapsed < 15  # without Retry-After skopeo 1.9 spends 30 s on this
    assert (counts.manifest_get, counts.status_429, counts.manifest_get_ok) == (5, 5, 0)


# --- Docker Hub as it really answers ------------------------------------------------------------


def token_headers(session: requests.Session, front: HubFront, repo: str) -> dict[str, str]:
    return {**bearer(session, front, repo), "Accept": MANIFEST_ACCEPT}


@pytest.mark.parametrize(
    ("form", "limit", "remaining"),
    [
        ("normal", "100;w=21600", "100;w=21600"),
        ("empty", ";w=21600", ";w=21600"),
        ("list", "100, 100;w=21600", "100, 100;w=21600"),
    ],
)
def test_rate_limit_header_forms(
    source_registry: Registry, repo_name: str, form: str, limit: str, remaining: str
) -> None:
    make_image(source_registry.host, repo_name, "1", seed="forms")
    with (
        HubFront(source_registry.url, limit=100, rate_header_form=form) as front,
        requests.Session() as session,
    ):
        answer = session.head(
            f"{front.url}/v2/{repo_name}/manifests/1",
            headers=token_headers(session, front, repo_name),
        )
    assert answer.status_code == 200
    assert (answer.headers["ratelimit-limit"], answer.headers["ratelimit-remaining"]) == (
        limit,
        remaining,
    )


def test_abuse_limit_is_a_plain_429_before_auth_on_any_request(
    source_registry: Registry, repo_name: str
) -> None:
    make_image(source_registry.host, repo_name, "1", seed="abuse")
    with HubFront(source_registry.url, limit=10) as front, requests.Session() as session:
        headers = token_headers(session, front, repo_name)
        front.abuse_limit(3, retry_after=7)
        answers = [
            session.get(f"{front.url}/v2/"),  # unauthenticated
            session.get(f"{front.url}/token", params={"service": SERVICE}),
            session.get(f"{front.url}/v2/{repo_name}/manifests/1", headers=headers),
            session.get(f"{front.url}/v2/{repo_name}/manifests/1", headers=headers),
        ]
        counts = front.counts
    for answer in answers[:3]:
        assert answer.status_code == 429
        assert answer.headers["Content-Type"].startswith("text/plain")
        assert answer.headers["Retry-After"] == "7"
        assert answer.text == "Too Many Requests\n"
        assert "ratelimit-remaining" not in answer.headers
    assert answers[3].status_code == 200
    assert answers[3].headers["ratelimit-remaining"] == "9;w=21600"  # only the real GET spent
    assert (counts.abuse_429, counts.status_429, counts.manifest_get_ok) == (3, 3, 1)


def test_skopeo_waits_out_an_abuse_429_and_retries(
    source_registry: Registry, hub: HubFront, tmp_path: Path, repo_name: str
) -> None:
    make_image(source_registry.host, repo_name, "1", seed="abuse-skopeo")
    hub.abuse_limit(1, retry_after=1)
    started = time.monotonic()
    done = skopeo_inspect(hub.host, f"{repo_name}:1", tmp_path)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started >= 1.0  # it honoured Retry-After
    assert hub.counts.requests[:2] == [("GET", "/v2/", 429), ("GET", "/v2/", 401)]


def test_login_lockout_after_failed_logins(source_registry: Registry, tmp_path: Path) -> None:
    with (
        HubFront(source_registry.url, credentials=("hubuser", "right"), lockout_after=3) as front,
        requests.Session() as session,
    ):
        token_url = f"{front.url}/token?service={SERVICE}&scope=repository:library/x:pull"
        wrong = [session.get(token_url, auth=("hubuser", "wrong")).status_code for _ in range(3)]
        assert wrong == [401, 401, 401]
        locked = session.get(token_url, auth=("hubuser", "right"))  # the right one, too late
        assert locked.status_code == 429
        assert locked.json() == {"details": LOGIN_LOCKED}
        assert session.get(token_url).status_code == 200  # anonymous pulls go on
        done = skopeo_inspect(front.host, "library/x:1", tmp_path, creds=("hubuser", "right"))
        front.lock_out()  # the whole IP address
        assert session.get(token_url).status_code == 429
        front.clear_faults()
        assert session.get(token_url, auth=("hubuser", "right")).status_code == 200
        counts = front.counts
    assert done.returncode != 0
    # skopeo 1.9 reports any 429 from the token endpoint so: the lockout's message is lost
    assert "too many requests to registry" in done.stderr
    assert LOGIN_LOCKED not in done.stderr
    assert (counts.token_failed, counts.token_locked, counts.token_authenticated) == (3, 3, 1)


@pytest.mark.parametrize("head", ["no-digest", "405"])
def test_manifest_head_without_digest_or_refused(
    source_registry: Registry, repo_name: str, head: str
) -> None:
    digest = make_image(source_registry.host, repo_name, "1", seed="head")
    with HubFront(source_registry.url, head=head) as front, requests.Session() as session:
        headers = token_headers(session, front, repo_name)
        url = f"{front.url}/v2/{repo_name}/manifests/1"
        answer, get = session.head(url, headers=headers), session.get(url, headers=headers)
    assert answer.status_code == (200 if head == "no-digest" else 405)
    assert "Docker-Content-Digest" not in answer.headers
    assert get.status_code == 200
    assert get.headers["Docker-Content-Digest"] == digest


@pytest.mark.usefixtures("aws_env")
def test_manifest_served_unlike_its_announced_digest(
    source_registry: Registry, dest_registry: Registry, tmp_path: Path, repo_name: str
) -> None:
    digest = make_image(source_registry.host, repo_name, "1", platforms=PLATFORMS[:2], seed="mm")
    with (
        HubFront(source_registry.url, mismatch_digest=True) as front,
        requests.Session() as session,
    ):
        headers = token_headers(session, front, repo_name)
        url = f"{front.url}/v2/{repo_name}/manifests"
        head, get = (
            session.head(f"{url}/1", headers=headers),
            session.get(f"{url}/1", headers=headers),
        )
        by_digest = session.get(f"{url}/{digest}", headers=headers)
        auth_file = ecr_auth_file(tmp_path, dest_registry)
        done = copy_all(
            f"{front.host}/{repo_name}:1",
            f"{dest_registry.host}/{repo_name}:1",
            auth_file,
            tmp_path,
        )
    assert head.headers["Docker-Content-Digest"] == get.headers["Docker-Content-Digest"] == digest
    served = "sha256:" + hashlib.sha256(get.content).hexdigest()
    assert served != digest
    assert get.json() == by_digest.json()
    assert "sha256:" + hashlib.sha256(by_digest.content).hexdigest() == digest  # by digest: true
    assert done.returncode == 0, done.stderr
    copied = manifest_digest(dest_registry.url, repo_name, "1", auth=(ECR_USER, ECR_PASSWORD))
    assert copied == served != digest  # "--preserve-digests", and yet another digest


def test_two_fronts_over_one_backend_are_two_registries(
    source_registry: Registry, repo_name: str
) -> None:
    make_image(source_registry.host, repo_name, "1", seed="two")
    with (
        HubFront(source_registry.url, limit=5) as first,
        HubFront(source_registry.url, limit=7) as second,
        requests.Session() as session,
    ):
        assert first.port != second.port
        headers = token_headers(session, first, repo_name)
        assert session.get(f"{first.url}/v2/{repo_name}/manifests/1", headers=headers).ok
        assert (
            session.head(f"{second.url}/v2/{repo_name}/manifests/1", headers=headers).status_code
            == 401
        )
        other = token_headers(session, second, repo_name)
        answer = session.get(f"{second.url}/v2/{repo_name}/manifests/1", headers=other)
        assert answer.headers["ratelimit-remaining"] == "6;w=21600"
        assert (first.remaining, second.remaining) == (4, 6)
        one, two = first.counts, second.counts
    assert (one.manifest_get_ok, one.token, two.manifest_get_ok, two.token) == (1, 1, 1, 1)


# --- test images shaped like Docker Official Images ------------------------------------------


@pytest.mark.parametrize("media_types", ["oci", "docker"])
def test_multi_arch_images_with_attestations(
    source_registry: Registry, repo_name: str, media_types: str
) -> None:
    family = FAMILIES[media_types]
    digest = make_image(
        source_registry.host,
        repo_name,
        "1",
        platforms=PLATFORMS[:2],
        seed="doi",
        media_types=media_types,
        attestations=True,
    )
    top, _ = build_image(
        platforms=PLATFORMS[:2],
        layer_sizes=(2048,),
        seed="doi",
        media_types=media_types,
        attestations=True,
    )
    assert top.digest == digest  # deterministic, and pushed byte for byte
    media_type, index = get_manifest(source_registry.url, repo_name, "1")
    assert media_type == index["mediaType"] == family.index
    images, attestations = index["manifests"][:2], index["manifests"][2:]
    assert [m["platform"]["architecture"] for m in images] == ["amd64", "arm64"]
    assert {m["mediaType"] for m in images} == {family.manifest}
    assert {m["mediaType"] for m in attestations} == {FAMILIES["oci"].manifest}  # always
    for image, attestation in zip(images, attestations, strict=True):
        assert attestation["platform"] == {"architecture": "unknown", "os": "unknown"}
        assert attestation["annotations"] == {
            "vnd.docker.reference.digest": image["digest"],
            "vnd.docker.reference.type": "attestation-manifest",
        }
        _, manifest = get_manifest(source_registry.url, repo_name, attestation["digest"])
        assert [layer["mediaType"] for layer in manifest["layers"]] == [IN_TOTO, IN_TOTO]
        predicates = [
            layer["annotations"]["in-toto.io/predicate-type"] for layer in manifest["layers"]
        ]
        assert predicates == list(ATTESTATION_PREDICATES)
    _, image = get_manifest(source_registry.url, repo_name, images[0]["digest"])
    assert image["config"]["mediaType"] == family.config
    assert {layer["mediaType"] for layer in image["layers"]} == {family.layer}


def test_single_platform_docker_image_and_oci_digests_unchanged(
    source_registry: Registry, repo_name: str, tmp_path: Path
) -> None:
    docker = make_image(source_registry.host, repo_name, "d", seed=1, media_types="docker")
    oci = make_image(source_registry.host, repo_name, "o", seed=1)
    assert get_manifest(source_registry.url, repo_name, "d")[0] == FAMILIES["docker"].manifest
    assert docker != oci
    assert oci == write_oci_layout(
        tmp_path / "l", "o", platforms=("linux/amd64",), layer_sizes=(2048,), seed=1
    )
    with_attestation = make_image(source_registry.host, repo_name, "a", seed=1, attestations=True)
    assert get_manifest(source_registry.url, repo_name, "a")[0] == FAMILIES["oci"].index
    assert with_attestation not in (docker, oci)


@pytest.mark.usefixtures("aws_env")
@pytest.mark.parametrize("media_types", ["oci", "docker"])
def test_skopeo_copies_attested_images_keeping_the_digest(
    source_registry: Registry,
    hub: HubFront,
    dest_registry: Registry,
    tmp_path: Path,
    repo_name: str,
    media_types: str,
) -> None:
    digest = make_image(
        source_registry.host,
        repo_name,
        "1",
        platforms=PLATFORMS[:2],
        seed="copy-doi",
        media_types=media_types,
        attestations=True,
    )
    auth_file = ecr_auth_file(tmp_path, dest_registry)
    done = copy_all(
        f"{hub.host}/{repo_name}:1", f"{dest_registry.host}/{repo_name}:1", auth_file, tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert (
        manifest_digest(dest_registry.url, repo_name, "1", auth=(ECR_USER, ECR_PASSWORD)) == digest
    )
    assert hub.counts.manifest_get_ok == 5  # the index, two images, two attestations


@pytest.mark.usefixtures("aws_env")
def test_what_skopeo_1_9_does_with_content_of_every_shape(
    source_registry: Registry,
    hub: HubFront,
    dest_registry: Registry,
    tmp_path: Path,
    repo_name: str,
) -> None:
    """The facts mirror's refusals and work-arounds rest on (skopeo 1.9.3, `copy --all
    --preserve-digests` into another repository, as mirror copies)."""
    auth_file = ecr_auth_file(tmp_path, dest_registry)
    shapes = {
        "nested": nested_index("facts"),
        "zstd": zstd_docker_image("facts"),
        "windows": windows_image("facts"),
    }
    digests = {
        name: push_image(source_registry.host, f"{repo_name}/{name}", "1", *built)
        for name, built in shapes.items()
    }
    digests["schema1"] = push_schema1(source_registry.host, f"{repo_name}/schema1", "1", "facts")

    def copy(name: str) -> subprocess.CompletedProcess[str]:
        source = f"{hub.host}/{repo_name}/{name}@{digests[name]}"
        return skopeo_copy(
            source, f"{dest_registry.host}/mirror/{repo_name}/{name}:1", tmp_path, "--all",
            "--preserve-digests", "--debug", auth_file=auth_file, timeout=60,
        )  # fmt: skip

    nested = copy("nested")
    assert nested.returncode == 1
    assert "Unexpectedly received a manifest list instead of a manifest for a single image" in (
        nested.stderr
    )
    zstd = copy("zstd")
    assert zstd.returncode == 1
    assert (
        'unsupported docker v2s2 media type: \\"application/vnd.docker.image.rootfs.diff.tar.zstd'
        in (zstd.stderr)
    )
    schema1 = copy("schema1")
    assert schema1.returncode == 1
    assert "Copying a schema1 image with an embedded Docker reference" in schema1.stderr
    assert "Instructed to preserve digests" in schema1.stderr
    windows = copy("windows")
    assert windows.returncode == 0, windows.stderr
    assert "Skipping foreign layer" in windows.stderr
    destination = f"mirror/{repo_name}/windows"
    auth = (ECR_USER, ECR_PASSWORD)
    assert manifest_digest(dest_registry.url, destination, "1", auth=auth) == digests["windows"]
    # nested: the top and the inner index; zstd: the manifest; schema 1: the manifest (read
    # before skopeo finds it cannot keep it); windows: the manifest
    assert hub.counts.manifest_get_ok == 5


# --- a forward proxy, and made-up hosts only it can reach ----------------------------------------


def without_proxies(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    return {**env, **extra}


def test_skopeo_reaches_a_made_up_host_only_through_the_proxy(
    source_registry: Registry, hub: HubFront, tmp_path: Path, repo_name: str
) -> None:
    digest = make_image(source_registry.host, repo_name, "1", platforms=PLATFORMS[:2], seed="px")
    host = f"hub.proxied.test:{hub.port}"
    with ForwardProxy({"hub.proxied.test": "127.0.0.1"}) as proxy:

        def inspect(**env: str) -> subprocess.CompletedProcess[str]:
            return skopeo_inspect(host, f"{repo_name}:1", tmp_path, env=without_proxies(**env))

        direct = inspect()
        proxied = inspect(**proxy.env())
        counts = proxy.counts
        proxy.reset_counts()
        bypassed = inspect(**proxy.env(no_proxy="hub.proxied.test"))
        assert proxy.counts.requests == []
    assert direct.returncode != 0
    assert "no such host" in direct.stderr
    assert proxied.returncode == 0, proxied.stderr
    assert "sha256:" + hashlib.sha256(proxied.stdout.encode()).hexdigest() == digest
    assert bypassed.returncode != 0  # NO_PROXY honoured: straight to a name that resolves nowhere
    assert "no such host" in bypassed.stderr
    # HTTPS first (a CONNECT tunnel, refused by the plain-HTTP front), then plain HTTP
    assert counts.requests[0] == ("CONNECT", host, 200)
    assert counts.requests[1:] == [("GET", host, 401), ("GET", host, 200), ("GET", host, 200)]
    assert counts.hosts == {"hub.proxied.test": 4}
    assert hub.counts.token_anonymous == 1  # the realm named the made-up host: via the proxy


def test_proxy_streams_a_push_both_ways(
    source_registry: Registry,
    hub: HubFront,
    dest_registry: Registry,
    moto: Moto,
    aws_env: dict[str, str],
    tmp_path: Path,
    repo_name: str,
) -> None:
    boto3.client("ecr").create_repository(repositoryName=repo_name)
    make_image(source_registry.host, repo_name, "1", seed="px-push", layer_sizes=(300_000,))
    hosts = {"hub.proxied.test": "127.0.0.1", "ecr.proxied.test": "127.0.0.1"}
    with EcrFront(dest_registry.url, moto.url) as ecr, ForwardProxy(hosts) as proxy:
        src, dest = f"hub.proxied.test:{hub.port}", f"ecr.proxied.test:{ecr.port}"
        done = skopeo_copy(
            f"{src}/{repo_name}:1",
            f"{dest}/{repo_name}:1",
            tmp_path,
            auth_file=write_auth_file(tmp_path / "auth.json", dest, ECR_USER, ECR_PASSWORD),
            env=without_proxies(**proxy.env()),
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        with requests.Session() as session:  # a chunked upload through the proxy, read back
            session.proxies = {"http": proxy.url}
            session.auth = (ECR_USER, ECR_PASSWORD)
            data = os.urandom(200_000)
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            start = session.post(f"http://{dest}/v2/{repo_name}/blobs/uploads/")
            patch = session.patch(
                f"http://{dest}{start.headers['Location']}",
                data=(data[i : i + 30_000] for i in range(0, len(data), 30_000)),
            )
            put = session.put(f"http://{dest}{patch.headers['Location']}&digest={digest}")
            back = session.get(f"http://{dest}/v2/{repo_name}/blobs/{digest}")
        counts = proxy.counts
    assert (start.status_code, patch.status_code, put.status_code) == (202, 202, 201)
    assert back.content == data
    assert {method for method, _, _ in counts.requests} >= {
        "CONNECT",
        "GET",
        "HEAD",
        "POST",
        "PATCH",
        "PUT",
    }
    assert counts.hosts["hub.proxied.test"] > 0 and counts.hosts["ecr.proxied.test"] > 0
    assert counts.bytes_up > 500_000  # the layer pushed and the chunked blob
    assert counts.bytes_down > 500_000  # the layer pulled and the blob read back
