"""Signatures as cosign makes them, and a Sigstore of the tests' own, offline.

Keys: :func:`new_key` makes an ECDSA P-256 / P-384, RSA or Ed25519 key pair that signs as cosign
signs (ECDSA and RSA PKCS #1 v1.5 over SHA-256, Ed25519 pure); :func:`simple_signing` is the
payload cosign signs for an image (its ``critical.image.docker-manifest-digest`` names the
image). :func:`cosign_sig_manifest` is what cosign pushes under ``sha256-<hex>.sig``: an OCI
manifest with one simple-signing layer per signature, the signature (and for keyless, the
certificate, chain and Rekor bundle) in the layer's annotations.

Keyless: :class:`Sigstore` is a self-made Fulcio-like CA (root and intermediate), CT log and
Rekor-like transparency log, written into a trusted-root JSON (``trusted_root_json``) that the
real ``sigstore`` library reads. Its certificates carry the Fulcio extensions (OIDC issuer, v1
and v2), a critical SAN, code-signing EKU and an embedded SCT over the precertificate, signed
by the CT log's key; its log entries carry an RFC 6962 inclusion proof, a checkpoint signed as
a note and a signed entry timestamp. Nothing here weakens verification: the tests check these
with sigstore-python's own ``Verifier`` as well as with mirror's code.

Referrers: :func:`bundle_referrer` and :func:`artifact_referrer` make OCI 1.1 artifact
manifests with a ``subject`` (a sigstore bundle, an SBOM), and :func:`tag_schema_index` the
referrers tag-schema index a registry without the referrers API holds for them.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rfc8785
import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from tests.standins.images import OCI_CONFIG, OCI_MANIFEST, Blob, push_image
from tests.standins.registry import MANIFEST_ACCEPT
from tests.standins.tls import key_usage

KEY_KINDS = ("ecdsa-p256", "ecdsa-p384", "rsa", "ed25519")
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
SIGSTORE_BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
IN_TOTO = "application/vnd.in-toto+json"
SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
SPDX = "application/spdx+json"
OIDC_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
OIDC_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
SCT_LIST = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class KeyPair:
    """A cosign key pair; ``sign`` signs as ``cosign sign --key`` does."""

    kind: str
    private: PrivateKey = field(repr=False)

    @property
    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def fingerprint(self) -> str:
        """sha256 of the public key's DER SubjectPublicKeyInfo, as mirror names a key."""
        der = self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return "sha256:" + hashlib.sha256(der).hexdigest()

    def sign(self, data: bytes) -> bytes:
        key = self.private
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, ec.ECDSA(hashes.SHA256()))
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return key.sign(data)

    def write_public(self, path: Path) -> Path:
        path.write_bytes(self.public_pem)
        return path


def new_key(kind: str = "ecdsa-p256") -> KeyPair:
    """A fresh key pair of ``kind`` (one of :data:`KEY_KINDS`)."""
    private: PrivateKey
    if kind == "ecdsa-p256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif kind == "ecdsa-p384":
        private = ec.generate_private_key(ec.SECP384R1())
    elif kind == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif kind == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"kind must be one of {KEY_KINDS}")
    return KeyPair(kind, private)


def simple_signing(digest: str, reference: str = "registry.test/image") -> bytes:
    """The payload ``cosign sign`` signs for the image ``digest`` (Go's json.Marshal order)."""
    return json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": reference},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature",
            },
            "optional": None,
        },
        separators=(",", ":"),
    ).encode()


def in_toto_statement(digest: str, predicate_type: str = SIGN_PREDICATE) -> bytes:
    """An in-toto v1 statement about the image ``digest`` (what cosign v3 signs in a bundle)."""
    algorithm, _, hexdigest = digest.partition(":")
    return json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "registry.test/image", "digest": {algorithm: hexdigest}}],
            "predicateType": predicate_type,
            "predicate": {},
        },
        separators=(",", ":"),
    ).encode()


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding (DSSE v1.0 envelope.md)."""
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(payload), payload)


# --- cosign's tag layout -----------------------------------------------------------------------


@dataclass(frozen=True)
class SigLayer:
    """One signature of a ``.sig`` manifest: the payload and its layer annotations."""

    payload: bytes
    annotations: dict[str, str]


def key_signed(key: KeyPair, payload: bytes) -> SigLayer:
    signature = base64.b64encode(key.sign(payload)).decode()
    return SigLayer(payload, {SIGNATURE_ANNOTATION: signature})


def cosign_sig_manifest(layers: list[SigLayer]) -> tuple[Blob, dict[str, Blob]]:
    """The manifest cosign pushes under ``sha256-<hex>.sig`` (one layer per signature) and
    its blobs, the manifest included."""
    payloads = [Blob(SIMPLE_SIGNING, layer.payload) for layer in layers]
    config = _json_blob(
        OCI_CONFIG,
        {
            "architecture": "",
            "config": {},
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [blob.digest for blob in payloads]},
        },
    )
    manifest = _json_blob(
        OCI_MANIFEST,
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": [
                blob.descriptor(annotations=layer.annotations)
                for blob, layer in zip(payloads, layers, strict=True)
            ],
        },
    )
    blobs = {blob.digest: blob for blob in (*payloads, config, manifest)}
    return manifest, blobs


# --- OCI 1.1 referrers -------------------------------------------------------------------------


def artifact_referrer(
    subject: Blob | tuple[str, str, int],
    artifact_type: str,
    content: bytes,
    *,
    layer_type: str | None = None,
    annotations: dict[str, str] | None = None,
) -> tuple[Blob, dict[str, Blob]]:
    """An OCI 1.1 artifact manifest whose ``subject`` is ``subject`` (a Blob, or (media type,
    digest, size)), one layer of ``content``, the empty config, and its blobs."""
    media_type, digest, size = (
        (subject.media_type, subject.digest, len(subject.data))
        if isinstance(subject, Blob)
        else subject
    )
    layer = Blob(layer_type or artifact_type, content)
    empty = Blob(EMPTY_CONFIG, b"{}")
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": empty.descriptor(),
        "layers": [layer.descriptor()],
        "subject": {"mediaType": media_type, "digest": digest, "size": size},
    }
    if annotations:
        doc["annotations"] = annotations
    manifest = _json_blob(OCI_MANIFEST, doc)
    return manifest, {blob.digest: blob for blob in (layer, empty, manifest)}


def sbom_referrer(
    subject: Blob | tuple[str, str, int], seed: str = ""
) -> tuple[Blob, dict[str, Blob]]:
    """An SPDX SBOM attached as a referrer, as ``oras attach --artifact-type`` does."""
    sbom = json.dumps({"spdxVersion": "SPDX-2.3", "name": f"sbom {seed}"}).encode()
    return artifact_referrer(
        subject,
        SPDX,
        sbom,
        annotations={"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
    )


def bundle_referrer(
    subject: Blob | tuple[str, str, int],
    bundle: bytes,
    predicate_type: str = SIGN_PREDICATE,
) -> tuple[Blob, dict[str, Blob]]:
    """A sigstore bundle attached as a referrer, as cosign v3 attaches a signature."""
    return artifact_referrer(
        subject,
        SIGSTORE_BUNDLE,
        bundle,
        annotations={
            "dev.sigstore.bundle.content": "dsse-envelope",
            "dev.sigstore.bundle.predicateType": predicate_type,
            "org.opencontainers.image.created": "2026-01-01T00:00:00Z",
        },
    )


def descriptor_of(manifest: Blob) -> dict[str, Any]:
    """The referrers-index descriptor of an artifact manifest (artifactType, annotations)."""
    doc = json.loads(manifest.data)
    entry: dict[str, Any] = manifest.descriptor()
    entry["artifactType"] = doc.get("artifactType") or doc["config"]["mediaType"]
    if doc.get("annotations"):
        entry["annotations"] = doc["annotations"]
    return entry


def tag_schema_index(referrers: list[Blob]) -> Blob:
    """The index a registry without the referrers API keeps under ``sha256-<hex>``."""
    return _json_blob(
        "application/vnd.oci.image.index.v1+json",
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [descriptor_of(manifest) for manifest in referrers],
        },
    )


def tag_schema_name(digest: str) -> str:
    return digest.replace(":", "-")


# --- pushing, as cosign and oras push -----------------------------------------------------------

_HTTP = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=60))


def attach_cosign(
    registry_host: str,
    repo: str,
    subject: str,
    layers: list[SigLayer],
    *,
    suffix: str = ".sig",
    auth: tuple[str, str] | None = None,
) -> Blob:
    """Push a cosign signature manifest of ``layers`` under ``sha256-<hex>.sig`` (``suffix``)
    beside the image ``subject``, replacing what the tag held, as ``cosign sign`` does (it
    appends its layer to the tag's manifest: pass every signature). Returns the manifest."""
    manifest, blobs = cosign_sig_manifest(layers)
    push_image(registry_host, repo, tag_schema_name(subject) + suffix, manifest, blobs, auth=auth)
    return manifest


def attach_referrer(
    registry_host: str,
    repo: str,
    subject: str,
    referrer: tuple[Blob, dict[str, Blob]],
    *,
    tag_schema: bool = False,
    auth: tuple[str, str] | None = None,
) -> Blob:
    """Push a referrer manifest (and its blobs) by digest, as ``oras attach`` or cosign v3 do;
    with ``tag_schema``, also add it to the index under the subject's ``sha256-<hex>`` tag (the
    referrers tag schema, what a client does for a registry without the referrers API),
    keeping the entries that index has. Returns the referrer manifest."""
    manifest, blobs = referrer
    push_image(registry_host, repo, manifest.digest, manifest, blobs, auth=auth)
    if tag_schema:
        tag = tag_schema_name(subject)
        existing = _get(registry_host, repo, tag, auth)
        entries = json.loads(existing)["manifests"] if existing else []
        entries = [entry for entry in entries if entry["digest"] != manifest.digest]
        index = _json_blob(
            "application/vnd.oci.image.index.v1+json",
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [*entries, descriptor_of(manifest)],
            },
        )
        push_image(registry_host, repo, tag, index, {index.digest: index}, auth=auth)
    return manifest


def _get(registry_host: str, repo: str, reference: str, auth: tuple[str, str] | None) -> bytes:
    headers = {"Accept": MANIFEST_ACCEPT}
    if auth is not None:
        headers.update(urllib3.make_headers(basic_auth=f"{auth[0]}:{auth[1]}"))
    url = f"http://{registry_host}/v2/{repo}/manifests/{reference}"
    answer = _HTTP.request("GET", url, headers=headers)
    if answer.status == 404:
        return b""
    if answer.status != 200:
        raise RuntimeError(f"GET {url}: HTTP {answer.status}: {answer.data[:300]!r}")
    return answer.data


# --- a Sigstore of the tests' own -------------------------------------------------------------


@dataclass
class _LogEntry:
    index: int
    body: bytes
    integrated_time: int


_LOGGED_AFTER = datetime.timedelta(minutes=1)


class Sigstore:
    """A Fulcio-like CA, a CT log and a Rekor-like log, all in memory; see the module docstring.

    ``now`` is when its certificates are issued and entries logged (default: the machine's
    time); certificates live ten minutes, as Fulcio's do.
    """

    origin = "rekor.test"

    def __init__(self, *, now: datetime.datetime | None = None) -> None:
        self.now = now or datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        self.root_key = ec.generate_private_key(ec.SECP384R1())
        self.intermediate_key = ec.generate_private_key(ec.SECP384R1())
        self.ct_key = ec.generate_private_key(ec.SECP256R1())
        self.rekor_key = ec.generate_private_key(ec.SECP256R1())
        self.root = self._root_certificate()
        self.intermediate = self._intermediate_certificate()
        self._entries: list[_LogEntry] = []

    # the trusted root -------------------------------------------------------------------------

    def trusted_root(self) -> dict[str, Any]:
        """sigstore's trusted root (protobuf-specs TrustedRoot v0.1) for this instance."""
        start = (self.now - datetime.timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [_log_instance("https://rekor.test", self.rekor_key, start)],
            "certificateAuthorities": [
                {
                    "subject": {"organization": "test", "commonName": "fulcio.test"},
                    "uri": "https://fulcio.test",
                    "certChain": {
                        "certificates": [
                            {"rawBytes": _b64(_der(self.intermediate))},
                            {"rawBytes": _b64(_der(self.root))},
                        ]
                    },
                    "validFor": {"start": start},
                }
            ],
            "ctlogs": [_log_instance("https://ctfe.test", self.ct_key, start)],
            "timestampAuthorities": [],
        }

    def trusted_root_json(self) -> bytes:
        return json.dumps(self.trusted_root(), indent=2).encode()

    def write_trusted_root(self, path: Path) -> Path:
        path.write_bytes(self.trusted_root_json())
        return path

    # Fulcio -----------------------------------------------------------------------------------

    def certificate(
        self,
        subject: str,
        issuer: str,
        *,
        key: ec.EllipticCurvePrivateKey | None = None,
        ca_key: ec.EllipticCurvePrivateKey | None = None,
        sct: bool = True,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A short-lived signing certificate for ``subject`` (an e-mail address, or a URI when
        it has ``://``) from the OIDC ``issuer``, issued by the intermediate (or ``ca_key``,
        a CA the trusted root does not hold), with an embedded SCT unless ``sct`` is false."""
        key = key or ec.generate_private_key(ec.SECP256R1())
        signer = ca_key or self.intermediate_key
        san: x509.GeneralName = (
            x509.UniformResourceIdentifier(subject)
            if "://" in subject
            else x509.RFC822Name(subject)
        )
        issuer_ski = x509.SubjectKeyIdentifier.from_public_key(signer.public_key())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.intermediate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now)
            .not_valid_after(self.now + datetime.timedelta(minutes=10))
            .add_extension(key_usage(ca=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName([san]), critical=True)
            .add_extension(
                x509.UnrecognizedExtension(OIDC_ISSUER_V1, issuer.encode()), critical=False
            )
            .add_extension(
                x509.UnrecognizedExtension(OIDC_ISSUER_V2, _der_utf8(issuer)), critical=False
            )
        )
        precertificate = builder.sign(signer, hashes.SHA256())
        if not sct:
            return key, precertificate
        tbs = precertificate.tbs_certificate_bytes
        issuer_key_id = hashlib.sha256(_spki(signer.public_key())).digest()
        extension = x509.UnrecognizedExtension(SCT_LIST, self._sct_list(tbs, issuer_key_id))
        final = builder.add_extension(extension, critical=False).sign(signer, hashes.SHA256())
        if final.tbs_precertificate_bytes != tbs:
            raise AssertionError("the precertificate TBS changed: the SCT would not verify")
        return key, final

    def _sct_list(self, tbs: bytes, issuer_key_id: bytes) -> bytes:
        """The SCT list extension's value (RFC 6962 3.3): a DER OCTET STRING holding a TLS
        list of one SCT over the precertificate, signed by the CT log's key."""
        timestamp = int(self.now.timestamp() * 1000)
        signed = (
            struct.pack("!BBQH", 0, 0, timestamp, 1)  # v1, certificate_timestamp, precert_entry
            + issuer_key_id
            + len(tbs).to_bytes(3, "big")
            + tbs
            + struct.pack("!H", 0)  # no extensions
        )
        signature = self.ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        log_id = hashlib.sha256(_spki(self.ct_key.public_key())).digest()
        sct = (
            struct.pack("!B", 0)
            + log_id
            + struct.pack("!QH", timestamp, 0)
            + struct.pack("!BBH", 4, 3, len(signature))  # sha256, ecdsa
            + signature
        )
        sct_list = struct.pack("!HH", len(sct) + 2, len(sct)) + sct
        return _der_octet_string(sct_list)

    def _root_certificate(self) -> x509.Certificate:
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "test"),
                x509.NameAttribute(NameOID.COMMON_NAME, "fulcio.test root"),
            ]
        )
        key = self.root_key.public_key()
        return (
            self._ca_builder(name, name, key, path_length=1)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
            .sign(self.root_key, hashes.SHA384())
        )

    def _intermediate_certificate(self) -> x509.Certificate:
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "test"),
                x509.NameAttribute(NameOID.COMMON_NAME, "fulcio.test intermediate"),
            ]
        )
        key = self.intermediate_key.public_key()
        root_ski = x509.SubjectKeyIdentifier.from_public_key(self.root_key.public_key())
        return (
            self._ca_builder(name, self.root.subject, key, path_length=0)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
            )
            .sign(self.root_key, hashes.SHA384())
        )

    def _ca_builder(
        self,
        subject: x509.Name,
        issuer: x509.Name,
        key: ec.EllipticCurvePublicKey,
        *,
        path_length: int,
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - datetime.timedelta(days=365))
            .not_valid_after(self.now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(key_usage(ca=True, digital_signature=False), critical=True)
        )

    # Rekor ------------------------------------------------------------------------------------

    @property
    def log_id(self) -> bytes:
        return hashlib.sha256(_spki(self.rekor_key.public_key())).digest()

    def _append(self, body: bytes, delay: datetime.timedelta) -> _LogEntry:
        integrated = int((self.now + delay).timestamp())
        entry = _LogEntry(len(self._entries), body, integrated)
        self._entries.append(entry)
        return entry

    def _set(self, entry: _LogEntry) -> bytes:
        """The signed entry timestamp (inclusion promise): Rekor's signature over the RFC 8785
        canonical JSON of body, integratedTime, logID and logIndex."""
        canonical = rfc8785.dumps(
            {
                "body": _b64(entry.body),
                "integratedTime": entry.integrated_time,
                "logID": self.log_id.hex(),
                "logIndex": entry.index,
            }
        )
        return self.rekor_key.sign(canonical, ec.ECDSA(hashes.SHA256()))

    def _proof(self, entry: _LogEntry) -> dict[str, Any]:
        leaves = [_leaf_hash(e.body) for e in self._entries]
        root = _tree_hash(leaves)
        note = f"{self.origin}\n{len(leaves)}\n{_b64(root)}\n"
        signature = self.rekor_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        checkpoint = f"{note}\n\u2014 {self.origin} {_b64(self.log_id[:4] + signature)}\n"
        return {
            "logIndex": str(entry.index),
            "rootHash": _b64(root),
            "treeSize": str(len(leaves)),
            "hashes": [_b64(h) for h in _inclusion_path(entry.index, leaves)],
            "checkpoint": {"envelope": checkpoint},
        }

    # cosign's keyless .sig layers --------------------------------------------------------------

    def keyless_signed(
        self,
        payload: bytes,
        subject: str,
        issuer: str,
        *,
        ca_key: ec.EllipticCurvePrivateKey | None = None,
        logged: bool = True,
        tamper_set: bool = False,
        sct: bool = True,
        log_delay: datetime.timedelta = _LOGGED_AFTER,
    ) -> SigLayer:
        """A keyless ``.sig`` layer as ``cosign sign`` (2.x) writes it: the signature, the
        Fulcio certificate and chain, and the Rekor bundle (hashedrekord entry with its signed
        entry timestamp) in the annotations. The log records it ``log_delay`` after the
        certificate was issued (it lives ten minutes)."""
        key, cert = self.certificate(subject, issuer, ca_key=ca_key, sct=sct)
        signature = key.sign(payload, ec.ECDSA(hashes.SHA256()))
        annotations = {
            SIGNATURE_ANNOTATION: _b64(signature),
            CERTIFICATE_ANNOTATION: _pem(cert).decode(),
            CHAIN_ANNOTATION: (_pem(self.intermediate) + _pem(self.root)).decode(),
        }
        if logged:
            body = _hashedrekord(cert, signature, payload)
            entry = self._append(body, log_delay)
            set_ = self._set(entry)
            if tamper_set:
                set_ = self.rekor_key.sign(b"another entry", ec.ECDSA(hashes.SHA256()))
            annotations[BUNDLE_ANNOTATION] = json.dumps(
                {
                    "SignedEntryTimestamp": _b64(set_),
                    "Payload": {
                        "body": _b64(body),
                        "integratedTime": entry.integrated_time,
                        "logIndex": entry.index,
                        "logID": self.log_id.hex(),
                    },
                },
                separators=(",", ":"),
            )
        return SigLayer(payload, annotations)

    # sigstore bundles (cosign v3, referrers) ---------------------------------------------------

    def bundle(
        self,
        statement: bytes,
        subject: str,
        issuer: str,
        *,
        ca_key: ec.EllipticCurvePrivateKey | None = None,
        tamper_proof: bool = False,
        sct: bool = True,
        log_delay: datetime.timedelta = _LOGGED_AFTER,
    ) -> bytes:
        """A sigstore bundle v0.3 with a DSSE envelope over ``statement``, a Fulcio-like
        certificate and a dsse/0.0.1 log entry (inclusion proof, checkpoint, SET)."""
        key, cert = self.certificate(subject, issuer, ca_key=ca_key, sct=sct)
        signature = key.sign(pae(IN_TOTO, statement), ec.ECDSA(hashes.SHA256()))
        envelope = {
            "payload": _b64(statement),
            "payloadType": IN_TOTO,
            "signatures": [{"sig": _b64(signature), "keyid": ""}],
        }
        body = _dsse_body(cert, signature, statement, envelope)
        entry = self._append(body, log_delay)
        proof = self._proof(entry)
        if tamper_proof:
            proof["rootHash"] = _b64(hashlib.sha256(b"another tree").digest())
        return json.dumps(
            {
                "mediaType": SIGSTORE_BUNDLE,
                "verificationMaterial": {
                    "certificate": {"rawBytes": _b64(_der(cert))},
                    "tlogEntries": [
                        {
                            "logIndex": str(entry.index),
                            "logId": {"keyId": _b64(self.log_id)},
                            "kindVersion": {"kind": "dsse", "version": "0.0.1"},
                            "integratedTime": str(entry.integrated_time),
                            "inclusionPromise": {"signedEntryTimestamp": _b64(self._set(entry))},
                            "inclusionProof": proof,
                            "canonicalizedBody": _b64(body),
                        }
                    ],
                },
                "dsseEnvelope": envelope,
            }
        ).encode()


def key_bundle(key: KeyPair, statement: bytes) -> bytes:
    """A sigstore bundle v0.3 signed with a key (``cosign sign --key --new-bundle-format
    --tlog-upload=false``): a DSSE envelope and a public key hint, no certificate."""
    signature = key.sign(pae(IN_TOTO, statement))
    return json.dumps(
        {
            "mediaType": SIGSTORE_BUNDLE,
            "verificationMaterial": {"publicKey": {"hint": key.fingerprint}, "tlogEntries": []},
            "dsseEnvelope": {
                "payload": _b64(statement),
                "payloadType": IN_TOTO,
                "signatures": [{"sig": _b64(signature), "keyid": ""}],
            },
        }
    ).encode()


# --- helpers -----------------------------------------------------------------------------------


def _json_blob(media_type: str, doc: dict[str, Any]) -> Blob:
    return Blob(media_type, json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der_octet_string(data: bytes) -> bytes:
    return b"\x04" + _der_length(len(data)) + data


def _der_utf8(text: str) -> bytes:
    data = text.encode()
    return b"\x0c" + _der_length(len(data)) + data


def _log_instance(url: str, key: ec.EllipticCurvePrivateKey, start: str) -> dict[str, Any]:
    spki = _spki(key.public_key())
    return {
        "baseUrl": url,
        "hashAlgorithm": "SHA2_256",
        "publicKey": {
            "rawBytes": _b64(spki),
            "keyDetails": "PKIX_ECDSA_P256_SHA_256",
            "validFor": {"start": start},
        },
        "logId": {"keyId": _b64(hashlib.sha256(spki).digest())},
    }


def _hashedrekord(cert: x509.Certificate, signature: bytes, payload: bytes) -> bytes:
    return json.dumps(
        {
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {
                    "hash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}
                },
                "signature": {
                    "content": _b64(signature),
                    "publicKey": {"content": _b64(_pem(cert))},
                },
            },
        },
        separators=(",", ":"),
    ).encode()


def _dsse_body(
    cert: x509.Certificate, signature: bytes, statement: bytes, envelope: dict[str, Any]
) -> bytes:
    envelope_bytes = json.dumps(envelope, separators=(",", ":")).encode()
    return json.dumps(
        {
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": {
                "envelopeHash": {
                    "algorithm": "sha256",
                    "value": hashlib.sha256(envelope_bytes).hexdigest(),
                },
                "payloadHash": {
                    "algorithm": "sha256",
                    "value": hashlib.sha256(statement).hexdigest(),
                },
                "signatures": [{"signature": _b64(signature), "verifier": _b64(_pem(cert))}],
            },
        },
        separators=(",", ":"),
    ).encode()


def _leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (RFC 6962 2.1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _tree_hash(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return _node_hash(_tree_hash(leaves[:k]), _tree_hash(leaves[k:]))


def _inclusion_path(index: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 2.1.1 PATH(m, D[n]), from the leaf's level up."""
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*_inclusion_path(index, leaves[:k]), _tree_hash(leaves[k:])]
    return [*_inclusion_path(index - k, leaves[k:]), _tree_hash(leaves[:k])]
