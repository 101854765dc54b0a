"""A real CNCF distribution registry (Debian's ``docker-registry``) on 127.0.0.1, for tests.

Each :class:`Registry` writes its own ``config.yml`` under its root, stores blobs there, logs
(level warn, no access log) to ``root/registry.log`` and listens on a free loopback port, over
plain HTTP. With ``htpasswd=(user, password)`` it asks for HTTP Basic auth, like ECR does.

Distribution 2.8 has no referrers API (``GET /v2/<name>/referrers/<digest>`` is its plain-text
``404 page not found``), though it stores manifests with a ``subject``. :func:`referrers_at`
reads them from its storage, for the fronts that answer the API as ECR (and Docker Hub) do.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import urllib3

from tests.standins.service import Service

MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)

_HTTP = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=30))
_STORAGE: dict[str, Path] = {}  # a started registry's URL -> its storage root directory


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (callers retry on a clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bcrypt_htpasswd_line(user: str, password: str) -> str:
    """``user:$2y$...`` from apache2-utils' ``htpasswd``; the password goes over stdin only."""
    done = subprocess.run(
        ["htpasswd", "-iBn", user],
        input=password,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    line = done.stdout.strip()
    if not line.startswith(f"{user}:$2"):
        raise RuntimeError(f"htpasswd gave no bcrypt line: {done.stderr.strip()}")
    return line


class Registry(Service):
    """A ``docker-registry serve`` process; ``start()`` returns once ``/v2/`` answers."""

    def __init__(self, root: Path, *, htpasswd: tuple[str, str] | None = None) -> None:
        self.root = Path(root)
        self.htpasswd = htpasswd
        self.port = 0
        self.log_path = self.root / "registry.log"
        self.config_path = self.root / "config.yml"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def _write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        storage = self.root / "storage"
        storage.mkdir(exist_ok=True)
        # JSON is YAML: no YAML library needed and no quoting surprises.
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(storage)},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
            },
            "http": {
                "addr": self.host,
                "secret": secrets.token_hex(16),
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
            # As Docker Hub and ECR do: store schema 1 manifests pushed to them, and
            # manifests whose foreign layers name URLs (Windows base images).
            "compatibility": {"schema1": {"enabled": True}},
            "validation": {"manifests": {"urls": {"allow": ["^https?://"]}}},
        }
        if self.htpasswd is not None:
            user, password = self.htpasswd
            htpasswd_file = self.root / "htpasswd"
            htpasswd_file.write_text(bcrypt_htpasswd_line(user, password) + "\n")
            htpasswd_file.chmod(0o600)
            config["auth"] = {"htpasswd": {"realm": "registry", "path": str(htpasswd_file)}}
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")

    @property
    def storage(self) -> Path:
        """The filesystem driver's root directory (``storage.filesystem.rootdirectory``)."""
        return self.root / "storage"

    def _answers(self) -> bool:
        try:  # 200, or 401 when htpasswd is on: up either way
            resp = _HTTP.request("GET", f"{self.url}/v2/", timeout=1.0)
        except urllib3.exceptions.HTTPError:
            return False
        # Someone else could have taken the port: make sure a registry answered.
        return bool(resp.headers.get("Docker-Distribution-Api-Version") == "registry/2.0")

    def _launch(self, timeout: float) -> bool:
        """Start on a fresh port; True once up, False on a port clash; raises on other failure."""
        self.port = free_port()
        self._write_config()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                ["docker-registry", "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc.wait()
                self._proc = None
                log_text = self.log_text()
                if "address already in use" in log_text:
                    return False
                raise RuntimeError(f"docker-registry exited at start; log:\n{log_text}")
            if self._answers():
                _STORAGE[self.url] = self.storage
                return True
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(
            f"docker-registry did not answer in {timeout} s; log:\n{self.log_text()}"
        )

    def start(self, timeout: float = 20.0) -> Registry:
        if self._proc is not None:
            return self
        for _ in range(5):
            if self._launch(timeout):
                return self
        raise RuntimeError(f"docker-registry found no free port; log:\n{self.log_text()}")

    def stop(self) -> None:
        _STORAGE.pop(self.url, None)
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def _headers(accept: str, auth: tuple[str, str] | None) -> dict[str, str]:
    headers = {"Accept": accept}
    if auth is not None:
        headers.update(urllib3.make_headers(basic_auth=f"{auth[0]}:{auth[1]}"))
    return headers


def manifest_digest(
    registry_url: str, repo: str, ref: str, *, auth: tuple[str, str] | None = None
) -> str | None:
    """The digest a pull of ``repo:ref`` would get (HEAD), or None if there is no such manifest."""
    resp = _HTTP.request(
        "HEAD", f"{registry_url}/v2/{repo}/manifests/{ref}", headers=_headers(MANIFEST_ACCEPT, auth)
    )
    if resp.status == 404:
        return None
    if resp.status != 200:
        raise RuntimeError(f"HEAD {repo}:{ref} at {registry_url}: HTTP {resp.status}")
    digest: str = resp.headers["Docker-Content-Digest"]
    return digest


def get_manifest(
    registry_url: str, repo: str, ref: str, *, auth: tuple[str, str] | None = None
) -> tuple[str, dict[str, Any]]:
    """(media type, parsed manifest) of ``repo:ref``; e.g. to see which platforms an index has."""
    resp = _HTTP.request(
        "GET", f"{registry_url}/v2/{repo}/manifests/{ref}", headers=_headers(MANIFEST_ACCEPT, auth)
    )
    if resp.status != 200:
        raise RuntimeError(f"GET {repo}:{ref} at {registry_url}: HTTP {resp.status}: {resp.data!r}")
    media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
    body: dict[str, Any] = json.loads(resp.data)
    return media_type, body


def referrers_at(registry_url: str, repo: str, subject: str) -> list[dict[str, Any]] | None:
    """The referrers of ``subject`` in ``repo`` of the registry started at ``registry_url``:
    the descriptor (mediaType, digest, size, artifactType, annotations) of every manifest of
    the repository whose ``subject`` names that digest, read from the registry's storage
    (distribution 2.8's filesystem layout), in digest order. None when no :class:`Registry`
    of this process serves that URL.
    """
    storage = _STORAGE.get(registry_url.rstrip("/"))
    if storage is None:
        return None
    v2 = storage / "docker" / "registry" / "v2"
    revisions = v2 / "repositories" / repo / "_manifests" / "revisions" / "sha256"
    found = []
    for link in sorted(revisions.glob("*/link")):
        hexdigest = link.parent.name
        try:
            data = (v2 / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data").read_bytes()
            doc = json.loads(data)
        except (OSError, ValueError):
            continue  # a manifest deleted or written at this moment
        about = doc.get("subject") if isinstance(doc, dict) else None
        if not isinstance(about, dict) or about.get("digest") != subject:
            continue
        config = doc.get("config") if isinstance(doc.get("config"), dict) else {}
        entry: dict[str, Any] = {
            "mediaType": doc.get("mediaType") or "application/vnd.oci.image.manifest.v1+json",
            "digest": f"sha256:{hexdigest}",
            "size": len(data),
            "artifactType": doc.get("artifactType") or config.get("mediaType", ""),
        }
        if doc.get("annotations"):
            entry["annotations"] = doc["annotations"]
        found.append(entry)
    return found
