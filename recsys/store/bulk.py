"""Bulk loading of a staging table, per database: Arrow chunks in, Python objects only per slice.

SQLite through the driver's ``executemany`` fed column-wise, PostgreSQL with ``COPY ... FROM
STDIN`` fed with CSV bytes Arrow writes, any other database through SQLAlchemy's executemany.
Each staging table is loaded in one transaction.
"""

from __future__ import annotations

import contextlib
import io
import itertools
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa

from recsys.store.database import driver_errors
from recsys.store.tables import CONSTANT_COLUMNS, PRIMARY_KEYS, STAGING, primary_key_name

BULK_ROWS = 100_000  # rows converted to Python objects (SQLite) or CSV bytes (PostgreSQL) at a time
# How SQLAlchemy's DateTime stores a time in SQLite (text, naive UTC, always 6 fraction digits):
# the bulk path writes the same text, so readers see one format whatever wrote the rows.
SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S"  # + ".%f" in Python; Arrow's %S includes the microseconds
# Per-connection settings while loading a staging table into SQLite. The WAL stays on; NORMAL
# only skips the fsync at the load's own commit (WAL mode stays consistent on power loss, and the
# swap, on a FULL connection, fsyncs the WAL with the staged pages in it before it commits).
SQLITE_BULK_PRAGMAS = ("PRAGMA synchronous=NORMAL", "PRAGMA cache_size=-262144", "PRAGMA temp_store=MEMORY")
SQLITE_RESTORE_PRAGMAS = ("PRAGMA synchronous=FULL", "PRAGMA cache_size=-2000", "PRAGMA temp_store=DEFAULT")


@contextlib.contextmanager
def bulk_load(engine: sa.Engine, table: sa.Table):
    """One transaction on one connection for loading ``table``; yields that SQLAlchemy connection.

    Commits when the block ends (PostgreSQL first adds the table's primary key and analyses it),
    rolls back if it raises: a failed load leaves only a staging table, which the next publish
    drops. Errors of the driver come out as SQLAlchemy's (``OperationalError`` ...).
    """
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        try:
            with driver_errors(engine):
                if sqlite:
                    for pragma in SQLITE_BULK_PRAGMAS:
                        raw.execute(pragma)
                with conn.begin():
                    yield conn
                    if not table.primary_key.columns:
                        add_primary_key(engine, raw, table)
        finally:
            if sqlite:
                try:
                    for pragma in SQLITE_RESTORE_PRAGMAS:
                        raw.execute(pragma)
                except Exception:  # noqa: BLE001 - never hand a bulk-tuned connection back to the pool
                    conn.invalidate()


def add_primary_key(engine: sa.Engine, raw, table: sa.Table) -> None:
    """Add the table's primary key after its rows are in (a sort, not millions of index inserts)."""
    base = table.name.removesuffix(STAGING)
    columns = ", ".join(PRIMARY_KEYS[base])
    with raw.cursor() as cursor:
        cursor.execute(
            f"ALTER TABLE {table.name} ADD CONSTRAINT {primary_key_name(engine, base)} PRIMARY KEY ({columns})"
        )
        cursor.execute(f"ANALYZE {table.name}")


def insert(engine: sa.Engine, table: sa.Table, chunk: pa.Table, load) -> None:
    """Append an Arrow table to a staging table inside the bulk load ``load`` (see :func:`bulk_load`)."""
    columns = [c.name for c in table.columns]
    chunk = chunk.select(columns)
    raw = load.connection.driver_connection
    with driver_errors(engine):
        if engine.dialect.name == "postgresql":
            _copy_csv(raw, table.name, chunk)
        elif engine.dialect.name == "sqlite":
            _executemany_sqlite(raw, table.name, chunk)
        else:  # other databases: SQLAlchemy's executemany, a slice at a time
            for part in _slices(chunk):
                load.execute(table.insert(), part.to_pylist())


def _slices(chunk: pa.Table, size: int | None = None):
    size = size or BULK_ROWS
    for start in range(0, chunk.num_rows, size):
        yield chunk.slice(start, size)


def _executemany_sqlite(raw, name: str, chunk: pa.Table) -> None:
    """``executemany`` fed column-wise, ``BULK_ROWS`` rows of Python objects at a time.

    A column holding one value (run_id, generated_at) is passed as that one object repeated;
    timestamps go in as SQLAlchemy writes them for SQLite (``SQLITE_DATETIME``, UTC).
    """
    names = chunk.column_names
    sql = f"INSERT INTO {name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    cursor = raw.cursor()
    try:
        for part in _slices(chunk):
            columns = []
            for column_name, column in zip(names, part.columns):
                if pa.types.is_timestamp(column.type):
                    column = column.cast(pa.timestamp("us", tz="UTC"))
                single = _single_value(column) if column_name in CONSTANT_COLUMNS else None
                if single is not None:
                    if isinstance(single, datetime):
                        single = single.astimezone(timezone.utc).strftime(SQLITE_DATETIME + ".%f")
                    columns.append(itertools.repeat(single, len(column)))
                elif pa.types.is_timestamp(column.type):
                    # Arrow's %S carries the microseconds of a timestamp[us]: "05.123456".
                    columns.append(pc.strftime(column, format=SQLITE_DATETIME).to_pylist())
                else:
                    columns.append(column.to_pylist())
            cursor.executemany(sql, zip(*columns))
    finally:
        cursor.close()


def _single_value(column: pa.ChunkedArray):
    """The column's one value when every row holds it (no nulls), else None."""
    if len(column) == 0 or column.null_count:
        return None
    bounds = pc.min_max(column)
    if bounds["min"] != bounds["max"]:
        return None
    return bounds["min"].as_py()


def _copy_csv(raw, name: str, chunk: pa.Table) -> None:
    """PostgreSQL ``COPY ... FROM STDIN`` fed with the CSV bytes Arrow writes, a slice at a time."""
    options = pacsv.WriteOptions(include_header=False, batch_size=BULK_ROWS)
    sql = f"COPY {name} ({', '.join(chunk.column_names)}) FROM STDIN (FORMAT csv)"
    with raw.cursor() as cursor, cursor.copy(sql) as copy:
        for part in _slices(chunk):
            buffer = io.BytesIO()
            pacsv.write_csv(part, buffer, options)
            copy.write(buffer.getbuffer())
