"""mirror/registry.py's requests from many threads, over a fake Http (no socket): once the first
request has taught how the registry wants to be asked, the rest go at once (issue 18: a
no-op's HEADs went one at a time, each thread sending its request under the first's lock)."""

from __future__ import annotations

import threading
from typing import Any, cast

from mirror.errors import RegistryError
from mirror.http import Http, Response
from mirror.registry import Registry

DIGEST = "sha256:" + "a" * 64
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
    """The first request (which learns how the registry wants to be asked) is held until every
    thread has come to the registry's first-request lock; each later one until all of them are
    in flight together (a barrier: requests sent one at a time break it)."""

    def __init__(self, first: CountingLock) -> None:
        self.first = first
        self.sent: list[str] = []
        self.barrier = threading.Barrier(THREADS - 1, timeout=30)  # a guard, not a measurement
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


def test_threads_that_wait_for_the_first_request_then_go_together() -> None:
    """Threads queued behind the first request are not sent one by one under its lock once
    it is answered."""
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
    assert len(http.sent) == THREADS


class PlainHttp:
    """A plain-HTTP registry: the HTTPS probe of /v2/ gets no TLS answer."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self._lock = threading.Lock()

    def request(self, method: str, url: str, headers: dict[str, str], **_: Any) -> Response:
        with self._lock:
            self.sent.append(f"{method} {url}")
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
        "GET https://registry.example/v2/",
        "HEAD http://registry.example/v2/library/ruby/manifests/3",
    ]


def test_a_verified_registry_learns_nothing_and_sends_no_probe() -> None:
    http = PlainHttp()
    Registry("registry.example", http=cast(Http, http)).learn_scheme()
    assert http.sent == []
