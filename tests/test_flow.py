"""The nightly Prefect flow end to end (small data, 2 epochs), its failure modes, and `recsys run`."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import SAMPLE, csv_text, export_date, run_flow
from recsys.errors import DataError
from recsys.settings import RunOptions

pytestmark = pytest.mark.slow

# The pipeline tests check what is published; the quality gate has its own tests (test_quality.py).
EPOCHS = dict(epochs=2, ranking_epochs=2, evaluate=False)
BAD_ROWS = [
    ("1", "1/30/2021 13:30", "Bono restaurante 1", "5"),
    ("2", "1/31/2021 13:30", "Bono restaurante 2", "cinco"),
]


@pytest.fixture(autouse=True)
def no_db_url_env(monkeypatch):
    monkeypatch.delenv("RECSYS_DB_URL", raising=False)


@pytest.fixture(scope="module")
def flow_run(prefect_test_harness, synthetic, tmp_path_factory):
    """One successful flow run on the small export: (summary, csv path, output folder)."""
    return run_flow(synthetic, tmp_path_factory.mktemp("flow"), **EPOCHS)


@pytest.fixture
def no_load_retries(monkeypatch):
    """The load task without its retries, for tests about what a failed load leaves behind.

    (Retrying a DataError only adds 20 s of waiting; test_bad_input_fails_without_retrying covers it.)
    """
    import flows.nightly

    monkeypatch.setattr(flows.nightly, "load", flows.nightly.load.with_options(retries=0))


def read_sql(db: Path, query: str) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute(query).fetchall()


def check_lists(output: Path, frame: pd.DataFrame, top_k: int = 12) -> pd.DataFrame:
    """The published store holds exactly top_k distinct, unconsumed items per input customer."""
    db = output / "recsys.db"
    rows = read_sql(db, "SELECT user_id, rank, item, score, run_id FROM recommendations")
    lists = pd.DataFrame(rows, columns=["user_id", "rank", "item", "score", "run_id"])
    customers = set(frame["user_id"])
    assert set(lists["user_id"]) == customers
    counts = lists.groupby("user_id").size()
    assert (counts == top_k).all(), counts[counts != top_k].head()
    ranks = lists.sort_values(["user_id", "rank"]).groupby("user_id")["rank"].apply(list)
    assert (ranks.apply(lambda r: r == list(range(1, top_k + 1)))).all()
    assert (lists.groupby("user_id")["item"].nunique() == top_k).all()
    consumed = set(zip(frame["user_id"], frame["item"]))
    overlap = [pair for pair in zip(lists["user_id"], lists["item"]) if pair in consumed]
    assert not overlap, overlap[:5]
    assert set(lists["item"]) <= set(frame["item"])
    # Scores follow rank within each list.
    ordered = lists.sort_values(["user_id", "rank"])
    assert (ordered.groupby("user_id")["score"].diff().dropna() <= 1e-9).all()
    # Parquet rows equal SQL rows.
    parquet = pq.read_table(output / "recommendations.parquet").to_pandas()
    sql_rows = sorted(rows)
    parquet_rows = sorted(
        zip(parquet["user_id"], parquet["rank"].astype(int), parquet["item"], parquet["score"], parquet["run_id"])
    )
    assert sql_rows == parquet_rows
    assert len(set(lists["run_id"])) == 1
    return lists


# --- the whole flow --------------------------------------------------------------------------------


def test_flow_summary(flow_run, synthetic):
    summary, data, output = flow_run
    assert summary["status"] == "succeeded"
    assert summary["users"] == 120
    assert summary["rows"] == 120 * 12
    assert summary["items"] == 40
    assert summary["input_rows"] == len(synthetic.rows)
    assert any("15 exact duplicate rows" in note for note in summary["notes"])
    assert any("spaces stripped" in note for note in summary["notes"])
    assert set(summary["seconds"]) == {
        "load", "train_retrieval", "choose_ranker", "refresh_retrieval", "train_ranking", "score", "publish"
    }
    assert Path(summary["parquet"]) == output / "recommendations.parquet"
    assert summary["db_url"] == f"sqlite:///{(output / 'recsys.db').resolve()}"


def test_flow_publishes_12_distinct_unconsumed_items_per_customer(flow_run, synthetic):
    summary, _, output = flow_run
    lists = check_lists(output, synthetic.frame)
    assert set(lists["run_id"]) == {summary["run_id"]}
    popular = read_sql(output / "recsys.db", "SELECT rank, item, run_id FROM popular_items ORDER BY rank")
    assert [r[0] for r in popular] == list(range(1, 13))
    assert len({r[1] for r in popular}) == 12
    assert {r[2] for r in popular} == {summary["run_id"]}


def test_flow_records_one_succeeded_run(flow_run, synthetic):
    summary, data, output = flow_run
    runs = read_sql(
        output / "recsys.db",
        "SELECT run_id, status, is_current, input_path, input_sha256, rows, users, items, metrics, "
        "finished_at, message FROM runs",
    )
    assert len(runs) == 1
    run_id, status, current, path, sha, rows, users, items, metrics, finished, message = runs[0]
    assert (run_id, status, current) == (summary["run_id"], "succeeded", 1)
    assert path == str(data)
    assert sha == hashlib.sha256(data.read_bytes()).hexdigest()
    assert (rows, users, items) == (len(synthetic.rows), 120, 40)
    assert finished is not None and message is None
    metrics = json.loads(metrics)
    assert metrics["ranking_lists"] > 0
    assert set(metrics["seconds"]) == set(summary["seconds"])


def test_lookup_reads_what_the_flow_published(flow_run):
    from recsys.store.lookup import lookup
    from recsys.settings import resolve_db_url

    _, _, output = flow_run
    answer = lookup("1", resolve_db_url(output))
    assert answer.cold_start is False and [r[0] for r in answer.rows] == list(range(1, 13))
    assert lookup("not-a-customer", resolve_db_url(output)).cold_start is True


@pytest.mark.skipif(not SAMPLE.is_file(), reason="no committed sample in data/")
def test_whole_flow_on_the_committed_sample(prefect_test_harness, tmp_path):
    from flows.nightly import nightly
    from recsys.data.export import load_interactions

    summary = nightly(RunOptions(data=SAMPLE, output=tmp_path / "out", **EPOCHS))
    interactions, report = load_interactions(SAMPLE)
    assert summary["status"] == "succeeded"
    assert summary["users"] == report.users
    assert summary["rows"] == report.users * 12
    check_lists(tmp_path / "out", interactions.to_frame())


# --- bad input --------------------------------------------------------------------------------------


def test_bad_input_fails_without_retrying_and_writes_nothing(prefect_test_harness, tmp_path):
    """A DataError is not transient: the flow should fail at once, not retry the load for 20 s."""
    from flows.nightly import nightly

    bad = tmp_path / "bad.csv"
    bad.write_text(csv_text(BAD_ROWS))
    output = tmp_path / "out"
    started = time.perf_counter()
    with pytest.raises(DataError, match=r"bad\.csv: line 3, column CALIFICACION: rating 'cinco'"):
        nightly(RunOptions(data=bad, output=output, **EPOCHS))
    elapsed = time.perf_counter() - started
    assert not output.exists()
    assert elapsed < 10, f"bad input took {elapsed:.0f}s to fail: the load task retried a DataError"


def snapshot(output: Path) -> dict[str, bytes]:
    gc.collect()
    db = output / "recsys.db"
    # Fold the write-ahead log into the database file so its bytes are the whole store.
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return {
        p.name: p.read_bytes()
        for p in sorted(output.iterdir())
        if not p.name.endswith(("-wal", "-shm"))
    }


def copy_store(output: Path, dest: Path) -> Path:
    """A private copy of a published store (so tests that run more flows leave the shared one alone)."""
    snapshot(output)
    shutil.copytree(output, dest, ignore=shutil.ignore_patterns("*-wal", "*-shm"))
    return dest


def test_bad_input_leaves_a_previous_store_unchanged(flow_run, tmp_path, no_load_retries):
    from flows.nightly import nightly

    output = copy_store(flow_run[2], tmp_path / "out")
    before = snapshot(output)
    assert {"recsys.db", "recommendations.parquet"} <= set(before)
    bad = tmp_path / "bad.csv"
    bad.write_text(csv_text(BAD_ROWS))
    with pytest.raises(DataError):
        nightly(RunOptions(data=bad, output=output, **EPOCHS))
    after = snapshot(output)
    assert after.keys() == before.keys()
    for name in before:
        assert after[name] == before[name], f"{name} changed"


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param([("1", "1/30/2021 13:30", "Solo", "5"), ("2", "1/31/2021 13:30", "Solo", "4")], id="one item"),
        pytest.param([("1", "1/30/2021 13:30", "Solo", "5"), ("1", "1/31/2021 13:30", "Otro", "4")], id="one customer"),
    ],
)
def test_too_little_data_publishes_popularity_for_everyone(flow_run, tmp_path, rows):
    """Valid file, too small to train on: everyone gets the popularity list, and the run says why."""
    from flows.nightly import nightly

    output = copy_store(flow_run[2], tmp_path / "out")
    data = tmp_path / "tiny.csv"
    data.write_text(csv_text(rows))
    summary = nightly(RunOptions(data=data, output=output, **EPOCHS))
    assert summary["status"] == "degraded"
    assert "too little data" in summary["reason"] and "popularity" in summary["reason"]
    items = sorted({item for _, _, item, _ in rows})
    users = sorted({user for user, _, _, _ in rows})
    lists = read_sql(output / "recsys.db", "SELECT user_id, rank, item, run_id FROM recommendations ORDER BY user_id, rank")
    consumed = {(user, item) for user, _, item, _ in rows}
    assert {row[0] for row in lists} <= set(users)
    assert all((user, item) not in consumed for user, _, item, _ in lists)
    assert {row[3] for row in lists} <= {summary["run_id"]}
    popular = read_sql(output / "recsys.db", "SELECT item FROM popular_items ORDER BY rank")
    assert sorted(row[0] for row in popular) == items
    runs = read_sql(output / "recsys.db", "SELECT status, is_current, message FROM runs ORDER BY run_id")
    assert runs[-1][0] == "degraded" and runs[-1][1] == 1 and "too little data" in runs[-1][2]


def _first_row_of_each_customer(rows):
    firsts = {}
    for row in rows:
        firsts.setdefault(row[0], row)
    return list(firsts.values())


NOTHING_TO_HOLD_OUT = {
    "one item each": (_first_row_of_each_customer, "every customer took a single item"),
    "every row at one time": (
        lambda rows: [(user, "6/15/2022 12:00", item, rating) for user, _, item, rating in rows],
        "took all of their items at one time",
    ),
}


@pytest.mark.parametrize(
    ("shape", "evaluate"), [("one item each", True), ("every row at one time", True), ("one item each", False)]
)
def test_an_export_with_nothing_to_hold_out_publishes_popularity_and_says_why(prefect_test_harness, synthetic, tmp_path, shape, evaluate):
    """No customer has a later item: the ranker has nothing to learn from and nothing can be
    evaluated, so no gate can compare anything. The run publishes the popularity list, degraded,
    and says why in the summary, the runs table (message and metrics) and the report, instead of
    "succeeded" with an untrained ranker and an evaluation of 0 customers."""
    from flows.nightly import nightly

    make, why = NOTHING_TO_HOLD_OUT[shape]
    rows = make(synthetic.rows)
    data = tmp_path / "export.csv"
    data.write_text(csv_text(rows))
    output = tmp_path / "out"
    summary = nightly(RunOptions(data=data, output=output, epochs=2, ranking_epochs=2, evaluate=evaluate))
    assert summary["status"] == "degraded"
    reason = summary["reason"]
    assert reason.startswith("no customer has a later item to hold out: ") and why in reason, reason
    assert reason.endswith("so the ranker cannot be trained and the model cannot be evaluated: published the popularity list for everyone")
    assert summary["evaluation"] is None and summary["gate_passed"] is None
    assert "train_retrieval" not in summary["seconds"] and "evaluate" not in summary["seconds"]  # nothing trained
    [(status, current, message, metrics)] = read_sql(output / "recsys.db", "SELECT status, is_current, message, metrics FROM runs")
    metrics = json.loads(metrics)
    assert (status, current, message) == ("degraded", 1, reason)
    assert metrics["not_evaluated"].startswith("no customer has a later item to hold out: ") and why in metrics["not_evaluated"]
    assert metrics["lists"]["recommender"] == "popularity" and "evaluation" not in metrics
    full_lists_wherever_possible(output / "recsys.db", rows)
    page = (output / "report.html").read_text(encoding="utf-8")
    assert "The published run was not evaluated: no customer has a later item to hold out: " in page
    assert "--no-evaluate</code>, or whose evaluation failed" not in page


# --- `recsys run` --------------------------------------------------------------------------------


def test_cli_run_on_a_bad_file_exits_1_with_one_line(prefect_test_harness, tmp_path, capfd, no_load_retries):
    from recsys.cli.app import app

    bad = tmp_path / "bad.csv"
    bad.write_text(csv_text(BAD_ROWS))
    result = CliRunner().invoke(app, ["run", "--data", str(bad), "--output", str(tmp_path / "out")])
    captured = capfd.readouterr()
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {bad}: line 3, column CALIFICACION: rating 'cinco' is not a whole number from 1 to 5"]
    # Only the run log may be written (out/logs/recsys.log); no store is created.
    assert sorted(p.name for p in (tmp_path / "out").glob("*")) in ([], ["logs"])
    # What the operator sees on the terminal: one line, no traceback (Prefect's own logs included).
    everything = result.output + captured.out + captured.err
    assert "Traceback" not in everything, everything[-3000:]


def test_cli_run_on_a_bad_file_in_a_terminal_shows_one_line(prefect_test_harness, tmp_path):
    """The real command in its own process (Prefect's console logging as an operator gets it)."""
    from prefect.settings import PREFECT_API_URL

    bad = tmp_path / "bad.csv"
    bad.write_text(csv_text(BAD_ROWS))
    env = {k: v for k, v in os.environ.items() if k != "RECSYS_DB_URL"}
    env.update(PREFECT_API_URL=PREFECT_API_URL.value(), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    done = subprocess.run(
        [sys.executable, "-m", "recsys.cli", "run", "--data", str(bad), "--output", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stdout == ""
    assert f"error: {bad}: line 3, column CALIFICACION: rating 'cinco'" in done.stderr
    assert "Traceback" not in done.stderr, f"{len(done.stderr.splitlines())} lines on stderr:\n{done.stderr[-3000:]}"
    # Only the run log may be written (out/logs/recsys.log); no store is created.
    assert sorted(p.name for p in (tmp_path / "out").glob("*")) in ([], ["logs"])


def test_cli_run_with_output_taken_by_a_file_exits_1_with_one_line(prefect_test_harness, synthetic, tmp_path, capfd):
    """--output naming a regular file: a one-line error, not a FileExistsError traceback."""
    from recsys.cli.app import app

    data = tmp_path / "interactions.csv"
    data.write_text(csv_text(synthetic.rows))
    blocker = tmp_path / "out"
    blocker.write_text("a file, not a folder")
    result = CliRunner().invoke(app, ["run", "--data", str(data), "--output", str(blocker), "--epochs", "2"])
    capfd.readouterr()
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert blocker.read_text() == "a file, not a folder"


def test_cli_run_publishes_and_prints_a_summary(prefect_test_harness, synthetic, tmp_path):
    from recsys.cli.app import app

    data = tmp_path / "interactions.csv"
    data.write_text(csv_text(synthetic.rows))
    output = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["run", "--data", str(data), "--output", str(output), "--epochs", "2", "--ranking-epochs", "2", "--no-evaluate"]
    )
    assert result.exit_code == 0, result.output
    assert "succeeded" in result.stdout
    assert "published lists for 120 of 120 customers (1,440 rows) over 40 items" in result.stdout
    check_lists(output, synthetic.frame)
    lookup = CliRunner().invoke(app, ["lookup", "1", "--output", str(output), "--json"])
    assert lookup.exit_code == 0
    assert [r["rank"] for r in json.loads(lookup.stdout)["recommendations"]] == list(range(1, 13))


def test_cli_run_with_top_k_5_labels_its_figures_at_5(prefect_test_harness, synthetic, tmp_path):
    """The gate of a `--top-k 5` run says NDCG@5: the summary's table, `recsys runs` and the report
    said NDCG@12 (the business probe's finding); they follow the k the evaluation stored."""
    from recsys.cli.app import app

    data = tmp_path / "interactions.csv"
    data.write_text(csv_text(synthetic.rows))
    output = tmp_path / "out"
    wide = {"COLUMNS": "200"}
    result = CliRunner().invoke(
        app, ["run", "--data", str(data), "--output", str(output), "--epochs", "2", "--ranking-epochs", "2", "--top-k", "5"],
        env=wide,
    )
    assert result.exit_code == 0, result.output
    [(metrics_text, message)] = read_sql(output / "recsys.db", "SELECT metrics, message FROM runs")
    metrics = json.loads(metrics_text)
    assert {values["k"] for values in metrics["evaluation"].values()} == {5}
    assert metrics["gate"]["reason"].startswith("model NDCG@5 ")
    assert "held-out evaluation (NDCG@5 with its 95% interval, recall@5)" in result.stdout
    listed = CliRunner().invoke(app, ["runs", "--output", str(output)], env=wide)
    assert "model/best: NDCG@5 of the model" in listed.stdout
    page = (output / "report.html").read_text(encoding="utf-8")
    assert "<th>NDCG@5</th>" in page and "held-out NDCG@5" in page
    for text in (result.stdout, listed.stdout, page, message or ""):
        assert "NDCG@12" not in text and "recall@12" not in text


def test_a_pin_beyond_top_k_stops_a_scheduled_run_naming_the_config(prefect_test_harness, synthetic, tmp_path):
    """The flow reads the config again every night (a scheduled run has no `recsys run` before
    it): a pin beyond the lists' length is the same line there, naming the file, and nothing is stored."""
    from flows.nightly import nightly
    from recsys.errors import OptionError

    data = tmp_path / "interactions.csv"
    data.write_text(csv_text(synthetic.rows))
    config = tmp_path / "rules.toml"
    config.write_text('[[rules.pin]]\nitem = "Bono restaurante 1"\nrank = 6\n')
    with pytest.raises(OptionError) as raised:
        nightly(RunOptions(data=data, output=tmp_path / "out", config=config, top_k=5, **EPOCHS))
    assert str(raised.value).startswith(f"{config}: [[rules.pin]] 'Bono restaurante 1': rank 6 is beyond top-k 5")
    assert not (tmp_path / "out" / "recsys.db").exists()


def test_a_public_ratings_dataset_read_with_its_options_publishes_the_export_s_lists(prefect_test_harness, synthetic, tmp_path):
    """The same redemptions shaped as MovieLens-1M's ratings.dat (no header row; customer, item,
    rating, time separated by "::"; integer ids, seconds since 1970, ratings on a 0-4 scale) and read
    with --no-header --delimiter :: --date-format unix --rating-scale 0-4 publish the lists the
    export in the company's format publishes (the same seed)."""
    from recsys.cli.app import app

    frame = synthetic.frame
    seconds = frame["timestamp"].astype("int64") // 10**9
    ids = {name: code for code, name in enumerate(sorted(set(frame["item"])), start=1)}
    lines = [f"{u}::{ids[i]}::{float(r - 1)}::{t}" for u, i, r, t in zip(frame["user_id"], frame["item"], frame["rating"], seconds)]
    (tmp_path / "ratings.dat").write_text("\n".join(lines) + "\n")
    export = tmp_path / "export.csv"
    export.write_text(csv_text([(u, export_date(t), str(ids[i]), str(r)) for u, i, t, r in frame.itertuples(index=False)]))
    common = ["--epochs", "2", "--ranking-epochs", "2", "--no-evaluate"]
    public = ["--data", str(tmp_path / "ratings.dat"), "--no-header", "--delimiter", "::", "--date-format", "unix",
              "--rating-scale", "0-4"]
    done = CliRunner().invoke(app, ["run", *public, "--output", str(tmp_path / "public"), *common])
    assert done.exit_code == 0, done.output
    assert "published lists for 120 of 120 customers (1,440 rows) over 40 items" in done.stdout
    done = CliRunner().invoke(app, ["run", "--data", str(export), "--output", str(tmp_path / "export"), *common])
    assert done.exit_code == 0, done.output
    query = "SELECT user_id, rank, item, score, reason FROM recommendations ORDER BY user_id, rank"
    assert read_sql(tmp_path / "public" / "recsys.db", query) == read_sql(tmp_path / "export" / "recsys.db", query)


# --- every valid export publishes something --------------------------------------------------------

def _day(day: int, hour: int = 10) -> str:
    return f"1/{day}/2021 {hour}:00"


# Tiny but valid exports: each passes "too small to train on", and some part of the nightly job
# (the evaluation's split, the ranking split, a baseline) has next to nothing to learn from.
TINY = {
    "issue: A takes x, y, z on three days; B takes x": [
        ("A", _day(1), "x", "5"), ("A", _day(2), "y", "4"), ("A", _day(3), "z", "3"), ("B", _day(1, 11), "x", "5"),
    ],
    "two customers, the same two items": [
        ("A", _day(1), "x", "5"), ("A", _day(2), "y", "4"), ("B", _day(1), "x", "5"), ("B", _day(2), "y", "4"),
    ],
    "three pairs, one item shared": [("A", _day(1), "x", "5"), ("A", _day(2), "y", "4"), ("B", _day(3), "y", "5")],
    "repeats of the same items": [
        ("A", _day(1), "x", "5"), ("A", _day(2), "x", "4"), ("B", _day(3), "y", "5"), ("B", _day(4), "y", "5"),
        ("A", _day(5), "y", "5"),
    ],
    "every row at one moment": [("A", _day(1), "x", "5"), ("A", _day(1), "y", "4"), ("B", _day(1), "x", "3")],
    "one item each, no history to hold out": [
        ("A", _day(1), "x", "5"), ("B", _day(2), "y", "4"), ("C", _day(3), "x", "3"), ("D", _day(4), "z", "3"),
    ],
}


def full_lists_wherever_possible(db: Path, rows, top_k: int = 12) -> None:
    """Every customer's list holds min(top_k, items they have not taken) distinct unseen items."""
    items = {item for _, _, item, _ in rows}
    seen: dict[str, set[str]] = {}
    for user, _, item, _ in rows:
        seen.setdefault(user, set()).add(item)
    published: dict[str, list[str]] = {}
    for user, _rank, item in read_sql(db, "SELECT user_id, rank, item FROM recommendations ORDER BY user_id, rank"):
        published.setdefault(user, []).append(item)
    for user, taken in seen.items():
        expected = min(top_k, len(items - taken))
        got = published.get(user, [])
        assert len(got) == expected and len(set(got)) == expected and not set(got) & taken, (user, got, taken)


@pytest.mark.parametrize("case", list(TINY))
def test_tiny_valid_exports_publish_through_recsys_run(prefect_test_harness, tmp_path, capfd, case):
    """With the evaluation on: exit 0, a current run (succeeded, or degraded with its reason)."""
    from recsys.cli.app import app

    rows = TINY[case]
    data = tmp_path / "tiny.csv"
    data.write_text(csv_text(rows))
    output = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", "--data", str(data), "--output", str(output), "--epochs", "2", "--ranking-epochs", "2"])
    captured = capfd.readouterr()
    assert result.exit_code == 0, (result.output, captured.err[-3000:])
    [(status, current, message)] = read_sql(output / "recsys.db", "SELECT status, is_current, message FROM runs")
    assert current == 1 and status in ("succeeded", "degraded"), (status, message)
    assert (status == "degraded") == bool(message), message
    full_lists_wherever_possible(output / "recsys.db", rows)
    assert len(read_sql(output / "recsys.db", "SELECT item FROM popular_items")) == len({r[2] for r in rows})


def test_a_run_whose_customers_took_every_item_says_so_and_lookup_says_why(prefect_test_harness, tmp_path, capfd):
    """Two customers who took both items: no list for either. The summary counts the customers it
    published lists for out of those of the export (not "scored 0 customers" beside a `recsys
    runs` that says 2), says why, and where the log is; its seconds add up to the run's total."""
    from recsys.cli.app import app

    rows = TINY["two customers, the same two items"]
    data = tmp_path / "tiny.csv"
    data.write_text(csv_text(rows))
    output = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", "--data", str(data), "--output", str(output), "--epochs", "1", "--ranking-epochs", "1"])
    capfd.readouterr()
    assert result.exit_code == 0, result.output
    assert "published lists for 0 of 2 customers (0 rows)" in result.stdout, result.stdout
    assert "2 customers got no list: they already took every item" in result.stdout
    assert f"Log:     {output / 'logs' / 'recsys.log'}" in result.stdout
    stages = {}
    for line in result.stdout.split("seconds per stage", 1)[1].splitlines():
        name, _, value = line.strip().rpartition(" ")
        if name and re.fullmatch(r"\d+\.\d", value):
            stages[name.strip()] = float(value)
    assert "other (start-up, Prefect)" in stages and "total" in stages, result.stdout
    total = stages.pop("total")
    assert abs(sum(stages.values()) - total) <= 0.05 * len(stages) + 0.1, stages
    lookup = CliRunner().invoke(app, ["lookup", "A", "--output", str(output)])
    assert "has no list in the last run (not in its export, or nothing left to offer)" in lookup.stdout


def test_an_evaluation_that_fails_publishes_popularity_degraded(prefect_test_harness, synthetic, tmp_path, monkeypatch):
    """Whatever breaks inside the evaluation, the run publishes the popularity lists and says why."""
    import recsys.evaluation.protocol

    def broken(*_args, **_kwargs):
        raise ValueError("the held-out split came out empty")

    # The nightly evaluation (evaluate_all is `recsys evaluate`'s, which the flow does not call).
    monkeypatch.setattr(recsys.evaluation.protocol, "evaluate_baselines", broken)
    summary, _, output = run_flow(synthetic, tmp_path, epochs=2, ranking_epochs=2, evaluate=True)
    assert summary["status"] == "degraded"
    assert "evaluation failed" in summary["reason"] and "the held-out split came out empty" in summary["reason"]
    assert "popularity" in summary["reason"]
    check_lists(output, synthetic.frame)
    [(status, message)] = read_sql(output / "recsys.db", "SELECT status, message FROM runs")
    assert (status, message) == ("degraded", summary["reason"])


def test_training_that_fails_publishes_popularity_degraded(prefect_test_harness, synthetic, tmp_path, monkeypatch):
    from recsys.models.two_stage import TwoStage

    def broken(self, interactions, run=None):
        raise ValueError("cannot build a vocabulary of words")

    monkeypatch.setattr(TwoStage, "fit", broken)
    summary, _, output = run_flow(synthetic, tmp_path, **EPOCHS)
    assert summary["status"] == "degraded"
    assert "training failed" in summary["reason"] and "cannot build a vocabulary of words" in summary["reason"]
    assert "popularity" in summary["reason"]
    check_lists(output, synthetic.frame)


def test_training_that_fails_after_the_evaluation_publishes_the_best_baseline(prefect_test_harness, synthetic, tmp_path, monkeypatch):
    """With the baselines evaluated, a failed training publishes the best of them, not popularity."""
    import numpy as np

    import flows.nightly
    from recsys.models.two_stage import TwoStage
    from test_quality import evaluation

    values = np.linspace(0.0, 1.0, 10)

    def fake_evaluate(interactions, options, fits):
        return evaluation(ease=values * 0.9, item_knn=values, popularity=values * 0.8)

    def broken(self, interactions, run=None):
        raise ValueError("cannot build a vocabulary of words")

    monkeypatch.setattr(flows.nightly, "evaluate", fake_evaluate)
    monkeypatch.setattr(TwoStage, "fit", broken)
    summary, _, output = run_flow(synthetic, tmp_path, epochs=2, ranking_epochs=2, evaluate=True)
    assert summary["status"] == "degraded"
    assert summary["reason"].startswith("training failed (ValueError: cannot build a vocabulary of words)")
    assert summary["reason"].endswith("published item_knn instead")
    check_lists(output, synthetic.frame)


def test_a_fallback_baseline_that_cannot_be_fitted_gives_way_to_popularity(prefect_test_harness, synthetic, tmp_path, monkeypatch):
    """The gate names item-kNN, which fails to fit: popularity is published, and the reason says both."""
    import flows.nightly
    import recsys.evaluation.protocol
    from recsys.evaluation.gate import Gate
    from recsys.models.baselines import ItemKNN

    import numpy as np

    from test_quality import evaluation

    values = np.linspace(0.0, 1.0, 10)

    def fake_evaluate(interactions, options, fits):
        return evaluation(item_knn=values, popularity=values * 0.8)

    def fake_judge(baselines, model, options, run_id):
        return evaluation(two_stage=values * 0.5, item_knn=values, popularity=values * 0.8), Gate(
            False, "item_knn", "forced: the model is below item_knn", "item_knn", (-0.3, -0.4, -0.2)
        )

    def broken(self, interactions):
        raise MemoryError("items x items")

    # The evaluation and the gate's verdict forced; item-kNN then fails to fit.
    monkeypatch.setattr(flows.nightly, "evaluate", fake_evaluate)
    monkeypatch.setattr(flows.nightly, "judge", fake_judge)
    monkeypatch.setattr(ItemKNN, "fit", broken)
    summary, _, output = run_flow(synthetic, tmp_path, epochs=2, ranking_epochs=2, evaluate=True)
    assert summary["status"] == "degraded"
    assert summary["reason"].startswith("forced: the model is below item_knn")
    assert "item_knn could not be fitted" in summary["reason"] and "items x items" in summary["reason"]
    assert "popularity" in summary["reason"]
    check_lists(output, synthetic.frame)
    assert recsys.evaluation.protocol  # the real protocol module is untouched


# --- retries: per cause -------------------------------------------------------------------------------

def _driver_error(cls, text: str):
    """A SQLAlchemy error wrapping a sqlite3 error with ``text``, as the store's engine raises it."""
    import sqlite3

    import sqlalchemy as sa

    error = getattr(sqlite3, cls)(text)
    return sa.exc.DBAPIError.instance("UPDATE runs SET status = ?", (), error, sqlite3.Error)


def _retry_cases():
    import errno

    from recsys.errors import ExportChanged, StoreError, StoreUnavailable

    return {
        "store unavailable": (StoreUnavailable("db.example: the connection dropped"), True),
        "export replaced while read": (ExportChanged("export.csv: changed while it was read"), True),
        "database is locked (raw)": (_driver_error("OperationalError", "database is locked"), True),
        "bad input": (DataError("export.csv: line 3, column CALIFICACION: rating 'cinco'"), False),
        "disk full (store)": (StoreError("out: cannot write the store (No space left on device)"), False),
        "disk full (raw)": (OSError(errno.ENOSPC, "No space left on device"), False),
        "disk full (SQLite, raw)": (_driver_error("OperationalError", "database or disk is full"), False),
        "out of memory": (MemoryError(), False),
        "a bug": (TypeError("unsupported operand type(s)"), False),
        "a bad statement": (_driver_error("ProgrammingError", "no such table: runs"), False),
    }


@pytest.mark.parametrize("case", list(_retry_cases()))
def test_retry_decision_per_cause(case):
    from flows.nightly import retryable

    error, expected = _retry_cases()[case]
    assert retryable(error) is expected


@pytest.fixture
def quick_retries(monkeypatch):
    """The load and publish tasks keep their retries, without the 10 s waits."""
    import flows.nightly

    for name in ("load", "publish"):
        monkeypatch.setattr(flows.nightly, name, getattr(flows.nightly, name).with_options(retry_delay_seconds=0))


def test_a_busy_database_while_publishing_is_retried(prefect_test_harness, synthetic, tmp_path, monkeypatch, quick_retries):
    from recsys.store.publish import Store

    calls = []
    real_swap = Store._swap

    def busy_once(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise _driver_error("OperationalError", "database is locked")
        return real_swap(self, *args, **kwargs)

    monkeypatch.setattr(Store, "_swap", busy_once)
    summary, _, output = run_flow(synthetic, tmp_path, **EPOCHS)
    assert len(calls) == 2 and summary["status"] == "succeeded"
    check_lists(output, synthetic.frame)
    [(status, current)] = read_sql(output / "recsys.db", "SELECT status, is_current FROM runs")
    assert (status, current) == ("succeeded", 1)


@pytest.mark.parametrize("failure", ["disk full", "a bug"])
def test_a_full_disk_or_a_bug_while_publishing_is_not_retried(prefect_test_harness, synthetic, tmp_path, monkeypatch, quick_retries, failure):
    import errno

    from recsys.store.publish import Store

    calls = []

    def failing(self, *args, **kwargs):
        calls.append(1)
        if failure == "disk full":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise KeyError("rank")

    monkeypatch.setattr(Store, "_insert", failing)
    with pytest.raises(Exception) as raised:
        run_flow(synthetic, tmp_path, **EPOCHS)
    assert len(calls) == 1, f"published {len(calls)} times: {raised.value!r}"


@pytest.mark.parametrize("failure", ["out of memory", "a bug"])
def test_the_load_retries_no_memory_error_or_bug(prefect_test_harness, tmp_path, monkeypatch, quick_retries, failure):
    import flows.nightly

    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        raise MemoryError() if failure == "out of memory" else AttributeError("'NoneType' object has no attribute 'num_rows'")

    monkeypatch.setattr(flows.nightly, "load_interactions", failing)
    with pytest.raises((MemoryError, AttributeError)):
        flows.nightly.nightly(RunOptions(data=tmp_path / "any.csv", output=tmp_path / "out", **EPOCHS))
    assert len(calls) == 1


def test_an_export_that_changes_while_read_is_read_again(prefect_test_harness, synthetic, tmp_path, monkeypatch, quick_retries):
    """The export is replaced (another night's file renamed onto it) during the first read: the
    load notices, reads the new file whole, and the run publishes that one."""
    import recsys.data.export

    data = tmp_path / "interactions.csv"
    data.write_text(csv_text(synthetic.rows[:-40]))
    replacement = tmp_path / "next.csv"
    replacement.write_text(csv_text(synthetic.rows))
    real_validate = recsys.data.export._validate
    reads = []

    def validate_then_replace(*args, **kwargs):
        reads.append(1)
        table = real_validate(*args, **kwargs)
        if len(reads) == 1:
            os.replace(replacement, data)
        return table

    monkeypatch.setattr(recsys.data.export, "_validate", validate_then_replace)
    summary = flows_nightly().nightly(RunOptions(data=data, output=tmp_path / "out", **EPOCHS))
    assert len(reads) == 2
    assert summary["input_rows"] == len(synthetic.rows)
    [(sha, rows)] = read_sql(tmp_path / "out" / "recsys.db", "SELECT input_sha256, rows FROM runs")
    assert sha == hashlib.sha256(data.read_bytes()).hexdigest() and rows == len(synthetic.rows)


def flows_nightly():
    import flows.nightly

    return flows.nightly


def test_rows_dated_far_outside_the_export_are_reported_in_the_run(prefect_test_harness, synthetic, tmp_path):
    """Rows set aside are reported, and nothing else of them exists for the run: a customer or an
    item seen only in them is not counted (the summary's "of N customers" would otherwise blame
    "took every item" for a customer who took nothing), and the run's rows are the rows used."""
    from flows.nightly import nightly

    set_aside = [
        ("1", "1/1/1900 0:00", "Curso deporte 3", "5"),
        ("2", "6/1/2099 10:00", "Only in 2099", "4"),  # an item seen only here
        ("777777", "6/1/2099 10:00", "Curso deporte 3", "5"),  # a customer seen only here
    ]
    data = tmp_path / "interactions.csv"
    data.write_text(csv_text([*synthetic.rows, *set_aside]))
    summary = nightly(RunOptions(data=data, output=tmp_path / "out", **EPOCHS))
    customers, items = synthetic.frame["user_id"].nunique(), synthetic.frame["item"].nunique()
    assert summary["input_rows"] == len(synthetic.rows)
    assert (summary["customers"], summary["users"], summary["items"]) == (customers, customers, items)
    assert any("set aside" in note and f"line {len(synthetic.rows) + 2}" in note for note in summary["notes"])
    [(metrics, rows, users, n_items)] = read_sql(tmp_path / "out" / "recsys.db", "SELECT metrics, rows, users, items FROM runs")
    assert (rows, users, n_items) == (len(synthetic.rows), customers, items)
    record = json.loads(metrics)["set_aside"]
    assert record["rows"] == 3 and record["first_date"] == "1900-01-01 00:00:00"
    assert not read_sql(tmp_path / "out" / "recsys.db", "SELECT 1 FROM recommendations WHERE user_id = '777777' OR item = 'Only in 2099'")


# --- no start-up noise in the log or in output that is not a terminal ----------------------------------

NOISE = re.compile(r"absl::InitializeLog|oneDNN|cudart|cuda drivers|TensorRT|^[IWEF]\d{4} \d\d:\d\d:\d\d", re.MULTILINE)


# What the terminal must not show besides (Prefect's task-state lines, from Dask workers too; its
# telemetry notice; its temporary server stopping).
PREFECT_NOISE = re.compile(r"Finished in state|anonymous usage|telemetry|Stopping temporary server|temporary server")


# A sitecustomize that holds back Prefect's temporary server at start-up (no other process acts on it).
SLOW_SERVER = """
import os, time
if os.environ.get("PREFECT__SERVER_EPHEMERAL") == "1":  # only in Prefect's temporary server
    time.sleep({seconds})
"""


@pytest.mark.parametrize("server", ["session server", "temporary server", "dask workers"])
def test_recsys_run_piped_prints_no_tensorflow_or_prefect_noise(prefect_test_harness, synthetic, tmp_path, server):
    """`recsys run 2>&1 | cat`: the progress, the summary; no TensorFlow/absl start-up lines (C++
    code writing to fd 2), in the output or in DIR/logs/recsys.log; no Prefect lines but warnings.
    The temporary-server case is also a machine's first run, its server slower than Prefect's default."""
    from prefect.settings import PREFECT_API_URL

    data = tmp_path / "interactions.csv"
    data.write_text(csv_text(synthetic.rows))
    env = {k: v for k, v in os.environ.items() if k not in ("RECSYS_DB_URL", "TF_CPP_MIN_LOG_LEVEL", "PREFECT_API_URL")}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    runner = []
    if server == "dask workers":
        runner = ["--task-runner", "dask", "--shard-size", "40"]  # three shards on a local cluster
    if server in ("session server", "dask workers"):
        env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    else:
        # The README's first command on a fresh 2-core machine: the temporary Prefect server creates
        # and migrates its database before it answers, which took longer than Prefect's 20 s default
        # and failed the run. Here the server is held back 25 s at start-up (a sitecustomize that
        # only Prefect's server process acts on); the run waits for it and succeeds.
        env.pop("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", None)
        site = tmp_path / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(SLOW_SERVER.format(seconds=25))
        env.update(PREFECT_HOME=str(tmp_path / "fresh-home"),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")])))
    output = tmp_path / "out"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "recsys.cli", "run", "--data", str(data), "--output", str(output), "--epochs", "1",
         "--ranking-epochs", "1", "--no-evaluate", *runner],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert "succeeded" in done.stdout
    assert not NOISE.search(done.stdout), done.stdout[:3000]
    assert not PREFECT_NOISE.search(done.stdout), done.stdout[-3000:]
    log = (output / "logs" / "recsys.log").read_text()
    assert "published" in log and not NOISE.search(log), log[:3000]
    if server == "temporary server":
        assert time.perf_counter() - started > 25  # the server was held back


# --- links between the product's runs and Prefect's -----------------------------------------------------


def test_the_flow_run_is_named_after_the_run_id_and_its_artifact_names_it(prefect_test_harness, synthetic, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterName

    summary, _, _ = run_flow(synthetic, tmp_path, **EPOCHS)
    run_id = summary["run_id"]
    with get_client(sync_client=True) as client:
        [flow_run] = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run_id])))
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["recsys-run"])))
    assert flow_run.state.is_completed()
    mine = [artifact for artifact in artifacts if artifact.flow_run_id == flow_run.id]
    assert len(mine) == 1 and f"**Run:** {run_id} (succeeded)" in mine[0].data


def test_a_scheduled_run_writes_the_log_file_and_keeps_a_failure_before_it_was_recorded(
    prefect_test_harness, synthetic, tmp_path, monkeypatch, no_load_retries
):
    """A deployment's run: DIR/logs/recsys.log as `recsys run` writes it, its lines naming the flow
    run and the task; a bad export at 02:00 is in `recsys runs` (the store itself untouched)."""
    import flows.nightly
    from recsys.cli.app import app

    monkeypatch.setattr(flows.nightly, "is_scheduled", lambda: True)
    summary, _, output = run_flow(synthetic, tmp_path, **EPOCHS)
    log = (output / "logs" / "recsys.log").read_text()
    assert f"recsys run {summary['run_id']}: " in log
    assert re.search(rf"prefect\.task_runs \[{summary['run_id']} / publish-\w+\] - Finished in state Completed", log), (summary['run_id'], log[-1500:])

    bad = tmp_path / "bad.csv"
    bad.write_text(csv_text(BAD_ROWS))
    before = read_sql(output / "recsys.db", "SELECT run_id, status FROM runs")
    with pytest.raises(DataError):
        flows.nightly.nightly(RunOptions(data=bad, output=output, **EPOCHS))
    assert read_sql(output / "recsys.db", "SELECT run_id, status FROM runs") == before
    listed = CliRunner().invoke(app, ["runs", "--output", str(output)])
    assert listed.exit_code == 0, listed.output
    [line] = [line for line in listed.stdout.splitlines() if "rating 'cinco'" in line]
    assert "DataError" in line and str(bad) in line
    assert "rating 'cinco'" in (output / "logs" / "recsys.log").read_text()
