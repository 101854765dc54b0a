"""One run at a time per config: an exclusive, non-blocking flock on a file holding the PID."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mirror.errors import LockHeld


def default_path(config_path: Path) -> Path:
    """A lock per config file: <tmp>/mirror-<hash of its absolute path>.lock."""
    digest = hashlib.sha256(str(config_path.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"mirror-{digest}.lock"


@contextlib.contextmanager
def held(path: Path) -> Iterator[None]:
    """Hold the lock for the block, or raise LockHeld at once naming the holder's PID.

    The file is opened without truncating, so a refused second run disturbs nothing; the
    kernel drops the lock when the holder exits, however it exits.
    """
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise LockHeld(f"cannot open lock file {path}: {error.strerror}") from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
            raise LockHeld(
                f"another mirror run (PID {holder}) holds {path}; try again later"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(descriptor)
