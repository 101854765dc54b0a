"""One run at a time per config: an exclusive, non-blocking flock on a lock file.

The lock file's content is written once, when mirror creates it (whole, by linking a finished
file into place), and never again: the holder's PID is read from the kernel (/proc/locks), not
from the file. An existing file that is not a mirror lock file is refused, never truncated, so
a `--lock-file` that names the config by mistake costs nothing. An empty file is taken as it
is (`install -m 0644 /dev/null sync.lock` makes a good lock); so is the PID-only content
that mirror wrote before it kept lock files whole.

The default lock lives in a directory only the run's user can enter (<tmp>/mirror-locks-<uid>,
created 0700; its owner and mode are checked and a symbolic link is refused), so another user
on the host can neither create the lock first nor hold it. A lock held by a process that is
not a mirror run (a neighbour's `flock` on a lock file others can read) is not "another mirror
run, try later" (exit 75, which would defer every run in silence) but a setup error (exit 2).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from mirror.errors import ConfigError, LockHeld, MirrorError, quoted, user_named

MARK = b"mirror lock file: held with flock(2) while a mirror run syncs; safe to delete\n"
_LEGACY = re.compile(rb"\d*\n?\Z")  # what mirror wrote before it kept lock files whole: its PID


DEFAULT_OPTION = "lock file (by default in $TMPDIR, else /tmp; --lock-file names another)"


def temporary_directory(environ: Mapping[str, str] | None = None) -> Path:
    """Where mirror and skopeo keep temporary files: $TMPDIR, else /tmp, as Go's os.TempDir
    (skopeo's) chooses. Not Python's tempfile.gettempdir(), which passes over an unusable one
    silently, down to the current directory."""
    return Path((os.environ if environ is None else environ).get("TMPDIR") or "/tmp")


def default_path(config_path: Path) -> Path:
    """A lock per config file, in the user's private lock directory (made, and checked,
    here): <tmp>/mirror-locks-<uid>/mirror-<hash of the config's absolute path>.lock.
    ConfigError when that directory is not the user's alone."""
    digest = hashlib.sha256(str(config_path.resolve()).encode()).hexdigest()[:16]
    return private_directory(temporary_directory()) / f"mirror-{digest}.lock"


def private_directory(parent: Path) -> Path:
    """<parent>/mirror-locks-<uid>: made 0700 if missing; refused (ConfigError naming what to
    do) if it is a symbolic link, not a directory, another user's, or open to others."""
    path = parent / f"mirror-locks-{os.geteuid()}"
    fix = "remove it (or give --lock-file)"
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as error:
        raise ConfigError(
            f"cannot make the lock directory {path}: {error.strerror} (it is in the temporary "
            "directory: set TMPDIR to a writable one, or give --lock-file)"
        ) from None
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        what = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a directory"
        raise ConfigError(f"the lock directory {path} is {what}: {fix}")
    if info.st_uid != os.geteuid():
        raise ConfigError(
            f"the lock directory {path} belongs to {user_named(info.st_uid)}, not to this user: "
            f"another user made it; {fix}"
        )
    if info.st_mode & 0o077:
        raise ConfigError(
            f"the lock directory {path} has mode {info.st_mode & 0o777:04o}: others may enter "
            f"it; `chmod 0700` it, or {fix}"
        )
    return path


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
            raise _held_by(holder_pid(descriptor), path, option) from None
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


def _held_by(holder: int | None, path: Path, option: str) -> MirrorError:
    """LockHeld (exit 75) when a mirror run (or a process not known) holds the lock; else a
    ConfigError (exit 2) naming the process, its user and its command."""
    if holder is None:
        return LockHeld(f"another process holds {path}; try again later")
    command = _command(holder)
    if command is None or holder == os.getpid() or is_mirror(command):
        return LockHeld(f"another mirror run (PID {holder}) holds {path}; try again later")
    shown = quoted(" ".join(command), 80)
    return ConfigError(
        f"{option} {path}: held by PID {holder} ({shown!r}, {user_named(_owner(holder))}), which "
        "is not a mirror run: mirror does not wait on it; find out why it holds the lock, or "
        "name another lock file"
    )


def is_mirror(command: list[str]) -> bool:
    """Is this command line (argv) a mirror run: `mirror sync ...`, `python -m mirror sync`?"""
    named = any(Path(word).name == "mirror" for word in command[:3])
    return named and "sync" in command


def _command(pid: int) -> list[str] | None:
    """The process's argv from /proc (None when it cannot be read: gone, or hidden)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()[:4096]
    except OSError:
        return None
    return [word.decode(errors="replace") for word in raw.split(b"\0") if word] or None


def _owner(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


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
