"""The store on PostgreSQL: publish, atomic swap, rollback, runs, `recsys lookup --db-url`, the flow.

Needs a server: set ``RECSYS_TEST_POSTGRES_URL`` (e.g.
``postgresql+psycopg://recsys:recsys@127.0.0.1:5432/recsys``; ``.ci/run`` starts one and sets it).
Each test works in a schema of its own (``search_path`` in the URL), dropped afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import list_table, popular_list, run_flow
from recsys.errors import StoreError

URL_ENV = "RECSYS_TEST_POSTGRES_URL"
REPO = Path(__file__).parents[1]
T1 = datetime(2024, 3, 1, 2, 0, 5, 123456, tzinfo=timezone.utc)
T2 = T1 + timedelta(days=1)
TOP_K = 12


def _server_url() -> str:
    url = os.environ.get(URL_ENV)
    if not url:
        pytest.skip(f"{URL_ENV} is not set (point it at a PostgreSQL server to run these tests)")
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[postgres]')")
    from recsys.store.lookup import _postgres_params

    try:
        psycopg.connect(**_postgres_params(url), connect_timeout=5).close()
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL at {URL_ENV} is unreachable: {str(exc).splitlines()[0]}")
    return url


@pytest.fixture(scope="module")
def server_url() -> str:
    return _server_url()


@pytest.fixture
def pg_url(server_url):
    """A URL whose default schema is a fresh one, dropped after the test."""
    import psycopg

    from recsys.store.lookup import _postgres_params

    schema = f"recsys_test_{secrets.token_hex(4)}"
    with psycopg.connect(**_postgres_params(server_url), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in server_url else "?"
    yield f"{server_url}{separator}options={quote(f'-csearch_path={schema}')}"
    with psycopg.connect(**_postgres_params(server_url), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(autouse=True)
def no_db_url_env(monkeypatch):
    monkeypatch.delenv("RECSYS_DB_URL", raising=False)


def lists(run: str, users: int, offset: float = 0.0) -> pa.Table:
    return list_table(
        [(f"u{u}", r + 1, f"{run} item {(u + r) % 40}", 10.0 - r + offset) for u in range(users) for r in range(TOP_K)]
    )


def popular(run: str) -> pa.Table:
    return popular_list(run, TOP_K)


def make_store(pg_url, tmp_path):
    from recsys.store.publish import Store

    return Store(pg_url, tmp_path / "out")


def publish(store, run: str, when: datetime, users: int = 5, chunks: int = 1, offset: float = 0.0):
    table = lists(run, users, offset)
    step = -(-table.num_rows // chunks)
    store.begin_run(run, when, "in.csv")
    published = store.publish(run, when, iter([table.slice(s, step) for s in range(0, table.num_rows, step)]), popular(run))
    store.finish_run(run, metrics={"lists": users})
    return published


def sql(store, query: str) -> list[tuple]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(query).fetchall()]


def normalise(rows):
    out = []
    for user, rank, item, score, reason, run_id, generated in rows:
        if generated.tzinfo is not None:
            generated = generated.astimezone(timezone.utc).replace(tzinfo=None)
        out.append((user, int(rank), item, float(score), reason, run_id, generated))
    return sorted(out)


def parquet_rows(path):
    return normalise(tuple(r.values()) for r in pq.read_table(path).to_pylist())


def test_publish_twice_same_rows_in_sql_and_parquet(pg_url, tmp_path):
    import sqlalchemy as sa

    store = make_store(pg_url, tmp_path)
    published = publish(store, "run1", T1, users=7, chunks=3)
    assert (published.rows, published.users) == (7 * TOP_K, 7)
    first = normalise(sql(store, "SELECT * FROM recommendations"))
    assert first == parquet_rows(store.parquet.path)
    assert len(first) == 7 * TOP_K and {r[5] for r in first} == {"run1"}
    assert {r[6] for r in first} == {T1.replace(tzinfo=None)}
    assert sql(store, "SELECT rank, item, score, run_id FROM popular_items ORDER BY rank")[0] == (1, "run1 popular 0", 12.0, "run1")

    # Again: the staging tables are created anew with the same names (no clash of key names).
    publish(store, "run2", T2, users=4, offset=1.0)
    current = normalise(sql(store, "SELECT * FROM recommendations"))
    assert current == parquet_rows(store.parquet.path)
    assert {r[0] for r in current} == {"u0", "u1", "u2", "u3"} and {r[5] for r in current} == {"run2"}
    assert normalise(sql(store, "SELECT * FROM recommendations_previous")) == first
    assert parquet_rows(store.parquet.previous_path) == first
    publish(store, "run3", T2, users=2)  # the previous tables are dropped and replaced
    assert {r[5] for r in normalise(sql(store, "SELECT * FROM recommendations_previous"))} == {"run2"}

    inspector = sa.inspect(store.engine)
    names = set(inspector.get_table_names())
    assert {"recommendations", "popular_items", "runs", "recommendations_previous", "popular_items_previous"} <= names
    assert not {n for n in names if n.endswith("_staging")}
    for table, key in (("recommendations", ["user_id", "rank"]), ("recommendations_previous", ["user_id", "rank"]), ("popular_items", ["rank"])):
        assert inspector.get_pk_constraint(table)["constrained_columns"] == key, table
    columns = {c["name"]: c["type"] for c in inspector.get_columns("recommendations")}
    assert isinstance(columns["generated_at"], sa.DateTime) and columns["generated_at"].timezone
    assert isinstance(columns["score"], sa.Float) and isinstance(columns["rank"], sa.SmallInteger)
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO recommendations VALUES ('u0', 1, 'z', 0.0, 'x', now())")


def test_quotes_commas_newlines_and_unicode_survive_copy(pg_url, tmp_path):
    store = make_store(pg_url, tmp_path)
    odd = ['a "quoted", item', "line\nbreak", "", "José Ñandú 😀", "back\\slash", "tab\there"]
    table = pa.table(
        {
            "user_id": pa.array([f'user "{n}",\n' for n in range(len(odd))]),
            "rank": pa.array([1] * len(odd), pa.int16()),
            "item": pa.array(odd),
            "score": pa.array([0.1 + 0.2, 1 / 3, 1e-300, -0.0, 123456789.123456789, float(2**53)]),
            "reason": pa.array([f"because you redeemed {item}" for item in odd]),
        }
    )
    store.begin_run("run1", T1, "in.csv")
    store.publish("run1", T1, iter([table]), popular("run1"))
    got = sorted(sql(store, "SELECT user_id, item, score FROM recommendations"))
    expected = sorted(zip(table.column("user_id").to_pylist(), odd, table.column("score").to_pylist()))
    assert got == expected  # exact: floats round-trip through the CSV bytes


def test_runs_table_records_status_and_current(pg_url, tmp_path):
    import sqlalchemy as sa

    store = make_store(pg_url, tmp_path)
    publish(store, "run1", T1)
    publish(store, "run2", T2)
    store.begin_run("run3", T2 + timedelta(days=1), "in.csv")
    store.finish_run("run3", "failed", message="boom")
    with store.engine.connect() as conn:
        rows = {r.run_id: r for r in conn.execute(sa.select(store.runs.table))}
    assert {k: (r.status, r.is_current, r.message) for k, r in rows.items()} == {
        "run1": ("succeeded", False, None),
        "run2": ("succeeded", True, None),
        "run3": ("failed", False, "boom"),
    }
    assert json.loads(rows["run2"].metrics) == {"lists": 5}
    assert store.current_run() == "run2"

    from recsys.store.lookup import recent_runs

    runs = recent_runs(pg_url)
    assert [r["run_id"] for r in runs] == ["run3", "run2", "run1"]
    assert [r["is_current"] for r in runs] == [False, True, False]


def test_rollback_swaps_tables_and_parquet_back(pg_url, tmp_path):
    store = make_store(pg_url, tmp_path)
    with pytest.raises(StoreError, match="no previous run"):
        publish(store, "run1", T1, users=3)
        store.rollback()
    publish(store, "run2", T2, users=6)
    assert store.rollback() == ("run2", "run1")
    assert {r[5] for r in normalise(sql(store, "SELECT * FROM recommendations"))} == {"run1"}
    assert normalise(sql(store, "SELECT * FROM recommendations")) == parquet_rows(store.parquet.path)
    assert store.current_run() == "run1"
    assert sql(store, "SELECT DISTINCT run_id FROM popular_items") == [("run1",)]
    assert store.rollback() == ("run1", "run2")  # and back
    assert store.current_run() == "run2"
    assert {r[5] for r in normalise(sql(store, "SELECT * FROM recommendations"))} == {"run2"}
    # Publishing after rollbacks: key names still unique.
    publish(store, "run3", T2, users=2)
    assert store.current_run() == "run3"


def test_a_failed_load_leaves_the_published_tables_untouched(pg_url, tmp_path):
    store = make_store(pg_url, tmp_path)
    publish(store, "run1", T1, users=4)
    before = normalise(sql(store, "SELECT * FROM recommendations"))

    def failing():
        yield lists("run2", 3)
        raise OSError(28, "No space left on device")

    store.begin_run("run2", T2, "in.csv")
    with pytest.raises(StoreError, match="No space left"):
        store.publish("run2", T2, failing(), popular("run2"))
    assert normalise(sql(store, "SELECT * FROM recommendations")) == before
    assert store.current_run() == "run1"
    publish(store, "run3", T2, users=2)
    assert not [n for (n,) in sql(store, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()") if n.endswith("_staging")]


def test_readers_during_publishes_see_only_complete_sets(pg_url, tmp_path):
    """Lookups hammer the store from threads while runs publish and roll back: every answer is whole."""
    from recsys.store.lookup import lookup

    store = make_store(pg_url, tmp_path)
    publish(store, "run0", T1, users=50)
    stop = threading.Event()
    answers: list = []
    errors: list = []

    def reader():
        while not stop.is_set():
            try:
                answer = lookup("u1", pg_url)
                answers.append((answer.cold_start, answer.run_id, [r[0] for r in answer.rows], {r[1].split(" item ")[0] for r in answer.rows}))
            except Exception as exc:  # noqa: BLE001 - recorded and reported below
                errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for n in range(1, 6):
            publish(store, f"run{n}", T1 + timedelta(hours=n), users=50 if n % 2 else 20)
        store.rollback()
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not errors, errors[:3]
    assert len(answers) > 10
    for cold, run_id, ranks, runs in answers:
        assert not cold and ranks == list(range(1, TOP_K + 1)) and runs == {run_id}, (run_id, ranks, runs)
    assert len({a[1] for a in answers}) >= 2, "the readers never saw a swap"


def test_a_reader_blocked_by_the_swap_gets_the_new_complete_list(pg_url, tmp_path, monkeypatch):
    """A lookup started while the swap transaction is open waits for it, then reads the new run whole."""
    import sqlalchemy as sa

    from recsys.store.lookup import lookup
    from recsys.store.publish import Store

    store = make_store(pg_url, tmp_path)
    publish(store, "run1", T1)
    original = Store._swap
    results: list = []
    started = threading.Event()

    def read():
        started.set()
        results.append(lookup("u1", pg_url))

    def after_renames(conn, cursor, statement, *args):
        # Right after staging -> current inside the open swap transaction: start a reader.
        if statement.startswith("ALTER TABLE popular_items_staging RENAME") and not started.is_set():
            threading.Thread(target=read, daemon=True).start()
            started.wait(5)
            time.sleep(0.3)  # the reader is now waiting on the swap's lock
            assert not results, "a reader got through in the middle of the swap transaction"

    monkeypatch.setattr(Store, "_swap", original)
    sa.event.listen(store.engine, "after_cursor_execute", after_renames)
    publish(store, "run2", T2)
    sa.event.remove(store.engine, "after_cursor_execute", after_renames)
    deadline = time.time() + 10
    while not results and time.time() < deadline:
        time.sleep(0.05)
    assert started.is_set() and results
    (answer,) = results
    assert answer.run_id == "run2" and [r[0] for r in answer.rows] == list(range(1, TOP_K + 1))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RECSYS_DB_URL"}
    return subprocess.run([sys.executable, "-m", "recsys.cli", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def test_cli_lookup_known_and_unknown_user(pg_url, tmp_path):
    store = make_store(pg_url, tmp_path)
    publish(store, "run1", T1)
    known = run_cli("lookup", "u2", "--db-url", pg_url, "--json")
    assert known.returncode == 0, known.stderr
    answer = json.loads(known.stdout)
    assert answer["cold_start"] is False and answer["run_id"] == "run1"
    assert [r["rank"] for r in answer["recommendations"]] == list(range(1, TOP_K + 1))
    assert answer["recommendations"][0]["item"] == "run1 item 2"
    assert answer["generated_at"] == "2024-03-01T02:00:05.123456+00:00"  # ISO 8601 with its offset, as from SQLite

    unknown = run_cli("lookup", "nobody", "--db-url", pg_url, "--json")
    assert unknown.returncode == 0, unknown.stderr
    answer = json.loads(unknown.stdout)
    assert answer["cold_start"] is True and answer["run_id"] == "run1"
    assert answer["generated_at"] == "2024-03-01T02:00:05.123456+00:00"  # the start of the run that published it
    assert [r["item"] for r in answer["recommendations"]] == [f"run1 popular {k}" for k in range(TOP_K)]

    table = run_cli("lookup", "u2", "--db-url", pg_url)
    assert table.returncode == 0 and "run1 item 2" in table.stdout, table.stderr

    runs = run_cli("runs", "--db-url", pg_url)
    assert runs.returncode == 0 and "run1" in runs.stdout, runs.stderr


def test_cli_lookup_without_a_store_is_one_line(pg_url):
    done = run_cli("lookup", "u1", "--db-url", pg_url)
    assert done.returncode == 1
    assert "run `recsys run` first" in done.stderr and "Traceback" not in done.stderr
    assert "recsys:" not in pg_url.split("@")[0] or "recsys:recsys@" not in done.stderr  # no password shown


def test_lookup_is_quick(pg_url, tmp_path):
    from recsys.store.lookup import lookup

    store = make_store(pg_url, tmp_path)
    publish(store, "run1", T1, users=200)
    lookup("u1", pg_url)
    started = time.perf_counter()
    for _ in range(20):
        assert not lookup("u1", pg_url).cold_start
    assert (time.perf_counter() - started) / 20 < 0.2


@pytest.mark.slow
def test_the_flow_publishes_to_postgres(pg_url, prefect_test_harness, synthetic, tmp_path):
    from recsys.store.lookup import lookup

    summary, _, output = run_flow(synthetic, tmp_path, db_url=pg_url, epochs=2, ranking_epochs=2, evaluate=False)
    assert summary["db_url"].startswith("postgresql+psycopg://") and "recsys:recsys@" not in summary["db_url"]
    store = make_store(pg_url, tmp_path)
    rows = normalise(sql(store, "SELECT * FROM recommendations"))
    assert rows == parquet_rows(output / "recommendations.parquet")
    users = {r[0] for r in rows}
    assert users == set(synthetic.user_group)
    assert len(rows) == len(users) * TOP_K
    assert {r[5] for r in rows} == {summary["run_id"]}
    assert store.current_run() == summary["run_id"]
    assert not (output / "recsys.db").exists()  # nothing went to the default SQLite store
    answer = lookup("1", pg_url)
    assert not answer.cold_start and answer.run_id == summary["run_id"] and len(answer.rows) == TOP_K


# --- the database's own run lock --------------------------------------------------------------------


def test_a_second_store_on_the_same_database_waits_for_none_and_is_refused(pg_url, tmp_path):
    """Two output folders (or hosts), one PostgreSQL store: the advisory lock lets one publish."""
    from recsys.store.publish import Store

    first, second = Store(pg_url, tmp_path / "a"), Store(pg_url, tmp_path / "b")
    with first.lock():
        started = time.perf_counter()
        with pytest.raises(StoreError, match="another recsys run is already publishing to this database") as refused:
            with second.lock():
                pass
        assert time.perf_counter() - started < 5
        message = str(refused.value)
        assert f"pid {os.getpid()}" in message and "recsys:recsys@" not in message and "\n" not in message
    with second.lock():  # released with the block
        pass


def test_the_lock_is_per_schema(pg_url, server_url, tmp_path):
    """Each schema is a store of its own: a run in one does not hold up a run in another."""
    import psycopg

    from recsys.store.lookup import _postgres_params
    from recsys.store.publish import Store

    schema = f"recsys_test_{secrets.token_hex(4)}"
    with psycopg.connect(**_postgres_params(server_url), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        separator = "&" if "?" in server_url else "?"
        other = f"{server_url}{separator}options={quote(f'-csearch_path={schema}')}"
        with Store(pg_url, tmp_path / "a").lock(), Store(other, tmp_path / "b").lock():
            pass
    finally:
        with psycopg.connect(**_postgres_params(server_url), autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.mark.slow
def test_a_run_into_a_database_another_run_publishes_to_fails_at_once_and_marks_nothing(pg_url, prefect_test_harness, synthetic, tmp_path):
    """The other run (another output folder) is running: this one refuses before recording a run,
    so the other's row stays 'running' instead of being marked failed under it."""
    import sqlalchemy as sa

    from recsys.store.publish import Store

    other = Store(pg_url, tmp_path / "other")
    publish(other, "run0", T1)
    with other.lock():
        other.begin_run("run1", T2, "in.csv")
        with pytest.raises(StoreError, match="another recsys run is already publishing to this database"):
            run_flow(synthetic, tmp_path, db_url=pg_url, epochs=1, ranking_epochs=1, evaluate=False)
        with other.engine.connect() as conn:
            rows = dict(conn.execute(sa.text("SELECT run_id, status FROM runs")).fetchall())
        assert rows == {"run0": "succeeded", "run1": "running"}
    assert other.current_run() == "run0"


def _terminate(server_url: str, pid: int) -> None:
    import psycopg

    from recsys.store.lookup import _postgres_params

    with psycopg.connect(**_postgres_params(server_url), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_run_whose_lock_was_taken_over_publishes_nothing(pg_url, server_url, tmp_path):
    """The lock's connection dropped and another run took the lock: the first run's publish is refused."""
    from recsys.store.publish import Store

    store = Store(pg_url, tmp_path / "a")
    publish(store, "run1", T1)
    with store.lock():
        _terminate(server_url, store._lock.pid)
        time.sleep(0.2)
        with Store(pg_url, tmp_path / "b").lock():
            store.begin_run("run2", T2, "in.csv")
            with pytest.raises(StoreError, match="another recsys run is already publishing"):
                store.publish("run2", T2, iter([lists("run2", 3)]), popular("run2"))
    assert store.current_run() == "run1"
    assert {r[5] for r in sql(store, "SELECT * FROM recommendations")} == {"run1"}


def test_a_run_whose_lock_connection_dropped_takes_it_again_and_publishes(pg_url, server_url, tmp_path):
    from recsys.store.publish import Store

    store = Store(pg_url, tmp_path / "a")
    with store.lock():
        _terminate(server_url, store._lock.pid)
        time.sleep(0.2)
        publish(store, "run1", T1)
        with pytest.raises(StoreError, match="another recsys run"):
            with Store(pg_url, tmp_path / "b").lock():
                pass
    assert store.current_run() == "run1"
