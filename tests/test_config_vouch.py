"""The config keys of issue 19: `referrers` and `verify` (defaults and per image), as users
write them, each mistake one line naming the key path; and the exclusion filters an immutable
repository gets when referrers travel."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mirror import config
from mirror.errors import ConfigError
from mirror.model import ReferrerRule
from mirror.repo_settings import TagMutability
from tests.standins.signing import Sigstore, new_key

ISSUER = "https://token.actions.githubusercontent.com"


def load(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "mirror.yaml"
    path.write_text(textwrap.dedent(text))
    return config.load(path)


def refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return str(caught.value).removeprefix(f"{tmp_path / 'mirror.yaml'}: ")


def test_referrers_travel_by_default_and_an_image_may_say_otherwise(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        """
        images:
          - {source: ruby, tags: ["3.3"]}
          - {source: alpine, tags: ["3.20"], referrers: false}
          - source: node
            tags: ["22"]
            referrers: [application/spdx+json, "application/vnd.dev.sigstore.bundle*"]
        """,
    )
    assert [image.referrers for image in loaded.images] == [
        ReferrerRule(),
        ReferrerRule(enabled=False),
        ReferrerRule(types=("application/spdx+json", "application/vnd.dev.sigstore.bundle*")),
    ]
    off = load(tmp_path, "defaults: {referrers: false}\nimages: [{source: ruby, tags: [a]}]")
    assert not off.images[0].referrers.enabled and not off.referrers.enabled


def test_a_policy_of_keys_and_identities_read_beside_the_config(tmp_path: Path) -> None:
    key = new_key("ed25519")
    key.write_public(tmp_path / "cosign.pub")
    Sigstore().write_trusted_root(tmp_path / "root.json")
    loaded = load(
        tmp_path,
        f"""
        defaults:
          verify:
            keys: [cosign.pub]
        images:
          - {{source: ruby, tags: ["3.3"]}}
          - {{source: alpine, tags: ["3.20"], verify: false}}
          - source: node
            tags: ["22"]
            verify:
              identities:
                - issuer: {ISSUER}
                  subject_regex: 'https://github\\.com/nodejs/.*'
              trust_root: root.json
        """,
    )
    ruby, alpine, node = (image.verify for image in loaded.images)
    assert ruby is not None and [k.fingerprint for k in ruby.keys] == [key.fingerprint]
    assert alpine is None
    assert node is not None and not node.keys and node.identities[0].issuer == ISSUER
    assert node.trust_root is not None and node.trust_root.name.endswith("root.json")
    ensured = loaded.image_for(loaded.images[0].source.__class__("docker.io", "library/x"))
    assert ensured.verify is loaded.verify  # ensure's images get the defaults


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "defaults: {referrers: maybe}",
            "defaults.referrers: expected true, false or a list of artifact types like "
            "[application/spdx+json], got 'maybe'",
        ),
        (
            "images: [{source: ruby, tags: [a], referrers: []}]",
            "images[0].referrers: an empty list: list artifact types, or write false",
        ),
        (
            "images: [{source: ruby, tags: [a], referrers: [spdx]}]",
            "images[0].referrers[0]: 'spdx' is not a media type (type/subtype, RFC 6838)",
        ),
        (
            "images: [{source: ruby, tags: [a], referrers: [text/spdx, text/spdx]}]",
            "images[0].referrers: the artifact type 'text/spdx' is listed twice",
        ),
        (
            "images: [{source: ruby, tags: [a], referrers: [text/spdx, Text/SPDX]}]",
            "images[0].referrers: the artifact type 'Text/SPDX' is listed twice (also as "
            "'text/spdx')",
        ),
        ("defaults: {verify: {}}", "defaults.verify: give keys, identities or both"),
        (
            "defaults: {verify: {key: [cosign.pub]}}",
            "defaults.verify.key: unknown key (did you mean 'keys'?)",
        ),
        (
            "defaults:\n  verify:\n",
            "defaults.verify: no value (YAML reads an empty value, ~ and null as none): give "
            "keys or identities, or false",
        ),
        (
            "defaults: {verify: {keys: cosign.pub}}",
            "defaults.verify.keys: expected a list, got 'cosign.pub'",
        ),
        (
            "images: [{source: ruby, tags: [a], verify: {identities: [{subject: me}]}}]",
            "images[0].verify.identities[0].issuer: required (the OIDC issuer URL)",
        ),
        (
            "images: [{source: ruby, tags: [a], verify: {identities: [{issuer: "
            "token.actions.githubusercontent.com, subject: me}]}}]",
            "images[0].verify.identities[0].issuer: expected the OIDC issuer's URL as Fulcio "
            "certificates carry it (https://token.actions.githubusercontent.com), got "
            "'token.actions.githubusercontent.com': without its scheme it never matches",
        ),
        (
            f"images: [{{source: ruby, tags: [a], verify: {{identities: [{{issuer: {ISSUER}, "
            "subject: a, subject_regex: b}]}}]",
            "images[0].verify.identities[0]: give exactly one of subject and subject_regex",
        ),
        (
            f"images: [{{source: ruby, tags: [a], verify: {{identities: [{{issuer: {ISSUER}, "
            "subject_regex: '(?=x)'}]}}]",
            "images[0].verify.identities[0]: subject_regex: bad regular expression:",
        ),
        (
            "ecr:\n  repository_settings:\n    tag_mutability:\n"
            "      mode: IMMUTABLE_WITH_EXCLUSION\n      exclusions: [a, b, c, d]\n"
            "images: [{source: ruby, tags: [a]}]",
            "repository_settings.tag_mutability of library/ruby: with referrers on, mirror adds "
            "the exclusion filters sha256-*, sha512-* (the tags cosign and the referrers tag "
            "schema move), and ECR takes at most 5: give at most 3 of your own, or referrers: "
            "false",
        ),
    ],
)
def test_mistakes_are_one_line_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    assert refused(tmp_path, text + "\n").startswith(message)


def test_key_files_that_are_no_public_key_are_named(tmp_path: Path) -> None:
    (tmp_path / "private.pem").write_text("-----BEGIN PRIVATE KEY-----\nx\n")
    assert refused(tmp_path, "defaults: {verify: {keys: [missing.pub]}}") == (
        f"defaults.verify.keys[0]: {tmp_path / 'missing.pub'}: cannot read: No such file or "
        "directory"
    )
    assert refused(tmp_path, "defaults: {verify: {keys: [private.pem]}}") == (
        f"defaults.verify.keys[0]: {tmp_path / 'private.pem'} holds a private key: give the "
        "public key (cosign.pub)"
    )
    new_key().write_public(tmp_path / "cosign.pub")
    assert refused(tmp_path, "defaults: {verify: {keys: [cosign.pub], trust_root: r.json}}") == (
        "defaults.verify.trust_root: only keyless identities are checked against a trust root: "
        "give identities too, or no trust_root"
    )


def test_immutable_repositories_let_the_moving_tags_move_when_referrers_travel(
    tmp_path: Path,
) -> None:
    loaded = load(
        tmp_path,
        """
        ecr: {repository_settings: {tag_mutability: IMMUTABLE}}
        images:
          - {source: ruby, tags: [a]}
          - {source: alpine, tags: [a], referrers: false}
          - source: node
            tags: [a]
            repository_settings:
              tag_mutability: {mode: IMMUTABLE_WITH_EXCLUSION, exclusions: [latest]}
        """,
    )
    settings = loaded.repository_settings(loaded.ecr)
    assert settings["library/ruby"].tag_mutability == TagMutability(
        "IMMUTABLE_WITH_EXCLUSION", ("sha256-*", "sha512-*")
    )
    assert settings["library/alpine"].tag_mutability == TagMutability("IMMUTABLE")
    assert settings["library/node"].tag_mutability == TagMutability(
        "IMMUTABLE_WITH_EXCLUSION", ("latest", "sha256-*", "sha512-*")
    )
    default = loaded.default_repository_settings(loaded.ecr).tag_mutability
    assert default == TagMutability("IMMUTABLE_WITH_EXCLUSION", ("sha256-*", "sha512-*"))
