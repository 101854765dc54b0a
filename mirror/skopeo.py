"""The one module that imports `sh`: skopeo's version probe and `skopeo copy`.

Arguments are built by pure functions (tested by comparing lists) and run by thin ones.
Credentials never reach argv: they sit in a 0600 auth file inside a private directory that
`Workspace` removes on every way out.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import sh

from mirror.errors import CopyError, SetupError
from mirror.registry import Login

MIN_VERSION = (1, 9)
INSTALL_HINT = (
    "install skopeo 1.9 or newer: `apt-get install skopeo` on Debian 12 or Ubuntu 24.04 "
    "(CodeBuild image aws/codebuild/standard:8.0); Ubuntu 22.04's 1.4 is too old"
)
_POLICY = {"default": [{"type": "insecureAcceptAnything"}]}
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def probe(command: str = "skopeo") -> tuple[int, ...]:
    """Run `skopeo --version` once; refuse a missing or too old skopeo with how to fix it."""
    try:
        process = sh.Command(command)("--version", _bg=True, _bg_exc=False, _tty_out=False)
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
    """A private directory (0700) holding skopeo's signature policy and auth file (0600)."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="mirror-"))
        self.policy = self.path / "policy.json"
        self.authfile = self.path / "auth.json"
        self.policy.write_text(json.dumps(_POLICY))
        self.write_auths({})

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


def copy_args(
    source: str,
    destination: str,
    *,
    policy: Path,
    authfile: Path,
    digestfile: Path,
    src_tls_verify: bool = True,
    dest_tls_verify: bool = True,
) -> list[str]:
    """argv after `skopeo` for an exact copy: every platform, every digest preserved.

    `--debug` is there for one line: containers/image logs "Too many requests to ..." when a
    registry answers 429, then sleeps and retries for 30 s. We watch for it and stop skopeo.
    """
    return [
        "--debug",
        "--policy",
        str(policy),
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

    def __init__(self, workspace: Workspace, *, command: str = "skopeo", timeout: float = 3600):
        self.workspace = workspace
        self.command = command
        self.timeout = timeout
        self._running: dict[int, Any] = {}
        self._stopping = False
        self._lock = threading.Lock()
        self._counter = iter(range(1, 1 << 62))

    def copy(
        self, source: str, destination: str, *, src_tls_verify: bool, dest_tls_verify: bool
    ) -> str:
        """Copy one image; return the digest written at the destination."""
        digestfile = self.workspace.path / f"digest-{next(self._counter)}"
        args = copy_args(
            source,
            destination,
            policy=self.workspace.policy,
            authfile=self.workspace.authfile,
            digestfile=digestfile,
            src_tls_verify=src_tls_verify,
            dest_tls_verify=dest_tls_verify,
        )
        self._run(args, what=source)
        try:
            return digestfile.read_text().strip()
        finally:
            digestfile.unlink(missing_ok=True)

    def _run(self, args: list[str], *, what: str) -> None:
        if self._stopping:
            raise CopyError(f"{what}: not started: mirror is stopping")
        watch = _Watch()
        try:
            process = sh.Command(self.command)(
                *args,
                _bg=True,
                _bg_exc=False,
                _tty_out=False,
                _out=_discard,
                _err=watch.line,
                _env=_child_env(),
            )
        except sh.CommandNotFound:
            raise CopyError(f"skopeo not found on PATH: {INSTALL_HINT}") from None
        with self._lock:
            self._running[id(process)] = process
            if self._stopping:  # a signal came while it was being started
                process.kill()
        try:
            with _Deadline(process, self.timeout) as timer:
                process.wait()
        except sh.ErrorReturnCode:
            if watch.rate_limited:
                raise _rate_limited(what) from None
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
    """Reads skopeo's stderr as it comes: stops it on a 429, keeps the last lines worth quoting."""

    def __init__(self) -> None:
        self.rate_limited = False
        self.tail: deque[str] = deque(maxlen=20)

    def line(self, text: str, stdin: object, process: Any) -> bool | None:
        if _TOO_MANY in text:
            self.rate_limited = True
            with contextlib.suppress(ProcessLookupError, OSError):
                process.kill()
            return True  # no more lines wanted
        if "level=debug" not in text:
            self.tail.append(text)
        return None


def _discard(text: str) -> None:
    return None


def _rate_limited(what: str) -> CopyError:
    return CopyError(f"{what}: pull rate limit reached (429 TOOMANYREQUESTS)", rate_limited=True)


_TOO_MANY = "Too many requests to "


def _child_env() -> dict[str, str]:
    # The auth file is given on argv (its path, not its content); nothing else may leak in.
    return {k: v for k, v in os.environ.items() if k not in ("REGISTRY_AUTH_FILE",)}


_TRANSIENT = (
    "connection refused",
    "connection reset",
    "unexpected eof",
    "i/o timeout",
    "tls handshake timeout",
    "broken pipe",
    "context deadline exceeded",
)
_SERVER_ERROR = re.compile(r"\b50[0234]\b")
_FATAL = re.compile(r'level=fatal msg="(.*)"\s*$')


def classify(stderr_lines: list[str], what: str) -> CopyError:
    """Turn skopeo's stderr into one plain-words error, marked transient or rate-limited."""
    text = "".join(stderr_lines)
    message = _last_message(stderr_lines) or "skopeo failed without a message"
    lowered = text.lower()
    if "toomanyrequests" in lowered or ("429" in lowered and "too many requests" in lowered):
        return _rate_limited(what)
    transient = any(word in lowered for word in _TRANSIENT) or bool(_SERVER_ERROR.search(lowered))
    return CopyError(message, transient=transient)


def _last_message(lines: list[str]) -> str:
    for line in reversed("".join(lines).splitlines()):
        match = _FATAL.search(line)
        if match:
            return match.group(1).replace('\\"', '"')
    stripped = [line.strip() for line in "".join(lines).splitlines() if line.strip()]
    return stripped[-1] if stripped else ""
