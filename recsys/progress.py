"""Watching a run: progress that library code reports without knowing who is watching, and the
seconds each stage took.

The CLI installs a Rich progress display for the duration of a run; elsewhere (tests, a Prefect
worker) nothing is installed and reporting costs nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# progress(done, total) or progress(done, total, note): ``note`` says what the step is doing now
# ("ease, 4 of 6"); a progress of 0 done announces the total before the first unit of work.
Progress = Callable[..., None]
# A factory: given a step's description, returns (update, close).
Reporter = Callable[[str], tuple[Progress, Callable[[], None]]]

_reporter: ContextVar[Reporter | None] = ContextVar("recsys_progress", default=None)


@contextmanager
def reporting(reporter: Reporter) -> Iterator[None]:
    """Send progress of everything run inside the block to ``reporter``."""
    token = _reporter.set(reporter)
    try:
        yield
    finally:
        _reporter.reset(token)


@contextmanager
def step(description: str) -> Iterator[Progress | None]:
    """A progress callback ``update(done, total)`` for one step, or ``None`` when nobody watches."""
    reporter = _reporter.get()
    if reporter is None:
        yield None
        return
    update, close = reporter(description)
    try:
        yield update
    finally:
        close()


class Stopwatch:
    """Wall seconds per named stage, each stage timed from the end of the one before."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._clock = time.perf_counter()

    def lap(self, name: str) -> float:
        """Record the time since the last lap under ``name``; returns it."""
        now = time.perf_counter()
        elapsed = now - self._clock
        self.seconds[name] = round(self.seconds.get(name, 0.0) + elapsed, 2)
        self._clock = now
        return elapsed


def add_seconds(total: dict[str, float], part: dict[str, float]) -> None:
    """Add ``part``'s seconds per stage to ``total``."""
    for name, value in part.items():
        total[name] = total.get(name, 0.0) + value


def timed(seconds: dict[str, float], name: str, since: float) -> None:
    """Add the time since ``since`` (a ``time.perf_counter()`` reading) to ``seconds[name]``."""
    seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - since
