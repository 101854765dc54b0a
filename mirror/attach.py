"""Step 5, attach: what vouches for an image travels with it, and the verify gate before it.

What a publisher attaches to an image digest (mirror/referrers.py has the forms):

- OCI 1.1 referrers (SBOMs, provenance, VEX, sigstore bundles): a manifest whose `subject` is
  the image. At the source they are listed by the referrers API (`Finder`: asked once per host
  and run; a source that answers 404 has none, and its referrers tag schema is read instead:
  the index under its `sha256-<hex>` tag, a pull, unless it is the one read at the last
  look). A `sha256-<hex>` tag that holds the image itself is a pin tag an earlier mirror
  wrote: kept, and never read as an index.
- cosign's tags `sha256-<hex>.sig`, `.att`, `.sbom`.

Which of these tags a repository holds, its tags list tells (read once per repository and run,
free); a HEAD (free) gives the digest of each one there.

`Attach` copies to a target what it lacks (its referrers API, a HEAD per cosign tag), digests
kept: each manifest is read once per run from the source (`pulls.py`: a pull on Docker Hub,
promised from the budget before it is sent: one the budget cannot cover leaves the rest of the
image's referrers deferred to a later run, the image itself stays copied), its blobs streamed
from the source into the target (`registry.push_blob`), then the manifest PUT by digest, and
cosign's under their tag. Not with skopeo: it cannot find referrers (container-libs#221); it
copies one by digest (measured on 1.9.3: an artifact with an empty config and a `subject`, and
a cosign `.sig`, digests kept), but as a process each, through the relay, for a manifest and a
blob or two, and each read must be weighed against the budget first. ECR has the
referrers API, so a manifest with a `subject` is found there; a target without it gets the tag
schema's index, kept up to date (`referrers.tag_schema_index`: other clients' entries kept, a
pin an earlier mirror wrote never overwritten). A listing is what anyone who may push wrote, so
each manifest is checked before it is written: a referrer's `subject` must be the image
(`not_a_referrer`), a cosign tag must hold cosign's manifest (`not_cosigns`), and under a
verify policy a referrer must not be an image (`Attach._runnable`) and a `.sig` the target
holds is replaced only by one the policy trusts (`Attach._untrusted`): nothing reaches the
target past the gate, and the signature that vouched stays.

Which images: every one a run copies, with each platform of an index copied whole (or each
platform of a subset); one that is up to date at most once a day, its own digest only
(`state.Looks`; `sync --rescan-referrers` looks at all, platforms included); a pin only when
copied (or asked). A run with nothing due makes no request for referrers at all.

`Gate` (ports.Verifier) is the verify gate: before a copy from the source writes anything, the
signature material of the image's own digest is read at the source (cosign's `.sig` manifest
and its payloads; sigstore bundles attached as referrers), each manifest a pull as above, and
mirror.signatures judges it against the image's policy.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from mirror.errors import Later, MirrorError, NotVerified, Stopped, bug_message
from mirror.model import (
    INTERRUPTED,
    Action,
    Attached,
    Outcome,
    Pending,
    Referrer,
    ReferrerRule,
    Task,
)
from mirror.oci import INDEX_TYPES, OCI_INDEX, Descriptor, Manifest, TagList, sha256
from mirror.ports import Answer, Destination, Looks, Manifests, Promises, Storage
from mirror.reference import Repository
from mirror.referrers import (
    ContentDescriptor,
    Listing,
    ParsedManifest,
    ReferrersError,
    TagRole,
    cosign_tags,
    keep,
    matches,
    parse_listing,
    parse_manifest,
    subject_of_tag,
    tag_role,
    tag_schema_index,
    tag_schema_name,
)

if TYPE_CHECKING:
    from mirror import signatures  # cryptography: imported when a policy is to be checked

log = logging.getLogger("mirror")

# cosign's tags as artifact types (the media type of their layers), for a config's list and
# the report; a `.sbom` tag's is its SBOM's format, learnt from its manifest.
COSIGN_TYPES = {
    ".sig": "application/vnd.dev.cosign.simplesigning.v1+json",  # signatures.SIMPLE_SIGNING
    ".att": "application/vnd.dsse.envelope.v1+json",
    ".sbom": "",
}
ATTESTATION_ENTRY = "vnd.docker.reference.type"  # BuildKit's attestation manifests in an index
IMAGE_LAYER_TYPES = (  # an image's filesystem layers: never in what cosign attaches
    "application/vnd.oci.image.layer.",
    "application/vnd.docker.image.rootfs.",
)
NO_API_STATUSES = (400, 404, 405, 501)  # a referrers listing answered so: the source has no API


class ReferrerSource(Protocol):
    """A source registry as the referrers are read there (schedule.Metered)."""

    def head_manifest(self, path: str, reference: str) -> Descriptor: ...

    def list_referrers(self, path: str, digest: str) -> Listing | None: ...

    def list_tags(self, path: str) -> TagList: ...

    def blob(self, path: str, digest: str) -> contextlib.AbstractContextManager[Answer]: ...


# --- the source side -------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """What the source holds about one subject digest: its OCI referrers, cosign's tags (tag,
    digest) and, when its tag schema was read, that index's digest (`index`); `unchanged`: the
    index is the one read at the last look, not read again (nothing new in it)."""

    subject: str
    referrers: tuple[ContentDescriptor, ...] = ()
    cosign: tuple[tuple[str, str], ...] = ()
    index: str | None = None
    unchanged: bool = False
    warnings: tuple[str, ...] = ()


class Finder:
    """The source side: what is attached to a subject (each subject looked for once per run),
    its manifests (`manifest`: a pull promised before it is made) and its small blobs.
    Thread-safe."""

    def __init__(
        self,
        *,
        sources: Callable[[str], ReferrerSource],
        pulls: Manifests,
        promises: Promises,
    ):
        self.sources = sources  # metered: every answer goes to the pull budgets
        self.pulls = pulls
        self.promises = promises
        self._found: dict[tuple[str, str, str], Found] = {}
        self._locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._no_api: set[str] = set()  # hosts whose referrers API answered 404
        self._tags: dict[tuple[str, str], frozenset[str] | None] = {}  # referrer-shaped tags
        self._lock = threading.Lock()

    def find(
        self, repository: Repository, subject: str, *, known_index: str | None = None
    ) -> Found:
        """What `repository` holds about `subject`; `known_index`: the tag-schema index read
        at the last look (not read again if the source still holds it). Later when the
        budget cannot cover a read (or the source answered 429); MirrorError otherwise."""
        key = (repository.registry, repository.path, subject)
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                found = self._found.get(key)
            if found is None:
                found = self._look(repository, subject, known_index)
                with self._lock:
                    self._found[key] = found
            return found

    def manifest(self, repository: Repository, digest: str) -> Manifest:
        """A manifest by digest, read once per run (a pull, promised before it is made)."""
        host, path = repository.registry, repository.path
        if self.pulls.has(host, path, digest):
            return self.pulls.manifest(host, path, digest)
        with self._promised(host):
            return self.pulls.manifest(host, path, digest)

    def small_blob(self, repository: Repository, digest: str, limit: int) -> bytes | None:
        """A blob's first `limit + 1` bytes at most (more tells it is too large), or None when
        the source has none. Blobs cost no pull."""
        with self.sources(repository.registry).blob(repository.path, digest) as answer:
            if answer.status == 404:
                return None
            if answer.status != 200 or answer.body is None:
                raise MirrorError(
                    f"{repository}@{digest}: the source answered HTTP {answer.status} for a blob"
                )
            data = bytearray()
            for piece in answer.body.pieces():
                data += piece
                if len(data) > limit:
                    break
            return bytes(data[: limit + 1])

    def _look(self, repository: Repository, subject: str, known_index: str | None) -> Found:
        host, path = repository.registry, repository.path
        blocked = self.promises.blocked(host)
        if blocked:
            raise Later(blocked)
        listing = self._listing(host, path, subject)
        index, unchanged, warnings = None, False, []
        if listing is None:
            listing, index, unchanged = self._tag_schema(repository, subject, known_index)
        if listing.warning:
            warnings.append(listing.warning)
        if listing.passed_over:
            warnings.append(
                f"{repository}@{subject}: {listing.passed_over} referrers entries that are not "
                "descriptors passed over"
            )
        cosign = []
        for tag in cosign_tags(subject):
            if not self._may_hold(repository, tag):
                continue
            head = self._describe(repository, tag)
            if head.found and head.digest:
                cosign.append((tag, head.digest))
        return Found(subject, listing.referrers, tuple(cosign), index, unchanged, tuple(warnings))

    def _may_hold(self, repository: Repository, tag: str) -> bool:
        """Might the source hold `tag` (a cosign or tag-schema tag)? Its tags list, read once
        per repository and run (free, and a request or a few where a HEAD per tag and digest
        would be four per image and platform), says; when the list cannot be read whole, a
        HEAD will."""
        key = (repository.registry, repository.path)
        with self._lock:
            known = key in self._tags
            listed = self._tags.get(key)
        if not known:
            listed = self._referrer_tags(repository)
            with self._lock:
                listed = self._tags.setdefault(key, listed)
        return listed is None or tag in listed

    def _referrer_tags(self, repository: Repository) -> frozenset[str] | None:
        try:
            tags = self.sources(repository.registry).list_tags(repository.path)
        except Later:
            raise
        except MirrorError as error:  # a HEAD per tag then
            log.debug("%s: its tags list cannot be read (%s): HEADs instead", repository, error)
            return None
        if tags.warning:  # cut short: a tag missing from it may be there
            return None
        return frozenset(tag for tag in tags.tags if subject_of_tag(tag) is not None)

    def _listing(self, host: str, path: str, subject: str) -> Listing | None:
        with self._lock:
            if host in self._no_api:
                return None
        try:  # not promised a pull: a source past its budget that counts it answers 429
            listing = self.sources(host).list_referrers(path, subject)
        except MirrorError as error:
            if getattr(error, "status", None) not in NO_API_STATUSES:
                raise
            listing = None
        if listing is None:
            with self._lock:
                self._no_api.add(host)
            log.debug("%s: no referrers API: its referrers tag schema is read instead", host)
        return listing

    def _tag_schema(
        self, repository: Repository, subject: str, known_index: str | None
    ) -> tuple[Listing, str | None, bool]:
        """The tag schema's index of `subject` (a free HEAD, then a pull), its digest, and
        whether it is `known_index` (then not read: nothing in it is new)."""
        tag = tag_schema_name(subject)
        if not self._may_hold(repository, tag):
            return Listing(), None, False
        head = self._describe(repository, tag)
        if not head.found or not head.digest:
            return Listing(), None, False
        if tag_role(tag, head.digest) is TagRole.LEGACY_PIN:
            log.debug("%s:%s is a pin tag an earlier mirror wrote, not an index", repository, tag)
            return Listing(), None, False
        if head.digest == known_index:
            return Listing(), head.digest, True
        manifest = self.manifest(repository, head.digest)
        try:
            listing = parse_listing(manifest.body, where=f"{repository}:{tag}")
        except ReferrersError as error:
            return Listing(warning=str(error)), None, False
        return listing, head.digest, False

    def _describe(self, repository: Repository, tag: str) -> Descriptor:
        """A tag's HEAD (free); from a registry that gives no digest on HEAD (or answers it
        405), a GET, a pull promised from the budget: Later when it cannot be."""
        host, path = repository.registry, repository.path
        head = self.pulls.describe(host, path, tag, get=True)
        if head.found and not head.digest:
            raise Later(
                self.promises.blocked(host)
                or f"{host}: reading {repository}:{tag} is a pull (the source gives no digest "
                "on HEAD), and the pull budget has none left for it; run again later"
            )
        return head

    @contextlib.contextmanager
    def _promised(self, host: str) -> Iterator[None]:
        """One pull promised from `host`'s budget for the request made inside (Later when it
        cannot be), given back once it is answered (the ledger has it then, when spent)."""
        why = self.promises.claim(host)
        if why:
            raise Later(why)
        try:
            yield
        finally:
            self.promises.unclaim(host)


# --- the verify gate -------------------------------------------------------------------------


class Gate:
    """The verify gate (ports.Verifier): a copy from the source is made only when a signature
    of the image's own digest verifies under its task's policy. The material is read at the
    source before anything is written; each image's verdict is kept for the run."""

    def __init__(self, finder: Finder):
        self.finder = finder
        self._verdicts: dict[tuple[str, str, int], signatures.Verdict] = {}
        self._lock = threading.Lock()

    def verify(self, pending: Pending) -> str | None:
        """What vouched (`key cosign.pub (sha256:…) (sha256-….sig layer 1)`), or None when
        the task has no policy. NotVerified naming why not; Later when the budget cannot
        cover the reads; MirrorError when the source cannot be read."""
        policy = pending.task.verify
        if policy is None:
            return None
        return self.verify_at(
            pending.task.source.repository, pending.source_digest, policy, str(pending.task.source)
        )

    def verify_at(
        self, repository: Repository, digest: str, policy: signatures.Policy, name: str
    ) -> str:
        """What vouched for `repository@digest` under `policy`, from what `repository` holds
        (`name` names the image in NotVerified's message)."""
        from mirror import signatures  # noqa: PLC0415 - cryptography, only with a policy

        key = (str(repository), digest, id(policy))
        with self._lock:
            verdict = self._verdicts.get(key)
        if verdict is None:
            material = self._material(repository, digest, policy)
            verdict = signatures.verify(digest, material, policy)
            with self._lock:
                self._verdicts[key] = verdict
        if not verdict.verified:
            raise NotVerified(f"{name}: {verdict}")
        return f"{verdict.by} ({verdict.source})"

    def _material(
        self, repository: Repository, digest: str, policy: signatures.Policy
    ) -> list[signatures.Material]:
        from mirror import signatures  # noqa: PLC0415 - cryptography, only with a policy

        found = self.finder.find(repository, digest)
        material: list[signatures.Material] = []
        for tag, sig in found.cosign:
            if tag.endswith(".sig"):
                material += cosign_material(self.finder, repository, tag, sig)
        for referrer in found.referrers:
            if signatures.worth_fetching(referrer, policy):
                material += self._bundles(repository, referrer)
        return material

    def _bundles(
        self, repository: Repository, referrer: ContentDescriptor
    ) -> list[signatures.Material]:
        from mirror import signatures  # noqa: PLC0415 - cryptography, only with a policy

        source = f"referrer {referrer.digest}"
        manifest = self.finder.manifest(repository, referrer.digest)
        try:
            layers = signatures.bundle_layers(manifest.body, source=source)
        except ReferrersError as error:
            return [signatures.Unreadable(source, str(error))]
        material: list[signatures.Material] = []
        for layer in layers:
            data = self.finder.small_blob(repository, layer.digest, signatures.MAX_BUNDLE_BYTES)
            if data is None:
                material.append(
                    signatures.Unreadable(source, f"its bundle {layer.digest} is missing")
                )
            else:
                material.append(signatures.read_bundle(data, digest=layer.digest, source=source))
        return material


class Unmetered:
    """The promises of a registry that counts no pulls (a target, ECR): always kept."""

    def claim(self, host: str) -> str | None:
        return None

    def unclaim(self, host: str) -> None:
        return None

    def blocked(self, host: str) -> str | None:
        return None


def cosign_material(
    finder: Finder, repository: Repository, tag: str, digest: str
) -> list[signatures.Material]:
    """The signatures of cosign's `.sig` manifest `digest` (under `tag`) at the source: the
    manifest (a pull, once per run) and its payloads (free)."""
    from mirror import signatures  # noqa: PLC0415 - cryptography, only with a policy

    manifest = finder.manifest(repository, digest)
    try:
        layers = signatures.cosign_layers(manifest.body, source=tag)
    except ReferrersError as error:
        return [signatures.Unreadable(tag, str(error))]
    limit = signatures.MAX_PAYLOAD_BYTES
    payloads = {
        layer.digest: data
        for layer in layers
        if (data := finder.small_blob(repository, layer.digest, limit)) is not None
    }
    return list(signatures.read_cosign(manifest.body, payloads, source=tag))


# --- which images, and their referrers copied ------------------------------------------------


@dataclass(frozen=True)
class Lookup:
    """One image whose referrers are looked for in one target: `digest` is what the target
    holds; `whole`: copied whole (its own referrers count, besides its platforms');
    `platforms`: its platforms' too (an index copied in this run, or asked for);
    `remembered`: the indexes read at the last look are not read again (not when asked to
    look again, which also restores what ECR lost)."""

    source: Repository
    rule: ReferrerRule
    target: int
    repository: str
    digest: str
    destination: str  # host/repository@digest
    key: str  # mirror.state.Looks's
    whole: bool = True
    platforms: bool = True
    remembered: bool = True  # may a tag-schema index read at the last look be taken as read?
    keys: tuple[tuple[tuple[int, int], int], ...] = ()
    # the image's verify policy: a cosign .sig the target holds is replaced only by one it trusts
    verify: signatures.Policy | None = field(default=None, compare=False)


def lookups(
    tasks: Sequence[Task],
    outcomes: Sequence[Outcome],
    hosts: Sequence[str],
    looks: Looks,
    *,
    rescan: bool = False,
) -> list[Lookup]:
    """The images whose referrers this run looks for, one per target, repository and digest
    (alias tags share one), in config order: those copied; those up to date when a look is
    due (`looks`: at most once a day; a pin only when copied) or asked (`rescan`)."""
    by_order = {task.order: task for task in tasks}
    found: dict[str, Lookup] = {}
    for outcome in sorted(outcomes, key=lambda o: o.sort_key):
        task = by_order.get(outcome.order)
        if task is None or not task.referrers.enabled or outcome.tag is None:
            continue
        digest = outcome.destination_digest
        if digest is None or outcome.action not in (Action.COPIED, Action.UP_TO_DATE):
            continue
        host = hosts[outcome.target] if outcome.target < len(hosts) else ""
        key = f"{host}/{outcome.repository}@{digest}"
        pinned = task.source.digest is not None
        # a pin written from the copy ECR holds brings nothing new: its referrers came then
        copied = outcome.action is Action.COPIED and (outcome.pulled or not pinned)
        entry = (outcome.order, outcome.target)
        earlier = found.get(key)
        if earlier is not None:  # another tag of the image looked at: one look for both
            found[key] = _joined(earlier, entry, copied)
            continue
        if not (copied or rescan or (not pinned and looks.due(key))):
            continue
        found[key] = Lookup(
            task.source.repository,
            task.referrers,
            outcome.target,
            outcome.repository,
            digest,
            f"{host}/{outcome.repository}@{digest}",
            key,
            whole=not task.platforms,
            platforms=copied or rescan or bool(task.platforms),
            remembered=not rescan,
            keys=(entry,),
            verify=task.verify,
        )
    return list(found.values())


def _joined(earlier: Lookup, entry: tuple[tuple[int, int], int], copied: bool) -> Lookup:
    return Lookup(
        earlier.source,
        earlier.rule,
        earlier.target,
        earlier.repository,
        earlier.digest,
        earlier.destination,
        earlier.key,
        whole=earlier.whole,
        platforms=earlier.platforms or copied,
        remembered=earlier.remembered,
        keys=(*earlier.keys, entry),
        verify=earlier.verify,
    )


@dataclass
class _Tally:
    """What one image's look has done so far."""

    copied: list[Referrer] = field(default_factory=list)
    present: int = 0
    warnings: list[str] = field(default_factory=list)
    indexes: dict[str, str] = field(default_factory=dict)  # subject -> tag-schema index read


@dataclass(frozen=True)
class _AtTarget:
    """What a target holds about a subject: the referrers it lists; without the referrers
    API (`api` False), those of its tag-schema index (`index`: that index's bytes)."""

    digests: frozenset[str] = frozenset()
    api: bool = True
    index: bytes | None = None


class Attach:
    """Copies the referrers of images into their targets (step 5); thread-safe."""

    def __init__(
        self,
        *,
        finder: Finder,
        targets: Sequence[Destination],
        looks: Looks,
        stop: threading.Event,
    ):
        self.finder = finder
        self.targets = list(targets)
        self.looks = looks
        self.stop = stop

    def run(self, lookup: Lookup) -> Attached:
        """The image's referrers looked for and what its target lacks copied. Never raises:
        what the budget or a 429 stops is `deferred`, a fault `failed`, each saying why."""
        tally = _Tally()
        deferred = failed = None
        try:
            self._run(lookup, tally)
        except Stopped:
            deferred = INTERRUPTED
        except Later as error:
            deferred = error.why
        except MirrorError as error:
            failed = str(error) if not self.stop.is_set() else None
            deferred = INTERRUPTED if self.stop.is_set() else None
        except Exception as bug:
            log.debug("attaching to %s", lookup.destination, exc_info=True)
            failed = bug_message(bug)
        if deferred is None and failed is None:
            self.looks.add(lookup.key, tally.indexes)
        return Attached(
            lookup.destination,
            lookup.keys,
            tuple(tally.copied),
            tally.present,
            deferred,
            failed,
            tuple(tally.warnings),
        )

    def _run(self, lookup: Lookup, tally: _Tally) -> None:
        storage = self.targets[lookup.target].registry
        known = self.looks.indexes(lookup.key) if lookup.remembered else {}
        for subject in self._subjects(lookup, storage):
            if self.stop.is_set():
                raise Later(INTERRUPTED)
            found = self.finder.find(lookup.source, subject, known_index=known.get(subject))
            tally.warnings += found.warnings
            if found.index:
                tally.indexes[subject] = found.index
            self._referrers(lookup, storage, found, tally)
            self._cosign(lookup, storage, found, tally)

    def _subjects(self, lookup: Lookup, storage: Storage) -> list[str]:
        """The image's digest (copied whole) and its platforms' (read from the target: free)."""
        subjects = [lookup.digest] if lookup.whole else []
        if not lookup.platforms:
            return subjects
        held = storage.pull_manifest(lookup.repository, lookup.digest)
        if held is None or held.media_type not in INDEX_TYPES:
            return subjects
        index = _parsed(held.body, f"{lookup.destination}: the index", held.media_type)
        return subjects + [
            entry.digest
            for entry in index.manifests
            if entry.media_type not in INDEX_TYPES and entry.annotation(ATTESTATION_ENTRY) is None
        ]

    # OCI 1.1 referrers

    def _referrers(self, lookup: Lookup, storage: Storage, found: Found, tally: _Tally) -> None:
        wanted = keep(found.referrers, lookup.rule.types)
        if not wanted:
            return
        held = self._at_target(storage, lookup.repository, found.subject)
        passed_over: set[str] = set()
        for referrer in wanted:
            if referrer.digest in held.digests:
                tally.present += 1
            elif storage.head_manifest(lookup.repository, referrer.digest).found:
                tally.present += 1  # there, but not listed: the tag-schema index below lists it
            else:
                manifest, parsed = self._fetch(lookup, referrer.digest)
                why = not_a_referrer(parsed, found.subject)
                if not why and lookup.verify is not None:
                    why = self._runnable(lookup, storage, parsed)
                if why:  # copied, it would reach the target past the verify gate
                    passed_over.add(referrer.digest)
                    tally.warnings.append(f"{lookup.source}@{referrer.digest}: {why}, not copied")
                    continue
                self._write(lookup, storage, manifest, parsed)
                tally.copied.append(
                    Referrer(referrer.digest, referrer.artifact_type, found.subject)
                )
        if not held.api:
            wanted = tuple(referrer for referrer in wanted if referrer.digest not in passed_over)
            self._tag_schema(lookup, storage, found.subject, held=held, wanted=wanted, tally=tally)

    def _at_target(self, storage: Storage, repository: str, subject: str) -> _AtTarget:
        listing = storage.list_referrers(repository, subject)
        if listing is not None:
            return _AtTarget(frozenset(entry.digest for entry in listing.referrers))
        index = storage.pull_manifest(repository, tag_schema_name(subject))
        if index is None or sha256(index.body) == subject:
            return _AtTarget(api=False, index=None if index is None else index.body)
        try:
            listed = parse_listing(index.body, where=f"{storage.host}/{repository}")
        except ReferrersError:
            return _AtTarget(api=False, index=index.body)  # tag_schema_index says what it is
        return _AtTarget(frozenset(e.digest for e in listed.referrers), False, index.body)

    def _tag_schema(
        self,
        lookup: Lookup,
        storage: Storage,
        subject: str,
        *,
        held: _AtTarget,
        wanted: Sequence[ContentDescriptor],
        tally: _Tally,
    ) -> None:
        """A target without the referrers API: its tag-schema index lists them all."""
        tag = tag_schema_name(subject)
        where = f"{storage.host}/{lookup.repository}:{tag}"
        try:
            body = tag_schema_index(subject, held.index, wanted, where=where)
        except ReferrersError as error:
            tally.warnings.append(
                f"{error}: the referrers of {subject} cannot be listed there (the registry has "
                "no referrers API)"
            )
            return
        if body is not None:
            storage.put_manifest(lookup.repository, tag, body, OCI_INDEX)

    def _runnable(self, lookup: Lookup, storage: Storage, parsed: ParsedManifest) -> str | None:
        """Why a referrer is an image the verify gate has not judged (image layers, or an
        index that lists such an image the target lacks), or None. Its entries are read from
        the source (pulls the copy would make anyway)."""
        layer = _image_layer(parsed)
        if layer is not None:
            return f"is an image (a layer of type {layer}) that no signature of its own vouches for"
        for entry in parsed.manifests if parsed.is_index else ():
            if storage.head_manifest(lookup.repository, entry.digest).found:
                continue
            layer = _image_layer(self._fetch(lookup, entry.digest)[1])
            if layer is not None:
                return (
                    f"lists the image {entry.digest} (a layer of type {layer}) that no "
                    "signature of its own vouches for"
                )
        return None

    # cosign's tags

    def _cosign(self, lookup: Lookup, storage: Storage, found: Found, tally: _Tally) -> None:
        types = lookup.rule.types
        for tag, digest in found.cosign:
            suffix = tag[tag.rindex(".") :]
            artifact_type = COSIGN_TYPES[suffix]
            if types is not None and artifact_type and not matches(artifact_type, types):
                continue
            head = storage.head_manifest(lookup.repository, tag)
            if head.found and head.digest == digest:
                tally.present += 1
                continue
            if artifact_type:  # known without a pull: an immutable tag spends none
                self._writable(lookup, storage, tag, head, digest)
            manifest, parsed = self._fetch(lookup, digest)
            why = not_cosigns(parsed)
            if why:  # copied, it would reach the target past the verify gate
                tally.warnings.append(f"{lookup.source}:{tag} {why}, not copied")
                continue
            if head.found and (verdict := self._untrusted(lookup, found.subject, tag, digest)):
                tally.warnings.append(
                    f"{lookup.source}:{tag}: {digest} is not copied over the {head.digest} "
                    f"{storage.host} holds: {verdict}"
                )
                continue
            if not artifact_type:  # a .sbom: its format is its layers'
                artifact_type = _sbom_type(parsed)
                if types is not None and not matches(artifact_type, types):
                    continue
                self._writable(lookup, storage, tag, head, digest)
            self._write(lookup, storage, manifest, parsed, tag=tag)
            tally.copied.append(Referrer(digest, artifact_type, found.subject, tag))

    def _untrusted(self, lookup: Lookup, subject: str, tag: str, digest: str) -> str | None:
        """Why the source's `.sig` (`digest`) must not replace the one the target holds (the
        verdict), or None: with a verify policy, it must hold a signature of `subject` the
        policy trusts (the one it would replace vouched for the image; cosign adds to a .sig,
        so a publisher's new one keeps the old signature)."""
        if lookup.verify is None or not tag.endswith(".sig"):
            return None
        from mirror import signatures  # noqa: PLC0415 - cryptography, only with a policy

        material = cosign_material(self.finder, lookup.source, tag, digest)
        verdict = signatures.verify(subject, material, lookup.verify)
        return None if verdict.verified else str(verdict)

    def _writable(
        self, lookup: Lookup, storage: Storage, tag: str, head: Descriptor, digest: str
    ) -> None:
        """MirrorError when the target's `tag` holds something else and is immutable."""
        if head.found and self.targets[lookup.target].is_immutable(lookup.repository, tag):
            raise MirrorError(
                f"{storage.host}/{lookup.repository}:{tag} holds {head.digest} and the tag is "
                f"immutable in {lookup.repository}: cosign's {digest} not written (give the "
                "repository the exclusion filters sha256-* and sha512-*: mirror adds them "
                "to the repositories it creates)"
            )

    # copying a manifest, its blobs first

    def _fetch(self, lookup: Lookup, digest: str) -> tuple[Manifest, ParsedManifest]:
        """A manifest of the source (a pull, once per run), and what it holds."""
        manifest = self.finder.manifest(lookup.source, digest)
        return manifest, _parsed(manifest.body, f"{lookup.source}@{digest}", manifest.media_type)

    def _write(
        self,
        lookup: Lookup,
        storage: Storage,
        manifest: Manifest,
        parsed: ParsedManifest,
        *,
        tag: str | None = None,
        depth: int = 0,
    ) -> None:
        """A manifest of the source, with what it needs, into the target: its blobs (and an
        index's manifests) first, then itself by digest (or under `tag`)."""
        if parsed.is_index:
            if depth:
                raise MirrorError(
                    f"{lookup.source}@{parsed.digest}: a referrer nested deeper than one index"
                )
            for entry in parsed.manifests:
                if not storage.head_manifest(lookup.repository, entry.digest).found:
                    child, child_parsed = self._fetch(lookup, entry.digest)
                    self._write(lookup, storage, child, child_parsed, depth=depth + 1)
        for blob in parsed.blobs:
            self._blob(lookup, storage, blob)
        body, media_type = manifest.body, manifest.media_type
        storage.put_manifest(lookup.repository, tag or parsed.digest, body, media_type)

    def _blob(self, lookup: Lookup, storage: Storage, blob: ContentDescriptor) -> None:
        """A blob streamed from the source into the target (free at both), unless there."""
        if storage.has_blob(lookup.repository, blob.digest):
            return
        source = self.finder.sources(lookup.source.registry)
        with source.blob(lookup.source.path, blob.digest) as answer:
            if answer.status != 200 or answer.body is None:
                raise MirrorError(
                    f"{lookup.source}@{blob.digest}: the source answered HTTP {answer.status} "
                    "for a blob of a referrer"
                )
            storage.push_blob(lookup.repository, blob.digest, answer.body.pieces(), size=blob.size)


def not_a_referrer(parsed: ParsedManifest, subject: str) -> str | None:
    """Why a manifest listed among `subject`'s referrers is none of them (distribution-spec
    v1.1: a referrer's `subject` names the image), or None. A listing is what anyone who may
    push to the repository wrote: an image listed there is not vouched for by being listed."""
    if parsed.subject is None:
        return f"names no subject: not a referrer of {subject}"
    if parsed.subject.digest != subject:
        return f"its subject is {parsed.subject.digest}: not a referrer of {subject}"
    return None


def not_cosigns(parsed: ParsedManifest) -> str | None:
    """Why what a cosign tag (`.sig`, `.att`, `.sbom`) holds is not what cosign writes there
    (one manifest of signatures, attestations or an SBOM: never an index, never image layers),
    or None."""
    if parsed.is_index:
        return "holds an index, not cosign's manifest"
    layer = _image_layer(parsed)
    if layer is not None:
        return f"holds an image (a layer of type {layer}), not cosign's manifest"
    return None


def _image_layer(parsed: ParsedManifest) -> str | None:
    """The media type of the first image filesystem layer of a manifest, or None."""
    return next(
        (
            layer.media_type
            for layer in parsed.layers
            if layer.media_type.startswith(IMAGE_LAYER_TYPES)
        ),
        None,
    )


def _sbom_type(parsed: ParsedManifest) -> str:
    return parsed.layers[0].media_type if parsed.layers else parsed.as_referrer().artifact_type


def _parsed(body: bytes, where: str, media_type: str) -> ParsedManifest:
    try:
        return parse_manifest(body, where=where, media_type=media_type)
    except ReferrersError as error:
        raise MirrorError(str(error)) from None
