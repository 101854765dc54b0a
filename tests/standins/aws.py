"""moto's server on 127.0.0.1, the stand-in for the AWS APIs (ECR, Secrets Manager, STS).

Measured against moto 5.2 (boto3 1.43, region us-east-1, keys ``testing``):

- ``ecr.get_authorization_token()`` gives ``authorizationToken`` =
  base64(``AWS:123456789012-auth-token``), so the password is :data:`ECR_PASSWORD`;
  ``proxyEndpoint`` = ``https://123456789012.dkr.ecr.us-east-1.amazonaws.com`` (the region
  follows the client's) and ``expiresAt`` = 2015-01-01 (in the past). With
  ``registryIds=["111122223333"]`` the token and endpoint carry that account instead.
- Secrets Manager (``create_secret`` / ``get_secret_value``) and STS (``get_caller_identity``:
  account 123456789012) work over the same server.
- botocore's per-service endpoint variables use the service *id* with ``_`` for spaces:
  ``AWS_ENDPOINT_URL_ECR``, ``AWS_ENDPOINT_URL_STS`` and ``AWS_ENDPOINT_URL_SECRETS_MANAGER``.
  ``AWS_ENDPOINT_URL_SECRETSMANAGER`` (no underscore) is ignored: the client then goes to the
  real ``secretsmanager.us-east-1.amazonaws.com``. ``AWS_ENDPOINT_URL`` covers every service.
- moto keeps its state in this process: :meth:`Moto.reset` forgets all of it.
"""

from __future__ import annotations

import base64
import logging

import urllib3
from moto.server import ThreadedMotoServer

from tests.standins.service import Service

ACCOUNT = "123456789012"
ECR_USER = "AWS"
ECR_PASSWORD = f"{ACCOUNT}-auth-token"
ECR_AUTHORIZATION_TOKEN = base64.b64encode(f"{ECR_USER}:{ECR_PASSWORD}".encode()).decode()
REGION = "us-east-1"


class Moto(Service):
    """``ThreadedMotoServer`` on a free loopback port (``port=0`` works in moto 5)."""

    def __init__(self) -> None:
        self._server: ThreadedMotoServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Moto:
        if self._server is None:
            logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per API call
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            self._server = server
            self.port = server.get_host_and_port()[1]
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()
            wsgi = getattr(server, "_server", None)  # moto's stop() leaves the socket open
            if wsgi is not None:
                wsgi.server_close()

    def reset(self) -> None:
        """Forget every resource (repositories, secrets, ...) moto holds."""
        resp = urllib3.request("POST", f"{self.url}/moto-api/reset", timeout=10, retries=False)
        if resp.status != 200:
            raise RuntimeError(f"moto reset: HTTP {resp.status}")
