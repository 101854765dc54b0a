"""The one module that imports `sh`: skopeo's version probe and `skopeo copy`.

Arguments are built by pure functions (tested by comparing lists) and run by thin ones.
Credentials never reach argv: they sit in a 0600 auth file inside a private directory that
`Workspace` removes on every way out.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import sh

from mirror.errors import SCHEMA1_REFUSAL, CopyError, NestedIndex, SetupError, Unmirrorable, quoted
from mirror.lock import temporary_directory
from mirror.model import Copied
from mirror.oci import Login

log = logging.getLogger("mirror")

MIN_VERSION = (1, 9)
INSTALL_HINT = (
    "install skopeo 1.9 or newer: `apt-get install skopeo` on Debian 12 or Ubuntu 24.04 "
    "(CodeBuild image aws/codebuild/standard:8.0); Ubuntu 22.04's 1.4 is too old"
)
_POLICY = {"default": [{"type": "insecureAcceptAnything"}]}
WORKSPACE_PREFIX = "mirror-"
OWNER = "owner"
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def probe(command: str = "skopeo") -> tuple[int, ...]:
    """Run `skopeo --version` once; refuse a missing or too old skopeo with how to fix it."""
    try:
        process = sh.Command(command)(
            "--version", _bg=True, _bg_exc=False, _tty_out=False, _env=child_env(os.environ)
        )
        with _Deadline(process, 20) as timer:
            process.wait()
        output = str(process)
    except sh.CommandNotFound:
        raise SetupError(f"skopeo not found on PATH: {INSTALL_HINT}") from None
    except sh.ErrorReturnCode as error:
        why = "timed out" if timer.fired else f"exit {error.exit_code}"
        raise SetupError(f"`skopeo --version` failed ({why})") from None
    version = parse_version(output)
    if version < MIN_VERSION:
        shown = ".".join(map(str, version))
        raise SetupError(f"skopeo {shown} is too old: {INSTALL_HINT}")
    return version


def parse_version(output: str) -> tuple[int, ...]:
    match = _VERSION.search(output)
    if not match:
        raise SetupError(f"cannot read skopeo's version from {output.strip()!r}")
    return tuple(int(part) for part in match.groups() if part is not None)


class Workspace:
    """A private directory (0700) holding skopeo's signature policy, its registries.conf and
    registries.d (empty: nothing of the machine's is read) and the auth file (0600).

    It is removed on every way out but SIGKILL; it names its owner (PID and process start
    time) so that the next run can remove what a killed one left (`remove_leftovers`).
    Raises SetupError (exit 2), naming the directory, when it cannot be made there.
    """

    def __init__(self, *, parent: Path | None = None) -> None:
        parent = parent or temporary_directory()
        try:
            self.path = Path(tempfile.mkdtemp(prefix=WORKSPACE_PREFIX, dir=parent))
        except OSError as error:
            raise _unwritable(parent, error) from None
        self.policy = self.path / "policy.json"
        self.authfile = self.path / "auth.json"
        self.registries_conf = self.path / "registries.conf"
        self.registries_d = self.path / "registries.d"
        try:
            (self.path / OWNER).write_text(f"{os.getpid()} {_started(os.getpid())}\n")
            self.policy.write_text(json.dumps(_POLICY))
            self.registries_conf.write_text("")
            self.registries_d.mkdir()
            self.write_auths({})
        except OSError as error:
            self.remove()
            raise _unwritable(parent, error) from None

    def write_auths(self, logins: Mapping[str, Login]) -> None:
        """Replace the auth file: {"auths": {host: {"auth": base64("user:password")}}}."""
        auths = {
            host: {"auth": base64.b64encode(f"{login.username}:{login.password}".encode()).decode()}
            for host, login in logins.items()
        }
        temporary = self.path / "auth.json.new"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump({"auths": auths}, handle)
        os.replace(temporary, self.authfile)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()


def _unwritable(directory: Path, error: OSError) -> SetupError:
    return SetupError(
        f"cannot write in the temporary directory {directory} ({error.strerror}): mirror keeps "
        "skopeo's auth file and signature policy there; set TMPDIR to a writable directory "
        "with some free space"
    )


def remove_leftovers(parent: Path | None = None) -> list[Path]:
    """Remove the workspaces (credentials included) of mirror runs that were killed: ours
    (same user), with an owner file naming a process that is gone. Returns what it removed."""
    removed = []
    for path in (parent or temporary_directory()).glob(f"{WORKSPACE_PREFIX}*"):
        try:
            if not path.is_dir() or path.is_symlink() or path.stat().st_uid != os.getuid():
                continue
            pid_text, _, started = (path / OWNER).read_text().strip().partition(" ")
        except OSError:
            continue
        if pid_text.isdecimal() and not _alive(int(pid_text), started):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _alive(pid: int, started: str) -> bool:
    """Is process `pid` the one that started at `started` still running? (A PID can be reused.)"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process by now: not ours to judge
    now = _started(pid)
    return not (now and started and now != started)


def _started(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or ""."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def copy_args(
    source: str,
    destination: str,
    *,
    policy: Path,
    authfile: Path,
    digestfile: Path,
    src_tls_verify: bool = True,
    dest_tls_verify: bool = True,
    registries_conf: Path | None = None,
    registries_d: Path | None = None,
) -> list[str]:
    """argv after `skopeo` for an exact copy: every platform, every digest preserved.

    `--debug` is there for one line: containers/image logs "Too many requests to ..." when a
    registry answers 429 (a destination throttling), then sleeps and retries itself.
    `--registries-conf` and `--registries.d` name mirror's own (empty) files, so the machine's
    (credential helpers, mirrors, signature lookaside) never change what a copy does.
    """
    machine_free = []
    if registries_conf is not None:
        machine_free += ["--registries-conf", str(registries_conf)]
    if registries_d is not None:
        machine_free += ["--registries.d", str(registries_d)]
    return [
        "--debug",
        "--policy",
        str(policy),
        *machine_free,
        "copy",
        "--authfile",
        str(authfile),
        "--all",
        "--preserve-digests",
        "--retry-times",
        "0",
        f"--src-tls-verify={str(src_tls_verify).lower()}",
        f"--dest-tls-verify={str(dest_tls_verify).lower()}",
        "--digestfile",
        str(digestfile),
        f"docker://{source}",
        f"docker://{destination}",
    ]


class Skopeo:
    """Runs skopeo copies; keeps track of running children so they can be stopped."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        command: str = "skopeo",
        timeout: float = 3600,
        on_throttled: Callable[[str], None] = lambda host: None,
    ):
        self.workspace = workspace
        self.command = command
        self.timeout = timeout
        self.on_throttled = on_throttled  # told of each 429 skopeo waits out itself
        self._running: dict[int, Any] = {}
        self._stopping = False
        self._lock = threading.Lock()
        self._counter = iter(range(1, 1 << 62))

    def copy(
        self,
        source: str,
        destination: str,
        *,
        src_tls_verify: bool,
        dest_tls_verify: bool,
    ) -> Copied:
        """Copy one image; return the digest written at the destination and the foreign
        layers skopeo left at their URLs.

        skopeo reads sources through mirror's relay (mirror/relay.py), never a source itself,
        so a 429 it sees is a destination throttling (or a target read from): left to skopeo's
        own retries, and reported to `on_throttled`.
        """
        digestfile = self.workspace.path / f"digest-{next(self._counter)}"
        args = copy_args(
            source,
            destination,
            policy=self.workspace.policy,
            authfile=self.workspace.authfile,
            digestfile=digestfile,
            src_tls_verify=src_tls_verify,
            dest_tls_verify=dest_tls_verify,
            registries_conf=self.workspace.registries_conf,
            registries_d=self.workspace.registries_d,
        )
        watch = _Watch(self.on_throttled)
        self._run(args, what=source, watch=watch)
        try:
            return Copied(digestfile.read_text().strip(), tuple(watch.foreign_layers))
        finally:
            digestfile.unlink(missing_ok=True)

    def _run(self, args: list[str], *, what: str, watch: _Watch) -> None:
        if self._stopping:
            raise CopyError(f"{what}: not started: mirror is stopping")
        log.debug("running %s %s", self.command, " ".join(args))  # argv holds no secret
        try:
            process = sh.Command(self.command)(
                *args,
                _bg=True,
                _bg_exc=False,
                _tty_out=False,
                _out=_discard,
                _err=watch.line,
                _env=child_env(os.environ),
                _preexec_fn=die_with(os.getpid()),
            )
        except sh.CommandNotFound:
            raise CopyError(f"skopeo not found on PATH: {INSTALL_HINT}") from None
        with self._lock:
            self._running[id(process)] = process
            if self._stopping:  # a signal came while it was being started
                with contextlib.suppress(ProcessLookupError, OSError):
                    process.kill()
        try:
            with _Deadline(process, self.timeout) as timer:
                process.wait()
        except sh.ErrorReturnCode:
            if timer.fired:
                raise CopyError(
                    f"copy timed out after {self.timeout:g} s", transient=True
                ) from None
            raise classify(list(watch.tail), what) from None
        finally:
            with self._lock:
                self._running.pop(id(process), None)

    def terminate_all(self) -> None:
        """Stop every running skopeo (SIGTERM, then SIGKILL after a grace period)."""
        with self._lock:
            self._stopping = True
            running = list(self._running.values())
        for process in running:
            with contextlib.suppress(ProcessLookupError, OSError):
                process.terminate()


_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_LIBC = ctypes.CDLL(None, use_errno=True)


def die_with(parent: int) -> Callable[[], None]:
    """What a skopeo child runs between fork and exec: it is killed (SIGKILL) when the thread
    of `parent` that started it ends, as when mirror itself is SIGKILLed (prctl(2)
    PR_SET_PDEATHSIG). Otherwise it would go on pushing beside the next run, with an auth file
    the next run removes as a killed run's leftover."""

    def arm() -> None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call took effect
            os._exit(1)

    return arm


class _Deadline:
    """Kills a process that outlives its time. (sh's own _timeout keeps a thread that looks
    every 0.1 s, which adds about 50 ms to every run; a timer costs nothing.)"""

    def __init__(self, process: Any, seconds: float):
        self.process, self.fired = process, False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.fired = True
        with contextlib.suppress(ProcessLookupError, OSError):
            self.process.kill()

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


class _Watch:
    """Reads skopeo's stderr as it comes: tells of a destination's 429 (skopeo waits it out),
    notes the foreign layers it leaves at their URLs, keeps the last lines worth quoting."""

    def __init__(self, on_throttled: Callable[[str], None]) -> None:
        self.on_throttled = on_throttled
        self.tail: deque[str] = deque(maxlen=20)
        self.foreign_layers: dict[str, None] = {}  # left at their URLs, in order, once each

    def line(self, text: str, stdin: object, process: Any) -> None:
        foreign = _FOREIGN.search(text)
        if foreign:
            self.foreign_layers[foreign.group(1)] = None
        if _TOO_MANY in text:
            self.on_throttled(too_many_requests_host(text))  # back-pressure
        elif "level=debug" not in text:
            self.tail.append(text[:_LINE_KEPT])  # a registry's body quoted whole stays out


def too_many_requests_host(line: str) -> str:
    """The host in containers/image's `Too many requests to <URL>: sleeping for N seconds
    before next attempt` debug line ("" if the line names none)."""
    match = _TOO_MANY_URL.search(line)
    return match.group(1) if match else ""


def _discard(text: str) -> None:
    return None


# containers/image's debug line for a layer with URLs that a registry destination keeps as a
# descriptor only (copy.go: "Skipping foreign layer %q copy to %s").
_FOREIGN = re.compile(r"Skipping foreign layer \W*(sha(?:256|384|512):[0-9a-f]{64,128})")
_TOO_MANY = "Too many requests to "
_LINE_KEPT = 4096  # characters of one stderr line kept to classify a failure and quote it
_TOO_MANY_URL = re.compile(r"Too many requests to \w+://([^/\s:]+(?::\d+)?)")


CHILD_ENV = (
    "PATH",
    "HOME",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_CACHE_HOME",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",  # Go's TLS trust store, for a proxy or registry with a private CA
    "SSL_CERT_DIR",
    "LANG",
    "LANGUAGE",
    "TZ",
)
"""The variables a skopeo child gets (and LC_*): what it needs to run, reach a registry
(proxies, CA certificates) and find its files. Nothing else: no AWS key, no Docker Hub token
reaches it; credentials come only through the auth file."""


def child_env(environ: Mapping[str, str]) -> dict[str, str]:
    return {
        name: value
        for name, value in environ.items()
        if name in CHILD_ENV or name.startswith("LC_")
    }


_TRANSIENT = (
    "connection refused",
    "connection reset",
    "unexpected eof",
    '": eof',  # Go's io.EOF: the line was dropped before an answer (a dropped upload)
    "i/o timeout",
    "tls handshake timeout",
    "broken pipe",
    "context deadline exceeded",
)
_SERVER_ERROR = re.compile(r"\b50[0234]\b")
_QUERY = re.compile(r'(\w+://[^\s"?]+)\?[^\s"]*')  # an upload URL's state: long, and no help
_FATAL = 'level=fatal msg="'


def classify(stderr_lines: list[str], what: str) -> CopyError | Unmirrorable:
    """Turn skopeo's stderr into one plain-words error naming the fault: ECR throttling
    (back-pressure, worth another try), ECR's images-per-repository quota, an immutable tag,
    an image no copy can keep (Unmirrorable), an index of indexes (NestedIndex), or a
    transient fault (a 5xx, a dropped line). skopeo reads sources through mirror's relay,
    which keeps the source's own faults: what skopeo says is about the destination."""
    text = "".join(stderr_lines)
    # skopeo's line names the destination too, before quoting the registry: twice the room
    last = _QUERY.sub(r"\1", _last_message(stderr_lines))
    message = quoted(last or "skopeo failed without a message", 1000)
    lowered = text.lower()
    content = unmirrorable(message) or (NestedIndex(message) if _NESTED in message else None)
    if content is not None:
        return content
    for needle, name in _PERMANENT:
        if needle in lowered:
            return CopyError(f"{name}: {message}")
    if "toomanyrequests" in lowered or ("429" in lowered and "too many requests" in lowered):
        return CopyError(f"ECR throttling: {message}", throttled=True)
    transient = any(word in lowered for word in _TRANSIENT) or bool(_SERVER_ERROR.search(lowered))
    return CopyError(message, transient=transient)


_ZSTD_DOCKER = (
    "a Docker v2 manifest with zstd-compressed layers ({media_type}): the Docker v2 format has "
    "no zstd layer type (only OCI manifests carry zstd), and this skopeo refuses to read it, "
    "so mirror does not copy it; ask its publisher for an OCI image"
)
_UNSUPPORTED_V2S2 = re.compile(r"unsupported docker v2s2 media type: \W*([\w.+/-]+)")
_SCHEMA1_REFERENCE = "copying a schema1 image with an embedded docker reference"
_NESTED = "Unexpectedly received a manifest list instead of a manifest for a single image"


def unmirrorable(message: str) -> Unmirrorable | None:
    """skopeo's refusal of the image's very form, in plain words; None for other failures.
    (skopeo 1.9.3: `unsupported docker v2s2 media type: "...tar.zstd"` when reading a zstd
    Docker v2 manifest; `Copying a schema1 image with an embedded Docker reference to ...
    would change the manifest` with --preserve-digests.)"""
    zstd = _UNSUPPORTED_V2S2.search(message)
    if zstd:
        return Unmirrorable(_ZSTD_DOCKER.format(media_type=zstd.group(1)))
    if _SCHEMA1_REFERENCE in message.lower():
        return Unmirrorable(SCHEMA1_REFUSAL)
    return None


_PERMANENT = (
    ("maximum allowed number of images", "ECR's images-per-repository quota is reached"),
    ("cannot be overwritten because the repository is immutable", "the tag is immutable"),
    ("too many failed login attempts", "login locked out after repeated failed logins"),
)


def _last_message(lines: list[str]) -> str:
    for line in reversed("".join(lines).splitlines()):
        at = line.find(_FATAL)
        message = line[at + len(_FATAL) :].rstrip()
        if at >= 0 and message.endswith('"'):
            return message[:-1].replace('\\"', '"')
    stripped = [line.strip() for line in "".join(lines).splitlines() if line.strip()]
    return stripped[-1] if stripped else ""
