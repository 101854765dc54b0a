"""One run at a time per config: an exclusive, non-blocking flock on a lock file.

The lock file's content is written once, when mirror creates it (whole, by linking a finished
file into place), and never again: the holder's PID is read from the kernel (/proc/locks), not
from the file. An existing file that is not a mirror lock file is refused, never truncated, so
a `--lock-file` that names the config by mistake costs nothing. An empty file is taken as it
is (`install -m 0644 /dev/null sync.lock` makes a good lock); so is the PID-only content
that mirror wrote before it kept lock files whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mirror.errors import ConfigError, LockHeld

MARK = b"mirror lock file: held with flock(2) while a mirror run syncs; safe to delete\n"
_LEGACY = re.compile(rb"\d*\n?\Z")  # what mirror wrote before it kept lock files whole: its PID


def default_path(config_path: Path) -> Path:
    """A lock per config file: <tmp>/mirror-<hash of its absolute path>.lock."""
    digest = hashlib.sha256(str(config_path.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"mirror-{digest}.lock"


@contextlib.contextmanager
def held(path: Path, *, option: str = "--lock-file") -> Iterator[None]:
    """Hold the lock for the block. Raises LockHeld (exit 75) at once, naming the holder's
    PID, when another run holds it; ConfigError (exit 2) when the path cannot be a lock."""
    descriptor = _open(path, option)
    try:
        _check_content(descriptor, path, option)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = holder_pid(descriptor)
            who = f"PID {holder}" if holder else "another process"
            raise LockHeld(f"another mirror run ({who}) holds {path}; try again later") from None
        yield
    finally:
        os.close(descriptor)


def _open(path: Path, option: str) -> int:
    for _ in range(3):
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO: no wait
        except FileNotFoundError:
            _create(path, option)
        except OSError as error:
            raise ConfigError(f"{option} {path}: cannot open: {error.strerror}") from None
    raise ConfigError(f"{option} {path}: keeps disappearing")


def _create(path: Path, option: str) -> None:
    """Put a finished lock file in place, or leave one another run just made."""
    if not path.parent.is_dir():
        raise ConfigError(f"{option} {path}: directory {path.parent} does not exist")
    try:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as error:
        raise ConfigError(f"{option} {path}: cannot create it: {error.strerror}") from None
    try:
        os.write(descriptor, MARK)
        os.fchmod(descriptor, 0o644)
        os.close(descriptor)
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    except OSError as error:
        raise ConfigError(f"{option} {path}: cannot create it: {error.strerror}") from None
    finally:
        Path(temporary).unlink(missing_ok=True)


def _check_content(descriptor: int, path: Path, option: str) -> None:
    mode = os.fstat(descriptor).st_mode
    if stat.S_ISDIR(mode):
        raise ConfigError(f"{option} {path}: is a directory; name a file in it")
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{option} {path}: not a regular file")
    content = os.pread(descriptor, len(MARK) + 1, 0)
    if content != MARK and not _LEGACY.match(content):
        raise ConfigError(
            f"{option} {path}: exists and is not a mirror lock file; name another path "
            "(mirror never writes into a file it did not create)"
        )


def holder_pid(descriptor: int) -> int | None:
    """The PID holding a flock on the open file, from /proc/locks (None when unknown)."""
    info = os.fstat(descriptor)
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            lines = locks.read().splitlines()
    except OSError:
        return None
    holders = {}  # where -> pid, for the flocks held (not waited for)
    for line in lines:
        fields = line.split()
        if "->" not in fields and len(fields) >= 6 and fields[1] == "FLOCK":
            holders[fields[5]] = fields[4]
    pid = holders.get(device) or next(
        (pid for where, pid in holders.items() if where.endswith(f":{info.st_ino}")), None
    )
    return int(pid) if pid and pid.isascii() and pid.isdecimal() else None
