"""The pool's ways of waiting: `Finishing` hands futures back as they finish, each once, and
waiting costs nothing per future still running (issue 18's 2,000-check no-op)."""

from __future__ import annotations

import threading
from concurrent.futures import Future

from mirror.workers import Finishing, Workers


def test_futures_come_back_in_the_order_they_finish_each_once_with_their_key() -> None:
    finishing: Finishing[int, str] = Finishing()
    futures: list[Future[int]] = [Future() for _ in range(4)]
    for number, future in enumerate(futures):
        finishing.add(future, f"task-{number}")
    futures[2].set_result(2)
    futures[0].set_result(0)
    assert [(key, future.result()) for future, key in finishing.next()] == [
        ("task-2", 2),
        ("task-0", 0),
    ]
    futures[3].set_exception(ValueError("bug in a check"))
    [(future, key)] = finishing.next()
    assert key == "task-3" and isinstance(future.exception(), ValueError)
    assert len(finishing) == 1 and list(finishing.waiting.values()) == ["task-1"]


def test_a_future_done_before_it_is_added_is_told_too() -> None:
    finishing: Finishing[str, int] = Finishing()
    done: Future[str] = Future()
    done.set_result("inline")  # as Workers(inline=True) hands it back
    finishing.add(done, 7)
    assert [(key, future.result()) for future, key in finishing.next()] == [(7, "inline")]
    assert not finishing


def test_a_stop_ends_the_wait_with_nothing_and_take_done_finds_what_finished() -> None:
    finishing: Finishing[None, int] = Finishing()
    running: Future[None] = Future()
    finishing.add(running, 1)
    stop = threading.Event()
    stop.set()
    assert finishing.next(stop) == []
    assert finishing.take_done() == []
    running.set_result(None)
    assert finishing.take_done() == [(running, 1)]
    assert finishing.next(stop) == []  # told by its callback, but already taken: not twice


def test_every_result_of_a_pool_comes_back_once() -> None:
    release = threading.Event()
    finishing: Finishing[int, int] = Finishing()
    with Workers(4, "test") as workers:
        for number in range(200):
            finishing.add(workers.submit(lambda n: release.wait() and n, number), number)
        release.set()
        seen: list[int] = []
        while finishing:
            seen += [future.result() for future, _ in finishing.next()]
    assert sorted(seen) == list(range(200))
