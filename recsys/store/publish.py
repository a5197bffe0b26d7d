"""Publishing a run's lists as a whole, and rolling back to the run before.

A run's lists go first into staging tables (and a staged Parquet file), then are swapped in by
renaming tables inside one short transaction: a reader sees the previous complete set or the new
complete set, never a mix. The tables being replaced are kept as ``*_previous`` so
:meth:`Store.rollback` can swap them back. The Parquet file is renamed into place right after the
swap (``recsys.store.parquet``). Names come back here, at the edge: the lists arrive as item codes
and are written with the customers' ids and the items' names.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from recsys.errors import StoreError
from recsys.scoring.reasons import reason_vocabulary
from recsys.store import bulk
from recsys.store.database import engine_for, store_errors
from recsys.store.diagnosis import first_line, redact, safe_url
from recsys.store.lock import AdvisoryLock, folder_lock
from recsys.store.parquet import ParquetMirror, fsync
from recsys.store.runs import RunLog, utc_now
from recsys.store.tables import (
    LIST_SCHEMA,
    POPULAR,
    PREVIOUS,
    RECOMMENDATIONS,
    STAGING,
    popular_table,
    primary_key_name,
    recommendations_table,
)


@dataclass(frozen=True)
class Published:
    """What a publish wrote."""

    rows: int
    users: int
    parquet: Path
    db_url: str
    parquet_pending: str | None = None


class Store:
    """The published store: the SQL tables (through SQLAlchemy) and the Parquet mirror in ``output``."""

    def __init__(self, db_url: str, output: Path):
        self.db_url = db_url
        self.output = Path(output)
        try:
            self.engine = engine_for(db_url)
        except OSError as exc:
            raise StoreError(
                f"{safe_url(db_url)}: cannot create the database's folder ({exc.strerror or exc}); "
                "check that its parent exists and is writable"
            ) from None
        except (sa.exc.ArgumentError, ValueError) as exc:
            raise StoreError(
                f"--db-url {safe_url(db_url)}: is not a database URL ({redact(first_line(exc), db_url)}); "
                "check it, e.g. sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST/DATABASE"
            ) from None
        except ImportError as exc:
            raise StoreError(
                f"--db-url {safe_url(db_url)}: the database driver is not installed ({redact(first_line(exc), db_url)}); "
                "install it, or use sqlite:/// or postgresql+psycopg://"
            ) from None
        self.runs = RunLog(self.engine)
        self.parquet = ParquetMirror(self.output)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self._lock: AdvisoryLock | None = None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the database's own run lock for the block (``recsys.store.lock``), or raise
        ``StoreError`` naming the run that holds it.

        PostgreSQL: a session advisory lock, checked again inside every swap. SQLite: the lock
        file of the database file's folder; for the default store in the output folder that is the
        run lock the caller holds already. Other databases: none.
        """
        if self.is_postgres:
            lock = AdvisoryLock(self.engine, safe_url(self.db_url))
            with store_errors(self.db_url, self.output, "cannot open the store"):
                lock.acquire()
            self._lock = lock
            try:
                yield
            finally:
                self._lock = None
                lock.release()
            return
        folder = self._sqlite_folder()
        if folder is None or folder == self.output.resolve():
            yield
            return
        with folder_lock(folder, "to this database"):
            yield

    def _sqlite_folder(self) -> Path | None:
        url = self.engine.url
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return None
        return Path(url.database).resolve().parent

    def ensure_schema(self) -> None:
        """Create the tables that do not exist yet."""
        with store_errors(self.db_url, self.output, "cannot open the store"), self.engine.begin() as conn:
            self.runs.ensure(conn)
            recommendations_table(sa.MetaData(), pk_name=primary_key_name(self.engine, RECOMMENDATIONS)).create(
                conn, checkfirst=True
            )
            popular_table(sa.MetaData(), pk_name=primary_key_name(self.engine, POPULAR)).create(conn, checkfirst=True)

    def begin_run(self, run_id: str, started_at: datetime, input_path: str) -> None:
        """Record a run as running (see :meth:`RunLog.begin`)."""
        self.ensure_schema()
        with store_errors(self.db_url, self.output, "cannot write the run log"):
            self.runs.begin(run_id, started_at, input_path)

    def finish_run(self, run_id: str, status: str | None = None, **fields) -> None:
        """Record how a run ended (see :meth:`RunLog.finish`); a message has its passwords masked."""
        if fields.get("message"):
            fields["message"] = redact(fields["message"], self.db_url)
        with store_errors(self.db_url, self.output, "cannot write the run log"):
            self.runs.finish(run_id, status, **fields)

    def current_run(self) -> str | None:
        """The run whose lists are published now."""
        with store_errors(self.db_url, self.output, "cannot read the run log"):
            return self.runs.current()

    def current_metrics(self) -> dict:
        """The metrics of the run whose lists are published now ({} before the first)."""
        with store_errors(self.db_url, self.output, "cannot read the run log"):
            return self.runs.current_metrics()

    @contextlib.contextmanager
    def recording(self, run_id: str, started_at: datetime, input_path: str, counts: dict) -> Iterator[None]:
        """Record a run as running for the length of the block, and as failed (with why) if the
        block raises; publishing inside the block records how it ended."""
        self.begin_run(run_id, started_at, input_path)
        try:
            yield
        except BaseException as exc:
            try:
                self.finish_run(run_id, "failed", message=f"{type(exc).__name__}: {exc}"[:2000], **counts)
            except StoreError:
                pass  # the store went away: the next run marks this one as interrupted
            raise

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

        ``lists`` yields Arrow tables with columns user_id, rank, item, score, reason; ``popular``
        has rank, item, score, reason. The run's row in ``runs`` gets ``status`` (and ``run_fields``) in the
        same transaction that swaps the tables, so a run is current exactly when its lists are.
        """
        if run_fields.get("message"):
            run_fields["message"] = redact(run_fields["message"], self.db_url)
        staged_parquet = self.parquet.staged(run_id)
        # PostgreSQL builds the primary key once, after the load (a sort, not 12M index inserts);
        # SQLite cannot add one later, so its staging table has it from the start.
        key_first = not self.is_postgres
        staging = recommendations_table(sa.MetaData(), RECOMMENDATIONS + STAGING, primary_key=key_first)
        staging_popular = popular_table(sa.MetaData(), POPULAR + STAGING, primary_key=key_first)
        rows = users = 0
        swapped = False
        parquet_pending = None
        try:
            with store_errors(self.db_url, self.output, "cannot write the store"):
                self.output.mkdir(parents=True, exist_ok=True)
                if self._lock is not None:
                    self._lock.renew()  # a retry after a dropped connection: take the lock again
                self.ensure_schema()
                if self.current_run() == run_id:
                    # A retry after a dropped connection whose swap had committed: nothing to redo.
                    swapped = True
                    return self._already_published(run_id)
                with self.engine.begin() as conn:
                    for table in (staging, staging_popular):
                        table.drop(conn, checkfirst=True)
                        table.create(conn)
                with self.parquet.writer(run_id) as writer, bulk.bulk_load(self.engine, staging) as load:
                    for chunk in lists:
                        chunk = _with_run(chunk, run_id, generated_at).cast(writer.schema)
                        writer.write_table(chunk)
                        self._insert(staging, chunk, load)
                        rows += chunk.num_rows
                        users += int(np.count_nonzero(np.asarray(chunk.column("rank")) == 1))
                fsync(staged_parquet)
                popular = popular.append_column("run_id", _constant(run_id, popular.num_rows, pa.string()))
                with bulk.bulk_load(self.engine, staging_popular) as load:
                    self._insert(staging_popular, popular, load)
                self._swap(run_id, status, run_fields)
                swapped = True
                try:
                    self.parquet.publish(run_id)
                except OSError as exc:
                    # The run is published (the SQL swap is the commit point); the staged file is
                    # complete and ``reconcile`` moves it into place at the next run or rollback.
                    parquet_pending = f"Parquet not yet renamed into place ({exc.strerror or exc})"
        finally:
            # Once the tables are swapped the staged file *is* the current Parquet: if renaming it
            # failed, ``reconcile`` moves it into place, so it must not be deleted here.
            if not swapped:
                with contextlib.suppress(OSError):
                    staged_parquet.unlink(missing_ok=True)
        return Published(
            rows=rows, users=users, parquet=self.parquet.path, db_url=self.db_url, parquet_pending=parquet_pending
        )

    def _already_published(self, run_id: str) -> Published:
        """What the publish of ``run_id`` wrote, read back (its Parquet file moved into place if needed)."""
        with self.engine.connect() as conn:
            rows, users = conn.execute(
                sa.text(f"SELECT count(*), count(DISTINCT user_id) FROM {RECOMMENDATIONS} WHERE run_id = :run"),
                {"run": run_id},
            ).one()
        pending = None
        try:
            self.parquet.reconcile(run_id)
        except OSError as exc:
            pending = f"Parquet not yet renamed into place ({exc.strerror or exc})"
        return Published(rows=rows, users=users, parquet=self.parquet.path, db_url=self.db_url, parquet_pending=pending)

    def _insert(self, table: sa.Table, chunk: pa.Table, load) -> None:
        bulk.insert(self.engine, table, chunk, load)

    def _table_names(self) -> set[str]:
        return set(sa.inspect(self.engine).get_table_names())

    def _swap(self, run_id: str, status: str, run_fields: dict) -> None:
        """Current -> previous, staging -> current, and the run's status, in one transaction."""
        names = self._table_names()
        with self.engine.begin() as conn:
            if self._lock is not None:
                self._lock.verify(conn)
            for name in (RECOMMENDATIONS, POPULAR):
                if name + PREVIOUS in names:
                    conn.exec_driver_sql(f"DROP TABLE {name}{PREVIOUS}")
                conn.exec_driver_sql(f"ALTER TABLE {name} RENAME TO {name}{PREVIOUS}")
                conn.exec_driver_sql(f"ALTER TABLE {name}{STAGING} RENAME TO {name}")
            self.runs.mark_published(conn, run_id, status, run_fields)

    def rollback(self) -> tuple[str, str]:
        """Make the previous published run current again (one transaction); returns (from, to) run ids."""
        with store_errors(self.db_url, self.output, "cannot roll back"):
            return self._rollback()

    def _rollback(self) -> tuple[str, str]:
        names = self._table_names()
        if RECOMMENDATIONS + PREVIOUS not in names:
            raise StoreError(f"{safe_url(self.db_url)}: no previous run to roll back to")
        with self.engine.begin() as conn:
            if self._lock is not None:
                self._lock.verify(conn)
            previous = conn.exec_driver_sql(f"SELECT run_id FROM {RECOMMENDATIONS}{PREVIOUS} LIMIT 1").scalar()
            if previous is None:
                raise StoreError(f"{safe_url(self.db_url)}: no previous run to roll back to (the previous lists are empty)")
            current = self.runs.current(conn)
            for name in (RECOMMENDATIONS, POPULAR):
                conn.exec_driver_sql(f"ALTER TABLE {name} RENAME TO {name}_rollback")
                conn.exec_driver_sql(f"ALTER TABLE {name}{PREVIOUS} RENAME TO {name}")
                conn.exec_driver_sql(f"ALTER TABLE {name}_rollback RENAME TO {name}{PREVIOUS}")
            self.runs.make_current(conn, previous)
            # The run current again is no longer "rolled back" (a rollback undone); the one
            # replaced says when and by which, after whatever its message said before.
            self.runs.drop_note(conn, previous, ROLLED_BACK)
            if current is not None:
                note = f"{ROLLED_BACK} {utc_now():%Y-%m-%d %H:%M:%S} UTC; {previous} made current again"
                self.runs.add_note(conn, current, note)
        try:
            self.parquet.swap()
        except OSError as exc:
            raise StoreError(
                f"{self.output}: rolled back in SQL, but the Parquet files could not be swapped "
                f"({exc.strerror or exc}); the next run or rollback repairs them"
            ) from None
        return current, previous

    def reconcile(self) -> str | None:
        """Make the Parquet file hold the current run's lists after a crash between the two commits.

        Returns what was done, or ``None`` when nothing was needed.
        """
        return "; ".join(self.parquet.reconcile(self.current_run())) or None


ROLLED_BACK = "rolled back at"


def list_tables(users: np.ndarray, items: np.ndarray, lists, chunk_users: int = 100_000) -> Iterator[pa.Table]:
    """Lists of item codes (rows follow the customer vocabulary ``users``) as Arrow tables of names
    (user_id, rank, item, score, reason), a chunk of customers at a time.

    Names and reasons are taken from their vocabularies as Arrow arrays, by code: no Python
    string, and no fixed-width NumPy copy, per row (12M of each at a million customers). Lists
    without reason codes (``lists.reasons`` None) say "popular lately".
    """
    k = lists.items.shape[1]
    user_names = pa.array(users, pa.string())
    item_names = pa.array(items, pa.string())
    reason_names = pa.array(reason_vocabulary(items), pa.string())
    ranks = np.arange(1, k + 1, dtype=np.int16)
    for start in range(0, len(users), chunk_users):
        codes = lists.items[start : start + chunk_users]
        valid = codes >= 0
        rows, slots = np.nonzero(valid)  # row-major: each customer's ranks in order
        yield pa.table(
            {
                "user_id": user_names.take(pa.array(rows + start)),
                "rank": pa.array(ranks[slots]),
                "item": item_names.take(pa.array(codes[valid])),
                "score": pa.array(lists.scores[start : start + chunk_users][valid]),
                "reason": reason_names.take(pa.array(_reasons(lists, start, chunk_users)[valid])),
            }
        )


def _reasons(lists, start: int, size: int) -> np.ndarray:
    if lists.reasons is None:
        return np.zeros(lists.items[start : start + size].shape, dtype=np.int32)
    return np.asarray(lists.reasons[start : start + size], dtype=np.int32)


def ranked_table(items: np.ndarray, codes: np.ndarray, scores: np.ndarray, reasons: np.ndarray | None = None) -> pa.Table:
    """One list of item codes (the cold-start list) as an Arrow table of names (rank, item, score,
    reason; ``reasons`` codes, default "popular lately")."""
    codes = np.asarray(codes, dtype=np.int64)
    reasons = np.zeros(len(codes), dtype=np.int32) if reasons is None else np.asarray(reasons, dtype=np.int32)
    return pa.table(
        {
            "rank": pa.array(np.arange(1, len(codes) + 1, dtype=np.int16)),
            "item": pa.array(items, pa.string()).take(pa.array(codes)),
            "score": pa.array(np.asarray(scores, dtype=np.float64)),
            "reason": pa.array(reason_vocabulary(items), pa.string()).take(pa.array(reasons)),
        }
    )


def _with_run(chunk: pa.Table, run_id: str, generated_at: datetime) -> pa.Table:
    n = chunk.num_rows
    return pa.table(
        {
            "user_id": chunk.column("user_id").cast(pa.string()),
            "rank": chunk.column("rank").cast(pa.int16()),
            "item": chunk.column("item").cast(pa.string()),
            "score": chunk.column("score").cast(pa.float64()),
            "reason": chunk.column("reason").cast(pa.string()),
            "run_id": _constant(run_id, n, pa.string()),
            "generated_at": _constant(generated_at, n, pa.timestamp("us", tz="UTC")),
        },
        schema=LIST_SCHEMA,
    )


def _constant(value, n: int, type_: pa.DataType) -> pa.Array:
    """``n`` copies of ``value`` built by Arrow (no Python list of ``n`` elements)."""
    return pc.fill_null(pa.nulls(n, type_), pa.scalar(value, type_))
