"""Never lose or corrupt the published recommendations.

SIGKILL at random moments of a real `recsys run`, a crash between the SQL commit and the Parquet
rename (and in the middle of a rollback), readers during a publish, the run lock, rollback, bad
input through `recsys run`, and `recsys lookup` arguments treated as data.

What is already covered elsewhere (loader messages one by one in test_data.py, the store's happy
path in test_store.py, lookup by function in test_lookup.py, one bad file through the CLI in
test_flow.py) is not repeated; these tests go through the command line and check the store.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import HEADER, csv_text, list_table, popular_list, run_flow
from recsys.cli.app import app
from recsys.errors import StoreError
from recsys.settings import RunOptions, resolve_db_url

REPO = Path(__file__).resolve().parents[1]
TOP_K = 12
RUN_ARGS = ["--no-evaluate", "--epochs", "1", "--ranking-epochs", "1"]
FLOW_ARGS = dict(epochs=1, ranking_epochs=1, evaluate=False)
STAGED = ".recommendations.*.parquet.tmp"
T1 = datetime(2024, 3, 1, 2, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def no_db_url_env(monkeypatch):
    monkeypatch.delenv("RECSYS_DB_URL", raising=False)


# --- helpers ------------------------------------------------------------------------------------


def cli_env() -> dict[str, str]:
    """Environment for a `recsys` subprocess: the session's Prefect server (no 5 s temporary one)."""
    from prefect.settings import get_current_settings

    env = {k: v for k, v in os.environ.items() if k != "RECSYS_DB_URL"}
    env.update(
        PREFECT_API_URL=str(get_current_settings().api.url),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    return env


def recsys_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "recsys.cli", *args]


def ro(db: Path) -> sqlite3.Connection:
    """A read-only connection, as `recsys lookup` opens the store."""
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)


def read_sql(db: Path, query: str, params=()) -> list[tuple]:
    conn = ro(db)
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


def runs_rows(db: Path) -> dict[str, dict]:
    if not db.exists():
        return {}
    rows = read_sql(db, "SELECT run_id, status, is_current, finished_at, metrics, message FROM runs")
    return {
        r[0]: dict(status=r[1], is_current=bool(r[2]), finished_at=r[3], metrics=json.loads(r[4]) if r[4] else {}, message=r[5])
        for r in rows
    }


def sql_lists(db: Path, table: str = "recommendations") -> list[tuple]:
    return sorted(read_sql(db, f"SELECT user_id, rank, item, score, run_id FROM {table}"))


def parquet_lists(path: Path) -> list[tuple]:
    table = pq.read_table(path, columns=["user_id", "rank", "item", "score", "run_id"])
    data = table.to_pydict()
    return sorted(zip(data["user_id"], map(int, data["rank"]), data["item"], data["score"], data["run_id"]))


def same_rows(a: list[tuple], b: list[tuple]) -> bool:
    """Equal (user, rank, item, run) and scores within 1e-9."""
    if len(a) != len(b):
        return False
    return all(
        x[:3] == y[:3] and x[4] == y[4] and abs(float(x[3]) - float(y[3])) <= 1e-9 for x, y in zip(a, b)
    )


def check_sql(output: Path, customers: set[str] | None = None, top_k: int = TOP_K) -> tuple[str, list[tuple]]:
    """The SQL side is whole: integrity ok, ranks 1..k per customer, one run, the run `runs` marks current."""
    db = output / "recsys.db"
    assert read_sql(db, "PRAGMA integrity_check") == [("ok",)]
    rows = sql_lists(db)
    ranks: dict[str, list[int]] = {}
    for user, rank, *_ in rows:
        ranks.setdefault(user, []).append(rank)
    bad = {u: r for u, r in ranks.items() if r != list(range(1, top_k + 1))}
    assert not bad, list(bad.items())[:3]
    if customers is not None:
        assert set(ranks) == customers
    run_ids = {r[4] for r in rows}
    assert len(run_ids) == 1, run_ids
    (run_id,) = run_ids
    current = read_sql(db, "SELECT run_id FROM runs WHERE is_current")
    assert current == [(run_id,)], f"recommendations hold run {run_id}, runs marks {current} current"
    popular = read_sql(db, "SELECT rank, run_id FROM popular_items ORDER BY rank")
    assert [r[0] for r in popular] == list(range(1, len(popular) + 1)) and len(popular) >= 1
    assert {r[1] for r in popular} == {run_id}
    return run_id, rows


def check_store(output: Path, customers: set[str] | None = None) -> str:
    """SQL whole (check_sql) and the Parquet file holding exactly the same rows."""
    run_id, rows = check_sql(output, customers)
    assert same_rows(parquet_lists(output / "recommendations.parquet"), rows), "Parquet differs from SQL"
    return run_id


def checkpoint(db: Path) -> None:
    """Fold the WAL into the database file, so its bytes are the whole store."""
    conn = sqlite3.connect(db, timeout=30)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def table_digest(db: Path, table: str) -> str:
    names = {r[0] for r in read_sql(db, "SELECT name FROM sqlite_master WHERE type='table'")}
    if table not in names:
        return "absent"
    rows = sorted(read_sql(db, f"SELECT * FROM {table}"), key=repr)
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def fingerprint(output: Path) -> dict[str, str]:
    """Hashes of everything published: the database file, its tables' content, the Parquet files."""
    db = output / "recsys.db"
    checkpoint(db)
    out = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(output.iterdir())
        if p.is_file() and not p.name.endswith(("-wal", "-shm")) and p.name != ".recsys.lock"
    }
    for table in ("recommendations", "popular_items", "recommendations_previous", "popular_items_previous", "runs"):
        out[f"table {table}"] = table_digest(db, table)
    return out


def published_part(fp: dict[str, str]) -> dict[str, str]:
    """What readers see: the lists tables and the Parquet files (not the runs log or the db bytes)."""
    return {k: v for k, v in fp.items() if "parquet" in k or k.startswith("table ") and "runs" not in k}


def copy_store(output: Path, dest: Path) -> Path:
    checkpoint(output / "recsys.db")
    shutil.copytree(output, dest, ignore=shutil.ignore_patterns("*-wal", "*-shm", "logs"))
    return dest


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def lookup_json(output: Path, user: str) -> dict:
    result = CliRunner().invoke(app, ["lookup", user, "--output", str(output), "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def assert_full_list(payload: dict) -> None:
    recs = payload["recommendations"]
    assert [r["rank"] for r in recs] == list(range(1, TOP_K + 1)), payload
    assert len({r["item"] for r in recs}) == TOP_K
    assert payload["run_id"]


# --- a published store shared by the module (one in-process flow run on the small export) --------


@pytest.fixture(scope="module")
def published(prefect_test_harness, synthetic, tmp_path_factory):
    """(export csv, output folder, run id) after one successful run; copy before changing it."""
    summary, data, output = run_flow(synthetic, tmp_path_factory.mktemp("published"), **FLOW_ARGS)
    assert summary["status"] == "succeeded"
    return data, output, summary["run_id"]


@pytest.fixture
def store_copy(published, tmp_path) -> Path:
    return copy_store(published[1], tmp_path / "out")


# ==================================================================================================
# 1. SIGKILL at random moments of a real `recsys run`
# ==================================================================================================

KILL_TRIALS = 8  # 2 of them aimed at publishing; about 120 s in all on the 2-core machine


@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_or_corrupts_the_lists(prefect_test_harness, tmp_path):
    from recsys.store.lookup import lookup
    from recsys.store.parquet import parquet_run_id
    from recsys.store.publish import Store
    from recsys.synthetic.generate import generate_export, write_export

    frame = generate_export(customers=3000, items=120, seed=1)
    data = write_export(frame, tmp_path / "export.csv")
    customers = set(frame["ID_CLIENTE"].str.strip())
    output = tmp_path / "out"
    db = output / "recsys.db"
    env = cli_env()
    cmd = recsys_cmd("run", *RUN_ARGS, "--data", str(data), "--output", str(output))

    # A previous store, and how long a whole run takes.
    started = time.perf_counter()
    first = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=False, timeout=300)
    full = time.perf_counter() - started
    assert first.returncode == 0, first.stderr[-3000:]
    # The subprocess used the session's Prefect server, not a temporary one of its own.
    assert "Starting temporary server" not in first.stdout + first.stderr
    check_store(output, customers)
    (first_run,) = runs_rows(db)
    publish_seconds = runs_rows(db)[first_run]["metrics"]["seconds"]["publish"]

    rng = random.Random(1234)
    phases: Counter[str] = Counter()
    left_running: set[str] = set()  # killed runs still marked 'running'
    killed_runs: set[str] = set()
    repaired_copies = 0
    for trial in range(KILL_TRIALS):
        before = runs_rows(db)
        staged_before = set(output.glob(STAGED))
        # Every fourth trial aims at the publish phase; the others kill at a random moment of the
        # first 70% (a run costs ~12 s whatever the data size).
        targeted = trial % 4 == 3
        errors = tmp_path / f"trial-{trial}.stderr"
        with open(errors, "wb") as stderr:
            proc = subprocess.Popen(
                cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
            )
        try:
            if targeted:
                # The run's staged Parquet file appears when publishing starts; kill within ~1.3x the publish time.
                deadline = time.monotonic() + 3 * full
                while proc.poll() is None and time.monotonic() < deadline and not set(output.glob(STAGED)) - staged_before:
                    time.sleep(0.005)
                time.sleep(rng.uniform(0, 1.3 * publish_seconds))
            else:
                time.sleep(rng.uniform(0.02, 0.7) * full)
        finally:
            exited = proc.poll() is not None
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=60)
        if exited:
            said = errors.read_text(errors="replace").strip().splitlines()[-5:]
            assert proc.returncode == 0, f"trial {trial}: the run failed by itself (exit {proc.returncode}): {said}"

        after = runs_rows(db)
        new = [run for run in after if run not in before]
        assert len(new) <= 1, new
        sql_run, rows = check_sql(output, customers)
        parquet_ok = same_rows(parquet_lists(output / "recommendations.parquet"), rows)
        if not new:
            phase = "before begin_run (load, lock, reconcile)"
        else:
            killed = new[0]
            killed_runs.add(killed)
            row = after[killed]
            if row["is_current"]:
                # Past the swap: its lists are published and its status was committed with them.
                assert row["status"] == "succeeded", row
                assert sql_run == killed
                if not parquet_ok:
                    phase = "between the SQL swap and the Parquet rename"
                elif exited or "publish" in row["metrics"].get("seconds", {}):
                    phase = "after publish (finish_run / exit)"
                else:
                    phase = "after the Parquet rename, before finish_run"
            else:
                assert row["status"] == "running" and row["finished_at"] is None, row
                assert sql_run != killed
                staged = output / f".recommendations.{killed}.parquet.tmp"
                phase = "publish: staging (before the swap)" if staged.exists() else "training / scoring"
            # A run that got as far as begin_run marks the runs killed before it as failed.
            for earlier in left_running:
                assert after[earlier]["status"] == "failed", (earlier, after[earlier])
                assert "interrupted" in (after[earlier]["message"] or "")
            left_running = {killed} if after[killed]["status"] == "running" else set()
        phases[phase] += 1
        if not parquet_ok:
            # Only allowed in the documented window: the current run's staged file is still there,
            # and reconcile (what the next run does first) moves it into place.
            staged = output / f".recommendations.{sql_run}.parquet.tmp"
            assert staged.exists(), f"trial {trial}: Parquet differs from SQL and no staged file of {sql_run}"
            repair = copy_store(output, tmp_path / f"repair{trial}")
            Store(resolve_db_url(repair), repair).reconcile()
            assert parquet_run_id(repair / "recommendations.parquet") == sql_run
            check_store(repair, customers)
            repaired_copies += 1
        # A reader gets a whole list of the current run.
        answer = lookup(sorted(customers)[trial], resolve_db_url(output))
        assert not answer.cold_start and [r[0] for r in answer.rows] == list(range(1, TOP_K + 1))
        assert answer.run_id == sql_run

    # The next run completes, repairs whatever a kill left, and marks the killed runs failed.
    final = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=False, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    current = check_store(output, customers)
    runs = runs_rows(db)
    assert [r for r, v in runs.items() if v["is_current"]] == [current]
    assert runs[current]["status"] == "succeeded"
    assert not [r for r, v in runs.items() if v["status"] == "running"]
    for run in killed_runs:
        assert runs[run]["status"] in ("failed", "succeeded"), (run, runs[run])
    stale = sorted(p.name for p in output.glob(STAGED))
    print(
        f"\nkill trials (full run {full:.1f}s, publish {publish_seconds:.1f}s): {dict(phases)}; "
        f"Parquet repaired on a copy in {repaired_copies} trials; staged files left by killed runs: {len(stale)}"
    )


# ==================================================================================================
# 2. A crash between the two commits (SQL swap, then Parquet rename) and inside a rollback
# ==================================================================================================


def hand_lists(run: str, users: int = 5) -> pa.Table:
    return list_table(
        [(f"u{u}", k + 1, f"{run} item {(u * 7 + k) % 50}", 1.0 - k / 100) for u in range(users) for k in range(TOP_K)]
    )


def hand_popular(run: str) -> pa.Table:
    return popular_list(run, TOP_K)


def hand_publish(store, run: str, users: int = 5) -> None:
    store.begin_run(run, T1, "in.csv")
    store.publish(run, T1, iter([hand_lists(run, users)]), hand_popular(run))
    store.finish_run(run, metrics={"lists": users})


@pytest.fixture
def two_runs(tmp_path):
    """A store with run1 then run2 published (run2 current, run1 kept as previous)."""
    from recsys.store.publish import Store

    output = tmp_path / "out"
    store = Store(resolve_db_url(output), output)
    hand_publish(store, "run1")
    hand_publish(store, "run2")
    return store


def test_parquet_rename_failing_after_the_sql_swap_is_repaired_by_reconcile(tmp_path, monkeypatch):
    import recsys.store.parquet
    from recsys.store.parquet import parquet_run_id
    from recsys.store.publish import Store

    output = tmp_path / "out"
    store = Store(resolve_db_url(output), output)
    hand_publish(store, "run1")
    run1_parquet = store.parquet.path.read_bytes()

    def crash(*_args, **_kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(recsys.store.parquet, "replace_keeping_previous", crash)
    store.begin_run("run2", T1, "in.csv")
    # Published all the same (the SQL swap committed); the pending rename is reported, not raised.
    published = store.publish("run2", T1, iter([hand_lists("run2", users=7)]), hand_popular("run2"))
    assert "Parquet not yet renamed into place" in published.parquet_pending
    monkeypatch.undo()

    # The SQL swap is the commit point: SQL holds run2 and says so; the Parquet file is still run1's.
    run_id, _ = check_sql(output)
    assert run_id == "run2"
    assert runs_rows(output / "recsys.db")["run2"]["status"] == "succeeded"
    assert store.parquet.path.read_bytes() == run1_parquet
    assert (output / ".recommendations.run2.parquet.tmp").exists()

    # What the next run does first: the staged file goes into place, run1's becomes the previous one.
    assert "run2" in Store(resolve_db_url(output), output).reconcile()
    assert check_store(output) == "run2"
    assert parquet_run_id(store.parquet.previous_path) == "run1"
    assert not list(output.glob(STAGED))
    assert Store(resolve_db_url(output), output).reconcile() is None  # idempotent


@pytest.mark.slow
def test_flow_whose_parquet_rename_fails_keeps_runs_consistent_and_next_run_repairs(published, tmp_path, monkeypatch):
    """Through the flow: the run whose lists are current must not be recorded as failed."""
    import recsys.store.parquet
    from flows.nightly import nightly

    data, _, previous_run = published
    output = copy_store(published[1], tmp_path / "out")

    def crash(*_args, **_kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(recsys.store.parquet, "replace_keeping_previous", crash)
    # The lists are published once the SQL swap commits; the rename is left to the next run.
    crashed = nightly(RunOptions(data=data, output=output, **FLOW_ARGS))
    monkeypatch.undo()
    sql_run, _ = check_sql(output)
    assert sql_run == crashed["run_id"]
    assert sql_run != previous_run  # the swap committed: SQL holds the new run
    after_crash = runs_rows(output / "recsys.db")[sql_run]

    summary = nightly(RunOptions(data=data, output=output, **FLOW_ARGS))
    assert summary["repaired"] and sql_run in summary["repaired"]
    assert check_store(output) == summary["run_id"]
    assert pq.read_schema(output / "recommendations.previous.parquet").metadata[b"run_id"].decode() == sql_run

    # The runs table must agree with the lists: a run whose lists were swapped in is not "failed".
    assert after_crash["is_current"] is True
    assert after_crash["status"] in ("succeeded", "degraded"), (
        f"run {sql_run} is current (its lists are published) but recorded as {after_crash['status']!r}: "
        f"{after_crash['message']}"
    )


class _FailingReplace:
    """Stands in for the ``os`` module in recsys.store.parquet: the n-th os.replace raises (a crash there)."""

    def __init__(self, fail_at: int):
        self.fail_at = fail_at
        self.calls = 0

    def replace(self, src, dst):
        self.calls += 1
        if self.calls == self.fail_at:
            raise OSError(errno.EIO, "Input/output error (simulated crash)")
        return os.replace(src, dst)

    def __getattr__(self, name):
        return getattr(os, name)


def interrupted_rollback(store, monkeypatch, fail_at: int) -> None:
    import recsys.store.parquet

    monkeypatch.setattr(recsys.store.parquet, "os", _FailingReplace(fail_at))
    with pytest.raises((OSError, StoreError)):
        store.rollback()
    monkeypatch.undo()


@pytest.mark.parametrize("fail_at", [1, 2, 3], ids=["1st-rename", "2nd-rename", "3rd-rename"])
def test_rollback_interrupted_in_its_file_swap_is_repaired_by_reconcile(two_runs, monkeypatch, fail_at):
    from recsys.store.parquet import parquet_run_id
    from recsys.store.publish import Store

    store = two_runs
    output = store.output
    interrupted_rollback(store, monkeypatch, fail_at)
    run_id, _ = check_sql(output)
    assert run_id == "run1"  # the SQL side of the rollback committed

    Store(resolve_db_url(output), output).reconcile()
    assert check_store(output) == "run1"
    assert parquet_run_id(store.parquet.previous_path) == "run2", "run2's Parquet file is no longer the previous one"
    assert not (output / ".recommendations.swap.parquet.tmp").exists()

    # Rolling back again returns to run2, in SQL and in Parquet.
    Store(resolve_db_url(output), output).rollback()
    assert check_store(output) == "run2"
    assert parquet_run_id(store.parquet.previous_path) == "run1"


@pytest.mark.parametrize("fail_at", [1, 2, 3], ids=["1st-rename", "2nd-rename", "3rd-rename"])
def test_recsys_rollback_after_an_interrupted_rollback_leaves_sql_and_parquet_agreeing(two_runs, monkeypatch, fail_at):
    """The operator runs `recsys rollback` again (no nightly run in between to reconcile)."""
    output = two_runs.output
    interrupted_rollback(two_runs, monkeypatch, fail_at)
    result = CliRunner().invoke(app, ["rollback", "--output", str(output)])
    assert result.exit_code == 0, result.output
    current = check_store(output)  # whichever run is current, the Parquet file holds it
    assert current in ("run1", "run2")


def test_recsys_rollback_with_a_failing_file_swap_is_one_line(two_runs, monkeypatch, capfd):
    import recsys.store.parquet

    monkeypatch.setattr(recsys.store.parquet, "os", _FailingReplace(1))
    result = CliRunner().invoke(app, ["rollback", "--output", str(two_runs.output)])
    captured = capfd.readouterr()
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert len(error_lines(result.stderr)) == 1, result.stderr
    assert "Traceback" not in result.output + captured.out + captured.err


def test_an_error_inside_the_table_swap_leaves_the_previous_lists_whole(two_runs, monkeypatch):
    """The swap is one transaction: if it fails half-way, nothing of it is visible."""
    import sqlalchemy as sa

    from recsys.store.publish import Store

    output = two_runs.output
    store = Store(resolve_db_url(output), output)
    before = sql_lists(output / "recsys.db")

    def fail_second_rename(conn, cursor, statement, *args):
        if statement.strip() == "ALTER TABLE recommendations_staging RENAME TO recommendations":
            raise RuntimeError("simulated crash inside the swap")

    sa.event.listen(store.engine, "before_cursor_execute", fail_second_rename)
    store.begin_run("run3", T1, "in.csv")
    with pytest.raises(RuntimeError):
        store.publish("run3", T1, iter([hand_lists("run3")]), hand_popular("run3"))
    sa.event.remove(store.engine, "before_cursor_execute", fail_second_rename)

    names = {r[0] for r in read_sql(output / "recsys.db", "SELECT name FROM sqlite_master WHERE type='table'")}
    assert "recommendations" in names, f"the current lists table is gone after a failed swap: {sorted(names)}"
    assert sql_lists(output / "recsys.db") == before
    assert check_store(output) == "run2"


# ==================================================================================================
# 3. Readers during a publish
# ==================================================================================================


def test_a_reader_at_every_step_of_the_swap_sees_a_whole_list(two_runs, monkeypatch):
    """Deterministic overlap: a lookup after each statement of the swap transaction."""
    import sqlalchemy as sa

    from recsys.store.lookup import lookup
    from recsys.store.publish import Store

    output = two_runs.output
    store = Store(resolve_db_url(output), output)
    url = resolve_db_url(output)
    in_swap = threading.Event()
    seen: list[tuple[str, object]] = []
    original_swap = Store._swap

    def traced_swap(self, *args, **kwargs):
        in_swap.set()
        try:
            return original_swap(self, *args, **kwargs)
        finally:
            in_swap.clear()

    def read_after(conn, cursor, statement, *args):
        if in_swap.is_set():
            try:
                answer = lookup("u1", url)
                seen.append((statement, (answer.run_id, [r[0] for r in answer.rows])))
            except StoreError as exc:
                seen.append((statement, exc))

    monkeypatch.setattr(Store, "_swap", traced_swap)
    sa.event.listen(store.engine, "after_cursor_execute", read_after)
    store.begin_run("run3", T1, "in.csv")
    store.publish("run3", T1, iter([hand_lists("run3")]), hand_popular("run3"))
    sa.event.remove(store.engine, "after_cursor_execute", read_after)

    assert len(seen) >= 4
    failures = [(s, r) for s, r in seen if isinstance(r, Exception)]
    assert not failures, f"lookups during the swap failed: {failures}"
    for _, (run_id, ranks) in seen:
        assert run_id in ("run2", "run3") and ranks == list(range(1, TOP_K + 1))
    # Inside the uncommitted swap a reader still sees the previous run (and its runs row).
    assert {r[1][0] for r in seen} == {"run2"}, seen
    assert check_store(output) == "run3"


PUBLISHER = r"""
import json, sys, time
from datetime import datetime, timezone
from pathlib import Path
import pyarrow as pa
import sqlalchemy as sa
from recsys.settings import resolve_db_url
from recsys.store.publish import Store

output, users, runs, hold = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(","), float(sys.argv[4])
store = Store(resolve_db_url(output), output)
in_swap = [False]
original = Store._swap

def swap(self, *args, **kwargs):
    in_swap[0] = True
    print(json.dumps({"swap_start": time.time()}), flush=True)
    try:
        return original(self, *args, **kwargs)
    finally:
        in_swap[0] = False
        print(json.dumps({"swap_end": time.time()}), flush=True)

def slow_commit(conn):
    if in_swap[0]:
        time.sleep(hold)  # a slow disk at the commit of the swap: readers must not notice

Store._swap = swap
sa.event.listen(store.engine, "commit", slow_commit)
now = datetime.now(timezone.utc)
for run in runs:
    user_ids, ranks, items, scores = [], [], [], []
    for u in range(users):
        for k in range(12):
            user_ids.append(f"c{u}"); ranks.append(k + 1); items.append(f"{run} item {(u * 13 + k) % 500}"); scores.append(1.0 - k / 100)
    lists = pa.table({"user_id": user_ids, "rank": pa.array(ranks, pa.int16()), "item": items, "score": scores, "reason": ["popular lately"] * len(items)})
    popular = pa.table({"rank": pa.array(range(1, 13), pa.int16()), "item": [f"{run} popular {k}" for k in range(12)], "score": [float(12 - k) for k in range(12)], "reason": ["popular lately"] * 12})
    store.begin_run(run, now, "publisher")
    store.publish(run, now, iter([lists]), popular)
    store.finish_run(run, metrics={"lists": users})
    time.sleep(0.2)
"""


def expected_items(run_id: str, user: str) -> list[str]:
    if user.startswith("c"):
        u = int(user[1:])
        return [f"{run_id} item {(u * 13 + k) % 500}" for k in range(TOP_K)]
    return [f"{run_id} popular {k}" for k in range(TOP_K)]


@pytest.mark.slow
def test_lookups_while_a_run_publishes_always_get_a_whole_list(tmp_path):
    from recsys.store.lookup import lookup

    users = 4_000
    script = tmp_path / "publisher.py"
    script.write_text(PUBLISHER)
    output = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "RECSYS_DB_URL"}
    first = subprocess.run(
        [sys.executable, str(script), str(output), str(users), "p1", "0"], env=env, cwd=REPO, capture_output=True, text=True, check=False, timeout=120
    )
    assert first.returncode == 0, first.stderr
    url = resolve_db_url(output)
    publisher = subprocess.Popen(
        [sys.executable, str(script), str(output), str(users), "p2,p3,p4", "0.3"],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    script_path = Path(sys.executable).with_name("recsys")  # the venv's entry point, as an operator runs it
    lookup_cmd = [str(script_path)] if script_path.exists() else [sys.executable, "-m", "recsys.cli"]
    stop = threading.Event()
    cli_answers: list[tuple[float, float, str, subprocess.CompletedProcess]] = []
    reads: list[tuple[float, float, str, object]] = []

    def cli_reader(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            user = rng.choice([f"c{rng.randrange(users)}", "not-a-customer"])
            t0 = time.time()
            done = subprocess.run(
                [*lookup_cmd, "lookup", user, "--output", str(output), "--json"],
                env=env, cwd=REPO, capture_output=True, text=True, check=False, timeout=60,
            )
            cli_answers.append((t0, time.time(), user, done))

    def function_reader() -> None:
        rng = random.Random(7)
        while not stop.is_set():
            user = f"c{rng.randrange(users)}"
            t0 = time.time()
            try:
                answer = lookup(user, url)
            except Exception as exc:  # noqa: BLE001 - recorded and asserted on below
                answer = exc
            reads.append((t0, time.time(), user, answer))
            time.sleep(0.001)

    threads = [threading.Thread(target=cli_reader, args=(s,)) for s in (1, 2)] + [threading.Thread(target=function_reader)]
    for thread in threads:
        thread.start()
    try:
        out, err = publisher.communicate(timeout=60)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=90)
        if publisher.poll() is None:
            publisher.kill()
    assert publisher.returncode == 0, err[-3000:]
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    windows = [(a["swap_start"], b["swap_end"]) for a, b in zip(events[::2], events[1::2])]
    assert len(windows) == 3

    failed = [(user, d.returncode, d.stderr.strip()[-300:]) for _, _, user, d in cli_answers if d.returncode != 0]
    assert not failed, f"{len(failed)} of {len(cli_answers)} lookups failed: {failed[:3]}"
    for _, _, user, done in cli_answers:
        payload = json.loads(done.stdout)
        assert_full_list(payload)
        assert payload["run_id"] in ("p1", "p2", "p3", "p4")
        assert [r["item"] for r in payload["recommendations"]] == expected_items(payload["run_id"], user.strip())
        assert payload["cold_start"] == (user == "not-a-customer")
    errors = [(u, a) for _, _, u, a in reads if isinstance(a, Exception)]
    assert not errors, f"{len(errors)} of {len(reads)} in-process lookups failed: {errors[:3]}"
    order = {"p1": 1, "p2": 2, "p3": 3, "p4": 4}
    for _, _, user, answer in reads:
        assert [r[0] for r in answer.rows] == list(range(1, TOP_K + 1))
        assert [r[1] for r in answer.rows] == expected_items(answer.run_id, user)
    sequence = [order[a.run_id] for *_, a in sorted(reads, key=lambda r: r[0])]
    assert sequence == sorted(sequence), "a reader saw an older run after a newer one"

    overlapping = sum(any(t0 < s1 and t1 > s0 for s0, s1 in windows) for t0, t1, *_ in cli_answers)
    inside = [(t0, a.run_id) for t0, t1, _, a in reads for s0, s1 in windows if s0 < t0 and t1 < s1]
    print(
        f"\n{len(cli_answers)} CLI lookups ({overlapping} overlapping a swap window), "
        f"{len(reads)} in-process lookups ({len(inside)} inside a swap window)"
    )
    assert overlapping >= 1 and inside, "no lookup overlapped a swap: the test proved nothing"


# ==================================================================================================
# 4. The run lock
# ==================================================================================================

HOLDER = (
    "import sys, time\nfrom pathlib import Path\nfrom recsys.store.lock import run_lock\n"
    "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(600)\n"
)


@pytest.mark.slow
def test_a_second_run_on_a_locked_output_exits_1_and_changes_nothing(published, store_copy, capfd):
    from recsys.store.lock import run_lock

    data, _, _ = published
    output = store_copy
    before = fingerprint(output)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(output)], cwd=REPO, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        result = CliRunner().invoke(app, ["run", "--data", str(data), "--output", str(output), *RUN_ARGS])
        captured = capfd.readouterr()
        assert result.exit_code == 1, result.output
        errors = error_lines(result.stderr)
        assert len(errors) == 1, result.stderr
        assert "another recsys run is already publishing here" in errors[0]
        assert f"pid {holder.pid}" in errors[0], errors[0]
        assert "Traceback" not in result.output + captured.out + captured.err
        rollback = CliRunner().invoke(app, ["rollback", "--output", str(output)])
        assert rollback.exit_code == 1 and "another recsys run" in rollback.stderr
        after = fingerprint(output)
        assert after == before
    finally:
        try:
            os.killpg(holder.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        holder.wait(timeout=30)
    # The kernel released the dead holder's lock.
    with run_lock(output):
        pass


# ==================================================================================================
# 5. Rollback through the command line
# ==================================================================================================


@pytest.mark.slow
def test_recsys_rollback_swaps_between_the_last_two_runs(published, store_copy, synthetic, tmp_path):
    from flows.nightly import nightly

    _, _, run_a = published
    output = store_copy
    db = output / "recsys.db"
    lists_a = sql_lists(db)
    parquet_a = (output / "recommendations.parquet").read_bytes()
    # Run B: ten customers fewer, another seed, so its lists differ.
    data_b = tmp_path / "b.csv"
    data_b.write_text(csv_text([r for r in synthetic.rows if int(r[0]) > 10]))
    run_b = nightly(RunOptions(data=data_b, output=output, seed=7, **FLOW_ARGS))["run_id"]
    lists_b = sql_lists(db)
    assert lists_b != lists_a and check_store(output) == run_b

    result = CliRunner().invoke(app, ["rollback", "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert run_a in result.stdout
    assert check_store(output) == run_a
    assert sql_lists(db) == lists_a
    assert (output / "recommendations.parquet").read_bytes() == parquet_a
    assert [r for r, v in runs_rows(db).items() if v["is_current"]] == [run_a]
    assert lookup_json(output, "1")["run_id"] == run_a
    assert runs_rows(db)[run_b]["message"].startswith("rolled back at ")

    result = CliRunner().invoke(app, ["rollback", "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert check_store(output) == run_b
    assert sql_lists(db) == lists_b
    assert [r for r, v in runs_rows(db).items() if v["is_current"]] == [run_b]
    # The rollback undone: the current run no longer says it was rolled back; the other one does.
    runs = runs_rows(db)
    assert not (runs[run_b]["message"] or "").startswith("rolled back"), runs[run_b]["message"]
    assert runs[run_a]["message"].startswith("rolled back at ")


def test_recsys_rollback_with_one_run_or_no_store_exits_1(published, store_copy, tmp_path):
    before = fingerprint(store_copy)
    result = CliRunner().invoke(app, ["rollback", "--output", str(store_copy)])
    assert result.exit_code == 1
    assert len(error_lines(result.stderr)) == 1 and "no previous run" in result.stderr, result.stderr
    assert fingerprint(store_copy) == before

    empty = tmp_path / "nothing-here"
    result = CliRunner().invoke(app, ["rollback", "--output", str(empty)])
    assert result.exit_code == 1
    assert len(error_lines(result.stderr)) == 1 and "no store at" in result.stderr, result.stderr
    assert not empty.exists() or not any(empty.iterdir())


# ==================================================================================================
# 6. Bad input through `recsys run`, against an output holding a published store
# ==================================================================================================

GOOD_ROW = ("1", "1/30/2021 13:30", "Bono restaurante 1", "5")


def with_bad(column: str, value: str) -> list[tuple[str, ...]]:
    bad = list(GOOD_ROW)
    bad[HEADER.index(column)] = value
    return [GOOD_ROW, tuple(bad), GOOD_ROW]


def _write(tmp_path: Path, name: str, content) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _parquet_wrong_types(tmp_path: Path) -> Path:
    path = tmp_path / "export.parquet"
    pq.write_table(
        pa.table(
            {
                "ID_CLIENTE": ["1", "2"],
                "FECHA_INTERACCION": ["1/30/2021 13:30", "1/31/2021 13:30"],
                "NOMBRE_CORTO_DE_EXPERIENCIA": pa.array([1.5, 2.5], pa.float64()),
                "CALIFICACION": ["5", "4"],
            }
        ),
        path,
    )
    return path


BAD_INPUTS = {
    "missing path": (lambda t: t / "missing.csv", r": no such file$"),
    "a directory": (lambda t: (t / "adir").mkdir() or t / "adir", r": is a directory"),
    "empty file": (lambda t: _write(t, "empty.csv", b""), r": the file is empty$"),
    "header only": (lambda t: _write(t, "header.csv", csv_text([])), r": has a header but no rows$"),
    "missing column": (
        lambda t: _write(t, "cols.csv", csv_text([GOOD_ROW[:3]], header=HEADER[:3])),
        r": line 1: missing column 'CALIFICACION'",
    ),
    "semicolons": (
        lambda t: _write(t, "semi.csv", csv_text([GOOD_ROW], delimiter=";")),
        r": line 1: columns are separated by ';'",
    ),
    "bad date": (
        lambda t: _write(t, "date.csv", csv_text(with_bad("FECHA_INTERACCION", "2021-13-45 25:61"))),
        r": line 3, column FECHA_INTERACCION: date '2021-13-45 25:61' does not match",
    ),
    "rating 0": (lambda t: _write(t, "r0.csv", csv_text(with_bad("CALIFICACION", "0"))), r": line 3, column CALIFICACION: rating '0'"),
    "rating 6": (lambda t: _write(t, "r6.csv", csv_text(with_bad("CALIFICACION", "6"))), r": line 3, column CALIFICACION: rating '6'"),
    "rating cinco": (
        lambda t: _write(t, "r5.csv", csv_text(with_bad("CALIFICACION", "cinco"))),
        r": line 3, column CALIFICACION: rating 'cinco'",
    ),
    "rating empty": (lambda t: _write(t, "re.csv", csv_text(with_bad("CALIFICACION", ""))), r": line 3, column CALIFICACION: rating ''"),
    "empty customer id": (
        lambda t: _write(t, "id.csv", csv_text(with_bad("ID_CLIENTE", ""))),
        r": line 3, column ID_CLIENTE: empty customer id",
    ),
    "empty item name": (
        lambda t: _write(t, "item.csv", csv_text(with_bad("NOMBRE_CORTO_DE_EXPERIENCIA", "  "))),
        r": line 3, column NOMBRE_CORTO_DE_EXPERIENCIA: empty item name",
    ),
    "parquet wrong types": (_parquet_wrong_types, r"column 'NOMBRE_CORTO_DE_EXPERIENCIA' has type double"),
    "binary file": (
        lambda t: _write(t, "binary.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8),
        r": not a CSV file \(it holds binary data\)",
    ),
}


def invoke_run(data: Path, output: Path, capfd) -> tuple[object, str]:
    result = CliRunner().invoke(app, ["run", "--data", str(data), "--output", str(output), *RUN_ARGS])
    captured = capfd.readouterr()
    return result, result.output + captured.out + captured.err


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_1_with_one_line_and_leaves_the_store_byte_identical(published, store_copy, tmp_path, capfd, case):
    make, expect = BAD_INPUTS[case]
    data = make(tmp_path)
    output = store_copy
    before = fingerprint(output)
    result, everything = invoke_run(data, output, capfd)
    assert result.exit_code == 1, everything[-2000:]
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"error: {data}"), errors[0]
    assert re.search(expect, errors[0]), errors[0]
    assert "Traceback" not in everything, everything[-3000:]
    assert fingerprint(output) == before


@pytest.mark.slow
def test_unreadable_file_exits_1_with_one_line(published, store_copy, synthetic, tmp_path, capfd, monkeypatch):
    """As root chmod 000 does not stop reads (and /root is closed to `nobody`), so open() is made to refuse."""
    import builtins

    import recsys.data.export

    data = tmp_path / "locked.csv"
    data.write_text(csv_text(synthetic.rows))
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):
        if Path(str(file)) == data:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(recsys.data.export, "open", refusing_open, raising=False)
    before = fingerprint(store_copy)
    result, everything = invoke_run(data, store_copy, capfd)
    assert result.exit_code == 1, everything[-2000:]
    assert error_lines(result.stderr) == [f"error: {data}: permission denied (cannot read the file)"], result.stderr
    assert "Traceback" not in everything
    assert fingerprint(store_copy) == before


@pytest.mark.slow
@pytest.mark.parametrize("where", ["proc", "parent-is-a-file"])
def test_unwritable_output_exits_1_with_one_line_in_a_terminal(prefect_test_harness, synthetic, tmp_path, where):
    """As root no folder is unwritable by mode: /proc refuses new entries, and a file cannot hold one."""
    data = tmp_path / "interactions.csv"
    data.write_text(csv_text(synthetic.rows))
    if where == "proc":
        output = Path("/proc/recsys-out")
    else:
        (tmp_path / "afile").write_text("a file")
        output = tmp_path / "afile" / "out"
    done = subprocess.run(
        recsys_cmd("run", "--data", str(data), "--output", str(output), *RUN_ARGS),
        env=cli_env(), cwd=REPO, capture_output=True, text=True, check=False, timeout=300,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    errors = error_lines(done.stderr)
    assert len(errors) == 1 and str(output) in errors[0] and "not writable" in errors[0], done.stderr[-3000:]
    assert "Traceback" not in done.stderr, f"{len(done.stderr.splitlines())} lines on stderr:\n{done.stderr[-3000:]}"
    assert not output.exists()


@pytest.mark.slow
@pytest.mark.parametrize("failing", ["Store._insert (2nd call)", "ParquetWriter.write_table"])
def test_disk_full_while_publishing_keeps_the_previous_store(published, store_copy, tmp_path, capfd, monkeypatch, failing):
    import recsys.store.parquet
    from recsys.store.publish import Store

    data, _, previous_run = published
    output = store_copy
    before = fingerprint(output)
    runs_before = runs_rows(output / "recsys.db")
    calls = []

    def full(original, fail_on):
        def wrapper(*args, **kwargs):
            calls.append(1)
            if len(calls) == fail_on:
                raise OSError(errno.ENOSPC, "No space left on device")
            return original(*args, **kwargs)

        return wrapper

    if failing.startswith("Store._insert"):
        monkeypatch.setattr(Store, "_insert", full(Store._insert, 2))
    else:
        monkeypatch.setattr(recsys.store.parquet.pq.ParquetWriter, "write_table", full(recsys.store.parquet.pq.ParquetWriter.write_table, 1))
    result, everything = invoke_run(data, output, capfd)
    monkeypatch.undo()
    assert calls, "the simulated failure was never reached"
    assert result.exit_code == 1, everything[-2000:]
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and "No space left on device" in errors[0], result.stderr
    assert "Traceback" not in everything, everything[-3000:]

    after = fingerprint(output)
    assert published_part(after) == published_part(before)
    assert not list(output.glob(STAGED)), "a staged Parquet file was left behind"
    runs = runs_rows(output / "recsys.db")
    new = [r for r in runs if r not in runs_before]
    assert len(new) == 1 and runs[new[0]]["status"] == "failed" and not runs[new[0]]["is_current"]
    assert "No space left on device" in runs[new[0]]["message"]
    assert {r: v for r, v in runs.items() if r in runs_before} == runs_before
    assert check_store(output) == previous_run
    assert lookup_json(output, "1")["run_id"] == previous_run


def _quirky_rows(synthetic, kind: str) -> tuple[bytes, dict[str, str]]:
    """The small export with accepted quirks; returns (file bytes, {exported item: published item})."""
    names = {r[2]: r[2].strip() for r in synthetic.rows}
    if kind == "utf8-bom-crlf":
        return b"\xef\xbb\xbf" + csv_text(synthetic.rows, newline="\r\n").encode("utf-8"), names
    if kind == "latin1-accents-crlf":
        accented = {old: old.replace("Bono restaurante", "Bono Café Ñandú").replace("Curso deporte", "Curso Año Acción") for old in names}
        rows = [(u, d, accented[i], r) for u, d, i, r in synthetic.rows]
        return csv_text(rows, newline="\r\n").encode("latin-1"), {v: v.strip() for v in accented.values()}
    # Extra columns, duplicate rows, spaces around names and ids.
    header = HEADER + ("CANAL", "NOTA")
    rows = [(f" {u} ", d, f"  {i} ", r, "web", "x") for u, d, i, r in synthetic.rows]
    rows += rows[:25]
    return csv_text(rows, header=header).encode("utf-8"), names


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["utf8-bom-crlf", "latin1-accents-crlf", "extra-columns-duplicates-spaces"])
def test_accepted_quirks_publish_the_right_names(published, store_copy, synthetic, tmp_path, capfd, kind):
    content, names = _quirky_rows(synthetic, kind)
    data = tmp_path / "quirky.csv"
    data.write_bytes(content)
    result, everything = invoke_run(data, store_copy, capfd)
    assert result.exit_code == 0, everything[-3000:]
    assert "succeeded" in result.stdout
    customers = {r[0].strip() for r in synthetic.rows}
    check_store(store_copy, customers)
    published_items = {r[2] for r in sql_lists(store_copy / "recsys.db")}
    published_items |= {r[0] for r in read_sql(store_copy / "recsys.db", "SELECT item FROM popular_items")}
    assert published_items <= set(names.values()), sorted(published_items - set(names.values()))[:5]
    parquet_items = set(pq.read_table(store_copy / "recommendations.parquet", columns=["item"]).column(0).to_pylist())
    assert parquet_items <= set(names.values())
    if kind == "latin1-accents-crlf":
        assert any("Café Ñandú" in item for item in published_items)
        assert any("Año Acción" in item for item in published_items)
        assert not any("Ã" in item or "\ufffd" in item for item in published_items | parquet_items)


# ==================================================================================================
# 7. `recsys lookup` treats its argument as data
# ==================================================================================================

ODD_IDS = {
    "single quote": "'",
    "double quote": '"',
    "or-injection": "1' OR '1'='1",
    "drop-table": "1; DROP TABLE recommendations; --",
    "100 kB": "9" * 100_000,
    "unicode": "José Ñandú 😀",
    "empty": "",
    "whitespace": " \t ",
    "nul byte": "1\x00",
}


def test_lookup_arguments_are_data(store_copy):
    before = fingerprint(store_copy)
    for name, user in ODD_IDS.items():
        payload = lookup_json(store_copy, user)
        assert payload["cold_start"] is True, name
        assert_full_list(payload)
    known = lookup_json(store_copy, "  1  ")
    assert known["cold_start"] is False and known["user_id"] == "1"
    assert fingerprint(store_copy) == before


@pytest.mark.parametrize(
    "arg",
    [pytest.param("9" * 100_000, id="100kB-argv"), pytest.param(b"\xff\xfe-not-utf8", id="non-utf8-argv"),
     pytest.param("1' OR '1'='1", id="injection-argv")],
)
def test_lookup_arguments_are_data_in_a_real_process(store_copy, arg):
    """argv as a shell passes it (including bytes that are not UTF-8, which Python turns into surrogates)."""
    before = fingerprint(store_copy)
    env = {k: v for k, v in os.environ.items() if k != "RECSYS_DB_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "recsys.cli", "lookup", arg, "--output", str(store_copy), "--json"],
        env=env, cwd=REPO, capture_output=True, check=False, timeout=60,
    )
    stderr = done.stderr.decode(errors="replace")
    assert "Traceback" not in stderr, stderr[-2000:]
    if done.returncode == 0:
        payload = json.loads(done.stdout)
        assert payload["cold_start"] is True
        assert_full_list(payload)
    else:  # refusing an id that is not text is fine too, in one plain line
        assert done.returncode == 1 and len(error_lines(stderr)) == 1, stderr
    assert fingerprint(store_copy) == before


@pytest.mark.parametrize("damage", ["random-bytes", "truncated-half", "truncated-header"])
def test_lookup_on_a_damaged_database_is_one_plain_line(store_copy, damage):
    db = store_copy / "recsys.db"
    checkpoint(db)
    data = db.read_bytes()
    if damage == "random-bytes":
        db.write_bytes(random.Random(5).randbytes(64 * 1024))
    elif damage == "truncated-half":
        db.write_bytes(data[: len(data) // 2])
    else:
        db.write_bytes(data[:100])
    for args in (["lookup", "1", "--json"], ["lookup", "nobody"], ["runs"]):
        result = CliRunner().invoke(app, [*args, "--output", str(store_copy)])
        assert result.exit_code == 1, (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {db}: the store cannot be read"), result.stderr
        assert result.stdout == ""
