"""Repository settings: config errors (exact text), merging, CreateRepository's arguments, drift,
and `mirror.aws.Ecr`'s repositories against moto's in-process ECR (moto.mock_aws)."""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws

from mirror.aws import Ecr
from mirror.errors import ConfigError, RegistryError
from mirror.repo_settings import (
    NOT_SET,
    ActualSettings,
    Drift,
    Encryption,
    RepositorySettings,
    TagMutability,
    canonical_json,
    create_arguments,
    drift,
    parse_settings,
)

MODES = "MUTABLE, IMMUTABLE, IMMUTABLE_WITH_EXCLUSION, MUTABLE_WITH_EXCLUSION"
WHERE = "ecr.repository_settings"
KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
RULES: dict[str, Any] = {
    "rules": [
        {
            "rulePriority": 1,
            "description": "keep 30 tagged images",
            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 30},
            "action": {"type": "expire"},
        }
    ]
}
OTHER_RULES: dict[str, Any] = {
    "rules": [
        {
            "rulePriority": 1,
            "selection": {
                "tagStatus": "untagged",
                "countType": "sinceImagePushed",
                "countUnit": "days",
                "countNumber": 7,
            },
            "action": {"type": "expire"},
        }
    ]
}


def settings_of(text: str, base_dir: Path, where: str = WHERE) -> RepositorySettings:
    return parse_settings(yaml.safe_load(textwrap.dedent(text)), where, base_dir=base_dir)


# --- config errors -------------------------------------------------------------------------------

LONG_KEY = "k" * 129
RULE = (
    "{rulePriority: 1, selection: {tagStatus: any, countType: imageCountMoreThan, "
    "countNumber: 30}, action: {type: expire}}"
)
MANY_TAGS = "{" + ", ".join(f"t{index}: v" for index in range(51)) + "}"

ERRORS = [
    ("[scan_on_push]", f"{WHERE}: expected a mapping, got a list"),
    ("'yes'", f"{WHERE}: expected a mapping, got 'yes'"),
    (
        "{scan_on_psh: true}",
        f"{WHERE}.scan_on_psh: unknown key (did you mean 'scan_on_push'?)",
    ),
    (
        "{colour: red}",
        f"{WHERE}.colour: unknown key (expected one of: scan_on_push, tag_mutability, "
        "encryption, lifecycle_policy, tags)",
    ),
    ("{scan_on_push: 'yes'}", f"{WHERE}.scan_on_push: expected true or false, got 'yes'"),
    ("{scan_on_push: 1}", f"{WHERE}.scan_on_push: expected true or false, got 1 (a number)"),
    (
        "{tag_mutability: immutable}",
        f"{WHERE}.tag_mutability: expected one of {MODES}, got 'immutable'",
    ),
    (
        "{tag_mutability: IMMUTABLE_WITH_EXCLUSION}",
        f"{WHERE}.tag_mutability.exclusions: IMMUTABLE_WITH_EXCLUSION needs a list of 1 to 5 "
        "tag filters (like latest or nightly-*), got nothing",
    ),
    (
        "{tag_mutability: {mode: MUTABLE_WITH_EXCLUSION, exclusions: []}}",
        f"{WHERE}.tag_mutability.exclusions: MUTABLE_WITH_EXCLUSION needs a list of 1 to 5 "
        "tag filters (like latest or nightly-*), got a list",
    ),
    (
        "{tag_mutability: {mode: IMMUTABLE_WITH_EXCLUSION, exclusions: [a, b, c, d, e, f]}}",
        f"{WHERE}.tag_mutability.exclusions: IMMUTABLE_WITH_EXCLUSION needs a list of 1 to 5 "
        "tag filters (like latest or nightly-*), got a list",
    ),
    (
        "{tag_mutability: {mode: IMMUTABLE_WITH_EXCLUSION, exclusions: ['v1/*']}}",
        f"{WHERE}.tag_mutability.exclusions[0]: expected a tag filter of 1 to 128 letters, "
        "digits, '.', '_', '-' and '*', got 'v1/*'",
    ),
    (
        "{tag_mutability: {mode: IMMUTABLE, exclusions: [latest]}}",
        f"{WHERE}.tag_mutability.exclusions: only with IMMUTABLE_WITH_EXCLUSION or "
        "MUTABLE_WITH_EXCLUSION",
    ),
    (
        "{tag_mutability: {mode: IMMUTABLE, except: [latest]}}",
        f"{WHERE}.tag_mutability.except: unknown key (expected one of: mode, exclusions)",
    ),
    (
        "{tag_mutability: true}",
        f"{WHERE}.tag_mutability: expected one of {MODES}, got true (a boolean)",
    ),
    ("{encryption: KMS}", f"{WHERE}.encryption: expected a mapping, got 'KMS'"),
    (
        "{encryption: {kms_key: x}}",
        f"{WHERE}.encryption.type: required (AES256, KMS or KMS_DSSE)",
    ),
    (
        "{encryption: {type: kms}}",
        f"{WHERE}.encryption.type: expected AES256, KMS or KMS_DSSE, got 'kms'",
    ),
    (
        "{encryption: {type: kms_dsse}}",
        f"{WHERE}.encryption.type: expected AES256, KMS or KMS_DSSE, got 'kms_dsse'",
    ),
    (
        f"{{encryption: {{type: AES256, kms_key: '{KEY_ARN}'}}}}",
        f"{WHERE}.encryption.kms_key: only allowed with type KMS or KMS_DSSE",
    ),
    (
        "{encryption: {type: KMS, kms_key: 42}}",
        f"{WHERE}.encryption.kms_key: expected a KMS key ARN, ID or alias, got 42 (a number)",
    ),
    (
        "{encryption: {type: KMS, kms_key: " + "k" * 2049 + "}}",
        f"{WHERE}.encryption.kms_key: longer than 2048 characters",
    ),
    (
        "{encryption: {type: KMS, kms_keyid: x}}",
        f"{WHERE}.encryption.kms_keyid: unknown key (did you mean 'kms_key'?)",
    ),
    (
        "{lifecycle_policy: 42}",
        f"{WHERE}.lifecycle_policy: expected a mapping (ECR's lifecycle policy) or the path of "
        "a JSON file, got 42 (a number)",
    ),
    (
        "{lifecycle_policy: ''}",
        f"{WHERE}.lifecycle_policy: expected a mapping (ECR's lifecycle policy) or the path of "
        "a JSON file, got ''",
    ),
    (
        "{lifecycle_policy: missing.json}",
        f"{WHERE}.lifecycle_policy: no such file '{{dir}}/missing.json'",
    ),
    (
        "{lifecycle_policy: broken.json}",
        f"{WHERE}.lifecycle_policy: '{{dir}}/broken.json' is not JSON: line 2, column 11: "
        "Expecting property name enclosed in double quotes",
    ),
    (
        "{lifecycle_policy: list.json}",
        f"{WHERE}.lifecycle_policy: '{{dir}}/list.json' holds a list, not a lifecycle policy "
        "object",
    ),
    (
        "{lifecycle_policy: policies}",
        f"{WHERE}.lifecycle_policy: cannot read '{{dir}}/policies': Is a directory",
    ),
    (
        "{lifecycle_policy: norules.json}",
        f"{WHERE}.lifecycle_policy: expected 'rules', a non-empty list of lifecycle rules",
    ),
    (
        "{lifecycle_policy: {rules: []}}",
        f"{WHERE}.lifecycle_policy: expected 'rules', a non-empty list of lifecycle rules",
    ),
    (
        "{lifecycle_policy: {rulez: [{}]}}",
        f"{WHERE}.lifecycle_policy: expected 'rules', a non-empty list of lifecycle rules",
    ),
    (
        "{lifecycle_policy: {rules: [{rulePriority: 1, selection: {}}]}}",
        f"{WHERE}.lifecycle_policy: rules[0] has no 'action' (a lifecycle rule has rulePriority, "
        "selection, action)",
    ),
    (
        "{lifecycle_policy: {rules: [" + RULE + ", expire]}}",
        f"{WHERE}.lifecycle_policy: rules[1] has no 'rulePriority' (a lifecycle rule has "
        "rulePriority, selection, action)",
    ),
    (
        "{lifecycle_policy: {rules: [{rulePriority: 1, selection: {since: 2024-01-01}, "
        "action: {type: expire}}]}}",
        f"{WHERE}.lifecycle_policy: holds a value JSON cannot express (a date?)",
    ),
    (
        "{lifecycle_policy: {rules: [{rulePriority: 1, selection: {}, action: {}}]}}",
        f"{WHERE}.lifecycle_policy: 57 characters as JSON; ECR takes 100 to 30720",
    ),
    (
        "{lifecycle_policy: {rules: [{rulePriority: 1, selection: {}, action: {}, "
        "description: '" + "x" * 30700 + "'}]}}",
        f"{WHERE}.lifecycle_policy: 30774 characters as JSON; ECR takes 100 to 30720",
    ),
    ("{tags: [team]}", f"{WHERE}.tags: expected a mapping of tag names to values, got a list"),
    (
        "{tags: {cost-center: 42}}",
        f"{WHERE}.tags.cost-center: expected a string, got 42 (a number) (write it in quotes)",
    ),
    (
        "{tags: {public: false}}",
        f"{WHERE}.tags.public: expected a string, got false (a boolean) (write it in quotes)",
    ),
    ("{tags: {team: null}}", f"{WHERE}.tags.team: expected a string, got nothing"),
    (
        "{tags: {42: answer}}",
        f"{WHERE}.tags: tag name 42 (a number) is not a string (write it in quotes)",
    ),
    ("{tags: {'': x}}", f"{WHERE}.tags: tag name '' is not 1 to 128 characters"),
    (
        f"{{tags: {{{LONG_KEY}: x}}}}",
        f"{WHERE}.tags: tag name '{LONG_KEY}' is not 1 to 128 characters",
    ),
    (
        "{tags: {team: '" + "v" * 257 + "'}}",
        f"{WHERE}.tags.team: value longer than 256 characters",
    ),
    (
        "{tags: {'aws:createdBy': me}}",
        f"{WHERE}.tags.aws:createdBy: tag names starting with 'aws:' are reserved",
    ),
    (f"{{tags: {MANY_TAGS}}}", f"{WHERE}.tags: 51 tags, more than ECR's 50"),
]


def _error_id(case: tuple[str, str]) -> str:
    return case[1].split(": ")[0].removeprefix(WHERE + ".") + ":" + case[0][:30]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[_error_id(case) for case in ERRORS])
def test_config_error_messages(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "broken.json").write_text('{"rules": [\n  {"a": 1,}]}')
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "norules.json").write_text('{"rulePriority": 1}')
    (tmp_path / "policies").mkdir()
    with pytest.raises(ConfigError) as caught:
        settings_of(text, tmp_path)
    assert str(caught.value) == message.replace("{dir}", str(tmp_path))
    assert "\n" not in str(caught.value)


def test_errors_name_the_given_key_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_of("{scan_on_push: 'no'}", tmp_path, "images[3].repository_settings")
    assert str(caught.value) == (
        "images[3].repository_settings.scan_on_push: expected true or false, got 'no'"
    )


# --- parsing and merging -------------------------------------------------------------------------


def test_nothing_given_manages_nothing(tmp_path: Path) -> None:
    assert settings_of("null", tmp_path) == RepositorySettings()
    assert settings_of("{}", tmp_path) == RepositorySettings()
    assert create_arguments(RepositorySettings()) == {}


def test_full_settings_parse(tmp_path: Path) -> None:
    settings = settings_of(
        f"""
        scan_on_push: true
        tag_mutability: IMMUTABLE
        encryption: {{type: KMS, kms_key: "{KEY_ARN}"}}
        lifecycle_policy:
          rules:
            - rulePriority: 1
              description: keep 30 tagged images
              selection: {{tagStatus: any, countType: imageCountMoreThan, countNumber: 30}}
              action: {{type: expire}}
        tags: {{team: platform, cost-center: "42"}}
        """,
        tmp_path,
    )
    assert settings == RepositorySettings(
        scan_on_push=True,
        tag_mutability=TagMutability("IMMUTABLE"),
        encryption=Encryption("KMS", KEY_ARN),
        lifecycle_policy=canonical_json(RULES),
        tags=(("cost-center", "42"), ("team", "platform")),
    )


def test_lifecycle_file_is_relative_to_the_base_dir_and_made_canonical(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "keep.json").write_text(json.dumps(RULES, indent=4))
    settings = settings_of("{lifecycle_policy: policies/keep.json}", tmp_path)
    assert settings.lifecycle_policy == canonical_json(RULES)
    assert settings.lifecycle_policy.startswith('{"rules":[{"action":{"type":"expire"},')


def test_kms_without_a_key_and_aes256(tmp_path: Path) -> None:
    assert settings_of("{encryption: {type: KMS}}", tmp_path).encryption == Encryption("KMS")
    assert settings_of("{encryption: {type: AES256}}", tmp_path).encryption == Encryption("AES256")


def test_kms_dsse_dual_layer_encryption_as_ecr_takes_it(tmp_path: Path) -> None:
    dsse = settings_of(f"{{encryption: {{type: KMS_DSSE, kms_key: '{KEY_ARN}'}}}}", tmp_path)
    assert dsse.encryption == Encryption("KMS_DSSE", KEY_ARN)
    assert create_arguments(dsse) == {
        "encryptionConfiguration": {"encryptionType": "KMS_DSSE", "kmsKey": KEY_ARN}
    }
    assert settings_of("{encryption: {type: KMS_DSSE}}", tmp_path).encryption == Encryption(
        "KMS_DSSE"
    )


def test_empty_tag_value_is_allowed(tmp_path: Path) -> None:
    assert settings_of("{tags: {flag: ''}}", tmp_path).tags == (("flag", ""),)


def test_per_image_settings_win_key_by_key_and_tags_merge(tmp_path: Path) -> None:
    (tmp_path / "policy.json").write_text(json.dumps(OTHER_RULES))
    base = settings_of(
        f"""
        scan_on_push: true
        tag_mutability: IMMUTABLE
        encryption: {{type: KMS, kms_key: "{KEY_ARN}"}}
        tags: {{team: platform, cost-center: "42"}}
        """,
        tmp_path,
    )
    image = settings_of(
        """
        scan_on_push: false
        encryption: {type: AES256}
        lifecycle_policy: policy.json
        tags: {team: web, owner: alice}
        """,
        tmp_path,
        "images[0].repository_settings",
    )
    assert image.merged_over(base) == RepositorySettings(
        scan_on_push=False,  # a false here wins over a true there
        tag_mutability=TagMutability("IMMUTABLE"),  # not given here: the ecr one
        encryption=Encryption("AES256"),  # replaced whole, kms_key not inherited
        lifecycle_policy=canonical_json(OTHER_RULES),
        tags=(("cost-center", "42"), ("owner", "alice"), ("team", "web")),
    )
    assert RepositorySettings().merged_over(base) == base
    assert base.merged_over(RepositorySettings()) == base


# --- CreateRepository's arguments ----------------------------------------------------------------


def test_create_arguments() -> None:
    settings = RepositorySettings(
        scan_on_push=False,
        tag_mutability=TagMutability("IMMUTABLE"),
        encryption=Encryption("KMS", KEY_ARN),
        lifecycle_policy=canonical_json(RULES),
        tags=(("cost-center", "42"), ("team", "platform")),
    )
    assert create_arguments(settings) == {
        "imageScanningConfiguration": {"scanOnPush": False},
        "imageTagMutability": "IMMUTABLE",
        "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": KEY_ARN},
        "tags": [{"Key": "cost-center", "Value": "42"}, {"Key": "team", "Value": "platform"}],
    }
    assert create_arguments(RepositorySettings(encryption=Encryption("KMS"))) == {
        "encryptionConfiguration": {"encryptionType": "KMS"}
    }
    assert create_arguments(RepositorySettings(encryption=Encryption("AES256"))) == {
        "encryptionConfiguration": {"encryptionType": "AES256"}
    }


# --- drift ---------------------------------------------------------------------------------------

ACTUAL = ActualSettings(
    scan_on_push=False,
    tag_mutability=TagMutability("MUTABLE"),
    encryption_type="AES256",
    kms_key=None,
    lifecycle_policy=None,
    tags={"team": "platform", "extra": "x"},
)
ACTUAL_KMS = ActualSettings(
    scan_on_push=False,
    tag_mutability=TagMutability("MUTABLE"),
    encryption_type="KMS",
    kms_key=KEY_ARN,
)
POLICY = canonical_json(RULES)

DRIFTS: list[tuple[str, RepositorySettings, ActualSettings, list[Drift]]] = [
    ("nothing-managed", RepositorySettings(), ACTUAL, []),
    ("scan-same", RepositorySettings(scan_on_push=False), ACTUAL, []),
    (
        "scan-differs",
        RepositorySettings(scan_on_push=True),
        ACTUAL,
        [Drift("scan_on_push", "true", "false", True)],
    ),
    ("mutability-same", RepositorySettings(tag_mutability=TagMutability("MUTABLE")), ACTUAL, []),
    (
        "mutability-differs",
        RepositorySettings(tag_mutability=TagMutability("IMMUTABLE")),
        ACTUAL,
        [Drift("tag_mutability", "IMMUTABLE", "MUTABLE", True)],
    ),
    ("aes-same", RepositorySettings(encryption=Encryption("AES256")), ACTUAL, []),
    (
        "kms-wanted-aes-found",
        RepositorySettings(encryption=Encryption("KMS", KEY_ARN)),
        ACTUAL,
        [Drift("encryption", f"KMS {KEY_ARN}", "AES256", False)],
    ),
    (
        "aes-wanted-kms-found",
        RepositorySettings(encryption=Encryption("AES256")),
        ACTUAL_KMS,
        [Drift("encryption", "AES256", f"KMS {KEY_ARN}", False)],
    ),
    ("kms-any-key", RepositorySettings(encryption=Encryption("KMS")), ACTUAL_KMS, []),
    ("kms-same-arn", RepositorySettings(encryption=Encryption("KMS", KEY_ARN)), ACTUAL_KMS, []),
    (
        "kms-key-id-of-that-arn",
        RepositorySettings(encryption=Encryption("KMS", KEY_ARN.rpartition("/")[2])),
        ACTUAL_KMS,
        [],
    ),
    (
        "kms-alias-cannot-be-compared",
        RepositorySettings(encryption=Encryption("KMS", "alias/ecr")),
        ACTUAL_KMS,
        [],
    ),
    (
        "kms-other-key",
        RepositorySettings(encryption=Encryption("KMS", KEY_ARN[:-2] + "ff")),
        ACTUAL_KMS,
        [Drift("encryption", f"KMS {KEY_ARN[:-2]}ff", f"KMS {KEY_ARN}", False)],
    ),
    (
        "kms-dsse-is-not-kms",
        RepositorySettings(encryption=Encryption("KMS_DSSE", KEY_ARN)),
        ACTUAL_KMS,
        [Drift("encryption", f"KMS_DSSE {KEY_ARN}", f"KMS {KEY_ARN}", False)],
    ),
    (
        "kms-dsse-same",
        RepositorySettings(encryption=Encryption("KMS_DSSE")),
        ActualSettings(False, TagMutability(), "KMS_DSSE", kms_key=KEY_ARN),
        [],
    ),
    (
        "lifecycle-missing",
        RepositorySettings(lifecycle_policy=POLICY),
        ACTUAL,
        [Drift("lifecycle_policy", POLICY, NOT_SET, True)],
    ),
    (
        "lifecycle-same-json-other-text",
        RepositorySettings(lifecycle_policy=POLICY),
        ActualSettings(
            False, TagMutability(), "AES256", lifecycle_policy=json.dumps(RULES, indent=2)
        ),
        [],
    ),
    (
        "lifecycle-differs",
        RepositorySettings(lifecycle_policy=POLICY),
        ActualSettings(False, TagMutability(), "AES256", lifecycle_policy=json.dumps(OTHER_RULES)),
        [Drift("lifecycle_policy", POLICY, canonical_json(OTHER_RULES), True)],
    ),
    ("tags-same-extra-ignored", RepositorySettings(tags=(("team", "platform"),)), ACTUAL, []),
    (
        "tags-missing-and-different",
        RepositorySettings(tags=(("cost-center", "42"), ("team", "web"))),
        ACTUAL,
        [
            Drift("tags.cost-center", "42", NOT_SET, True),
            Drift("tags.team", "web", "platform", True),
        ],
    ),
    (
        "all-in-order",
        RepositorySettings(
            scan_on_push=True,
            tag_mutability=TagMutability("IMMUTABLE"),
            encryption=Encryption("KMS"),
            lifecycle_policy=POLICY,
            tags=(("team", "web"),),
        ),
        ACTUAL,
        [
            Drift("scan_on_push", "true", "false", True),
            Drift("tag_mutability", "IMMUTABLE", "MUTABLE", True),
            Drift("encryption", "KMS", "AES256", False),
            Drift("lifecycle_policy", POLICY, NOT_SET, True),
            Drift("tags.team", "web", "platform", True),
        ],
    ),
]


@pytest.mark.parametrize(
    ("settings", "actual", "expected"),
    [case[1:] for case in DRIFTS],
    ids=[case[0] for case in DRIFTS],
)
def test_drift(settings: RepositorySettings, actual: ActualSettings, expected: list[Drift]) -> None:
    assert drift(settings, actual) == expected


# --- Ecr's repositories against moto ------------------------------------------------------------

NAME = "dockerhub/library/ruby"
FULL = RepositorySettings(
    scan_on_push=True,
    tag_mutability=TagMutability("IMMUTABLE"),
    encryption=Encryption("KMS", KEY_ARN),
    lifecycle_policy=POLICY,
    tags=(("cost-center", "42"), ("team", "platform")),
)


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """A boto3 ECR client on moto's in-process mock, with dummy keys and no endpoint override."""
    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL") or name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
            monkeypatch.delenv(name)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    with mock_aws():
        yield boto3.client("ecr", region_name="us-east-1")


def _described(client: Any, name: str = NAME) -> dict[str, Any]:
    repository: dict[str, Any] = client.describe_repositories(repositoryNames=[name])[
        "repositories"
    ][0]
    return repository


def _tags(client: Any, name: str = NAME) -> dict[str, str]:
    arn = _described(client, name)["repositoryArn"]
    return {t["Key"]: t["Value"] for t in client.list_tags_for_resource(resourceArn=arn)["tags"]}


def test_create_sets_everything_and_ecr_reports_it(client: Any) -> None:
    repositories = Ecr(region="us-east-1", client=client)
    assert repositories.create(NAME, FULL) is True
    repository = _described(client)
    assert repository["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repository["imageTagMutability"] == "IMMUTABLE"
    assert repository["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": KEY_ARN}
    text = client.get_lifecycle_policy(repositoryName=NAME)["lifecyclePolicyText"]
    assert json.loads(text) == RULES
    assert _tags(client) == {"cost-center": "42", "team": "platform"}

    actual = repositories.actual(NAME)
    assert actual == ActualSettings(
        scan_on_push=True,
        tag_mutability=TagMutability("IMMUTABLE"),
        encryption_type="KMS",
        kms_key=KEY_ARN,
        lifecycle_policy=text,
        tags={"cost-center": "42", "team": "platform"},
    )
    assert drift(FULL, actual) == []


def test_create_again_is_false_and_changes_nothing(client: Any) -> None:
    repositories = Ecr(region="us-east-1", client=client)
    assert (
        repositories.create(NAME, RepositorySettings(tag_mutability=TagMutability("IMMUTABLE")))
        is True
    )
    assert (
        repositories.create(NAME, RepositorySettings(tag_mutability=TagMutability("MUTABLE")))
        is False
    )
    assert _described(client)["imageTagMutability"] == "IMMUTABLE"


def test_unmanaged_settings_get_ecr_defaults_and_no_lifecycle_policy(client: Any) -> None:
    repositories = Ecr(region="us-east-1", client=client)
    assert repositories.create(NAME, RepositorySettings()) is True
    assert repositories.actual(NAME) == ActualSettings(
        scan_on_push=False,
        tag_mutability=TagMutability("MUTABLE"),
        encryption_type="AES256",
        kms_key=None,
        lifecycle_policy=None,  # GetLifecyclePolicy: LifecyclePolicyNotFoundException
        tags={},
    )


def test_actual_of_a_missing_repository_is_none(client: Any) -> None:
    assert Ecr(region="us-east-1", client=client).actual("no/such/repository") is None


def test_kms_without_a_key_gets_a_key_and_is_not_drift(client: Any) -> None:
    repositories = Ecr(region="us-east-1", client=client)
    settings = RepositorySettings(encryption=Encryption("KMS"))
    repositories.create(NAME, settings)
    actual = repositories.actual(NAME)
    assert actual is not None
    assert actual.encryption_type == "KMS"
    assert actual.kms_key  # moto makes up a key ARN, as ECR names the AWS managed key
    assert drift(settings, actual) == []


def test_out_of_band_changes_are_drift_and_apply_brings_them_back(client: Any) -> None:
    repositories = Ecr(region="us-east-1", client=client)
    repositories.create(NAME, FULL)
    arn = _described(client)["repositoryArn"]
    # Someone changes the repository by hand.
    client.put_image_scanning_configuration(
        repositoryName=NAME, imageScanningConfiguration={"scanOnPush": False}
    )
    client.put_image_tag_mutability(repositoryName=NAME, imageTagMutability="MUTABLE")
    client.put_lifecycle_policy(repositoryName=NAME, lifecyclePolicyText=json.dumps(OTHER_RULES))
    client.untag_resource(resourceArn=arn, tagKeys=["cost-center"])
    client.tag_resource(
        resourceArn=arn,
        tags=[{"Key": "team", "Value": "web"}, {"Key": "added-by-hand", "Value": "yes"}],
    )

    actual = repositories.actual(NAME)
    assert actual is not None
    drifts = drift(FULL, actual)
    assert drifts == [
        Drift("scan_on_push", "true", "false", True),
        Drift("tag_mutability", "IMMUTABLE", "MUTABLE", True),
        Drift("lifecycle_policy", POLICY, canonical_json(OTHER_RULES), True),
        Drift("tags.cost-center", "42", NOT_SET, True),
        Drift("tags.team", "platform", "web", True),
    ]

    fresh = Ecr(region="us-east-1", client=client)  # no ARN cached: apply finds it itself
    assert fresh.apply(NAME, drifts, FULL) == [d.setting for d in drifts]

    repository = _described(client)
    assert repository["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repository["imageTagMutability"] == "IMMUTABLE"
    text = client.get_lifecycle_policy(repositoryName=NAME)["lifecyclePolicyText"]
    assert json.loads(text) == RULES
    # The extra tag stays: tags not in the config are not mirror's.
    assert _tags(client) == {"cost-center": "42", "team": "platform", "added-by-hand": "yes"}
    after = repositories.actual(NAME)
    assert after is not None
    assert drift(FULL, after) == []
    assert repositories.apply(NAME, [], FULL) == []


def test_encryption_drift_is_reported_and_left_alone(client: Any) -> None:
    repositories = Ecr(region="us-east-1", client=client)
    repositories.create(NAME, RepositorySettings(encryption=Encryption("AES256")))
    wanted = RepositorySettings(encryption=Encryption("KMS", KEY_ARN), scan_on_push=True)
    actual = repositories.actual(NAME)
    assert actual is not None
    drifts = drift(wanted, actual)
    assert drifts == [
        Drift("scan_on_push", "true", "false", True),
        Drift("encryption", f"KMS {KEY_ARN}", "AES256", False),
    ]
    assert repositories.apply(NAME, drifts, wanted) == ["scan_on_push"]
    assert _described(client)["encryptionConfiguration"] == {"encryptionType": "AES256"}


def test_one_ecr_creates_reads_and_describes_its_registrys_repositories(client: Any) -> None:
    ecr = Ecr(region="us-east-1", registry_id="123456789012", client=client)
    repositories = ecr
    assert repositories.registry_id == "123456789012"
    assert repositories.create(NAME, FULL) is True
    actual = repositories.actual(NAME)
    assert actual is not None
    assert drift(FULL, actual) == []
    assert ecr.is_immutable(NAME, "any-tag")


def test_a_policy_ecr_refuses_is_one_plain_error(client: Any) -> None:
    repositories = Ecr(region="us-east-1", client=client)
    rules = {"rules": [{**RULES["rules"][0], "action": {"type": "delete"}}]}
    bad = RepositorySettings(lifecycle_policy=canonical_json(rules))
    with pytest.raises(RegistryError) as caught:
        repositories.create(NAME, bad)
    assert str(caught.value).startswith(
        f"cannot put the lifecycle policy of {NAME}: InvalidParameterException: "
    )
    assert "\n" not in str(caught.value)
    assert not caught.value.transient


# --- tag mutability with exclusion filters ------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "exclusions", "tag", "immutable"),
    [
        ("MUTABLE", (), "latest", False),
        ("IMMUTABLE", (), "latest", True),
        ("IMMUTABLE_WITH_EXCLUSION", ("latest",), "latest", False),
        ("IMMUTABLE_WITH_EXCLUSION", ("latest",), "1.0", True),
        ("IMMUTABLE_WITH_EXCLUSION", ("nightly-*",), "nightly-2026-01-01", False),
        ("IMMUTABLE_WITH_EXCLUSION", ("nightly-*",), "nightly", True),
        ("IMMUTABLE_WITH_EXCLUSION", ("*-dev", "latest"), "x-dev", False),
        ("IMMUTABLE_WITH_EXCLUSION", ("v1.*",), "v1x2", True),  # the dot is a dot
        ("MUTABLE_WITH_EXCLUSION", ("v*",), "v1.2.3", True),
        ("MUTABLE_WITH_EXCLUSION", ("v*",), "latest", False),
        ("MUTABLE_WITH_EXCLUSION", ("*",), "anything", True),
    ],
)
def test_a_tags_mutability_follows_the_mode_and_its_filters(
    mode: str, exclusions: tuple[str, ...], tag: str, immutable: bool
) -> None:
    assert TagMutability(mode, exclusions).immutable(tag) is immutable


def test_exclusion_filters_are_created_read_back_and_kept_by_apply(client: Any) -> None:
    wanted = RepositorySettings(
        tag_mutability=TagMutability("IMMUTABLE_WITH_EXCLUSION", ("latest", "nightly-*"))
    )
    repositories = Ecr(region="us-east-1", client=client)
    repositories.create(NAME, wanted)
    assert _described(client)["imageTagMutabilityExclusionFilters"] == [
        {"filterType": "WILDCARD", "filter": "latest"},
        {"filterType": "WILDCARD", "filter": "nightly-*"},
    ]
    actual = repositories.actual(NAME)
    assert actual is not None and drift(wanted, actual) == []
    client.put_image_tag_mutability(repositoryName=NAME, imageTagMutability="IMMUTABLE")
    actual = repositories.actual(NAME)
    assert actual is not None
    drifts = drift(wanted, actual)
    assert drifts == [
        Drift("tag_mutability", "IMMUTABLE_WITH_EXCLUSION (latest, nightly-*)", "IMMUTABLE", True)
    ]
    assert repositories.apply(NAME, drifts, wanted) == ["tag_mutability"]
    after = repositories.actual(NAME)
    assert after is not None and after.tag_mutability == wanted.tag_mutability
    ecr = Ecr(region="us-east-1", client=client)
    assert not ecr.is_immutable(NAME, "latest") and ecr.is_immutable(NAME, "1.0")
