"""The verify gate end to end through `mirror`: an image is written to ECR only when a
signature of its own digest verifies (keys and keyless identities), and `ensure` serves ECR's
copy when a new upstream digest fails it. Pulls counted at the Docker-Hub-like front."""

from __future__ import annotations

import json

import urllib3

from mirror.oci import OCI_INDEX
from mirror.referrers import cosign_tag, tag_schema_name
from tests.stage import Stage
from tests.standins.images import Blob, push_image
from tests.standins.registry import MANIFEST_ACCEPT
from tests.standins.signing import (
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
)
from tests.test_signed import public_key, sign, subject

ISSUER = "https://token.actions.githubusercontent.com"
SUBJECT = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"


def test_only_an_image_with_a_signature_of_its_own_digest_is_written(stage: Stage) -> None:
    """One run: a good signature; none; another key's; a valid signature of another digest
    put beside the image (a replay). Each refusal names why, and writes nothing at all."""
    hub = stage.use_hub(limit=100)
    key = new_key("ecdsa-p256")
    repos = {name: f"{stage.repo}-{name}" for name in ("good", "unsigned", "stranger", "replay")}
    digests = {name: stage.push("1.0", repo=repo, seed=name) for name, repo in repos.items()}
    attach_cosign(
        stage.source.host,
        repos["good"],
        digests["good"],
        [key_signed(key, simple_signing(digests["good"]))],
    )
    attach_cosign(
        stage.source.host,
        repos["stranger"],
        digests["stranger"],
        [key_signed(new_key("rsa"), simple_signing(digests["stranger"]))],
    )
    attach_cosign(
        stage.source.host,
        repos["replay"],
        digests["replay"],
        [key_signed(key, simple_signing(digests["good"]))],  # good's signature, replayed
    )
    stage.config(
        [stage.image("1.0", repo=repo) for repo in repos.values()],
        defaults={"verify": {"keys": [public_key(stage, key)]}},
    )
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (1, ["copied", "failed", "failed", "failed"]), run.stderr
    assert run.report is not None
    good, unsigned, stranger, replay = run.report["images"]
    assert good["verified"] == (
        f"key cosign.pub ({key.fingerprint}) ({cosign_tag(digests['good'])} layer 1)"
    )
    assert unsigned["error"] == (
        f"{hub.host}/{repos['unsigned']}:1.0: not verified: no signature: no cosign signature "
        "and no sigstore bundle signs the image"
    )
    assert stranger["error"].endswith(
        f"not verified: untrusted key: {cosign_tag(digests['stranger'])} layer 1: the signature "
        "verifies with none of the policy's 1 key(s)"
    )
    assert replay["error"].endswith(
        f"not verified: signature of another digest: {cosign_tag(digests['replay'])} layer 1: a "
        f"valid signature of {digests['good']}, not of {digests['replay']} (a signature "
        "replayed from another image)"
    )
    assert stage.ecr_repositories() == [stage.dest_repo(repos["good"])]  # nothing else written
    # good: the image and its .sig; the others: their .sig, if any; never their image
    assert hub.counts.manifest_get_ok == 4
    assert hub.remaining == 96


def test_keyless_identities_the_policy_names_and_those_it_does_not(stage: Stage) -> None:
    """cosign v3's sigstore bundle (a referrer, in the tag schema) by the trusted workflow;
    cosign 2's keyless .sig by another: checked against a trust root of the tests' own."""
    sigstore = Sigstore()
    sigstore.write_trusted_root(stage.tmp / "trusted_root.json")
    ours = stage.push("1.0", seed="keyless-ours")
    bundle = sigstore.bundle(in_toto_statement(ours), SUBJECT, ISSUER)
    attach_referrer(
        stage.source.host,
        stage.repo,
        ours,
        bundle_referrer(subject(stage, ours), bundle),
        tag_schema=True,
    )
    theirs = stage.push("2.0", seed="keyless-theirs")
    layer = sigstore.keyless_signed(simple_signing(theirs), "mallory@example.com", ISSUER)
    attach_cosign(stage.source.host, stage.repo, theirs, [layer])
    stage.config(
        [stage.image("1.0", "2.0")],
        defaults={
            "verify": {
                "identities": [{"issuer": ISSUER, "subject": SUBJECT}],
                "trust_root": "trusted_root.json",
            }
        },
    )
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (1, ["copied", "failed"]), run.stderr
    assert run.report is not None
    verified, refused = run.report["images"]
    assert verified["verified"].startswith(
        f"identity {SUBJECT} (issuer {ISSUER}) (referrer sha256:"
    )
    assert [r["artifact_type"] for r in verified["referrers"]["copied"]] == [
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    ]  # the signature travels too
    assert "not verified: identity mismatch: " in refused["error"]
    assert f"signed by mallory@example.com (issuer {ISSUER})" in refused["error"]
    assert stage.dest_digest("1.0") == ours and stage.dest_digest("2.0") is None
    # 1.0: the image, the tag-schema index, the bundle's manifest; 2.0: its .sig
    assert stage.hub.counts.manifest_get_ok == 4


def test_ensure_serves_ecrs_copy_when_a_new_digest_fails_the_gate(stage: Stage) -> None:
    key = new_key()
    old = stage.push("3.3", seed="verified")
    sign(stage, old, key)
    stage.config(defaults={"verify": {"keys": [public_key(stage, key)]}})
    first = stage.mirror("ensure", f"{stage.repo}:3.3")
    assert (first.code, first.actions()) == (0, ["copied"]), first.stderr

    stage.push("3.3", seed="unsigned")  # upstream moves the tag to an image nobody signed
    stage.hub.reset_counts()
    served = stage.mirror("ensure", f"{stage.repo}:3.3")
    assert (served.code, served.actions()) == (0, ["stale"]), served.stderr
    assert served.stdout == f"{stage.dest.host}/{stage.dest_repo()}:3.3\n"
    warned = [line for line in served.error.splitlines() if line.startswith("stale ")]
    assert len(warned) == 1
    assert "not refreshed: " in warned[0] and "not verified: no signature" in warned[0]
    assert stage.dest_digest("3.3") == old  # ECR's copy, untouched
    assert stage.hub.counts.manifest_get == 0  # no signature: nothing worth a pull

    strict = stage.mirror("ensure", "--refresh", "always", f"{stage.repo}:3.3")
    assert (strict.code, strict.stdout, strict.actions()) == (1, "", ["failed"])


def test_ensure_serves_only_a_copy_that_ecrs_own_signatures_vouch_for(stage: Stage) -> None:
    """A copy made before `verify:` was set (or signed by a key no longer trusted) is not the
    last verified copy: under a policy, ensure serves ECR's copy only when the signatures ECR
    holds vouch for its digest; otherwise the build fails, naming both reasons."""
    key = new_key()
    old = stage.push("3.3", seed="before-the-policy")
    stage.config()  # no policy yet: copied unsigned
    first = stage.mirror("ensure", f"{stage.repo}:3.3")
    assert (first.code, first.actions()) == (0, ["copied"]), first.stderr

    stage.push("3.3", seed="unsigned-too")
    stage.config(defaults={"verify": {"keys": [public_key(stage, key)]}})
    refused = stage.mirror("ensure", f"{stage.repo}:3.3")
    assert (refused.code, refused.stdout, refused.actions()) == (1, "", ["failed"]), refused.stderr
    assert refused.report is not None
    [image] = refused.report["images"]
    assert "not verified: no signature" in image["error"]
    assert f"{stage.dest.host}/{stage.dest_repo()}:3.3's copy is not served" in image["error"]
    assert stage.dest_digest("3.3") == old  # left as it was

    sign(stage, old, key)  # the old copy signed upstream; a look again carries the .sig to ECR
    stage.push("3.3", seed="before-the-policy")
    policy = {"verify": {"keys": [public_key(stage, key)]}}
    stage.config([stage.image("3.3")], defaults=policy)
    rescan = stage.mirror("sync", "--rescan-referrers")
    assert (rescan.code, rescan.actions()) == (0, ["up-to-date"]), rescan.stderr
    stage.push("3.3", seed="unsigned-again")
    served = stage.mirror("ensure", f"{stage.repo}:3.3")
    assert (served.code, served.actions()) == (0, ["stale"]), served.stderr
    assert served.report is not None
    assert served.report["images"][0]["verified"].startswith("the copy in ECR: key ")


def test_nothing_unsigned_reaches_ecr_dressed_as_what_vouches_for_a_signed_image(
    stage: Stage,
) -> None:
    """What the source lists beside a signed image is copied only when it is what it claims:
    a referrer whose manifest names no subject or another one, an unsigned image under its
    tag-schema index or under its cosign tag, would reach ECR past the gate. Passed over,
    each named in a warning; the image and its real signature and SBOM still travel."""
    key = new_key()
    signed = stage.push("1.0", seed="vouched")
    sig = sign(stage, signed, key)
    unsigned = stage.push("evil", seed="unsigned")
    other = stage.push("other", seed="other")
    real = attach_referrer(
        stage.source.host, stage.repo, signed, sbom_referrer(subject(stage, signed), "real")
    )
    elsewhere = attach_referrer(
        stage.source.host, stage.repo, other, sbom_referrer(subject(stage, other), "elsewhere")
    )
    media_type, _, size = subject(stage, unsigned)
    image = {"mediaType": media_type, "digest": unsigned, "size": size, "artifactType": SPDX}
    index = Blob(
        OCI_INDEX,
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [image, descriptor_of(elsewhere), descriptor_of(real)],
            }
        ).encode(),
    )
    push_image(stage.source.host, stage.repo, tag_schema_name(signed), index, {index.digest: index})
    smuggled = stage.push(cosign_tag(signed, ".sbom"), seed="sbom-tag")  # an image, not an SBOM
    stage.config([stage.image("1.0")], defaults={"verify": {"keys": [public_key(stage, key)]}})

    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"]), run.stderr
    assert run.report is not None
    assert sorted(r["digest"] for r in run.report["images"][0]["referrers"]["copied"]) == sorted(
        [sig, real.digest]
    )
    for stranger in (unsigned, elsewhere.digest, smuggled):
        assert stage.dest_digest(stranger) is None
    assert stage.dest_digest(cosign_tag(signed, ".sbom")) is None
    warnings = run.report["warnings"]
    assert (
        f"{stage.hub.host}/{stage.repo}@{unsigned}: names no subject: not a referrer of "
        f"{signed}, not copied" in warnings
    )
    assert (
        f"{stage.hub.host}/{stage.repo}@{elsewhere.digest}: its subject is {other}: not a "
        f"referrer of {signed}, not copied" in warnings
    )
    assert any(
        w.startswith(
            f"{stage.hub.host}/{stage.repo}:{cosign_tag(signed, '.sbom')} holds an "
            "image (a layer of type application/vnd."
        )
        for w in warnings
    ), warnings


def test_an_image_attached_as_a_referrer_does_not_pass_the_gate(stage: Stage) -> None:
    """Under a verify policy, a referrer that is itself an image (image layers, with the
    signed image as its `subject`), or an index referrer that lists one, is not copied: it
    would reach ECR, pullable by digest, without a signature of its own. Without a policy it
    travels as any referrer does."""
    stage.use_hub(referrers="api")
    key = new_key()
    signed = stage.push("1.0", seed="signed-with-guests")
    sig = sign(stage, signed, key)
    unsigned = stage.push("guest", seed="guest")
    media_type, raw = get_raw(stage, unsigned)
    attached = {
        **json.loads(raw),
        "subject": dict(zip(("mediaType", "digest", "size"), subject(stage, signed), strict=True)),
    }
    image = Blob(media_type, json.dumps(attached).encode())  # an image with a subject
    push_image(stage.source.host, stage.repo, image.digest, image, {image.digest: image})
    lister = Blob(
        OCI_INDEX,
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "artifactType": "application/vnd.example.bundle",
                "manifests": [{"mediaType": media_type, "digest": unsigned, "size": len(raw)}],
                "subject": attached["subject"],
            }
        ).encode(),
    )
    push_image(stage.source.host, stage.repo, lister.digest, lister, {lister.digest: lister})
    stage.config([stage.image("1.0")], defaults={"verify": {"keys": [public_key(stage, key)]}})

    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"]), run.stderr
    assert run.report is not None
    assert [r["digest"] for r in run.report["images"][0]["referrers"]["copied"]] == [sig]
    assert stage.dest_digest(image.digest) is None and stage.dest_digest(lister.digest) is None
    assert sorted(w.partition(": ")[2] for w in run.report["warnings"]) == sorted(
        [
            f"is an image (a layer of type {layer_type(raw)}) that no signature of its own "
            "vouches for, not copied",
            f"lists the image {unsigned} (a layer of type {layer_type(raw)}) that no "
            "signature of its own vouches for, not copied",
        ]
    )

    stage.config([stage.image("1.0", verify=False)])
    ungated = stage.mirror("sync", "--rescan-referrers")
    assert ungated.code == 0, ungated.stderr
    assert stage.dest_digest(image.digest) == image.digest
    assert stage.dest_digest(lister.digest) == lister.digest


def get_raw(stage: Stage, digest: str) -> tuple[str, bytes]:
    answer = urllib3.request(
        "GET",
        f"{stage.source.url}/v2/{stage.repo}/manifests/{digest}",
        headers={"Accept": MANIFEST_ACCEPT},
    )
    assert answer.status == 200
    return answer.headers["Content-Type"], answer.data


def layer_type(raw: bytes) -> str:
    return str(json.loads(raw)["layers"][0]["mediaType"])


def test_a_signature_that_vouched_is_never_replaced_by_one_the_gate_refuses(stage: Stage) -> None:
    """cosign's .sig moves upstream: with a verify policy, ECR's .sig (the one that vouched)
    is replaced only by a .sig that verifies too; one the policy does not trust is not
    copied, with a warning, and ECR keeps the signature `cosign verify` there needs."""
    key = new_key()
    digest = stage.push("1.0", seed="kept-signature")
    vouched = sign(stage, digest, key)
    stage.config([stage.image("1.0")], defaults={"verify": {"keys": [public_key(stage, key)]}})
    assert stage.mirror("sync").code == 0
    assert stage.dest_digest(cosign_tag(digest)) == vouched

    stranger = attach_cosign(
        stage.source.host, stage.repo, digest, [key_signed(new_key(), simple_signing(digest))]
    ).digest
    refused = stage.mirror("sync", "--rescan-referrers")
    assert (refused.code, refused.actions()) == (0, ["up-to-date"]), refused.stderr
    assert stage.dest_digest(cosign_tag(digest)) == vouched
    assert refused.report is not None
    assert refused.report["images"][0]["referrers"]["copied"] == []
    assert refused.report["warnings"] == [
        f"{stage.hub.host}/{stage.repo}:{cosign_tag(digest)}: {stranger} is not copied over "
        f"the {vouched} {stage.dest.host} holds: not verified: untrusted key: "
        f"{cosign_tag(digest)} layer 1: the signature verifies with none of the policy's 1 "
        "key(s)"
    ]

    added = [key_signed(key, simple_signing(digest)), key_signed(new_key(), b"{}")]
    moved = attach_cosign(stage.source.host, stage.repo, digest, added).digest  # cosign adds
    again = stage.mirror("sync", "--rescan-referrers")
    assert again.code == 0, again.stderr
    assert stage.dest_digest(cosign_tag(digest)) == moved
    assert again.report is not None and again.report["warnings"] == []


def test_a_gated_tag_is_never_written_from_a_copy_no_gate_vouched_for(stage: Stage) -> None:
    """The same unsigned digest under an ungated entry (verify: false) and a gated one, of the
    same source repository and of another: the ungated is copied; the gated is refused, not
    written from the ungated one's copy in ECR (which would put an image nobody signed under
    a tag the gate guards), nor is the ungated one refused with it, whichever comes first.
    A gated alias of a verified image is still written from its copy."""
    key = new_key()
    other = f"{stage.repo}-other"
    unsigned = stage.push("dev", seed="unsigned-build")
    assert stage.push("1.0", seed="unsigned-build") == unsigned
    assert stage.push("1.0", repo=other, seed="unsigned-build") == unsigned
    signed = stage.push("2.0", seed="signed-build")
    assert stage.push("2", seed="signed-build") == signed
    sign(stage, signed, key)
    late = f"{stage.repo}-late"
    assert stage.push("3.0", repo=late, seed="late-build") == stage.push(
        "edge", repo=late, seed="late-build"
    )
    stage.config(
        [
            stage.image("dev", verify=False),
            stage.image("1.0", repo=other, verify=False),
            stage.image("1.0", "2.0", "2"),
            stage.image("3.0", repo=late),
            stage.image("edge", repo=late, verify=False),
        ],
        defaults={"verify": {"keys": [public_key(stage, key)]}},
    )
    run = stage.mirror("sync")
    assert run.report is not None
    assert [(i["destination"].rpartition(":")[2], i["action"]) for i in run.report["images"]] == [
        ("dev", "copied"),
        ("1.0", "copied"),
        ("1.0", "failed"),
        ("2.0", "copied"),
        ("2", "copied"),
        ("3.0", "failed"),
        ("edge", "copied"),
    ], run.stderr
    assert run.code == 1
    assert run.report["images"][2]["error"].endswith(
        "not verified: no signature: no cosign signature and no sigstore bundle signs the image"
    )
    assert stage.dest_digest("1.0") is None
    assert stage.dest_digest("2") == signed
