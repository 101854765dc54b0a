"""The fronts serve OCI 1.1 referrers as the services do, and mirror's registry boundary reads
them: the ECR-like front has the referrers API (ECR since June 2024), the Docker-Hub-like front
has it only when asked (unsettled for Docker Hub), the plain distribution 2.8 registry has none.
At the end, a signed image at a stand-in, found and verified the way the gate will be."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from mirror import referrers, signatures
from mirror.errors import RegistryError
from mirror.http import Http
from mirror.oci import Login
from mirror.registry import UPLOAD_PART, Registry, list_referrers
from tests.standins.aws import ECR_PASSWORD, ECR_USER, Moto
from tests.standins.ecr import EcrFront
from tests.standins.hub import HubFront
from tests.standins.images import OCI_MANIFEST, Blob, build_image, push_image
from tests.standins.registry import Registry as BackendRegistry
from tests.standins.signing import (
    SIGSTORE_BUNDLE,
    SPDX,
    Sigstore,
    attach_cosign,
    attach_referrer,
    bundle_referrer,
    descriptor_of,
    in_toto_statement,
    key_signed,
    new_key,
    sbom_referrer,
    simple_signing,
    tag_schema_name,
)

ECR_LOGIN = (ECR_USER, ECR_PASSWORD)
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ISSUER = "https://token.actions.githubusercontent.com"
SUBJECT = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"


@pytest.fixture
def ecr(moto: Moto, aws_env: dict[str, str]) -> Any:
    return boto3.client("ecr", region_name="us-east-1", endpoint_url=moto.url)


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as own:
        own.auth = ECR_LOGIN
        yield own


def image(seed: str) -> tuple[Blob, dict[str, Blob]]:
    return build_image(
        platforms=("linux/amd64",),
        layer_sizes=(64,),
        seed=seed,
        base_layers=(),
        media_types="oci",
        attestations=False,
        created="1970-01-01T00:00:00Z",
    )


def push_subject(host: str, repo: str, seed: str, auth: tuple[str, str] | None = None) -> Blob:
    top, blobs = image(seed)
    push_image(host, repo, "1.0", top, blobs, auth=auth)
    return top


def mirror_registry(host: str, login: tuple[str, str] | None = None) -> Registry:
    """mirror's own registry client, as a run makes it (plain HTTP on loopback)."""
    who = Login(*login, origin="the test's credentials") if login else None
    return Registry(host, http=Http(environ={}), tls_verify=False, login=who)


def sorted_by_digest(*manifests: Blob) -> list[dict[str, Any]]:
    return sorted((descriptor_of(m) for m in manifests), key=lambda entry: entry["digest"])


# --- the ECR-like front ----------------------------------------------------------------------


def referred(ecr: Any, front: EcrFront, repo: str, seed: str) -> tuple[Blob, Blob, Blob]:
    """An image pushed through the ECR-like front with an SBOM and a sigstore bundle attached
    as referrers: (subject, sbom, bundle) manifests."""
    ecr.create_repository(repositoryName=repo)
    subject = push_subject(front.host, repo, seed, ECR_LOGIN)
    sbom = attach_referrer(front.host, repo, subject.digest, sbom_referrer(subject), auth=ECR_LOGIN)
    signed = attach_referrer(
        front.host, repo, subject.digest, bundle_referrer(subject, b"{}"), auth=ECR_LOGIN
    )
    return subject, sbom, signed


def test_ecr_lists_the_referrers_of_a_digest(
    ecr: Any, ecr_front: EcrFront, session: requests.Session, repo_name: str
) -> None:
    subject, sbom, signed = referred(ecr, ecr_front, repo_name, "ecr-list")
    answer = session.get(f"{ecr_front.url}/v2/{repo_name}/referrers/{subject.digest}")
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == OCI_INDEX
    assert "OCI-Filters-Applied" not in answer.headers
    assert answer.json() == {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": sorted_by_digest(sbom, signed),
    }
    assert {e["artifactType"] for e in answer.json()["manifests"]} == {SPDX, SIGSTORE_BUNDLE}
    assert ecr_front.counts.of("referrers_list", 200) == 1


def test_ecr_answers_a_put_with_a_subject_with_oci_subject(
    ecr: Any, ecr_front: EcrFront, session: requests.Session, repo_name: str
) -> None:
    ecr.create_repository(repositoryName=repo_name)
    subject = push_subject(ecr_front.host, repo_name, "ecr-put", ECR_LOGIN)
    manifest, blobs = sbom_referrer(subject)
    attach_referrer(ecr_front.host, repo_name, subject.digest, (manifest, blobs), auth=ECR_LOGIN)
    again = session.put(
        f"{ecr_front.url}/v2/{repo_name}/manifests/{manifest.digest}",
        data=manifest.data,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert again.status_code == 201, again.text
    assert again.headers["OCI-Subject"] == subject.digest
    plain = session.put(
        f"{ecr_front.url}/v2/{repo_name}/manifests/again",
        data=subject.data,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert plain.status_code == 201 and "OCI-Subject" not in plain.headers


def test_ecr_answers_an_empty_index_for_a_digest_without_referrers(
    ecr: Any, ecr_front: EcrFront, session: requests.Session, repo_name: str
) -> None:
    ecr.create_repository(repositoryName=repo_name)
    subject = push_subject(ecr_front.host, repo_name, "ecr-empty", ECR_LOGIN)
    for digest in (subject.digest, "sha256:" + "0" * 64):  # held, and never pushed
        answer = session.get(f"{ecr_front.url}/v2/{repo_name}/referrers/{digest}")
        assert answer.status_code == 200
        assert answer.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}


def test_ecr_referrers_errors(
    ecr: Any, ecr_front: EcrFront, session: requests.Session, repo_name: str
) -> None:
    ecr.create_repository(repositoryName=repo_name)
    missing = session.get(f"{ecr_front.url}/v2/{repo_name}-gone/referrers/sha256:{'0' * 64}")
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    by_tag = session.get(f"{ecr_front.url}/v2/{repo_name}/referrers/latest")
    assert by_tag.status_code == 400
    assert by_tag.json()["errors"][0]["code"] == "DIGEST_INVALID"
    anonymous = requests.get(
        f"{ecr_front.url}/v2/{repo_name}/referrers/sha256:{'0' * 64}", timeout=30
    )
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic realm=")


def test_ecr_front_ignores_the_artifact_type_filter_unless_told(
    ecr: Any,
    ecr_front: EcrFront,
    dest_registry: BackendRegistry,
    moto: Moto,
    session: requests.Session,
    repo_name: str,
) -> None:
    subject, sbom, signed = referred(ecr, ecr_front, repo_name, "ecr-filter")
    path = f"/v2/{repo_name}/referrers/{subject.digest}"
    query = {"artifactType": SPDX}
    unfiltered = session.get(f"{ecr_front.url}{path}", params=query)
    assert unfiltered.json()["manifests"] == sorted_by_digest(sbom, signed)
    assert "OCI-Filters-Applied" not in unfiltered.headers
    with EcrFront(dest_registry.url, moto.url, referrers_filter=True) as filtering:
        filtered = session.get(f"{filtering.url}{path}", params=query)
    assert filtered.json()["manifests"] == [descriptor_of(sbom)]
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"


def test_mirror_reads_every_page_and_filters_itself(
    ecr: Any, dest_registry: BackendRegistry, moto: Moto, repo_name: str
) -> None:
    ecr.create_repository(repositoryName=repo_name)
    with EcrFront(dest_registry.url, moto.url, referrers_page=1) as front:
        subject = push_subject(front.host, repo_name, "ecr-pages", ECR_LOGIN)
        attached = [
            attach_referrer(
                front.host,
                repo_name,
                subject.digest,
                sbom_referrer(subject, seed=str(n)),
                auth=ECR_LOGIN,
            )
            for n in range(3)
        ]
        signed = attach_referrer(
            front.host, repo_name, subject.digest, bundle_referrer(subject, b"{}"), auth=ECR_LOGIN
        )
        listing = list_referrers(
            mirror_registry(front.host, ECR_LOGIN), repo_name, subject.digest, artifact_type=SPDX
        )
        assert listing is not None
        assert front.counts.of("referrers_list", 200) == 4  # one page each, behind Link
    assert not listing.filtered  # the front did not filter: mirror does
    assert {r.digest for r in listing.referrers} == {m.digest for m in (*attached, signed)}
    kept = referrers.keep(listing.referrers, [SPDX])
    assert sorted(r.digest for r in kept) == sorted(m.digest for m in attached)


def test_mirror_reads_a_missing_ecr_repository_as_an_error(
    ecr: Any, ecr_front: EcrFront, repo_name: str
) -> None:
    with pytest.raises(RegistryError, match="not found") as raised:
        list_referrers(mirror_registry(ecr_front.host, ECR_LOGIN), repo_name, "sha256:" + "0" * 64)
    assert raised.value.status == 404


# --- the plain registry and the Docker-Hub-like front ------------------------------------------


def test_without_the_referrers_api_mirror_is_told_so(
    source_registry: BackendRegistry, hub: HubFront, repo_name: str
) -> None:
    subject = push_subject(source_registry.host, repo_name, "no-api")
    assert list_referrers(mirror_registry(source_registry.host), repo_name, subject.digest) is None
    assert list_referrers(mirror_registry(hub.host), repo_name, subject.digest) is None
    assert hub.counts.manifest_get == 0


def test_the_tag_schema_at_docker_hub_costs_one_pull(
    source_registry: BackendRegistry, repo_name: str
) -> None:
    subject = push_subject(source_registry.host, repo_name, "tag-schema")
    sbom = attach_referrer(
        source_registry.host, repo_name, subject.digest, sbom_referrer(subject), tag_schema=True
    )
    signed = attach_referrer(
        source_registry.host,
        repo_name,
        subject.digest,
        bundle_referrer(subject, b"{}"),
        tag_schema=True,
    )
    with HubFront(source_registry.url, limit=10) as hub:
        registry = mirror_registry(hub.host)
        assert list_referrers(registry, repo_name, subject.digest) is None
        pulled = registry.pull_manifest(repo_name, tag_schema_name(subject.digest))
        assert pulled is not None
        listing = referrers.parse_listing(pulled.body, where="hub")
        assert hub.remaining == 9  # the index is a manifest: one pull
    assert [r.to_json() for r in listing.referrers] == [descriptor_of(sbom), descriptor_of(signed)]


@pytest.mark.parametrize(("mode", "spent"), [("api", 0), ("api-pull", 1)])
def test_docker_hub_with_the_referrers_api(
    source_registry: BackendRegistry, repo_name: str, mode: str, spent: int
) -> None:
    subject = push_subject(source_registry.host, repo_name, f"hub-{mode}")
    sbom = attach_referrer(source_registry.host, repo_name, subject.digest, sbom_referrer(subject))
    with HubFront(source_registry.url, limit=10, referrers=mode) as hub:
        registry = mirror_registry(hub.host)
        listing = list_referrers(registry, repo_name, subject.digest)
        assert hub.remaining == 10 - spent
        head = registry.head_manifest(repo_name, sbom.digest)
        assert head.digest == sbom.digest and hub.remaining == 10 - spent  # a HEAD is free
        assert registry.pull_manifest(repo_name, sbom.digest) is not None
        assert hub.remaining == 9 - spent  # each referrer manifest GET is a pull
        counts = hub.counts
    assert listing is not None
    assert [r.to_json() for r in listing.referrers] == [descriptor_of(sbom)]
    assert counts.referrers_list == 1 and counts.manifest_get == 1 and counts.manifest_head == 1


def test_docker_hub_listing_with_no_pull_left(
    source_registry: BackendRegistry, repo_name: str
) -> None:
    subject = push_subject(source_registry.host, repo_name, "hub-spent")
    with HubFront(source_registry.url, limit=1, referrers="api-pull") as hub:
        hub.set_remaining(0)
        with pytest.raises(RegistryError, match="pull rate limit"):
            list_referrers(mirror_registry(hub.host), repo_name, subject.digest)


def test_the_hub_front_refuses_unknown_referrers_modes(source_registry: BackendRegistry) -> None:
    with pytest.raises(ValueError, match="referrers must be one of"):
        HubFront(source_registry.url, referrers="maybe")


# --- a signed image at a stand-in, found and verified ------------------------------------------


def sig_tag(registry: Registry, repo: str, tag: str) -> tuple[signatures.Material, ...]:
    """A cosign `.sig` tag's signatures, fetched as the gate will: the manifest (a pull on
    Docker Hub), then its payload blobs (no pulls)."""
    sig = registry.pull_manifest(repo, tag)
    assert sig is not None
    payloads = {
        layer.digest: registry.get_blob(repo, layer.digest) or b""
        for layer in signatures.cosign_layers(sig.body, source=tag)
    }
    return signatures.read_cosign(sig.body, payloads, source=tag)


def test_a_signed_image_is_found_and_verified_through_docker_hub(
    source_registry: BackendRegistry, repo_name: str, tmp_path: Path
) -> None:
    """What cosign leaves at a registry without the referrers API: a key-signed `.sig` tag
    and a keyless sigstore bundle referrer in the tag schema, beside an SBOM. Found and
    fetched with mirror's client, verified by mirror's gate; pulls counted at the source."""
    subject = push_subject(source_registry.host, repo_name, "signed")
    key = new_key("ecdsa-p256")
    sigstore = Sigstore()
    attach_cosign(
        source_registry.host,
        repo_name,
        subject.digest,
        [key_signed(key, simple_signing(subject.digest))],
    )
    bundled = sigstore.bundle(in_toto_statement(subject.digest), SUBJECT, ISSUER)
    for attached in (sbom_referrer(subject), bundle_referrer(subject, bundled)):
        attach_referrer(source_registry.host, repo_name, subject.digest, attached, tag_schema=True)
    key_policy = signatures.load_policy(keys=[key.write_public(tmp_path / "cosign.pub")])
    keyless_policy = signatures.load_policy(
        identities=[signatures.Identity(issuer=ISSUER, subject=SUBJECT)],
        trust_root=sigstore.write_trusted_root(tmp_path / "trusted_root.json"),
    )
    with HubFront(source_registry.url, limit=100) as hub:
        registry = mirror_registry(hub.host)
        tag = referrers.cosign_tag(subject.digest)
        assert registry.head_manifest(repo_name, tag).found  # free: worth a pull
        by_key = signatures.verify(subject.digest, sig_tag(registry, repo_name, tag), key_policy)
        index = registry.pull_manifest(repo_name, tag_schema_name(subject.digest))
        assert index is not None
        listing = referrers.parse_listing(index.body, where="tag schema")
        material: list[signatures.Material] = []
        for referrer in listing.referrers:
            if not signatures.worth_fetching(referrer, keyless_policy):
                continue  # the SBOM costs no pull
            manifest = registry.pull_manifest(repo_name, referrer.digest)
            assert manifest is not None
            for layer in signatures.bundle_layers(manifest.body, source=referrer.digest):
                blob = registry.get_blob(repo_name, layer.digest) or b""
                material.append(
                    signatures.read_bundle(blob, digest=layer.digest, source=referrer.digest)
                )
        keyless = signatures.verify(subject.digest, material, keyless_policy)
        counts = hub.counts
    assert by_key.verified, by_key
    assert by_key.by == f"key cosign.pub ({key.fingerprint})"
    assert keyless.verified, keyless
    assert keyless.by == f"identity {SUBJECT} (issuer {ISSUER})"
    assert counts.manifest_get == 3  # the .sig, the tag-schema index, the bundle's manifest
    assert counts.manifest_head == 1
    assert hub.remaining == 97


def test_a_replayed_signature_at_a_stand_in_is_refused(
    source_registry: BackendRegistry, repo_name: str, tmp_path: Path
) -> None:
    """Another image's valid `.sig` copied beside this one (a replay): refused as such."""
    subject = push_subject(source_registry.host, repo_name, "replayed")
    other = push_subject(source_registry.host, repo_name + "-other", "other")
    key = new_key("ed25519")
    attach_cosign(
        source_registry.host,
        repo_name,
        subject.digest,
        [key_signed(key, simple_signing(other.digest))],
    )
    policy = signatures.load_policy(keys=[key.write_public(tmp_path / "cosign.pub")])
    tag = referrers.cosign_tag(subject.digest)
    material = sig_tag(mirror_registry(source_registry.host), repo_name, tag)
    verdict = signatures.verify(subject.digest, material, policy)
    assert verdict.reason is signatures.Reason.OTHER_DIGEST
    assert str(verdict) == (
        f"not verified: signature of another digest: {tag} layer 1: a valid signature of "
        f"{other.digest}, not of {subject.digest} (a signature replayed from another image)"
    )


# --- the blobs a referrer needs, uploaded by mirror ---------------------------------------------


def test_mirror_uploads_a_blob_in_parts_and_a_small_one_whole(
    ecr: Any, ecr_front: EcrFront, repo_name: str
) -> None:
    ecr.create_repository(repositoryName=repo_name)
    registry = mirror_registry(ecr_front.host, ECR_LOGIN)
    large = os.urandom(2 * UPLOAD_PART + 1000)  # in PATCHes of 8 MiB or more, then the PUT
    digest = "sha256:" + hashlib.sha256(large).hexdigest()
    pieces = (large[at : at + 300_000] for at in range(0, len(large), 300_000))
    registry.push_blob(repo_name, digest, pieces, size=len(large))
    assert registry.get_blob(repo_name, digest) == large
    counts = ecr_front.counts
    assert (counts.of("upload_patch"), counts.of("upload_put")) == (2, 1)

    ecr_front.reset_counts()
    small = b'{"spdxVersion":"SPDX-2.3"}'
    registry.push_blob(repo_name, sha256_of(small), [small[:5], small[5:]], size=len(small))
    assert registry.has_blob(repo_name, sha256_of(small))
    assert (ecr_front.counts.of("upload_patch"), ecr_front.counts.of("upload_put")) == (0, 1)

    wrong = sha256_of(b"something else")
    with pytest.raises(RegistryError, match="not what its digest says"):
        registry.push_blob(repo_name, wrong, [small], size=len(small))
    assert not registry.has_blob(repo_name, wrong)  # never committed


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
