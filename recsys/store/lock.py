"""One run at a time: per output folder, and per database.

The output folder's lock is an advisory file lock the kernel releases if the run dies. The
database's own lock is that same kind of file lock in the SQLite file's folder, and a session
advisory lock on PostgreSQL (held on a connection of its own; the server releases it when that
connection ends, a killed run included): two runs with different output folders, or on two
hosts, cannot publish into one database at the same time.
"""

from __future__ import annotations

import fcntl
import os
import socket
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from recsys.errors import StoreError, StoreUnavailable

LOCK_NAME = ".recsys.lock"
# The advisory lock's two keys: one for recsys, one for the schema the store's tables live in
# (each schema of a database is a store of its own).
ADVISORY_CLASS = zlib.crc32(b"recsys store") & 0x7FFFFFFF


def holder() -> str:
    """Who holds a lock, as the lock says it: this process, its host and the time it took it."""
    return f"pid {os.getpid()} on {socket.gethostname()}, started {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"


@contextmanager
def run_lock(output: Path) -> Iterator[Path]:
    """Hold the output folder's run lock, or raise ``StoreError`` naming the run that holds it."""
    with folder_lock(Path(output), "here") as path:
        yield path


def check_writable(folder: Path) -> None:
    """Raise ``StoreError`` unless a run could write in ``folder`` (or create it), changing nothing.

    Tried for real, with a file (or folder) made and removed at once: as root no mode refuses,
    yet some file systems (/proc, a read-only mount) do.
    """
    import tempfile

    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "not a folder" if existing == folder else f"{existing} is not a folder")
        if existing == folder:
            with tempfile.TemporaryFile(dir=folder):
                pass
        else:
            os.rmdir(tempfile.mkdtemp(dir=existing))
    except OSError as exc:
        raise StoreError(f"{folder}: the output folder is not writable ({exc.strerror or exc})") from None


@contextmanager
def folder_lock(folder: Path, where: str) -> Iterator[Path]:
    """Hold ``folder/.recsys.lock``; ``where`` says what a second run would publish to."""
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(f"{folder}: the output folder is not writable ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held_by = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise StoreError(
                f"{folder}: another recsys run is already publishing {where} ({held_by}); "
                "wait for it to finish, or stop it, then try again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder().encode(), 0)
        yield path
    finally:
        # Closing the descriptor releases the lock; a killed process releases it the same way.
        os.close(fd)


class AdvisoryLock:
    """A PostgreSQL session advisory lock for one store, held on a connection of its own."""

    def __init__(self, engine, where: str):
        """``engine``: the store's SQLAlchemy engine; ``where``: the store's name for messages."""
        self.engine = engine
        self.where = where
        self.connection = None
        self.keys: tuple[int, int] | None = None
        self.pid: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise ``StoreError`` naming the run that holds it."""
        import sqlalchemy as sa

        connection = self.engine.connect()
        try:
            schema = connection.execute(sa.text("SELECT current_schema()")).scalar() or "public"
            keys = (ADVISORY_CLASS, zlib.crc32(schema.encode()) & 0x7FFFFFFF)
            # What a second run reads in pg_stat_activity about who holds the lock.
            connection.execute(sa.text("SELECT set_config('application_name', :name, false)"), {"name": f"recsys {holder()}"[:63]})
            taken = connection.execute(sa.text("SELECT pg_try_advisory_lock(:a, :b)"), {"a": keys[0], "b": keys[1]}).scalar()
            connection.commit()
            if not taken:
                raise StoreError(
                    f"{self.where}: another recsys run is already publishing to this database ({self._holder(connection, keys)}); "
                    "wait for it to finish, or stop it, then try again"
                )
            self.pid = connection.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            connection.commit()
        except BaseException:
            connection.close()
            raise
        self.connection, self.keys = connection, keys

    def release(self) -> None:
        """Let the lock go (closing its connection would too)."""
        import sqlalchemy as sa

        connection, self.connection = self.connection, None
        if connection is None:
            return
        try:
            connection.execute(sa.text("SELECT pg_advisory_unlock(:a, :b)"), {"a": self.keys[0], "b": self.keys[1]})
            connection.commit()
        except sa.exc.SQLAlchemyError:
            connection.invalidate()  # the session, and with it the lock, is gone already
        finally:
            connection.close()

    def verify(self, conn) -> None:
        """Inside the caller's transaction (the swap): raise ``StoreUnavailable`` unless this run
        still holds the lock (its connection may have dropped, and another run taken it)."""
        import sqlalchemy as sa

        held = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = :a AND objid = :b "
                "AND objsubid = 2 AND pid = :pid AND granted AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            {"a": self.keys[0], "b": self.keys[1], "pid": self.pid},
        ).scalar()
        if not held:
            raise StoreUnavailable(
                f"{self.where}: this run lost the database's run lock (its connection dropped); nothing was replaced"
            )

    def renew(self) -> None:
        """Take the lock again if its connection dropped (before a retried publish)."""
        import sqlalchemy as sa

        try:
            self.connection.execute(sa.text("SELECT 1"))
            self.connection.commit()
            return
        except sa.exc.SQLAlchemyError:
            self.connection.invalidate()
            self.connection.close()
            self.connection = None
        self.acquire()

    @staticmethod
    def _holder(connection, keys) -> str:
        import sqlalchemy as sa

        row = connection.execute(
            sa.text(
                "SELECT a.application_name, host(a.client_addr) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.classid = :a AND l.objid = :b AND l.objsubid = 2 AND l.granted "
                "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            {"a": keys[0], "b": keys[1]},
        ).first()
        if row is None:
            return "another session"
        name, address = row
        return (name or "another session") + (f", connected from {address}" if address else "")
