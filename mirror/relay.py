"""The source relay: a registry on 127.0.0.1 that skopeo copies from, so every pull is mirror's.

skopeo copies `docker://127.0.0.1:PORT/<route>/<path>@<digest>` (plain HTTP) instead of the
source. A manifest it asks for is read through `Pulls`, mirror's registry client: read once per
run (counted against the pull budget, a 429 seen by mirror, tokens renewed by mirror) and kept
in memory, so a copy tried again after the destination failed it pulls nothing again. A blob is
streamed from the source as skopeo reads it, and only when skopeo asks for it: skopeo first asks
the destination whether it holds the blob (containers/image copy/copy.go, copyLayer:
TryReusingBlob before GetBlob), so a layer already in ECR never leaves the source, and nothing
is staged on disk.

Each copy gets a route of its own (`r<N>`, one source repository), so what the source did
during that copy is known: `Route.explain` turns skopeo's failure into the source's fault when
there was one (named as the source's), and otherwise names the source instead of the relay.
The relay asks for Basic auth with a password made for the run, which only skopeo's 0600 auth
file holds: another user of the machine cannot pull through it; and skopeo never holds a
source credential. Before that, a connection from a socket another user owns (the kernel
says whose, sock_diag(7)) is closed as soon as it is accepted: 127.0.0.1 is open to every user,
and connections that send nothing would otherwise hold every thread the relay serves with
while skopeo's waited. This module is the only one that listens on a socket.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import logging
import os
import re
import secrets
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from mirror.errors import CopyError, MirrorError, RegistryError, Stopped, user_named
from mirror.http import hurried
from mirror.oci import Login
from mirror.ports import Manifests, Source
from mirror.reference import BadReference, check_digest
from mirror.workers import Workers

log = logging.getLogger("mirror")

USER = "mirror"
_V2 = re.compile(r"^/v2/(?P<route>r\d+)/(?P<path>.+)/(?P<kind>manifests|blobs)/(?P<ref>[^/]+)$")
_TLS_HANDSHAKE = b"\x16"  # the first byte of a TLS ClientHello (skopeo tries HTTPS first)
# Seconds a read from or a write to skopeo may block: as long as skopeo's own copy may take
# (a slow destination makes skopeo read slowly); the relay's connections end with the run.
_SKOPEO_WAIT = 3600.0
# Connections served at once at most: skopeo keeps a few per copy (manifests, blobs in
# parallel, the HTTPS try); a connection over the limit waits for a thread.
_CONNECTIONS = 256


@dataclass
class Route:
    """One copy's way through the relay to one source repository."""

    name: str  # r<N>
    relay: str  # 127.0.0.1:PORT
    host: str  # the source registry host, as the sources know it
    path: str  # the repository path on it
    shown: str  # the source repository as messages name it (docker.io/library/ruby)
    # Seconds each read from the source may take (mirror.http.hurried), when the copy can be
    # done without (ensure, ECR has a copy to serve); None: --timeout
    deadline: float | None = None
    fault: MirrorError | None = None  # the first thing the source did wrong during the copy
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reference(self, digest: str) -> str:
        """What skopeo copies from: `127.0.0.1:PORT/r<N>/<path>@<digest>`."""
        return f"{self.relay}/{self.name}/{self.path}@{digest}"

    def failed(self, error: MirrorError) -> None:
        with self._lock:
            if self.fault is None:
                self.fault = error

    def explain(self, error: CopyError) -> MirrorError:
        """Why the copy failed: the source's fault if it had one (a 429, a 5xx, a dropped
        line, a manifest not there), else skopeo's error naming the source, not the relay."""
        with self._lock:
            fault = self.fault
        if fault is not None:
            return fault
        message = str(error).replace(f"{self.relay}/{self.name}/{self.path}", self.shown)
        return type(error)(  # the same kind (NestedIndex is one), in the source's names
            message.replace(self.relay, self.shown.split("/", 1)[0]),
            transient=error.transient,
            throttled=error.throttled,
            host=error.host,
        )


class Relay:
    """The relay's server, on 127.0.0.1 and a port of its own; `close()` ends it."""

    def __init__(self, manifests: Manifests, blobs: Callable[[str], Source]):
        self.manifests = manifests
        self.blobs = blobs
        self.login = Login(USER, secrets.token_urlsafe(32), "the relay's password for this run")
        self._expected = self.login.basic()
        self._routes: dict[str, Route] = {}
        self._names = itertools.count(1)
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.relay = self
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="relay",
            daemon=True,
        )
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    @contextlib.contextmanager
    def route(
        self, host: str, path: str, shown: str, *, deadline: float | None = None
    ) -> Iterator[Route]:
        """A route to `host/path` for one copy, its reads from the source bounded by
        `deadline` seconds when given; closed on leaving."""
        with self._lock:
            route = Route(f"r{next(self._names)}", self.host, host, path, shown, deadline)
            self._routes[route.name] = route
        try:
            yield route
        finally:
            with self._lock:
                del self._routes[route.name]

    def close(self) -> None:
        """Stop serving and close every connection (skopeo's, if any are left); use the relay
        as `with contextlib.closing(Relay(...)) as relay:`."""
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        self._thread.join(timeout=5)

    # --- serving ---------------------------------------------------------------------------------

    def serve(self, request: _Handler) -> None:
        if not secrets.compare_digest(request.headers.get("Authorization", ""), self._expected):
            _send_error(request, 401, "UNAUTHORIZED", "authentication required", _CHALLENGE)
            return
        path = request.path.partition("?")[0]
        if path == "/v2/":
            _send(request, 200, {"Content-Type": "application/json"}, b"{}")
            return
        match = _V2.match(path)
        with self._lock:
            route = self._routes.get(match["route"]) if match else None
        if match is None or route is None or match["path"] != route.path:
            _send_error(request, 404, "NAME_UNKNOWN", "no such repository on the relay")
            return
        if not _is_digest(match["ref"]):
            _send_error(request, 404, "MANIFEST_UNKNOWN", "the relay serves digests only")
            return
        with hurried(route.deadline):
            if match["kind"] == "manifests":
                self._manifest(request, route, match["ref"])
            elif request.command == "HEAD":
                self._blob_head(request, route, match["ref"])
            else:
                self._blob(request, route, match["ref"])

    def _manifest(self, request: _Handler, route: Route, digest: str) -> None:
        try:
            manifest = self.manifests.manifest(route.host, route.path, digest)
        except MirrorError as error:
            self._fault(request, route, error)
            return
        headers = {
            "Content-Type": manifest.media_type,
            "Content-Length": str(len(manifest.body)),
            "Docker-Content-Digest": digest,
        }
        _send(request, 200, headers, manifest.body)

    def _blob(self, request: _Handler, route: Route, digest: str) -> None:
        try:
            with self.blobs(route.host).blob(route.path, digest) as answer:
                if answer.body is None:
                    self._fault(request, route, _refused(route, digest, answer.status))
                    return
                headers = _blob_headers(answer.headers, digest)
                request.start(200, headers)
                chunked = "Content-Length" not in headers
                for piece in answer.body.pieces():
                    request.write(piece, chunked=chunked)
                if chunked:
                    request.write(b"", chunked=True)
        except MirrorError as error:
            self._fault(request, route, error)
        except OSError:  # skopeo went away (it failed or was stopped)
            request.close_connection = True

    def _blob_head(self, request: _Handler, route: Route, digest: str) -> None:
        try:
            answer = self.blobs(route.host).head_blob(route.path, digest)
        except MirrorError as error:
            self._fault(request, route, error)
            return
        if answer.status != 200:
            self._fault(request, route, _refused(route, digest, answer.status))
            return
        _send(request, 200, _blob_headers(answer.headers, digest), b"")

    @staticmethod
    def _fault(request: _Handler, route: Route, error: MirrorError) -> None:
        """Tell skopeo the source failed, in a way it does not retry (a 429 it would sleep
        through; a 502 ends its copy at once), and keep the cause for `Route.explain`."""
        route.failed(error)
        log.debug("relay %s: %s", route.name, error)
        if request.started or isinstance(error, Stopped):
            request.drop()
        elif getattr(error, "status", None) == 404 or "not found" in str(error):
            _send_error(request, 404, "MANIFEST_UNKNOWN", str(error))
        else:
            _send_error(request, 502, "UNAVAILABLE", str(error))


def _is_digest(text: str) -> bool:
    try:
        check_digest(text)
    except BadReference:
        return False
    return True


def _refused(route: Route, digest: str, status: int) -> RegistryError:
    where = f"{route.shown}@{digest}"
    if status == 404:
        return RegistryError(f"{where}: blob not found on the source", status=404)
    return RegistryError(
        f"{where}: the source answered a blob GET with HTTP {status}",
        status=status,
        transient=status >= 500,
    )


def _blob_headers(headers: Mapping[str, str], digest: str) -> dict[str, str]:
    kept = {"Docker-Content-Digest": digest, "Content-Type": "application/octet-stream"}
    length = headers.get("Content-Length") or ""
    if length.isascii() and length.isdigit():
        kept["Content-Length"] = length
    return kept


_CHALLENGE = {"WWW-Authenticate": 'Basic realm="mirror relay"'}


def _send(request: _Handler, status: int, headers: dict[str, str], body: bytes) -> None:
    length = headers.get("Content-Length", str(len(body)))
    request.start(
        status, {**headers, "Content-Length": length}, b"" if request.command == "HEAD" else body
    )


def _send_error(
    request: _Handler, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
    _send(request, status, {"Content-Type": "application/json", **(headers or {})}, body)


class _Server(HTTPServer):
    """Serves each connection on a thread of a pool (mirror.workers: daemon threads, kept for
    the next connection): skopeo opens several for every copy, and a new thread for each cost
    more than the answers did."""

    request_queue_size = 64
    relay: Relay

    def __init__(self, address: tuple[str, int], handler: type[_Handler]):
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._workers = Workers(_CONNECTIONS, "relay")
        self._refused: set[int] = set()  # users whose connections were refused (told once)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Serve only this user's processes (skopeo): another user's connection is closed at
        once, before it holds a thread."""
        owner = socket_owner(client_address, request.getsockname())
        if owner is None or owner == os.geteuid():
            return True
        if owner >= 0 and owner not in self._refused:
            self._refused.add(owner)
            log.warning(
                "mirror's relay refused a connection from %s: only this run's skopeo may use it",
                user_named(owner),
            )
        return False

    def process_request(self, request: Any, client_address: Any) -> None:
        self._workers.submit(self._serve_connection, request, client_address)

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        self._workers.close()

    def track(self, connection: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("relay: a connection failed", exc_info=True)


def socket_owner(local: tuple[str, int], remote: tuple[str, int]) -> int | None:
    """The uid owning the IPv4 TCP socket from `local` to `remote` on this machine, asked of
    the kernel by netlink (sock_diag(7): one SOCK_DIAG_BY_FAMILY lookup of that socket, a
    tenth of a millisecond; /proc/net/tcp would be read whole, tens of milliseconds on a busy
    host). -1 when there is no such socket (gone already); None when the kernel cannot be
    asked (no sock_diag): then the relay's password alone guards it."""
    sockid = struct.pack(
        "!HH4s12x4s12x",
        local[1],
        remote[1],
        socket.inet_aton(local[0]),
        socket.inet_aton(remote[0]),
    ) + struct.pack("=III", 0, *_NO_COOKIE)
    request = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, _ALL_STATES)
    message = struct.pack("=IHHII", 16 + len(request) + len(sockid), _BY_FAMILY, 1, 1, 0)
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as netlink:
            netlink.settimeout(1.0)
            netlink.send(message + request + sockid)
            answer = netlink.recv(8192)
        kind = struct.unpack_from("=H", answer, 4)[0]
        if kind == _NLMSG_ERROR:
            return -1 if struct.unpack_from("=i", answer, 16)[0] == -errno.ENOENT else None
        return int(struct.unpack_from("=I", answer, _UID_AT)[0])
    except (OSError, struct.error):
        return None


_NETLINK_SOCK_DIAG = 4  # linux/netlink.h
_BY_FAMILY = 20  # SOCK_DIAG_BY_FAMILY, linux/sock_diag.h
_NLMSG_ERROR = 2
_ALL_STATES = 0xFFFFFFFF
_NO_COOKIE = (0xFFFFFFFF, 0xFFFFFFFF)  # INET_DIAG_NOCOOKIE: look the socket up by address
_UID_AT = 16 + 4 + 48 + 12  # nlmsghdr, inet_diag_msg's family..retrans, id, expires..wqueue


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mirror-relay"
    sys_version = ""
    timeout = _SKOPEO_WAIT
    disable_nagle_algorithm = True  # TCP_NODELAY: each answer goes out as it is written
    server: _Server
    started = False

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def handle(self) -> None:
        with contextlib.suppress(OSError):
            if self.connection.recv(1, socket.MSG_PEEK) == _TLS_HANDSHAKE:
                return  # skopeo tries HTTPS first; closing at once sends it to plain HTTP
            super().handle()

    def handle_one_request(self) -> None:
        self.started = False
        super().handle_one_request()

    def _serve(self) -> None:
        self.server.relay.serve(self)

    do_GET = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def start(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        """Send the status line, the headers and `body` in one write: a small answer in two
        writes waits on the peer's delayed ACK (about 40 ms a time on Linux)."""
        self.started = True
        if "Content-Length" not in headers:
            headers = {**headers, "Transfer-Encoding": "chunked"}
        lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def write(self, data: bytes, *, chunked: bool = False) -> None:
        if chunked:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        else:
            self.wfile.write(data)

    def drop(self) -> None:
        """End the connection without (the rest of) an answer: skopeo sees the line drop."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
