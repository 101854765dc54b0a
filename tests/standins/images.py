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

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


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


def make_layer(files: dict[str, bytes]) -> tuple[Blob, str]:
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
    return Blob(OCI_LAYER, gzip.compress(tar_bytes, compresslevel=1, mtime=0)), diff_id


def _platform_fields(platform: str) -> dict[str, str]:
    parts = platform.split("/")
    if len(parts) not in (2, 3):
        raise ValueError(f"platform must be os/arch[/variant], not {platform!r}")
    fields = {"os": parts[0], "architecture": parts[1]}
    if len(parts) == 3:
        fields["variant"] = parts[2]
    return fields


def _image(
    platform: str, layer_sizes: Sequence[int], seed: int | str, base_layers: Sequence[bytes]
) -> tuple[Blob, list[Blob]]:
    """One platform's manifest and the blobs it refers to (config and layers)."""
    layers = [make_layer({f"base/{i}.bin": content}) for i, content in enumerate(base_layers)]
    for i, size in enumerate(layer_sizes):
        rng = random.Random(f"{seed}|{platform}|{i}")  # noqa: S311 - seeded on purpose
        layers.append(make_layer({f"data/{i}.bin": rng.randbytes(size)}))
    platform_fields = _platform_fields(platform)
    config = _json_blob(
        OCI_CONFIG,
        {
            **platform_fields,
            "created": "1970-01-01T00:00:00Z",
            "config": {"Labels": {"test.seed": str(seed)}},
            "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in layers]},
        },
    )
    manifest = _json_blob(
        OCI_MANIFEST,
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": [blob.descriptor() for blob, _ in layers],
        },
    )
    return manifest, [config, *(blob for blob, _ in layers)]


def write_oci_layout(
    layout: Path,
    tag: str,
    *,
    platforms: Sequence[str],
    layer_sizes: Sequence[int],
    seed: int | str,
    base_layers: Sequence[bytes] = (),
) -> str:
    """Write an OCI layout holding ``tag``; returns its top digest (index if multi-platform)."""
    if not platforms:
        raise ValueError("at least one platform")
    blobs: dict[str, Blob] = {}
    manifests: list[tuple[str, Blob]] = []
    for platform in platforms:
        manifest, parts = _image(platform, layer_sizes, seed, base_layers)
        manifests.append((platform, manifest))
        blobs.update({blob.digest: blob for blob in (manifest, *parts)})
    if len(manifests) == 1:
        top = manifests[0][1]
    else:
        top = _json_blob(
            OCI_INDEX,
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [m.descriptor(platform=_platform_fields(p)) for p, m in manifests],
            },
        )
        blobs[top.digest] = top
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
    return top.digest


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
) -> str:
    """Build an image and push it to ``registry_host/repo:tag`` over plain HTTP; return its digest.

    One image per platform (``os/arch[/variant]``), each with one seeded random file per entry of
    ``layer_sizes`` (bytes; the gzip layer is about that size since the data is incompressible);
    more than one platform gives an OCI index, whose digest is returned. Each of ``base_layers``
    (file contents) becomes the same layer blob in every image and platform it is given to, so
    images can share blobs. ``auth`` pushes with an auth file (never argv). Push directly to a
    backend :class:`~tests.standins.registry.Registry`, not through a ``HubFront`` (pull only).
    """
    tmp = Path(tempfile.mkdtemp(prefix="image-", dir=workdir))
    try:
        layout = tmp / "layout"
        expected = write_oci_layout(
            layout,
            tag,
            platforms=platforms,
            layer_sizes=layer_sizes,
            seed=seed,
            base_layers=base_layers or (),
        )
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
