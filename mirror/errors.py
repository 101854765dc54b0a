"""The exception tree and the exit codes: one place, documented in README and --help."""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class Exit(IntEnum):
    """Process exit codes. README's "Exit codes" table mirrors this."""

    OK = 0  # every image copied or already up to date
    FAILED = 1  # at least one image failed; the others were still done
    USAGE = 2  # bad command line or bad config: nothing was done
    TRY_LATER = 75  # rate limited or another run holds the lock: nothing lost, run again later
    INTERRUPTED = 130  # SIGINT (Ctrl-C)
    TERMINATED = 143  # SIGTERM (cron kill, CodeBuild timeout)


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
    """The source answered 429 TOOMANYREQUESTS: stop pulling, run again later."""

    exit_code = Exit.TRY_LATER

    def __init__(self, message: str = "pull rate limit reached (429 TOOMANYREQUESTS)"):
        super().__init__(message, status=429)


class CopyError(MirrorError):
    """skopeo failed to copy one image."""

    def __init__(self, message: str, *, transient: bool = False, rate_limited: bool = False):
        super().__init__(message)
        self.transient = transient
        self.rate_limited = rate_limited


class LockHeld(MirrorError):
    """Another mirror run holds the lock."""

    exit_code = Exit.TRY_LATER


class Interrupted(MirrorError):
    """SIGINT or SIGTERM arrived: stop starting work, clean up, report."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


def kind(data: Any) -> str:
    """How a wrong config value is named in a message: its value when short, else its type."""
    if isinstance(data, bool):
        return f"{str(data).lower()} (a boolean)"
    if isinstance(data, (int, float)):
        return f"{data!r} (a number)"
    if isinstance(data, str):
        return repr(data)
    names = {type(None): "nothing", list: "a list", dict: "a mapping"}
    return names.get(type(data), type(data).__name__)
