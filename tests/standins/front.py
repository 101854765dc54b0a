"""What the HTTP stand-ins share: a threaded HTTP/1.1 server on 127.0.0.1 with keep-alive.

:class:`HttpFront` owns the listening socket, the serving thread and the open connections, so
``stop()`` is prompt even with idle keep-alive connections. A subclass implements ``_handle``
and answers with ``_send`` / ``_send_json`` (or writes to ``req.wfile`` after
``_start_response``); ``_answered`` and ``_connected`` are its hooks for counting. Request bodies
(``Content-Length`` or chunked) are read with ``req.body_chunks()`` / ``req.read_body()``; a body
the front did not read is drained after the answer, so the connection stays usable.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import secrets
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import urllib3

from tests.standins.service import Service

F = TypeVar("F", bound="HttpFront")
CHUNK = 64 * 1024


class FrontServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # the default 5 drops bursts of parallel connects
    front: HttpFront

    def finish_request(self, request: Any, client_address: Any) -> None:
        """In the connection's own thread: with the front's ``tls``, the TLS handshake first
        (a client that fails it is closed, as a server does)."""
        if self.front.tls is None:
            super().finish_request(request, client_address)
            return
        try:
            wrapped = self.front.tls.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            request.close()
            return
        with wrapped:
            super().finish_request(wrapped, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients dropping connections (skopeo probing with TLS, cut blobs) are normal here;
        # anything else is a bug in the stand-in and gets the usual traceback on stderr.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class FrontHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    sys_version = ""
    timeout = 60  # idle keep-alive connections end eventually
    # TCP_NODELAY, as registries and load balancers set it: an answer's headers and body are
    # two writes, and with Nagle's algorithm the body waited for the client's delayed ACK,
    # about 40 ms added to every answer with a body (a token, a manifest GET, a 401's JSON).
    disable_nagle_algorithm = True
    server: FrontServer
    response_started = False
    body_read = False
    kind = ""  # what the front made of the request, for its counts

    def version_string(self) -> str:
        return self.server.front.server_name

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The `Date` header, by the front's clock (``clock_offset`` seconds off the machine's)."""
        now = time.time() if timestamp is None else timestamp
        return super().date_time_string(now + self.server.front.clock_offset)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.server.front._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.front._track(self.connection, add=False)

    def handle_one_request(self) -> None:
        self.response_started = False
        self.body_read = False
        self.kind = ""
        super().handle_one_request()

    def _dispatch(self) -> None:
        self.server.front._handle_request(self)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_CONNECT = _dispatch

    @property
    def has_body(self) -> bool:
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        return chunked or int(self.headers.get("Content-Length") or 0) > 0

    def body_chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        """The request body as it arrives: ``Content-Length`` bytes or HTTP/1.1 chunks."""
        self.body_read = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            yield from self._chunked(size)
            return
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            data = self.rfile.read(min(left, size))
            if not data:
                raise ConnectionError("client closed the connection mid-body")
            left -= len(data)
            yield data

    def _chunked(self, size: int) -> Iterator[bytes]:
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise ConnectionError("client closed the connection mid-body")
            left = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if left == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            while left > 0:
                data = self.rfile.read(min(left, size))
                if not data:
                    raise ConnectionError("client closed the connection mid-body")
                left -= len(data)
                yield data
            self.rfile.readline(3)  # the CRLF after each chunk

    def read_body(self) -> bytes:
        return b"".join(self.body_chunks())


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) of a `Basic` Authorization header; None when it is not one."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, _, password = decoded.partition(":")
    return user, password


def same_credentials(given: tuple[str, str], wanted: tuple[str, str]) -> bool:
    """Constant-time comparison of both parts, as a registry compares them."""
    return secrets.compare_digest(given[0], wanted[0]) and secrets.compare_digest(
        given[1], wanted[1]
    )


class HttpFront(Service):
    """The life cycle of an HTTP stand-in on a free loopback port; see the module docstring."""

    server_name = "standin"
    clock_offset = 0.0  # seconds the front's clock (its Date header) is ahead of the machine's
    tls: ssl.SSLContext | None = None  # set before start(): HTTPS only, with this certificate

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._server: FrontServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------------------------

    def start(self: F) -> F:
        if self._server is not None:
            return self
        server = FrontServer(("127.0.0.1", 0), FrontHandler)
        server.front = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # wake handler threads parked on idle keep-alive reads
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._stopped()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} not started")
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    # -- hooks for subclasses -----------------------------------------------------------------

    def _handle(self, req: FrontHandler) -> None:
        raise NotImplementedError

    def _connected(self) -> None:
        """A connection was accepted (called with the lock held)."""

    def _answered(self, req: FrontHandler, status: int) -> None:
        """An answer's status line is about to be sent (called with the lock held)."""

    def _stopped(self) -> None:
        """The server is down: release backend pools and the like."""

    # -- internals ------------------------------------------------------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
                self._connected()
            else:
                self._connections.discard(conn)

    def _handle_request(self, req: FrontHandler) -> None:
        try:
            self._handle(req)
            if req.has_body and not req.body_read:
                for _ in req.body_chunks():  # keep the connection usable
                    pass
        except urllib3.exceptions.HTTPError as err:  # backend unreachable or cut off
            req.close_connection = True
            if not req.response_started:
                self._send_json(
                    req, 502, {"errors": [{"code": "UNAVAILABLE", "message": str(err)}]}
                )
        except OSError:  # the client went away
            req.close_connection = True

    # -- responses ------------------------------------------------------------------------------

    def _start_response(self, req: FrontHandler, status: int, headers: dict[str, str]) -> None:
        req.response_started = True
        with self._lock:  # recorded as answered, so the order is the order of the answers
            self._answered(req, status)
        req.send_response(status)
        for key, value in headers.items():
            req.send_header(key, value)
        if "Content-Length" not in headers and "Transfer-Encoding" not in headers:
            req.send_header("Content-Length", "0")
        req.end_headers()

    def _send(self, req: FrontHandler, status: int, headers: dict[str, str], body: bytes) -> int:
        """Answer with ``body`` (none on HEAD, where a given Content-Length is kept)."""
        if req.command != "HEAD" or "Content-Length" not in headers:
            headers = {**headers, "Content-Length": str(len(body))}
        self._start_response(req, status, headers)
        if req.command != "HEAD":
            req.wfile.write(body)
        return status

    def _send_json(
        self, req: FrontHandler, status: int, doc: Any, headers: dict[str, str] | None = None
    ) -> int:
        body = json.dumps(doc).encode()
        return self._send(
            req, status, {"Content-Type": "application/json", **(headers or {})}, body
        )

    def _send_text(
        self, req: FrontHandler, status: int, text: str, headers: dict[str, str] | None = None
    ) -> int:
        all_headers = {"Content-Type": "text/plain; charset=utf-8", **(headers or {})}
        return self._send(req, status, all_headers, text.encode())
