"""AWS profiles as build hosts have them: an SSO profile with no login for cron's user."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from tests.stage import Stage

SSO_CONFIG = """\
[profile legacy-sso]
sso_start_url = https://example.awsapps.com/start
sso_region = us-east-1
sso_account_id = 123456789012
sso_role_name = MirrorPush
region = us-east-1

[profile cron]
sso_session = corp
sso_account_id = 123456789012
sso_role_name = MirrorPush
region = us-east-1

[sso-session corp]
sso_start_url = https://example.awsapps.com/start
sso_region = us-east-1
"""


def test_an_sso_profile_without_a_login_is_named(stage: Stage, tmp_path: Path) -> None:
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "config").write_text(SSO_CONFIG)  # HOME is tmp_path
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    user = pwd.getpwuid(os.getuid()).pw_name
    for profile in ("cron", "legacy-sso"):  # sso-session and the older inline form
        run = stage.mirror(  # no keys in the environment: the profile is what boto3 uses
            "sync",
            AWS_PROFILE=profile,
            AWS_ACCESS_KEY_ID="",
            AWS_SECRET_ACCESS_KEY="",
            AWS_SESSION_TOKEN="",
        )
        assert run.code == 2, run.stderr
        assert run.error.endswith(
            f"cannot get an ECR token: the AWS profile {profile!r} signs in with AWS SSO (IAM "
            f"Identity Center) and user {user!r} has no valid SSO login for it "
            f"(SSOTokenLoadError): run `aws sso login --profile {profile}` as {user} (an SSO "
            "login lasts hours; for cron, give this user credentials that need no login, such "
            "as an instance role)"
        ), run.error
    assert stage.hub.counts.requests == []  # stopped before any request to the source
