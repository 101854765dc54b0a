"""OCI 1.1 referrers and cosign's tags, pure (mirror/referrers.py): names, listings, manifests,
and the tag-schema index mirror keeps for a destination without the referrers API."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from mirror.reference import LEGACY_PIN_TAG, PIN_TAG, pin_tag
from mirror.referrers import (
    MAX_ENTRIES,
    MAX_INDEX_BYTES,
    MOVING_TAG_FILTERS,
    ContentDescriptor,
    Listing,
    ReferrersError,
    TagRole,
    artifact_type_problem,
    cosign_tag,
    cosign_tags,
    empty_index,
    keep,
    merge,
    missing,
    parse_listing,
    parse_manifest,
    referrers_path,
    subject_of_tag,
    tag_role,
    tag_schema_index,
    tag_schema_name,
)
from tests.standins.ecr import wildcard_match
from tests.standins.images import OCI_MANIFEST, Blob
from tests.standins.signing import (
    SIGSTORE_BUNDLE,
    SPDX,
    bundle_referrer,
    descriptor_of,
    sbom_referrer,
)

HEX = "ab" * 32
DIGEST = f"sha256:{HEX}"
OTHER = "sha256:" + "cd" * 32
SUBJECT = (OCI_MANIFEST, DIGEST, 1234)


def index(*entries: dict[str, Any], **extra: Any) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": list(entries),
        **extra,
    }
    return json.dumps(doc).encode()


def entry(digest: str, artifact_type: str = SPDX, **extra: Any) -> dict[str, Any]:
    return {
        "mediaType": OCI_MANIFEST,
        "digest": digest,
        "size": 10,
        "artifactType": artifact_type,
        **extra,
    }


def sha(n: int) -> str:
    return "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()


# --- names ----------------------------------------------------------------------------------------


def test_the_tag_schema_name_of_a_digest() -> None:
    assert tag_schema_name(DIGEST) == f"sha256-{HEX}"
    assert tag_schema_name("sha512:" + "e" * 128) == "sha512-" + "e" * 64  # cut to 64, as specified


@pytest.mark.parametrize(
    "bad", ["latest", "sha256:ABC", f"sha256:{HEX}0", "md5:" + "a" * 32, "x" * 500]
)
def test_a_digest_that_is_not_one_is_named(bad: str) -> None:
    with pytest.raises(ReferrersError, match=r"^not a digest: "):
        tag_schema_name(bad)


def test_cosigns_tags() -> None:
    assert cosign_tag(DIGEST) == f"sha256-{HEX}.sig"
    assert cosign_tags(DIGEST) == (f"sha256-{HEX}.sig", f"sha256-{HEX}.att", f"sha256-{HEX}.sbom")
    with pytest.raises(ValueError, match="suffix must be one of"):
        cosign_tag(DIGEST, ".sign")


@pytest.mark.parametrize(
    ("tag", "found"),
    [
        (f"sha256-{HEX}", (DIGEST, "")),
        (f"sha256-{HEX}.sig", (DIGEST, ".sig")),
        (f"sha256-{HEX}.att", (DIGEST, ".att")),
        (f"sha256-{HEX}.sbom", (DIGEST, ".sbom")),
        (f"sha256-{HEX}.sig.sig", None),
        (f"sha256-{HEX}.txt", None),
        (f"sha256-{HEX[:-1]}", None),
        (f"sha256:{HEX}", None),
        ("latest", None),
        ("3.19", None),
        ("sha512-" + "e" * 64, None),  # a cut sha512 name names no whole digest
    ],
)
def test_the_subject_a_tag_names(tag: str, found: tuple[str, str] | None) -> None:
    assert subject_of_tag(tag) == found


@pytest.mark.parametrize(
    ("tag", "digest_at_tag", "role"),
    [
        ("latest", DIGEST, TagRole.ORDINARY),
        (f"sha256-{HEX}", DIGEST, TagRole.LEGACY_PIN),  # holds the digest it names: a pin
        (f"sha256-{HEX}", OTHER, TagRole.REFERRERS_INDEX),
        (f"sha256-{HEX}", None, TagRole.REFERRERS_INDEX),
        (f"sha256-{HEX}.sig", OTHER, TagRole.COSIGN_SIGNATURE),
        (f"sha256-{HEX}.att", None, TagRole.COSIGN_ATTESTATION),
        (f"sha256-{HEX}.sbom", None, TagRole.COSIGN_SBOM),
    ],
)
def test_the_role_of_a_tag(tag: str, digest_at_tag: str | None, role: TagRole) -> None:
    assert tag_role(tag, digest_at_tag) is role


def test_the_referrers_api_path() -> None:
    assert referrers_path("library/ruby", DIGEST) == f"/v2/library/ruby/referrers/{DIGEST}"
    assert referrers_path("a/b", DIGEST, "application/vnd.dev.sigstore.bundle.v0.3+json") == (
        f"/v2/a/b/referrers/{DIGEST}?artifactType=application%2Fvnd.dev.sigstore.bundle.v0.3%2Bjson"
    )


# --- reading ----------------------------------------------------------------------------------


def test_a_listing_as_ecr_answers_it() -> None:
    body = index(
        entry(sha(1), SPDX, annotations={"org.opencontainers.image.created": "2026-01-01"}),
        entry(sha(2), SIGSTORE_BUNDLE),
    )
    listing = parse_listing(body, where="ecr", filters_applied="")
    assert listing == Listing(
        (
            ContentDescriptor(
                OCI_MANIFEST,
                sha(1),
                10,
                SPDX,
                (("org.opencontainers.image.created", "2026-01-01"),),
            ),
            ContentDescriptor(OCI_MANIFEST, sha(2), 10, SIGSTORE_BUNDLE),
        )
    )
    assert listing.referrers[0].annotation("org.opencontainers.image.created") == "2026-01-01"
    assert parse_listing(empty_index(), where="x") == Listing()


def test_the_filter_header_is_read() -> None:
    assert parse_listing(index(), where="x", filters_applied="artifactType").filtered
    assert parse_listing(index(), where="x", filters_applied="annotation, artifactType").filtered
    assert not parse_listing(index(), where="x", filters_applied="").filtered


def test_entries_that_are_not_descriptors_are_passed_over() -> None:
    body = index(
        entry(sha(1)),
        "text",  # type: ignore[arg-type]
        {"digest": "sha256:short", "size": 1},
        {"digest": sha(3), "size": -1},
        {"digest": sha(4), "size": True},
        {"digest": sha(5), "size": 1, "annotations": {"k": 5}},
        {"digest": sha(6), "size": 1, "mediaType": "m" * 5000},
        entry(sha(7)),
    )
    listing = parse_listing(body, where="x")
    assert [r.digest for r in listing.referrers] == [sha(1), sha(7)]
    assert listing.passed_over == 6


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>", "registry/x@d: the referrers index is not JSON"),
        (b"[" * 100_000, "registry/x@d: the referrers index is JSON nested too deeply to read"),
        (b"[]", "registry/x@d: the referrers index is not a JSON object"),
        (b'{"manifests": {}}', "registry/x@d: not an OCI image index (no manifests list)"),
        (
            json.dumps({"mediaType": OCI_MANIFEST, "manifests": []}).encode(),
            "registry/x@d: not an OCI image index (no manifests list)",
        ),
        (
            b" " * (MAX_INDEX_BYTES + 1),
            "registry/x@d: the referrers index is 4,194,305 bytes, over 4,194,304",
        ),
    ],
)
def test_an_answer_that_is_no_listing_is_named(body: bytes, message: str) -> None:
    with pytest.raises(ReferrersError) as raised:
        parse_listing(body, where="registry/x@d")
    assert str(raised.value) == message


def test_a_listing_is_cut_at_its_bound() -> None:
    body = index(*(entry(sha(n)) for n in range(MAX_ENTRIES + 5)))
    listing = parse_listing(body, where="x")
    assert len(listing.referrers) == MAX_ENTRIES
    assert listing.warning == f"x: more than {MAX_ENTRIES:,} referrers: only the first were read"


def test_pages_merge_once_each() -> None:
    first = parse_listing(index(entry(sha(1)), entry(sha(2))), where="x")
    second = parse_listing(index(entry(sha(2)), entry(sha(3)), {"digest": 1}), where="x")
    merged = merge([first, second])
    assert [r.digest for r in merged.referrers] == [sha(1), sha(2), sha(3)]
    assert merged.passed_over == 1
    assert not merged.filtered
    assert merge([]) == Listing(filtered=True)


def test_a_referrer_manifest() -> None:
    manifest, blobs = sbom_referrer(SUBJECT, seed="1")
    parsed = parse_manifest(manifest.data, where="m")
    assert parsed.digest == manifest.digest and parsed.size == len(manifest.data)
    assert parsed.subject == ContentDescriptor(OCI_MANIFEST, DIGEST, 1234)
    assert parsed.artifact_type == SPDX
    assert {blob.digest for blob in parsed.blobs} == {d for d in blobs if d != manifest.digest}
    referrer = parsed.as_referrer()
    assert referrer.to_json() == descriptor_of(manifest)  # what ECR lists for it


def test_a_referrer_without_artifact_type_is_typed_by_its_config() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.example.sbom", "digest": sha(1), "size": 2},
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": DIGEST, "size": 3},
    }
    parsed = parse_manifest(json.dumps(doc).encode(), where="m")
    assert parsed.as_referrer().artifact_type == "application/vnd.example.sbom"


def test_an_index_and_a_docker_manifest() -> None:
    docker = {
        "schemaVersion": 2,
        "config": {"mediaType": "c", "digest": sha(1), "size": 1},
        "layers": [],
    }
    parsed = parse_manifest(
        json.dumps(docker).encode(),
        where="m",
        media_type="application/vnd.docker.distribution.manifest.v2+json",
    )
    assert parsed.media_type == "application/vnd.docker.distribution.manifest.v2+json"
    assert not parsed.is_index and parsed.subject is None
    listing = parse_manifest(index(entry(sha(1))), where="m")
    assert listing.is_index and [d.digest for d in listing.manifests] == [sha(1)]
    assert listing.blobs == ()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"layers": "x"}, "m: layers is not a list"),
        ({"layers": [{"digest": sha(1), "size": 1}] * 1001}, "m: 1,001 layers, over 1,000"),
        ({"config": {"digest": "sha256:x", "size": 1}}, "m: not a digest: 'sha256:x'"),
        ({"subject": "x"}, "m: a descriptor is not an object"),
        ({"annotations": {str(n): "" for n in range(300)}}, "m: 300 annotations, over 256"),
        ({"artifactType": 5}, "m: artifactType '5' is not a string of at most 4,096"),
    ],
)
def test_a_manifest_that_cannot_be_read_is_named(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ReferrersError) as raised:
        parse_manifest(json.dumps(doc).encode(), where="m")
    assert str(raised.value) == message


# --- choosing -------------------------------------------------------------------------------------


def test_keep_filters_by_artifact_type_whatever_the_registry_did() -> None:
    refs = [
        ContentDescriptor(OCI_MANIFEST, sha(n), 1, kind)
        for n, kind in enumerate((SPDX, SIGSTORE_BUNDLE, "x"))
    ]
    assert keep(refs, None) == tuple(refs)
    assert keep(refs, [SPDX]) == (refs[0],)
    assert keep(refs, ["application/vnd.dev.sigstore.bundle*", "x"]) == (refs[1], refs[2])
    assert keep(refs, []) == ()


def test_artifact_types_match_whatever_their_case() -> None:
    """Media types are case-insensitive (RFC 6838 4.2): a config's `Application/SPDX+json`
    keeps the SBOMs a publisher typed `application/spdx+json`, and the other way round."""
    refs = [ContentDescriptor(OCI_MANIFEST, sha(0), 1, SPDX)]
    assert keep(refs, ["Application/SPDX+JSON"]) == tuple(refs)
    assert keep(refs, ["APPLICATION/SPDX*"]) == tuple(refs)
    shouting = [ContentDescriptor(OCI_MANIFEST, sha(1), 1, SPDX.upper())]
    assert keep(shouting, [SPDX]) == tuple(shouting)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (SPDX, None),
        ("application/vnd.dev.sigstore.bundle+json;version=0.2", None),
        ("application/vnd.dev.sigstore.bundle*", None),
        ("application/vnd.cyclonedx+json", None),
        ("", "expected a media type like application/spdx+json"),
        (5, "expected a media type like application/spdx+json"),
        ("*", "'*' is not a media type prefix (it needs type/...)"),
        ("spdx", "'spdx' is not a media type (type/subtype, RFC 6838)"),
        (
            "application/spdx json",
            "'application/spdx json' is not a media type (type/subtype, RFC 6838)",
        ),
        (
            "a/" + "b" * 200,
            f"'a/{'b' * 78}... (202 characters)' is not a media type (type/subtype, RFC 6838)",
        ),
    ],
)
def test_artifact_types_a_config_may_list(text: object, problem: str | None) -> None:
    assert artifact_type_problem(text) == problem


def test_moving_tags_are_excluded_from_immutability() -> None:
    from tests.standins.ecr import tag_is_immutable

    for tag in (
        *cosign_tags(DIGEST),
        tag_schema_name(DIGEST),
        tag_schema_name("sha512:" + "e" * 128),
    ):
        assert not tag_is_immutable("IMMUTABLE_WITH_EXCLUSION", MOVING_TAG_FILTERS, tag)
    assert tag_is_immutable("IMMUTABLE_WITH_EXCLUSION", MOVING_TAG_FILTERS, "3.19")


def test_missing_is_what_the_destination_lacks_each_once() -> None:
    refs = [ContentDescriptor(OCI_MANIFEST, sha(n % 3), 1) for n in range(6)]
    assert missing(refs, {sha(1)}) == (refs[0], refs[2])


# --- the tag-schema index ----------------------------------------------------------------------


def descriptor(manifest: Blob) -> ContentDescriptor:
    return parse_manifest(manifest.data, where="m").as_referrer()


def test_a_new_tag_schema_index() -> None:
    sbom, _ = sbom_referrer(SUBJECT)
    body = tag_schema_index(DIGEST, None, [descriptor(sbom)], where="t")
    assert body is not None
    assert json.loads(body) == json.loads(index(descriptor_of(sbom)))


def test_entries_already_there_are_kept_as_they_are() -> None:
    sbom, _ = sbom_referrer(SUBJECT)
    signature, _ = bundle_referrer(SUBJECT, b"{}")
    theirs = entry(sha(9), "application/vnd.other", platform={"os": "linux"}, extra="kept")
    existing = index(theirs, annotations={"by": "someone"})
    body = tag_schema_index(DIGEST, existing, [descriptor(sbom), descriptor(signature)], where="t")
    assert body is not None
    doc = json.loads(body)
    assert doc["annotations"] == {"by": "someone"}
    assert doc["manifests"] == [theirs, descriptor_of(sbom), descriptor_of(signature)]


def test_nothing_new_means_nothing_to_write() -> None:
    sbom, _ = sbom_referrer(SUBJECT)
    existing = index(descriptor_of(sbom))
    assert tag_schema_index(DIGEST, existing, [descriptor(sbom)], where="t") is None
    assert tag_schema_index(DIGEST, None, [], where="t") is None


def test_a_tag_that_holds_no_referrers_index_is_left_alone() -> None:
    sbom, _ = sbom_referrer(SUBJECT)
    image = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {}, "layers": []}
    ).encode()
    with pytest.raises(ReferrersError) as raised:
        tag_schema_index(DIGEST, image, [descriptor(sbom)], where="ecr/x:sha256-ab")
    assert str(raised.value) == (
        f"ecr/x:sha256-ab: the tag holds a {OCI_MANIFEST}, not a referrers index: left as it is"
    )


def test_a_pin_of_an_older_mirror_is_never_taken_for_an_index() -> None:
    """mirror before 19 pinned digest D under the tag `sha256-<D>`: for a multi-arch image that
    is an OCI index, which must not get referrers appended to it."""
    image_index = index(
        {"mediaType": OCI_MANIFEST, "digest": sha(1), "size": 5, "platform": {"os": "linux"}}
    )
    pinned = "sha256:" + hashlib.sha256(image_index).hexdigest()
    sbom, _ = sbom_referrer((OCI_MANIFEST, pinned, len(image_index)))
    with pytest.raises(ReferrersError) as raised:
        tag_schema_index(pinned, image_index, [descriptor(sbom)], where="t")
    assert str(raised.value) == (
        f"t: the tag holds the image {pinned} itself (a pin of an older mirror), not a "
        "referrers index: left as it is"
    )
    assert tag_role(tag_schema_name(pinned), pinned) is TagRole.LEGACY_PIN


def test_an_index_too_large_to_write() -> None:
    big = ContentDescriptor(OCI_MANIFEST, sha(1), 1, "x", (("k", "v" * 60_000),))
    many = [
        ContentDescriptor(OCI_MANIFEST, sha(n), 1, "x", (("k", "v" * 60_000),)) for n in range(80)
    ]
    assert tag_schema_index(DIGEST, None, [big], where="t") is not None
    with pytest.raises(
        ReferrersError,
        match=r"^t: the referrers index would be [\d,]+ bytes, over 4,194,304: not written$",
    ):
        tag_schema_index(DIGEST, None, many, where="t")


def test_pin_tags_are_out_of_the_referrers_way() -> None:
    sha256, sha512 = "sha256:" + "a" * 64, "sha512:" + "b" * 128
    assert pin_tag(sha256) == "pin-sha256-" + "a" * 64
    assert len(pin_tag(sha512)) == 128 and PIN_TAG.match(pin_tag(sha512))
    for digest in (sha256, sha512):
        tag = pin_tag(digest)
        assert tag_role(tag, digest) is TagRole.ORDINARY  # neither an index nor cosign's
        assert not any(wildcard_match(pattern, tag) for pattern in MOVING_TAG_FILTERS)
        assert not LEGACY_PIN_TAG.match(tag)
    legacy = "sha256-" + "a" * 64
    assert LEGACY_PIN_TAG.match(legacy) and tag_role(legacy, sha256) is TagRole.LEGACY_PIN
