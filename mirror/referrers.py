"""What vouches for an image, as registries keep it: OCI 1.1 referrers and cosign's tags.

Pure: names, parsing and the indexes mirror writes; no I/O (mirror/registry.py's
`list_referrers` asks a registry). Two ways a registry attaches things to an image digest:

- OCI 1.1 referrers (distribution-spec v1.1, "Listing Referrers"): a manifest whose `subject`
  names the image. A registry with the referrers API lists them at
  `GET /v2/<name>/referrers/<digest>` as an OCI index of descriptors carrying `artifactType` and
  the manifest's `annotations`; a registry without it holds that index under the tag
  `<alg>-<hex>` of the subject ("Referrers Tag Schema"), kept by the clients that push.
- cosign's tags beside the image: `sha256-<hex>.sig` (signatures), `.att` (attestations),
  `.sbom` (SBOMs), each an ordinary manifest that cosign replaces when it adds one.

Every parser here bounds its work (bytes, entries, annotations) and fails with one line naming
what it read (`ReferrersError`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import quote

from mirror.errors import quoted
from mirror.oci import INDEX_TYPES, MANIFEST_TYPES, OCI_INDEX, OCI_MANIFEST, RateLimit, sha256
from mirror.reference import DIGEST_LENGTHS

COSIGN_SUFFIXES = (".sig", ".att", ".sbom")
MAX_INDEX_BYTES = 4 << 20  # ECR's manifest limit (4 MiB); the spec asks registries to stay under
MAX_MANIFEST_BYTES = 4 << 20
MAX_ENTRIES = 10_000  # descriptors read from one referrers listing (all pages)
MAX_LAYERS = 1_000  # layers read from one manifest (a cosign .sig has one per signature)
MAX_ANNOTATIONS = 256  # annotations kept per descriptor
MAX_TEXT = 4096  # characters of one media type or annotation key
MAX_VALUE = 64 << 10  # characters of one annotation value (cosign's Rekor bundle: 3 to 6 kB)
# Tags that move when something is attached (cosign rewrites .sig/.att/.sbom, the tag schema
# rewrites its index): ECR `imageTagMutabilityExclusionFilters` (WILDCARD) that let them move
# in a repository whose other tags are immutable.
MOVING_TAG_FILTERS = ("sha256-*", "sha512-*")
_DIGEST = re.compile(r"(sha256|sha384|sha512):([0-9a-f]+)\Z")
# RFC 6838 4.2 restricted names, type/subtype (with +suffix), optional parameters as the
# sigstore bundle's `;version=0.2` has; a trailing `*` matches by prefix (`keep`).
_MEDIA_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
    r"(;[A-Za-z0-9!#$&^_.+-]+=[A-Za-z0-9!#$&^_.+-]+)*\*?\Z"
)
_TAG_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")


class ReferrersError(ValueError):
    """Something a registry holds is not what it should be; the message names it, one line."""


class TagRole(Enum):
    """What a tag is, told by its name (and, for `sha256-<hex>`, the digest it holds)."""

    ORDINARY = "tag"
    REFERRERS_INDEX = "referrers index"  # the tag schema's `sha256-<hex>`
    LEGACY_PIN = "pin"  # `sha256-<hex>` holding that very digest: a pin tag an earlier mirror wrote
    COSIGN_SIGNATURE = "cosign signatures"  # `sha256-<hex>.sig`
    COSIGN_ATTESTATION = "cosign attestations"  # `.att`
    COSIGN_SBOM = "cosign SBOM"  # `.sbom`


_COSIGN_ROLES = {
    ".sig": TagRole.COSIGN_SIGNATURE,
    ".att": TagRole.COSIGN_ATTESTATION,
    ".sbom": TagRole.COSIGN_SBOM,
}


@dataclass(frozen=True)
class ContentDescriptor:
    """An OCI content descriptor (image-spec descriptor.md) as a referrers index lists it (not
    `oci.Descriptor`, which is what a manifest HEAD told).

    `annotations` are (key, value) pairs in the order read; `artifact_type` is the manifest's
    `artifactType`, or its config's media type when it has none (distribution-spec v1.1).
    """

    media_type: str
    digest: str
    size: int
    artifact_type: str = ""
    annotations: tuple[tuple[str, str], ...] = ()

    def annotation(self, key: str) -> str | None:
        return next((value for name, value in self.annotations if name == key), None)

    def to_json(self) -> dict[str, Any]:
        """The descriptor as an index entry."""
        doc: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest}
        doc["size"] = self.size
        if self.artifact_type:
            doc["artifactType"] = self.artifact_type
        if self.annotations:
            doc["annotations"] = dict(self.annotations)
        return doc


@dataclass(frozen=True)
class ParsedManifest:
    """The parts of an OCI / Docker manifest or index that copying and verifying need (its
    bytes and media type as fetched are an `oci.Manifest`)."""

    media_type: str
    digest: str
    size: int
    artifact_type: str = ""
    config: ContentDescriptor | None = None
    layers: tuple[ContentDescriptor, ...] = ()
    manifests: tuple[ContentDescriptor, ...] = ()  # an index's entries
    subject: ContentDescriptor | None = None
    annotations: tuple[tuple[str, str], ...] = ()

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def blobs(self) -> tuple[ContentDescriptor, ...]:
        """The blobs a copy of this manifest needs at the destination first: config, layers."""
        return ((self.config,) if self.config else ()) + self.layers

    def as_referrer(self) -> ContentDescriptor:
        """This manifest's entry in its subject's referrers index (distribution-spec v1.1:
        `artifactType`, else the config's media type; the manifest's annotations)."""
        artifact_type = self.artifact_type or (self.config.media_type if self.config else "")
        return ContentDescriptor(
            self.media_type, self.digest, self.size, artifact_type, self.annotations
        )


@dataclass(frozen=True)
class Listing:
    """The referrers of one subject, as a registry listed them.

    `passed_over`: entries that were not descriptors (not kept). `filtered`: the registry said
    it applied the `artifactType` filter (`OCI-Filters-Applied`); `keep()` filters either way.
    `warning`: why the listing may be incomplete, or None. `rate_limit`: the pull budget
    the registry's answer reported (Docker Hub's `ratelimit-*` headers), or None.
    """

    referrers: tuple[ContentDescriptor, ...] = ()
    passed_over: int = 0
    filtered: bool = False
    warning: str | None = None
    rate_limit: RateLimit | None = None


# --- names --------------------------------------------------------------------------------------


def check_digest(digest: str) -> tuple[str, str]:
    """(algorithm, hex) of a digest registries take; ReferrersError otherwise."""
    match = _DIGEST.match(digest) if isinstance(digest, str) and len(digest) < 200 else None
    if match is None or len(match[2]) != DIGEST_LENGTHS[match[1]]:
        raise ReferrersError(f"not a digest: {_short(str(digest))!r}")
    return match[1], match[2]


def tag_schema_name(digest: str) -> str:
    """The referrers tag schema's tag for `digest` (distribution-spec v1.1: `<alg>-<ref>`, the
    algorithm cut to 32 characters and the encoded digest to 64, any character a tag cannot
    hold made `-`): `sha256:ab…` -> `sha256-ab…`."""
    algorithm, hexdigits = check_digest(digest)
    return _TAG_UNSAFE.sub("-", algorithm[:32]) + "-" + hexdigits[:64]


def cosign_tag(digest: str, suffix: str = ".sig") -> str:
    """cosign's tag for `digest`'s signatures (`.sig`), attestations (`.att`) or SBOM
    (`.sbom`): `sha256-<hex>.sig`. cosign writes the whole hex whatever the algorithm."""
    if suffix not in COSIGN_SUFFIXES:
        raise ValueError(f"suffix must be one of {COSIGN_SUFFIXES}")
    algorithm, hexdigits = check_digest(digest)
    return f"{algorithm}-{hexdigits}{suffix}"


def cosign_tags(digest: str) -> tuple[str, ...]:
    """All three of cosign's tags for `digest`, in COSIGN_SUFFIXES order."""
    return tuple(cosign_tag(digest, suffix) for suffix in COSIGN_SUFFIXES)


def subject_of_tag(tag: str) -> tuple[str, str] | None:
    """(subject digest, suffix) of a referrers-index or cosign tag (`sha256-<hex>[.sig]`;
    suffix "" for the index), or None for any other tag. A sha512 tag-schema name is cut to 64
    hex digits and names no whole digest: None."""
    stem, dot, suffix = tag.partition(".")
    suffix = dot + suffix
    if suffix and suffix not in COSIGN_SUFFIXES:
        return None
    algorithm, dash, hexdigits = stem.partition("-")
    digest = f"{algorithm}:{hexdigits}"
    try:
        check_digest(digest)
    except ReferrersError:
        return None
    return (digest, suffix) if dash else None


def tag_role(tag: str, digest_at_tag: str | None = None) -> TagRole:
    """What `tag` is. `sha256-<hex>` is the tag schema's name for the referrers index of that
    digest, and also the pin tag an earlier mirror wrote (now `pin-sha256-<hex>`): such a tag
    that holds the very digest it names (`digest_at_tag`) is a pin; one that holds anything
    else is an index."""
    found = subject_of_tag(tag)
    if found is None:
        return TagRole.ORDINARY
    digest, suffix = found
    if suffix:
        return _COSIGN_ROLES[suffix]
    return TagRole.LEGACY_PIN if digest_at_tag == digest else TagRole.REFERRERS_INDEX


def referrers_path(repository: str, digest: str, artifact_type: str | None = None) -> str:
    """The referrers API path for `digest` in `repository`, filtered by `artifact_type`."""
    check_digest(digest)
    path = f"/v2/{repository}/referrers/{digest}"
    if artifact_type:
        path += "?artifactType=" + quote(artifact_type, safe="")
    return path


# --- reading ----------------------------------------------------------------------------------


def parse_listing(body: bytes, *, where: str, filters_applied: str = "") -> Listing:
    """A referrers API answer (or a tag-schema index): its descriptors, at most MAX_ENTRIES.

    `filters_applied` is the answer's `OCI-Filters-Applied` header. Entries that are not
    descriptors are passed over (counted); a body that is not an index is a ReferrersError.
    """
    doc = _document(body, where, MAX_INDEX_BYTES, "referrers index")
    entries = doc.get("manifests")
    if doc.get("mediaType", OCI_INDEX) != OCI_INDEX or not isinstance(entries, list):
        raise ReferrersError(f"{where}: not an OCI image index (no manifests list)")
    referrers: list[ContentDescriptor] = []
    passed_over = 0
    for entry in entries[:MAX_ENTRIES]:
        try:
            referrers.append(_descriptor(entry))
        except ReferrersError:
            passed_over += 1
    warning = None
    if len(entries) > MAX_ENTRIES:
        warning = f"{where}: more than {MAX_ENTRIES:,} referrers: only the first were read"
    filtered = "artifacttype" in filters_applied.replace(" ", "").lower().split(",")
    return Listing(tuple(referrers), passed_over, filtered, warning)


def merge(listings: Iterable[Listing]) -> Listing:
    """Pages of one listing as one: each digest once (first seen), counts summed, at most
    MAX_ENTRIES."""
    seen: dict[str, ContentDescriptor] = {}
    passed_over = 0
    filtered = True
    warning: str | None = None
    for listing in listings:
        for referrer in listing.referrers:
            seen.setdefault(referrer.digest, referrer)
        passed_over += listing.passed_over
        filtered = filtered and listing.filtered
        warning = warning or listing.warning
    kept = tuple(seen.values())
    if len(kept) > MAX_ENTRIES:
        kept = kept[:MAX_ENTRIES]
        warning = warning or f"more than {MAX_ENTRIES:,} referrers: only the first were read"
    return Listing(kept, passed_over, filtered, warning)


def parse_manifest(body: bytes, *, where: str, media_type: str = "") -> ParsedManifest:
    """A manifest or index as fetched (its digest is the sha256 of `body`): config, layers,
    index entries, subject, artifactType and annotations, bounded (MAX_LAYERS entries).
    `media_type` is the answer's Content-Type, used when the document names none."""
    doc = _document(body, where, MAX_MANIFEST_BYTES, "manifest")
    kind = doc.get("mediaType") or media_type
    if not isinstance(kind, str) or kind not in MANIFEST_TYPES:
        kind = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    try:
        return ParsedManifest(
            media_type=kind,
            digest=sha256(body),
            size=len(body),
            artifact_type=_text(doc.get("artifactType", ""), "artifactType"),
            config=_descriptor(doc["config"]) if "config" in doc else None,
            layers=_descriptors(doc.get("layers", []), "layers"),
            manifests=_descriptors(doc.get("manifests", []), "manifests"),
            subject=_descriptor(doc["subject"]) if "subject" in doc else None,
            annotations=_annotations(doc.get("annotations")),
        )
    except ReferrersError as error:
        raise ReferrersError(f"{where}: {error}") from None


# --- choosing and writing -------------------------------------------------------------------------


def matches(artifact_type: str, wanted: Sequence[str]) -> bool:
    """Is `artifact_type` one of `wanted`? An entry ending in `*` matches by prefix
    (`application/vnd.dev.sigstore.bundle*` is every bundle version). Case is not compared:
    media types are case-insensitive (RFC 6838 4.2)."""
    kind = artifact_type.lower()
    return any(
        kind.startswith(pattern[:-1].lower()) if pattern.endswith("*") else kind == pattern.lower()
        for pattern in wanted
    )


def artifact_type_problem(text: object) -> str | None:
    """What is wrong with an entry of a config's artifact-type list, or None: a media type
    (`application/spdx+json`), or a prefix of one ending in `*`
    (`application/vnd.dev.sigstore.bundle*`)."""
    if not isinstance(text, str) or not text:
        return "expected a media type like application/spdx+json"
    if text.endswith("*") and "/" not in text:
        return f"{quoted(text, 80)!r} is not a media type prefix (it needs type/...)"
    if not _MEDIA_TYPE.match(text):
        return f"{quoted(text, 80)!r} is not a media type (type/subtype, RFC 6838)"
    return None


def keep(
    referrers: Iterable[ContentDescriptor], wanted: Sequence[str] | None
) -> tuple[ContentDescriptor, ...]:
    """The referrers whose artifact type is `wanted` (all of them for None), in order. A
    registry's `artifactType` filter is not trusted to have been applied (the spec makes it
    optional): the list is filtered here either way."""
    if wanted is None:
        return tuple(referrers)
    return tuple(referrer for referrer in referrers if matches(referrer.artifact_type, wanted))


def missing(
    wanted: Iterable[ContentDescriptor], present: Collection[str]
) -> tuple[ContentDescriptor, ...]:
    """The descriptors whose digest is not in `present` (what the destination lacks), each
    once, in order: what a copy must fetch from the source, and nothing more."""
    seen: set[str] = set(present)
    out: list[ContentDescriptor] = []
    for descriptor in wanted:
        if descriptor.digest not in seen:
            seen.add(descriptor.digest)
            out.append(descriptor)
    return tuple(out)


def tag_schema_index(
    subject: str, existing: bytes | None, adding: Sequence[ContentDescriptor], *, where: str
) -> bytes | None:
    """The referrers index to PUT under `subject`'s tag-schema tag: `existing` (what the tag
    holds now, None when nothing) with the `adding` descriptors it lacks appended. Entries
    already there stay as they are, with their order and fields (another client's referrers
    are never dropped). None when nothing is new: no PUT needed.

    ReferrersError, and nothing to write, when the tag holds anything but a referrers index
    (the distribution spec: report a failure, do not overwrite it): another kind of manifest,
    or the subject itself (a pin tag an earlier mirror wrote, `tag_role`); or when the index
    would pass MAX_INDEX_BYTES.
    """
    check_digest(subject)
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    if existing is not None:
        if sha256(existing) == subject:
            raise ReferrersError(
                f"{where}: the tag holds the image {subject} itself (a pin of an older "
                "mirror), not a referrers index: left as it is"
            )
        doc = _document(existing, where, MAX_INDEX_BYTES, "referrers index")
        if doc.get("mediaType") != OCI_INDEX or not isinstance(doc.get("manifests"), list):
            raise ReferrersError(
                f"{where}: the tag holds a {_short(str(doc.get('mediaType') or 'manifest'))}, "
                "not a referrers index: left as it is"
            )
    listed = {
        entry["digest"]
        for entry in doc["manifests"]
        if isinstance(entry, dict) and isinstance(entry.get("digest"), str)
    }
    new = [descriptor.to_json() for descriptor in missing(adding, listed)]
    if not new:
        return None
    doc["manifests"] = [*doc["manifests"], *new]
    body = json.dumps(doc, separators=(",", ":")).encode()
    if len(body) > MAX_INDEX_BYTES:
        raise ReferrersError(
            f"{where}: the referrers index would be {len(body):,} bytes, over "
            f"{MAX_INDEX_BYTES:,}: not written"
        )
    return body


def empty_index() -> bytes:
    """The referrers API's answer for a digest with no referrers."""
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode()


# --- helpers ------------------------------------------------------------------------------------


def _document(body: bytes, where: str, limit: int, what: str) -> dict[str, Any]:
    if len(body) > limit:
        raise ReferrersError(f"{where}: the {what} is {len(body):,} bytes, over {limit:,}")
    try:
        doc = json.loads(body)
    except RecursionError:
        raise ReferrersError(f"{where}: the {what} is JSON nested too deeply to read") from None
    except ValueError:
        raise ReferrersError(f"{where}: the {what} is not JSON") from None
    if not isinstance(doc, dict):
        raise ReferrersError(f"{where}: the {what} is not a JSON object")
    return doc


def _descriptor(entry: Any) -> ContentDescriptor:
    if not isinstance(entry, dict):
        raise ReferrersError("a descriptor is not an object")
    size = entry.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < 1 << 53:
        raise ReferrersError(f"descriptor size {_short(str(size))!r} is not a size")
    digest = entry.get("digest")
    if not isinstance(digest, str):
        raise ReferrersError("a descriptor has no digest")
    check_digest(digest)
    return ContentDescriptor(
        media_type=_text(entry.get("mediaType", ""), "mediaType"),
        digest=digest,
        size=size,
        artifact_type=_text(entry.get("artifactType", ""), "artifactType"),
        annotations=_annotations(entry.get("annotations")),
    )


def _descriptors(entries: Any, what: str) -> tuple[ContentDescriptor, ...]:
    if not isinstance(entries, list):
        raise ReferrersError(f"{what} is not a list")
    if len(entries) > MAX_LAYERS:
        raise ReferrersError(f"{len(entries):,} {what}, over {MAX_LAYERS:,}")
    return tuple(_descriptor(entry) for entry in entries)


def _annotations(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ReferrersError("annotations are not an object")
    if len(value) > MAX_ANNOTATIONS:
        raise ReferrersError(f"{len(value):,} annotations, over {MAX_ANNOTATIONS}")
    return tuple(
        (_text(key, "annotation key"), _text(text, "annotation value", MAX_VALUE))
        for key, text in value.items()
    )


def _text(value: Any, what: str, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise ReferrersError(f"{what} {_short(str(value))!r} is not a string of at most {limit:,}")
    return value


def _short(text: str) -> str:
    return quoted(text, 80)
