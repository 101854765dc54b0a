"""Repository policy end to end: settings applied at creation, drift shown, --apply fixes it."""

from __future__ import annotations

import json

from tests.stage import Stage

LIFECYCLE = {
    "rules": [
        {
            "rulePriority": 1,
            "description": "keep 30 untagged images at most",
            "selection": {
                "tagStatus": "untagged",
                "countType": "imageCountMoreThan",
                "countNumber": 30,
            },
            "action": {"type": "expire"},
        }
    ]
}


def test_settings_applied_at_creation_and_drift_repaired(stage: Stage) -> None:
    (stage.tmp / "lifecycle.json").write_text(json.dumps(LIFECYCLE))
    stage.push("a", seed="a")
    stage.config(
        [stage.image("a", repository_settings={"tags": {"cost-center": "42"}})],
        ecr={
            "repository_settings": {
                "scan_on_push": True,
                "tag_mutability": "IMMUTABLE",
                "encryption": {"type": "AES256"},
                "lifecycle_policy": "lifecycle.json",
                "tags": {"team": "platform"},
            }
        },
        defaults={"referrers": False},  # with referrers, cosign's tags may move: test_signed
    )
    run = stage.mirror("sync")
    assert (run.code, run.actions()) == (0, ["copied"]), run.stderr
    client = stage.ecr()
    (repository,) = client.describe_repositories(repositoryNames=[stage.dest_repo()])[
        "repositories"
    ]
    assert repository["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repository["imageTagMutability"] == "IMMUTABLE"
    assert repository["encryptionConfiguration"]["encryptionType"] == "AES256"
    policy = client.get_lifecycle_policy(repositoryName=stage.dest_repo())
    assert json.loads(policy["lifecyclePolicyText"]) == LIFECYCLE
    tags = client.list_tags_for_resource(resourceArn=repository["repositoryArn"])["tags"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [
        ("cost-center", "42"),
        ("team", "platform"),
    ]

    clean = stage.mirror("repos")
    assert clean.code == 0, clean.stderr
    assert f"ok          {stage.dest.host}: {stage.dest_repo()}" in clean.stdout

    client.put_image_tag_mutability(repositoryName=stage.dest_repo(), imageTagMutability="MUTABLE")
    client.put_image_scanning_configuration(
        repositoryName=stage.dest_repo(), imageScanningConfiguration={"scanOnPush": False}
    )
    drifted = stage.mirror("repos")
    assert drifted.code == 1
    assert (
        f"drift       {stage.dest.host}: {stage.dest_repo()} tag_mutability: wanted IMMUTABLE, "
        "ECR has MUTABLE"
    ) in drifted.stdout
    assert "1 repositories, 2 differences left" in drifted.stdout

    fixed = stage.mirror("repos", "--apply")
    assert fixed.code == 0, fixed.stdout + fixed.stderr
    assert "1 repositories, 0 differences left, 2 settings changed" in fixed.stdout
    (repository,) = client.describe_repositories(repositoryNames=[stage.dest_repo()])[
        "repositories"
    ]
    assert repository["imageTagMutability"] == "IMMUTABLE"
    assert repository["imageScanningConfiguration"] == {"scanOnPush": True}


def test_repos_reports_missing_repositories_and_encryption_it_cannot_fix(stage: Stage) -> None:
    stage.config(
        [stage.image("a"), {"source": f"{stage.repo}-other", "tags": ["a"]}],
        ecr={"repository_settings": {"encryption": {"type": "KMS"}}},
    )
    stage.ecr().create_repository(repositoryName=stage.dest_repo())
    run = stage.mirror("repos", "--apply")
    assert run.code == 1
    assert (
        f"cannot-fix  {stage.dest.host}: {stage.dest_repo()} encryption: wanted KMS, ECR has "
        "AES256 (ECR cannot change it after creation)"
    ) in run.stdout
    assert f"missing     {stage.dest.host}: mirror/{stage.repo}-other" in run.stdout


def test_repos_counts_a_missing_repository_mirror_may_not_create_as_a_difference(
    stage: Stage,
) -> None:
    stage.config([stage.image("a")], ecr={"create_repositories": False})
    run = stage.mirror("repos")
    assert run.code == 1, run.stderr
    assert run.stdout.splitlines() == [
        f"missing     {stage.dest.host}: {stage.dest_repo()} (create_repositories is false: "
        "its images fail until someone creates it)",
        "1 repositories, 1 differences left",
    ]
    stage.ecr().create_repository(repositoryName=stage.dest_repo())
    assert stage.mirror("repos").code == 0
