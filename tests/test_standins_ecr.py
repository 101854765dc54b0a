"""The ECR-like front is as strict as ECR's registry API, over real HTTP and real skopeo."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from tests.standins.aws import ECR_PASSWORD, ECR_USER, Moto
from tests.standins.ecr import (
    MAX_MANIFEST_BYTES,
    EcrFront,
    repository_settings,
    tag_is_immutable,
    wildcard_match,
)
from tests.standins.hub import HubFront
from tests.standins.images import (
    OCI_MANIFEST,
    build_image,
    make_image,
    skopeo_copy,
    skopeo_inspect,
    write_auth_file,
)
from tests.standins.registry import MANIFEST_ACCEPT, Registry, manifest_digest

ECR_LOGIN = (ECR_USER, ECR_PASSWORD)
RATE_EXCEEDED = {"errors": [{"code": "TOOMANYREQUESTS", "message": "Rate exceeded"}]}


@pytest.fixture
def ecr(moto: Moto, aws_env: dict[str, str]) -> Any:
    """A boto3 ECR client on moto (the same state the front asks about)."""
    return boto3.client("ecr", region_name="us-east-1", endpoint_url=moto.url)


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as own:
        own.auth = ECR_LOGIN
        yield own


def name_unknown(repo: str) -> dict[str, Any]:
    message = (
        f"The repository with name '{repo}' does not exist in the registry with id '123456789012'"
    )
    return {"errors": [{"code": "NAME_UNKNOWN", "message": message}]}


def immutable(tag: str, repo: str) -> str:
    return (
        f"The image tag '{tag}' already exists in the '{repo}' repository and cannot be "
        "overwritten because the repository is immutable."
    )


def copy(src: str, dest: str, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """skopeo copy to the front with moto's ECR login in an auth file."""
    auth_file = write_auth_file(tmp_path / "ecr-auth.json", dest.partition("/")[0], *ECR_LOGIN)
    return skopeo_copy(src, dest, tmp_path, *flags, auth_file=auth_file)


def put_manifest(
    session: requests.Session, front: EcrFront, repo: str, ref: str, doc: dict[str, Any]
) -> requests.Response:
    body = json.dumps(doc).encode()
    return session.put(
        f"{front.url}/v2/{repo}/manifests/{ref}",
        data=body,
        headers={"Content-Type": doc["mediaType"]},
    )


def tiny_manifest(
    session: requests.Session, front: EcrFront, repo: str, seed: str
) -> dict[str, Any]:
    """An OCI manifest whose config blob was uploaded through the front (monolithic upload)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    start = session.post(f"{front.url}/v2/{repo}/blobs/uploads/")
    assert start.status_code == 202, start.text
    location = start.headers["Location"]
    assert location.startswith("/v2/")  # relative: the client comes back to the front
    done = session.put(f"{front.url}{location}&digest={digest}", data=config)
    assert done.status_code == 201, done.text
    return {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest,
            "size": len(config),
        },
        "layers": [],
    }


# --- tag mutability, a pure rule ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutability", "filters", "tag", "locked"),
    [
        ("MUTABLE", [], "1.0", False),
        ("MUTABLE", ["*"], "1.0", False),  # filters only count with an _WITH_EXCLUSION setting
        ("IMMUTABLE", [], "latest", True),
        ("IMMUTABLE_WITH_EXCLUSION", ["latest"], "latest", False),
        ("IMMUTABLE_WITH_EXCLUSION", ["latest"], "latest-1", True),
        ("IMMUTABLE_WITH_EXCLUSION", ["dev-*"], "dev-42", False),
        ("IMMUTABLE_WITH_EXCLUSION", ["dev-*"], "1.0-dev-42", True),
        ("IMMUTABLE_WITH_EXCLUSION", ["*-rc*", "nightly"], "2.0-rc1", False),
        ("MUTABLE_WITH_EXCLUSION", ["release-*"], "release-1", True),
        ("MUTABLE_WITH_EXCLUSION", ["release-*"], "latest", False),
        ("MUTABLE_WITH_EXCLUSION", ["v*.*"], "v1.2", True),
        ("MUTABLE_WITH_EXCLUSION", ["v*.*"], "v12", False),
    ],
)
def test_tag_is_immutable(mutability: str, filters: list[str], tag: str, locked: bool) -> None:
    assert tag_is_immutable(mutability, filters, tag) is locked


@pytest.mark.parametrize(
    ("pattern", "tag", "matches"),
    [
        ("*", "", True),
        ("a*c", "abbc", True),
        ("a*c", "abbcd", False),
        ("1.?", "1.2", False),  # only * is a wildcard: ?, [ and . are literal
        ("1.?", "1.?", True),
        ("[ab]", "a", False),
        ("LATEST", "latest", False),
    ],
)
def test_wildcard_filters(pattern: str, tag: str, matches: bool) -> None:
    assert wildcard_match(pattern, tag) is matches


def test_unknown_mutability_is_an_error() -> None:
    with pytest.raises(ValueError, match="imageTagMutability"):
        tag_is_immutable("SOMETIMES", [], "x")


# --- auth, repositories, digest headers ----------------------------------------------------------


def test_basic_auth_like_ecr(ecr_front: EcrFront, repo_name: str) -> None:
    with requests.Session() as anonymous:
        for path in ("/v2/", f"/v2/{repo_name}/manifests/1", f"/v2/{repo_name}/blobs/uploads/"):
            answer = anonymous.get(ecr_front.url + path)
            assert answer.status_code == 401, path
            assert answer.headers["WWW-Authenticate"] == (
                'Basic realm="https://123456789012.dkr.ecr.us-east-1.amazonaws.com/",'
                'service="ecr.amazonaws.com"'
            )
            assert answer.text == "Not Authorized\n"
        assert anonymous.get(f"{ecr_front.url}/v2/", auth=(ECR_USER, "wrong")).status_code == 401
        assert (
            anonymous.get(f"{ecr_front.url}/v2/", auth=("admin", ECR_PASSWORD)).status_code == 401
        )
        ok = anonymous.get(f"{ecr_front.url}/v2/", auth=ECR_LOGIN)
        assert ok.status_code == 200
        assert ok.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    counts = ecr_front.counts
    assert (counts.unauthorized, counts.of("ping"), counts.of("any")) == (5, 1, 1)


def test_unknown_repository_is_name_unknown_for_everything_push_included(
    ecr_front: EcrFront, ecr: Any, session: requests.Session, repo_name: str
) -> None:
    url = f"{ecr_front.url}/v2/{repo_name}"
    digest = "sha256:" + "0" * 64
    answers = [
        session.get(f"{url}/manifests/1", headers={"Accept": MANIFEST_ACCEPT}),
        session.put(f"{url}/manifests/1", data=b"{}", headers={"Content-Type": "x"}),
        session.post(f"{url}/blobs/uploads/"),
        session.post(f"{url}/blobs/uploads/?mount={digest}&from=other/repo"),
        session.get(f"{url}/blobs/{digest}"),
        session.get(f"{url}/tags/list"),
    ]
    for answer in answers:
        assert (answer.status_code, answer.json()) == (404, name_unknown(repo_name)), answer.url
    assert session.head(f"{url}/manifests/1").status_code == 404

    ecr.create_repository(repositoryName=repo_name)  # takes effect at once: nothing cached
    missing = session.get(f"{url}/manifests/1", headers={"Accept": MANIFEST_ACCEPT})
    assert missing.status_code == 404
    assert missing.json() == {
        "errors": [{"code": "MANIFEST_UNKNOWN", "message": "Requested image not found"}]
    }
    assert session.get(f"{url}/tags/list").json() == {"name": repo_name, "tags": []}
    ecr.delete_repository(repositoryName=repo_name)
    assert session.get(f"{url}/tags/list").json() == name_unknown(repo_name)


def test_skopeo_push_into_an_unknown_repository_fails_with_name_unknown(
    source_registry: Registry,
    dest_registry: Registry,
    ecr_front: EcrFront,
    tmp_path: Path,
    repo_name: str,
) -> None:
    make_image(source_registry.host, repo_name, "1", seed="no-repo")
    done = copy(
        f"{source_registry.host}/{repo_name}:1",
        f"{ecr_front.host}/mirror/{repo_name}:1",
        tmp_path,
    )
    assert done.returncode != 0
    assert (
        f"name unknown: The repository with name 'mirror/{repo_name}' does not exist in the "
        "registry with id '123456789012'"
    ) in done.stderr
    backend = requests.get(
        f"{dest_registry.url}/v2/mirror/{repo_name}/tags/list", auth=ECR_LOGIN, timeout=10
    )
    assert backend.status_code == 404  # nothing was created on push
    assert ecr_front.counts.of("manifest_put") == 0


def test_digest_header_on_head_not_on_get(
    ecr_front: EcrFront, ecr: Any, session: requests.Session, repo_name: str
) -> None:
    ecr.create_repository(repositoryName=repo_name)
    doc = tiny_manifest(session, ecr_front, repo_name, "headers")
    put = put_manifest(session, ecr_front, repo_name, "1", doc)
    digest = "sha256:" + hashlib.sha256(json.dumps(doc).encode()).hexdigest()
    assert put.status_code == 201
    assert put.headers["Docker-Content-Digest"] == digest
    assert "Location" not in put.headers  # ECR sends none
    url = f"{ecr_front.url}/v2/{repo_name}/manifests"
    for ref in ("1", digest):
        get = session.get(f"{url}/{ref}", headers={"Accept": MANIFEST_ACCEPT})
        head = session.head(f"{url}/{ref}", headers={"Accept": MANIFEST_ACCEPT})
        assert get.status_code == head.status_code == 200
        assert "Docker-Content-Digest" not in get.headers
        assert "ETag" not in get.headers
        assert head.headers["Docker-Content-Digest"] == digest
        assert get.headers["Content-Type"] == head.headers["Content-Type"] == doc["mediaType"]


def test_a_blob_comes_from_another_host_that_refuses_the_registrys_credentials(
    ecr_front: EcrFront, ecr: Any, session: requests.Session, repo_name: str
) -> None:
    ecr.create_repository(repositoryName=repo_name)
    config = tiny_manifest(session, ecr_front, repo_name, "bucket")["config"]
    url = f"{ecr_front.url}/v2/{repo_name}/blobs/{config['digest']}"
    answer = session.get(url, allow_redirects=False)
    assert answer.status_code == 307
    bucket = answer.headers["Location"]
    assert bucket.startswith(f"http://localhost:{ecr_front.port}/")  # not the registry's host
    both = requests.get(bucket, auth=ECR_LOGIN, timeout=30)  # S3 takes one way of signing
    assert both.status_code == 400 and "Only one auth mechanism allowed" in both.text
    forged = requests.get(bucket.replace("Signature=", "Signature=0"), timeout=30)
    assert forged.status_code == 403
    fetched = session.get(url)  # requests drops the credentials on a redirect to another host
    assert fetched.status_code == 200
    assert "sha256:" + hashlib.sha256(fetched.content).hexdigest() == config["digest"]
    assert session.get(f"{url[:-6]}000000", allow_redirects=False).status_code == 404


# --- immutability -----------------------------------------------------------------------------


def test_immutable_tag_refused_even_for_the_same_digest(
    ecr_front: EcrFront, ecr: Any, session: requests.Session, repo_name: str
) -> None:
    ecr.create_repository(repositoryName=repo_name, **repository_settings("IMMUTABLE"))
    doc = tiny_manifest(session, ecr_front, repo_name, "immutable")
    assert put_manifest(session, ecr_front, repo_name, "v1", doc).status_code == 201
    again = put_manifest(session, ecr_front, repo_name, "v1", doc)
    assert again.status_code == 400
    assert again.json() == {
        "errors": [{"code": "TAG_INVALID", "message": immutable("v1", repo_name)}]
    }
    digest = "sha256:" + hashlib.sha256(json.dumps(doc).encode()).hexdigest()
    assert put_manifest(session, ecr_front, repo_name, digest, doc).status_code == 201  # no tag
    assert put_manifest(session, ecr_front, repo_name, "v2", doc).status_code == 201  # new tag
    ecr.put_image_tag_mutability(repositoryName=repo_name, imageTagMutability="MUTABLE")
    assert put_manifest(session, ecr_front, repo_name, "v1", doc).status_code == 201
    assert ecr_front.counts.of("manifest_put", 400) == 1


def test_exclusion_filters(
    ecr_front: EcrFront, ecr: Any, session: requests.Session, repo_name: str
) -> None:
    ecr.create_repository(
        repositoryName=repo_name,
        **repository_settings("IMMUTABLE_WITH_EXCLUSION", ["latest", "dev-*"]),
    )
    doc = tiny_manifest(session, ecr_front, repo_name, "exclusions")
    for _ in range(2):
        statuses = {
            tag: put_manifest(session, ecr_front, repo_name, tag, doc).status_code
            for tag in ("latest", "dev-7", "1.0")
        }
    assert statuses == {"latest": 201, "dev-7": 201, "1.0": 400}
    ecr.put_image_tag_mutability(
        repositoryName=repo_name, **repository_settings("MUTABLE_WITH_EXCLUSION", ["1.*"])
    )
    assert put_manifest(session, ecr_front, repo_name, "1.0", doc).status_code == 400
    assert put_manifest(session, ecr_front, repo_name, "latest", doc).status_code == 201


def test_skopeo_repush_to_an_immutable_tag_fails_even_with_the_same_digest(
    source_registry: Registry, ecr_front: EcrFront, ecr: Any, tmp_path: Path, repo_name: str
) -> None:
    ecr.create_repository(repositoryName=repo_name, imageTagMutability="IMMUTABLE")
    make_image(source_registry.host, repo_name, "single", seed="imm")
    make_image(
        source_registry.host,
        repo_name,
        "multi",
        seed="imm",
        platforms=("linux/amd64", "linux/arm64"),
    )

    def push(tag: str, *flags: str) -> subprocess.CompletedProcess[str]:
        src = f"{source_registry.host}/{repo_name}:{tag}"
        dest = f"{ecr_front.host}/{repo_name}:{tag}"
        return copy(src, dest, tmp_path, "--preserve-digests", *flags)

    assert push("single").returncode == 0
    assert push("multi", "--all").returncode == 0
    single, multi, multi_converting = push("single"), push("multi", "--all"), None
    assert single.returncode != 0
    assert f"tag invalid: {immutable('single', repo_name)}" in single.stderr
    # skopeo takes TAG_INVALID for "this manifest type is refused" and wants to convert the
    # index; with --preserve-digests it cannot, and the immutability message is lost:
    assert multi.returncode != 0
    assert "Instructed to preserve digests" in multi.stderr
    assert "immutable" not in multi.stderr
    multi_converting = copy(
        f"{source_registry.host}/{repo_name}:multi",
        f"{ecr_front.host}/{repo_name}:multi",
        tmp_path,
        "--all",
    )
    assert multi_converting.returncode != 0
    assert immutable("multi", repo_name) in multi_converting.stderr
    assert ecr_front.counts.of("manifest_put", 400) == 4  # single, multi, multi as two types


# --- throttling ---------------------------------------------------------------------------------


def test_throttle_next_kinds_with_ecr_body_and_counts(
    ecr_front: EcrFront, ecr: Any, session: requests.Session, repo_name: str
) -> None:
    ecr.create_repository(repositoryName=repo_name)
    doc = tiny_manifest(session, ecr_front, repo_name, "throttle")
    ecr_front.throttle_next("manifest_put", times=2)
    ecr_front.throttle_next("manifest_head")
    statuses = [put_manifest(session, ecr_front, repo_name, "1", doc) for _ in range(3)]
    assert [answer.status_code for answer in statuses] == [429, 429, 201]
    assert statuses[0].json() == RATE_EXCEEDED
    assert "Retry-After" not in statuses[0].headers
    url = f"{ecr_front.url}/v2/{repo_name}/manifests/1"
    heads = [session.head(url, headers={"Accept": MANIFEST_ACCEPT}) for _ in range(2)]
    assert [answer.status_code for answer in heads] == [429, 200]
    ecr_front.throttle_next("any")
    assert session.get(f"{ecr_front.url}/v2/").status_code == 429
    counts = ecr_front.counts
    assert counts.throttled == {"manifest_put": 2, "manifest_head": 1, "ping": 1}
    assert (counts.of("manifest_put", 429), counts.of("manifest_put", 201)) == (2, 1)
    assert counts.of("manifest", 429) == 3


def test_throttle_for_a_period_every_kth_or_a_seeded_fraction(
    ecr_front: EcrFront, ecr: Any, session: requests.Session, repo_name: str
) -> None:
    ecr.create_repository(repositoryName=repo_name)
    url = f"{ecr_front.url}/v2/{repo_name}/blobs/uploads/"
    ecr_front.throttle_for(30, "upload", every=5)
    assert [session.post(url).status_code for _ in range(10)] == [202] * 4 + [429] + [202] * 4 + [
        429
    ]
    ecr_front.clear_faults()

    def pattern(seed: int) -> list[int]:
        ecr_front.throttle_for(30, "upload_start", fraction=0.25, seed=seed)
        statuses = [session.post(url).status_code for _ in range(20)]
        ecr_front.clear_faults()
        return statuses

    first, again, other = pattern(1), pattern(1), pattern(2)
    assert first == again != other  # deterministic for a seed
    assert 1 <= first.count(429) <= 12
    ecr_front.throttle_for(1.5, "upload_start", every=1)  # long enough for a slow machine
    assert session.post(url).status_code == 429
    time.sleep(1.55)
    assert session.post(url).status_code == 202  # the period is over
    assert (
        ecr_front.counts.throttled["upload_start"]
        == 2 + first.count(429) * 2 + other.count(429) + 1
    )


def test_every_kth_is_counted_per_kind_and_capped_by_times(
    ecr_front: EcrFront, ecr: Any, session: requests.Session, repo_name: str
) -> None:
    ecr.create_repository(repositoryName=repo_name)
    uploads = f"{ecr_front.url}/v2/{repo_name}/blobs/uploads/"
    blob = f"{ecr_front.url}/v2/{repo_name}/blobs/sha256:{'0' * 64}"
    ecr_front.throttle_next("any", times=3, every=2)
    # Interleaved kinds: each kind's own 2nd and 4th request are throttled, three in all.
    statuses = []
    for _ in range(4):
        statuses.append(("start", session.post(uploads).status_code))
        statuses.append(("head", session.head(blob).status_code))
    assert statuses == [
        ("start", 202), ("head", 404), ("start", 429), ("head", 429),
        ("start", 202), ("head", 404), ("start", 429), ("head", 404),
    ]  # fmt: skip
    assert ecr_front.counts.throttled == {"upload_start": 2, "blob_head": 1}


def test_skopeo_surfaces_a_throttled_manifest_put(
    source_registry: Registry, ecr_front: EcrFront, ecr: Any, tmp_path: Path, repo_name: str
) -> None:
    ecr.create_repository(repositoryName=repo_name)
    make_image(source_registry.host, repo_name, "1", seed="put-429")
    ecr_front.throttle_next("manifest_put")
    done = copy(
        f"{source_registry.host}/{repo_name}:1",
        f"{ecr_front.host}/{repo_name}:1",
        tmp_path,
        "--preserve-digests",
    )
    assert done.returncode != 0
    assert "toomanyrequests: Rate exceeded" in done.stderr
    counts = ecr_front.counts
    assert (counts.of("manifest_put"), counts.throttled["manifest_put"]) == (1, 1)  # no retry


def test_skopeo_retries_throttled_requests_without_a_body(
    source_registry: Registry,
    dest_registry: Registry,
    moto: Moto,
    ecr: Any,
    tmp_path: Path,
    repo_name: str,
) -> None:
    ecr.create_repository(repositoryName=repo_name)
    digest = make_image(source_registry.host, repo_name, "1", seed="retry", layer_sizes=(512, 512))
    with EcrFront(dest_registry.url, moto.url, retry_after=0) as front:
        front.throttle_next("blob_head", times=2)
        front.throttle_next("upload_start")
        done = copy(
            f"{source_registry.host}/{repo_name}:1",
            f"{front.host}/{repo_name}:1",
            tmp_path,
            "--preserve-digests",
        )
        assert done.returncode == 0, done.stderr
        front.throttle_next("manifest_get", times=3)
        inspect = skopeo_inspect(front.host, f"{repo_name}:1", tmp_path, creds=ECR_LOGIN)
        counts = front.counts
    assert inspect.returncode == 0, inspect.stderr
    assert "sha256:" + hashlib.sha256(inspect.stdout.encode()).hexdigest() == digest
    assert counts.throttled == {"blob_head": 2, "upload_start": 1, "manifest_get": 3}
    assert counts.of("manifest_get", 200) == 1


def test_skopeo_backs_off_without_retry_after(
    source_registry: Registry, ecr_front: EcrFront, ecr: Any, tmp_path: Path, repo_name: str
) -> None:
    """ECR sends no Retry-After: skopeo sleeps 2 s before its first retry."""
    ecr.create_repository(repositoryName=repo_name)
    make_image(source_registry.host, repo_name, "1", seed="backoff")
    ecr_front.throttle_next("upload_start")
    started = time.monotonic()
    done = copy(
        f"{source_registry.host}/{repo_name}:1",
        f"{ecr_front.host}/{repo_name}:1",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started >= 2.0


# --- quota, mounts, size ------------------------------------------------------------------------


def test_images_per_repository_quota_refuses_new_images_only(
    ecr_front: EcrFront,
    ecr: Any,
    session: requests.Session,
    source_registry: Registry,
    tmp_path: Path,
    repo_name: str,
) -> None:
    ecr.create_repository(repositoryName=repo_name)
    doc = tiny_manifest(session, ecr_front, repo_name, "quota")
    assert put_manifest(session, ecr_front, repo_name, "1", doc).status_code == 201
    ecr_front.fill_image_quota(repo_name, limit=10_000)
    assert (
        put_manifest(session, ecr_front, repo_name, "also-1", doc).status_code == 201
    )  # same image
    full = put_manifest(
        session, ecr_front, repo_name, "2", tiny_manifest(session, ecr_front, repo_name, "new")
    )
    assert full.status_code == 403
    message = (
        f"The repository with name '{repo_name}' in registry with id '123456789012' already has "
        "the maximum allowed number of images which is '10000'"
    )
    assert full.json() == {"errors": [{"code": "DENIED", "message": message}]}
    make_image(source_registry.host, repo_name, "3", seed="quota-skopeo")
    done = copy(
        f"{source_registry.host}/{repo_name}:3",
        f"{ecr_front.host}/{repo_name}:3",
        tmp_path,
    )
    assert done.returncode != 0
    assert f"denied: {message}" in done.stderr


def test_blob_mounts_only_when_the_registry_setting_is_on(
    source_registry: Registry,
    dest_registry: Registry,
    moto: Moto,
    ecr: Any,
    tmp_path: Path,
    repo_name: str,
) -> None:
    for repo in ("a", "b", "c"):
        ecr.create_repository(repositoryName=f"{repo_name}/{repo}")
    make_image(source_registry.host, repo_name, "1", seed="mount", layer_sizes=(50_000,))

    def push(front: EcrFront, repo: str) -> None:
        done = copy(
            f"{source_registry.host}/{repo_name}:1",
            f"{front.host}/{repo_name}/{repo}:1",
            tmp_path,
        )
        assert done.returncode == 0, done.stderr

    with EcrFront(dest_registry.url, moto.url) as front:
        push(front, "a")
        front.reset_counts()
        push(front, "b")  # skopeo knows the blobs are in .../a and asks to mount them
        off = front.counts
        front.reset_counts()
        front.blob_mounting = True  # the registry setting BLOB_MOUNTING=ENABLED
        push(front, "c")
        on = front.counts
    # skopeo asks to mount the layer from .../a (it does not mount configs): with the setting
    # off ECR starts an upload instead (202), skopeo cancels it and uploads the usual way
    assert off.of("upload_start", 201) == 0
    assert (off.of("upload_start", 202), off.of("upload_delete"), off.of("upload_patch")) == (
        3,
        1,
        2,
    )
    assert [path for method, path, _ in off.requests if "mount=" in path]
    assert (on.of("upload_start", 201), on.of("upload_patch")) == (1, 1)  # mounted; config sent
    _, blobs = build_image(platforms=("linux/amd64",), layer_sizes=(50_000,), seed="mount")
    sizes = sorted(len(blob.data) for blob in blobs.values() if blob.media_type != OCI_MANIFEST)
    assert len(sizes) == 2  # the config, then the layer
    assert (off.upload_bytes, on.upload_bytes) == (sum(sizes), sizes[0])  # the layer: mounted


def test_a_mount_needs_the_setting_and_the_same_encryption_and_is_counted(
    ecr_front: EcrFront, ecr: Any, session: requests.Session, repo_name: str
) -> None:
    """ECR mounts only with BLOB_MOUNTING on and between repositories of the same encryption
    (FACTS.md); otherwise 202 and an upload's Location, which the client may DELETE (204)."""
    kms = {"encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": "arn:aws:kms:k"}}
    for name, settings in (("a", {}), ("b", {}), ("k", kms)):
        ecr.create_repository(repositoryName=f"{repo_name}/{name}", **settings)
    blob = b"a shared base layer"
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    pushed = session.post(f"{ecr_front.url}/v2/{repo_name}/a/blobs/uploads/?digest={digest}")
    if pushed.status_code == 202:  # the backend wants the bytes in a PUT
        pushed = session.put(
            f"{ecr_front.url}{pushed.headers['Location']}&digest={digest}"
            if "?" in pushed.headers["Location"]
            else f"{ecr_front.url}{pushed.headers['Location']}?digest={digest}",
            data=blob,
            headers={"Content-Type": "application/octet-stream"},
        )
    assert pushed.status_code == 201, pushed.text

    def mount(into: str) -> requests.Response:
        query = f"mount={digest}&from={repo_name}/a"
        return session.post(f"{ecr_front.url}/v2/{repo_name}/{into}/blobs/uploads/?{query}")

    ecr_front.reset_counts()
    off = mount("b")  # BLOB_MOUNTING off, ECR's default
    assert off.status_code == 202 and off.headers["Location"].startswith(f"/v2/{repo_name}/b/")
    assert session.delete(f"{ecr_front.url}{off.headers['Location']}").status_code == 204
    ecr_front.blob_mounting = True
    assert mount("k").status_code == 202  # KMS and AES256: no mount
    assert mount("b").status_code == 201
    counts = ecr_front.counts
    assert (counts.mounts, counts.mounted_bytes, counts.mounts_refused) == (1, len(blob), 2)
    assert counts.of("upload_delete", 204) == 1
    assert session.head(f"{ecr_front.url}/v2/{repo_name}/b/blobs/{digest}").status_code == 200
    assert session.head(f"{ecr_front.url}/v2/{repo_name}/k/blobs/{digest}").status_code == 404


def test_manifests_over_4_mib_are_refused(
    ecr_front: EcrFront, ecr: Any, session: requests.Session, repo_name: str
) -> None:
    ecr.create_repository(repositoryName=repo_name)
    doc = tiny_manifest(session, ecr_front, repo_name, "big")
    doc["annotations"] = {"pad": ""}
    doc["annotations"]["pad"] = "x" * (MAX_MANIFEST_BYTES + 1 - len(json.dumps(doc).encode()))
    assert len(json.dumps(doc).encode()) == MAX_MANIFEST_BYTES + 1
    answer = put_manifest(session, ecr_front, repo_name, "big", doc)
    assert answer.status_code == 405
    assert answer.json()["errors"][0]["code"] == "UNSUPPORTED"
    assert manifest_digest(ecr_front.backend_url, repo_name, "big", auth=ECR_LOGIN) is None


def test_the_front_relays_pulls_through_hub_to_ecr_copy(
    source_registry: Registry,
    hub: HubFront,
    ecr_front: EcrFront,
    ecr: Any,
    tmp_path: Path,
    repo_name: str,
) -> None:
    """The whole path mirror uses: Hub front -> skopeo -> ECR front, with a multi-arch index."""
    ecr.create_repository(repositoryName=f"mirror/{repo_name}")
    digest = make_image(
        source_registry.host,
        repo_name,
        "1",
        platforms=("linux/amd64", "linux/arm64"),
        attestations=True,
    )
    done = copy(
        f"{hub.host}/{repo_name}:1",
        f"{ecr_front.host}/mirror/{repo_name}:1",
        tmp_path,
        "--all",
        "--preserve-digests",
    )
    assert done.returncode == 0, done.stderr
    assert manifest_digest(ecr_front.url, f"mirror/{repo_name}", "1", auth=ECR_LOGIN) == digest
    counts = ecr_front.counts
    assert counts.of("manifest_put", 201) == 5  # 2 images, 2 attestations, the index
    # skopeo 1.9 never keeps a connection alive (containers/image disables keep-alives)
    assert counts.connections >= len(counts.requests)


def test_put_image_rate_throttles_manifest_writes_beyond_the_quota(
    dest_registry: Registry, moto: Moto, ecr: Any, repo_name: str
) -> None:
    """ECR's PutImage quota (10 a second per account and Region): a token bucket holding one
    second's worth; every manifest PUT over it is 429 TOOMANYREQUESTS, whatever it writes (here
    into a repository that does not exist: 404 when within the quota)."""
    headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    with EcrFront(dest_registry.url, moto.url, put_image_rate=1) as front, requests.Session() as s:
        url = f"{front.url}/v2/{repo_name}/manifests/1"
        first = s.put(url, data=b"{}", headers=headers, auth=ECR_LOGIN)
        second = s.put(url, data=b"{}", headers=headers, auth=ECR_LOGIN)
        time.sleep(1.1)  # a second refills one token: at least that long, however slow
        third = s.put(url, data=b"{}", headers=headers, auth=ECR_LOGIN)
        assert (first.status_code, second.status_code, third.status_code) == (404, 429, 404)
        assert second.json() == {
            "errors": [{"code": "TOOMANYREQUESTS", "message": "Rate exceeded"}]
        }
        assert front.counts.throttled["manifest_put"] == 1
        assert len(front.put_times) == 3
