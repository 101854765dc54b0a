"""Bounded HTTP for the registry client: every request ends by its deadline, whatever the peer does.

Layers, bottom up (as in go-containerregistry's transport): urllib3's pooled connections; a
watchdog that cuts a connection off at the request's deadline or when the run stops (a socket
timeout alone bounds each read, not the request: a peer trickling a byte every few seconds
would keep it alive for ever); the retry policy; and a per-host breaker: once a host has proved
unreachable or unresponsive (after its retries), later requests to it fail at once with that
cause instead of each waiting out the time-out.

Proxies are chosen per URL from HTTPS_PROXY, HTTP_PROXY and NO_PROXY (and the lower-case
forms) by the rules of Go's net/http, which skopeo uses, so both reach a registry the same way.

Redirects (GET and HEAD only) are followed where credentials stay safe: the Authorization
header goes on only to the same scheme, host and port (the origin); a redirect from HTTPS to
plain HTTP is refused; and a redirect to a loopback, private or link-local address is refused
unless the registry itself answered from one (checked on the connected socket, so a name that
resolves there is caught too, and again on a connection kept alive; through a proxy, which
resolves names itself, on the address as written, in every spelling a resolver takes).

This module and mirror/registry.py are the only ones that speak HTTP to registries.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from mirror.errors import RegistryError, SetupError, Stopped, hide_passwords, quoted, remember_login
from mirror.workers import MAX_WAIT, backoff

log = logging.getLogger("mirror")

RETRIED_STATUSES = frozenset({500, 502, 503, 504})
MAX_BODY = 32 << 20  # bytes: a manifest is at most 4 MiB (ECR), a page of tags far less
MAX_REDIRECTS = 5
_PIECE = 64 << 10
_STREAM_PIECE = 256 << 10  # a streamed body's piece: fewer, larger writes on the way through
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CONNECT_TIMEOUT = 10.0
_HURRIED = threading.local()  # `hurried`: this thread's shorter deadline, if any


@contextlib.contextmanager
def hurried(seconds: float | None) -> Iterator[None]:
    """Inside, each request this thread makes (its token requests too) gets at most `seconds`
    in all, and a streamed body at most `seconds` a piece; None changes nothing. For a copy
    `ensure` can do without (ECR has a copy to serve instead): the source's time-out is then
    the short source deadline, not --timeout. A request cut off by it is not worth a retry
    (RegistryError, not transient), and only requests hurried too are refused its host for the
    rest of the run: an image nothing else can give still gets the whole --timeout."""
    before = getattr(_HURRIED, "seconds", None)
    if seconds is not None:  # None changes nothing: an outer hurried still holds
        _HURRIED.seconds = seconds if before is None else min(seconds, before)
    try:
        yield
    finally:
        _HURRIED.seconds = before


@dataclass(frozen=True)
class Policy:
    """How hard a request tries: its whole deadline (all attempts) and its attempts.

    Connection failures and 500/502/503/504 on a request that may be repeated are retried,
    with exponential backoff from `backoff` seconds and ±50 % jitter, while the deadline
    allows. A request cut off at its deadline is not retried: the deadline is spent.
    """

    timeout: float = 30.0  # seconds for the whole request, every attempt included
    attempts: int = 3
    backoff: float = 0.3
    throttled_attempts: int = 8  # for a request the caller lets retry on 429 (ECR throttling)
    throttled_backoff: float = 0.5  # doubling, ±50 % jitter, at most MAX_WAIT a time


@dataclass(frozen=True)
class Response:
    """An answer: status, headers (case-insensitive) and body. With `request(stream=True)`, a
    200's body is not in `data` but in `body`, still on the wire, to be read and closed."""

    status: int
    headers: Mapping[str, str]
    data: bytes
    url: str = ""  # where the answer came from: the last URL, after redirects
    inner: bool | None = (
        None  # the first URL's host is on a loopback, private or link-local address
    )
    body: Body | None = field(default=None, repr=False, compare=False)


class Body:
    """A body still on the wire (a blob of any size): read it with `pieces()`, then `close()`.

    Its deadline is one of progress, not of the whole answer: each piece (256 KiB, or the rest)
    must come within `idle` seconds of being asked for, so a layer of gigabytes that keeps
    moving is never cut, and one that stalls or trickles is; the time the reader takes with a
    piece (a slow destination behind skopeo) does not count. `stop()` cuts it as it cuts every
    request (Stopped).
    """

    def __init__(
        self,
        raw: urllib3.BaseHTTPResponse,
        watched: _Call,
        done: Callable[[], None],
        idle: float,
        host: str,
        *,
        hurried: bool = False,
    ):
        self._raw, self._watched, self._done, self._idle = raw, watched, done, idle
        self.host = host
        self._hurried = hurried  # cut by `hurried`'s deadline: not worth a retry
        self._complete = False

    def pieces(self) -> Iterator[bytes]:
        """The body as it arrives. Raises Stopped, or RegistryError (transient) when the peer
        drops the line or stalls."""
        host = self.host
        try:
            while True:
                self._watched.deadline = time.monotonic() + self._idle
                piece = self._raw.read(_STREAM_PIECE, decode_content=False)
                if self._watched.cut:
                    break
                if not piece:
                    self._complete = True
                    return
                self._watched.deadline = math.inf  # the reader's time is not the peer's
                yield piece
        except urllib3.exceptions.HTTPError as error:
            # the socket's own read time-out (what was left of the request's deadline when
            # it was sent) may fire before the watchdog: a stall too
            stalled = isinstance(error, urllib3.exceptions.ReadTimeoutError)
            if not self._watched.cut and not stalled:
                raise RegistryError(f"{host}: {_reason(error)}", transient=True) from None
        if self._watched.cut == "stopped":
            raise Stopped
        raise RegistryError(
            f"{host}: the answer stalled: no progress within {self._idle:g} s",
            transient=not self._hurried,
        )

    def close(self) -> None:
        """Give the connection back (whole answers only; one read in part is closed)."""
        try:
            if self._complete:
                self._raw.release_conn()
            else:
                self._raw.close()
        finally:
            self._done()


# --- the watchdog --------------------------------------------------------------------------------

_local = threading.local()


@dataclass(eq=False)
class _Call:
    """One attempt in flight on one thread: the connection it uses, once it has one."""

    deadline: float
    connection: Any = None
    cut: str | None = None  # why the watchdog cut it off: "deadline" or "stopped"
    refuse_inner: bool = False  # a peer on a loopback, private or link-local address is refused
    peer: str | None = None  # the address the connection reached (None through a proxy)


class _Watched:
    """Mixed into urllib3's connections: tells the current call which connection it uses, and
    which address it reached (checked before a byte of the request is sent)."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _check_peer(self)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        call: _Call | None = getattr(_local, "call", None)
        if call is not None:
            call.connection = self
            if getattr(self, "sock", None) is not None:  # a connection kept alive
                _check_peer(self)
        return super().request(*args, **kwargs)  # type: ignore[misc]


def _check_peer(connection: Any) -> None:
    call: _Call | None = getattr(_local, "call", None)
    if call is None:
        return
    try:
        call.peer = str(connection.sock.getpeername()[0])
    except (OSError, AttributeError, IndexError, TypeError):
        return
    if call.refuse_inner and is_inner(call.peer):
        raise _InnerAddress(call.peer)


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOL_CLASSES = {"http": _HTTPPool, "https": _HTTPSPool}


class _Watchdog:
    """One thread that shuts down the socket of every call past its deadline (or all, on stop).

    It looks at least once a second, and is woken only by a call whose deadline comes before
    its next look: waking it for every call cost each request a lock hand-over and a thread
    switch (issue 18: a fifth of a no-op's per-request CPU)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: set[_Call] = set()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._next_look = -math.inf  # time.monotonic() of its next look, once it sleeps

    @contextlib.contextmanager
    def watching(self, deadline: float, *, refuse_inner: bool = False) -> Iterator[_Call]:
        call = _Call(deadline, refuse_inner=refuse_inner)
        with self._lock:
            if self._stopping:
                raise Stopped
            self._calls.add(call)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="http-watchdog", daemon=True)
                self._thread.start()
            wake = deadline < self._next_look
        if wake:
            self._wake.set()
        _local.call = call
        try:
            yield call
        finally:
            _local.call = None
            with self._lock:
                self._calls.discard(call)

    def stop(self) -> None:
        """Cut off every call in flight; later calls raise Stopped."""
        with self._lock:
            self._stopping = True
            calls = list(self._calls)
        for call in calls:
            _cut(call, "stopped")
        self._wake.set()

    def _run(self) -> None:
        while True:
            with self._lock:
                self._wake.clear()  # a call added from here on sees the next look, and wakes it
                now = time.monotonic()
                late = [call for call in self._calls if call.deadline <= now and not call.cut]
                upcoming = [call.deadline for call in self._calls if call.deadline > now]
                if self._stopping and not self._calls:
                    return
                self._next_look = min([*upcoming, now + 1.0])
            for call in late:
                _cut(call, "deadline")
            self._wake.wait(self._next_look - now)


def _cut(call: _Call, why: str) -> None:
    call.cut = call.cut or why
    sock = getattr(call.connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


# --- proxies -------------------------------------------------------------------------------------


def proxy_for(url: str, environ: Mapping[str, str]) -> str | None:
    """The proxy URL a request to `url` goes through, by Go's rules (net/http's
    ProxyFromEnvironment, golang.org/x/net/http/httpproxy), which skopeo follows:

    - https URLs use HTTPS_PROXY, http URLs HTTP_PROXY (the first non-empty of the upper- and
      lower-case names); a value without a scheme is taken as http://;
    - never for localhost or a loopback address;
    - NO_PROXY: comma-separated; `*` matches all; an IP or CIDR matches addresses; `name`
      matches the name and its subdomains, `.name` and `*.name` only subdomains; an entry
      with `:port` matches that port only.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    name = "HTTPS_PROXY" if parts.scheme == "https" else "HTTP_PROXY"
    proxy = _env_any(environ, name, name.lower())
    if not proxy:
        return None
    host = parts.hostname.lower()
    port = str(parts.port or (443 if parts.scheme == "https" else 80))
    if not _use_proxy(host, port, _env_any(environ, "NO_PROXY", "no_proxy")):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def check_proxies(environ: Mapping[str, str]) -> None:
    """Refuse, up front, proxy variables mirror's own requests cannot use (SetupError naming
    the variable; a password in the value is hidden)."""
    for name in ("HTTPS_PROXY", "HTTP_PROXY"):
        chosen = next((n for n in (name, name.lower()) if environ.get(n)), None)
        if chosen is None:
            continue
        value = environ[chosen]
        url = value if "://" in value else f"http://{value}"
        problem = _proxy_problem(url)
        if problem:
            raise SetupError(f"${chosen}: {hide_passwords(value)!r} {problem}")


def _proxy_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        return f"is not a proxy URL ({error})"
    if parts.scheme not in ("http", "https"):
        return (
            f"is a {parts.scheme} proxy: mirror's own requests use http:// and https:// "
            "proxies only"
        )
    if not parts.hostname:
        return "names no proxy host"
    if port == 0:
        return "has port 0"
    return None


def _env_any(environ: Mapping[str, str], *names: str) -> str:
    return next((environ[name] for name in names if environ.get(name)), "")


def _use_proxy(host: str, port: str, no_proxy: str) -> bool:
    ip = _ip(host)
    if host == "localhost" or (ip is not None and ip.is_loopback):
        return False
    for entry in (part.strip().lower() for part in no_proxy.split(",")):
        if entry and _bypasses(entry, host, port, ip):
            return False
    return True


def _bypasses(
    entry: str,
    host: str,
    port: str,
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
) -> bool:
    if entry == "*":
        return True
    if "/" in entry:
        with contextlib.suppress(ValueError):
            return ip is not None and ip in ipaddress.ip_network(entry, strict=False)
        return False
    name, entry_port = _split_port(entry)
    if not name:
        return False
    entry_ip = _ip(name.strip("[]"))
    if entry_ip is not None:
        return ip == entry_ip and entry_port in ("", port)
    whole = not name.startswith((".", "*."))
    suffix = "." + name.lstrip("*").lstrip(".")
    return (host.endswith(suffix) or (whole and host == suffix[1:])) and entry_port in ("", port)


def _split_port(entry: str) -> tuple[str, str]:
    if entry.startswith("["):
        name, _, rest = entry[1:].partition("]")
        return name, rest.removeprefix(":")
    if entry.count(":") == 1:
        name, _, port = entry.partition(":")
        return name, port
    return entry, ""


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


# --- the client ----------------------------------------------------------------------------------


@dataclass
class _Managers:
    """urllib3 pool managers: direct, and one per proxy, each verified or not; and one TLS
    context per verify mode, shared by all their connections. Without one, urllib3 builds a
    context and reads the whole CA bundle for every new HTTPS connection (about 32 ms of CPU,
    issue 18). Made at the first request, so SSL_CERT_FILE is read as the run starts."""

    size: int
    direct: dict[bool, urllib3.PoolManager] = field(default_factory=dict)
    proxied: dict[tuple[str, bool], urllib3.ProxyManager] = field(default_factory=dict)
    contexts: dict[bool, ssl.SSLContext] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, proxy: str | None, verify: bool) -> urllib3.PoolManager:
        certificates = "CERT_REQUIRED" if verify else "CERT_NONE"
        with self.lock:
            if proxy is None:
                if verify not in self.direct:
                    manager = urllib3.PoolManager(
                        maxsize=self.size,
                        cert_reqs=certificates,
                        ssl_context=self._context(verify),
                    )
                    self.direct[verify] = _watched(manager)
                return self.direct[verify]
            if (proxy, verify) not in self.proxied:
                manager = urllib3.ProxyManager(
                    _without_userinfo(proxy),
                    proxy_headers=_proxy_headers(proxy),
                    maxsize=self.size,
                    cert_reqs=certificates,
                    ssl_context=self._context(verify),
                )
                self.proxied[(proxy, verify)] = _watched(manager)
            return self.proxied[(proxy, verify)]

    def _context(self, verify: bool) -> ssl.SSLContext:
        """What urllib3 makes per connection when given none (create_urllib3_context, then
        the system's CAs, SSL_CERT_FILE and SSL_CERT_DIR honoured): certificates and host
        names checked; with `verify` False, nothing checked and no CA read."""
        if verify not in self.contexts:
            mode = ssl.CERT_REQUIRED if verify else ssl.CERT_NONE
            context = urllib3.util.ssl_.create_urllib3_context(cert_reqs=mode)
            if verify:
                context.load_default_certs()
            self.contexts[verify] = context
        return self.contexts[verify]


def _watched(manager: Any) -> Any:
    manager.pool_classes_by_scheme = _POOL_CLASSES
    return manager


def _without_userinfo(proxy: str) -> str:
    parts = urlsplit(proxy)
    netloc = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=netloc).geturl()


def _proxy_headers(proxy: str) -> dict[str, str]:
    parts = urlsplit(proxy)
    if parts.username is None:
        return {}
    auth = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return dict(urllib3.make_headers(proxy_basic_auth=auth))


def _remember_proxy_logins(environ: Mapping[str, str]) -> None:
    """Hide each proxy password (plain, in its URL, and as sent: base64 of user:password)."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        value = environ.get(name) or ""
        with contextlib.suppress(ValueError):
            parts = urlsplit(value if "://" in value else f"http://{value}")
            if parts.password:
                remember_login(unquote(parts.username or ""), unquote(parts.password))
                remember_login(parts.username or "", parts.password)  # as written in the URL


# --- addresses ------------------------------------------------------------------------------------


def is_inner(address: str) -> bool:
    """Is `address` (an IP address) loopback, private, link-local or otherwise not on the
    public internet? IPv4-mapped IPv6 addresses are judged by their IPv4 address."""
    ip = _ip(address.partition("%")[0])
    if ip is None:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global


def _named_inner(host: str) -> bool:
    """Does a host as written (an IP address or `localhost`) name an inner address? Every
    spelling counts that a resolver (a proxy's getaddrinfo) takes for an IPv4 address:
    `2130706433`, `127.1`, `0x7f.0.0.1`, `0177.0.0.1`; and a name with its trailing dot."""
    host = host.lower().strip("[]").removesuffix(".")
    if host == "localhost" or host.endswith(".localhost") or is_inner(host):
        return True
    if host and set(host) <= _INET_ATON:  # inet_aton(3)'s forms, which getaddrinfo takes
        with contextlib.suppress(OSError):
            return is_inner(socket.inet_ntoa(socket.inet_aton(host)))
    return False


_INET_ATON = frozenset("0123456789abcdefx.")


def same_origin(first: str, second: str) -> bool:
    """Do two URLs have the same scheme, host and effective port (443 or 80 when none is
    written)? Only there does a registry's Authorization header go."""
    return _origin(first) == _origin(second) is not None


def _origin(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url)
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme, 0)
    except ValueError:
        return None
    return parts.scheme, (parts.hostname or "").lower(), port


class Http:
    """Requests with a deadline, retries, a breaker per host and a stop switch; thread-safe.

    One per run. `environ` gives the proxy variables (default: the process environment).
    """

    def __init__(
        self,
        *,
        policy: Policy | None = None,
        pool_size: int = 8,
        environ: Mapping[str, str] | None = None,
        on_throttled: Callable[[str], None] = lambda host: None,
    ):
        self.policy = policy or Policy()
        self.on_throttled = on_throttled  # told of each 429 a throttled request waits out
        self._environ = dict(os.environ if environ is None else environ)
        _remember_proxy_logins(self._environ)
        self._managers = _Managers(pool_size)
        self._proxies: dict[tuple[str, str], str | None] = {}  # (scheme, netloc) -> proxy_for
        self._watchdog = _Watchdog()
        self._down: dict[str, str] = {}  # host -> why it was given up on
        self._slow: dict[str, str] = {}  # host -> why it was given up on by a hurried request
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def stop(self) -> None:
        """Cut off every request in flight; every later request raises Stopped at once."""
        self._stopped.set()
        self._watchdog.stop()

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        tls_verify: bool = True,
        body: bytes | None = None,
        probe: bool = False,
        throttled: bool = False,
        limit: int | None = None,
        inner: bool | None = None,
        stream: bool = False,
    ) -> Response:
        """Send and read the whole answer, retrying as the policy says.

        Raises RegistryError (transient) when the host cannot be reached or does not answer
        in time; Stopped when the run is stopping. `probe`: a request that may well fail (a
        TLS probe): one attempt, and only no answer at all counts against the host.
        `throttled`: a 429 is back-pressure (ECR's "Rate exceeded"), not a verdict: wait
        (Retry-After when given, else backoff with jitter) and send it again; the waits do not
        count against the deadline. The last 429 is returned to the caller. `limit`: the most
        bytes of body read (default MAX_BODY); a longer answer is a RegistryError. Redirects
        are followed as the module docstring says; one that is refused is a RegistryError.
        `inner`: whether the registry this request is for is on an inner address (the answer's
        `inner` tells, for its origin); False refuses an inner address from the first hop on,
        for a URL a registry chose (its token realm). None: the URL's own address decides.
        `stream`: a 200's body is left on the wire, in the answer's `body` (see Body), which
        the caller must close; other answers are read whole.
        """
        host = _host_of(url)
        seconds, hurry = self._seconds()
        self._admit(host, url, inner, hurry=hurry)
        proxy = self._proxy_for(url)
        call = _Request(
            method,
            url,
            dict(headers or {}),
            body,
            time.monotonic() + seconds,
            self._managers.get(proxy, tls_verify),
            tls_verify,
            limit=limit or MAX_BODY,
            proxied=proxy is not None,
            origin_inner=inner,
            stream=stream,
            seconds=seconds,
            hurried=hurry,
        )
        attempts = 1 if probe else self.policy.attempts
        attempt = waits = redirects = 0
        while True:
            attempt += 1
            try:
                response, peer = self._attempt(call)
            except _Stopping:
                raise Stopped from None
            except _InnerAddress as refused:
                what = "a redirect to " if call.url != url else ""
                raise RegistryError(
                    f"{host}: {what}{_host_of(call.url)}, which is at {refused}, a loopback, "
                    "private or link-local address, refused: the registry is not on one"
                ) from None
            except _TooLarge as large:  # that answer only: the host is not given up
                raise RegistryError(f"{host}: {large}") from None
            except _Failed as failure:
                if probe or failure.final or not self._retry(call, attempt, attempts, failure.why):
                    if failure.final or not probe:  # a probe that got no answer counts too
                        self._give_up_on(host, failure.why, hurried=hurry)
                    transient = not (hurry and failure.final)  # hurried: the time is spent
                    raise RegistryError(f"{host}: {failure.why}", transient=transient) from None
                self._wait(backoff(self.policy.backoff, attempt), call)
                continue
            if response.status == 429 and throttled and waits < self.policy.throttled_attempts - 1:
                self.on_throttled(host)
                waits += 1
                attempt -= 1  # back-pressure is not a failed attempt
                delay = self._throttled_delay(response, waits)
                log.debug(
                    "%s %s: throttled (429); sending it again in %.1f s (wait %d of %d)",
                    call.method, _shown(call.url), delay, waits, self.policy.throttled_attempts - 1,
                )  # fmt: skip
                call = replace(call, deadline=call.deadline + delay)
                self._wait(delay, call)
                continue
            if call.origin_inner is None:  # the registry's own address: may redirects go inside?
                inner = _named_inner(_hostname(url)) if peer is None else is_inner(peer)
                call = replace(call, origin_inner=inner)
            followed = self._redirect(call, response, redirects)
            if followed is not None:
                call, redirects = followed, redirects + 1
                continue
            retried = response.status in RETRIED_STATUSES and _repeatable(method)
            if retried and self._retry(call, attempt, attempts, f"HTTP {response.status}"):
                self._wait(backoff(self.policy.backoff, attempt), call)
                continue
            # built, not dataclasses.replace'd: a tenth of the cost, on every answer
            return Response(
                response.status,
                response.headers,
                response.data,
                call.url,
                call.origin_inner,
                response.body,
            )

    def _proxy_for(self, url: str) -> str | None:
        """proxy_for(url), remembered per scheme and host: the environment is fixed per Http,
        and the answer depends on nothing else."""
        origin = url.split("/", 3)[:3]  # scheme, "", host[:port]: where the path starts
        key = (origin[0], origin[-1])
        if key not in self._proxies:
            self._proxies[key] = proxy_for(url, self._environ)
        return self._proxies[key]

    def _seconds(self) -> tuple[float, bool]:
        """A request's whole deadline in seconds, and whether `hurried` shortened it."""
        hurry = getattr(_HURRIED, "seconds", None)
        if hurry is None or hurry >= self.policy.timeout:
            return self.policy.timeout, False
        return hurry, True

    def _admit(self, host: str, url: str, inner: bool | None, *, hurry: bool = False) -> None:
        """Refuse a request to a host given up on (a hurried one: also one that let a hurried
        request down), or to an inner address not allowed."""
        if inner is False and _named_inner(_hostname(url)):
            raise RegistryError(
                f"{host}: a loopback, private or link-local address, refused: the registry "
                "that sent mirror there is not on one"
            )
        with self._lock:
            down = self._down.get(host) or (self._slow.get(host) if hurry else None)
        if down is not None:
            raise RegistryError(f"{host}: {down} (earlier in this run; not asked again)")

    def _redirect(self, call: _Request, response: Response, redirects: int) -> _Request | None:
        """The request a redirect asks for (GET and HEAD only; registry.k8s.io redirects every
        request to the registry that serves it), or None. The Authorization header goes to the
        same origin only: a blob store behind a redirect must not get the registry's token.
        RegistryError for a redirect that is refused (see the module docstring)."""
        location = response.headers.get("Location")
        if response.status not in _REDIRECTS or not location or call.method not in ("GET", "HEAD"):
            return None
        host = _host_of(call.url)
        if redirects >= MAX_REDIRECTS:
            raise RegistryError(f"{host}: more than {MAX_REDIRECTS} redirects")
        url = urljoin(call.url, location)
        scheme = urlsplit(url).scheme
        if scheme not in ("http", "https") or (call.url.startswith("https:") and scheme == "http"):
            raise RegistryError(
                f"{host}: a redirect from {urlsplit(call.url).scheme} to {quoted(_shown(url))!r} "
                f"({quoted(scheme, 20) or 'no scheme'}) refused: a registry spoken to over HTTPS "
                "is never followed to plain HTTP"
            )
        if not call.origin_inner and _named_inner(_hostname(url)):
            raise RegistryError(
                f"{host}: a redirect to {quoted(_host_of(url), 80)}, a loopback, private or "
                "link-local address, refused: the registry is not on one"
            )
        headers = dict(call.headers)
        if not same_origin(url, call.url):
            headers.pop("Authorization", None)
        log.debug(
            "%s %s -> %d, to %s",
            call.method,
            _shown(call.url),
            response.status,
            quoted(_shown(url)),
        )
        proxy = self._proxy_for(url)
        manager = self._managers.get(proxy, call.verify)
        return replace(call, url=url, headers=headers, manager=manager, proxied=proxy is not None)

    def _throttled_delay(self, response: Response, waits: int) -> float:
        told = retry_after(response.headers)
        if told is not None:
            return min(told, MAX_WAIT)
        return backoff(self.policy.throttled_backoff, waits)

    def _wait(self, delay: float, call: _Request) -> None:
        if self._stopped.wait(max(0.0, min(delay, call.deadline - time.monotonic()))):
            raise Stopped

    def _attempt(self, call: _Request) -> tuple[Response, str | None]:
        """One try: the answer, and the address it came from (None through a proxy)."""
        started = time.monotonic()
        left = call.deadline - started
        if left <= 0:
            raise _Failed(f"no answer within {call.seconds:g} s", final=True)
        timeout = urllib3.Timeout(connect=min(_CONNECT_TIMEOUT, left), read=left)
        refuse_inner = call.origin_inner is False and not call.proxied
        watching = self._watchdog.watching(call.deadline, refuse_inner=refuse_inner)
        with contextlib.ExitStack() as stack:
            watched = stack.enter_context(watching)
            try:
                raw = call.manager.request(
                    call.method,
                    call.url,
                    headers=call.headers,
                    body=call.body,
                    retries=False,
                    redirect=False,  # followed in request(), where the credentials are decided
                    timeout=timeout,
                    preload_content=False,
                )
                if call.stream and raw.status == 200:  # the body goes to the caller
                    host = _host_of(call.url)
                    done = stack.pop_all().close
                    body = Body(raw, watched, done, call.seconds, host, hurried=call.hurried)
                    log.debug("%s %s -> 200 in %d ms, body streamed", call.method,
                              _shown(call.url), _ms(started))  # fmt: skip
                    peer = None if call.proxied else watched.peer
                    return Response(raw.status, raw.headers, b"", body=body), peer
                try:
                    data = self._body(raw, call)
                finally:
                    raw.release_conn()
            except urllib3.exceptions.HTTPError as error:
                raise self._failure(watched, error, call, started) from None
            if watched.cut:  # an answer cut short can look whole (headers end at EOF)
                cut = urllib3.exceptions.ProtocolError("cut off")
                raise self._failure(watched, cut, call, started)
        log.debug("%s %s -> %d in %d ms", call.method, _shown(call.url), raw.status, _ms(started))
        return Response(raw.status, raw.headers, data), None if call.proxied else watched.peer

    def _body(self, raw: urllib3.BaseHTTPResponse, call: _Request) -> bytes:
        """The whole body, read in pieces: at most `call.limit` bytes (decompressed), and not
        past the deadline, whatever the peer keeps sending."""
        pieces: list[bytes] = []
        size = 0
        while piece := raw.read(_PIECE):
            size += len(piece)
            if size > call.limit:
                raise _TooLarge(f"an answer over {call.limit / (1 << 20):g} MiB")
            if time.monotonic() > call.deadline:
                raise urllib3.exceptions.ReadTimeoutError(None, call.url, "past the deadline")  # type: ignore[arg-type]
            pieces.append(piece)
        return b"".join(pieces)

    def _failure(
        self, watched: _Call, error: urllib3.exceptions.HTTPError, call: _Request, started: float
    ) -> _Failed:
        if watched.cut == "stopped":
            return _Stopping()
        if watched.cut == "deadline" or isinstance(error, urllib3.exceptions.ReadTimeoutError):
            why, final = f"no answer within {call.seconds:g} s", True
        else:
            why, final = _reason(error), False
        log.debug("%s %s failed after %d ms: %s", call.method, _shown(call.url), _ms(started), why)
        return _Failed(why, final=final)

    def _retry(self, call: _Request, attempt: int, attempts: int, why: str) -> bool:
        if attempt >= attempts:
            return False
        log.debug(
            "retrying %s %s (attempt %d of %d): %s",
            call.method,
            _shown(call.url),
            attempt + 1,
            attempts,
            why,
        )
        return True

    def _give_up_on(self, host: str, why: str, *, hurried: bool = False) -> None:
        with self._lock:
            given_up = self._slow if hurried else self._down
            if host not in given_up:
                what = "hurried requests to it" if hurried else "it"
                log.debug("%s: giving up on %s for this run: %s", host, what, why)
                given_up[host] = why


@dataclass(frozen=True)
class _Request:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None
    deadline: float  # time.monotonic() by which the whole request, retries included, ends
    manager: Any  # the urllib3 pool manager (direct or through a proxy)
    verify: bool = True  # TLS certificates checked
    limit: int = MAX_BODY  # bytes of body read at most
    proxied: bool = False  # sent through a proxy: the address reached is the proxy's
    origin_inner: bool | None = None  # the registry is on an inner address (None: not known yet)
    stream: bool = False  # a 200's body is handed over unread (Body)
    seconds: float = 30.0  # the whole deadline, from its start (the policy's, or `hurried`'s)
    hurried: bool = False  # `hurried` shortened it


class _Failed(Exception):
    def __init__(self, why: str, *, final: bool):
        super().__init__(why)
        self.why, self.final = why, final


class _TooLarge(Exception):
    pass


class _InnerAddress(Exception):
    """A redirect reached a loopback, private or link-local address (the message)."""


class _Stopping(_Failed):
    def __init__(self) -> None:
        super().__init__("mirror is stopping", final=True)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds (delta-seconds only; an HTTP date is read as absent)."""
    value = (headers.get("Retry-After") or "").strip()
    return float(value) if value.isascii() and value.isdigit() and len(value) < 7 else None


def _repeatable(method: str) -> bool:
    return method in ("GET", "HEAD", "PUT")


def _host_of(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


def _hostname(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _shown(url: str) -> str:
    """The URL as logged: host and path with query (they hold no secret), no scheme."""
    return url.split("://", 1)[-1]


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _reason(error: BaseException) -> str:
    """urllib3's error in plain words, without object reprs."""
    for kind, words in _REASONS:
        if isinstance(error, kind):
            if kind is urllib3.exceptions.NewConnectionError and "refused" not in str(error):
                return "cannot connect: " + str(error).split(": ", 1)[-1]
            if kind is urllib3.exceptions.SSLError and _UNTRUSTED.search(str(error)):
                return _untrusted(str(error))
            return words or f"{type(error).__name__}: {error}"
    return str(error) or type(error).__name__


# OpenSSL's words when no trusted CA signed the chain (not an expired or misnamed certificate).
_UNTRUSTED = re.compile(
    r"certificate verify failed: ((?:unable to get local issuer certificate|self[- ]signed "
    r"certificate(?: in certificate chain)?|unable to get issuer certificate))"
)


def _untrusted(text: str) -> str:
    """A certificate no trusted CA signed, in plain words, with what fixes it (FACTS: Python
    and skopeo both read SSL_CERT_FILE)."""
    match = _UNTRUSTED.search(text)
    why = match.group(1) if match else "no trusted CA signed it"
    return (
        f"its TLS certificate is not trusted ({why}): if a private CA signed it, set "
        "SSL_CERT_FILE to a file that holds the CA's certificate (or tls_verify: false, which "
        "checks nothing)"
    )


_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (urllib3.exceptions.NameResolutionError, "cannot resolve the host name (Failed to resolve)"),
    (urllib3.exceptions.NewConnectionError, "connection refused"),
    (urllib3.exceptions.ConnectTimeoutError, "connection timed out"),
    (urllib3.exceptions.SSLError, ""),
    (urllib3.exceptions.ProxyError, ""),
    (urllib3.exceptions.ProtocolError, "connection closed without an answer"),
)
