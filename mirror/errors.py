"""The exception tree and the exit codes: one table, shown by --help and checked against README."""

from __future__ import annotations

import base64
import json
import pwd
import re
import threading
from enum import IntEnum


class Exit(IntEnum):
    """Process exit codes; EXIT_CODES says what each means."""

    OK = 0
    FAILED = 1
    USAGE = 2
    SOFTWARE = 70  # sysexits' EX_SOFTWARE: a bug in mirror
    TRY_LATER = 75  # sysexits' EX_TEMPFAIL: systemd units and cron wrappers treat it as "later"
    INTERRUPTED = 130  # 128 + SIGINT
    TERMINATED = 143  # 128 + SIGTERM


EXIT_CODES: tuple[tuple[Exit, str], ...] = (
    (
        Exit.OK,
        "every image copied or already up to date (`ensure`: or ECR's copy served, with a "
        "warning, because the source could not refresh it)",
    ),
    (
        Exit.FAILED,
        "at least one image failed (`sync`: or what vouches for one could not be copied); the "
        "others were still done (`repos`: differences remain)",
    ),
    (
        Exit.USAGE,
        "bad command line, config, output path or credentials, or the machine cannot run "
        "mirror: nothing was done",
    ),
    (Exit.SOFTWARE, "a bug in mirror (the message says so; -v shows the traceback)"),
    (
        Exit.TRY_LATER,
        "try again later, nothing lost: a source's pull budget is spent or it answered 429 "
        "(its images are deferred; for `ensure`, only those ECR lacks, or with --refresh "
        "always; for `sync`, also referrers the budget could not cover), the --deadline came "
        "first (what was not done is deferred), or another run holds the lock",
    ),
    (Exit.INTERRUPTED, "interrupted by SIGINT (Ctrl-C); the report says what was done"),
    (Exit.TERMINATED, "terminated by SIGTERM; the report says what was done"),
)
"""Every exit code and its meaning, in order. When images both failed and were deferred, 1."""


class MirrorError(Exception):
    """Base of every error mirror reports as one line, without a traceback."""

    exit_code: int = Exit.FAILED


class ConfigError(MirrorError):
    """The config file or the command line is wrong."""

    exit_code = Exit.USAGE


class SetupError(MirrorError):
    """The machine cannot run mirror (no skopeo, too old a skopeo, no AWS region...)."""

    exit_code = Exit.USAGE


class AuthError(MirrorError):
    """Credentials refused (wrong Docker Hub password, no AWS credentials...): fix the setup."""

    exit_code = Exit.USAGE


class RegistryError(MirrorError):
    """A registry answered with an error, or could not be reached.

    `transient` errors (5xx, resets, timeouts) are worth retrying; others are not.
    """

    def __init__(self, message: str, *, status: int | None = None, transient: bool = False):
        super().__init__(message)
        self.status = status
        self.transient = transient


class Later(MirrorError):
    """Not now, and nobody's fault: the work waits for a later run (exit 75). A spent pull
    budget (the message names it), or a source's 429 (RateLimited)."""

    exit_code = Exit.TRY_LATER

    @property
    def why(self) -> str:
        """Why the work is deferred, as its outcome says it: ends with what to do."""
        return str(self)


class RateLimited(RegistryError, Later):
    """A source registry answered 429 TOOMANYREQUESTS: stop pulling from it, run again later."""

    exit_code = Exit.TRY_LATER

    def __init__(
        self, host: str = "", message: str = "pull rate limit reached (429 TOOMANYREQUESTS)"
    ):
        super().__init__(f"{host}: {message}" if host else message, status=429)
        self.host = host

    @property
    def why(self) -> str:
        return f"{self}; run again later"


class Unreadable(RegistryError):
    """An answer that cannot be read: not JSON, or nested too deeply."""


class Stopped(RegistryError):
    """mirror is stopping (SIGINT or SIGTERM): the request was not made or was cut off."""

    def __init__(self) -> None:
        super().__init__("mirror is stopping")


class CopyError(MirrorError):
    """skopeo failed to copy one image."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool = False,
        throttled: bool = False,
        host: str = "",
    ):
        super().__init__(message)
        self.transient = transient or throttled
        self.throttled = throttled  # a destination's 429: back-pressure, worth another try
        self.host = host  # the registry that answered 429, when skopeo named it


class Unmirrorable(MirrorError):
    """The source image is of a kind no copy can keep whole with its digest (a schema 1
    manifest, a Docker v2 manifest with zstd layers): refused without a retry. The run
    remembers it by the source digest, so later runs spend no pull on it until it changes."""


SCHEMA1_REFUSAL = (
    "a Docker schema 1 image (the format of Docker 1.9 and older, deprecated): its signed "
    "manifest names its own repository and tag, so no copy into another repository can keep "
    "its digest, and mirror does not copy it; ask its publisher for a schema 2 or OCI image"
)


class NotVerified(MirrorError):
    """The verify gate refused an image: no signature of its own digest verifies under its
    policy (the message gives the verdict: no signature, untrusted key, another digest...)."""


class NestedIndex(CopyError):
    """skopeo 1.9 met an image index whose entries are indexes, which it cannot copy whole."""


class LockHeld(MirrorError):
    """Another mirror run holds the lock."""

    exit_code = Exit.TRY_LATER


def shortened(text: str, limit: int = 80) -> str:
    """A value as a message shows it: whole when short, else its start and its length."""
    return text if len(text) <= limit else f"{text[:40]}... ({len(text)} characters)"


QUOTED = 500  # characters: the most of a text from outside (a registry, skopeo, a file) quoted;
# ECR's longest message (the images-per-repository quota, naming a 256-character repository) fits
_SCANNED = 1 << 16  # characters of such a text looked at before it is cut to QUOTED


def quoted(text: str, limit: int = QUOTED) -> str:
    """Text from outside, as a message may quote it: secrets hidden (`hide_passwords`), then
    cut to `limit` characters with its length said. Linear in `text`; whatever its size, the
    result is short, so no later step (a line, the report, JUnit) does much work on it."""
    size = len(text)
    shown = hide_passwords(text[: max(limit, _SCANNED)])
    if size <= limit and len(shown) <= limit:
        return shown
    return f"{shown[:limit]}... ({size:,} characters)"


class _Secrets:
    """Every secret this process holds, in each form it sends one (plain, `user:password`,
    base64 of it, a bearer token), so that none is printed or stored even when a registry or
    proxy quotes the request back."""

    SHORTEST = 4  # a shorter value would hide ordinary words; no real password is that short

    def __init__(self) -> None:
        self._forms: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def remember(self, *values: str) -> None:
        forms = set()
        for value in values:
            if len(value) >= self.SHORTEST:
                forms |= {value, json.dumps(value)[1:-1]}  # as written, and inside JSON
        with self._lock:
            known = set(self._forms)
            if not forms <= known:  # longest first: a secret inside another is hidden whole
                self._forms = tuple(sorted(known | forms, key=len, reverse=True))

    def hide(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, "***")
        return text


_SECRETS = _Secrets()


def remember_secret(*values: str) -> None:
    """Hide `values` (a password, a token, `base64(user:password)`) from every message,
    line, report and JUnit file from now on (`hide_passwords`)."""
    _SECRETS.remember(*values)


def remember_login(username: str, password: str) -> None:
    """Hide a login in every form it is sent: the password, `user:password`, and its
    base64 (an `Authorization: Basic` value, an auth file's `auth`)."""
    pair = f"{username}:{password}"
    remember_secret(password, pair, base64.b64encode(pair.encode()).decode())


def hide_passwords(text: str) -> str:
    """`text` with the password of every `scheme://user:password@host` replaced by `***`
    (a proxy URL quoted by a library's error, say), and every secret mirror holds
    (`remember_secret`) replaced by `***`: no message ever shows one. Linear in `text`."""
    return _SECRETS.hide(_hide_userinfo(text))


def _hide_userinfo(text: str) -> str:
    """`://user:password@` -> `://user:***@`, by a scan from each `://` (no regular expression
    whose time could grow with the square of the text)."""
    pieces: list[str] = []
    done = 0
    at = text.find("://")
    while at >= 0:
        start = at + 3
        run = _AUTHORITY.match(text, start)
        end = run.end() if run else start
        authority = text[start:end]
        if end < len(text) and text[end] == "@" and ":" in authority:
            user = authority.partition(":")[0]
            pieces += (text[done:start], user, ":***")
            done = end
        at = text.find("://", max(end - 1, start))  # the run may end on the next one's ":"
    pieces.append(text[done:])
    return "".join(pieces)


_AUTHORITY = re.compile(r"[^/@\s]*")  # one run from a given place: linear


def user_named(uid: int | None) -> str:
    """`user nobody (uid 65534)`, for messages about files and processes of other users."""
    if uid is None:
        return "an unknown user"
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


BUG = "internal error (a bug in mirror)"


def bug_message(bug: BaseException) -> str:
    """The message of an error mirror itself made (a bug): for an image, the run (exit 70)."""
    return f"{BUG}: {type(bug).__name__}: {bug} (run with -v for the traceback)"
