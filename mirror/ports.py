"""What the steps ask of the outside world and of each other, as protocols.

The steps (plan, check, schedule, transfer, and ensure's stale-if-error) import only these, the
values (model.py, oci.py) and the errors; connect.py hands them the real things, unit tests
hand them fakes. Each protocol has one implementation in mirror/:

| protocol | implemented by | asked by |
| --- | --- | --- |
| `Source` | registry.Registry, metered by schedule.Metered | pulls, relay, the run |
| `Registry` | registry.Registry (a target's) | check, transfer, stale |
| `Target` | connect.EcrTarget (ECR's API and registry) | check, transfer |
| `Manifests` | pulls.Pulls (every source manifest GET, once per run) | check, schedule, transfer |
| `Copier` | connect.Copier (skopeo, reading through relay.Relay) | transfer |
| `Limits` | schedule.Ledger (the pull budgets, read only) | check, transfer |
| `Pacing` | schedule.Backpressure (copies at once while ECR throttles) | transfer |
| `Holdings` | transfer.Holdings (where each image already is) | schedule |
| `Refusals` | state.Refusals (images refused by earlier runs) | check, transfer |
| `Sink` | console.Console | pipeline |
| `Promises` | schedule.Ledger (a pull promised before a GET, given back after) | attach |
| `Storage`, `Destination` | registry.Registry, connect.EcrTarget (referrers, blobs too) | attach |
| `Looks` | state.Looks (when each image's referrers were last looked for) | pipeline |
| `Verifier` | attach.Gate (the verify gate) | transfer |
| `Reuse` | mounts.Mounts (layers mounted across repositories) | transfer |
| `Mountable` | connect.EcrTarget (its registry mounts, its repositories' encryption) | mounts |
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from threading import Event
from typing import Any, Protocol

from mirror.model import Attached, Copied, Outcome, Pending, Place, Progress, Refusal
from mirror.oci import Descriptor, Manifest, TagList
from mirror.reference import Repository
from mirror.referrers import Listing


class Stream(Protocol):
    """A body still on the wire (http.Body): read in pieces, then closed."""

    def pieces(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class Answer(Protocol):
    """A registry's answer to a blob request (http.Response); a 200's body is a Stream."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def body(self) -> Stream | None: ...


class Source(Protocol):
    """A source registry, as the run reads it: manifests (a GET is a pull on Docker Hub, a
    HEAD is not), blobs, tags and the login."""

    @property
    def host(self) -> str: ...

    def head_manifest(self, path: str, reference: str) -> Descriptor: ...

    def describe_manifest(self, path: str, reference: str, *, get: bool = True) -> Descriptor:
        """A HEAD (a 405 is found, with no digest); with `get`, a GET (read_manifest) when
        the HEAD tells no digest (a pull)."""

    def read_manifest(self, path: str, reference: str) -> Descriptor:
        """A manifest GET, described: its digest is its body's sha256 (a pull)."""

    def pull_manifest(self, path: str, reference: str) -> Manifest | None: ...

    def blob(self, path: str, digest: str) -> AbstractContextManager[Answer]:
        """A blob's answer, its body still on the wire (closed on leaving)."""

    def head_blob(self, path: str, digest: str) -> Answer: ...

    def list_tags(self, path: str) -> TagList: ...

    def check_login(self, path: str) -> None: ...

    def list_referrers(self, path: str, digest: str) -> Listing | None:
        """The referrers API's listing of `digest`'s referrers; None without the API."""


class Registry(Protocol):
    """A target's registry API (ECR's): what the checks and the copies read and write there."""

    @property
    def host(self) -> str: ...

    @property
    def tls_verify(self) -> bool: ...

    def head_manifest(self, path: str, reference: str) -> Descriptor: ...

    def describe_manifest(self, path: str, reference: str, *, get: bool = True) -> Descriptor: ...

    def get_manifest(self, path: str, reference: str) -> dict[str, Any] | None: ...

    def pull_manifest(self, path: str, reference: str) -> Manifest | None: ...

    def put_manifest(self, path: str, reference: str, body: bytes, media_type: str) -> str: ...

    def get_blob(self, path: str, digest: str) -> bytes | None: ...


class Reader(Protocol):
    """What reading a copy's age needs of a target's registry (ensure's stale-if-error)."""

    def get_manifest(self, path: str, reference: str) -> dict[str, Any] | None: ...

    def get_blob(self, path: str, digest: str) -> bytes | None: ...


class Target(Protocol):
    """One ECR registry that receives images: its host, its registry API and its repositories."""

    @property
    def host(self) -> str: ...

    @property
    def registry(self) -> Registry: ...

    def ensure_repository(self, repository: str) -> None:
        """Create the repository before a copy, when mirror creates repositories."""

    def is_immutable(self, repository: str, tag: str) -> bool: ...

    def cannot_write(self, repository: str) -> str | None:
        """Why no copy into the repository can be made (it is missing and mirror may not
        create it), or None."""


class Manifests(Protocol):
    """The source manifests of a run: a HEAD to describe one, and every GET made once and
    kept (a pull on Docker Hub)."""

    def describe(self, host: str, path: str, reference: str, *, get: bool) -> Descriptor:
        """The HEAD; with `get`, a GET when it tells no digest, kept for the copy."""

    def manifest(
        self, host: str, path: str, digest: str, *, deadline: float | None = None
    ) -> Manifest:
        """The manifest by digest, read once per run and checked against it; each read within
        `deadline` seconds when given (else --timeout)."""

    def has(self, host: str, path: str, digest: str) -> bool:
        """Is it read already (reading it again costs no pull)?"""

    def warnings(self) -> list[str]:
        """What the run should hear of the reads (a source that gives no digest on HEAD)."""


class Copier(Protocol):
    """skopeo: copies an image whole, every digest kept."""

    def pull(
        self,
        source: Repository,
        digest: str,
        destination: str,
        *,
        dest_tls_verify: bool,
        deadline: float | None = None,
    ) -> Copied:
        """Copy from a source registry, its manifests read through `Manifests` (once per
        run), each read from it within `deadline` seconds when given (else --timeout)."""

    def copy(
        self, source: str, destination: str, *, src_tls_verify: bool, dest_tls_verify: bool
    ) -> Copied:
        """Copy registry to registry between targets (no pull)."""


class Limits(Protocol):
    """The pull budgets, as the checks and the copies ask them: may this host be pulled from?"""

    def blocked(self, host: str) -> str | None:
        """Why nothing more may come from `host` in this run (None: it may)."""

    def shortfall(self, host: str, pulls: int) -> str | None:
        """Why `pulls` more from `host` cannot be spent now, beside everything promised (None:
        they can)."""

    def extend(self, copy: tuple[object, int], host: str, pulls: int) -> str | None:
        """A running copy (Pending.key) needs `pulls` more from now on: promised in place of
        what it held if they fit beside everyone else's promises, else why not."""


class Pacing(Protocol):
    """How the copies hear of ECR's throttling, and tell of a copy that went well."""

    def throttled(self, host: str) -> None: ...

    def succeeded(self) -> None: ...


class Holdings(Protocol):
    """Where each image already is in the targets (a donor: no pull needed to fill a tag)."""

    def donor(self, pending: Pending) -> Place | None: ...


class Refusals(Protocol):
    """Source images no copy can keep whole, remembered by digest across runs."""

    def why(self, repository: str, digest: str) -> Refusal | None: ...

    def add(self, repository: str, digest: str, reason: str) -> None: ...


class Sink(Protocol):
    """Who hears of a run as it goes (the console)."""

    def settled(self, outcome: Outcome) -> None: ...

    def progress(self, progress: Progress) -> None: ...

    def attached(self, attached: Attached) -> None:
        """What travelled with an image (its referrers), once known."""


class Promises(Protocol):
    """A pull promised from a host's budget before a GET outside the copies, given back once
    the GET is answered (the ledger then has it as spent)."""

    def claim(self, host: str) -> str | None:
        """Promise one pull, or say why it cannot be spent."""

    def unclaim(self, host: str) -> None: ...

    def blocked(self, host: str) -> str | None: ...


class Storage(Registry, Protocol):
    """A target's registry as the referrers' copy also uses it: referrers and blobs."""

    def list_referrers(self, path: str, digest: str) -> Listing | None:
        """The referrers of `digest` there; None when the registry has no referrers API."""

    def has_blob(self, path: str, digest: str) -> bool: ...

    def push_blob(self, path: str, digest: str, pieces: Iterable[bytes], *, size: int) -> None:
        """Upload a blob as it comes, checked against its digest and size."""


class Destination(Target, Protocol):
    """A target whose registry takes referrers too (what the pipeline is handed)."""

    @property
    def registry(self) -> Storage: ...


class Looks(Protocol):
    """When each image's referrers were last looked for (kept between runs), and the
    referrers tag-schema indexes read then, by subject digest."""

    def due(self, key: str) -> bool:
        """Is a look at `key`'s referrers due (never looked, or long enough ago)?"""

    def indexes(self, key: str) -> Mapping[str, str]: ...

    def add(self, key: str, indexes: Mapping[str, str]) -> None: ...


class Verifier(Protocol):
    """The verify gate: does a signature of the image a copy would write verify?"""

    def verify(self, pending: Pending) -> str | None:
        """What vouched for the image (None: no policy); NotVerified or Later otherwise."""


class Reuse(Protocol):
    """Layer reuse before a copy from the source: the blobs another repository of the
    target's registry holds are mounted first, so skopeo finds them and uploads nothing."""

    def around(
        self,
        pending: Pending,
        source: Repository,
        digest: str,
        *,
        deadline: float | None,
        stop: Event,
    ) -> AbstractContextManager[None]:
        """Around one skopeo copy of `source@digest` into the pending copy's repository:
        before it, wait for what copies started earlier are uploading and mount what can be
        mounted; after it, record what the repository now holds (or give up the blobs it was
        to upload, when it fails). Stopped when `stop` is set while waiting."""

    def mounted(self, key: tuple[object, int]) -> int:
        """Bytes mounted so far for the copy `key` (Pending.key)."""


class BlobMounts(Protocol):
    """A registry's blob HEAD and cross-repository mount."""

    def has_blob(self, path: str, digest: str) -> bool: ...

    def mount_blob(self, path: str, digest: str, source: str) -> bool:
        """Mount `digest` from repository `source` into `path`: True when mounted (201),
        False when the registry started an upload instead (202), which is cancelled."""


class Mountable(Protocol):
    """A target as layer reuse sees it: its host, its registry, its repositories'
    encryption (a blob mounts only between repositories of the same encryption)."""

    @property
    def host(self) -> str: ...

    @property
    def registry(self) -> BlobMounts: ...

    def encryption(self, repository: str) -> str:
        """How the repository is encrypted (`AES256`, `KMS <key>`), as ECR says or as mirror
        created it; a text of its own when unknown (never equal to another's)."""
