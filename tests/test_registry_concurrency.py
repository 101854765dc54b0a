"""mirror/registry.py's requests from many threads, over a fake Http (no socket): one `GET /v2/`
teaches how the registry wants to be asked, then every request goes at once (issue 18: a
no-op's HEADs went one at a time, each thread sending its request under the first's lock; and
the others waited for the first request's 401, token and retry, three round trips)."""

from __future__ import annotations

import threading
from typing import Any, cast

import pytest

from mirror.errors import RateLimited, RegistryError
from mirror.http import Http, Response
from mirror.registry import Registry

DIGEST = "sha256:" + "a" * 64
TOKEN_QUERY = "service=registry.example&scope=repository%3Alibrary%2Fruby%3Apull"
THREADS = 6


class CountingLock:
    """A lock that counts the threads that have come to it (held or waiting)."""

    def __init__(self) -> None:
        self.arrived = 0
        self.everyone = threading.Condition()
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self.everyone:
            self.arrived += 1
            self.everyone.notify_all()
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class HeldHttp:
    """The first request (`GET /v2/`, which learns how the registry wants to be asked) is held
    until every thread has come to the registry's first-request lock; each later one until all
    of them are in flight together (a barrier: requests sent one at a time break it)."""

    def __init__(self, first: CountingLock) -> None:
        self.first = first
        self.sent: list[str] = []
        self.barrier = threading.Barrier(THREADS, timeout=30)  # a guard, not a measurement
        self._lock = threading.Lock()

    def request(self, method: str, url: str, headers: dict[str, str], **_: Any) -> Response:
        with self._lock:
            self.sent.append(f"{method} {url}")
            first = len(self.sent) == 1
        if first:
            with self.first.everyone:
                self.first.everyone.wait_for(lambda: self.first.arrived == THREADS, timeout=30)
        else:
            self.barrier.wait()
        return Response(200, {"Docker-Content-Digest": DIGEST}, b"", url=url)


def test_threads_that_wait_for_the_introduction_then_go_together() -> None:
    """Threads queued behind the registry's `GET /v2/` are not sent one by one under its lock
    once it is answered, and none of them sends the introduction again."""
    first = CountingLock()
    http = HeldHttp(first)
    registry = Registry("registry.example", http=cast(Http, http))
    registry._first = cast(Any, first)  # to see who waits behind the first
    errors: list[BaseException] = []

    def head(number: int) -> None:
        try:
            registry.head_manifest("library/ruby", f"t{number}")
        except BaseException as error:  # a broken barrier: sent one at a time
            errors.append(error)

    threads = [threading.Thread(target=head, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert http.sent[0] == "GET https://registry.example/v2/"
    assert len(http.sent) == THREADS + 1


class RecordingHttp:
    """Records every request sent (`sent`: "METHOD URL"); `answer` says what comes back."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self._lock = threading.Lock()

    def request(self, method: str, url: str, headers: dict[str, str], **_: Any) -> Response:
        with self._lock:
            self.sent.append(f"{method} {url}")
        return self.answer(url, headers)

    def answer(self, url: str, headers: dict[str, str]) -> Response:
        raise NotImplementedError


class PlainHttp(RecordingHttp):
    """A plain-HTTP registry: the HTTPS probe of /v2/ gets no TLS answer."""

    def answer(self, url: str, headers: dict[str, str]) -> Response:
        if url.startswith("https:"):
            raise RegistryError("registry.example: TLS handshake failed")
        return Response(200, {"Docker-Content-Digest": DIGEST}, b"", url=url)


def test_a_scheme_learnt_early_is_shared_by_the_client_made_later() -> None:
    """The ECR endpoint's scheme is learnt while ECR's token comes (mirror.connect): the
    client made with the token speaks it without a probe of its own."""
    http = PlainHttp()
    early = Registry("registry.example", http=cast(Http, http), tls_verify=False)
    early.learn_scheme()
    later = Registry("registry.example", http=cast(Http, http), tls_verify=False)
    later.share_scheme(early)
    assert later.head_manifest("library/ruby", "3").digest == DIGEST
    assert http.sent == [
        "GET https://registry.example/v2/",  # the probe: no TLS there
        "GET http://registry.example/v2/",  # the introduction, in the scheme learnt
        "HEAD http://registry.example/v2/library/ruby/manifests/3",
    ]


class ChallengingHttp(RecordingHttp):
    """A registry with Bearer tokens, spoken to over HTTPS (verified or not)."""

    def answer(self, url: str, headers: dict[str, str]) -> Response:
        if url.startswith("https://auth.example/"):
            return Response(200, {}, b'{"token": "a-token-long-enough-to-hide"}', url=url)
        if "Authorization" not in headers:
            challenge = 'Bearer realm="https://auth.example/token",service="registry.example"'
            return Response(401, {"WWW-Authenticate": challenge}, b"", url=url)
        return Response(200, {"Docker-Content-Digest": DIGEST}, b"", url=url)


def test_the_challenge_is_learnt_from_get_v2_and_each_request_goes_once_with_a_token() -> None:
    http = ChallengingHttp()
    registry = Registry("registry.example", http=cast(Http, http))
    assert registry.head_manifest("library/ruby", "3").digest == DIGEST
    assert registry.head_manifest("library/ruby", "3.3").digest == DIGEST
    assert http.sent == [
        "GET https://registry.example/v2/",
        f"GET https://auth.example/token?{TOKEN_QUERY}",
        "HEAD https://registry.example/v2/library/ruby/manifests/3",
        "HEAD https://registry.example/v2/library/ruby/manifests/3.3",
    ]


def test_with_tls_verify_false_the_https_probe_is_the_introduction() -> None:
    http = ChallengingHttp()
    registry = Registry("registry.example", http=cast(Http, http), tls_verify=False)
    assert registry.head_manifest("library/ruby", "3").digest == DIGEST
    assert http.sent == [
        "GET https://registry.example/v2/",  # the probe, answered 401 with the challenge
        f"GET https://auth.example/token?{TOKEN_QUERY}",
        "HEAD https://registry.example/v2/library/ruby/manifests/3",
    ]


def test_a_failed_introduction_fails_the_first_request_with_its_own_words() -> None:
    http = PlainHttp()
    registry = Registry("registry.example", http=cast(Http, http))  # verified: HTTPS only
    with pytest.raises(RegistryError, match=r"\Aregistry.example: TLS handshake failed\Z"):
        registry.head_manifest("library/ruby", "3")
    assert http.sent == ["GET https://registry.example/v2/"]


def test_a_verified_registry_learns_nothing_and_sends_no_probe() -> None:
    http = PlainHttp()
    Registry("registry.example", http=cast(Http, http)).learn_scheme()
    assert http.sent == []


class RefusingHttp(ChallengingHttp):
    """Docker Hub on a repository that does not exist: every token lacks its scope (401)."""

    def answer(self, url: str, headers: dict[str, str]) -> Response:
        answer = super().answer(url, headers)
        if answer.status == 200 and "/manifests/" in url:
            challenge = 'Bearer realm="https://auth.example/token",service="registry.example"'
            return Response(401, {"WWW-Authenticate": challenge}, b"", url=url)
        return answer


def test_a_token_fetched_for_the_request_and_refused_is_not_fetched_again() -> None:
    http = RefusingHttp()
    registry = Registry("registry.example", http=cast(Http, http))
    with pytest.raises(RegistryError, match="access denied"):
        registry.read_manifest("library/nope", "1")
    assert [sent.split("?")[0] for sent in http.sent] == [
        "GET https://registry.example/v2/",
        "GET https://auth.example/token",
        "GET https://registry.example/v2/library/nope/manifests/1",
    ]


class AbusedHttp(ChallengingHttp):
    """Docker Hub's abuse limit on the first request, whatever it is."""

    def answer(self, url: str, headers: dict[str, str]) -> Response:
        if len(self.sent) == 1:
            return Response(429, {"Retry-After": "60", "Content-Type": "text/plain"}, b"", url=url)
        return super().answer(url, headers)


def test_a_429_to_the_introduction_fails_the_request_that_came_first() -> None:
    http = AbusedHttp()
    registry = Registry("registry.example", http=cast(Http, http))
    with pytest.raises(RateLimited, match="not the pull limit"):
        registry.head_manifest("library/ruby", "3")
    assert registry.head_manifest("library/ruby", "3").digest == DIGEST  # the next goes on
