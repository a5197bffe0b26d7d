"""One run at a time per output folder: an advisory file lock the kernel releases if the run dies."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from recsys.errors import StoreError

LOCK_NAME = ".recsys.lock"


@contextmanager
def run_lock(output: Path) -> Iterator[Path]:
    """Hold the output folder's run lock, or raise ``StoreError`` naming the run that holds it."""
    output = Path(output)
    path = output / LOCK_NAME
    try:
        output.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(f"{output}: the output folder is not writable ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise StoreError(
                f"{output}: another recsys run is already publishing here ({holder}); "
                "wait for it to finish, or stop it, then try again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, started {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC".encode(), 0)
        yield path
    finally:
        # Closing the descriptor releases the lock; a killed process releases it the same way.
        os.close(fd)
