"""Connecting to the SQL store: one engine per store, and the driver's errors in one line."""

from __future__ import annotations

import contextlib
from pathlib import Path

import sqlalchemy as sa


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
    return sa.create_engine(url, pool_pre_ping=True)


@contextlib.contextmanager
def driver_errors(engine: sa.Engine):
    """Raise the driver's own errors (from the raw connection) as SQLAlchemy's wrapped ones."""
    dbapi = engine.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(None, None, exc, dbapi.Error, dialect=engine.dialect) from exc


def reason(exc: Exception) -> str:
    """The first line of a database error's own text."""
    text = str(getattr(exc, "orig", exc)) or type(exc).__name__
    return text.splitlines()[0]
