"""Bad input outside the config file: the AWS environment and the command line's numbers.

Each case is one line naming the variable or option and its (non-secret) value, exit 2, before
anything is done. botocore's own behaviour for each is pinned too: it raises late, or silently
ignores what is wrong, which is why mirror checks first.
"""

from __future__ import annotations

import argparse
import builtins
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest

from mirror import aws, cli
from mirror.commands import sync
from mirror.errors import AuthError, ConfigError, SetupError
from mirror.plan import Shard

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME (so ~/.aws is ours) and no AWS variable from the machine."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never wait on an instance role
    return tmp_path


def write(path: Path, text: str | bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


ENVIRONMENTS = [
    (
        "region with a space",
        {"AWS_REGION": "us-east-1 "},
        "$AWS_REGION: 'us-east-1 ' is not an AWS region name (did you mean 'us-east-1'?)",
    ),
    (
        "region without dashes",
        {"AWS_DEFAULT_REGION": "useast1"},
        "$AWS_DEFAULT_REGION: 'useast1' is not an AWS region name (did you mean 'us-east-1'?)",
    ),
    (
        "region in capitals",
        {"AWS_REGION": "US-EAST-1"},
        "$AWS_REGION: 'US-EAST-1' is not an AWS region name (did you mean 'us-east-1'?)",
    ),
    (
        "region underscored",
        {"AWS_REGION": "eu_west_1"},
        "$AWS_REGION: 'eu_west_1' is not an AWS region name (did you mean 'eu-west-1'?)",
    ),
    (
        "not a region",
        {"AWS_REGION": "virginia"},
        "$AWS_REGION: 'virginia' is not an AWS region name (expected one like us-east-1)",
    ),
    (
        "key id alone",
        {"AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE"},
        "$AWS_ACCESS_KEY_ID is set but $AWS_SECRET_ACCESS_KEY is not: set both (an access key), "
        "or neither",
    ),
    (
        "secret alone",
        {"AWS_SECRET_ACCESS_KEY": SECRET},
        "$AWS_SECRET_ACCESS_KEY is set but $AWS_ACCESS_KEY_ID is not: set both (an access key), "
        "or neither",
    ),
    (
        "secret with an empty key id",
        {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": SECRET},
        "$AWS_SECRET_ACCESS_KEY is set but $AWS_ACCESS_KEY_ID is not: set both (an access key), "
        "or neither",
    ),
    (
        "profile nowhere",
        {"AWS_PROFILE": "prod"},
        "$AWS_PROFILE: no profile 'prod' in ~/.aws/config (no such file) or ~/.aws/credentials "
        "(no such file)",
    ),
    (
        "profile misspelt",
        {"AWS_PROFILE": "prdo", "AWS_CONFIG_FILE": "{tmp}/aws/config"},
        "$AWS_PROFILE: no profile 'prdo' in {tmp}/aws/config or ~/.aws/credentials (no such file) "
        "(did you mean 'prod'?)",
    ),
    (
        "default profile wins",
        {
            "AWS_PROFILE": "prod",
            "AWS_DEFAULT_PROFILE": "stage",
            "AWS_CONFIG_FILE": "{tmp}/aws/config",
        },
        "$AWS_DEFAULT_PROFILE: no profile 'stage' in {tmp}/aws/config or ~/.aws/credentials (no "
        "such file)",
    ),
    (
        "profile empty",
        {"AWS_PROFILE": ""},
        "$AWS_PROFILE is set but empty: name a profile, or unset it",
    ),
    (
        "default profile not written",
        {"AWS_PROFILE": "default", "AWS_CONFIG_FILE": "{tmp}/aws/config"},
        "$AWS_PROFILE: no profile 'default' in {tmp}/aws/config or ~/.aws/credentials (no such "
        "file)",
    ),
    (
        "config file unparsable",
        {"AWS_CONFIG_FILE": "{tmp}/aws/broken"},
        "$AWS_CONFIG_FILE: cannot parse {tmp}/aws/broken (line 1)",
    ),
    (
        "credentials file unparsable",
        {"AWS_SHARED_CREDENTIALS_FILE": "{tmp}/aws/secret-outside-section"},
        "$AWS_SHARED_CREDENTIALS_FILE: cannot parse {tmp}/aws/secret-outside-section (line 1)",
    ),
    (
        "credentials file with a section twice",
        {"AWS_SHARED_CREDENTIALS_FILE": "{tmp}/aws/twice"},
        "$AWS_SHARED_CREDENTIALS_FILE: cannot parse {tmp}/aws/twice (line 3)",
    ),
    (
        "config file not UTF-8",
        {"AWS_CONFIG_FILE": "{tmp}/aws/latin1"},
        "$AWS_CONFIG_FILE: cannot parse {tmp}/aws/latin1 (not text in the expected encoding)",
    ),
    (
        "config file is a directory",
        {"AWS_CONFIG_FILE": "{tmp}/aws"},
        "$AWS_CONFIG_FILE: {tmp}/aws is not a file",
    ),
    (
        "default credentials file unparsable",
        {"HOME_CREDENTIALS": "x"},
        "the AWS credentials file: cannot parse {tmp}/.aws/credentials (line 1)",
    ),
]


@pytest.mark.parametrize(
    ("variables", "message"), [c[1:] for c in ENVIRONMENTS], ids=[c[0] for c in ENVIRONMENTS]
)
def test_bad_aws_environments(home: Path, variables: dict[str, str], message: str) -> None:
    write(home / "aws" / "config", "[profile prod]\nregion = us-east-1\n")
    write(home / "aws" / "broken", "[default\nregion = us-east-1\n")
    write(home / "aws" / "secret-outside-section", f"aws_secret_access_key = {SECRET}\n")
    write(home / "aws" / "twice", "[a]\nx = 1\n[a]\ny = 2\n")
    write(home / "aws" / "latin1", "[default]\nregion = caf\xe9\n".encode("latin-1"))
    if variables.pop("HOME_CREDENTIALS", None):
        write(home / ".aws" / "credentials", f"aws_secret_access_key = {SECRET}\n")
    environ = {name: value.replace("{tmp}", str(home)) for name, value in variables.items()}
    with pytest.raises(SetupError) as caught:
        aws.check_environment(environ)
    assert str(caught.value) == message.replace("{tmp}", str(home))
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "variables",
    [
        {},
        {"AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "eu-west-1"},
        {"AWS_REGION": "eu-south-9"},  # newer than botocore's list, the right shape: taken
        {"AWS_REGION": "us-gov-west-1"},
        {"AWS_REGION": ""},  # empty is unset, for mirror and for botocore
        {"AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRET},
        {"AWS_PROFILE": "prod", "AWS_CONFIG_FILE": "{tmp}/aws/config"},
        {"AWS_PROFILE": "ci", "AWS_SHARED_CREDENTIALS_FILE": "{tmp}/aws/credentials"},
        {"AWS_CONFIG_FILE": "{tmp}/nowhere"},  # botocore skips a missing file; so does mirror
        {"AWS_CONFIG_FILE": ""},
    ],
)
def test_good_aws_environments(home: Path, variables: dict[str, str]) -> None:
    write(home / "aws" / "config", "[profile prod]\nregion = us-east-1\n")
    write(home / "aws" / "credentials", "[ci]\naws_access_key_id = A\n")
    aws.check_environment({k: v.replace("{tmp}", str(home)) for k, v in variables.items()})


def test_an_unreadable_aws_file(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As root every file is readable: make open() refuse this one, as it would for a user.
    path = write(home / "aws" / "config", "[default]\n")
    real_open = builtins.open

    def refusing_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file) == path:
            raise PermissionError(13, "Permission denied", path)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    with pytest.raises(SetupError) as caught:
        aws.check_environment({"AWS_CONFIG_FILE": path})
    assert str(caught.value) == f"$AWS_CONFIG_FILE: cannot read {path}: Permission denied"


# --- what botocore itself does: the reasons for the checks above ---------------------------------


def test_botocore_ignores_a_lone_secret_key(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    assert boto3.Session().get_credentials() is None  # silently: no error names the variable


def test_botocore_reads_aws_default_region_not_aws_region(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert boto3.Session().region_name is None  # mirror's region_of reads AWS_REGION itself
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-2")
    assert boto3.Session().region_name == "eu-west-2"


@pytest.mark.parametrize(
    ("variables", "raised"),
    [
        ({"AWS_PROFILE": "nope"}, botocore.exceptions.ProfileNotFound),
        ({"AWS_ACCESS_KEY_ID": "AKIA"}, botocore.exceptions.PartialCredentialsError),
        ({"AWS_CONFIG_FILE": "{tmp}/broken"}, botocore.exceptions.ConfigParseError),
    ],
)
def test_botocore_fails_late_where_mirror_checks_first(
    home: Path, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], raised: type
) -> None:
    write(home / "broken", "[default\n")
    for name, value in variables.items():
        monkeypatch.setenv(name, value.replace("{tmp}", str(home)))
    with pytest.raises(raised):
        # at client creation, outside aws._call (a new Session: boto3's default one caches)
        boto3.Session().client("ecr", region_name="us-east-1")
    with pytest.raises(SetupError):
        aws.check_environment()


# --- botocore's errors, translated at the boundary -----------------------------------------------


def fail_with(error: Exception) -> Any:
    def method(**kwargs: Any) -> Any:
        raise error

    return method


@pytest.mark.parametrize(
    ("error", "translated", "message"),
    [
        (
            botocore.exceptions.ProfileNotFound(profile="prod"),
            SetupError,
            "cannot get an ECR token: no AWS profile 'prod' (check $AWS_PROFILE)",
        ),
        (
            botocore.exceptions.PartialCredentialsError(
                provider="env", cred_var="AWS_SECRET_ACCESS_KEY"
            ),
            SetupError,
            "cannot get an ECR token: partial AWS credentials in env: AWS_SECRET_ACCESS_KEY "
            "missing",
        ),
        (
            botocore.exceptions.ConfigParseError(path="/root/.aws/config"),
            SetupError,
            "cannot get an ECR token: cannot parse /root/.aws/config",
        ),
        (
            botocore.exceptions.InvalidRegionError(region_name="us-east-1 "),
            SetupError,
            "cannot get an ECR token: 'us-east-1 ' is not an AWS region name",
        ),
        (
            botocore.exceptions.CredentialRetrievalError(
                provider="custom-process", error_msg=f"token {SECRET} expired"
            ),
            AuthError,
            "cannot get an ECR token: no AWS credentials from custom-process "
            "(CredentialRetrievalError; its message is not shown, as it may quote a credential: "
            "try that source by hand)",
        ),
    ],
)
def test_botocore_setup_errors_are_one_line_exit_2(
    error: Exception, translated: type, message: str
) -> None:
    with pytest.raises(translated) as caught:
        aws._call(fail_with(error), "get an ECR token")
    assert str(caught.value) == message
    assert getattr(caught.value, "exit_code", None) == 2


# --- the command line's numbers: ASCII digits only -----------------------------------------------


@pytest.mark.parametrize(
    "text", ["²/3", "٣/٣", "1/٣", "1/3 ", " 1/3", "+1/3", "1_0/20", "0/3", "4/3", "1/" + "9" * 5000]
)
def test_shard_takes_ascii_digits_only(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        sync.parse_shard(text)
    assert str(caught.value) == (
        f"--shard / $MIRROR_SHARD: expected K/N with 1 <= K <= N, got {text!r}"
    )


def test_shard_parses() -> None:
    assert sync.parse_shard("2/3") == Shard(2, 3)
    assert sync.parse_shard("003/010") == Shard(3, 10)


@pytest.mark.parametrize("text", ["٣", "²", "+3", " 3", "3_0", "0", "-1", "", "9" * 5000])
def test_jobs_take_ascii_digits_only(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        cli._positive(text)
    assert str(caught.value) == f"expected a whole number of 1 or more, got {text!r}"


@pytest.mark.parametrize("text", ["٣", "²", "+0", "-1", "", "9" * 5000])
def test_max_pulls_take_ascii_digits_only(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        cli._whole(text)
    assert str(caught.value) == f"expected a whole number of 0 or more, got {text!r}"


def test_numbers_parse() -> None:
    assert (cli._positive("4"), cli._whole("0"), cli._whole("100")) == (4, 0, 100)


@pytest.mark.parametrize("argv", [["sync", "--jobs", "٣"], ["sync", "--max-pulls", "٣"]])
def test_non_ascii_numbers_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == 2
    assert "expected a whole number" in capsys.readouterr().err
