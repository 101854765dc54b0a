"""The verify gate's cryptography: does a signature of *this image's digest* verify under the
policy? Pure apart from reading the policy's files: it is given the signature material the
registry boundary fetched and returns a `Verdict`.

The material (OCI distribution-spec v1.1 and cosign's layouts):

- cosign's tag signatures: the manifest under `sha256-<hex>.sig` has one layer per signature,
  each a simple-signing JSON payload whose `critical.image.docker-manifest-digest` names the
  signed image; the base64 signature is the layer annotation `dev.cosignproject.cosign/
  signature`. Keyless ones add `dev.sigstore.cosign/certificate` (the Fulcio certificate, PEM),
  `dev.sigstore.cosign/chain` and `dev.sigstore.cosign/bundle` (the Rekor entry and its signed
  entry timestamp). `cosign_layers` says which blobs to fetch, `read_cosign` reads them.
- sigstore bundles attached as OCI referrers (artifactType `application/vnd.dev.sigstore.bundle
  .v0.3+json`, and the `...bundle+json;version=0.x` forms): a DSSE envelope around an in-toto
  statement whose subject digest names the image and whose predicate type is cosign's
  `https://sigstore.dev/cosign/sign/v1` (cosign v3's image signature). `worth_fetching` tells
  which referrers to fetch, `bundle_layers` which blob, `read_bundle` reads it.

The policy (`load_policy`): cosign public keys (PEM: ECDSA P-256/P-384/P-521, RSA, Ed25519)
and/or keyless identities (OIDC issuer, and subject or RE2 `subject_regex` matched whole),
checked against a sigstore trusted root (default: the one the `sigstore` library ships).

An image passes when one signature is trusted *and* names its own digest: a valid signature of
another digest is a replay (`Reason.OTHER_DIGEST`). Key signatures are checked with
`cryptography`, as `cosign verify --key --insecure-ignore-tlog` checks them (no transparency
log is asked for). Keyless bundles are checked by sigstore-python's `Verifier.verify_dsse`
(Fulcio chain at the log's time, SCT, Rekor inclusion proof, checkpoint and signed entry
timestamp); cosign's older keyless `.sig` layers carry a signed entry timestamp but no
inclusion proof, which sigstore's bundle API refuses, so they are checked with sigstore's own
pieces (the trust root's keyrings, its SCT check, its hashedrekord body) in the same order.
The image reference the payload names (`docker-reference`) is not compared: a mirror's copy
lives under another name, and `cosign verify` does not compare it either.

Work is bounded on hostile input (sizes, counts, JSON nesting) and every failure is one line
naming the signature it is about, never a traceback. A Policy is immutable and may be shared by
threads; loading one per image is cheap (a trust root is checked once per content). sigstore
takes 0.4 s to import: it is imported only when a policy names identities.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from mirror import patterns
from mirror.errors import ConfigError, quoted
from mirror.oci import sha256
from mirror.referrers import (
    ContentDescriptor,
    ReferrersError,
    check_digest,
    matches,
    parse_manifest,
)

if TYPE_CHECKING:
    from sigstore.models import TrustedRoot
    from sigstore.verify import Verifier

SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"  # cosign v3's image signature statement
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_IMAGE_SIGNATURE = "cosign container image signature"  # critical.type of the payload
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
BUNDLE_TYPES = ("application/vnd.dev.sigstore.bundle*",)  # v0.3+json and +json;version=0.x
PREDICATE_ANNOTATION = "dev.sigstore.bundle.predicateType"  # cosign v3 sets it on the referrer
IN_TOTO = "application/vnd.in-toto+json"
IN_TOTO_STATEMENTS = ("https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1")
PUBLIC_GOOD = "https://tuf-repo-cdn.sigstore.dev"  # sigstore's public-good TUF repository

MAX_SIGNATURES = 64  # signatures tried per image; the rest are not looked at
MAX_PAYLOAD_BYTES = 256 << 10  # a simple-signing payload or in-toto statement (real: < 1 kB)
MAX_BUNDLE_BYTES = 4 << 20  # a sigstore bundle blob (a signature's is about 5 kB)
MAX_ANNOTATION = 64 << 10  # characters of a signature, certificate or Rekor-bundle annotation
MAX_KEY_FILE = 64 << 10
MAX_TRUST_ROOT = 4 << 20
MAX_DSSE_SIGNATURES = 8
MAX_SUBJECTS = 1_000  # subjects of one in-toto statement
_MESSAGE = 160  # characters of a library's message quoted in a reason

_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")  # Fulcio: the OIDC issuer, raw
_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")  # the same, as a DER UTF8String
_OTHER_NAME = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.7")  # Fulcio's SAN otherName

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


class PolicyError(ConfigError):
    """A key file, identity or trust root of the policy is unusable (one line naming it)."""


class Reason(Enum):
    """Why an image's signatures did not pass, most telling first (`verify` reports the most
    telling reason among its signatures)."""

    OTHER_DIGEST = "signature of another digest"  # trusted, but signs another image: a replay
    IDENTITY_MISMATCH = "identity mismatch"
    UNTRUSTED_KEY = "untrusted key"
    BAD_SIGNATURE = "bad signature"  # does not verify with its own certificate's key
    BAD_CERTIFICATE = "bad certificate chain"
    BAD_TLOG = "bad transparency-log proof"
    UNREADABLE = "unreadable signature"
    NO_SIGNATURE = "no signature"


@dataclass(frozen=True)
class Verdict:
    """The gate's answer for one image digest.

    Verified: `by` says what vouched (`key cosign.pub (sha256:<fingerprint>)` or `identity
    <subject> (issuer <issuer>)`) and `source` which signature. Not verified: `reason` and
    `detail`, one line naming the signature at fault. `str()` is the line to show.
    """

    digest: str
    verified: bool
    by: str = ""
    source: str = ""
    reason: Reason | None = None
    detail: str = ""

    def __str__(self) -> str:
        if self.verified:
            return f"verified: {self.by} ({self.source})"
        assert self.reason is not None
        return f"not verified: {self.reason.value}: {self.detail}"


@dataclass(frozen=True)
class Identity:
    """A keyless signer the policy trusts: the OIDC `issuer` and the certificate's subject
    (an e-mail address or URI in its SAN), given exactly (`subject`) or as an RE2 pattern
    matched against the whole subject (`subject_regex`; cosign's --certificate-identity-regexp
    searches instead, so a pattern ported from it may need `.*` at its ends)."""

    issuer: str
    subject: str | None = None
    subject_regex: str | None = None

    def problem(self) -> str | None:
        """What is wrong with this identity, or None."""
        if not isinstance(self.issuer, str) or not self.issuer:
            return "issuer: expected the OIDC issuer URL, e.g. https://token.actions.githubusercontent.com"
        if (self.subject is None) == (self.subject_regex is None):
            return "give exactly one of subject and subject_regex"
        given = self.subject if self.subject is not None else self.subject_regex
        if not isinstance(given, str) or not given:
            return "subject: expected a non-empty string"
        if self.subject_regex is not None:
            try:
                patterns.compiled(self.subject_regex)
            except patterns.PatternError as error:
                return f"subject_regex: bad regular expression: {error} (RE2 syntax)"
        return None

    def matches(self, issuer: str | None, subjects: Iterable[str]) -> bool:
        if issuer != self.issuer:
            return False
        if self.subject is not None:
            return self.subject in subjects
        assert self.subject_regex is not None
        return any(patterns.fullmatch(self.subject_regex, subject) for subject in subjects)

    def __str__(self) -> str:
        subject = self.subject if self.subject is not None else f"/{self.subject_regex}/"
        return f"{subject} (issuer {self.issuer})"


@dataclass(frozen=True)
class TrustedKey:
    """A cosign public key of the policy: `name` (its file's name) and `fingerprint`
    (`sha256:` and the hex sha256 of its DER SubjectPublicKeyInfo) name it in verdicts."""

    name: str
    fingerprint: str
    key: PublicKey = field(repr=False, compare=False)

    def __str__(self) -> str:
        return f"key {self.name} ({self.fingerprint})"


class TrustRoot:
    """A sigstore trusted root (Fulcio CAs, CT logs, Rekor logs), read and checked once.
    `name` says where it came from, for messages."""

    MEDIA_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"

    def __init__(self, data: bytes, name: str, *, where: str | None = None) -> None:
        from sigstore.models import TrustedRoot  # noqa: PLC0415 - 0.4 s to import: only here
        from sigstore.verify import Verifier  # noqa: PLC0415
        from sigstore_models.trustroot.v1 import (  # noqa: PLC0415
            TrustedRoot as TrustedRootDocument,
        )

        self.name = name
        where = where or name
        try:
            kind = json.loads(data).get("mediaType")
        except (ValueError, RecursionError, AttributeError):
            raise PolicyError(f"{where}: not a sigstore trusted root (not a JSON object)") from None
        if kind != self.MEDIA_TYPE:
            raise PolicyError(
                f"{where}: not a sigstore trusted root: its mediaType is "
                f"{quoted(str(kind), 80)!r}, not {self.MEDIA_TYPE!r}"
            )
        try:
            self.root: TrustedRoot = TrustedRoot(TrustedRootDocument.from_json(data))
            self.fulcio = self.root.get_fulcio_certs()
            self.verifier: Verifier = Verifier(trusted_root=self.root)
            self.root.rekor_keyring(_verify_purpose())
            self.root.ct_keyring(_verify_purpose())
        except Exception as error:
            raise PolicyError(
                f"{where}: not a usable sigstore trusted root: {_line(error)}"
            ) from None


@dataclass(frozen=True)
class Policy:
    """What the gate trusts. `predicate_types`: the in-toto predicates that count as a
    signature of the image in a bundle (cosign's sign/v1 by default)."""

    keys: tuple[TrustedKey, ...] = ()
    identities: tuple[Identity, ...] = ()
    trust_root: TrustRoot | None = field(default=None, repr=False, compare=False)
    predicate_types: frozenset[str] = frozenset({SIGN_PREDICATE})


@dataclass(frozen=True)
class CosignSignature:
    """One layer of a cosign `.sig` manifest: the payload it signs and its annotations."""

    payload: bytes = field(repr=False)
    annotations: tuple[tuple[str, str], ...]
    source: str  # which signature, for messages: `sha256-<hex>.sig layer 2`

    def annotation(self, key: str) -> str | None:
        return next((value for name, value in self.annotations if name == key), None)


@dataclass(frozen=True)
class SigstoreBundle:
    """A sigstore bundle (JSON) attached to the image as a referrer."""

    data: bytes = field(repr=False)
    source: str  # `referrer sha256:<digest>`


@dataclass(frozen=True)
class Unreadable:
    """Signature material that could not be read; counts as a signature that failed."""

    source: str
    why: str


Material = CosignSignature | SigstoreBundle | Unreadable


# --- the policy ---------------------------------------------------------------------------------


def load_policy(
    *,
    keys: Sequence[str | os.PathLike[str]] = (),
    identities: Sequence[Identity] = (),
    trust_root: str | os.PathLike[str] | None = None,
    predicate_types: Iterable[str] = (SIGN_PREDICATE,),
    where: str = "verify",
) -> Policy:
    """Read and check a policy: each key file, each identity and, with identities, the trust
    root (`trust_root`, or the one sigstore ships). PolicyError, one line naming the entry
    (`verify.keys[1]: /etc/cosign.pub: holds a private key...`), on the first problem.

    `load_policy(keys=["cosign.pub"])`,
    `load_policy(identities=[Identity(issuer=..., subject=...)], trust_root="root.json")`.
    """
    if not keys and not identities:
        raise PolicyError(f"{where}: give keys, identities or both")
    loaded = tuple(_load_key(Path(path), f"{where}.keys[{n}]") for n, path in enumerate(keys))
    for n, identity in enumerate(identities):
        problem = identity.problem()
        if problem:
            raise PolicyError(f"{where}.identities[{n}]: {problem}")
    if trust_root is not None and not identities:
        raise PolicyError(
            f"{where}.trust_root: only keyless identities are checked against a trust root: "
            "give identities too, or no trust_root"
        )
    root = None
    if identities:
        root = (
            default_trust_root()
            if trust_root is None
            else _load_trust_root(Path(trust_root), f"{where}.trust_root")
        )
    return Policy(loaded, tuple(identities), root, frozenset(predicate_types))


@functools.lru_cache(maxsize=1)
def default_trust_root() -> TrustRoot:
    """The public-good Sigstore trusted root the installed `sigstore` library ships (as of its
    release: a newer root needs `trust_root:`)."""
    from sigstore import __version__  # noqa: PLC0415

    name = f"the Sigstore public-good trusted root shipped with sigstore {__version__}"
    try:
        data = (
            resources.files("sigstore._store")
            .joinpath(quote(PUBLIC_GOOD, safe=""), "trusted_root.json")
            .read_bytes()
        )
    except OSError as error:
        raise PolicyError(f"{name}: cannot read it: {error}") from None
    return TrustRoot(data, name)


def _load_trust_root(path: Path, where: str) -> TrustRoot:
    data = _read(path, MAX_TRUST_ROOT, where)
    return _trust_root(data, str(path), where)


@functools.lru_cache(maxsize=16)
def _trust_root(data: bytes, path: str, where: str) -> TrustRoot:
    """One TrustRoot per content: a policy loaded for each image reads the file each time
    (a change is seen) but checks it once."""
    return TrustRoot(data, f"the trust root {path}", where=f"{where}: {path}")


def _load_key(path: Path, where: str) -> TrustedKey:
    data = _read(path, MAX_KEY_FILE, where)
    if b"PRIVATE KEY" in data:
        raise PolicyError(f"{where}: {path} holds a private key: give the public key (cosign.pub)")
    if b"-----BEGIN CERTIFICATE-----" in data:
        raise PolicyError(
            f"{where}: {path} holds a certificate, not a public key: give the key it certifies "
            "(openssl x509 -pubkey -noout -in FILE), or, for keyless signatures, identities"
        )
    blocks = data.count(b"-----BEGIN ")
    if blocks > 1:  # the PEM loader reads the first and drops the rest without a word
        raise PolicyError(
            f"{where}: {path} holds {blocks} PEM blocks, and only the first would be read: "
            "give one public key per file (list each in keys)"
        )
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise PolicyError(
            f"{where}: {path} is not a PEM public key (cosign's cosign.pub, "
            "-----BEGIN PUBLIC KEY-----)"
        ) from None
    problem = _key_problem(key)
    if problem:
        raise PolicyError(f"{where}: {path}: {problem}")
    assert isinstance(key, PublicKey)
    return TrustedKey(path.name, fingerprint(key), key)


def _key_problem(key: object) -> str | None:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
            return f"an ECDSA key on {key.curve.name}: cosign uses P-256, P-384 or P-521"
        return None
    if isinstance(key, rsa.RSAPublicKey):
        return (
            None if key.key_size >= 2048 else f"an RSA key of {key.key_size} bits (2048 at least)"
        )
    if isinstance(key, ed25519.Ed25519PublicKey):
        return None
    return f"a key of type {type(key).__name__}: cosign keys are ECDSA, RSA or Ed25519"


def fingerprint(key: PublicKey) -> str:
    """`sha256:` and the hex sha256 of the key's DER SubjectPublicKeyInfo."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _read(path: Path, limit: int, where: str) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(limit + 1)
    except OSError as error:
        raise PolicyError(f"{where}: {path}: cannot read: {error.strerror or error}") from None
    if len(data) > limit:
        raise PolicyError(f"{where}: {path} is over {limit:,} bytes: not a key or trust root")
    return data


# --- reading the material -----------------------------------------------------------------------


def cosign_layers(manifest: bytes, *, source: str) -> tuple[ContentDescriptor, ...]:
    """The simple-signing layers of a cosign `.sig` manifest, at most MAX_SIGNATURES: the
    blobs to fetch (each at most MAX_PAYLOAD_BYTES; a larger one is read as Unreadable).
    ReferrersError, naming `source`, when the manifest cannot be read."""
    layers = parse_manifest(manifest, where=source).layers
    return tuple(layer for layer in layers if layer.media_type == SIMPLE_SIGNING)[:MAX_SIGNATURES]


def read_cosign(
    manifest: bytes, payloads: Mapping[str, bytes], *, source: str
) -> tuple[Material, ...]:
    """The signatures of a cosign `.sig` manifest, given its layers' blobs by digest
    (`payloads`, as fetched): one CosignSignature per layer, or Unreadable for a layer whose
    blob is missing, too large or not what its digest says; one Unreadable for a manifest
    that cannot be read. `source` names the manifest (`sha256-<hex>.sig`)."""
    try:
        layers = cosign_layers(manifest, source=source)
    except ReferrersError as error:
        return (Unreadable(source, str(error).removeprefix(f"{source}: ")),)
    if not layers:
        return (Unreadable(source, "a .sig manifest with no simple-signing layer"),)
    return tuple(
        _read_layer(layer, payloads, f"{source} layer {n}") for n, layer in enumerate(layers, 1)
    )


def _read_layer(layer: ContentDescriptor, payloads: Mapping[str, bytes], source: str) -> Material:
    payload = payloads.get(layer.digest)
    if payload is None:
        return Unreadable(source, f"its payload {layer.digest} was not fetched")
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Unreadable(
            source, f"a payload of {len(payload):,} bytes (at most {MAX_PAYLOAD_BYTES:,})"
        )
    if sha256(payload) != layer.digest:
        return Unreadable(source, f"its payload does not match its digest {layer.digest}")
    return CosignSignature(payload, layer.annotations, source)


def is_bundle(artifact_type: str) -> bool:
    """Is a referrer of this artifact type a sigstore bundle?"""
    return matches(artifact_type, BUNDLE_TYPES)


def worth_fetching(referrer: ContentDescriptor, policy: Policy) -> bool:
    """Should this referrer be fetched to look for a signature? A sigstore bundle whose
    predicate-type annotation (when cosign set one) is a signature's: attestation bundles
    (SBOMs, provenance) are not fetched for the gate."""
    if not is_bundle(referrer.artifact_type):
        return False
    predicate = referrer.annotation(PREDICATE_ANNOTATION)
    return predicate is None or predicate in policy.predicate_types


def bundle_layers(manifest: bytes, *, source: str) -> tuple[ContentDescriptor, ...]:
    """The bundle blob(s) of a referrer manifest that holds a sigstore bundle (cosign v3:
    one layer). ReferrersError, naming `source`, when the manifest cannot be read."""
    layers = parse_manifest(manifest, where=source).layers
    return tuple(layer for layer in layers if is_bundle(layer.media_type))[:MAX_SIGNATURES]


def read_bundle(data: bytes, *, digest: str, source: str) -> Material:
    """A bundle blob as fetched: a SigstoreBundle, or Unreadable when it is larger than
    MAX_BUNDLE_BYTES or is not what its `digest` says."""
    if len(data) > MAX_BUNDLE_BYTES:
        return Unreadable(source, f"a bundle of {len(data):,} bytes (at most {MAX_BUNDLE_BYTES:,})")
    if sha256(data) != digest:
        return Unreadable(source, f"the bundle does not match its digest {digest}")
    return SigstoreBundle(data, source)


# --- the verdict ----------------------------------------------------------------------------------


class _Fail(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _NotASignature(Exception):
    """Verified or not, this material signs no image (an attestation, a blob signature)."""


def verify(digest: str, material: Sequence[Material], policy: Policy) -> Verdict:
    """Does a signature among `material` that the policy trusts name `digest` (the image's
    manifest digest, `sha256:<hex>`)? The first that does makes the Verdict verified; else the
    Verdict gives the most telling failure (Reason order). At most MAX_SIGNATURES are tried.

    `verify("sha256:ab…", read_cosign(manifest, payloads, source="sha256-ab….sig"), policy)`
    """
    try:
        check_digest(digest)
    except ReferrersError as error:
        raise ValueError(str(error)) from None
    tried = list(material[:MAX_SIGNATURES])
    failures: list[tuple[Reason, str, str]] = []
    skipped: list[str] = []
    for item in tried:
        try:
            by = _check(digest, item, policy)
        except _Fail as failed:
            failures.append((failed.reason, failed.detail, item.source))
        except _NotASignature as why:
            skipped.append(str(why))
        else:
            return Verdict(digest, True, by=by, source=item.source)
    if not failures:
        detail = "no cosign signature and no sigstore bundle signs the image"
        if skipped:
            detail = f"nothing signs the image: {skipped[0]}"
        return Verdict(digest, False, reason=Reason.NO_SIGNATURE, detail=detail)
    order = list(Reason)
    reason, detail, source = min(failures, key=lambda failure: order.index(failure[0]))
    if len(material) > len(tried):
        detail += f" (the first {len(tried)} of {len(material)} signatures tried)"
    elif len(tried) > 1:
        detail += f" ({len(tried)} signatures tried)"
    return Verdict(digest, False, source=source, reason=reason, detail=detail)


def _check(digest: str, item: Material, policy: Policy) -> str:
    """What vouches for `digest` in `item` (`key ...`, `identity ...`); _Fail or
    _NotASignature otherwise."""
    if isinstance(item, Unreadable):
        raise _Fail(Reason.UNREADABLE, f"{item.source}: {item.why}")
    if isinstance(item, CosignSignature):
        return _check_cosign(digest, item, policy)
    return _check_bundle(digest, item, policy)


# cosign's .sig layers


def _check_cosign(digest: str, item: CosignSignature, policy: Policy) -> str:
    signature = _decoded(item.annotation(SIGNATURE_ANNOTATION), SIGNATURE_ANNOTATION, item.source)
    if item.annotation(CERTIFICATE_ANNOTATION) is not None:
        return _check_cosign_keyless(digest, item, signature, policy)
    if not policy.keys:
        raise _Fail(
            Reason.UNTRUSTED_KEY,
            f"{item.source}: signed with a key, and the policy trusts only keyless identities",
        )
    key = _trusted_key(policy.keys, signature, item.payload, item.source)
    _check_simple_signing(digest, item.payload, item.source)
    return str(key)


def _check_cosign_keyless(
    digest: str, item: CosignSignature, signature: bytes, policy: Policy
) -> str:
    source = item.source
    if not policy.identities or policy.trust_root is None:
        raise _Fail(
            Reason.UNTRUSTED_KEY,
            f"{source}: a keyless signature (Fulcio certificate), and the policy trusts only keys",
        )
    certificate = _certificate(item.annotation(CERTIFICATE_ANNOTATION) or "", source)
    if not _verifies(certificate.public_key(), signature, item.payload):
        raise _Fail(
            Reason.BAD_SIGNATURE,
            f"{source}: the signature does not verify with its own certificate's key",
        )
    entry = _RekorEntry.read(item.annotation(BUNDLE_ANNOTATION), source)
    root = policy.trust_root
    entry.check_signed(root, source)
    signed_at = datetime.fromtimestamp(entry.integrated_time, timezone.utc)
    chain = _chain(root, certificate, signed_at, source)
    _check_sct(root, certificate, chain, source)
    _check_code_signing(certificate, signed_at, source)
    who = _identity(certificate, policy.identities, source)
    entry.check_body(certificate, signature, item.payload, source)
    _check_simple_signing(digest, item.payload, source)
    return who


def _check_simple_signing(digest: str, payload: bytes, source: str) -> None:
    """The payload is a cosign image signature of `digest`: _Fail otherwise."""
    doc = _json(payload, MAX_PAYLOAD_BYTES, f"{source}: the payload")
    critical = doc.get("critical")
    if not isinstance(critical, dict):
        raise _Fail(Reason.UNREADABLE, f"{source}: the payload has no `critical` section")
    kind = critical.get("type")
    if kind != COSIGN_IMAGE_SIGNATURE:
        raise _Fail(
            Reason.UNREADABLE,
            f"{source}: not a cosign image signature (type {quoted(str(kind), 80)!r})",
        )
    image = critical.get("image")
    signed = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    if not isinstance(signed, str):
        raise _Fail(Reason.UNREADABLE, f"{source}: the payload names no docker-manifest-digest")
    if signed != digest:
        raise _Fail(Reason.OTHER_DIGEST, _replay(source, signed, digest))


def _replay(source: str, signed: str, digest: str) -> str:
    return (
        f"{source}: a valid signature of {quoted(signed, 80)}, not of {digest} "
        "(a signature replayed from another image)"
    )


@dataclass(frozen=True)
class _RekorEntry:
    """cosign's `dev.sigstore.cosign/bundle` annotation: a Rekor entry and its signed entry
    timestamp (no inclusion proof)."""

    body: bytes
    integrated_time: int
    log_index: int
    log_id: bytes
    signed_entry_timestamp: bytes

    @classmethod
    def read(cls, text: str | None, source: str) -> _RekorEntry:
        if text is None:
            raise _Fail(
                Reason.BAD_TLOG,
                f"{source}: no transparency-log entry ({BUNDLE_ANNOTATION} annotation)",
            )
        doc = _json(
            text.encode(), MAX_ANNOTATION, f"{source}: {BUNDLE_ANNOTATION}", Reason.BAD_TLOG
        )
        payload = doc.get("Payload")
        try:
            if not isinstance(payload, dict):
                raise TypeError("no Payload")
            entry = cls(
                body=base64.b64decode(payload["body"], validate=True),
                integrated_time=_integer(payload["integratedTime"]),
                log_index=_integer(payload["logIndex"]),
                log_id=bytes.fromhex(payload["logID"]),
                signed_entry_timestamp=base64.b64decode(doc["SignedEntryTimestamp"], validate=True),
            )
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise _Fail(
                Reason.BAD_TLOG, f"{source}: {BUNDLE_ANNOTATION} is not a Rekor bundle"
            ) from None
        return entry

    def check_signed(self, root: TrustRoot, source: str) -> None:
        """The signed entry timestamp is the trusted Rekor's signature over this entry
        (sigstore's `TransparencyLogEntry._verify_set`: RFC 8785 canonical JSON)."""
        import rfc8785  # noqa: PLC0415 - sigstore's own dependency, for its canonical JSON
        from sigstore._utils import KeyID  # noqa: PLC0415

        canonical = rfc8785.dumps(
            {
                "body": base64.b64encode(self.body).decode(),
                "integratedTime": self.integrated_time,
                "logID": self.log_id.hex(),
                "logIndex": self.log_index,
            }
        )
        try:
            keyring = root.root.rekor_keyring(_verify_purpose())
            keyring.verify(
                key_id=KeyID(self.log_id), signature=self.signed_entry_timestamp, data=canonical
            )
        except Exception as error:
            raise _Fail(
                Reason.BAD_TLOG,
                f"{source}: the signed entry timestamp is not from a Rekor log of {root.name}: "
                f"{_line(error)}",
            ) from None

    def check_body(
        self, certificate: x509.Certificate, signature: bytes, payload: bytes, source: str
    ) -> None:
        """The log entry is a hashedrekord of this very signature, certificate and payload
        (sigstore's check against CVE-2022-36056 variants)."""
        import rekor_types  # noqa: PLC0415 - sigstore's dependency
        from sigstore._internal.rekor import _hashedrekord_from_parts  # noqa: PLC0415
        from sigstore._utils import sha256_digest  # noqa: PLC0415

        try:
            logged = rekor_types.Hashedrekord.model_validate_json(self.body)
            expected = _hashedrekord_from_parts(certificate, signature, sha256_digest(payload))
        except Exception as error:
            raise _Fail(
                Reason.BAD_TLOG, f"{source}: the log entry is not a hashedrekord: {_line(error)}"
            ) from None
        if logged != expected:
            raise _Fail(
                Reason.BAD_TLOG,
                f"{source}: the transparency-log entry is for another signature, certificate "
                "or payload",
            )


def _chain(
    root: TrustRoot, certificate: x509.Certificate, at: datetime, source: str
) -> list[x509.Certificate]:
    """The certificate's chain to the trust root's Fulcio CAs, valid at `at` (as sigstore's
    Verifier._verify_chain_at_time builds it: webpki defaults, code-signing EKU allowed)."""
    from cryptography.x509.verification import (  # noqa: PLC0415
        Criticality,
        ExtensionPolicy,
        PolicyBuilder,
        Store,
        VerificationError,
    )

    ca_policy = ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None
    )
    ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None
    )
    verifier = (
        PolicyBuilder()
        .store(Store(root.fulcio))
        .time(at)
        .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
        .build_client_verifier()
    )
    try:
        return list(verifier.verify(certificate, []).chain[1:])
    except (VerificationError, x509.UnsupportedGeneralNameType) as error:
        raise _Fail(
            Reason.BAD_CERTIFICATE,
            f"{source}: the certificate does not chain to {root.name} at {at:%Y-%m-%d %H:%M:%S} "
            f"UTC: {_line(error)}",
        ) from None


def _check_sct(
    root: TrustRoot, certificate: x509.Certificate, chain: list[x509.Certificate], source: str
) -> None:
    from sigstore._internal.sct import verify_sct  # noqa: PLC0415

    try:
        verify_sct(certificate, chain, root.root.ct_keyring(_verify_purpose()))
    except Exception as error:
        raise _Fail(
            Reason.BAD_CERTIFICATE,
            f"{source}: the certificate has no valid CT log timestamp (SCT): {_line(error)}",
        ) from None


def _check_code_signing(certificate: x509.Certificate, at: datetime, source: str) -> None:
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        extended = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound as error:
        raise _Fail(
            Reason.BAD_CERTIFICATE, f"{source}: the certificate lacks {error.oid.dotted_string}"
        ) from None
    if not usage.digital_signature or ExtendedKeyUsageOID.CODE_SIGNING not in extended:
        raise _Fail(Reason.BAD_CERTIFICATE, f"{source}: the certificate is not for code signing")
    if not certificate.not_valid_before_utc <= at <= certificate.not_valid_after_utc:
        raise _Fail(
            Reason.BAD_CERTIFICATE,
            f"{source}: the certificate was not valid when the log recorded the signature",
        )


# sigstore bundles


def _check_bundle(digest: str, item: SigstoreBundle, policy: Policy) -> str:
    doc = _json(item.data, MAX_BUNDLE_BYTES, f"{item.source}: the bundle")
    material = doc.get("verificationMaterial")
    if not isinstance(material, dict):
        raise _Fail(Reason.UNREADABLE, f"{item.source}: the bundle has no verificationMaterial")
    if "publicKey" in material:
        return _check_key_bundle(digest, item, doc, policy)
    return _check_keyless_bundle(digest, item, policy)


def _check_key_bundle(
    digest: str, item: SigstoreBundle, doc: dict[str, Any], policy: Policy
) -> str:
    source = item.source
    if not policy.keys:
        raise _Fail(
            Reason.UNTRUSTED_KEY,
            f"{source}: a bundle signed with a key, and the policy trusts only keyless identities",
        )
    envelope = doc.get("dsseEnvelope")
    if not isinstance(envelope, dict):
        raise _NotASignature(f"{source}: a bundle without a DSSE envelope signs no image")
    try:
        payload_type = envelope["payloadType"]
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = [
            base64.b64decode(entry["sig"], validate=True)
            for entry in envelope["signatures"][:MAX_DSSE_SIGNATURES]
        ]
        if not isinstance(payload_type, str):
            raise TypeError("payloadType is not a string")
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise _Fail(
            Reason.UNREADABLE, f"{source}: the bundle's DSSE envelope cannot be read"
        ) from None
    signed = _pae(payload_type, payload)
    for signature in signatures:
        key = next((k for k in policy.keys if _verifies(k.key, signature, signed)), None)
        if key is not None:
            _check_statement(digest, payload_type, payload, policy, source)
            return str(key)
    raise _Fail(
        Reason.UNTRUSTED_KEY,
        f"{source}: the bundle's signature verifies with none of the policy's "
        f"{len(policy.keys)} key(s)",
    )


def _check_keyless_bundle(digest: str, item: SigstoreBundle, policy: Policy) -> str:
    from sigstore.models import Bundle  # noqa: PLC0415

    source = item.source
    if not policy.identities or policy.trust_root is None:
        raise _Fail(
            Reason.UNTRUSTED_KEY,
            f"{source}: a keyless bundle (Fulcio certificate), and the policy trusts only keys",
        )
    try:
        bundle = Bundle.from_json(item.data)
    except Exception as error:
        raise _Fail(Reason.UNREADABLE, f"{source}: not a sigstore bundle: {_line(error)}") from None
    if bundle._dsse_envelope is None:  # a message signature over some blob's digest
        raise _NotASignature(f"{source}: a bundle with a message signature names no image")
    identity = _IdentityPolicy(policy.identities, source)
    try:
        payload_type, payload = policy.trust_root.verifier.verify_dsse(bundle, identity)
    except _Fail:
        raise
    except Exception as error:
        raise _Fail(_sigstore_reason(error), f"{source}: {_line(error)}") from None
    _check_statement(digest, payload_type, payload, policy, source)
    return identity.matched


class _IdentityPolicy:
    """sigstore's VerificationPolicy protocol: one of the policy's identities must match."""

    def __init__(self, identities: Sequence[Identity], source: str) -> None:
        self.identities = identities
        self.source = source
        self.matched = ""

    def verify(self, cert: x509.Certificate) -> None:
        self.matched = _identity(cert, self.identities, self.source)


def _sigstore_reason(error: Exception) -> Reason:
    """sigstore raises one VerificationError for everything: its message says what failed."""
    from sigstore.errors import CertValidationError  # noqa: PLC0415

    text = str(error).lower()
    if isinstance(error, CertValidationError) or any(
        word in text for word in ("certificate", "sct", "usage", "cert ")
    ):
        return Reason.BAD_CERTIFICATE
    if "dsse: invalid signature" in text or "signature is invalid" in text:
        return Reason.BAD_SIGNATURE
    return Reason.BAD_TLOG


def _check_statement(
    digest: str, payload_type: str, payload: bytes, policy: Policy, source: str
) -> None:
    """A verified DSSE payload is an in-toto statement signing the image `digest`."""
    if payload_type != IN_TOTO:
        raise _NotASignature(f"{source}: a DSSE payload of type {quoted(payload_type, 80)!r}")
    doc = _json(payload, MAX_BUNDLE_BYTES, f"{source}: the statement")
    predicate = doc.get("predicateType")
    if doc.get("_type") not in IN_TOTO_STATEMENTS or not isinstance(predicate, str):
        raise _Fail(Reason.UNREADABLE, f"{source}: the DSSE payload is not an in-toto statement")
    if predicate not in policy.predicate_types:
        raise _NotASignature(f"{source}: an attestation ({quoted(predicate, 80)}), not a signature")
    algorithm, hexdigits = digest.split(":")
    subjects = doc.get("subject")
    named = [
        subject["digest"].get(algorithm)
        for subject in (subjects[:MAX_SUBJECTS] if isinstance(subjects, list) else [])
        if isinstance(subject, dict) and isinstance(subject.get("digest"), dict)
    ]
    if hexdigits in named:
        return
    other = next((f"{algorithm}:{name}" for name in named if isinstance(name, str)), None)
    if other is None:
        raise _Fail(Reason.UNREADABLE, f"{source}: the statement names no {algorithm} digest")
    raise _Fail(Reason.OTHER_DIGEST, _replay(source, other, digest))


# --- helpers ------------------------------------------------------------------------------------


def _identity(cert: x509.Certificate, identities: Sequence[Identity], source: str) -> str:
    """`identity <subject> (issuer <issuer>)` of the first matching identity; _Fail naming
    the certificate's identity when none matches."""
    issuer = _issuer(cert)
    subjects = _subjects(cert)
    for identity in identities:
        if identity.matches(issuer, subjects):
            shown = next(s for s in subjects if identity.matches(issuer, [s]))
            return f"identity {shown} (issuer {issuer})"
    who = ", ".join(quoted(subject, 120) for subject in subjects[:3]) or "no subject"
    raise _Fail(
        Reason.IDENTITY_MISMATCH,
        f"{source}: signed by {who} (issuer {quoted(issuer or 'none', 120)}), which is not "
        f"an identity of the policy ({'; '.join(str(i) for i in identities[:3])})",
    )


def _issuer(cert: x509.Certificate) -> str | None:
    """The OIDC issuer of a Fulcio certificate: the v2 extension (DER UTF8String), else v1."""
    try:
        value = cert.extensions.get_extension_for_oid(_ISSUER_V2).value
        text = _der_utf8(value.value)  # type: ignore[attr-defined]
        if text is not None:
            return text
    except x509.ExtensionNotFound:
        pass
    try:
        raw = cert.extensions.get_extension_for_oid(_ISSUER_V1).value.value  # type: ignore[attr-defined]
    except x509.ExtensionNotFound:
        return None
    return raw.decode(errors="replace") if isinstance(raw, bytes) else None


def _subjects(cert: x509.Certificate) -> list[str]:
    """The certificate's identities: SAN e-mail addresses, URIs and Fulcio otherNames."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    found = [*san.get_values_for_type(x509.RFC822Name)]
    found += san.get_values_for_type(x509.UniformResourceIdentifier)
    for other in san.get_values_for_type(x509.OtherName):
        text = _der_utf8(other.value) if other.type_id == _OTHER_NAME else None
        if text is not None:
            found.append(text)
    return found


def _der_utf8(data: bytes) -> str | None:
    """The text of a DER UTF8String (tag 0x0c), or None."""
    if len(data) < 2 or data[0] != 0x0C:
        return None
    length, start = data[1], 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4 or len(data) < 2 + count:
            return None
        length, start = int.from_bytes(data[2 : 2 + count], "big"), 2 + count
    if len(data) != start + length:
        return None
    return data[start:].decode(errors="replace")


def _trusted_key(
    keys: Sequence[TrustedKey], signature: bytes, payload: bytes, source: str
) -> TrustedKey:
    for key in keys:
        if _verifies(key.key, signature, payload):
            return key
    raise _Fail(
        Reason.UNTRUSTED_KEY,
        f"{source}: the signature verifies with none of the policy's {len(keys)} key(s)",
    )


def _verifies(key: Any, signature: bytes, data: bytes) -> bool:
    """Is `signature` the key's over `data`, in any form cosign writes? ECDSA (ASN.1) over
    SHA-256 or the curve's own hash; RSA PKCS #1 v1.5 over SHA-256/384/512 or PSS over
    SHA-256; Ed25519 pure."""
    attempts: list[Any] = []
    if isinstance(key, ec.EllipticCurvePublicKey):
        own = {"secp384r1": hashes.SHA384(), "secp521r1": hashes.SHA512()}.get(key.curve.name)
        attempts = [(ec.ECDSA(hashes.SHA256()),)] + ([(ec.ECDSA(own),)] if own else [])
    elif isinstance(key, rsa.RSAPublicKey):
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
        attempts = [
            (padding.PKCS1v15(), algorithm)
            for algorithm in (hashes.SHA256(), hashes.SHA384(), hashes.SHA512())
        ]
        attempts.append((pss, hashes.SHA256()))
    elif isinstance(key, ed25519.Ed25519PublicKey):
        attempts = [()]
    for arguments in attempts:
        try:
            key.verify(signature, data, *arguments)
        except (InvalidSignature, ValueError):
            continue
        return True
    return False


def _pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding (DSSE v1 envelope.md), what a DSSE signature signs."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def _certificate(pem: str, source: str) -> x509.Certificate:
    if len(pem) > MAX_ANNOTATION:
        raise _Fail(Reason.UNREADABLE, f"{source}: a certificate of {len(pem):,} characters")
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise _Fail(
            Reason.UNREADABLE, f"{source}: {CERTIFICATE_ANNOTATION} is not a PEM certificate"
        ) from None


def _decoded(value: str | None, name: str, source: str) -> bytes:
    if value is None:
        raise _Fail(Reason.UNREADABLE, f"{source}: no {name} annotation")
    if len(value) > MAX_ANNOTATION:
        raise _Fail(Reason.UNREADABLE, f"{source}: a {name} of {len(value):,} characters")
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _Fail(Reason.UNREADABLE, f"{source}: {name} is not base64") from None


def _json(data: bytes, limit: int, what: str, reason: Reason = Reason.UNREADABLE) -> dict[str, Any]:
    if len(data) > limit:
        raise _Fail(reason, f"{what} is {len(data):,} bytes (at most {limit:,})")
    try:
        doc = json.loads(data)
    except RecursionError:
        raise _Fail(reason, f"{what} is JSON nested too deeply to read") from None
    except ValueError:
        raise _Fail(reason, f"{what} is not JSON") from None
    if not isinstance(doc, dict):
        raise _Fail(reason, f"{what} is not a JSON object")
    return doc


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError("not an integer")
    number = int(value)
    if not 0 <= number < 1 << 63:
        raise ValueError("out of range")
    return number


def _verify_purpose() -> Any:
    from sigstore._internal.trust import KeyringPurpose  # noqa: PLC0415

    return KeyringPurpose.VERIFY


def _line(error: BaseException) -> str:
    """A library's message as one short line (secrets hidden, cut to _MESSAGE characters).
    Of pydantic's ValidationError (sigstore's models), the first error and how many more."""
    text = str(error)
    details = getattr(error, "errors", None)
    if type(error).__name__ == "ValidationError" and callable(details):
        found = details()
        first = found[0] if found else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        text = f"{where}: {first.get('msg', text)}"
        text += f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return quoted(" ".join(text[:4096].split()) or type(error).__name__, _MESSAGE)
