"""A small pool of daemon threads, ways to wait that keep signal handlers running, and how long
to wait before trying again.

Why not ThreadPoolExecutor: its threads are joined when the interpreter exits, so one request
stuck in a connect would hold a stopping run open. These threads are daemons: a run that was
told to stop waits for its work a few seconds at most, then leaves.

A pool made `inline` starts no thread: each call is made at once, in the caller's thread (as
all-repos' thread_mapper does for one job). `--jobs 1` copies so: one copy after another, in
the main thread, which a debugger steps through.
"""

from __future__ import annotations

import contextlib
import queue
import random
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Generic, TypeVar

T = TypeVar("T")
K = TypeVar("K")
SLICE = 0.1  # seconds the main thread waits at a time: signal handlers run between slices
MAX_WAIT = 30.0  # seconds: the longest wait before something is tried again


class Workers:
    """Up to `size` daemon threads, started as work arrives; none when `inline`."""

    def __init__(self, size: int, name: str, *, inline: bool = False):
        self.size = max(1, size)
        self.name = name
        self.inline = inline
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, function: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        if self.inline:  # made now, here: the future comes back done
            settle(future, lambda: function(*args))
            return future
        self._queue.put((future, lambda: function(*args)))
        with self._lock:
            if self._idle:
                self._idle -= 1  # an idle thread takes it
            elif len(self._threads) < self.size:
                thread = threading.Thread(
                    target=self._work, name=f"{self.name}-{len(self._threads) + 1}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        return future

    def close(self) -> None:
        """No more work: idle threads end (running ones end after their task)."""
        for _ in self._threads:
            self._queue.put(None)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, call = item
            if future.set_running_or_notify_cancel():
                settle(future, call)
            with self._lock:
                self._idle += 1

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def settle(future: Future[T], call: Callable[[], T]) -> None:
    """Make `call()` and put its result, or what it raised, in `future`."""
    try:
        future.set_result(call())
    except BaseException as error:  # handed to whoever asks the future
        future.set_exception(error)


class Finishing(Generic[T, K]):
    """Futures, each with what it is for (`waiting`), handed back in the order they finish.

    Each future puts itself in a queue as it ends (add_done_callback), so waiting for the next
    costs the same however many are still running. `wait_any` over every pending future, once
    per finished one, was quadratic: at 2,000 checks it held the main thread for 3.2 s of its
    4.9 s of CPU (issue 18, py-spy --gil).
    """

    def __init__(self) -> None:
        self.waiting: dict[Future[T], K] = {}
        self._finished: queue.SimpleQueue[Future[T]] = queue.SimpleQueue()

    def add(self, future: Future[T], key: K) -> None:
        self.waiting[future] = key
        future.add_done_callback(self._finished.put)  # at once if it is done already

    def __len__(self) -> int:
        return len(self.waiting)

    def next(self, stop: threading.Event | None = None) -> list[tuple[Future[T], K]]:
        """Wait, in short slices, until one future finishes (or `stop` is set: then []);
        return every one finished by then, in the order they finished, each once."""
        while True:
            try:
                first = self._finished.get(timeout=SLICE)
                break
            except queue.Empty:
                if stop is not None and stop.is_set():
                    return []
        finished = [first]
        with contextlib.suppress(queue.Empty):
            while True:
                finished.append(self._finished.get_nowait())
        return self._take(finished)

    def take_done(self) -> list[tuple[Future[T], K]]:
        """Every future done now (whether `next` told it or not), in the order added."""
        return self._take([future for future in self.waiting if future.done()])

    def _take(self, futures: Iterable[Future[T]]) -> list[tuple[Future[T], K]]:
        return [(future, self.waiting.pop(future)) for future in futures if future in self.waiting]


def wait_any(
    futures: Iterable[Future[Any]], stop: threading.Event | None = None
) -> set[Future[Any]]:
    """Wait until one of `futures` is done (or `stop` is set); return those done."""
    pending = set(futures)
    while pending:
        done, _ = wait(pending, timeout=SLICE, return_when=FIRST_COMPLETED)
        if done or (stop is not None and stop.is_set()):
            return set(done)
    return set()


def wait_all(futures: Iterable[Future[Any]], *, until: Callable[[], bool] = lambda: False) -> bool:
    """Wait in short slices until every future is done (True) or `until()` says stop (False)."""
    pending = set(futures)
    while pending:
        _, pending = wait(pending, timeout=SLICE)
        if pending and until():
            return False
    return True


def backoff(base: float, attempt: int) -> float:
    """Seconds to wait before attempt `attempt` + 1: `base` doubled per attempt, at most
    MAX_WAIT, with ±50 % jitter (so that many clients do not come back at once)."""
    delay = min(MAX_WAIT, base * 2.0 ** (attempt - 1))
    return delay * random.uniform(0.5, 1.5)  # noqa: S311 - jitter, not cryptography
