"""`ensure`'s stale-if-error: ECR's copy is served when the source cannot refresh it.

When ECR holds the tag `ensure` would print and the source cannot give a newer image (its pull
budget is spent, it answered 429, its login is locked out, it answered 5xx or nothing at all,
it cannot be reached, the tag or repository is gone), the build gets ECR's copy: the outcome is
`stale`, with the source's own reason and the copy's age. Only an image ECR lacks (or a pinned
digest it lacks) fails the build. `--refresh` chooses: `always` (never stale, as `sync`),
`if-possible` (the default) or `never` (ECR alone; the source is not asked when ECR has it).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone

from mirror.errors import BUG, MirrorError
from mirror.model import INTERRUPTED, NOT_ASKED, Action, Outcome, Refresh, unrefreshed
from mirror.ports import Reader

log = logging.getLogger("mirror")

_EARLIEST = datetime(1990, 1, 1, tzinfo=timezone.utc)  # before it: no real build time
_TIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:([Zz])|([+-])(\d\d):(\d\d))\Z"
)


def servable(outcome: Outcome) -> bool:
    """Does the target hold a copy that may be served instead of this failed or deferred
    refresh? Not a pin (another digest would not be the pinned image), not after a stop or
    a bug, and only when the target holds something."""
    return (
        serves_instead(outcome.action, outcome.error)
        and outcome.destination_digest is not None
        and outcome.tag is not None
        and "@" not in outcome.source  # a pinned reference: only its digest will do
    )


def serves_instead(action: Action, why: str | None) -> bool:
    """Is this a refresh that failed (or was put off) for the source's sake, so that a copy
    may be served instead? Not a stop, and not a bug in mirror."""
    return (
        action in (Action.FAILED, Action.DEFERRED)
        and why != INTERRUPTED
        and not (why or "").startswith(BUG)
    )


class Serve:
    """Settles each outcome of an `ensure` run by the refresh mode: a refresh that failed where
    the target holds a copy becomes `stale`, and every stale outcome (but --refresh never's)
    says how old the copy is."""

    def __init__(
        self,
        refresh: Refresh,
        readers: Sequence[Reader],
        *,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        vouch: Callable[[Outcome], str | None] = lambda outcome: None,
    ):
        self.refresh = refresh
        self.readers = list(readers)  # one per target
        self.now = now
        # what vouches for the copy a target holds, under the image's verify policy (None:
        # no policy); NotVerified or MirrorError when nothing does: it is not served
        self.vouch = vouch

    def settle(self, outcome: Outcome) -> Outcome:
        if self.refresh is Refresh.ALWAYS:
            return outcome
        if servable(outcome):
            try:
                verified = self.vouch(outcome)
            except MirrorError as error:
                why = f"{outcome.error}; {outcome.destination}'s copy is not served: {error}"
                return replace(outcome, error=why)
            outcome = replace(
                outcome,
                action=Action.STALE,
                error=unrefreshed(outcome.error),
                verified=f"the copy in ECR: {verified}" if verified else outcome.verified,
            )
        if outcome.action is not Action.STALE or outcome.error == NOT_ASKED:
            return outcome
        age = self.age(outcome)
        return replace(outcome, error=f"{outcome.error}; {age}")

    def age(self, outcome: Outcome) -> str:
        """How old the target's copy is, in words; never raises."""
        reader = self.readers[outcome.target] if outcome.target < len(self.readers) else None
        digest = outcome.destination_digest
        if reader is None or digest is None:
            return age_text(None, self.now())
        try:
            built = created(reader, outcome.repository, digest)
        except MirrorError as error:  # the age is a courtesy: never a failure
            log.debug("%s: the age of the copy cannot be read: %s", outcome.destination, error)
            built = None
        return age_text(built, self.now())


def created(reader: Reader, repository: str, digest: str) -> datetime | None:
    """When the image `repository@digest` was built: its image config's `created` (for an
    index, its first platform's). None when the image records none. Reads two or three
    manifests and blobs, all from the target (free). Raises MirrorError when they cannot be
    read."""
    manifest = reader.get_manifest(repository, digest)
    entries = (manifest or {}).get("manifests")
    if isinstance(entries, list):
        child = next((entry for entry in entries if _is_platform(entry)), None)
        if child is None:
            return None
        manifest = reader.get_manifest(repository, str(child["digest"]))
    config = (manifest or {}).get("config")
    config_digest = config.get("digest") if isinstance(config, dict) else None
    if not isinstance(config_digest, str):
        return None
    blob = reader.get_blob(repository, config_digest)
    try:
        document = json.loads(blob or b"{}")
    except (ValueError, RecursionError):
        return None
    value = document.get("created") if isinstance(document, dict) else None
    return parse_time(value) if isinstance(value, str) else None


def _is_platform(entry: object) -> bool:
    """An index entry for a platform, not an attestation (platform unknown/unknown)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
        return False
    platform = entry.get("platform")
    return not (isinstance(platform, dict) and platform.get("os") == "unknown")


def parse_time(text: str) -> datetime | None:
    """An RFC 3339 time as image configs write it (`2024-05-01T10:00:00.123456789Z`), in UTC;
    None when it is not one (Python 3.10's fromisoformat takes neither `Z` nor nanoseconds)."""
    match = _TIME.match(text)
    if not match:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    fraction, zulu, sign, offset_hours, offset_minutes = match.groups()[6:]
    try:
        moment = datetime(
            year, month, day, hour, minute, second, int((fraction or "0")[:6].ljust(6, "0"))
        )
    except ValueError:
        return None
    offset = timedelta(0)
    if not zulu:
        offset = timedelta(hours=int(offset_hours), minutes=int(offset_minutes))
        offset = -offset if sign == "-" else offset
    return (moment - offset).replace(tzinfo=timezone.utc)


def age_text(built: datetime | None, now: datetime) -> str:
    """`ECR's copy was built 3 days ago (2026-05-01T10:00:00Z)`, or why its age is unknown."""
    if built is None:
        return "the age of ECR's copy is unknown (its image records no build time)"
    when = built.strftime("%Y-%m-%dT%H:%M:%SZ")
    if built < _EARLIEST:  # reproducible builds write 1970-01-01 (or Go's year 1)
        return f"the age of ECR's copy is unknown (its image records {when} as its build time)"
    seconds = (now - built).total_seconds()
    if seconds < 0:
        return f"ECR's copy was built {when} (later than this machine's clock)"
    return f"ECR's copy was built {_duration(seconds)} ago ({when})"


def _duration(seconds: float) -> str:
    for unit, size, up_to in (
        ("second", 1, 120),
        ("minute", 60, 120 * 60),
        ("hour", 3600, 48 * 3600),
    ):
        if seconds < up_to:
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    days = int(seconds // 86400)
    return f"{days} days"
