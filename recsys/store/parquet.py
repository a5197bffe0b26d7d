"""The Parquet mirror of the published lists, and its repair after a crash.

A run's lists are written to a staged file beside the final name while the SQL staging tables
load; once the SQL swap (the commit point) is done, the staged file is renamed into place and the
file it replaces becomes ``recommendations.previous.parquet``. A process killed between the two
leaves a complete staged file, which :meth:`ParquetMirror.reconcile` moves into place.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from recsys.settings import PARQUET_FILENAME
from recsys.store.tables import LIST_SCHEMA

PREVIOUS_FILENAME = "recommendations.previous.parquet"
SWAP_FILENAME = ".recommendations.swap.parquet.tmp"


class ParquetMirror:
    """The current and previous Parquet files of an output folder, and the staged ones."""

    def __init__(self, output: Path):
        self.output = Path(output)

    @property
    def path(self) -> Path:
        """The current lists as Parquet."""
        return self.output / PARQUET_FILENAME

    @property
    def previous_path(self) -> Path:
        """The lists of the run before, kept for rollback."""
        return self.output / PREVIOUS_FILENAME

    def staged(self, run_id: str) -> Path:
        """Where a run's lists are written before they are published."""
        return self.output / f".recommendations.{run_id}.parquet.tmp"

    def writer(self, run_id: str) -> pq.ParquetWriter:
        """A writer of the run's staged file (the run id is in the file's metadata)."""
        return pq.ParquetWriter(self.staged(run_id), LIST_SCHEMA.with_metadata({"run_id": run_id}), compression="zstd")

    def publish(self, run_id: str) -> None:
        """Move the run's staged file into place, the current one becoming the previous one."""
        replace_keeping_previous(self.staged(run_id), self.path, self.previous_path)

    def swap(self) -> None:
        """Exchange the current and previous files (a crash in between is mended by :meth:`reconcile`)."""
        swap = self.output / SWAP_FILENAME
        if self.path.exists():
            os.replace(self.path, swap)
        if self.previous_path.exists():
            os.replace(self.previous_path, self.path)
        if swap.exists():
            os.replace(swap, self.previous_path)
        fsync_dir(self.output)

    def reconcile(self, current: str | None) -> list[str]:
        """Make the current file hold the lists of run ``current`` (the SQL store's); returns what was done.

        If the process died before the Parquet rename, the staged file is moved into place; after
        an interrupted rollback the two files are swapped back; staged files of runs that will
        never be published are removed.
        """
        done = []
        swap = self.output / SWAP_FILENAME
        # A rollback's file swap cut short: put the file it had moved aside back in its place.
        if swap.exists():
            target = self.path if not self.path.exists() else self.previous_path
            if not target.exists():
                os.replace(swap, target)
                done.append(f"restored {target.name} from an interrupted rollback")
        if current is not None and parquet_run_id(self.path) != current:
            staged = self.staged(current)
            if staged.exists():
                replace_keeping_previous(staged, self.path, self.previous_path)
                done.append(f"moved the staged Parquet file of run {current} into place")
            elif parquet_run_id(self.previous_path) == current:
                self.swap()
                done.append(f"restored the Parquet file of run {current}")
        # Staged files of runs killed before their swap will never be published.
        for stale in self.output.glob(".recommendations.*.parquet.tmp"):
            if stale != swap and stale != self.staged(current or ""):
                stale.unlink(missing_ok=True)
                done.append(f"removed {stale.name}")
        return done


def parquet_run_id(path: Path) -> str | None:
    """The run id a published Parquet file was written by (its metadata, else its first row), or None."""
    try:
        handle = pq.ParquetFile(path)
        value = (handle.schema_arrow.metadata or {}).get(b"run_id")
        if value:
            return value.decode()
        if handle.metadata.num_rows == 0:
            return None
        return handle.read_row_group(0, columns=["run_id"]).column(0)[0].as_py()
    except (OSError, pa.ArrowException, KeyError, IndexError):
        return None


def replace_keeping_previous(new: Path, current: Path, previous: Path) -> None:
    """Move ``new`` onto ``current``; the old file becomes ``previous``. ``current`` never goes missing."""
    if current.exists():
        link = previous.with_name(previous.name + ".tmp")
        link.unlink(missing_ok=True)
        os.link(current, link)
        os.replace(link, previous)
    os.replace(new, current)
    fsync_dir(current.parent)


def fsync(path: Path) -> None:
    """Flush a file's content to disk."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (renames) to disk."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
