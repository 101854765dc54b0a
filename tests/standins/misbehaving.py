"""Registries that misbehave the ways real networks and registries do, on 127.0.0.1.

- :class:`Raw` hands every accepted connection to a function: `never_answers` (accepts, reads,
  says nothing), `trickles` (a header line every few seconds, never a whole answer), `drops`
  (closes at once);
- :class:`Scripted` answers HTTP requests with a function of (method, path): e.g. a tags list
  whose ``Link: rel="next"`` points back at itself, or an error message with a newline in it;
  or, given ``answer=``, of the whole request (:class:`Asked`: its headers too). With ``tls``
  it speaks HTTPS and plain HTTP on the same port (it looks at the first byte), as a host
  that redirects from https:// to http:// on one address does; ``asked`` lists every request
  with its headers and whether it came over TLS.

Each counts the connections it accepted; ``stop()`` ends every connection at once.
:func:`refusing` gives a host that refuses every connection (a registry that is down).
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.standins.service import Service

Behaviour = Callable[[socket.socket, threading.Event], None]


def never_answers(conn: socket.socket, stopped: threading.Event) -> None:
    """Read what comes, answer nothing, until the stand-in stops."""
    conn.settimeout(0.2)
    while not stopped.is_set():
        with contextlib.suppress(TimeoutError):
            if conn.recv(65536) == b"":
                return


def trickles(every: float) -> Behaviour:
    """Start an answer, then send one more header line every `every` seconds, for ever."""

    def behave(conn: socket.socket, stopped: threading.Event) -> None:
        conn.settimeout(5)
        with contextlib.suppress(OSError):
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            number = 0
            while not stopped.wait(every):
                number += 1
                conn.sendall(f"X-Slow-{number}: yes\r\n".encode())

    return behave


def drops(conn: socket.socket, stopped: threading.Event) -> None:
    """Close the connection as soon as it is open."""


@contextlib.contextmanager
def refusing() -> Iterator[str]:
    """A ``127.0.0.1:<port>`` where every connection is refused, for as long as the block runs.

    The port is bound but never listened on, so nothing else can take it meanwhile (a port
    closed and given back could be reused by another server, or by a TCP self-connect).
    """
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{held.getsockname()[1]}"


class Raw(Service):
    """A TCP server whose connections are handed to `behave`, each on its own thread."""

    def __init__(self, behave: Behaviour):
        self.behave = behave
        self.connections = 0
        self._stopped = threading.Event()
        self._sock: socket.socket | None = None
        self._host = ""
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def host(self) -> str:
        return self._host

    def start(self) -> Raw:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        sock.settimeout(0.1)
        self._sock = sock
        self._host = f"127.0.0.1:{sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                self.connections += 1
                self._open.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.behave(conn, self._stopped)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            open_now = list(self._open)
        for conn in open_now:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._sock is not None:
            self._sock.close()


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def json(cls, status: int, document: Any, **headers: str) -> Answer:
        return cls(
            status, {"Content-Type": "application/json", **headers}, json.dumps(document).encode()
        )


Script = Callable[[str, str], Answer]


@dataclass(frozen=True)
class Asked:
    """One request as a :class:`Scripted` got it."""

    method: str
    path: str  # as sent: a path, or a whole URL when the stand-in is used as a proxy
    headers: dict[str, str]
    tls: bool  # came over HTTPS


class Scripted(Service):
    """An HTTP/1.1 server answering every request with `script(method, path)` (or
    `answer(Asked)`); it records the requests, with the time each came (time.monotonic), and
    each with its headers in `asked`. `tls`: HTTPS too, on the same port; `address`: where it
    listens (any 127.0.0.x)."""

    def __init__(
        self,
        script: Script | None = None,
        *,
        answer: Callable[[Asked], Answer] | None = None,
        tls: ssl.SSLContext | None = None,
        address: str = "127.0.0.1",
    ):
        assert (script is None) != (answer is None), "a script or an answer"
        self.script = script
        self.answer = answer
        self.tls = tls
        self.address = address
        self.requests: list[tuple[float, str, str]] = []
        self.asked: list[Asked] = []
        self._server: ThreadingHTTPServer | None = None
        self._host = ""

    @property
    def host(self) -> str:
        return self._host

    def start(self) -> Scripted:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                stand_in.requests.append((time.monotonic(), self.command, self.path))
                tls = isinstance(self.connection, ssl.SSLSocket)
                asked = Asked(self.command, self.path, dict(self.headers.items()), tls)
                stand_in.asked.append(asked)
                if stand_in.answer is not None:
                    answer = stand_in.answer(asked)
                else:
                    assert stand_in.script is not None
                    answer = stand_in.script(self.command, self.path)
                self.send_response(answer.status)
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.body)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = _answer

        tls = self.tls

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                if not isinstance(sys.exc_info()[1], OSError):  # a client hanging up is fine
                    super().handle_error(request, client_address)

            def finish_request(self, request: Any, client_address: Any) -> None:
                if tls is None or not _speaks_tls(request):
                    super().finish_request(request, client_address)
                    return
                try:
                    wrapped = tls.wrap_socket(request, server_side=True)
                except (OSError, ValueError):
                    return  # a client that did not trust us: it says so itself
                with wrapped:
                    super().finish_request(wrapped, client_address)

        server = Server((self.address, 0), Handler)
        self._server = server
        self._host = f"{self.address}:{server.server_address[1]}"
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _speaks_tls(connection: socket.socket) -> bool:
    """Does the client start a TLS handshake (a ClientHello record starts with 0x16)?"""
    connection.settimeout(10)
    try:
        return connection.recv(1, socket.MSG_PEEK) == b"\x16"
    except OSError:
        return False
    finally:
        connection.settimeout(None)
