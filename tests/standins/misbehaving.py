"""Registries that misbehave the ways real networks and registries do, on 127.0.0.1.

- :class:`Raw` hands every accepted connection to a function: `never_answers` (accepts, reads,
  says nothing), `trickles` (a header line every few seconds, never a whole answer), `drops`
  (closes at once);
- :class:`Scripted` answers HTTP requests with a function of (method, path): e.g. a tags list
  whose ``Link: rel="next"`` points back at itself, or an error message with a newline in it.

Each counts the connections it accepted; ``stop()`` ends every connection at once.
:func:`refusing` gives a host that refuses every connection (a registry that is down).
"""

from __future__ import annotations

import contextlib
import json
import socket
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


class Scripted(Service):
    """An HTTP/1.1 server answering every request with `script(method, path)`; it records
    the requests, with the time each came (time.monotonic)."""

    def __init__(self, script: Script):
        self.script = script
        self.requests: list[tuple[float, str, str]] = []
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
                answer = stand_in.script(self.command, self.path)
                self.send_response(answer.status)
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.body)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = _answer

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._host = f"127.0.0.1:{server.server_address[1]}"
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
