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
    base = f"http://{registry_host}/v2/{repo}"
    headers = urllib3.make_headers(basic_auth=f"{auth[0]}:{auth[1]}") if auth else {}

    def call(method: str, url: str, body: bytes | None = None, **extra: str) -> Any:
        resp = _HTTP.request(method, url, body=body, headers={**headers, **extra})
        if resp.status >= 300 and not (method == "HEAD" and resp.status == 404):
            raise RuntimeError(f"{method} {url}: HTTP {resp.status}: {resp.data[:300]!r}")
        return resp

    manifests = [b for b in blobs.values() if b.media_type in MANIFEST_TYPES and b != top]
    for blob in blobs.values():
        if blob.media_type in MANIFEST_TYPES or blob == top:
            continue
        if call("HEAD", f"{base}/blobs/{blob.digest}").status == 200:
            continue
        location = call("POST", f"{base}/blobs/uploads/").headers["Location"]
        joiner = "&" if "?" in location else "?"
        call("PUT", f"{location}{joiner}digest={blob.digest}", blob.data)
    for blob in (*manifests, top):
        reference = tag if blob == top else blob.digest
        call("PUT", f"{base}/manifests/{reference}", blob.data, **{"Content-Type": blob.media_type})
    return top.digest
