"""A forward HTTP proxy on 127.0.0.1, for tests that a client honours ``HTTP(S)_PROXY``.

Go's net/http (skopeo) never proxies requests to ``localhost`` or a loopback address, so a
registry at ``127.0.0.1:PORT`` proves nothing about proxy use. This proxy instead knows made-up
host names (``hosts={"hub.proxied.test": "127.0.0.1"}``) that resolve nowhere else: a registry
named ``hub.proxied.test:PORT`` is then reachable only through the proxy, which connects to
``127.0.0.1:PORT``. The ``.test`` top-level domain is reserved (RFC 2606) and fails to resolve at
once on this machine.

It forwards absolute-URI requests (``GET http://host:port/path HTTP/1.1``: any method, bodies
streamed both ways, ``Content-Length`` or chunked) and tunnels ``CONNECT host:port`` (what an
HTTPS URL asks for; skopeo with ``--tls-verify=false`` tries HTTPS first, through the tunnel,
then plain HTTP). The ``Host`` header is passed unchanged, so the front behind sees the made-up
name. Unknown hosts get 502. It counts what it forwarded (:class:`ProxyCounts`).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tests.standins.front import CHUNK, FrontHandler, HttpFront

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


@dataclass
class ProxyCounts:
    """What the proxy did; ``ForwardProxy.counts`` hands out a copy.

    ``requests`` lists (method, ``host:port`` asked for, status) for every request, tunnels
    included (``CONNECT``, 200 once connected); ``hosts`` counts them by host name.
    """

    forwarded: int = 0  # absolute-URI requests passed on
    tunnels: int = 0  # CONNECT tunnels opened
    refused: int = 0  # requests for hosts the proxy does not know
    bytes_up: int = 0  # body and tunnel bytes from clients to servers
    bytes_down: int = 0  # body and tunnel bytes from servers to clients
    connections: int = 0
    hosts: Counter[str] = field(default_factory=Counter)
    requests: list[tuple[str, str, int]] = field(default_factory=list)


class ForwardProxy(HttpFront):
    """See the module docstring. ``hosts`` maps made-up host names to the addresses to use
    (``"127.0.0.1"``, or ``"127.0.0.1:PORT"`` to send every port of that name to one port)."""

    server_name = "proxy-standin"

    def __init__(self, hosts: Mapping[str, str]) -> None:
        super().__init__()
        self.hosts = dict(hosts)
        self._counts = ProxyCounts()

    @property
    def counts(self) -> ProxyCounts:
        with self._lock:
            counts = self._counts
            return ProxyCounts(
                counts.forwarded,
                counts.tunnels,
                counts.refused,
                counts.bytes_up,
                counts.bytes_down,
                counts.connections,
                Counter(counts.hosts),
                list(counts.requests),
            )

    def reset_counts(self) -> None:
        with self._lock:
            self._counts = ProxyCounts()

    def env(self, *, no_proxy: str = "") -> dict[str, str]:
        """The variables that send a client through this proxy (both spellings of each)."""
        names = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
        values = (self.url, self.url, no_proxy)
        env: dict[str, str] = {}
        for name, value in zip(names, values, strict=True):
            env[name] = env[name.lower()] = value
        return env

    # -- internals --------------------------------------------------------------------------

    def _connected(self) -> None:
        self._counts.connections += 1

    def _answered(self, req: FrontHandler, status: int) -> None:
        target = req.path if req.command == "CONNECT" else urlsplit(req.path).netloc
        self._counts.requests.append((req.command, target, status))
        self._counts.hosts[target.rsplit(":", 1)[0]] += 1
        if status == 502:
            self._counts.refused += 1

    def _add(self, *, up: int = 0, down: int = 0) -> None:
        # Called before the bytes are sent on: a test that reads the counts once its answer
        # has come never sees them short.
        with self._lock:
            self._counts.bytes_up += up
            self._counts.bytes_down += down

    def _upstream(self, host: str, port: int | None, default_port: int) -> tuple[str, int] | None:
        """Where a known host name goes: its address, on the port asked for, or on the port
        the mapping gives (`"ecr.test": "127.0.0.1:5000"` serves every port of that name)."""
        address = self.hosts.get(host)
        if address is None:
            return None
        ip, colon, fixed = address.partition(":")
        return (ip, int(fixed)) if colon else (ip, port or default_port)

    def _handle(self, req: FrontHandler) -> None:
        if req.command == "CONNECT":
            self._tunnel(req)
        else:
            self._forward(req)

    def _tunnel(self, req: FrontHandler) -> None:
        host, _, port = req.path.rpartition(":")
        upstream = self._upstream(host, int(port) if port.isdigit() else None, 443)
        if upstream is None:
            self._send_text(req, 502, f"proxy: unknown host {host}\n")
            return
        try:
            server = socket.create_connection(upstream, timeout=10)
        except OSError as err:
            self._send_text(req, 502, f"proxy: {err}\n")
            return
        req.close_connection = True
        with self._lock:
            self._counts.tunnels += 1
            self._answered(req, 200)
        req.response_started = True
        req.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        req.wfile.flush()
        with server:
            down = threading.Thread(target=self._pipe_down, args=(server, req), daemon=True)
            down.start()
            try:
                while data := req.rfile.read1(CHUNK):
                    self._add(up=len(data))
                    server.sendall(data)
            except OSError:
                pass
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_WR)
            down.join(timeout=30)

    def _pipe_down(self, server: socket.socket, req: FrontHandler) -> None:
        try:
            while data := server.recv(CHUNK):
                self._add(down=len(data))
                req.connection.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            req.connection.shutdown(socket.SHUT_WR)

    def _forward(self, req: FrontHandler) -> None:
        parts = urlsplit(req.path)
        upstream = None
        if parts.scheme == "http" and parts.hostname:
            upstream = self._upstream(parts.hostname, parts.port, 80)
        if upstream is None:
            self._send_text(req, 502, f"proxy: cannot forward {req.path}\n")
            return
        conn = http.client.HTTPConnection(*upstream, timeout=60)
        try:
            self._send_upstream(conn, req, parts.path + (f"?{parts.query}" if parts.query else ""))
            resp = conn.getresponse()
            with self._lock:
                self._counts.forwarded += 1
            self._relay(req, resp)
        finally:
            conn.close()

    def _send_upstream(
        self, conn: http.client.HTTPConnection, req: FrontHandler, path: str
    ) -> None:
        conn.putrequest(req.command, path or "/", skip_host=True, skip_accept_encoding=True)
        for key, value in req.headers.items():
            if key.lower() not in _HOP_BY_HOP:
                conn.putheader(key, value)
        chunked = "chunked" in req.headers.get("Transfer-Encoding", "").lower()
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        if not req.has_body:
            return
        for chunk in req.body_chunks():
            self._add(up=len(chunk))
            conn.send(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
        if chunked:
            conn.send(b"0\r\n\r\n")

    def _relay(self, req: FrontHandler, resp: http.client.HTTPResponse) -> None:
        headers = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP}
        no_body = req.command == "HEAD" or resp.status in (204, 304)
        length = resp.getheader("Content-Length")
        if not no_body and length is None:
            headers["Transfer-Encoding"] = "chunked"
        self._start_response(req, resp.status, headers)
        if no_body:
            return
        while data := resp.read1(CHUNK):
            self._add(down=len(data))
            req.wfile.write(data if length is not None else b"%x\r\n%b\r\n" % (len(data), data))
        if length is None:
            req.wfile.write(b"0\r\n\r\n")
