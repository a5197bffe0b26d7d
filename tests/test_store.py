"""Publishing to SQL + Parquet with hand-made Arrow tables; the runs table."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from recsys.errors import StoreError
from recsys.store.publish import Store

T1 = datetime(2024, 3, 1, 2, 0, 5, 123456, tzinfo=timezone.utc)
T2 = T1 + timedelta(days=1)


def lists(users: dict[str, list[str]], offset: float = 0.0) -> pa.Table:
    """A (user_id, rank, item, score) table: ranks 1..n per user, scores decreasing."""
    rows = [(u, r + 1, item, 10.0 - r + offset) for u, items in users.items() for r, item in enumerate(items)]
    return pa.table(
        {
            "user_id": pa.array([r[0] for r in rows]),
            "rank": pa.array([r[1] for r in rows], pa.int16()),
            "item": pa.array([r[2] for r in rows]),
            "score": pa.array([r[3] for r in rows], pa.float64()),
            "reason": pa.array([f"because you redeemed {r[2]}" for r in rows]),
        }
    )


def popular(items: list[str]) -> pa.Table:
    return pa.table(
        {
            "rank": pa.array(range(1, len(items) + 1), pa.int16()),
            "item": pa.array(items),
            "score": pa.array([float(len(items) - i) for i in range(len(items))]),
            "reason": pa.array(["popular lately"] * len(items)),
        }
    )


FIRST = {"u1": ["a", "b", "c"], "u2": ["c", "a", "d"], "u3": ["é ñ", "b", "a"]}
SECOND = {"u1": ["d", "e", "f"], "u4": ["a", "b", "c"]}


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'out' / 'recsys.db'}", tmp_path / "out")


def sql_rows(store: Store, table: str = "recommendations") -> list[tuple]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {table}").fetchall()]


def parquet_rows(path) -> list[tuple]:
    table = pq.read_table(path)
    return [tuple(r.values()) for r in table.to_pylist()]


def normalise(rows):
    """(user_id, rank, item, score, reason, run_id, generated_at as naive UTC), sorted."""
    out = []
    for user, rank, item, score, reason, run_id, generated in rows:
        if isinstance(generated, str):
            generated = datetime.fromisoformat(generated)
        if generated.tzinfo is not None:
            generated = generated.astimezone(timezone.utc).replace(tzinfo=None)
        out.append((user, int(rank), item, float(score), reason, run_id, generated))
    return sorted(out)


def publish_first(store: Store):
    store.begin_run("run1", T1, "in.csv")
    # Two chunks, as list_tables yields them for many users.
    chunks = [lists({"u1": FIRST["u1"]}), lists({k: v for k, v in FIRST.items() if k != "u1"})]
    published = store.publish("run1", T1, iter(chunks), popular(["a", "b"]))
    store.finish_run("run1", "succeeded", rows=10, users=3, items=5, metrics={"seconds": {"load": 0.5}, "lists": 3})
    return published


def test_publish_writes_the_same_rows_to_sql_and_parquet(store):
    published = publish_first(store)
    assert published.rows == 9 and published.users == 3
    assert published.parquet == store.parquet.path and published.parquet.is_file()
    sql = normalise(sql_rows(store))
    parquet = normalise(parquet_rows(store.parquet.path))
    assert sql == parquet
    assert len(sql) == 9
    assert {r[5] for r in sql} == {"run1"}
    assert {r[6] for r in sql} == {T1.replace(tzinfo=None)}
    assert [r[2] for r in sql if r[0] == "u3"] == ["é ñ", "b", "a"]
    assert sql_rows(store, "popular_items") == [(1, "a", 2.0, "popular lately", "run1"), (2, "b", 1.0, "popular lately", "run1")]
    # No staging leftovers.
    assert not list(store.output.glob(".recommendations.*"))
    assert "recommendations_staging" not in sa.inspect(store.engine).get_table_names()


def test_parquet_schema(store):
    publish_first(store)
    schema = pq.read_schema(store.parquet.path)
    assert schema.names == ["user_id", "rank", "item", "score", "reason", "run_id", "generated_at"]
    assert pa.types.is_string(schema.field("user_id").type)
    assert pa.types.is_integer(schema.field("rank").type)
    assert pa.types.is_string(schema.field("item").type)
    assert pa.types.is_floating(schema.field("score").type)
    assert pa.types.is_string(schema.field("run_id").type)
    generated = schema.field("generated_at").type
    assert pa.types.is_timestamp(generated) and generated.tz == "UTC"
    values = pq.read_table(store.parquet.path).column("generated_at").to_pylist()
    assert set(values) == {T1}


def test_primary_key_is_user_and_rank(store):
    publish_first(store)
    for table in ("recommendations", "recommendations_previous"):
        pk = sa.inspect(store.engine).get_pk_constraint(table)
        assert pk["constrained_columns"] == ["user_id", "rank"], table
    with pytest.raises(sa.exc.IntegrityError):
        with store.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO recommendations VALUES ('u1', 1, 'z', 0.0, 'campaign', 'x', '2024-01-01 00:00:00')"
            )


def test_second_publish_replaces_the_first_and_keeps_it_as_previous(store):
    publish_first(store)
    first_sql = normalise(sql_rows(store))
    first_parquet = store.parquet.path.read_bytes()

    store.begin_run("run2", T2, "in.csv")
    published = store.publish("run2", T2, iter([lists(SECOND, offset=1.0)]), popular(["d"]))
    store.finish_run("run2", "succeeded", metrics={"lists": 2})
    assert published.rows == 6 and published.users == 2

    current = normalise(sql_rows(store))
    assert {r[0] for r in current} == {"u1", "u4"}  # u2 and u3 are gone: replaced as a whole
    assert {r[5] for r in current} == {"run2"}
    assert [r[2] for r in current if r[0] == "u1"] == ["d", "e", "f"]
    assert current == normalise(parquet_rows(store.parquet.path))
    assert sql_rows(store, "popular_items") == [(1, "d", 1.0, "popular lately", "run2")]

    assert normalise(sql_rows(store, "recommendations_previous")) == first_sql
    assert sql_rows(store, "popular_items_previous") == [(1, "a", 2.0, "popular lately", "run1"), (2, "b", 1.0, "popular lately", "run1")]
    assert store.parquet.previous_path.read_bytes() == first_parquet

    # A third publish: previous now holds the second run.
    store.begin_run("run3", T2 + timedelta(days=1), "in.csv")
    store.publish("run3", T2, iter([lists({"u9": ["a"]})]), popular(["a"]))
    assert {r[5] for r in normalise(sql_rows(store, "recommendations_previous"))} == {"run2"}
    assert normalise(parquet_rows(store.parquet.previous_path)) == current


def test_runs_rows_record_status_counts_and_metrics(store):
    publish_first(store)
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(store.runs.table)).mappings().one()
    assert row["run_id"] == "run1"
    assert row["status"] == "succeeded"
    assert row["is_current"] is True
    assert row["finished_at"] is not None and row["started_at"] is not None
    assert row["finished_at"].replace(tzinfo=None) >= row["started_at"].replace(tzinfo=None)
    assert (row["rows"], row["users"], row["items"]) == (10, 3, 5)
    assert row["input_path"] == "in.csv"
    assert json.loads(row["metrics"]) == {"lists": 3, "seconds": {"load": 0.5}}


def test_only_the_published_run_is_current(store):
    publish_first(store)
    store.begin_run("run2", T2, "in.csv")
    store.publish("run2", T2, iter([lists(SECOND)]), popular(["d"]))
    store.finish_run("run2", "succeeded")
    store.begin_run("run3", T2, "in.csv")
    store.finish_run("run3", "failed", message="boom")
    with store.engine.connect() as conn:
        rows = {r.run_id: (r.status, r.is_current, r.message) for r in conn.execute(sa.select(store.runs.table))}
    assert rows == {
        "run1": ("succeeded", False, None),
        "run2": ("succeeded", True, None),
        "run3": ("failed", False, "boom"),
    }


def test_a_run_left_running_becomes_failed_when_the_next_begins(store):
    store.begin_run("run1", T1, "in.csv")  # the process is killed here
    store.begin_run("run2", T2, "in.csv")
    with store.engine.connect() as conn:
        rows = {r.run_id: r for r in conn.execute(sa.select(store.runs.table))}
    assert rows["run1"].status == "failed"
    assert "interrupted" in rows["run1"].message
    assert rows["run2"].status == "running"
    assert rows["run2"].finished_at is None


def test_a_database_url_elsewhere(tmp_path):
    output = tmp_path / "out"
    db = tmp_path / "elsewhere" / "deeper" / "lists.db"
    store = Store(f"sqlite:///{db}", output)
    publish_first(store)
    assert db.is_file()
    assert not (output / "recsys.db").exists()
    assert store.parquet.path == output / "recommendations.parquet" and store.parquet.path.is_file()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM recommendations").fetchone() == (9,)
        assert conn.execute("SELECT status FROM runs").fetchall() == [("succeeded",)]


def test_unwritable_output_is_a_store_error(tmp_path):
    """Output path taken by a regular file: a one-line StoreError, not an OSError traceback."""
    blocker = tmp_path / "out"
    blocker.write_text("not a folder")
    store = Store(f"sqlite:///{tmp_path / 'db' / 'recsys.db'}", blocker)
    with pytest.raises(StoreError, match="cannot write the store"):
        store.publish("run1", T1, iter([lists(FIRST)]), popular(["a"]))


# --- the database's own run lock (SQLite) -------------------------------------------------------------


def test_two_output_folders_sharing_one_sqlite_database_take_turns(tmp_path):
    """The SQLite store's lock is the lock file of its folder: another output folder publishing
    into the same database file is refused while one run holds it."""
    from recsys.errors import StoreError
    from recsys.store.lock import run_lock
    from recsys.store.publish import Store

    url = f"sqlite:///{tmp_path / 'shared' / 'recsys.db'}"
    first, second = Store(url, tmp_path / "a"), Store(url, tmp_path / "b")
    with run_lock(tmp_path / "a"), first.lock():
        with pytest.raises(StoreError, match="another recsys run is already publishing to this database"):
            with run_lock(tmp_path / "b"), second.lock():
                pass
        # A run whose output folder is the database's folder holds the same lock.
        with pytest.raises(StoreError, match="another recsys run is already publishing here"):
            with run_lock(tmp_path / "shared"):
                pass
    with run_lock(tmp_path / "b"), second.lock():
        pass


def test_the_default_sqlite_store_is_locked_by_the_run_lock_alone(tmp_path):
    from recsys.settings import resolve_db_url
    from recsys.store.lock import run_lock
    from recsys.store.publish import Store

    output = tmp_path / "out"
    with run_lock(output), Store(resolve_db_url(output), output).lock():
        assert sorted(p.name for p in output.iterdir()) == [".recsys.lock"]


def test_names_come_back_without_a_numpy_string_copy_per_row():
    """list_tables takes names from Arrow vocabularies by code: at a million customers a
    fixed-width NumPy copy of 12M names (and a Python string each) cost gigabytes and a minute."""
    import tracemalloc

    import numpy as np

    from recsys.scoring.lists import Lists
    from recsys.store.publish import list_tables

    n, m = 200_000, 2_000
    users = np.asarray([f"customer {i:08d}" for i in range(n)], dtype=object)
    items = np.asarray([f"Experiencia número {i} con un nombre largo de verdad, como en la exportación" for i in range(m)], dtype=object)
    rng = np.random.default_rng(0)
    lists = Lists(items=rng.integers(0, m, (n, 12)), scores=rng.random((n, 12)))
    tracemalloc.start()
    try:
        rows = sum(table.num_rows for table in list_tables(users, items, lists))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == n * 12
    assert peak < 100 * 2**20, f"{peak / 2**20:.0f} MiB of NumPy/Python memory for {rows:,} rows"
