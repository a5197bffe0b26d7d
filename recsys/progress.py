"""Progress reporting that library code can call without knowing who is watching.

The CLI installs a Rich progress display for the duration of a run; elsewhere (tests, a Prefect
worker) nothing is installed and reporting costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

Update = Callable[[int, int], None]
# A factory: given a step's description, returns (update, close).
Reporter = Callable[[str], tuple[Update, Callable[[], None]]]

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
def step(description: str) -> Iterator[Update | None]:
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
