"""Publish the lists to Parquet and SQL, and record runs.

The SQL side holds three tables: ``recommendations`` (the current lists), ``popular_items`` (the
current cold-start list) and ``runs`` (one row per run). A run's lists are first written into
staging tables, then swapped in by renaming tables inside one short transaction: a reader sees the
previous complete set or the new complete set, never a mix. The tables being replaced are kept as
``*_previous`` so ``rollback`` can swap them back. The Parquet file is written beside its final
name and renamed into place right after the swap.

Staging tables are bulk loaded through the raw DBAPI connection, one Arrow chunk at a time (Python
objects exist only for the slice in flight): ``executemany`` for SQLite, ``COPY ... FROM STDIN`` fed
with CSV bytes written by Arrow for PostgreSQL. Each staging table is loaded in one transaction.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import sqlalchemy as sa

from recsys.errors import StoreError

RECOMMENDATIONS = "recommendations"
POPULAR = "popular_items"
RUNS = "runs"
STAGING = "_staging"
PREVIOUS = "_previous"
CONSTANT_COLUMNS = ("run_id", "generated_at")  # one value per publish: passed to SQLite as one object
BULK_ROWS = 100_000  # rows converted to Python objects (SQLite) or CSV bytes (PostgreSQL) at a time
# How SQLAlchemy's DateTime stores a time in SQLite (text, naive UTC, always 6 fraction digits):
# the bulk path writes the same text, so readers see one format whatever wrote the rows.
SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S"  # + ".%f" in Python; Arrow's %S includes the microseconds
# Per-connection settings while loading a staging table into SQLite. The WAL stays on; NORMAL
# only skips the fsync at the load's own commit (WAL mode stays consistent on power loss, and the
# swap, on a FULL connection, fsyncs the WAL with the staged pages in it before it commits).
SQLITE_BULK_PRAGMAS = ("PRAGMA synchronous=NORMAL", "PRAGMA cache_size=-262144", "PRAGMA temp_store=MEMORY")
SQLITE_RESTORE_PRAGMAS = ("PRAGMA synchronous=FULL", "PRAGMA cache_size=-2000", "PRAGMA temp_store=DEFAULT")

LIST_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("rank", pa.int16()),
        ("item", pa.string()),
        ("score", pa.float64()),
        ("run_id", pa.string()),
        ("generated_at", pa.timestamp("us", tz="UTC")),
    ]
)


def recommendations_table(
    metadata: sa.MetaData, name: str = RECOMMENDATIONS, pk_name: str | None = None, primary_key: bool = True
) -> sa.Table:
    """The per-customer lists: one row per (customer, rank).

    ``pk_name`` names the primary key (PostgreSQL keeps a constraint's name when its table is
    renamed, so each creation needs its own); ``primary_key=False`` leaves it to be added after a
    bulk load (``add_primary_key``).
    """
    return sa.Table(
        name,
        metadata,
        sa.Column("user_id", sa.String, nullable=False),
        sa.Column("rank", sa.SmallInteger, nullable=False),
        sa.Column("item", sa.String, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("run_id", sa.String, nullable=False),
        sa.Column("generated_at", sa.DateTime(timezone=True), nullable=False),
        *([sa.PrimaryKeyConstraint("user_id", "rank", name=pk_name)] if primary_key else []),
    )


def popular_table(
    metadata: sa.MetaData, name: str = POPULAR, pk_name: str | None = None, primary_key: bool = True
) -> sa.Table:
    """The cold-start list shown to customers with no history."""
    return sa.Table(
        name,
        metadata,
        sa.Column("rank", sa.SmallInteger, nullable=False),
        sa.Column("item", sa.String, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("run_id", sa.String, nullable=False),
        *([sa.PrimaryKeyConstraint("rank", name=pk_name)] if primary_key else []),
    )


PRIMARY_KEYS = {RECOMMENDATIONS: ("user_id", "rank"), POPULAR: ("rank",)}


def runs_table(metadata: sa.MetaData) -> sa.Table:
    """One row per run: what it read, how it ended, its metrics (JSON)."""
    return sa.Table(
        RUNS,
        metadata,
        sa.Column("run_id", sa.String, primary_key=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("is_current", sa.Boolean, nullable=False, default=False),
        sa.Column("input_path", sa.String),
        sa.Column("input_sha256", sa.String),
        sa.Column("rows", sa.Integer),
        sa.Column("users", sa.Integer),
        sa.Column("items", sa.Integer),
        sa.Column("metrics", sa.Text),
        sa.Column("message", sa.Text),
    )


@dataclass(frozen=True)
class Published:
    """What a publish wrote."""

    rows: int
    users: int
    parquet: Path
    db_url: str
    parquet_pending: str | None = None


def utc_now() -> datetime:
    """The current time in UTC (timezone-aware)."""
    return datetime.now(timezone.utc)


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, unique run id: UTC time to the microsecond."""
    return (now or utc_now()).strftime("%Y%m%dT%H%M%S%fZ")


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


class Store:
    """The published store: SQL tables through SQLAlchemy plus the Parquet file in ``output``."""

    def __init__(self, db_url: str, output: Path):
        self.db_url = db_url
        self.output = Path(output)
        try:
            self.engine = engine_for(db_url)
        except OSError as exc:
            raise StoreError(f"{self.output}: cannot create the store's folder ({exc.strerror or exc})") from None
        except sa.exc.ArgumentError as exc:
            raise StoreError(f"--db-url {db_url!r} is not a database URL ({exc})") from None
        self.metadata = sa.MetaData()
        self.runs = runs_table(self.metadata)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.is_postgres = self.engine.dialect.name == "postgresql"

    @property
    def parquet_path(self) -> Path:
        """The current lists as Parquet."""
        return self.output / "recommendations.parquet"

    @property
    def previous_parquet_path(self) -> Path:
        """The lists of the run before, kept for rollback."""
        return self.output / "recommendations.previous.parquet"

    def _pk_name(self, table: str) -> str | None:
        """A primary-key name no other table's key has (SQLite: the default, unnamed)."""
        if self.is_sqlite:
            return None
        return f"{table}_pk_{secrets.token_hex(6)}"

    def ensure_schema(self) -> None:
        """Create the tables that do not exist yet."""
        with self.engine.begin() as conn:
            self.runs.create(conn, checkfirst=True)
            recommendations_table(sa.MetaData(), pk_name=self._pk_name(RECOMMENDATIONS)).create(conn, checkfirst=True)
            popular_table(sa.MetaData(), pk_name=self._pk_name(POPULAR)).create(conn, checkfirst=True)

    def begin_run(self, run_id: str, started_at: datetime, input_path: str) -> None:
        """Record a run as running; earlier runs left running by a killed process become failed."""
        self.ensure_schema()
        with self.engine.begin() as conn:
            conn.execute(
                self.runs.update()
                .where(self.runs.c.status == "running")
                .values(status="failed", message="interrupted: the process ended before the run finished")
            )
            conn.execute(
                self.runs.insert().values(
                    run_id=run_id, started_at=started_at, status="running", is_current=False, input_path=input_path
                )
            )

    def finish_run(self, run_id: str, status: str | None = None, **fields) -> None:
        """Record how a run ended (status, counts, metrics as JSON, message)."""
        values = dict(fields)
        if status is not None:
            values.update(status=status, finished_at=utc_now())
        if "metrics" in values and not isinstance(values["metrics"], str):
            values["metrics"] = json.dumps(values["metrics"], sort_keys=True, default=float)
        with self.engine.begin() as conn:
            conn.execute(self.runs.update().where(self.runs.c.run_id == run_id).values(**values))

    def current_run(self) -> str | None:
        """The run whose lists are published now."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(self.runs.c.run_id).where(self.runs.c.is_current)).scalar()

    def publish(
        self,
        run_id: str,
        generated_at: datetime,
        lists: Iterable[pa.Table],
        popular: pa.Table,
        status: str = "succeeded",
        **run_fields,
    ) -> Published:
        """Write the run's lists to staging, then swap them in as a whole (SQL first, then Parquet).

        ``lists`` yields Arrow tables with columns user_id, rank, item, score; ``popular`` has
        rank, item, score. The run's row in ``runs`` gets ``status`` (and ``run_fields``) in the
        same transaction that swaps the tables, so a run is current exactly when its lists are.
        """
        staging_parquet = self._staged_parquet(run_id)
        # PostgreSQL builds the primary key once, after the load (a sort, not 12M index inserts);
        # SQLite cannot add one later, so its staging table has it from the start.
        key_first = not self.is_postgres
        staging = recommendations_table(sa.MetaData(), RECOMMENDATIONS + STAGING, primary_key=key_first)
        staging_popular = popular_table(sa.MetaData(), POPULAR + STAGING, primary_key=key_first)
        rows = 0
        users = 0
        swapped = False
        parquet_pending = None
        try:
            self.output.mkdir(parents=True, exist_ok=True)
            self.ensure_schema()
            with self.engine.begin() as conn:
                staging.drop(conn, checkfirst=True)
                staging_popular.drop(conn, checkfirst=True)
                staging.create(conn)
                staging_popular.create(conn)
            schema = LIST_SCHEMA.with_metadata({"run_id": run_id})
            with (
                pq.ParquetWriter(staging_parquet, schema, compression="zstd") as writer,
                self._bulk_load(staging) as load,
            ):
                for chunk in lists:
                    chunk = _with_run(chunk, run_id, generated_at).cast(schema)
                    writer.write_table(chunk)
                    self._insert(staging, chunk, load)
                    rows += chunk.num_rows
                    users += int(np.count_nonzero(np.asarray(chunk.column("rank")) == 1))
            _fsync(staging_parquet)
            popular = popular.append_column("run_id", _constant(run_id, popular.num_rows, pa.string()))
            with self._bulk_load(staging_popular) as load:
                self._insert(staging_popular, popular, load)
            self._swap(run_id, status, run_fields)
            swapped = True
            try:
                _replace_keeping_previous(staging_parquet, self.parquet_path, self.previous_parquet_path)
            except OSError as exc:
                # The run is published (the SQL swap is the commit point); the staged file is
                # complete and ``reconcile`` moves it into place at the next run or rollback.
                parquet_pending = f"Parquet not yet renamed into place ({exc.strerror or exc})"
        except OSError as exc:
            raise StoreError(f"{self.output}: cannot write the store ({exc.strerror or exc})") from None
        except sa.exc.OperationalError as exc:
            raise StoreError(f"{self.db_url}: cannot write the store ({_reason(exc)})") from None
        finally:
            # Once the tables are swapped the staged file *is* the current Parquet: if renaming it
            # failed, ``reconcile`` moves it into place, so it must not be deleted here.
            if not swapped:
                with contextlib.suppress(OSError):
                    staging_parquet.unlink(missing_ok=True)
        return Published(
            rows=rows, users=users, parquet=self.parquet_path, db_url=self.db_url, parquet_pending=parquet_pending
        )

    def _staged_parquet(self, run_id: str) -> Path:
        return self.output / f".recommendations.{run_id}.parquet.tmp"

    @contextlib.contextmanager
    def _bulk_load(self, table: sa.Table):
        """One transaction on one connection for loading ``table``; yields that SQLAlchemy connection.

        Commits when the block ends (PostgreSQL first adds the table's primary key and analyses
        it), rolls back if it raises: a failed load leaves only a staging table, which the next
        publish drops. Errors of the driver come out as SQLAlchemy's (``OperationalError`` ...).
        """
        with self.engine.connect() as conn:
            raw = conn.connection.driver_connection
            try:
                with _driver_errors(self.engine):
                    if self.is_sqlite:
                        for pragma in SQLITE_BULK_PRAGMAS:
                            raw.execute(pragma)
                    with conn.begin():
                        yield conn
                        if not table.primary_key.columns:
                            self._add_primary_key(raw, table)
            finally:
                if self.is_sqlite:
                    try:
                        for pragma in SQLITE_RESTORE_PRAGMAS:
                            raw.execute(pragma)
                    except Exception:  # noqa: BLE001 - never hand a bulk-tuned connection back to the pool
                        conn.invalidate()

    def _add_primary_key(self, raw, table: sa.Table) -> None:
        base = table.name.removesuffix(STAGING)
        columns = ", ".join(PRIMARY_KEYS[base])
        with raw.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table.name} ADD CONSTRAINT {self._pk_name(base)} PRIMARY KEY ({columns})")
            cursor.execute(f"ANALYZE {table.name}")

    def _insert(self, table: sa.Table, chunk: pa.Table, load=None) -> None:
        """Append an Arrow table to a staging table inside the bulk load ``load`` (see ``_bulk_load``)."""
        if load is None:
            with self._bulk_load(table) as own:
                return self._insert(table, chunk, own)
        columns = [c.name for c in table.columns]
        chunk = chunk.select(columns)
        raw = load.connection.driver_connection
        with _driver_errors(self.engine):
            if self.is_postgres:
                _copy_csv(raw, table.name, chunk)
            elif self.is_sqlite:
                _executemany_sqlite(raw, table.name, chunk)
            else:  # other databases: SQLAlchemy's executemany, a slice at a time
                for part in _slices(chunk):
                    load.execute(table.insert(), part.to_pylist())

    def _table_names(self) -> set[str]:
        return set(sa.inspect(self.engine).get_table_names())

    def _swap(self, run_id: str, status: str, run_fields: dict) -> None:
        """Current -> previous, staging -> current, and the run's status, in one transaction."""
        names = self._table_names()
        values = dict(run_fields, status=status, finished_at=utc_now())
        if "metrics" in values and not isinstance(values["metrics"], str):
            values["metrics"] = json.dumps(values["metrics"], sort_keys=True, default=float)
        with self.engine.begin() as conn:
            for name in (RECOMMENDATIONS, POPULAR):
                if name + PREVIOUS in names:
                    conn.exec_driver_sql(f"DROP TABLE {name}{PREVIOUS}")
                conn.exec_driver_sql(f"ALTER TABLE {name} RENAME TO {name}{PREVIOUS}")
                conn.exec_driver_sql(f"ALTER TABLE {name}{STAGING} RENAME TO {name}")
            conn.execute(self.runs.update().where(self.runs.c.run_id == run_id).values(**values))
            conn.execute(self.runs.update().values(is_current=(self.runs.c.run_id == run_id)))

    def rollback(self) -> tuple[str, str]:
        """Make the previous published run current again (one transaction); returns (from, to) run ids."""
        names = self._table_names()
        if RECOMMENDATIONS + PREVIOUS not in names:
            raise StoreError(f"{self.db_url}: no previous run to roll back to")
        with self.engine.begin() as conn:
            previous = conn.exec_driver_sql(f"SELECT run_id FROM {RECOMMENDATIONS}{PREVIOUS} LIMIT 1").scalar()
            if previous is None:
                raise StoreError(f"{self.db_url}: no previous run to roll back to (the previous lists are empty)")
            current = conn.execute(sa.select(self.runs.c.run_id).where(self.runs.c.is_current)).scalar()
            for name in (RECOMMENDATIONS, POPULAR):
                conn.exec_driver_sql(f"ALTER TABLE {name} RENAME TO {name}_rollback")
                conn.exec_driver_sql(f"ALTER TABLE {name}{PREVIOUS} RENAME TO {name}")
                conn.exec_driver_sql(f"ALTER TABLE {name}_rollback RENAME TO {name}{PREVIOUS}")
            conn.execute(self.runs.update().values(is_current=(self.runs.c.run_id == previous)))
            if current is not None:
                note = f"rolled back at {utc_now():%Y-%m-%d %H:%M:%S} UTC; {previous} made current again"
                conn.execute(self.runs.update().where(self.runs.c.run_id == current).values(message=note))
        try:
            self._swap_parquet_files()
        except OSError as exc:
            raise StoreError(
                f"{self.output}: rolled back in SQL, but the Parquet files could not be swapped "
                f"({exc.strerror or exc}); the next run or rollback repairs them"
            ) from None
        return current, previous

    def _swap_parquet_files(self) -> None:
        """Exchange the current and previous Parquet files (a crash in between is mended by ``reconcile``)."""
        swap = self.output / ".recommendations.swap.parquet.tmp"
        if self.parquet_path.exists():
            os.replace(self.parquet_path, swap)
        if self.previous_parquet_path.exists():
            os.replace(self.previous_parquet_path, self.parquet_path)
        if swap.exists():
            os.replace(swap, self.previous_parquet_path)
        _fsync_dir(self.output)

    def reconcile(self) -> str | None:
        """Make the Parquet file hold the current run's lists after a crash between the two commits.

        The SQL swap is the commit point. If the process died before the Parquet rename, the staged
        file is moved into place; after a rollback the two Parquet files are swapped. Returns what
        was done, or ``None`` when nothing was needed.
        """
        current = self.current_run()
        done = []
        swap = self.output / ".recommendations.swap.parquet.tmp"
        # A rollback's file swap cut short: put the file it had moved aside back in its place.
        if swap.exists():
            target = self.parquet_path if not self.parquet_path.exists() else self.previous_parquet_path
            if not target.exists():
                os.replace(swap, target)
                done.append(f"restored {target.name} from an interrupted rollback")
        if current is not None and parquet_run_id(self.parquet_path) != current:
            staged = self._staged_parquet(current)
            if staged.exists():
                _replace_keeping_previous(staged, self.parquet_path, self.previous_parquet_path)
                done.append(f"moved the staged Parquet file of run {current} into place")
            elif parquet_run_id(self.previous_parquet_path) == current:
                self._swap_parquet_files()
                done.append(f"restored the Parquet file of run {current}")
        # Staged files of runs killed before their swap will never be published.
        for stale in self.output.glob(".recommendations.*.parquet.tmp"):
            if stale != swap and stale != self._staged_parquet(current or ""):
                stale.unlink(missing_ok=True)
                done.append(f"removed {stale.name}")
        return "; ".join(done) or None


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


def _with_run(chunk: pa.Table, run_id: str, generated_at: datetime) -> pa.Table:
    n = chunk.num_rows
    return pa.table(
        {
            "user_id": chunk.column("user_id").cast(pa.string()),
            "rank": chunk.column("rank").cast(pa.int16()),
            "item": chunk.column("item").cast(pa.string()),
            "score": chunk.column("score").cast(pa.float64()),
            "run_id": _constant(run_id, n, pa.string()),
            "generated_at": _constant(generated_at, n, pa.timestamp("us", tz="UTC")),
        },
        schema=LIST_SCHEMA,
    )


def _constant(value, n: int, type_: pa.DataType) -> pa.Array:
    """``n`` copies of ``value`` built by Arrow (no Python list of ``n`` elements)."""
    return pc.fill_null(pa.nulls(n, type_), pa.scalar(value, type_))


@contextlib.contextmanager
def _driver_errors(engine: sa.Engine):
    """Raise the driver's own errors (from the raw connection) as SQLAlchemy's wrapped ones."""
    dbapi = engine.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(None, None, exc, dbapi.Error, dialect=engine.dialect) from exc


def _slices(chunk: pa.Table, size: int = BULK_ROWS):
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


def _replace_keeping_previous(new: Path, current: Path, previous: Path) -> None:
    """Move ``new`` onto ``current``; the old file becomes ``previous``. ``current`` never goes missing."""
    if current.exists():
        link = previous.with_name(previous.name + ".tmp")
        link.unlink(missing_ok=True)
        os.link(current, link)
        os.replace(link, previous)
    os.replace(new, current)
    _fsync_dir(current.parent)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reason(exc: Exception) -> str:
    text = str(getattr(exc, "orig", exc)) or type(exc).__name__
    return text.splitlines()[0]
