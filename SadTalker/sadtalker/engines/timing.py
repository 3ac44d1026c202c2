"""Seconds per stage of one generation, including stages that stream (each pulls frames from the one before, so
their busy times are measured as they run and made exclusive: a stage's time excludes the stages it pulls from)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator, TypeVar

T = TypeVar("T")


class StageTimes:
    """Accumulates seconds per stage name; `as_dict()` is what GenerationResult.timings reports."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}
        self._inner: dict[str, str] = {}  # streamed stage -> the stage it pulls from

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self._seconds[name] = self._seconds.get(name, 0.0) + seconds

    def stream(self, items: Iterator[T], name: str, pulls_from: str | None = None) -> Iterator[T]:
        """Yield from `items`, counting the time spent producing each item as `name` (minus `pulls_from`'s)."""
        if pulls_from is not None:
            self._inner[name] = pulls_from
        self._seconds.setdefault(name, 0.0)
        while True:
            start = time.perf_counter()
            try:
                item = next(items)
            except StopIteration:
                self.add(name, time.perf_counter() - start)
                return
            self.add(name, time.perf_counter() - start)
            yield item

    def as_dict(self) -> dict[str, float]:
        out = dict(self._seconds)
        for outer, inner in self._inner.items():   # nested busy times -> exclusive
            out[outer] -= self._seconds.get(inner, 0.0)
        return out
