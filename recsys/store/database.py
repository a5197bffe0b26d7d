"""Connecting to the SQL store: one engine per store, and the driver's errors in one line."""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path

import sqlalchemy as sa

from recsys.errors import RecsysError, StoreError, StoreUnavailable
from recsys.store import diagnosis


CONNECT_TIMEOUT = 10  # seconds a PostgreSQL connection may take (unless the URL sets connect_timeout)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # transactions are begun explicitly (see engine_for)
    cursor = dbapi_connection.cursor()
    # WAL lets readers keep reading the last committed lists while a run publishes; the busy
    # timeout makes a second writer wait instead of failing with "database is locked".
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=FULL")
    # A bulk load leaves a WAL the size of the staging table; shrink it once it is checkpointed.
    cursor.execute("PRAGMA journal_size_limit=67108864")
    cursor.close()


def engine_for(db_url: str) -> sa.Engine:
    """A SQLAlchemy engine; SQLite gets WAL mode and a busy timeout, and its folder is created."""
    url = sa.make_url(db_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        # Python's sqlite3 driver commits before DDL on its own, which would split the table
        # swap into separate commits; let SQLAlchemy emit BEGIN itself so the renames are one
        # transaction (SQLAlchemy's documented recipe for pysqlite).
        sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        return engine
    if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
        # A host that drops packets would hold a run for minutes of TCP retries before failing.
        return sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT})
    return sa.create_engine(url, pool_pre_ping=True)


@contextlib.contextmanager
def driver_errors(engine: sa.Engine):
    """Raise the driver's own errors (from the raw connection) as SQLAlchemy's wrapped ones."""
    dbapi = engine.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(None, None, exc, dbapi.Error, dialect=engine.dialect) from exc


# Errors of the operating system that pass by themselves (an interrupted call, a busy or stale
# network file); a full disk, a read-only folder or missing permissions do not.
_TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ETIMEDOUT, errno.ESTALE})


def is_transient(exc: BaseException) -> bool:
    """Whether trying again may help: a dropped or refused connection, a busy or locked
    database, a passing server condition; never bad input, a full disk or a programming error."""
    if isinstance(exc, RecsysError):
        return exc.transient
    if isinstance(exc, sa.exc.TimeoutError):  # no free connection in the pool
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        if not isinstance(exc, sa.exc.OperationalError):
            return False
        orig = exc.orig
        return diagnosis.advice(str(orig), getattr(orig, "sqlstate", None))[1]
    if isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, PermissionError)):
        return exc.errno in _TRANSIENT_ERRNOS
    return False


def about_the_database(exc: BaseException) -> bool:
    """Whether a SQLAlchemy error is about the database (unreachable, busy, full, damaged), not
    about the statement: a bad statement or a broken constraint is a bug and keeps its traceback."""
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)):
        return True
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return type(exc) is sa.exc.DatabaseError  # SQLite: "file is not a database"


@contextlib.contextmanager
def store_errors(url: str, output: Path, what: str):
    """Raise a database or disk error of the block as one line: ``StoreUnavailable`` when trying
    again may help, ``StoreError`` otherwise (the store's name with its password masked)."""
    try:
        yield
    except sa.exc.SQLAlchemyError as exc:
        if not about_the_database(exc):
            raise
        text = str(getattr(exc, "orig", None) or exc)
        error = StoreUnavailable if is_transient(exc) else StoreError
        raise error(diagnosis.describe(url, what, text)) from None
    except OSError as exc:
        error = StoreUnavailable if is_transient(exc) else StoreError
        raise error(f"{output}: {what} ({exc.strerror or exc})") from None
