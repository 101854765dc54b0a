"""The verify gate's cryptography (mirror/signatures.py) on signatures made as cosign makes them,
with keys made here and a Sigstore of the tests' own (tests/standins/signing.py): no network."""

from __future__ import annotations

import base64
import datetime
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, padding, rsa

from mirror import signatures
from mirror.errors import ConfigError
from mirror.referrers import ContentDescriptor
from mirror.signatures import (
    CosignSignature,
    Identity,
    Material,
    Policy,
    PolicyError,
    Reason,
    SigstoreBundle,
    Unreadable,
    load_policy,
    read_bundle,
    read_cosign,
    verify,
)
from tests.standins.signing import (
    BUNDLE_ANNOTATION,
    CERTIFICATE_ANNOTATION,
    KEY_KINDS,
    SIGN_PREDICATE,
    SIGNATURE_ANNOTATION,
    KeyPair,
    SigLayer,
    Sigstore,
    bundle_referrer,
    cosign_sig_manifest,
    in_toto_statement,
    key_bundle,
    key_signed,
    new_key,
    simple_signing,
)

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
ISSUER = "https://token.actions.githubusercontent.com"
SUBJECT = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
SLSA = "https://slsa.dev/provenance/v1"
MEDIA_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"


@pytest.fixture(scope="module")
def sigstore() -> Sigstore:
    return Sigstore()


@pytest.fixture(scope="module")
def trust_root(sigstore: Sigstore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sigstore.write_trusted_root(tmp_path_factory.mktemp("root") / "trusted_root.json")


@pytest.fixture(scope="module")
def key() -> KeyPair:
    return new_key("ecdsa-p256")


@pytest.fixture(scope="module")
def stranger() -> KeyPair:
    return new_key("ecdsa-p256")


@pytest.fixture
def key_policy(key: KeyPair, tmp_path: Path) -> Policy:
    return load_policy(keys=[key.write_public(tmp_path / "cosign.pub")])


@pytest.fixture(scope="module")
def identity_policy(trust_root: Path) -> Policy:
    return load_policy(identities=[Identity(issuer=ISSUER, subject=SUBJECT)], trust_root=trust_root)


def sig_tag(layers: Sequence[SigLayer], source: str = "sha256-ab.sig") -> tuple[Material, ...]:
    """What the registry boundary hands over for a .sig tag: the manifest and its payloads."""
    manifest, blobs = cosign_sig_manifest(list(layers))
    payloads = {blob.digest: blob.data for blob in blobs.values()}
    return read_cosign(manifest.data, payloads, source=source)


def bundle(data: bytes, source: str = "referrer sha256:r1") -> Material:
    return SigstoreBundle(data, source)


def one_line(verdict: signatures.Verdict) -> str:
    text = str(verdict)
    assert "\n" not in text and "Traceback" not in text
    return text


# --- keys ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_a_signature_by_a_policy_key_of_each_kind_verifies(kind: str, tmp_path: Path) -> None:
    signer = new_key(kind)
    policy = load_policy(keys=[signer.write_public(tmp_path / f"{kind}.pub")])
    verdict = verify(DIGEST, sig_tag([key_signed(signer, simple_signing(DIGEST))]), policy)
    assert verdict.verified
    assert verdict.by == f"key {kind}.pub ({signer.fingerprint})"
    assert (
        one_line(verdict)
        == f"verified: key {kind}.pub ({signer.fingerprint}) (sha256-ab.sig layer 1)"
    )


def test_a_signature_by_another_key_is_untrusted(key_policy: Policy, stranger: KeyPair) -> None:
    verdict = verify(DIGEST, sig_tag([key_signed(stranger, simple_signing(DIGEST))]), key_policy)
    assert not verdict.verified
    assert verdict.reason is Reason.UNTRUSTED_KEY
    assert one_line(verdict) == (
        "not verified: untrusted key: sha256-ab.sig layer 1: the signature verifies with none "
        "of the policy's 1 key(s)"
    )


def test_a_valid_signature_of_another_digest_is_a_replay(key_policy: Policy, key: KeyPair) -> None:
    verdict = verify(DIGEST, sig_tag([key_signed(key, simple_signing(OTHER))]), key_policy)
    assert verdict.reason is Reason.OTHER_DIGEST
    assert one_line(verdict) == (
        f"not verified: signature of another digest: sha256-ab.sig layer 1: a valid signature "
        f"of {OTHER}, not of {DIGEST} (a signature replayed from another image)"
    )


def test_no_signature_at_all(key_policy: Policy) -> None:
    verdict = verify(DIGEST, [], key_policy)
    assert verdict.reason is Reason.NO_SIGNATURE
    assert one_line(verdict) == (
        "not verified: no signature: no cosign signature and no sigstore bundle signs the image"
    )


def test_a_payload_changed_after_signing_verifies_with_no_key(
    key_policy: Policy, key: KeyPair
) -> None:
    signed = key_signed(key, simple_signing(OTHER))
    forged = SigLayer(simple_signing(DIGEST), signed.annotations)  # the replay, "repaired"
    verdict = verify(DIGEST, sig_tag([forged]), key_policy)
    assert verdict.reason is Reason.UNTRUSTED_KEY


def test_one_good_signature_among_bad_ones_verifies(
    key_policy: Policy, key: KeyPair, stranger: KeyPair
) -> None:
    layers = [
        key_signed(stranger, simple_signing(DIGEST)),
        key_signed(key, simple_signing(OTHER)),
        key_signed(key, simple_signing(DIGEST)),
    ]
    verdict = verify(DIGEST, sig_tag(layers), key_policy)
    assert verdict.verified and verdict.source == "sha256-ab.sig layer 3"


def test_the_most_telling_failure_is_reported_with_the_count(
    key_policy: Policy, key: KeyPair, stranger: KeyPair
) -> None:
    layers = [key_signed(stranger, simple_signing(DIGEST)), key_signed(key, simple_signing(OTHER))]
    verdict = verify(DIGEST, sig_tag(layers), key_policy)
    assert verdict.reason is Reason.OTHER_DIGEST
    assert verdict.source == "sha256-ab.sig layer 2"
    assert verdict.detail.endswith("(2 signatures tried)")


def test_several_keys_name_the_one_that_verified(
    key: KeyPair, stranger: KeyPair, tmp_path: Path
) -> None:
    policy = load_policy(
        keys=[stranger.write_public(tmp_path / "old.pub"), key.write_public(tmp_path / "new.pub")]
    )
    verdict = verify(DIGEST, sig_tag([key_signed(key, simple_signing(DIGEST))]), policy)
    assert verdict.by == f"key new.pub ({key.fingerprint})"


def test_a_key_signature_is_untrusted_under_an_identity_only_policy(
    identity_policy: Policy, key: KeyPair
) -> None:
    verdict = verify(DIGEST, sig_tag([key_signed(key, simple_signing(DIGEST))]), identity_policy)
    assert verdict.reason is Reason.UNTRUSTED_KEY
    assert "signed with a key, and the policy trusts only keyless identities" in verdict.detail


PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)


@pytest.mark.parametrize(
    ("kind", "sign"),
    [
        ("ecdsa-p384", lambda private, data: private.sign(data, ec.ECDSA(hashes.SHA384()))),
        ("rsa", lambda private, data: private.sign(data, PSS, hashes.SHA256())),
    ],
)
def test_other_hashes_and_paddings_cosign_writes_verify(
    kind: str, sign: Callable[[Any, bytes], bytes], tmp_path: Path
) -> None:
    signer = new_key(kind)
    payload = simple_signing(DIGEST)
    layer = SigLayer(
        payload, {SIGNATURE_ANNOTATION: base64.b64encode(sign(signer.private, payload)).decode()}
    )
    policy = load_policy(keys=[signer.write_public(tmp_path / "k.pub")])
    assert verify(DIGEST, sig_tag([layer]), policy).verified


# --- keyless, cosign's .sig layout ----------------------------------------------------------------


def test_a_keyless_signature_of_a_policy_identity_verifies(
    sigstore: Sigstore, identity_policy: Policy
) -> None:
    layer = sigstore.keyless_signed(simple_signing(DIGEST), SUBJECT, ISSUER)
    verdict = verify(DIGEST, sig_tag([layer]), identity_policy)
    assert verdict.verified, verdict
    assert verdict.by == f"identity {SUBJECT} (issuer {ISSUER})"


@pytest.mark.parametrize(
    ("subject", "issuer"),
    [(SUBJECT.replace("acme", "evil"), ISSUER), (SUBJECT, "https://accounts.google.com")],
)
def test_a_keyless_signature_of_another_identity_is_refused(
    sigstore: Sigstore, identity_policy: Policy, subject: str, issuer: str
) -> None:
    layer = sigstore.keyless_signed(simple_signing(DIGEST), subject, issuer)
    verdict = verify(DIGEST, sig_tag([layer]), identity_policy)
    assert verdict.reason is Reason.IDENTITY_MISMATCH
    assert one_line(verdict) == (
        f"not verified: identity mismatch: sha256-ab.sig layer 1: signed by {subject} (issuer "
        f"{issuer}), which is not an identity of the policy ({SUBJECT} (issuer {ISSUER}))"
    )


def test_subject_regex_is_matched_whole(sigstore: Sigstore, trust_root: Path) -> None:
    pattern = r"https://github\.com/acme/[^/]+/\.github/workflows/release\.yml@refs/heads/main"
    policy = load_policy(
        identities=[Identity(issuer=ISSUER, subject_regex=pattern)], trust_root=trust_root
    )
    good = sigstore.keyless_signed(simple_signing(DIGEST), SUBJECT, ISSUER)
    longer = sigstore.keyless_signed(simple_signing(DIGEST), SUBJECT + "-fork", ISSUER)
    assert verify(DIGEST, sig_tag([good]), policy).verified
    assert verify(DIGEST, sig_tag([longer]), policy).reason is Reason.IDENTITY_MISMATCH


def test_an_email_identity(sigstore: Sigstore, trust_root: Path) -> None:
    issuer = "https://accounts.google.com"
    policy = load_policy(
        identities=[Identity(issuer=issuer, subject="dev@example.com")], trust_root=trust_root
    )
    layer = sigstore.keyless_signed(simple_signing(DIGEST), "dev@example.com", issuer)
    assert (
        verify(DIGEST, sig_tag([layer]), policy).by == f"identity dev@example.com (issuer {issuer})"
    )


def test_a_keyless_replay_is_named(sigstore: Sigstore, identity_policy: Policy) -> None:
    layer = sigstore.keyless_signed(simple_signing(OTHER), SUBJECT, ISSUER)
    assert verify(DIGEST, sig_tag([layer]), identity_policy).reason is Reason.OTHER_DIGEST


def test_a_certificate_from_a_ca_outside_the_trust_root(
    sigstore: Sigstore, identity_policy: Policy
) -> None:
    rogue = ec.generate_private_key(ec.SECP384R1())
    layer = sigstore.keyless_signed(simple_signing(DIGEST), SUBJECT, ISSUER, ca_key=rogue)
    verdict = verify(DIGEST, sig_tag([layer]), identity_policy)
    assert verdict.reason is Reason.BAD_CERTIFICATE
    assert "the certificate does not chain to the trust root" in verdict.detail


def test_a_signature_that_was_never_logged(sigstore: Sigstore, identity_policy: Policy) -> None:
    layer = sigstore.keyless_signed(simple_signing(DIGEST), SUBJECT, ISSUER, logged=False)
    verdict = verify(DIGEST, sig_tag([layer]), identity_policy)
    assert verdict.reason is Reason.BAD_TLOG
    assert verdict.detail == (
        f"sha256-ab.sig layer 1: no transparency-log entry ({BUNDLE_ANNOTATION} annotation)"
    )


def test_a_forged_signed_entry_timestamp(sigstore: Sigstore, identity_policy: Policy) -> None:
    layer = sigstore.keyless_signed(simple_signing(DIGEST), SUBJECT, ISSUER, tamper_set=True)
    verdict = verify(DIGEST, sig_tag([layer]), identity_policy)
    assert verdict.reason is Reason.BAD_TLOG
    assert "the signed entry timestamp is not from a Rekor log of" in verdict.detail


def test_a_log_entry_of_another_signature(sigstore: Sigstore, identity_policy: Policy) -> None:
    mine = sigstore.keyless_signed(simple_signing(DIGEST), SUBJECT, ISSUER)
    theirs = sigstore.keyless_signed(simple_signing(OTHER), SUBJECT, ISSUER)
    spliced = SigLayer(
        mine.payload, {**mine.annotations, BUNDLE_ANNOTATION: theirs.annotations[BUNDLE_ANNOTATION]}
    )
    verdict = verify(DIGEST, sig_tag([spliced]), identity_policy)
    assert verdict.reason is Reason.BAD_TLOG
    assert "the transparency-log entry is for another signature" in verdict.detail


def test_a_signature_that_is_not_its_certificates(
    sigstore: Sigstore, identity_policy: Policy, key: KeyPair
) -> None:
    layer = sigstore.keyless_signed(simple_signing(DIGEST), SUBJECT, ISSUER)
    forged = SigLayer(
        layer.payload,
        {**layer.annotations, **key_signed(key, layer.payload).annotations},
    )
    verdict = verify(DIGEST, sig_tag([forged]), identity_policy)
    assert verdict.reason is Reason.BAD_SIGNATURE


def test_a_certificate_without_an_sct(sigstore: Sigstore, identity_policy: Policy) -> None:
    layer = sigstore.keyless_signed(simple_signing(DIGEST), SUBJECT, ISSUER, sct=False)
    verdict = verify(DIGEST, sig_tag([layer]), identity_policy)
    assert verdict.reason is Reason.BAD_CERTIFICATE
    assert "the certificate has no valid CT log timestamp (SCT)" in verdict.detail
    data = sigstore.bundle(in_toto_statement(DIGEST), SUBJECT, ISSUER, sct=False)
    verdict = verify(DIGEST, [bundle(data)], identity_policy)
    assert verdict.reason is Reason.BAD_CERTIFICATE
    assert "signed certificate timestamp" in verdict.detail


def test_a_signature_logged_after_its_certificate_expired(
    sigstore: Sigstore, identity_policy: Policy
) -> None:
    late = datetime.timedelta(minutes=20)  # Fulcio's certificates live ten minutes
    layer = sigstore.keyless_signed(simple_signing(DIGEST), SUBJECT, ISSUER, log_delay=late)
    verdict = verify(DIGEST, sig_tag([layer]), identity_policy)
    assert verdict.reason is Reason.BAD_CERTIFICATE
    data = sigstore.bundle(in_toto_statement(DIGEST), SUBJECT, ISSUER, log_delay=late)
    assert verify(DIGEST, [bundle(data)], identity_policy).reason is Reason.BAD_CERTIFICATE


def test_a_trust_root_of_another_sigstore_trusts_nothing_of_ours(
    sigstore: Sigstore, tmp_path: Path
) -> None:
    theirs = Sigstore().write_trusted_root(tmp_path / "theirs.json")
    policy = load_policy(identities=[Identity(issuer=ISSUER, subject=SUBJECT)], trust_root=theirs)
    layer = sigstore.keyless_signed(simple_signing(DIGEST), SUBJECT, ISSUER)
    assert verify(DIGEST, sig_tag([layer]), policy).reason is Reason.BAD_TLOG


def test_the_shipped_trust_root_is_the_default_and_trusts_nothing_of_ours(
    sigstore: Sigstore,
) -> None:
    policy = load_policy(identities=[Identity(issuer=ISSUER, subject=SUBJECT)])
    assert policy.trust_root is not None
    assert policy.trust_root.name.startswith("the Sigstore public-good trusted root shipped with")
    layer = sigstore.keyless_signed(simple_signing(DIGEST), SUBJECT, ISSUER)
    bundled = sigstore.bundle(in_toto_statement(DIGEST), SUBJECT, ISSUER)
    assert not verify(DIGEST, sig_tag([layer]), policy).verified
    assert not verify(DIGEST, [bundle(bundled)], policy).verified


def test_a_keyless_signature_is_untrusted_under_a_key_only_policy(
    sigstore: Sigstore, key_policy: Policy
) -> None:
    layer = sigstore.keyless_signed(simple_signing(DIGEST), SUBJECT, ISSUER)
    verdict = verify(DIGEST, sig_tag([layer]), key_policy)
    assert verdict.reason is Reason.UNTRUSTED_KEY
    assert (
        "a keyless signature (Fulcio certificate), and the policy trusts only keys"
        in verdict.detail
    )


def test_keys_and_identities_together(
    sigstore: Sigstore, key: KeyPair, trust_root: Path, tmp_path: Path
) -> None:
    policy = load_policy(
        keys=[key.write_public(tmp_path / "cosign.pub")],
        identities=[Identity(issuer=ISSUER, subject=SUBJECT)],
        trust_root=trust_root,
    )
    keyless = sigstore.keyless_signed(simple_signing(DIGEST), SUBJECT, ISSUER)
    assert verify(DIGEST, sig_tag([keyless]), policy).verified
    assert verify(DIGEST, sig_tag([key_signed(key, simple_signing(DIGEST))]), policy).verified


# --- sigstore bundles as referrers ---------------------------------------------------------------


def test_our_sigstore_satisfies_sigstores_own_verifier(
    sigstore: Sigstore, trust_root: Path
) -> None:
    """The fixtures are checked by the real library's public API, not by our reading of it."""
    from sigstore.models import Bundle, TrustedRoot
    from sigstore.verify import Verifier
    from sigstore.verify.policy import Identity as SigstoreIdentity

    verifier = Verifier(trusted_root=TrustedRoot.from_file(str(trust_root)))
    data = sigstore.bundle(in_toto_statement(DIGEST), "dev@example.com", ISSUER)
    payload_type, payload = verifier.verify_dsse(
        Bundle.from_json(data), SigstoreIdentity(identity="dev@example.com", issuer=ISSUER)
    )
    assert payload_type == "application/vnd.in-toto+json"
    assert json.loads(payload)["subject"][0]["digest"]["sha256"] == DIGEST[7:]


def test_a_keyless_bundle_of_a_policy_identity_verifies(
    sigstore: Sigstore, identity_policy: Policy
) -> None:
    data = sigstore.bundle(in_toto_statement(DIGEST), SUBJECT, ISSUER)
    verdict = verify(DIGEST, [bundle(data)], identity_policy)
    assert verdict.verified, verdict
    assert one_line(verdict) == (
        f"verified: identity {SUBJECT} (issuer {ISSUER}) (referrer sha256:r1)"
    )


def test_a_bundle_of_another_digest_is_a_replay(
    sigstore: Sigstore, identity_policy: Policy
) -> None:
    data = sigstore.bundle(in_toto_statement(OTHER), SUBJECT, ISSUER)
    verdict = verify(DIGEST, [bundle(data)], identity_policy)
    assert verdict.reason is Reason.OTHER_DIGEST
    assert f"a valid signature of {OTHER}, not of {DIGEST}" in verdict.detail


def test_a_bundle_of_another_identity(sigstore: Sigstore, identity_policy: Policy) -> None:
    data = sigstore.bundle(in_toto_statement(DIGEST), "eve@example.com", ISSUER)
    verdict = verify(DIGEST, [bundle(data)], identity_policy)
    assert verdict.reason is Reason.IDENTITY_MISMATCH
    assert "signed by eve@example.com" in verdict.detail


def test_a_bundle_with_a_broken_inclusion_proof(
    sigstore: Sigstore, identity_policy: Policy
) -> None:
    data = sigstore.bundle(in_toto_statement(DIGEST), SUBJECT, ISSUER, tamper_proof=True)
    verdict = verify(DIGEST, [bundle(data)], identity_policy)
    assert verdict.reason is Reason.BAD_TLOG
    assert "inclusion proof" in verdict.detail
    assert len(one_line(verdict)) < 400


def test_a_bundle_from_a_ca_outside_the_trust_root(
    sigstore: Sigstore, identity_policy: Policy
) -> None:
    rogue = ec.generate_private_key(ec.SECP384R1())
    data = sigstore.bundle(in_toto_statement(DIGEST), SUBJECT, ISSUER, ca_key=rogue)
    assert verify(DIGEST, [bundle(data)], identity_policy).reason is Reason.BAD_CERTIFICATE


def test_an_attestation_bundle_is_no_signature(sigstore: Sigstore, identity_policy: Policy) -> None:
    data = sigstore.bundle(in_toto_statement(DIGEST, SLSA), SUBJECT, ISSUER)
    verdict = verify(DIGEST, [bundle(data)], identity_policy)
    assert verdict.reason is Reason.NO_SIGNATURE
    assert verdict.detail == (
        f"nothing signs the image: referrer sha256:r1: an attestation ({SLSA}), not a signature"
    )


def test_attestations_count_when_the_policy_says_so(sigstore: Sigstore, trust_root: Path) -> None:
    policy = load_policy(
        identities=[Identity(issuer=ISSUER, subject=SUBJECT)],
        trust_root=trust_root,
        predicate_types=[SIGN_PREDICATE, SLSA],
    )
    data = sigstore.bundle(in_toto_statement(DIGEST, SLSA), SUBJECT, ISSUER)
    assert verify(DIGEST, [bundle(data)], policy).verified


def test_a_statement_that_names_no_digest(key_policy: Policy, key: KeyPair) -> None:
    statement = json.dumps(
        {"_type": "https://in-toto.io/Statement/v1", "subject": [{"name": "x", "digest": {}}],
         "predicateType": SIGN_PREDICATE, "predicate": {}}
    ).encode()  # fmt: skip
    verdict = verify(DIGEST, [bundle(key_bundle(key, statement))], key_policy)
    assert (verdict.reason, verdict.detail) == (
        Reason.UNREADABLE,
        "referrer sha256:r1: the statement names no sha256 digest",
    )


def test_a_key_signed_bundle(key_policy: Policy, key: KeyPair, stranger: KeyPair) -> None:
    good = key_bundle(key, in_toto_statement(DIGEST))
    other_key = key_bundle(stranger, in_toto_statement(DIGEST))
    replay = key_bundle(key, in_toto_statement(OTHER))
    assert verify(DIGEST, [bundle(good)], key_policy).by == f"key cosign.pub ({key.fingerprint})"
    assert verify(DIGEST, [bundle(other_key)], key_policy).reason is Reason.UNTRUSTED_KEY
    assert verify(DIGEST, [bundle(replay)], key_policy).reason is Reason.OTHER_DIGEST


def test_a_keyless_bundle_under_a_key_only_policy(sigstore: Sigstore, key_policy: Policy) -> None:
    data = sigstore.bundle(in_toto_statement(DIGEST), SUBJECT, ISSUER)
    assert verify(DIGEST, [bundle(data)], key_policy).reason is Reason.UNTRUSTED_KEY


def test_which_referrers_are_worth_fetching(identity_policy: Policy) -> None:
    def referrer(artifact_type: str, predicate: str | None = None) -> ContentDescriptor:
        annotations = (("dev.sigstore.bundle.predicateType", predicate),) if predicate else ()
        return ContentDescriptor(
            "application/vnd.oci.image.manifest.v1+json", DIGEST, 1, artifact_type, annotations
        )

    v03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
    v02 = "application/vnd.dev.sigstore.bundle+json;version=0.2"
    assert signatures.worth_fetching(referrer(v03, SIGN_PREDICATE), identity_policy)
    assert signatures.worth_fetching(referrer(v03), identity_policy)
    assert signatures.worth_fetching(referrer(v02), identity_policy)
    assert not signatures.worth_fetching(referrer(v03, SLSA), identity_policy)
    assert not signatures.worth_fetching(referrer("application/spdx+json"), identity_policy)


def test_a_bundle_referrer_manifest_names_its_bundle_blob(sigstore: Sigstore) -> None:
    data = sigstore.bundle(in_toto_statement(DIGEST), SUBJECT, ISSUER)
    manifest, blobs = bundle_referrer(
        ("application/vnd.oci.image.manifest.v1+json", DIGEST, 100), data
    )
    (layer,) = signatures.bundle_layers(manifest.data, source="referrer")
    assert blobs[layer.digest].data == data
    assert read_bundle(data, digest=layer.digest, source="r") == SigstoreBundle(data, "r")
    assert read_bundle(data + b" ", digest=layer.digest, source="r") == Unreadable(
        "r", f"the bundle does not match its digest {layer.digest}"
    )


# --- hostile material: bounded, one line ---------------------------------------------------------


def test_a_layer_whose_payload_is_not_what_its_digest_says(
    key_policy: Policy, key: KeyPair
) -> None:
    manifest, blobs = cosign_sig_manifest([key_signed(key, simple_signing(DIGEST))])
    payloads = {digest: blob.data + b" " for digest, blob in blobs.items()}
    (item,) = read_cosign(manifest.data, payloads, source="sha256-ab.sig")
    assert isinstance(item, Unreadable)
    verdict = verify(DIGEST, [item], key_policy)
    assert verdict.reason is Reason.UNREADABLE
    assert "its payload does not match its digest" in verdict.detail


def test_a_missing_payload(key_policy: Policy, key: KeyPair) -> None:
    manifest, _ = cosign_sig_manifest([key_signed(key, simple_signing(DIGEST))])
    (item,) = read_cosign(manifest.data, {}, source="sha256-ab.sig")
    assert isinstance(item, Unreadable) and "was not fetched" in item.why


@pytest.mark.parametrize(
    ("manifest", "why"),
    [
        (b"not json", "the manifest is not JSON"),
        (
            b"[" * 100_000 + b"]" * 100_000,
            "the manifest is JSON nested too deeply to read",
        ),
        (b"[]", "the manifest is not a JSON object"),
        (json.dumps({"layers": "x"}).encode(), "layers is not a list"),
        (b"{}", "a .sig manifest with no simple-signing layer"),
        (b" " * (5 << 20), "the manifest is 5,242,880 bytes, over 4,194,304"),
    ],
)
def test_a_manifest_that_cannot_be_read(manifest: bytes, why: str, key_policy: Policy) -> None:
    (item,) = read_cosign(manifest, {}, source="sha256-ab.sig")
    assert item == Unreadable("sha256-ab.sig", why)
    assert verify(DIGEST, [item], key_policy).reason is Reason.UNREADABLE


def test_too_many_layers_are_refused() -> None:
    layer = {
        "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
        "digest": DIGEST,
        "size": 1,
    }
    manifest = json.dumps({"layers": [layer] * 5000}).encode()
    (item,) = read_cosign(manifest, {}, source="s")
    assert item == Unreadable("s", "5,000 layers, over 1,000")


@pytest.mark.parametrize(
    ("annotations", "payload", "reason", "detail"),
    [
        ({}, None, Reason.UNREADABLE, "s: no dev.cosignproject.cosign/signature annotation"),
        (
            {SIGNATURE_ANNOTATION: "%%%"},
            None,
            Reason.UNREADABLE,
            "s: dev.cosignproject.cosign/signature is not base64",
        ),
        (
            {SIGNATURE_ANNOTATION: "A" * 70_000},
            None,
            Reason.UNREADABLE,
            "s: a dev.cosignproject.cosign/signature of 70,000 characters",
        ),
        (
            {SIGNATURE_ANNOTATION: "AAAA", CERTIFICATE_ANNOTATION: "junk"},
            None,
            Reason.UNREADABLE,
            f"s: {CERTIFICATE_ANNOTATION} is not a PEM certificate",
        ),
    ],
)
def test_hostile_annotations(
    annotations: dict[str, str],
    payload: bytes | None,
    reason: Reason,
    detail: str,
    trust_root: Path,
    key: KeyPair,
    tmp_path: Path,
) -> None:
    policy = load_policy(
        keys=[key.write_public(tmp_path / "k.pub")],
        identities=[Identity(issuer=ISSUER, subject=SUBJECT)],
        trust_root=trust_root,
    )
    item = CosignSignature(payload or simple_signing(DIGEST), tuple(annotations.items()), "s")
    verdict = verify(DIGEST, [item], policy)
    assert (verdict.reason, verdict.detail) == (reason, detail)


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        (b"[" * 50_000, "s: the payload is JSON nested too deeply to read"),
        (b"x" * 300_000, "s: the payload is 300,000 bytes (at most 262,144)"),
        (b'{"critical": 1}', "s: the payload has no `critical` section"),
        (b'{"critical": {"type": "x"}}', "s: not a cosign image signature (type 'x')"),
        (
            b'{"critical": {"type": "cosign container image signature"}}',
            "s: the payload names no docker-manifest-digest",
        ),
    ],
)
def test_a_signed_payload_that_is_no_image_signature(
    payload: bytes, detail: str, key: KeyPair, key_policy: Policy
) -> None:
    item = CosignSignature(payload, tuple(key_signed(key, payload).annotations.items()), "s")
    verdict = verify(DIGEST, [item], key_policy)
    assert (verdict.reason, verdict.detail) == (Reason.UNREADABLE, detail)


@pytest.mark.parametrize(
    ("data", "reason", "start"),
    [
        (b"{", Reason.UNREADABLE, "r: the bundle is not JSON"),
        (b"[" * 100_000, Reason.UNREADABLE, "r: the bundle is JSON nested too deeply to read"),
        (b"{}", Reason.UNREADABLE, "r: the bundle has no verificationMaterial"),
        (
            json.dumps({"verificationMaterial": {"certificate": 1}}).encode(),
            Reason.UNREADABLE,
            "r: not a sigstore bundle: ",
        ),
        (
            json.dumps({"verificationMaterial": {"publicKey": {}}}).encode(),
            Reason.NO_SIGNATURE,
            "nothing signs the image: r: a bundle without a DSSE envelope",
        ),
        (
            json.dumps(
                {"verificationMaterial": {"publicKey": {}}, "dsseEnvelope": {"payload": "%"}}
            ).encode(),
            Reason.UNREADABLE,
            "r: the bundle's DSSE envelope cannot be read",
        ),
    ],
)
def test_hostile_bundles(
    data: bytes, reason: Reason, start: str, key: KeyPair, trust_root: Path, tmp_path: Path
) -> None:
    policy = load_policy(
        keys=[key.write_public(tmp_path / "k.pub")],
        identities=[Identity(issuer=ISSUER, subject=SUBJECT)],
        trust_root=trust_root,
    )
    verdict = verify(DIGEST, [SigstoreBundle(data, "r")], policy)
    assert verdict.reason is reason
    assert verdict.detail.startswith(start), verdict.detail
    one_line(verdict)


def test_a_rekor_bundle_annotation_that_is_not_one(
    sigstore: Sigstore, identity_policy: Policy
) -> None:
    layer = sigstore.keyless_signed(simple_signing(DIGEST), SUBJECT, ISSUER)
    for junk in ("x", "[" * 60_000, json.dumps({"Payload": {"body": "%"}})):
        spliced = SigLayer(layer.payload, {**layer.annotations, BUNDLE_ANNOTATION: junk})
        verdict = verify(DIGEST, sig_tag([spliced]), identity_policy)
        assert verdict.reason is Reason.BAD_TLOG
        one_line(verdict)


def test_only_so_many_signatures_are_tried(
    key_policy: Policy, key: KeyPair, stranger: KeyPair
) -> None:
    bad = CosignSignature(
        simple_signing(DIGEST),
        tuple(key_signed(stranger, simple_signing(DIGEST)).annotations.items()),
        "bad",
    )
    good = CosignSignature(
        simple_signing(DIGEST),
        tuple(key_signed(key, simple_signing(DIGEST)).annotations.items()),
        "good",
    )
    material = [bad] * signatures.MAX_SIGNATURES + [good]
    started = time.monotonic()
    verdict = verify(DIGEST, material, key_policy)
    assert time.monotonic() - started < 30  # bounded: not a timing assertion on the machine
    assert verdict.reason is Reason.UNTRUSTED_KEY
    assert verdict.detail.endswith(
        f"(the first {signatures.MAX_SIGNATURES} of {signatures.MAX_SIGNATURES + 1} "
        "signatures tried)"
    )


def test_a_digest_that_is_not_one_is_a_programming_error(key_policy: Policy) -> None:
    with pytest.raises(ValueError, match="not a digest"):
        verify("latest", [], key_policy)


# --- the policy --------------------------------------------------------------------------------


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def public_pem(private: object) -> bytes:
    return private.public_key().public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_bad_key_files_are_named(tmp_path: Path, key: KeyPair) -> None:
    private = key.private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cases = {
        tmp_path / "missing.pub": "verify.keys[0]: {p}: cannot read: No such file or directory",
        write(tmp_path / "cosign.key", private): (
            "verify.keys[0]: {p} holds a private key: give the public key (cosign.pub)"
        ),
        write(tmp_path / "text.pub", b"hello"): (
            "verify.keys[0]: {p} is not a PEM public key (cosign's cosign.pub, "
            "-----BEGIN PUBLIC KEY-----)"
        ),
        write(tmp_path / "big.pub", b"x" * 70_000): (
            "verify.keys[0]: {p} is over 65,536 bytes: not a key or trust root"
        ),
        write(tmp_path / "ed448.pub", public_pem(ed448.Ed448PrivateKey.generate())): (
            "verify.keys[0]: {p}: a key of type Ed448PublicKey: cosign keys are ECDSA, RSA or "
            "Ed25519"
        ),
        write(tmp_path / "rsa1024.pub", public_pem(rsa.generate_private_key(65537, 1024))): (  # noqa: S505 - on purpose
            "verify.keys[0]: {p}: an RSA key of 1024 bits (2048 at least)"
        ),
        write(tmp_path / "k1.pub", public_pem(ec.generate_private_key(ec.SECP256K1()))): (
            "verify.keys[0]: {p}: an ECDSA key on secp256k1: cosign uses P-256, P-384 or P-521"
        ),
        tmp_path: "verify.keys[0]: {p}: cannot read: Is a directory",
        write(
            tmp_path / "two.pub",
            key.public_pem + public_pem(ec.generate_private_key(ec.SECP256R1())),
        ): (
            "verify.keys[0]: {p} holds 2 PEM blocks, and only the first would be read: give one "
            "public key per file (list each in keys)"
        ),
        write(
            tmp_path / "cert.pem", b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        ): (
            "verify.keys[0]: {p} holds a certificate, not a public key: give the key it "
            "certifies (openssl x509 -pubkey -noout -in FILE), or, for keyless signatures, "
            "identities"
        ),
    }
    for path, message in cases.items():
        with pytest.raises(PolicyError) as raised:
            load_policy(keys=[path])
        assert str(raised.value) == message.format(p=path)
        assert isinstance(raised.value, ConfigError)  # exit code 2, one line, no traceback


@pytest.mark.parametrize(
    ("identity", "message"),
    [
        (
            Identity(issuer="", subject="x"),
            "verify.identities[0]: issuer: expected the OIDC issuer URL, e.g. https://token.actions.githubusercontent.com",
        ),
        (
            Identity(issuer=ISSUER),
            "verify.identities[0]: give exactly one of subject and subject_regex",
        ),
        (
            Identity(issuer=ISSUER, subject="a", subject_regex="b"),
            "verify.identities[0]: give exactly one of subject and subject_regex",
        ),
        (
            Identity(issuer=ISSUER, subject=""),
            "verify.identities[0]: subject: expected a non-empty string",
        ),
        (
            Identity(issuer=ISSUER, subject_regex="(?=x)"),
            "verify.identities[0]: subject_regex: bad regular expression: invalid perl "
            "operator: (?= (RE2 syntax)",
        ),
        (
            Identity(issuer=ISSUER, subject_regex="a{1001}"),
            "verify.identities[0]: subject_regex: bad regular expression: invalid repetition "
            "size: {1001} (RE2 syntax)",
        ),
    ],
)
def test_bad_identities_are_named(identity: Identity, message: str) -> None:
    with pytest.raises(PolicyError) as raised:
        load_policy(identities=[identity])
    assert str(raised.value) == message


def test_a_pathological_subject_regex_is_linear(sigstore: Sigstore, trust_root: Path) -> None:
    policy = load_policy(
        identities=[Identity(issuer=ISSUER, subject_regex=r"(a+)+$")], trust_root=trust_root
    )
    layer = sigstore.keyless_signed(simple_signing(DIGEST), "a" * 5000 + "!@example.com", ISSUER)
    started = time.monotonic()
    assert verify(DIGEST, sig_tag([layer]), policy).reason is Reason.IDENTITY_MISMATCH
    assert time.monotonic() - started < 30  # Python's re would take for ever; RE2 is linear


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not json", "{w}: not a sigstore trusted root (not a JSON object)"),
        (b"[]", "{w}: not a sigstore trusted root (not a JSON object)"),
        (
            b"{}",
            "{w}: not a sigstore trusted root: its mediaType is 'None', not "
            "'application/vnd.dev.sigstore.trustedroot+json;version=0.1'",
        ),
        (
            json.dumps({"mediaType": MEDIA_TYPE}).encode(),
            "{w}: not a usable sigstore trusted root: tlogs: Field required (and 2 more)",
        ),
    ],
)
def test_bad_trust_roots_are_named(content: bytes, message: str, tmp_path: Path) -> None:
    path = write(tmp_path / "root.json", content)
    with pytest.raises(PolicyError) as raised:
        load_policy(identities=[Identity(issuer=ISSUER, subject=SUBJECT)], trust_root=path)
    assert str(raised.value) == message.format(w=f"verify.trust_root: {path}")


def test_a_trust_root_without_a_rekor_log(sigstore: Sigstore, tmp_path: Path) -> None:
    doc = sigstore.trusted_root()
    doc["tlogs"] = []
    path = write(tmp_path / "root.json", json.dumps(doc).encode())
    with pytest.raises(PolicyError, match="not a usable sigstore trusted root"):
        load_policy(identities=[Identity(issuer=ISSUER, subject=SUBJECT)], trust_root=path)


def test_a_policy_needs_keys_or_identities() -> None:
    with pytest.raises(PolicyError) as raised:
        load_policy(where="images[3].verify")
    assert str(raised.value) == "images[3].verify: give keys, identities or both"


def test_the_entry_at_fault_is_numbered(key: KeyPair, tmp_path: Path) -> None:
    good = key.write_public(tmp_path / "good.pub")
    with pytest.raises(PolicyError, match=r"^defaults\.verify\.keys\[1\]: "):
        load_policy(keys=[good, tmp_path / "nope.pub"], where="defaults.verify")
    with pytest.raises(PolicyError, match=r"^defaults\.verify\.identities\[1\]: "):
        load_policy(
            identities=[Identity(issuer=ISSUER, subject=SUBJECT), Identity(issuer=ISSUER)],
            where="defaults.verify",
        )


def test_a_trust_root_without_identities_is_a_mistake(
    key: KeyPair, trust_root: Path, tmp_path: Path
) -> None:
    with pytest.raises(PolicyError) as raised:
        load_policy(keys=[key.write_public(tmp_path / "k.pub")], trust_root=trust_root)
    assert str(raised.value) == (
        "verify.trust_root: only keyless identities are checked against a trust root: give "
        "identities too, or no trust_root"
    )


def test_a_trust_root_is_checked_once_per_content(trust_root: Path, sigstore: Sigstore) -> None:
    identities = [Identity(issuer=ISSUER, subject=SUBJECT)]
    first = load_policy(identities=identities, trust_root=trust_root).trust_root
    again = load_policy(identities=identities, trust_root=trust_root).trust_root
    assert first is again
    assert (
        load_policy(identities=identities).trust_root
        is load_policy(identities=identities).trust_root
    )
