"""The one module that imports boto3: the ECR token, repositories, and Secrets Manager.

boto3 finds credentials by itself (environment, profile, CodeBuild's container endpoint) and
obeys AWS_ENDPOINT_URL_ECR, which is how tests point it at moto's server.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from mirror.errors import AuthError, MirrorError, RegistryError, SetupError
from mirror.registry import Login

_RETRIES = botocore.config.Config(retries={"mode": "standard", "max_attempts": 6})
_TOKEN_LIFETIME = 12 * 3600.0  # what ECR grants; used when expiresAt is not believable
_REFRESH_MARGIN = 15 * 60.0  # renew this long before the token expires


@dataclass(frozen=True)
class EcrLogin:
    """The registry host ECR named and the Basic login its token stands for."""

    host: str
    login: Login
    renew_at: float  # time.monotonic() after which the token should be fetched again


class Ecr:
    """ECR for one region and registry (account)."""

    def __init__(self, *, region: str, registry_id: str | None = None, client: Any = None):
        self.region = region
        self.registry_id = registry_id
        self._client = client or boto3.client("ecr", region_name=region, config=_RETRIES)
        self._login: EcrLogin | None = None
        self._lock = threading.Lock()
        self._created: set[str] = set()
        self._mutability: dict[str, str] = {}

    def login(self) -> EcrLogin:
        """The registry login, fetched once and renewed before it expires."""
        with self._lock:
            if self._login is None or time.monotonic() >= self._login.renew_at:
                self._login = self._fetch_login()
            return self._login

    def _fetch_login(self) -> EcrLogin:
        kwargs = {"registryIds": [self.registry_id]} if self.registry_id else {}
        answer = _call(self._client.get_authorization_token, "get an ECR token", **kwargs)
        data = answer["authorizationData"][0]
        username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        host = data["proxyEndpoint"].split("://", 1)[-1].rstrip("/")
        return EcrLogin(host, Login(username, password), _renew_at(data.get("expiresAt")))

    def ensure_repository(self, name: str) -> bool:
        """Create the repository unless it exists; True when this call created it."""
        if name in self._created:
            return False
        kwargs: dict[str, Any] = {"repositoryName": name}
        if self.registry_id:
            kwargs["registryId"] = self.registry_id
        try:
            _call(self._client.create_repository, f"create ECR repository {name}", **kwargs)
            created = True
        except _AlreadyExists:
            created = False
        self._created.add(name)
        return created

    def is_immutable(self, name: str) -> bool:
        """True when the repository exists and refuses to move tags (IMMUTABLE...)."""
        with self._lock:
            if name not in self._mutability:
                self._mutability[name] = self._fetch_mutability(name)
            return self._mutability[name].startswith("IMMUTABLE")

    def _fetch_mutability(self, name: str) -> str:
        kwargs: dict[str, Any] = {"repositoryNames": [name]}
        if self.registry_id:
            kwargs["registryId"] = self.registry_id
        try:
            answer = _call(self._client.describe_repositories, f"describe {name}", **kwargs)
        except _NotFound:
            return ""
        return str(answer["repositories"][0].get("imageTagMutability", "MUTABLE"))


def secret_login(secret_id: str, *, region: str, client: Any = None) -> Login:
    """Docker Hub credentials from Secrets Manager: a JSON secret {"username", "password"}."""
    client = client or boto3.client("secretsmanager", region_name=region, config=_RETRIES)
    try:
        answer = _call(client.get_secret_value, f"read secret {secret_id}", SecretId=secret_id)
    except _NotFound as error:
        raise SetupError(str(error)) from None
    try:
        data = json.loads(answer.get("SecretString") or "")
        username, password = data["username"], data["password"]
    except (ValueError, KeyError, TypeError):
        username = password = None
    if not isinstance(username, str) or not isinstance(password, str) or not username:
        raise SetupError(
            f'secret {secret_id}: expected JSON with string fields "username" and "password"'
        )
    return Login(username, password)


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
    except botocore.exceptions.BotoCoreError as error:
        raise RegistryError(f"cannot {what}: {error}", transient=True) from None


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
