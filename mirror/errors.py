"""The exception tree and the exit codes: one table, shown by --help and checked against README."""

from __future__ import annotations

import re
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
        "at least one image failed; the others were still done (`repos`: differences remain)",
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
        "always), or another run holds the lock",
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


class RateLimited(RegistryError):
    """A source registry answered 429 TOOMANYREQUESTS: stop pulling from it, run again later."""

    exit_code = Exit.TRY_LATER

    def __init__(
        self, host: str = "", message: str = "pull rate limit reached (429 TOOMANYREQUESTS)"
    ):
        super().__init__(f"{host}: {message}" if host else message, status=429)
        self.host = host


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
        rate_limited: bool = False,
        throttled: bool = False,
        host: str = "",
    ):
        super().__init__(message)
        self.transient = transient or throttled
        self.rate_limited = rate_limited  # a source's 429: stop pulling from it
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


class NestedIndex(CopyError):
    """skopeo 1.9 met an image index whose entries are indexes, which it cannot copy whole."""


def run_again_later(error: BaseException) -> str:
    """Why work is deferred after a source's 429: its message, and what to do."""
    return f"{error}; run again later"


class LockHeld(MirrorError):
    """Another mirror run holds the lock."""

    exit_code = Exit.TRY_LATER


def shortened(text: str, limit: int = 80) -> str:
    """A value as a message shows it: whole when short, else its start and its length."""
    return text if len(text) <= limit else f"{text[:40]}... ({len(text)} characters)"


_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):[^/\s@]*@")


def hide_passwords(text: str) -> str:
    """`text` with the password of every `scheme://user:password@host` replaced by `***`
    (a proxy URL quoted by a library's error, say): no message ever shows one."""
    return _USERINFO.sub(r"\1:***@", text)


BUG = "internal error (a bug in mirror)"


def bug_message(bug: BaseException) -> str:
    """The message of an error mirror itself made (a bug): for an image, the run (exit 70)."""
    return f"{BUG}: {type(bug).__name__}: {bug} (run with -v for the traceback)"
