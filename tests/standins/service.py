"""What every stand-in shares: start() and stop(), and `with` to do both."""

from __future__ import annotations

from typing import Any, TypeVar

S = TypeVar("S", bound="Service")


class Service:
    def start(self: S) -> S:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: S) -> S:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
