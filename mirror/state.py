"""What mirror remembers between runs on a machine: source images it refused, by digest, and
when it last looked for each image's referrers (`Looks`).

Some images cannot be copied whole with their digest (a Docker v2 manifest with zstd layers
is only found out by reading it: a pull). Once refused, an image is remembered by its source
repository and digest, with the skopeo version that refused it, so later runs refuse it from
a free HEAD and spend no pull on it until the source changes (a new digest is tried again) or
skopeo does (another version may copy it).

The memory is a small JSON file, `$XDG_STATE_HOME/mirror/refused.json` (default
`~/.local/state/mirror/`), per user: the XDG base directory for state that outlives a run.
ECR has no place for a note about an image it does not hold (short of writing into the
user's repositories), and a failure must write nothing there. Losing the file costs one pull
per refused image to learn it again; a CodeBuild project keeps it with `cache: paths`. A file
that cannot be read or written is a warning, never a failed run.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path

from mirror.model import Refusal

FILE = "refused.json"
VERSION = 1
MAX_ENTRIES = 1000  # the oldest are forgotten first: a forgotten one costs one pull once


def state_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """`$XDG_STATE_HOME/mirror`, else `~/.local/state/mirror`; None without a home."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or ""
    if base and os.path.isabs(base):
        return Path(base) / "mirror"
    home = env.get("HOME") or ""
    return Path(home) / ".local" / "state" / "mirror" if os.path.isabs(home) else None


def refusals_path(environ: Mapping[str, str] | None = None) -> Path | None:
    directory = state_dir(environ)
    return None if directory is None else directory / FILE


class Refusals:
    """Source images refused by digest. Thread-safe; `save()` writes what was added."""

    def __init__(
        self,
        path: Path | None,
        entries: dict[str, Refusal] | None = None,
        *,
        tool: str | None = None,
    ):
        self.path = path
        self.tool = tool  # this run's skopeo; None (a dry run): any refusal counts
        self._entries = dict(entries or {})
        self._changed = False
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path | None, *, tool: str | None = None) -> tuple[Refusals, str | None]:
        """The remembered refusals, and a warning when the file cannot be read (then none)."""
        if path is None:
            return cls(None, tool=tool), None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entries = {
                key: Refusal(str(value["reason"]), str(value["seen"]), str(value.get("tool", "")))
                for key, value in data["refused"].items()
            }
        except FileNotFoundError:
            return cls(path, tool=tool), None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            why = error.strerror if isinstance(error, OSError) else "not a mirror state file"
            warning = f"cannot read {path} ({why}): refused images are tried again"
            return cls(path, tool=tool), warning
        return cls(path, entries, tool=tool), None

    def why(self, repository: str, digest: str) -> Refusal | None:
        """Why an earlier run refused this image, if one did with this run's skopeo."""
        with self._lock:
            refusal = self._entries.get(_key(repository, digest))
        if refusal is None or (self.tool is not None and refusal.tool != self.tool):
            return None
        return refusal

    def add(self, repository: str, digest: str, reason: str) -> None:
        seen = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        with self._lock:
            self._entries[_key(repository, digest)] = Refusal(reason, seen, self.tool or "")
            self._changed = True

    def save(self) -> str | None:
        """Write the file if anything was added (atomically: a reader never sees half of
        it); a warning when it cannot be written, None when done."""
        if self.path is None:
            with self._lock:
                lost = self._changed
            return (
                "neither $XDG_STATE_HOME nor $HOME is set: the images refused in this run are "
                "not remembered and will cost a pull again next run"
                if lost
                else None
            )
        on_disk, _ = Refusals.load(self.path)  # another run may have added some meanwhile
        with self._lock:
            if not self._changed:
                return None
            entries = {**on_disk._entries, **self._entries}
            kept = sorted(entries.items(), key=lambda item: item[1].seen)[-MAX_ENTRIES:]
            document = {
                "version": VERSION,
                "refused": {
                    key: {"reason": r.reason, "seen": r.seen, "tool": r.tool} for key, r in kept
                },
            }
        try:
            _write(self.path, document)
        except OSError as error:
            return (
                f"cannot write {self.path} ({error.strerror or error}): the images refused in "
                "this run will cost a pull again next run"
            )
        with self._lock:
            self._changed = False
        return None


def _key(repository: str, digest: str) -> str:
    return f"{repository}@{digest}"


# --- when each image's referrers were last looked for -----------------------------------------

LOOKS_FILE = "referrers.json"
LOOKS_VERSION = 1
LOOK_AGAIN = timedelta(hours=24)  # an unchanged image's referrers are looked for once a day
MAX_LOOKS = 20_000  # images remembered; the oldest are forgotten first (looked for again)
KEEP_LOOKS = timedelta(days=30)  # a look older than this is forgotten when the file is written


def looks_path(environ: Mapping[str, str] | None = None) -> Path | None:
    directory = state_dir(environ)
    return None if directory is None else directory / LOOKS_FILE


class Looks:
    """When each image's referrers were last looked for, by `key` (a target's host, the
    repository and the image's digest: `host/repository@digest`), and the digest of each
    referrers tag-schema index the source held then, by subject digest (an index that has not
    changed is not read again: reading it is a pull on Docker Hub). Thread-safe; `save()`
    writes what was added, as `Refusals` does, in `referrers.json` beside it.

    An image copied in a run has its referrers looked for then; one that is up to date, at
    most once in LOOK_AGAIN (and at once, whatever the time, with `sync --rescan-referrers`).
    A time in the future (a clock set back) counts as long ago."""

    def __init__(
        self,
        path: Path | None,
        entries: dict[str, tuple[datetime, dict[str, str]]] | None = None,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ):
        self.path = path
        self.now = now
        self._entries = dict(entries or {})
        self._changed: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path | None) -> tuple[Looks, str | None]:
        """The looks remembered, and a warning when the file cannot be read (then none:
        every image's referrers are looked for in this run, which may cost pulls)."""
        if path is None:
            return cls(None), None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entries = {
                str(key): (
                    _utc(str(value["at"])),
                    {str(s): str(d) for s, d in value["indexes"].items()},
                )
                for key, value in data["looked"].items()
            }
        except FileNotFoundError:
            return cls(path), None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            why = error.strerror if isinstance(error, OSError) else "not a mirror state file"
            warning = (
                f"cannot read {path} ({why}): the referrers of every image are looked for "
                "again in this run"
            )
            return cls(path), warning
        return cls(path, entries), None

    def due(self, key: str) -> bool:
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return True
        elapsed = self.now() - entry[0]
        return not timedelta(0) <= elapsed < LOOK_AGAIN

    def indexes(self, key: str) -> dict[str, str]:
        with self._lock:
            entry = self._entries.get(key)
        return dict(entry[1]) if entry else {}

    def add(self, key: str, indexes: Mapping[str, str]) -> None:
        """A look at `key`'s referrers done whole now, with the tag-schema indexes it read."""
        with self._lock:
            self._entries[key] = (self.now(), dict(indexes))
            self._changed.add(key)

    def save(self) -> str | None:
        """Write the file if anything was added (atomically); a warning when it cannot be."""
        with self._lock:
            changed = set(self._changed)
        if not changed:
            return None
        if self.path is None:
            return (
                "neither $XDG_STATE_HOME nor $HOME is set: when the referrers were looked for "
                "is not remembered, and the next run looks for them again"
            )
        on_disk, _ = Looks.load(self.path)  # another run may have added some meanwhile
        with self._lock:
            entries = {**on_disk._entries, **{key: self._entries[key] for key in changed}}
        since = self.now() - KEEP_LOOKS  # digests no longer mirrored stop weighing on every run
        recent = [item for item in entries.items() if item[1][0] >= since]
        kept = sorted(recent, key=lambda item: item[1][0])[-MAX_LOOKS:]
        document = {
            "version": LOOKS_VERSION,
            "looked": {key: {"at": _text(at), "indexes": indexes} for key, (at, indexes) in kept},
        }
        try:
            _write(self.path, document)
        except OSError as error:
            return (
                f"cannot write {self.path} ({error.strerror or error}): the next run looks for "
                "the referrers of the images of this one again"
            )
        with self._lock:
            self._changed -= changed
        return None


def _write(path: Path, document: object) -> None:
    """Replace `path` with `document` as JSON, atomically (a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=1, sort_keys=True)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _text(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_UTC_TEXT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z")


def _utc(text: str) -> datetime:
    """`_text`'s form back (ValueError for any other): fromisoformat, as strptime costs
    50 us a call, which a file of 20,000 looks read at every start adds up."""
    if not _UTC_TEXT.match(text):
        raise ValueError(f"not a UTC time: {text!r}")
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=timezone.utc)
