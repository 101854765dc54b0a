"""HTTPS as mirror's own requests speak it: one TLS context per Http and verify mode, shared by
every connection (issue 18: urllib3 otherwise builds one and reads the CA bundle for each),
and still every certificate and host name checked."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mirror.errors import RegistryError
from mirror.http import Http
from tests.standins.misbehaving import Answer, Scripted
from tests.standins.tls import Authority


def _closing(_method: str, _path: str) -> Answer:
    """Every answer closes its connection: each request makes a new one (a new handshake)."""
    return Answer.json(200, {}, Connection="close")


@pytest.fixture
def trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Authority:
    """A private CA, trusted the way users trust one: SSL_CERT_FILE."""
    (tmp_path / "trusted").mkdir()
    authority = Authority(tmp_path / "trusted")
    monkeypatch.setenv("SSL_CERT_FILE", str(authority.ca_file))
    return authority


@pytest.fixture
def handshakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ssl.SSLContext]]:
    """The context of every client-side TLS handshake made while the test runs."""
    made: list[ssl.SSLContext] = []
    wrap = ssl.SSLContext.wrap_socket

    def recorded(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        if not kwargs.get("server_side"):
            made.append(self)
        return wrap(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "wrap_socket", recorded)
    yield made


def test_a_private_ca_in_ssl_cert_file_is_trusted_and_one_context_serves_every_connection(
    trusted: Authority, handshakes: list[ssl.SSLContext]
) -> None:
    http = Http()
    with Scripted(_closing, tls=trusted.server_context()) as registry:
        answers = [http.request("GET", f"https://{registry.host}/v2/") for _ in range(3)]
    assert [answer.status for answer in answers] == [200, 200, 200]
    assert len(handshakes) == 3  # three connections: the server closed each
    assert len({id(context) for context in handshakes}) == 1
    assert handshakes[0].verify_mode == ssl.CERT_REQUIRED
    assert handshakes[0].check_hostname


def test_each_http_has_its_own_context_and_reads_ssl_cert_file_anew(
    trusted: Authority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Scripted(_closing, tls=trusted.server_context()) as registry:
        assert Http().request("GET", f"https://{registry.host}/v2/").status == 200
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-bundle.pem"))
        with pytest.raises(RegistryError, match="its TLS certificate is not trusted"):
            Http().request("GET", f"https://{registry.host}/v2/")


def test_a_certificate_for_another_host_is_refused(trusted: Authority) -> None:
    elsewhere = trusted.server_context(("registry.example.com",))
    with Scripted(_closing, tls=elsewhere) as registry:
        http = Http()
        for _ in range(2):  # the first connection and the next: the shared context checks both
            with pytest.raises(RegistryError, match="mismatch"):
                http.request("GET", f"https://{registry.host}/v2/")


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_a_certificate_no_trusted_ca_signed_is_refused_unless_tls_verify_is_off(
    trusted: Authority, tmp_path: Path, handshakes: list[ssl.SSLContext]
) -> None:
    (tmp_path / "unknown").mkdir()
    unknown = Authority(tmp_path / "unknown", "a CA nobody here trusts")
    with Scripted(_closing, tls=unknown.server_context()) as registry:
        url = f"https://{registry.host}/v2/"
        with pytest.raises(RegistryError, match="unable to get local issuer certificate"):
            Http().request("GET", url)  # each attempt (a new connection) refused
        unverified_http = Http()  # the first has given the host up for this run
        assert unverified_http.request("GET", url, tls_verify=False).status == 200
        assert unverified_http.request("GET", url, tls_verify=False).status == 200
    verified, unverified = handshakes[:-2], handshakes[-2:]
    assert len(verified) >= 2 and len({id(context) for context in verified}) == 1
    assert unverified[0] is unverified[1]
    assert unverified[0].verify_mode == ssl.CERT_NONE and not unverified[0].check_hostname
