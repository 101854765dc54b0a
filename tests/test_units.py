"""Pure pieces tested without processes: references, argv building, error translation, engine."""

from __future__ import annotations

import base64
import os
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import botocore.loaders
import pytest
from botocore.stub import Stubber

from mirror import aws, skopeo
from mirror.errors import (
    SCHEMA1_REFUSAL,
    CopyError,
    NestedIndex,
    SetupError,
    Unmirrorable,
)
from mirror.oci import Login, RateLimit, choose_platforms
from mirror.reference import (
    BadReference,
    Repository,
    api_host,
    parse_reference,
    parse_repository,
)
from mirror.registry import parse_rate_limit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ruby", "docker.io/library/ruby:latest"),
        ("ruby:2.7.1-slim", "docker.io/library/ruby:2.7.1-slim"),
        ("bitnami/redis:7", "docker.io/bitnami/redis:7"),
        ("quay.io/coreos/etcd:v3.5.8", "quay.io/coreos/etcd:v3.5.8"),
        ("localhost/x", "localhost/x:latest"),
        ("127.0.0.1:5000/a/b:c", "127.0.0.1:5000/a/b:c"),
        ("ruby@sha256:" + "a" * 64, "docker.io/library/ruby@sha256:" + "a" * 64),
        ("ruby@sha512:" + "b" * 128, "docker.io/library/ruby@sha512:" + "b" * 128),
        ("host:65535/a", "host:65535/a:latest"),
    ],
)
def test_references_normalise_like_docker(text: str, expected: str) -> None:
    assert str(parse_reference(text)) == expected


# Every way to write one Docker Hub image (distribution/reference normalize.go, plus the API
# host registry-1.docker.io and any letter case in the host), and what it is not.
HUB_SPELLINGS = [
    ("alpine", "docker.io/library/alpine"),
    ("library/alpine", "docker.io/library/alpine"),
    ("docker.io/alpine", "docker.io/library/alpine"),
    ("docker.io/library/alpine", "docker.io/library/alpine"),
    ("index.docker.io/alpine", "docker.io/library/alpine"),
    ("index.docker.io/library/alpine", "docker.io/library/alpine"),
    ("registry-1.docker.io/alpine", "docker.io/library/alpine"),
    ("registry-1.docker.io/library/alpine", "docker.io/library/alpine"),
    ("DOCKER.IO/alpine", "docker.io/library/alpine"),
    ("Index.Docker.IO/library/alpine", "docker.io/library/alpine"),
    ("bitnami/redis", "docker.io/bitnami/redis"),
    ("docker.io/bitnami/redis", "docker.io/bitnami/redis"),
    ("index.docker.io/bitnami/redis", "docker.io/bitnami/redis"),
    ("docker.io/a/b/c", "docker.io/a/b/c"),
]


@pytest.mark.parametrize(("name", "canonical"), HUB_SPELLINGS)
def test_every_docker_hub_spelling_is_one_repository(name: str, canonical: str) -> None:
    assert str(parse_repository(name)) == canonical
    assert str(parse_reference(f"{name}:3.20")) == f"{canonical}:3.20"


@pytest.mark.parametrize(("name", "canonical"), HUB_SPELLINGS)
@pytest.mark.parametrize("hub", ["127.0.0.1:5000", "mirror.gcr.io"])
def test_the_registry_standing_in_for_docker_hub_takes_every_spelling(
    name: str, canonical: str, hub: str
) -> None:
    path = canonical.removeprefix("docker.io/")
    assert parse_repository(name, default_registry=hub) == Repository(hub, path)


@pytest.mark.parametrize("hub", ["docker.io", "index.docker.io", "Registry-1.Docker.IO"])
def test_a_docker_hub_spelling_as_source_registry_is_docker_hub(hub: str) -> None:
    assert parse_repository("alpine", default_registry=hub) == Repository(
        "docker.io", "library/alpine"
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("quay.io/alpine", "quay.io/alpine"),  # library/ only on Docker Hub
        ("Quay.IO/alpine", "quay.io/alpine"),  # host names are case-insensitive
        ("ghcr.io:0443/a/b", "ghcr.io:443/a/b"),  # a port is a number
        ("localhost/alpine", "localhost/alpine"),
        ("localhost:5000/alpine", "localhost:5000/alpine"),
        ("127.0.0.1:5000/alpine", "127.0.0.1:5000/alpine"),  # even when it is source.registry
        ("docker.io.example.com/alpine", "docker.io.example.com/alpine"),
        ("hub.docker.com/alpine", "hub.docker.com/alpine"),  # the website, not a registry
    ],
)
def test_other_registries_keep_their_names(name: str, expected: str) -> None:
    assert str(parse_repository(name, default_registry="127.0.0.1:5000")) == expected


def test_registry_api_host() -> None:
    assert api_host("docker.io") == "registry-1.docker.io"
    assert api_host("Index.Docker.IO") == "registry-1.docker.io"
    assert api_host("quay.io") == "quay.io"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "bad image name ''"),
        ("-v", "bad image name '-v'"),
        ("--all", "bad image name '--all'"),
        (
            "Ruby",
            "bad image name 'Ruby' (path parts are lowercase letters and digits, joined by '.', "
            "'_', '__' or '-')",
        ),
        (
            "ruby:",
            "bad tag '' (a tag is 1 to 128 letters, digits, '_', '.' or '-', and does not start "
            "with '.' or '-')",
        ),
        (
            "a//b",
            "bad image name 'a//b' (path parts are lowercase letters and digits, joined by "
            "'.', '_', '__' or '-')",
        ),
        (
            "ruby@md5:" + "a" * 32,
            f"bad digest 'md5:{'a' * 32}' (registries take sha256, sha384 or sha512, not 'md5')",
        ),
        (
            "ruby@sha256:" + "a" * 63,
            f"bad digest 'sha256:{'a' * 63}' (sha256 takes 64 lowercase hex digits, got 63)",
        ),
        (
            "ruby@sha256:" + "A" * 64,
            f"bad digest 'sha256:{'A' * 64}' (sha256 takes 64 lowercase hex digits, got 'A')",
        ),
        (
            "ruby@sha512:" + "a" * 64,
            f"bad digest 'sha512:{'a' * 64}' (sha512 takes 128 lowercase hex digits, got 64)",
        ),
        (
            "ruby@" + "a" * 64,
            f"bad digest '{'a' * 64}' (expected sha256: and 64 lowercase hex digits)",
        ),
        (
            "host:99999/x",
            "bad registry host 'host:99999' (port 99999 is not 1 to 65535) in image name "
            "'host:99999/x'",
        ),
        (
            "host:0/x",
            "bad registry host 'host:0' (port 0 is not 1 to 65535) in image name 'host:0/x'",
        ),
        (
            "a" * 64,
            f"bad image name '{'a' * 64}': 64 hex digits are an image ID, not a name "
            "(as in docker)",
        ),
        ("x" * 256, f"bad image name '{'x' * 40}'...: longer than 255 characters"),
    ],
)
def test_bad_references_are_refused(text: str, message: str) -> None:
    with pytest.raises(BadReference) as caught:
        parse_reference(text)
    assert str(caught.value) == message


def test_rate_limit_headers() -> None:
    assert parse_rate_limit(
        {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "76;w=21600"}
    ) == (RateLimit(100, 76))
    assert parse_rate_limit({}) is None


def test_login_hides_the_password() -> None:
    assert "hunter2" not in repr(Login("me", "hunter2"))


def test_copy_args_preserve_every_platform_and_digest(tmp_path: Path) -> None:
    args = skopeo.copy_args(
        "docker.io/library/ruby:3.3",
        "host/dockerhub/library/ruby:3.3",
        policy=tmp_path / "policy.json",
        authfile=tmp_path / "auth.json",
        digestfile=tmp_path / "digest",
        src_tls_verify=True,
        dest_tls_verify=False,
    )
    assert args == [
        "--debug",
        "--policy",
        f"{tmp_path}/policy.json",
        "copy",
        "--authfile",
        f"{tmp_path}/auth.json",
        "--all",
        "--preserve-digests",
        "--retry-times",
        "0",
        "--src-tls-verify=true",
        "--dest-tls-verify=false",
        "--digestfile",
        f"{tmp_path}/digest",
        "docker://docker.io/library/ruby:3.3",
        "docker://host/dockerhub/library/ruby:3.3",
    ]


@pytest.mark.parametrize(
    ("output", "version"),
    [("skopeo version 1.9.3", (1, 9, 3)), ("skopeo version 1.13.3 commit: abc", (1, 13, 3))],
)
def test_skopeo_version(output: str, version: tuple[int, ...]) -> None:
    assert skopeo.parse_version(output) == version


def test_old_skopeo_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "skopeo"
    fake.write_text("#!/bin/sh\necho 'skopeo version 1.4.1'\n")
    fake.chmod(0o755)
    with pytest.raises(
        SetupError, match=r"skopeo 1\.4\.1 is too old: install skopeo 1\.9 or newer"
    ):
        skopeo.probe(str(fake))


def test_missing_skopeo_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="skopeo not found on PATH"):
        skopeo.probe(str(tmp_path / "no-skopeo"))


def test_workspace_is_private_and_removed() -> None:
    with skopeo.Workspace() as workspace:
        workspace.write_auths({"h": Login("AWS", "secret")})
        assert stat.S_IMODE(workspace.path.stat().st_mode) == 0o700
        assert stat.S_IMODE(workspace.authfile.stat().st_mode) == 0o600
        assert "secret" not in workspace.authfile.read_text()  # base64, never plain
    assert not workspace.path.exists()


@pytest.mark.parametrize(
    ("stderr", "kind", "message"),
    [
        (
            'level=fatal msg="writing blob: Patch \\"http://e/v2/r/blobs/uploads/u?_state=x\\": '
            'EOF"\n',
            "transient",
            'writing blob: Patch "http://e/v2/r/blobs/uploads/u": EOF',
        ),
        (
            'level=fatal msg="writing manifest: uploading manifest sha256:ab to e/r:t: '
            'toomanyrequests: Rate exceeded"\n',
            "throttled",
            "ECR throttling: writing manifest: uploading manifest sha256:ab to e/r:t: "
            "toomanyrequests: Rate exceeded",
        ),
        (
            'level=fatal msg="writing manifest: uploading manifest sha256:ab to e/r:t: denied: '
            "The repository with name 'r' in registry with id '1' already has the maximum "
            "allowed number of images which is '10000'\"\n",
            "permanent",
            "ECR's images-per-repository quota is reached: writing manifest: uploading manifest "
            "sha256:ab to e/r:t: denied: The repository with name 'r' in registry with id '1' "
            "already has the maximum allowed number of images which is '10000'",
        ),
        (
            'level=fatal msg="writing manifest: uploading manifest: tag invalid: The image tag '
            "'t' already exists in the 'r' repository and cannot be overwritten because the "
            'repository is immutable."\n',
            "permanent",
            "the tag is immutable: writing manifest: uploading manifest: tag invalid: The image "
            "tag 't' already exists in the 'r' repository and cannot be overwritten because the "
            "repository is immutable.",
        ),
        (
            'level=fatal msg="reading blob sha256:1: read tcp: connection reset by peer"\n',
            "transient",
            "reading blob sha256:1: read tcp: connection reset by peer",
        ),
        (
            'level=fatal msg="reading blob sha256:1: Error fetching blob: invalid status code '
            'from registry 500 (Internal Server Error)"\n',
            "transient",
            "reading blob sha256:1: Error fetching blob: invalid status code from registry 500 "
            "(Internal Server Error)",
        ),
        (
            'time="x" level=fatal msg="initializing source: manifest unknown"\n',
            "permanent",
            "initializing source: manifest unknown",
        ),
    ],
)
def test_skopeo_errors_name_the_fault(stderr: str, kind: str, message: str) -> None:
    error = skopeo.classify([stderr], "r:t")
    assert isinstance(error, CopyError)
    kinds = {
        "throttled": (True, True),
        "transient": (False, True),
        "permanent": (False, False),
    }
    assert (error.throttled, error.transient) == kinds[kind]
    assert str(error) == message


@pytest.mark.parametrize(
    ("stderr", "kind", "message"),
    [  # skopeo 1.9.3's own words, measured on the stand-ins
        (
            'time="x" level=fatal msg="initializing image from source docker://h/z@sha256:1: '
            'unsupported docker v2s2 media type: \\"application/vnd.docker.image.rootfs.diff.'
            'tar.zstd\\""\n',
            Unmirrorable,
            "a Docker v2 manifest with zstd-compressed layers (application/vnd.docker.image."
            "rootfs.diff.tar.zstd): the Docker v2 format has no zstd layer type (only OCI "
            "manifests carry zstd), and this skopeo refuses to read it, so mirror does not copy "
            "it; ask its publisher for an OCI image",
        ),
        (
            'time="x" level=fatal msg="Copying a schema1 image with an embedded Docker reference '
            "to docker://h/m/s1:1 (Docker reference h/m/s1:1) would change the manifest, which "
            'we cannot do: \\"Instructed to preserve digests\\""\n',
            Unmirrorable,
            SCHEMA1_REFUSAL,
        ),
        (
            'time="x" level=fatal msg="copying image 1/2 from manifest list: Unexpectedly '
            'received a manifest list instead of a manifest for a single image"\n',
            NestedIndex,
            "copying image 1/2 from manifest list: Unexpectedly received a manifest list "
            "instead of a manifest for a single image",
        ),
    ],
)
def test_skopeo_refusals_of_the_image_form(stderr: str, kind: type, message: str) -> None:
    error = skopeo.classify([stderr], "r:t")
    assert type(error) is kind
    assert str(error) == message


def test_skopeo_foreign_layers_are_noted_from_its_debug_lines() -> None:
    watch = skopeo._Watch(lambda host: None)
    layer = "sha256:" + "9" * 64
    line = f'time="x" level=debug msg="Skipping foreign layer \\"{layer}\\" copy to docker"\n'
    for _ in range(2):
        watch.line(line, None, None)
    assert list(watch.foreign_layers) == [layer]


def test_a_429_skopeo_waits_out_is_told_as_throttling_and_skopeo_left_running() -> None:
    told: list[str] = []
    watch = skopeo._Watch(told.append)
    ecr = "Too many requests to https://1.dkr.ecr.us-east-1.amazonaws.com/v2/x/blobs/uploads/: "
    watch.line(f"{ecr}sleeping for 2.000000 seconds", None, object())
    assert told == ["1.dkr.ecr.us-east-1.amazonaws.com"]
    assert not watch.tail


# --- the ECR token: fetched once, renewed before expiry, never looped on -------------------------


def _token_answer(expires_at: datetime) -> dict[str, object]:
    return {
        "authorizationData": [
            {
                "authorizationToken": base64.b64encode(b"AWS:pw").decode(),
                "proxyEndpoint": "https://123456789012.dkr.ecr.us-east-1.amazonaws.com",
                "expiresAt": expires_at,
            }
        ]
    }


@pytest.mark.parametrize(
    "expires_at",
    [datetime(2015, 1, 1, tzinfo=timezone.utc), datetime.now(timezone.utc) + timedelta(hours=12)],
    ids=["moto-expiry-in-the-past", "twelve-hours"],
)
def test_ecr_token_is_fetched_once_per_run(expires_at: datetime) -> None:
    client = boto3.client(
        "ecr", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stub:
        stub.add_response("get_authorization_token", _token_answer(expires_at), {})
        ecr = aws.Ecr(region="us-east-1", client=client)
        logins = {ecr.login() for _ in range(50)}
        stub.assert_no_pending_responses()
    (login,) = logins
    assert login.host == "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    assert (login.login.username, login.login.password) == ("AWS", "pw")


def test_ecr_token_is_renewed_before_it_expires() -> None:
    now = 1000.0
    twelve_hours = datetime.now(timezone.utc) + timedelta(hours=12)
    assert aws._renew_at(twelve_hours, now=now) == pytest.approx(now + 11.75 * 3600, abs=5)
    soon = datetime.now(timezone.utc) + timedelta(minutes=10)
    assert aws._renew_at(soon, now=now) == pytest.approx(now + 300, abs=5)
    past = datetime(2015, 1, 1, tzinfo=timezone.utc)
    assert aws._renew_at(past, now=now) == pytest.approx(now + 11.75 * 3600, abs=5)


def test_ecr_token_renewal_fetches_again() -> None:
    client = boto3.client(
        "ecr", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stub:
        stub.add_response("get_authorization_token", _token_answer(datetime.now(timezone.utc)), {})
        stub.add_response("get_authorization_token", _token_answer(datetime.now(timezone.utc)), {})
        ecr = aws.Ecr(region="us-east-1", client=client)
        first = ecr.login()
        ecr._login = aws.EcrLogin(first.host, first.login, renew_at=0.0)  # as if hours passed
        ecr.login()
        stub.assert_no_pending_responses()


def test_choose_platforms() -> None:
    entries = [
        {"digest": "a", "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "b", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"digest": "c", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {"digest": "d", "platform": {"os": "unknown", "architecture": "unknown"}},
    ]
    assert [e["digest"] for e in choose_platforms(entries, ["linux/arm64"])] == ["b"]
    assert [e["digest"] for e in choose_platforms(entries, ["linux/arm/v7", "linux/amd64"])] == [
        "a",
        "c",
    ]
    assert choose_platforms(entries, ["linux/arm/v6"]) == []


def test_a_hung_skopeo_is_killed_at_its_deadline(tmp_path: Path) -> None:
    fake = tmp_path / "skopeo"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(0o755)
    with skopeo.Workspace() as workspace:
        tool = skopeo.Skopeo(workspace, command=str(fake), timeout=0.3)
        with pytest.raises(CopyError) as caught:
            tool.copy("a/b:c", "d/e:f", src_tls_verify=True, dest_tls_verify=True)
    assert (str(caught.value), caught.value.transient) == ("copy timed out after 0.3 s", True)


@pytest.mark.parametrize(
    ("region", "registry_id", "host"),
    [
        ("us-east-1", None, "123456789012.dkr.ecr.us-east-1.amazonaws.com"),
        ("eu-west-1", "111122223333", "111122223333.dkr.ecr.eu-west-1.amazonaws.com"),
        ("cn-north-1", "111122223333", "111122223333.dkr.ecr.cn-north-1.amazonaws.com.cn"),
    ],
)
def test_a_targets_host_comes_from_its_account_and_region(
    region: str, registry_id: str | None, host: str
) -> None:
    token_host = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    assert aws.registry_host(region=region, registry_id=registry_id, token_host=token_host) == host


def test_ecrs_service_model_is_read_once_for_the_name_rule_and_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 18: the rule's loader and boto3's each parsed ECR's model (about 45 ms a run)."""
    read: list[str] = []
    load_file = botocore.loaders.JSONFileLoader.load_file

    def counted(self: botocore.loaders.JSONFileLoader, path: str) -> Any:
        read.append(path)
        return load_file(self, path)

    monkeypatch.setattr(botocore.loaders.JSONFileLoader, "load_file", counted)
    aws.repository_name_rule.cache_clear()
    aws._data_loader.cache_clear()
    try:
        assert aws.repository_name_rule().matches("library/ruby")
        aws.Ecr(region="us-east-1")
    finally:
        aws.repository_name_rule.cache_clear()
        aws._data_loader.cache_clear()
    models = [
        path for path in read if path.split(os.sep)[-3:-2] == ["ecr"] and path.endswith("service-2")
    ]
    assert len(models) == 1, read
