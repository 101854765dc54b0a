"""The one module that imports boto3: the ECR token, repositories, and Secrets Manager.

boto3 finds credentials by itself (environment, profile, CodeBuild's container endpoint) and
obeys AWS_ENDPOINT_URL_ECR, which is how tests point it at moto's server.
"""

from __future__ import annotations

import base64
import configparser
import difflib
import functools
import json
import os
import pwd
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3
import botocore.config
import botocore.configloader
import botocore.exceptions
import botocore.loaders
import botocore.model

from mirror.errors import (
    AuthError,
    ConfigError,
    MirrorError,
    RegistryError,
    SetupError,
    hide_passwords,
)
from mirror.oci import Login
from mirror.repo_settings import (
    ActualSettings,
    Drift,
    Encryption,
    RepositorySettings,
    TagMutability,
    create_arguments,
)

DEFAULT_TIMEOUT = 30.0  # seconds a call to an AWS API may wait for an answer, a try


def _config(timeout: float) -> botocore.config.Config:
    """Retries as the SDK's standard mode does, three tries; each bounded by `timeout` (the
    run's --timeout): a silent API costs about three time-outs, not boto3's default
    60 s times five."""
    return botocore.config.Config(
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=min(10.0, timeout),
        read_timeout=timeout,
    )


_TOKEN_LIFETIME = 12 * 3600.0  # what ECR grants; used when expiresAt is not believable
_REFRESH_MARGIN = 15 * 60.0  # renew this long before the token expires


@dataclass(frozen=True)
class EcrLogin:
    """The registry host ECR named and the Basic login its token stands for."""

    host: str
    login: Login
    renew_at: float  # time.monotonic() after which the token should be fetched again


_NO_LIFECYCLE_POLICY = "LifecyclePolicyNotFoundException"


class Ecr:
    """ECR's API for one region and registry (account): the registry's login, and its
    repositories (whether one exists, its tag mutability; created with their settings, read
    back, their drift fixed). One client for all, with the SDK's standard retries."""

    def __init__(
        self,
        *,
        region: str,
        registry_id: str | None = None,
        client: Any = None,
        timeout: float = DEFAULT_TIMEOUT,
    ):
        self.region = region
        self.registry_id = registry_id
        self._client = client or _client("ecr", region, timeout)
        self._login: EcrLogin | None = None
        self._lock = threading.Lock()
        self._mutability: dict[str, TagMutability | None] = {}  # None: no such repository
        self._encryptions: dict[str, str] = {}  # repository name -> encryption, as described
        self._arns: dict[str, str] = {}  # repository name -> ARN, as ECR told it

    def login(self) -> EcrLogin:
        """The registry login, fetched once and renewed before it expires."""
        with self._lock:
            if self._login is None or time.monotonic() >= self._login.renew_at:
                self._login = self._fetch_login()
            return self._login

    def registry_login(self) -> Login:
        """The Basic login of the registry API as it is now (renewed before it expires): what
        a registry client asks for each request, and skopeo's auth file holds."""
        return self.login().login

    def _fetch_login(self) -> EcrLogin:
        # No registryIds: the API marks it deprecated, and the token works for every registry
        # the principal may use (FACTS.md). The host comes from registry_host().
        answer = _call(self._client.get_authorization_token, "get an ECR token")
        data = answer["authorizationData"][0]
        username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        host = data["proxyEndpoint"].split("://", 1)[-1].rstrip("/")
        return EcrLogin(host, Login(username, password), _renew_at(data.get("expiresAt")))

    def is_immutable(self, name: str, tag: str) -> bool:
        """Does ECR refuse to move `tag` in repository `name`? By the repository's tag
        mutability and its exclusion filters; False when the repository does not exist."""
        mutability = self._described(name)
        return mutability is not None and mutability.immutable(tag)

    def exists(self, name: str) -> bool:
        """Is there a repository `name` (as DescribeRepositories says, once per run)?"""
        return self._described(name) is not None

    def _described(self, name: str) -> TagMutability | None:
        """Repository `name`'s tag mutability; None when it does not exist. Asked once."""
        with self._lock:
            if name not in self._mutability:
                self._mutability[name] = self._describe(name)
            return self._mutability[name]

    def encryption(self, name: str) -> str | None:
        """How repository `name` is encrypted, as DescribeRepositories says (`AES256`, `KMS
        <key ARN>`), asked once per run; None when it does not exist."""
        with self._lock:
            if name not in self._encryptions:
                self._mutability[name] = self._describe(name)
            return self._encryptions.get(name)

    def _describe(self, name: str) -> TagMutability | None:
        """DescribeRepositories of `name` (called with the lock held): its tag mutability,
        None when it does not exist; its encryption is kept."""
        kwargs = self._ids(repositoryNames=[name])
        try:
            answer = _call(self._client.describe_repositories, f"describe {name}", **kwargs)
        except _NotFound:
            return None
        repository = answer["repositories"][0]
        self._encryptions[name] = encryption_text(repository)
        return tag_mutability(repository)

    # --- repository settings: create, read back, fix drift ------------------------------------

    def create(self, name: str, settings: RepositorySettings) -> bool:
        """Create the repository with the settings (then put its lifecycle policy, if managed);
        False when it already exists, which is left as it is (see `actual` and `apply`)."""
        kwargs = self._ids(repositoryName=name, **create_arguments(settings))
        try:
            answer = _call(
                self._client.create_repository, f"create ECR repository {name}", **kwargs
            )
        except _AlreadyExists:
            return False
        self._arns[name] = str(answer["repository"]["repositoryArn"])
        if settings.lifecycle_policy is not None:
            self._put_lifecycle_policy(name, settings.lifecycle_policy)
        return True

    def actual(self, name: str) -> ActualSettings | None:
        """What ECR reports for the repository; None when it does not exist."""
        try:
            answer = _call(
                self._client.describe_repositories,
                f"describe ECR repository {name}",
                **self._ids(repositoryNames=[name]),
            )
        except _NotFound:
            return None
        repository = answer["repositories"][0]
        arn = str(repository["repositoryArn"])
        self._arns[name] = arn
        scanning = repository.get("imageScanningConfiguration") or {}
        encryption = repository.get("encryptionConfiguration") or {}
        tags = _call(
            self._client.list_tags_for_resource, f"list the tags of {name}", resourceArn=arn
        )
        return ActualSettings(
            scan_on_push=bool(scanning.get("scanOnPush", False)),
            tag_mutability=tag_mutability(repository),
            encryption_type=str(encryption.get("encryptionType", "AES256")),
            kms_key=encryption.get("kmsKey"),
            lifecycle_policy=self._lifecycle_policy(name),
            tags={str(tag["Key"]): str(tag["Value"]) for tag in tags.get("tags", [])},
        )

    def apply(self, name: str, drifts: list[Drift], settings: RepositorySettings) -> list[str]:
        """Bring the fixable drifts back to `settings`; the settings changed, in drift order.
        Unfixable drift (encryption) is left alone: it needs a new repository."""
        wanted = {drift.setting for drift in drifts if drift.fixable}
        changed: list[str] = []
        if "scan_on_push" in wanted and settings.scan_on_push is not None:
            _call(
                self._client.put_image_scanning_configuration,
                f"set scan on push of {name}",
                **self._ids(
                    repositoryName=name,
                    imageScanningConfiguration={"scanOnPush": settings.scan_on_push},
                ),
            )
            changed.append("scan_on_push")
        if "tag_mutability" in wanted and settings.tag_mutability is not None:
            mutability = settings.tag_mutability
            filters = (
                {"imageTagMutabilityExclusionFilters": mutability.filters()}
                if mutability.exclusions
                else {}
            )
            _call(
                self._client.put_image_tag_mutability,
                f"set tag mutability of {name}",
                **self._ids(repositoryName=name, imageTagMutability=mutability.mode, **filters),
            )
            changed.append("tag_mutability")
        if "lifecycle_policy" in wanted and settings.lifecycle_policy is not None:
            self._put_lifecycle_policy(name, settings.lifecycle_policy)
            changed.append("lifecycle_policy")
        tags = [(key, value) for key, value in settings.tags if f"tags.{key}" in wanted]
        if tags:
            _call(
                self._client.tag_resource,
                f"tag ECR repository {name}",
                resourceArn=self._arn(name),
                tags=[{"Key": key, "Value": value} for key, value in tags],
            )
            changed.extend(f"tags.{key}" for key, _ in tags)
        order = [drift.setting for drift in drifts]
        return sorted(changed, key=order.index)

    def _put_lifecycle_policy(self, name: str, text: str) -> None:
        _call(
            self._client.put_lifecycle_policy,
            f"put the lifecycle policy of {name}",
            **self._ids(repositoryName=name, lifecyclePolicyText=text),
        )

    def _lifecycle_policy(self, name: str) -> str | None:
        def read(**kwargs: Any) -> Any:
            # _translate knows no LifecyclePolicyNotFoundException: "no policy" is an answer.
            try:
                return self._client.get_lifecycle_policy(**kwargs)
            except botocore.exceptions.ClientError as error:
                if error.response.get("Error", {}).get("Code") == _NO_LIFECYCLE_POLICY:
                    return None
                raise

        answer = _call(
            read, f"read the lifecycle policy of {name}", **self._ids(repositoryName=name)
        )
        return None if answer is None else str(answer["lifecyclePolicyText"])

    def _arn(self, name: str) -> str:
        if name not in self._arns:
            answer = _call(
                self._client.describe_repositories,
                f"describe ECR repository {name}",
                **self._ids(repositoryNames=[name]),
            )
            self._arns[name] = str(answer["repositories"][0]["repositoryArn"])
        return self._arns[name]

    def _ids(self, **kwargs: Any) -> dict[str, Any]:
        if self.registry_id:
            kwargs["registryId"] = self.registry_id
        return kwargs


def registry_host(*, region: str, registry_id: str | None, token_host: str) -> str:
    """The registry API host of an account's registry: `<id>.dkr.ecr.<region>.amazonaws.com`
    (`.amazonaws.com.cn` in the China regions); without an account, the caller's own, which
    the token's proxyEndpoint names."""
    if registry_id is None:
        return token_host
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{registry_id}.dkr.ecr.{region}.{suffix}"


def encryption_text(repository: Mapping[str, Any]) -> str:
    """A described repository's encryption as one text: `AES256`, or its type and key."""
    encryption = repository.get("encryptionConfiguration") or {}
    return str(
        Encryption(str(encryption.get("encryptionType", "AES256")), encryption.get("kmsKey"))
    )


def tag_mutability(repository: Mapping[str, Any]) -> TagMutability:
    """A DescribeRepositories entry's imageTagMutability and exclusion filters."""
    filters = repository.get("imageTagMutabilityExclusionFilters") or []
    return TagMutability(
        str(repository.get("imageTagMutability", "MUTABLE")),
        tuple(sorted(str(item["filter"]) for item in filters)),
    )


def secret_login(
    secret_id: str, *, region: str, client: Any = None, timeout: float = DEFAULT_TIMEOUT
) -> Login:
    """Docker Hub credentials from Secrets Manager: a JSON secret {"username", "password"}."""
    client = client or _client("secretsmanager", region, timeout)
    try:
        answer = _call(client.get_secret_value, f"read secret {secret_id}", SecretId=secret_id)
    except _NotFound as error:
        raise SetupError(str(error)) from None
    try:
        data = json.loads(answer.get("SecretString") or "")
        username, password = data["username"], data["password"]
    except (ValueError, KeyError, TypeError, RecursionError):
        username = password = None
    if not isinstance(username, str) or not isinstance(password, str) or not username:
        raise SetupError(
            f'secret {secret_id}: expected JSON with string fields "username" and "password"'
        )
    return Login(username, password, f"the credentials in secret {secret_id}")


class _AlreadyExists(MirrorError):
    pass


class _NotFound(MirrorError):
    pass


def _renew_at(expires_at: Any, *, now: float | None = None) -> float:
    """When (time.monotonic) to fetch a new token: 15 minutes before it expires, or halfway
    for a short-lived one. An expiry already past (moto's is in 2015) is not believed: the token
    is then kept for ECR's usual 12 hours, so a run never loops renewing it."""
    now = time.monotonic() if now is None else now
    left = _TOKEN_LIFETIME
    if isinstance(expires_at, datetime) and expires_at.timestamp() > time.time():
        left = expires_at.timestamp() - time.time()
    return now + max(left - _REFRESH_MARGIN, left / 2)


def _client(service: str, region: str | None, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """A boto3 client. Making one already reads the credentials (a credential_process runs
    then) and the endpoint settings: a broken AWS set-up is one line here too."""
    try:
        return _call(
            _new_client,
            f"set up the AWS {service} client",
            service_name=service,
            region_name=region,
            config=_config(timeout),
        )
    except ValueError as error:  # boto3's "Invalid endpoint: ..." and the like
        raise SetupError(
            f"cannot set up the AWS {service} client: {hide_passwords(str(error))} "
            "(check AWS_ENDPOINT_URL and the AWS_ENDPOINT_URL_* variables)"
        ) from None


def _new_client(**kwargs: Any) -> Any:
    """boto3.client, its default session reading service models with the loader that
    `repository_name_rule` used, unless a data_path setting asks for another: ECR's model is
    then parsed once a run, not twice (about 45 ms of CPU, issue 18)."""
    session = boto3._get_default_session()
    if session._session.get_config_variable("data_path") is None:
        session._session.register_component("data_loader", _data_loader())
    return session.client(**kwargs)


def _call(method: Any, what: str, **kwargs: Any) -> Any:
    """Call boto3 and translate its failures into one plain line."""
    try:
        return method(**kwargs)
    except botocore.exceptions.NoCredentialsError:
        raise AuthError(
            f"cannot {what}: no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID, "
            "or run with an instance or CodeBuild role)"
        ) from None
    except botocore.exceptions.NoRegionError:
        raise SetupError(f"cannot {what}: no AWS region (set ecr.region or AWS_REGION)") from None
    except botocore.exceptions.ClientError as error:
        raise _translate(error, what) from None
    except botocore.exceptions.ParamValidationError as error:
        detail = " ".join(str(error).split())  # botocore's text spans lines
        raise RegistryError(f"cannot {what}: {detail}") from None
    except _SETUP_ERRORS as error:
        raise SetupError(f"cannot {what}: {_setup_problem(error)}") from None
    except _CREDENTIAL_ERRORS as error:
        if _is_sso(error):
            raise AuthError(f"cannot {what}: {_sso_problem(error)}") from None
        # Their text may quote a credential_process's output: name only where it failed.
        provider = getattr(error, "kwargs", {}).get("provider", "the configured source")
        raise AuthError(
            f"cannot {what}: no AWS credentials from {provider} ({type(error).__name__}; its "
            "message is not shown, as it may quote a credential: try that source by hand)"
        ) from None
    except botocore.exceptions.BotoCoreError as error:
        raise RegistryError(
            f"cannot {what}: {hide_passwords(str(error))}", transient=True
        ) from None


# The machine's AWS setup is wrong: fix it, retrying cannot help (exit 2, like a bad config).
_SETUP_ERRORS = (
    botocore.exceptions.ProfileNotFound,
    botocore.exceptions.PartialCredentialsError,
    botocore.exceptions.ConfigParseError,
    botocore.exceptions.ConfigNotFound,
    botocore.exceptions.InvalidRegionError,
    botocore.exceptions.InvalidConfigError,
)
_CREDENTIAL_ERRORS = (
    botocore.exceptions.CredentialRetrievalError,
    botocore.exceptions.TokenRetrievalError,
    botocore.exceptions.SSOError,
    botocore.exceptions.RefreshWithMFAUnsupportedError,
)


def _is_sso(error: botocore.exceptions.BotoCoreError) -> bool:
    """An AWS SSO (IAM Identity Center) profile without a valid login: no cached token, or
    one that expired (botocore's SSOError family; TokenRetrievalError from its token
    provider, which is named "sso")."""
    if isinstance(error, botocore.exceptions.SSOError):
        return True
    provider = getattr(error, "kwargs", {}).get("provider", "")
    return isinstance(error, botocore.exceptions.TokenRetrievalError) and provider == "sso"


def _sso_problem(error: botocore.exceptions.BotoCoreError) -> str:
    """The profile and the user, since the fix is `aws sso login` by that user for that
    profile: a login made by another user (a person, not cron's) is not this user's."""
    profile = os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE") or "default"
    user = _user()
    return (
        f"the AWS profile {profile!r} signs in with AWS SSO (IAM Identity Center) and user "
        f"{user!r} has no valid SSO login for it ({type(error).__name__}): run `aws sso login "
        f"--profile {profile}` as {user} (an SSO login lasts hours; for cron, give this user "
        "credentials that need no login, such as an instance role)"
    )


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid {os.getuid()}"


def _setup_problem(error: botocore.exceptions.BotoCoreError) -> str:
    """botocore's message in our words; none of these carries a secret."""
    kwargs = getattr(error, "kwargs", {})
    if isinstance(error, botocore.exceptions.ProfileNotFound):
        return f"no AWS profile {kwargs.get('profile')!r} (check $AWS_PROFILE)"
    if isinstance(error, botocore.exceptions.PartialCredentialsError):
        return (
            f"partial AWS credentials in {kwargs.get('provider')}: {kwargs.get('cred_var')} missing"
        )
    if isinstance(error, botocore.exceptions.ConfigParseError):
        return f"cannot parse {kwargs.get('path')}"
    if isinstance(error, botocore.exceptions.InvalidRegionError):
        return f"{kwargs.get('region_name')!r} is not an AWS region name"
    return str(error)


def _translate(error: botocore.exceptions.ClientError, what: str) -> MirrorError:
    code = error.response.get("Error", {}).get("Code", "")
    message = error.response.get("Error", {}).get("Message", "") or code
    if code == "RepositoryAlreadyExistsException":
        return _AlreadyExists(message)
    if code in ("RepositoryNotFoundException", "ResourceNotFoundException"):
        return _NotFound(f"cannot {what}: {message}")
    if code in ("AccessDeniedException", "UnrecognizedClientException", "ExpiredTokenException"):
        return AuthError(f"cannot {what}: {code}: {message}")
    transient = code in ("ThrottlingException", "ServerException", "ServiceUnavailable")
    return RegistryError(f"cannot {what}: {code}: {message}", transient=transient)


# --- repository settings: scan on push, tag mutability, encryption, lifecycle policy, tags -------


# --- the AWS environment, and ECR's rule for repository names (read from botocore's data) ------


# A region name's shape: us-east-1, us-gov-west-1, eu-isoe-west-1, eusc-de-east-1. Regions
# botocore does not list yet keep this shape; the list only helps to say "did you mean".
_REGION = re.compile(r"[a-z]{2,5}(?:-[a-z]+){1,3}-[0-9]{1,2}\Z")
# botocore's order: AWS_DEFAULT_PROFILE wins over AWS_PROFILE (configprovider.py).
_PROFILE_VARIABLES = ("AWS_DEFAULT_PROFILE", "AWS_PROFILE")
_KEY_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
# (variable, botocore's default when it is not set, what the file is)
_FILES = (
    ("AWS_CONFIG_FILE", "~/.aws/config", "the AWS config file"),
    ("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials", "the AWS credentials file"),
)


@dataclass(frozen=True)
class NameRule:
    """ECR's rule for repository names: the pattern and lengths of botocore's service model."""

    pattern: str
    min_length: int
    max_length: int

    def __str__(self) -> str:
        return (
            f"ECR's rule: {self.min_length} to {self.max_length} characters matching {self.pattern}"
        )

    def matches(self, text: str) -> bool:
        """The pattern alone (a prefix has no length of its own to keep)."""
        return re.fullmatch(self.pattern, text, re.ASCII) is not None

    def problem(self, name: str) -> str | None:
        """Why `name` breaks the rule, stating the rule; None when it keeps it."""
        if not self.min_length <= len(name) <= self.max_length:
            count = f"{len(name)} character{'s' if len(name) != 1 else ''}"
            return f"{count}; {self}"
        return None if self.matches(name) else str(self)


@functools.cache
def repository_name_rule() -> NameRule:
    """The RepositoryName shape of the ECR service model that botocore ships (so `__` and `--`,
    which ECR takes, are taken; a newer botocore brings a newer rule). Read with botocore's data
    loader rather than a Session, which would first read the AWS profile and could fail on it."""
    model = botocore.model.ServiceModel(_data_loader().load_service_model("ecr", "service-2"))
    shape = model.shape_for("RepositoryName")
    return NameRule(
        str(shape.metadata["pattern"]), int(shape.metadata["min"]), int(shape.metadata["max"])
    )


@functools.cache
def known_regions() -> tuple[str, ...]:
    """Every region of every partition in botocore's endpoint data (us-east-1, cn-north-1...)."""
    endpoints = _data_loader().load_data("endpoints")
    return tuple(sorted(name for part in endpoints["partitions"] for name in part["regions"]))


@functools.cache
def _data_loader() -> botocore.loaders.Loader:
    return botocore.loaders.create_loader()


def region_problem(region: str) -> str | None:
    """Why `region` cannot be an AWS region name (None when it can). The shape decides, not
    botocore's list, so a region newer than the installed botocore is taken."""
    if _REGION.match(region):
        return None
    close = difflib.get_close_matches(region.strip().lower(), known_regions(), n=1, cutoff=0.75)
    hint = f"did you mean {close[0]!r}?" if close else "expected one like us-east-1"
    return f"{region!r} is not an AWS region name ({hint})"


def check_region(region: str, where: str) -> str:
    """`region`, or ConfigError naming `where` (the config key) when it is no region name."""
    problem = region_problem(region)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    return region


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Refuse, before anything is done, AWS settings that botocore would fail on later (or,
    worse, silently ignore): a malformed AWS_REGION/AWS_DEFAULT_REGION, only one of the key
    pair, an AWS config or credentials file that cannot be read or parsed, a profile
    (AWS_DEFAULT_PROFILE, AWS_PROFILE) that is in neither file. Raises SetupError with one line
    naming the variable; never shows a key's value. `environ` defaults to os.environ; `~` in
    file paths is expanded from the process's own HOME, as botocore does."""
    env = os.environ if environ is None else environ
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        problem = region_problem(env[variable]) if env.get(variable) else None
        if problem:
            raise SetupError(f"${variable}: {problem}")
    given = [variable for variable in _KEY_VARIABLES if env.get(variable)]
    if len(given) == 1:
        missing = next(variable for variable in _KEY_VARIABLES if variable not in given)
        raise SetupError(
            f"${given[0]} is set but ${missing} is not: set both (an access key), or neither"
        )
    profiles: set[str] = set()
    read: list[str] = []
    for variable, default, what in _FILES:
        path = env.get(variable, default)
        if path:
            where = f"${variable}" if variable in env else what
            found = _profiles_in(os.path.expanduser(os.path.expandvars(path)), where, what)
            read.append(path if found is not None else f"{path} (no such file)")
            profiles.update(found or ())
    _check_profile(env, profiles, read)


def _profiles_in(path: str, where: str, what: str) -> set[str] | None:
    """The profile names `path` defines; None when there is no such file (botocore then reads
    nothing, silently). Unreadable or unparsable: SetupError (botocore would skip a file it
    cannot open, and fail later on one it cannot parse)."""
    if not os.path.lexists(path):
        return None
    if not os.path.isfile(path):
        raise SetupError(f"{where}: {path} is not a file")
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise SetupError(f"{where}: cannot read {path}: {error.strerror}") from None
    try:
        if what == "the AWS config file":
            return set(botocore.configloader.load_config(path)["profiles"])
        return set(botocore.configloader.raw_config_parse(path))
    except botocore.exceptions.ConfigParseError as error:
        raise SetupError(f"{where}: cannot parse {path}{_parse_error_line(error)}") from None


def _parse_error_line(error: BaseException) -> str:
    """`(line N)` from the configparser error under botocore's; never the line's text, which
    may be a secret key."""
    cause = error.__context__
    line = getattr(cause, "lineno", None)
    if line is None and isinstance(cause, configparser.ParsingError) and cause.errors:
        line = cause.errors[0][0]
    if isinstance(cause, UnicodeDecodeError):
        return " (not text in the expected encoding)"
    return f" (line {line})" if line else ""


def _check_profile(env: Mapping[str, str], profiles: set[str], read: list[str]) -> None:
    variable = next((name for name in _PROFILE_VARIABLES if name in env), None)
    if variable is None:
        return
    name = env[variable]
    if not name:
        raise SetupError(f"${variable} is set but empty: name a profile, or unset it")
    if name in profiles:
        return
    close = difflib.get_close_matches(name, sorted(profiles), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise SetupError(
        f"${variable}: no profile {name!r} in {' or '.join(read) or 'any AWS file'}{hint}"
    )
