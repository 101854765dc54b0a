"""Every test runs with AWS out of reach (tests/conftest.py: no_real_aws), whatever the machine
or the shell that started pytest holds: a unit test that forgets moto is refused at once."""

from __future__ import annotations

import os

import boto3
import pytest

from mirror import aws
from mirror.errors import RegistryError
from tests.conftest import NO_AWS


@pytest.mark.parametrize("service", ["ecr", "sts", "secretsmanager"])
def test_every_client_a_test_makes_points_at_a_closed_local_port(service: str) -> None:
    assert boto3.DEFAULT_SESSION is None  # none cached from another test's environment
    assert aws._client(service, "us-east-1").meta.endpoint_url == NO_AWS


def test_nothing_of_the_machine_can_point_a_test_back_at_aws() -> None:
    assert not [name for name in os.environ if name.startswith("AWS_ENDPOINT_URL_")]
    assert "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS" not in os.environ
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        assert not os.path.exists(os.environ[name])  # no ~/.aws: its config could say so too
    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"


def test_a_login_without_moto_is_refused_here_not_sent_to_aws() -> None:
    with pytest.raises(RegistryError) as refused:
        aws.Ecr(region="us-east-1").login()
    assert str(refused.value) == (
        f'cannot get an ECR token: Could not connect to the endpoint URL: "{NO_AWS}/"'
    )
