"""Request timelines at the stand-ins: when each request arrived and was answered, and how many
of a kind were in flight at once.

:class:`TimedHub` is the Docker-Hub-like front that records every connection and request;
:class:`Passthrough` puts the same recording in front of any registry (a destination) and
forwards everything to it unchanged (the client's ``Host`` included, so the registry's
``Location`` headers bring the client back through it). Times are seconds since ``mark()``.

A request's kind comes from its path: ``ping`` (``/v2/``), ``token``, ``manifest_head``,
``manifest_get``, ``manifest_put``, ``blob_head``, ``blob_get``, ``upload``, ``tags``,
``other``; an accepted TCP connection is a ``connect`` event (a TLS probe sent to a plain-HTTP
front shows as a ``connect`` with no request after it).
"""

from __future__ import annotations

import re
import ssl
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import urllib3

from tests.standins.front import CHUNK, FrontHandler, HttpFront
from tests.standins.hub import HubFront

_V2 = re.compile(r"^/v2/(?P<name>.+)/(?P<what>manifests|blobs|tags)/(?P<ref>[^/]*)")
_HOP_BY_HOP = {"host", "connection", "keep-alive", "transfer-encoding", "content-length"}
_ARRIVED = "timeline_arrived"
T = TypeVar("T", bound="Timed")


@dataclass(frozen=True)
class Event:
    """One request (or accepted connection) at one front; times in seconds since its mark."""

    side: str
    kind: str
    method: str
    path: str
    status: int
    arrived: float
    answered: float

    @property
    def repository(self) -> str:
        match = _V2.match(urlsplit(self.path).path)
        return match["name"] if match else ""


def kind_of(method: str, path: str) -> str:
    path = urlsplit(path).path
    named = {"/v2/": "ping", "/v2": "ping", "/token": "token"}
    match = _V2.match(path)
    if path in named or match is None:
        return named.get(path, "other")
    what = match["what"]
    if what == "blobs" and "/blobs/uploads" in path:
        return "upload"
    allowed = {"tags": ("GET",), "blobs": ("GET", "HEAD"), "manifests": ("GET", "HEAD", "PUT")}
    if method not in allowed[what]:
        return "other"
    return "tags" if what == "tags" else f"{what[:-1]}_{method.lower()}"


class Timed(HttpFront):
    """Records every connection and answered request (see the module docstring)."""

    side = "front"

    def start(self: T) -> T:
        self._events: list[Event] = []
        self._zero = time.monotonic()
        return super().start()

    def mark(self, zero: float | None = None) -> None:
        """Forget the events so far; times count from ``zero`` (time.monotonic(), default now)."""
        with self._lock:
            self._events = []
            self._zero = time.monotonic() if zero is None else zero

    @property
    def events(self) -> list[Event]:
        with self._lock:
            return sorted(self._events, key=lambda event: event.arrived)

    def _connected(self) -> None:
        super()._connected()
        now = time.monotonic() - self._zero
        self._events.append(Event(self.side, "connect", "", "", 0, now, now))

    def _handle_request(self, req: FrontHandler) -> None:
        setattr(req, _ARRIVED, time.monotonic())
        super()._handle_request(req)

    def _answered(self, req: FrontHandler, status: int) -> None:
        super()._answered(req, status)
        now = time.monotonic()
        arrived = getattr(req, _ARRIVED, now)
        kind = kind_of(req.command, req.path)
        self._events.append(
            Event(
                self.side,
                kind,
                req.command,
                req.path,
                status,
                arrived - self._zero,
                now - self._zero,
            )
        )


class TimedHub(Timed, HubFront):
    """The Docker-Hub-like front (tests/standins/hub.py), with a timeline."""

    side = "source"


class Passthrough(Timed):
    """A timeline in front of ``backend_url``: every request forwarded as it came."""

    side = "destination"
    server_name = "passthrough"

    def __init__(self, backend_url: str, *, tls: ssl.SSLContext | None = None) -> None:
        super().__init__()
        self.tls = tls  # HTTPS only, with this certificate
        self.backend_url = backend_url.rstrip("/")
        self._backend = urllib3.PoolManager(
            maxsize=64, retries=False, timeout=urllib3.Timeout(connect=5, read=120)
        )

    def _stopped(self) -> None:
        self._backend.clear()

    def _handle(self, req: FrontHandler) -> None:
        headers = {k: v for k, v in req.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Host"] = req.headers.get("Host") or self.host
        body = req.read_body() if req.has_body else None
        resp = self._backend.request(
            req.command,
            self.backend_url + req.path,
            body=body,
            headers=headers,
            redirect=False,
            preload_content=False,
        )
        try:
            passed = {
                key: _relative(value) if key.lower() == "location" else value
                for key, value in resp.headers.items()
                if key.lower() not in _HOP_BY_HOP - {"content-length"}
            }
            if req.command == "HEAD" or "Content-Length" not in resp.headers:
                data = b"" if req.command == "HEAD" else resp.read()
                self._send(req, resp.status, passed, data)
                return
            self._start_response(req, resp.status, passed)
            for chunk in resp.stream(CHUNK):
                req.wfile.write(chunk)
        finally:
            resp.release_conn()


def _relative(location: str) -> str:
    """The path and query of an absolute URL the registry made (it knows not whether the
    client came over HTTPS), so the client comes back the way it came."""
    parts = urlsplit(location)
    if not parts.scheme:
        return location
    return parts.path + (f"?{parts.query}" if parts.query else "")


# --- analysis ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KindStats:
    """Requests of one kind at one side: how many, how long, how many at once."""

    count: int
    first_arrived: float
    last_answered: float
    mean_ms: float  # mean time from arrival to answer
    max_in_flight: int
    mean_in_flight: float  # time-weighted, over the time at least one was in flight
    busy_s: float  # time at least one was in flight


def stats(events: Iterable[Event]) -> KindStats | None:
    chosen = [event for event in events if event.kind != "connect"]
    if not chosen:
        return None
    edges = sorted(
        [(event.arrived, 1) for event in chosen] + [(event.answered, -1) for event in chosen]
    )
    level = peak = 0
    busy = weighted = 0.0
    last = edges[0][0]
    for moment, step in edges:
        if level > 0:
            busy += moment - last
            weighted += level * (moment - last)
        level += step
        peak = max(peak, level)
        last = moment
    total = sum(event.answered - event.arrived for event in chosen)
    return KindStats(
        count=len(chosen),
        first_arrived=round(min(event.arrived for event in chosen), 3),
        last_answered=round(max(event.answered for event in chosen), 3),
        mean_ms=round(total / len(chosen) * 1000, 1),
        max_in_flight=peak,
        mean_in_flight=round(weighted / busy, 2) if busy > 0 else 1.0,
        busy_s=round(busy, 3),
    )


def summary(events: Sequence[Event]) -> dict[str, dict[str, Any]]:
    """Stats per ``side/kind``, plus ``side/manifest_head per repository``: the most HEADs of
    one repository in flight at once (1: its tags were checked one after another)."""
    groups: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        groups[f"{event.side}/{event.kind}"].append(event)
    result: dict[str, dict[str, Any]] = {}
    for key, chosen in sorted(groups.items()):
        if key.endswith("/connect"):
            result[key] = {"count": len(chosen), "first": round(chosen[0].arrived, 3)}
            continue
        found = stats(chosen)
        if found is not None:
            result[key] = asdict(found)
    for side in sorted({event.side for event in events}):
        heads = [e for e in events if e.side == side and e.kind == "manifest_head"]
        per_repository: dict[str, list[Event]] = defaultdict(list)
        for event in heads:
            per_repository[event.repository].append(event)
        peaks = [stats(chosen) for chosen in per_repository.values()]
        if peaks:
            result[f"{side}/manifest_head per repository"] = {
                "repositories": len(peaks),
                "max_in_flight": max(p.max_in_flight for p in peaks if p),
                "mean_of_max_in_flight": round(
                    sum(p.max_in_flight for p in peaks if p) / len(peaks), 2
                ),
            }
    return result


def gantt(events: Sequence[Event], *, width: int = 110, until: float | None = None) -> str:
    """One line per event, its span drawn on a common time axis (``#`` in flight, ``|`` a
    connection accepted), for reading which requests overlap."""
    if not events:
        return "(no events)\n"
    end = until or max(event.answered for event in events) or 1.0
    scale = width / end
    lines = [f"time axis: 0 to {end:.3f} s, one column = {end / width * 1000:.1f} ms"]
    for event in events:
        start = min(width - 1, int(event.arrived * scale))
        stop = max(start + 1, min(width, round(event.answered * scale)))
        bar = " " * start + ("|" if event.kind == "connect" else "#" * (stop - start))
        label = f"{event.side[:3]} {event.method:<4} {_short(event.path)} {event.status or ''}"
        lines.append(f"{event.arrived:7.3f} {event.answered:7.3f} {bar:<{width}} {label.rstrip()}")
    return "\n".join(lines) + "\n"


def _short(path: str, most: int = 60) -> str:
    path = re.sub(r"sha256:([0-9a-f]{8})[0-9a-f]{56}", r"sha256:\1", path)
    path = re.sub(r"(/token\?).*", r"\1...", path)
    return path if len(path) <= most else path[: most - 3] + "..."
