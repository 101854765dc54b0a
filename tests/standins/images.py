"""Reproducible test images without Docker: OCI layouts written here, pushed with skopeo.

Everything is deterministic: layer files are seeded random bytes, tar entries have fixed
metadata, gzip has mtime 0, JSON is written with sorted keys and no spaces. The same arguments
give the same digests; a different ``seed`` gives different ones.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import random
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import urllib3

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
IN_TOTO = "application/vnd.in-toto+json"
ATTESTATION_PREDICATES = ("https://slsa.dev/provenance/v0.2", "https://spdx.dev/Document")


@dataclass(frozen=True)
class MediaTypes:
    """One family of media types: what an index, a manifest, a config and a layer are called."""

    index: str
    manifest: str
    config: str
    layer: str


# Docker Official Images are OCI indexes of OCI manifests today (BuildKit writes them so, with
# attestation manifests); older images and other publishers use the Docker v2 family.
FAMILIES = {
    "oci": MediaTypes(OCI_INDEX, OCI_MANIFEST, OCI_CONFIG, OCI_LAYER),
    "docker": MediaTypes(DOCKER_LIST, DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER),
}


def skopeo_policy_file(dir: Path) -> Path:
    """Write ``policy.json`` accepting any image (what a mirror needs) into ``dir``."""
    dir.mkdir(parents=True, exist_ok=True)
    path = dir / "policy.json"
    path.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}) + "\n")
    return path


def write_auth_file(path: Path, registry_host: str, user: str, password: str) -> Path:
    """An auth file (mode 0600) for ``--authfile``: the secret never goes on argv."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps({"auths": {registry_host: {"auth": token}}}) + "\n")
    return path


def skopeo_inspect(
    host: str,
    ref: str,
    workdir: Path,
    *,
    creds: tuple[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``skopeo inspect --raw`` of ``host/ref`` (plain HTTP allowed), anonymous unless
    ``creds`` are given (in an auth file in ``workdir``, never on argv)."""
    auth = ["--no-creds"]
    if creds is not None:
        auth = ["--authfile", str(write_auth_file(workdir / "inspect-auth.json", host, *creds))]
    return subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", *auth, f"docker://{host}/{ref}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def skopeo_copy(
    src: str,
    dest: str,
    workdir: Path,
    *flags: str,
    auth_file: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``skopeo copy`` from ``src`` (anonymous) to ``dest`` with the credentials of
    ``auth_file`` (never on argv); plain HTTP allowed on both sides."""
    return subprocess.run(
        [
            "skopeo",
            "--policy",
            str(skopeo_policy_file(workdir)),
            "copy",
            *flags,
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--src-no-creds",
            "--authfile",
            str(auth_file),
            f"docker://{src}",
            f"docker://{dest}",
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.data),
            **extra,
        }


def _json_blob(media_type: str, doc: dict[str, Any]) -> Blob:
    return Blob(media_type, json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())


def make_layer(files: dict[str, bytes], media_type: str = OCI_LAYER) -> tuple[Blob, str]:
    """A gzip tar layer of ``files`` and its diff_id (digest of the uncompressed tar)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(content))
    tar_bytes = raw.getvalue()
    diff_id = "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
    return Blob(media_type, gzip.compress(tar_bytes, compresslevel=1, mtime=0)), diff_id


def _platform_fields(platform: str) -> dict[str, str]:
    parts = platform.split("/")
    if len(parts) not in (2, 3):
        raise ValueError(f"platform must be os/arch[/variant], not {platform!r}")
    fields = {"os": parts[0], "architecture": parts[1]}
    if len(parts) == 3:
        fields["variant"] = parts[2]
    return fields


def _image(
    platform: str,
    layer_sizes: Sequence[int],
    seed: int | str,
    base_layers: Sequence[bytes],
    family: MediaTypes,
    created: str = "1970-01-01T00:00:00Z",
) -> tuple[Blob, list[Blob]]:
    """One platform's manifest and the blobs it refers to (config and layers)."""
    layers = [
        make_layer({f"base/{i}.bin": content}, family.layer)
        for i, content in enumerate(base_layers)
    ]
    for i, size in enumerate(layer_sizes):
        rng = random.Random(f"{seed}|{platform}|{i}")  # noqa: S311 - seeded on purpose
        layers.append(make_layer({f"data/{i}.bin": rng.randbytes(size)}, family.layer))
    platform_fields = _platform_fields(platform)
    config = _json_blob(
        family.config,
        {
            **platform_fields,
            "created": created,
            "config": {"Labels": {"test.seed": str(seed)}},
            "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in layers]},
        },
    )
    manifest = _json_blob(
        family.manifest,
        {
            "schemaVersion": 2,
            "mediaType": family.manifest,
            "config": config.descriptor(),
            "layers": [blob.descriptor() for blob, _ in layers],
        },
    )
    return manifest, [config, *(blob for blob, _ in layers)]


def _attestation(
    subject: Blob, platform: str, seed: int | str, family: MediaTypes
) -> tuple[Blob, list[Blob]]:
    """An attestation manifest for ``subject`` as BuildKit writes them (Docker's "attestation
    storage"): in-toto statements as layers, a config that says ``unknown/unknown``.
    """
    statements = [
        _json_blob(
            IN_TOTO,
            {
                "_type": "https://in-toto.io/Statement/v0.1",
                "predicateType": predicate,
                "subject": [
                    {
                        "name": f"pkg:docker/test@{seed}?platform={quote(platform, safe='')}",
                        "digest": {"sha256": subject.digest.removeprefix("sha256:")},
                    }
                ],
                "predicate": {"test.seed": str(seed)},
            },
        )
        for predicate in ATTESTATION_PREDICATES
    ]
    config = _json_blob(
        family.config,
        {
            "architecture": "unknown",
            "os": "unknown",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [blob.digest for blob in statements]},
        },
    )
    layers = [
        blob.descriptor(annotations={"in-toto.io/predicate-type": predicate})
        for blob, predicate in zip(statements, ATTESTATION_PREDICATES, strict=True)
    ]
    manifest = _json_blob(
        family.manifest,
        {
            "schemaVersion": 2,
            "mediaType": family.manifest,
            "config": config.descriptor(),
            "layers": layers,
        },
    )
    return manifest, [config, *statements]


def build_image(
    *,
    platforms: Sequence[str],
    layer_sizes: Sequence[int],
    seed: int | str,
    base_layers: Sequence[bytes] = (),
    media_types: str = "oci",
    attestations: bool = False,
    created: str = "1970-01-01T00:00:00Z",
) -> tuple[Blob, dict[str, Blob]]:
    """The top manifest (an index if more than one platform or with attestations) and every
    blob and manifest it refers to, by digest. ``created`` is each image config's build time
    (the 1970 of reproducible builds by default).
    """
    if not platforms:
        raise ValueError("at least one platform")
    if media_types not in FAMILIES:
        raise ValueError(f"media_types must be one of {sorted(FAMILIES)}")
    family = FAMILIES[media_types]
    blobs: dict[str, Blob] = {}
    entries: list[dict[str, Any]] = []
    manifests: list[tuple[str, Blob]] = []
    for platform in platforms:
        manifest, parts = _image(platform, layer_sizes, seed, base_layers, family, created)
        manifests.append((platform, manifest))
        entries.append(manifest.descriptor(platform=_platform_fields(platform)))
        blobs.update({blob.digest: blob for blob in (manifest, *parts)})
    if attestations:  # always OCI manifests (Docker's "attestation storage"); skopeo refuses
        # in-toto layers in a Docker v2 manifest ("unsupported docker v2s2 media type")
        for platform, subject in manifests:
            manifest, parts = _attestation(subject, platform, seed, FAMILIES["oci"])
            annotations = {
                "vnd.docker.reference.digest": subject.digest,
                "vnd.docker.reference.type": "attestation-manifest",
            }
            unknown = {"architecture": "unknown", "os": "unknown"}
            entries.append(manifest.descriptor(annotations=annotations, platform=unknown))
            blobs.update({blob.digest: blob for blob in (manifest, *parts)})
    if len(entries) == 1:
        return manifests[0][1], blobs
    top = _json_blob(
        family.index, {"schemaVersion": 2, "mediaType": family.index, "manifests": entries}
    )
    blobs[top.digest] = top
    return top, blobs


def write_oci_layout(
    layout: Path,
    tag: str,
    *,
    platforms: Sequence[str],
    layer_sizes: Sequence[int],
    seed: int | str,
    base_layers: Sequence[bytes] = (),
    media_types: str = "oci",
    attestations: bool = False,
    created: str = "1970-01-01T00:00:00Z",
) -> str:
    """Write an OCI layout holding ``tag``; returns its top digest (index if multi-platform)."""
    top, blobs = build_image(
        platforms=platforms,
        layer_sizes=layer_sizes,
        seed=seed,
        base_layers=base_layers,
        media_types=media_types,
        attestations=attestations,
        created=created,
    )
    _write_layout(layout, tag, top, blobs)
    return top.digest


def _write_layout(layout: Path, tag: str, top: Blob, blobs: dict[str, Blob]) -> None:
    blob_dir = layout / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    for digest, blob in blobs.items():
        (blob_dir / digest.removeprefix("sha256:")).write_bytes(blob.data)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "manifests": [top.descriptor(annotations={"org.opencontainers.image.ref.name": tag})],
    }
    (layout / "index.json").write_text(json.dumps(index))


def make_image(
    registry_host: str,
    repo: str,
    tag: str,
    *,
    platforms: Sequence[str] = ("linux/amd64",),
    layer_sizes: Sequence[int] = (2048,),
    seed: int | str = 0,
    base_layers: Sequence[bytes] | None = None,
    workdir: Path | None = None,
    auth: tuple[str, str] | None = None,
    media_types: str = "oci",
    attestations: bool = False,
    created: str = "1970-01-01T00:00:00Z",
) -> str:
    """Build an image and push it to ``registry_host/repo:tag`` over plain HTTP; return its digest.

    One image per platform (``os/arch[/variant]``), each with one seeded random file per entry of
    ``layer_sizes`` (bytes; the gzip layer is about that size since the data is incompressible);
    more than one platform gives an index, whose digest is returned. Each of ``base_layers``
    (file contents) becomes the same layer blob in every image and platform it is given to, so
    images can share blobs. ``auth`` pushes with an auth file (never argv). Push directly to a
    backend :class:`~tests.standins.registry.Registry`, not through a ``HubFront`` (pull only).

    ``media_types="oci"`` (the default, what Docker Official Images use today) writes OCI
    manifests and an OCI index, pushed with skopeo; ``"docker"`` writes Docker v2 manifests and a
    Docker manifest list, pushed over the registry API (:func:`push_image`). ``attestations``
    adds an attestation manifest per platform, as BuildKit does (``unknown/unknown``, annotated
    ``vnd.docker.reference.type: attestation-manifest``), which makes even one platform an index;
    attestation manifests are OCI manifests in either family, as Docker documents them.
    """
    top, blobs = build_image(
        platforms=platforms,
        layer_sizes=layer_sizes,
        seed=seed,
        base_layers=base_layers or (),
        media_types=media_types,
        attestations=attestations,
        created=created,
    )
    if media_types != "oci":  # skopeo's oci: transport finds no Docker-typed manifest
        return push_image(registry_host, repo, tag, top, blobs, auth=auth)
    tmp = Path(tempfile.mkdtemp(prefix="image-", dir=workdir))
    try:
        layout = tmp / "layout"
        _write_layout(layout, tag, top, blobs)
        expected = top.digest
        digest_file = tmp / "digest"
        creds = ["--dest-no-creds"]
        if auth is not None:
            creds = ["--authfile", str(write_auth_file(tmp / "auth.json", registry_host, *auth))]
        done = subprocess.run(
            [
                "skopeo",
                "--policy",
                str(skopeo_policy_file(tmp)),
                "copy",
                "--quiet",
                "--all",
                "--preserve-digests",
                "--dest-tls-verify=false",
                *creds,
                "--digestfile",
                str(digest_file),
                f"oci:{layout}:{tag}",
                f"docker://{registry_host}/{repo}:{tag}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"skopeo push of {repo}:{tag} failed: {done.stderr.strip()}")
        pushed = digest_file.read_text().strip()
        if pushed != expected:
            raise RuntimeError(f"pushed {repo}:{tag} as {pushed}, built it as {expected}")
        return pushed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_HTTP = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=60))
MANIFEST_TYPES = frozenset({OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST})


def push_image(
    registry_host: str,
    repo: str,
    tag: str,
    top: Blob,
    blobs: dict[str, Blob],
    *,
    auth: tuple[str, str] | None = None,
) -> str:
    """Push what :func:`build_image` made over plain HTTP with the registry API: blobs (skipping
    those already there), then the child manifests by digest, then ``top`` by ``tag``.
    Returns the digest of ``top``.
    """
    call = _caller(auth)
    base = f"http://{registry_host}/v2/{repo}"
    manifests = [b for b in blobs.values() if b.media_type in MANIFEST_TYPES and b != top]
    layers = [b for b in blobs.values() if b.media_type not in MANIFEST_TYPES and b != top]
    push_blobs(registry_host, repo, layers, auth=auth)
    for blob in (*manifests, top):
        reference = tag if blob == top else blob.digest
        call("PUT", f"{base}/manifests/{reference}", blob.data, **{"Content-Type": blob.media_type})
    return top.digest


def push_blobs(
    registry_host: str,
    repo: str,
    blobs: Sequence[Blob],
    *,
    auth: tuple[str, str] | None = None,
) -> None:
    """Upload ``blobs`` (monolithic PUTs), skipping those the repository has."""
    call = _caller(auth)
    base = f"http://{registry_host}/v2/{repo}"
    for blob in blobs:
        if call("HEAD", f"{base}/blobs/{blob.digest}").status == 200:
            continue
        location = call("POST", f"{base}/blobs/uploads/").headers["Location"]
        if location.startswith("/"):  # relative, as the ECR-like front answers
            location = f"http://{registry_host}{location}"
        joiner = "&" if "?" in location else "?"
        call("PUT", f"{location}{joiner}digest={blob.digest}", blob.data)


def _caller(auth: tuple[str, str] | None) -> Any:
    headers = urllib3.make_headers(basic_auth=f"{auth[0]}:{auth[1]}") if auth else {}

    def call(method: str, url: str, body: bytes | None = None, **extra: str) -> Any:
        resp = _HTTP.request(method, url, body=body, headers={**headers, **extra})
        if resp.status >= 300 and not (method == "HEAD" and resp.status == 404):
            raise RuntimeError(f"{method} {url}: HTTP {resp.status}: {resp.data[:300]!r}")
        return resp

    return call


# --- content of every shape: what skopeo 1.9.3 and mirror meet in the field -------------------

DOCKER_ZSTD_LAYER = "application/vnd.docker.image.rootfs.diff.tar.zstd"  # not in Docker's spec
FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"


def zstd_frame(data: bytes) -> bytes:
    """``data`` as one zstd frame of raw (stored) blocks: valid zstd (RFC 8878), no library."""
    frame = bytearray(b"\x28\xb5\x2f\xfd")  # magic number, little-endian
    frame.append(0xA0)  # single segment, 4-byte frame content size
    frame += len(data).to_bytes(4, "little")
    blocks = [data[i : i + 65536] for i in range(0, len(data), 65536)] or [b""]
    for number, block in enumerate(blocks):
        last = number == len(blocks) - 1
        frame += ((len(block) << 3) | int(last)).to_bytes(3, "little") + block  # a raw block
    return bytes(frame)


def tar_bytes(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o644, 0
            tar.addfile(info, io.BytesIO(content))
    return raw.getvalue()


def _docker_manifest(
    layers: list[tuple[Blob, str, dict[str, Any]]], *, os_name: str = "linux"
) -> tuple[Blob, dict[str, Blob]]:
    """A Docker v2 manifest over ``layers`` (blob, diff_id, extra descriptor fields)."""
    config = _json_blob(
        DOCKER_CONFIG,
        {
            "architecture": "amd64",
            "os": os_name,
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id, _ in layers]},
        },
    )
    manifest = _json_blob(
        DOCKER_MANIFEST,
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": config.descriptor(),
            "layers": [blob.descriptor(**extra) for blob, _, extra in layers],
        },
    )
    return manifest, {config.digest: config, manifest.digest: manifest}


def zstd_docker_image(seed: int | str) -> tuple[Blob, dict[str, Blob]]:
    """A Docker v2 manifest whose layer is zstd-compressed (``...diff.tar.zstd``), as BuildKit
    writes with ``compression=zstd`` and Docker media types; skopeo 1.9.3 refuses to read it."""
    tar = tar_bytes({"zstd.txt": f"seed {seed}".encode()})
    layer = Blob(DOCKER_ZSTD_LAYER, zstd_frame(tar))
    diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()
    manifest, blobs = _docker_manifest([(layer, diff_id, {})])
    return manifest, {**blobs, layer.digest: layer}


def windows_image(
    seed: int | str, *, url_host: str = "mcr.microsoft.com"
) -> tuple[Blob, dict[str, Blob]]:
    """A Windows image as Microsoft's base images are: its base layer is a foreign layer
    (``...foreign.diff.tar.gzip`` with ``urls`` on ``url_host``) that the registry does not
    hold; only the layer on top is a blob here. skopeo keeps the descriptor, copies no blob."""
    base, base_diff = make_layer({"Files/base.txt": f"base {seed}".encode()}, FOREIGN_LAYER)
    own, own_diff = make_layer({"Files/app.txt": f"app {seed}".encode()}, DOCKER_LAYER)
    url = f"https://{url_host}/v2/windows/servercore/blobs/{base.digest}"
    manifest, blobs = _docker_manifest(
        [(base, base_diff, {"urls": [url]}), (own, own_diff, {})], os_name="windows"
    )
    return manifest, {**blobs, own.digest: own}


def nested_index(seed: int | str, *, media_types: str = "oci") -> tuple[Blob, dict[str, Blob]]:
    """An index whose first entry is itself an index (linux/amd64 and linux/arm64, with no
    platform on the entry, as ``docker buildx imagetools create`` of indexes can write), then
    a linux/s390x manifest: registries take it, skopeo 1.9.3 cannot copy it whole."""
    family = FAMILIES[media_types]
    inner, blobs = build_image(
        platforms=("linux/amd64", "linux/arm64"), layer_sizes=(512,), seed=f"{seed}-inner",
        media_types=media_types,
    )  # fmt: skip
    other, more = build_image(
        platforms=("linux/s390x",), layer_sizes=(512,), seed=f"{seed}-s390x",
        media_types=media_types,
    )  # fmt: skip
    blobs.update(more)
    top = _json_blob(
        family.index,
        {
            "schemaVersion": 2,
            "mediaType": family.index,
            "manifests": [
                inner.descriptor(),
                other.descriptor(platform=_platform_fields("linux/s390x")),
            ],
        },
    )
    return top, {**blobs, top.digest: top}


def push_schema1(registry_host: str, repo: str, tag: str, seed: int | str) -> str:
    """Push a signed schema 1 image (``...manifest.v1+prettyjws``, as Docker 1.9 and older
    pushed them) over plain HTTP; return its digest, which registries compute over the
    manifest without its signatures. The JWS is libtrust's: ES256 over the payload, whose
    length and tail the protected header records. The registry checks the signature."""
    layer, _ = make_layer({"schema1.txt": f"seed {seed}".encode()}, DOCKER_LAYER)
    push_blobs(registry_host, repo, [layer])
    history = json.dumps({"id": hashlib.sha256(str(seed).encode()).hexdigest(),
                          "created": "2015-01-01T00:00:00Z", "os": "linux"})  # fmt: skip
    document = {
        "schemaVersion": 1,
        "name": repo,
        "tag": tag,
        "architecture": "amd64",
        "fsLayers": [{"blobSum": layer.digest}],
        "history": [{"v1Compatibility": history}],
    }
    payload = json.dumps(document, indent=3).encode()
    body = payload[:-1] + b',\n   "signatures": ' + _jws(payload) + b"\n}"
    resp = _HTTP.request(
        "PUT",
        f"http://{registry_host}/v2/{repo}/manifests/{tag}",
        body=body,
        headers={"Content-Type": SCHEMA1_SIGNED},
    )
    if resp.status != 201:
        raise RuntimeError(f"schema 1 push of {repo}:{tag}: HTTP {resp.status}: {resp.data!r}")
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    assert resp.headers["Docker-Content-Digest"] == digest
    return digest


def _jws(payload: bytes) -> bytes:
    """libtrust's signatures of a pretty JSON payload ending in a newline-less ``}``."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    key = ec.derive_private_key(20161, ec.SECP256R1())  # a fixed key: stable digests
    public = key.public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    kid = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    numbers = public.public_numbers()
    jwk = {
        "crv": "P-256",
        "kid": ":".join(kid[i : i + 4] for i in range(0, len(kid), 4)),
        "kty": "EC",
        "x": b64(numbers.x.to_bytes(32, "big")),
        "y": b64(numbers.y.to_bytes(32, "big")),
    }
    length = len(payload) - 1  # the payload up to its closing brace
    header = {"formatLength": length, "formatTail": b64(payload[length:]),
              "time": "2015-01-01T00:00:00Z"}  # fmt: skip
    protected = b64(json.dumps(header).encode())
    r, s = decode_dss_signature(
        key.sign(f"{protected}.{b64(payload)}".encode(), ec.ECDSA(hashes.SHA256()))
    )
    signature = b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    signatures = [{"header": {"jwk": jwk, "alg": "ES256"}, "signature": signature,
                   "protected": protected}]  # fmt: skip
    return json.dumps(signatures, indent=3).replace("\n", "\n   ").encode()
