"""The SQLite bulk path of Store.publish: exact rows, chunking does not matter, failures leave no trace."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest
import sqlalchemy as sa

import recsys.store.bulk
import recsys.store.tables
from recsys.errors import StoreError
from recsys.store.lookup import lookup
from recsys.store.publish import Store

T1 = datetime(2024, 3, 1, 2, 0, 5, 123456, tzinfo=timezone.utc)
T2 = datetime(2024, 3, 2, 2, 0, tzinfo=timezone.utc)  # no microseconds: still 6 digits stored


def lists(users: int, run: str = "r", k: int = 12) -> pa.Table:
    rows = [(f"user {u}", r + 1, f"{run} item {(u * 7 + r) % 31}", 1.0 / (r + 1) + u * 1e-9) for u in range(users) for r in range(k)]
    return pa.table(
        {
            "user_id": pa.array([r[0] for r in rows]),
            "rank": pa.array([r[1] for r in rows], pa.int16()),
            "item": pa.array([r[2] for r in rows]),
            "score": pa.array([r[3] for r in rows], pa.float64()),
            "reason": pa.array(["popular lately"] * len(rows)),
        }
    )


def popular(run: str = "r") -> pa.Table:
    return pa.table(
        {"rank": pa.array([1, 2], pa.int16()), "item": pa.array([f"{run} p1", f"{run} p2"]), "score": pa.array([2.0, 1.0]), "reason": ["campaign", "popular lately"]}
    )


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'out' / 'recsys.db'}", tmp_path / "out")


def raw(store: Store, query: str) -> list[tuple]:
    with sqlite3.connect(store.engine.url.database) as conn:
        return conn.execute(query).fetchall()


def chunked(table: pa.Table, sizes: list[int]):
    start = 0
    for size in sizes:
        yield table.slice(start, size)
        start += size
    assert start == table.num_rows


def test_publishes_exactly_the_given_rows_with_sqlalchemy_types(store):
    table = lists(25)
    store.begin_run("run1", T1, "in.csv")
    published = store.publish("run1", T1, iter([table]), popular())
    assert (published.rows, published.users) == (300, 25)

    got = raw(store, "SELECT user_id, rank, item, score, run_id, generated_at FROM recommendations ORDER BY user_id, rank")
    expected = sorted(zip(*(table.column(c).to_pylist() for c in ("user_id", "rank", "item", "score"))))
    assert [r[:4] for r in got] == expected  # scores exact, not rounded
    assert {r[4:] for r in got} == {("run1", "2024-03-01 02:00:05.123456")}  # as SQLAlchemy's DateTime writes it
    types = raw(store, "SELECT DISTINCT typeof(user_id), typeof(rank), typeof(item), typeof(score), typeof(run_id), typeof(generated_at) FROM recommendations")
    assert types == [("text", "integer", "text", "real", "text", "text")]
    assert raw(store, "SELECT rank, item, score, run_id, typeof(rank), typeof(score) FROM popular_items ORDER BY rank") == [
        (1, "r p1", 2.0, "run1", "integer", "real"),
        (2, "r p2", 1.0, "run1", "integer", "real"),
    ]

    # SQLAlchemy reads the bulk-written times back as it reads its own.
    with store.engine.connect() as conn:
        values = conn.execute(sa.select(recsys.store.tables.recommendations_table(sa.MetaData()).c.generated_at).distinct()).scalars().all()
    assert values == [T1.replace(tzinfo=None)]
    assert lookup("user 3", store.db_url).generated_at == "2024-03-01 02:00:05.123456"

    assert sa.inspect(store.engine).get_pk_constraint("recommendations")["constrained_columns"] == ["user_id", "rank"]
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO recommendations VALUES ('user 1', 1, 'z', 0.0, 'campaign', 'x', '2024-01-01 00:00:00.000000')")


def test_generated_at_is_stored_in_utc_with_six_digits(store):
    store.begin_run("run1", T2, "in.csv")
    store.publish("run1", T2.astimezone(timezone(timedelta(hours=-5))), iter([lists(2)]), popular())
    assert raw(store, "SELECT DISTINCT generated_at FROM recommendations") == [("2024-03-02 02:00:00.000000",)]


@pytest.mark.parametrize("bulk_rows", [1, 7, 12, 100_000])
@pytest.mark.parametrize("sizes", [[360], [1, 0, 100, 11, 248], [12] * 30], ids=["one", "uneven", "per-user"])
def test_chunk_and_slice_boundaries_do_not_matter(store, monkeypatch, bulk_rows, sizes):
    monkeypatch.setattr(recsys.store.bulk, "BULK_ROWS", bulk_rows)
    table = lists(30)
    store.begin_run("run1", T1, "in.csv")
    published = store.publish("run1", T1, chunked(table, sizes), popular())
    assert (published.rows, published.users) == (360, 30)
    got = raw(store, "SELECT user_id, rank, item, score FROM recommendations ORDER BY user_id, rank")
    assert got == sorted(zip(*(table.column(c).to_pylist() for c in ("user_id", "rank", "item", "score"))))
    assert raw(store, "SELECT COUNT(DISTINCT generated_at), COUNT(DISTINCT run_id) FROM recommendations") == [(1, 1)]


def published_state(store: Store) -> dict:
    return {
        table: raw(store, f"SELECT * FROM {table} ORDER BY 1, 2")
        for table in ("recommendations", "popular_items", "recommendations_previous", "popular_items_previous")
    }


@pytest.mark.parametrize("failure", ["generator", "duplicate-key", "popular"])
def test_a_failure_in_the_middle_of_a_load_leaves_the_published_tables_untouched(store, monkeypatch, failure):
    monkeypatch.setattr(recsys.store.bulk, "BULK_ROWS", 5)  # many executemany calls per chunk
    for run in ("run1", "run2"):
        store.begin_run(run, T1, "in.csv")
        store.publish(run, T1, iter([lists(4, run)]), popular(run))
    before = published_state(store)
    parquet_before = store.parquet.path.read_bytes()

    def broken():
        yield lists(3, "run3")
        if failure == "generator":
            raise OSError(28, "No space left on device")
        yield lists(2, "run3")  # users already loaded: the primary key stops the load mid-way

    store.begin_run("run3", T2, "in.csv")
    if failure == "popular":
        bad_popular = pa.table({"rank": pa.array([1, 1], pa.int16()), "item": ["a", "b"], "score": [1.0, 1.0], "reason": ["x", "y"]})
        with pytest.raises(sa.exc.IntegrityError):
            store.publish("run3", T2, iter([lists(3, "run3")]), bad_popular)
    elif failure == "generator":
        with pytest.raises(StoreError, match="No space left on device"):
            store.publish("run3", T2, broken(), popular("run3"))
    else:
        with pytest.raises(sa.exc.IntegrityError):
            store.publish("run3", T2, broken(), popular("run3"))

    assert published_state(store) == before
    assert store.parquet.path.read_bytes() == parquet_before
    assert store.current_run() == "run2"
    assert not list(store.output.glob(".recommendations.*"))
    # The failed load's rows were rolled back with its transaction (staging tables are never read).
    failed_table = "popular_items_staging" if failure == "popular" else "recommendations_staging"
    assert raw(store, f"SELECT COUNT(*) FROM {failed_table}") == [(0,)]
    # Pooled connections are back to the durable settings.
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"

    store.begin_run("run4", T2, "in.csv")
    store.publish("run4", T2, iter([lists(6, "run4")]), popular("run4"))
    names = set(sa.inspect(store.engine).get_table_names())
    assert not {n for n in names if n.endswith("_staging")}
    assert raw(store, "SELECT DISTINCT run_id FROM recommendations") == [("run4",)]
    assert raw(store, "SELECT DISTINCT run_id FROM recommendations_previous") == [("run2",)]
    assert raw(store, "PRAGMA integrity_check") == [("ok",)]


def test_a_locked_database_is_a_store_error(store):
    """A driver error in the raw bulk path comes out like SQLAlchemy's: a one-line StoreError."""
    store.begin_run("run1", T1, "in.csv")
    store.publish("run1", T1, iter([lists(2)]), popular())
    store.engine.dispose()
    blocker = sqlite3.connect(store.engine.url.database, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        quick = Store(store.db_url, store.output)
        quick.engine = sa.create_engine(store.db_url, connect_args={"timeout": 0.1})
        quick.is_sqlite = True
        with pytest.raises(StoreError, match="locked"):
            quick.publish("run2", T2, iter([lists(2)]), popular())
    finally:
        blocker.rollback()
        blocker.close()
