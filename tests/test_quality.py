"""The quality gate: gate rules, markdown/JSON records, the flow with evaluation on, the degraded
path (best baseline published), `recsys evaluate` and `recsys runs`."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import csv_text, make_synthetic
from recsys.evaluation.gate import Gate, quality_gate
from recsys.evaluation.metrics import mean_interval
from recsys.evaluation.protocol import TABLE_COLUMNS, Evaluation, markdown_table, metrics_record

try:
    import implicit  # noqa: F401

    HAS_IMPLICIT = True
except ImportError:  # pragma: no cover - depends on the environment
    HAS_IMPLICIT = False

BASELINES = ["popularity", "recent_popularity_90d", "item_knn", "ease", "rp3beta", "next_item"] + (["als"] if HAS_IMPLICIT else [])
RECOMMENDERS = ["two_stage", *BASELINES]
METRICS = ("ndcg", "recall", "hit_rate", "coverage")
EPOCHS = ["--epochs", "2", "--ranking-epochs", "2"]
WIDE = {"COLUMNS": "200"}  # a wide terminal, so Rich tables are not cut
FORCED = Gate(False, "popularity", "forced for the test", "popularity", (-0.1, -0.2, -0.05))


@pytest.fixture(autouse=True)
def no_db_url_env(monkeypatch):
    monkeypatch.delenv("RECSYS_DB_URL", raising=False)


def table(**ndcg: float) -> pd.DataFrame:
    """A metrics frame as evaluate_recommenders returns it, with the given NDCG per recommender."""
    rows = []
    for n, (name, value) in enumerate(ndcg.items()):
        rows.append({"recommender": name, "ndcg": value, "ndcg_low": value - 0.01, "ndcg_high": value + 0.02,
                     "recall": value + 0.1, "hit_rate": value + 0.2, "coverage": 0.5 + n / 100, "users": 120, "k": 12,
                     "seconds": 1.25 * n})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def evaluation(k: int = 12, **per_user: np.ndarray) -> Evaluation:
    """An evaluation of recommenders whose NDCG per customer (the same customers) is given."""
    rows = []
    for name, values in per_user.items():
        low, high = mean_interval(values)
        rows.append({"recommender": name, "ndcg": float(np.mean(values)), "ndcg_low": low, "ndcg_high": high,
                     "recall": 0.0, "hit_rate": 0.0, "coverage": 0.0, "users": len(values), "k": k, "seconds": 0.0})
    return Evaluation(table=pd.DataFrame(rows, columns=TABLE_COLUMNS), per_user=dict(per_user))


BASE = np.random.default_rng(0).random(400)  # one NDCG per customer, 400 customers


def noisy(shift: float, spread: float, seed: int) -> np.ndarray:
    """``BASE`` moved by ``shift`` on average, customer by customer with noise of ``spread``."""
    return np.clip(BASE + shift + np.random.default_rng(seed).normal(0.0, spread, len(BASE)), 0.0, 1.0)


# --- quality_gate -----------------------------------------------------------------------------------


def test_gate_passes_a_model_clearly_above_the_best_baseline():
    gate = quality_gate(evaluation(two_stage=noisy(0.05, 0.01, 1), popularity=noisy(-0.2, 0.01, 2), ease=BASE))
    assert gate.passed is True and gate.publish == "two_stage" and gate.best_baseline == "ease"
    mean, low, high = gate.difference
    assert 0.04 < low < mean < high
    assert gate.reason.startswith("model NDCG@12 ")
    assert "vs best baseline ease " in gate.reason and gate.reason.endswith("not significantly below")


def test_gate_passes_a_model_below_the_best_baseline_within_the_noise():
    """0.005 below on average, but customer by customer it is a coin toss: not significantly below."""
    gate = quality_gate(evaluation(two_stage=noisy(-0.005, 0.3, 3), rp3beta=BASE, popularity=noisy(-0.1, 0.1, 4)))
    mean, low, high = gate.difference
    assert mean < 0 < high
    assert gate.passed is True and gate.publish == "two_stage"


def test_gate_fails_a_model_that_beats_popularity_but_is_significantly_below_the_best_baseline():
    """The gate compares with the best baseline, not with the weakest one."""
    model = noisy(-0.03, 0.01, 5)
    gate = quality_gate(evaluation(two_stage=model, popularity=noisy(-0.2, 0.01, 6), ease=BASE, rp3beta=noisy(-0.01, 0.01, 7)))
    assert gate.passed is False and gate.publish == "ease" == gate.best_baseline
    mean, low, high = gate.difference
    assert low < mean < high < 0
    assert gate.reason.endswith("significantly below: published ease instead")
    assert f"{model.mean():.4f}" in gate.reason and f"{BASE.mean():.4f}" in gate.reason


def test_gate_prefers_popularity_among_tied_best_baselines():
    for order in (["item_knn", "popularity"], ["popularity", "item_knn"]):
        values = {"two_stage": noisy(-0.3, 0.01, 8), **{name: BASE for name in order}, "recent_popularity_90d": noisy(-0.1, 0.01, 9)}
        gate = quality_gate(evaluation(**values))
        assert (gate.passed, gate.publish) == (False, "popularity")


def test_gate_reason_names_the_k_the_table_was_scored_at():
    """`recsys run --top-k 5` scores NDCG@5; the reason recorded in runs.message must not say NDCG@12."""
    gate = quality_gate(evaluation(k=5, two_stage=noisy(-0.3, 0.01, 10), popularity=BASE))
    assert gate.reason.startswith("model NDCG@5 ")


def test_gate_with_a_single_customer_passes_for_want_of_evidence():
    gate = quality_gate(evaluation(two_stage=np.array([0.1]), popularity=np.array([0.9])))
    assert gate.passed is True


# --- markdown_table / metrics_record -----------------------------------------------------------------


def test_markdown_table_has_a_header_and_one_row_per_recommender():
    frame = table(two_stage=0.123456, popularity=0.2, item_knn=1 / 3)
    text = markdown_table(frame, "Held-out NDCG@12 and friends (120 customers)")
    assert text.splitlines() == [
        "### Held-out NDCG@12 and friends (120 customers)",
        "",
        "| recommender | ndcg | 95% interval | recall | hit_rate | coverage | users | seconds |",
        "|---|---|---|---|---|---|---|---|",
        "| two_stage | 0.1235 | 0.1135 to 0.1435 | 0.2235 | 0.3235 | 0.5000 | 120 | 0.0 |",
        "| popularity | 0.2000 | 0.1900 to 0.2200 | 0.3000 | 0.4000 | 0.5100 | 120 | 1.2 |",
        "| item_knn | 0.3333 | 0.3233 to 0.3533 | 0.4333 | 0.5333 | 0.5200 | 120 | 2.5 |",
    ]


def test_metrics_record_round_trips_names_and_values():
    frame = table(two_stage=0.123456789, popularity=0.2, item_knn=1 / 3)
    record = metrics_record(frame)
    assert list(record) == ["two_stage", "popularity", "item_knn"]
    assert json.loads(json.dumps(record)) == record
    for row in frame.to_dict("records"):
        values = record[row["recommender"]]
        assert set(values) == {*METRICS, "ndcg_low", "ndcg_high", "users", "seconds", "k"}
        for name in (*METRICS, "ndcg_low", "ndcg_high", "users", "seconds", "k"):
            assert values[name] == pytest.approx(row[name], abs=5e-7)
    assert record["two_stage"]["ndcg"] == 0.123457
    assert record["item_knn"]["ndcg"] == 0.333333
    assert record["popularity"]["users"] == 120


# --- the flow with evaluation on, then a forced degraded run, in one store ---------------------------


def read_sql(db: Path, query: str, params=()) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute(query, params).fetchall()


def quality_artifacts() -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["recsys-quality"])))


@pytest.fixture(scope="module")
def two_runs(prefect_test_harness, synthetic, tmp_path_factory):
    """Run A: the flow with evaluation on (2 epochs). Run B: `recsys run` with the gate forced to
    fail (publish popularity), into the same store. Returns a dict of what each left behind."""
    import recsys.cli.console
    import recsys.evaluation.gate
    from flows.nightly import nightly
    from recsys.cli.app import app
    from recsys.settings import RunOptions

    folder = tmp_path_factory.mktemp("quality")
    data = folder / "interactions.csv"
    data.write_text(csv_text(synthetic.rows), encoding="utf-8")
    output = folder / "out"
    artifacts_before = {a.id for a in quality_artifacts()}
    summary_a = nightly(RunOptions(data=data, output=output, epochs=2, ranking_epochs=2))
    artifacts_a = [a for a in quality_artifacts() if a.id not in artifacts_before]

    summaries: list[dict] = []
    real_print_summary = recsys.cli.console.print_summary

    def keep_summary(summary: dict) -> None:
        summaries.append(summary)
        real_print_summary(summary)

    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("RECSYS_DB_URL", raising=False)
        patch.setattr(recsys.evaluation.gate, "quality_gate", lambda table: FORCED)
        patch.setattr(recsys.cli.console, "print_summary", keep_summary)
        result_b = CliRunner().invoke(app, ["run", "--data", str(data), "--output", str(output), *EPOCHS], env=WIDE)
    assert result_b.exit_code == 0, (result_b.output, result_b.exception)
    assert len(summaries) == 1
    return {
        "data": data, "output": output, "summary_a": summary_a, "artifacts_a": artifacts_a,
        "result_b": result_b, "summary_b": summaries[0],
    }


def run_metrics(output: Path, run_id: str) -> tuple[str, str | None, dict]:
    [(status, message, metrics)] = read_sql(
        output / "recsys.db", "SELECT status, message, metrics FROM runs WHERE run_id = ?", (run_id,)
    )
    return status, message, json.loads(metrics)


@pytest.mark.slow
def test_flow_with_evaluation_records_the_evaluation_and_the_gate(two_runs):
    summary = two_runs["summary_a"]
    status, message, metrics = run_metrics(two_runs["output"], summary["run_id"])
    evaluation = metrics["evaluation"]
    assert set(evaluation) == set(RECOMMENDERS)  # the store writes JSON with sorted keys
    for name, values in evaluation.items():
        for metric in (*METRICS, "ndcg_low", "ndcg_high"):
            assert 0.0 <= values[metric] <= 1.0, (name, metric, values[metric])
        assert values["ndcg_low"] <= values["ndcg"] <= values["ndcg_high"]
        assert values["users"] == 120  # every synthetic customer has 4+ items
    assert summary["evaluation"] == evaluation
    assert "evaluate" in metrics["seconds"]
    assert set(metrics["tuning"]) == {"ease", "rp3beta"}

    gate = metrics["gate"]
    assert set(gate) == {"passed", "published", "reason", "best_baseline", "difference"}
    best = max(BASELINES, key=lambda name: (evaluation[name]["ndcg"], name == "popularity"))
    assert gate["best_baseline"] == best
    mean, low, high = gate["difference"]
    assert mean == pytest.approx(evaluation["two_stage"]["ndcg"] - evaluation[best]["ndcg"], abs=2e-6)
    # The recorded verdict is the gate's rule applied to the recorded figures.
    assert gate["passed"] is (high >= 0)
    assert f"{evaluation['two_stage']['ndcg']:.4f}" in gate["reason"] and f"{evaluation[best]['ndcg']:.4f}" in gate["reason"]
    if gate["passed"]:
        assert gate["published"] == "two_stage"
        assert (summary["status"], summary["reason"], status, message) == ("succeeded", None, "succeeded", None)
    else:
        assert gate["published"] == best
        assert (summary["status"], status) == ("degraded", "degraded")
        assert summary["reason"] == message == gate["reason"]


@pytest.mark.slow
def test_flow_with_evaluation_creates_the_quality_artifact(two_runs):
    [artifact] = two_runs["artifacts_a"]
    assert artifact.key == "recsys-quality"
    assert artifact.type == "markdown"
    _, _, metrics = run_metrics(two_runs["output"], two_runs["summary_a"]["run_id"])
    text = artifact.data
    # The product's run id first: the link from Prefect's UI to `recsys runs` and the store.
    assert text.startswith(f"**Run:** {two_runs['summary_a']['run_id']}\n\n### Held-out NDCG@12 and friends (120 customers)\n")
    assert text.endswith(f"\n\n**Gate:** {metrics['gate']['reason']}")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert set(rows) == {"recommender", *RECOMMENDERS}
    for name in RECOMMENDERS:
        cells = [c.strip() for c in rows[name].strip("|").split("|")]
        low, high = (float(v) for v in cells[2].split(" to "))
        for value, metric in zip([cells[1], low, high, *cells[3:6]], ("ndcg", "ndcg_low", "ndcg_high", "recall", "hit_rate", "coverage")):
            assert abs(float(value) - metrics["evaluation"][name][metric]) <= 5e-5 + 1e-6, (name, metric, value)
        assert cells[6] == "120"


@pytest.mark.slow
def test_forced_gate_failure_degrades_the_run(two_runs):
    summary = two_runs["summary_b"]
    assert summary["status"] == "degraded"
    assert summary["reason"] == "forced for the test"
    assert summary["users"] == 120 and summary["rows"] == 120 * 12
    # The model is trained (the gate reads its own held-out evaluation), then not published.
    assert set(summary["seconds"]) == {
        "load", "evaluate", "train_retrieval", "choose_ranker", "refresh_retrieval", "train_ranking", "baseline_lists",
        "publish",
    }
    status, message, metrics = run_metrics(two_runs["output"], summary["run_id"])
    assert (status, message) == ("degraded", "forced for the test")
    assert metrics["gate"] == {
        "passed": False, "published": "popularity", "reason": "forced for the test", "best_baseline": "popularity",
        "difference": [-0.1, -0.2, -0.05],
    }
    assert set(metrics["evaluation"]) == set(RECOMMENDERS)
    assert list(summary["evaluation"]) == RECOMMENDERS
    assert "scoring_seconds" not in metrics  # the model's lists were not computed


@pytest.mark.slow
def test_degraded_run_publishes_the_popularity_lists(two_runs, synthetic):
    from conftest import interactions_of
    from recsys.models.baselines import Popularity
    from test_flow import check_lists

    output = two_runs["output"]
    lists = check_lists(output, synthetic.frame)  # 12 distinct, unconsumed items each; Parquet == SQL
    assert set(lists["run_id"]) == {two_runs["summary_b"]["run_id"]}
    data = interactions_of(synthetic.frame)
    users = data.users
    recommended = Popularity().fit(data).recommend(np.arange(data.n_users), 12, exclude_seen=True)
    expected = {user: data.items[row].tolist() for user, row in zip(users, recommended.items)}
    expected_scores = {user: list(row) for user, row in zip(users, recommended.scores)}
    ordered = lists.sort_values(["user_id", "rank"])
    published = ordered.groupby("user_id")["item"].apply(list).to_dict()
    published_scores = ordered.groupby("user_id")["score"].apply(list).to_dict()
    assert published.keys() == expected.keys()
    mismatched = [user for user in users if published[user] != expected[user]]
    assert not mismatched, [(u, published[u], expected[u]) for u in mismatched[:3]]
    for user in users:
        assert published_scores[user] == pytest.approx(expected_scores[user])


@pytest.mark.slow
def test_cli_run_says_quality_gate_when_degraded(two_runs):
    out = two_runs["result_b"].stdout
    assert "degraded" in out
    assert "quality gate: forced for the test" in out
    # The validation table of the summary names the model and every baseline.
    for name in RECOMMENDERS:
        assert name in out, name


@pytest.mark.slow
def test_cli_runs_lists_both_runs_newest_first(two_runs):
    from recsys.cli.app import app
    from recsys.store.lookup import recent_runs
    from recsys.settings import resolve_db_url

    output = two_runs["output"]
    a, b = two_runs["summary_a"]["run_id"], two_runs["summary_b"]["run_id"]
    rows = recent_runs(resolve_db_url(output))
    assert [r["run_id"] for r in rows] == [b, a]
    assert [bool(r["is_current"]) for r in rows] == [True, False]
    assert rows[0]["status"] == "degraded" and rows[0]["message"] == "forced for the test"
    assert rows[0]["users"] == 120
    assert rows[0]["metrics"]["gate"]["published"] == "popularity"
    assert [r["run_id"] for r in recent_runs(resolve_db_url(output), limit=1)] == [b]

    result = CliRunner().invoke(app, ["runs", "--output", str(output)], env=WIDE)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    # Table rows (boxed) first, newest first; the current run carries the "* " marker.
    table_rows = [line for line in lines if (a in line or b in line) and ": " not in line]
    assert len(table_rows) == 2
    line_b, line_a = table_rows
    assert f"* {b}" in line_b and "degraded" in line_b and "120" in line_b
    assert a in line_a and f"* {a}" not in line_a
    assert two_runs["summary_a"]["status"] in line_a
    evaluation = rows[0]["metrics"]["evaluation"]
    assert f"{evaluation['two_stage']['ndcg']:.3f}/{evaluation['popularity']['ndcg']:.3f}" in line_b
    assert "-0.200..-0.050" in line_b
    # Why the run was degraded: a note under the table.
    assert f"{b}: forced for the test" in lines

    limited = CliRunner().invoke(app, ["runs", "--output", str(output), "--limit", "1"], env=WIDE)
    assert limited.exit_code == 0 and b in limited.stdout and a not in limited.stdout


def test_cli_runs_without_a_store_exits_1_with_one_line(tmp_path):
    from recsys.cli.app import app

    result = CliRunner().invoke(app, ["runs", "--output", str(tmp_path / "nothing")])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stderr.splitlines() == [
        f"error: no store at {(tmp_path / 'nothing' / 'recsys.db').resolve()}: "
        "run `recsys run` first (or pass --output / --db-url)"
    ]
    assert not (tmp_path / "nothing").exists()


# --- what an 80-column terminal (or a pipe) shows -----------------------------------------------------


def test_print_runs_in_80_columns_shows_status_and_current(monkeypatch, capsys):
    """`recsys runs` piped or in a standard terminal: nothing in the table is cut off."""
    from recsys.cli.console import print_runs

    monkeypatch.setenv("COLUMNS", "80")
    evaluation = {"two_stage": {"ndcg": 0.152401}, "ease": {"ndcg": 0.334161}}
    gate = {"best_baseline": "ease", "difference": [-0.18176, -0.2101, -0.1502]}
    reason = (
        "model NDCG@12 0.1524 vs best baseline ease 0.3342: difference -0.1818 (95% interval -0.2101 to -0.1502), "
        "significantly below: published ease instead"
    )
    rows = [
        {"run_id": "20240302T020000123456Z", "started_at": "2024-03-02 02:00:00.123456", "finished_at": None,
         "status": "degraded", "is_current": 1, "users": 125_000, "metrics": {"evaluation": evaluation, "gate": gate},
         "message": reason},
        {"run_id": "20240301T020000123456Z", "started_at": "2024-03-01 02:00:00.123456", "finished_at": None,
         "status": "succeeded", "is_current": 0, "users": 124_000, "metrics": {}, "message": None},
    ]
    print_runs(rows)
    out = capsys.readouterr().out
    assert "…" not in out, out
    lines = out.splitlines()
    [current] = [line for line in lines if "20240302T020000123456Z" in line and ": " not in line]
    assert "* 20240302T020000123456Z" in current and "degraded" in current
    assert "125,000" in current and "0.152/0.334" in current and "-0.210..-0.150" in current
    [older] = [line for line in lines if "20240301T020000123456Z" in line and ": " not in line]
    assert "*" not in older and "succeeded" in older and "124,000" in older
    assert f"20240302T020000123456Z: {reason}" in lines


def test_print_evaluation_in_80_columns_shows_every_recommender_name(monkeypatch, capsys):
    """`recsys evaluate` piped or in a standard terminal: the recommender names stay legible."""
    from recsys.cli.console import print_evaluation
    from recsys.evaluation.protocol import EvaluationReport

    monkeypatch.setenv("COLUMNS", "80")
    cold = table(popularity=0.1)
    cold["recommender"] = ["cold_start_list (recent_popularity_90d)"]
    report = EvaluationReport(
        split="test", holdout=Evaluation(table(**{name: 0.1 for name in RECOMMENDERS})), cold_start=Evaluation(cold),
        cold_start_cut=int(pd.Timestamp("2022-09-26").timestamp()),
    )
    print_evaluation(report)
    out = capsys.readouterr().out
    missing = [name for name in RECOMMENDERS if name not in out]
    assert not missing, f"names cut off: {missing}\n{out}"
    # Every figure whole (no "0.…", no "ndcg@…"), every line within 80 columns.
    assert "…" not in out, out
    assert max(len(line) for line in out.splitlines()) <= 80, out
    [popularity] = [line for line in out.splitlines() if line.split()[:1] == ["popularity"]]
    assert popularity.split()[1:] == ["0.1000", "0.090-0.120", "0.2000", "0.3000", "0.510", "120"], popularity
    assert "recent_popularity_90d*" in out


@pytest.mark.parametrize("as_format", ["json", "csv"])
def test_print_evaluation_as_json_or_csv_prints_every_figure_whole(capsys, as_format):
    import csv
    import io

    from recsys.cli.console import print_evaluation
    from recsys.evaluation.protocol import EvaluationReport

    holdout = table(**{name: 0.123456789 for name in RECOMMENDERS})
    cold = table(popularity=0.1)
    cold["recommender"] = ["cold_start_list (recent_popularity_90d)"]
    report = EvaluationReport(split="test", holdout=Evaluation(holdout), cold_start=Evaluation(cold), cold_start_cut=0)
    print_evaluation(report, as_format)
    out = capsys.readouterr().out
    if as_format == "json":
        document = json.loads(out)
        rows = document["holdout"]
        assert document["cold_start"][0]["recommender"] == "cold_start_list (recent_popularity_90d)"
        assert document["cold_start_cut"] == "1970-01-01T00:00:00+00:00"
    else:
        rows = [row for row in csv.DictReader(io.StringIO(out)) if row["table"] == "holdout"]
    assert [row["recommender"] for row in rows] == RECOMMENDERS
    assert float(rows[0]["ndcg"]) == 0.123456789 and float(rows[0]["seconds"]) == 0.0


# --- `recsys evaluate` --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory) -> Path:
    """A 40-customer export (the model trains with derived epochs in `recsys evaluate`)."""
    path = tmp_path_factory.mktemp("evaluate") / "small.csv"
    path.write_text(csv_text(make_synthetic(n_users=40).rows), encoding="utf-8")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("split", ["test", "validation"])
def test_cli_evaluate_prints_every_recommender_and_cold_start(small_csv, split):
    from recsys.cli.app import app

    result = CliRunner().invoke(app, ["evaluate", "--data", str(small_csv), "--split", split], env=WIDE)
    assert result.exit_code == 0, (result.output, result.exception)
    out = result.stdout
    assert f"per-customer temporal holdout ({split})" in out
    assert "cold start (customers first seen after " in out
    for name in RECOMMENDERS:
        assert name in out, name
    assert "recent_popularity_90d*" in out and "*: the cold-start list" in out
    for header in ("ndcg", "95% CI", "recall", "hit", "cover", "custs"):
        assert header in out
    # Every holdout row has 4-decimal metrics in [0, 1] and the scored customer count.
    holdout = out.split("cold start (customers first seen after ")[0]
    for name in RECOMMENDERS:
        [line] = [line for line in holdout.splitlines() if line.split()[:1] == [name]]
        cells = line.split()
        assert cells[0] == name
        ndcg, (low, high) = float(cells[1]), (float(v) for v in cells[2].split("-"))
        assert low <= ndcg <= high, cells
        assert all(0.0 <= float(c) <= 1.0 and len(c.split(".")[1]) == 4 for c in (cells[1], *cells[3:5])), cells
        assert cells[6] == "40"


@pytest.mark.parametrize("shape", ["one item each", "every row at one time"])
@pytest.mark.parametrize("split", ["test", "validation"])
def test_cli_evaluate_with_nothing_to_hold_out_says_why_in_one_line(tmp_path, shape, split):
    """No customer has a later item: one line saying so (exit 1, as with too little data to train
    on), not a table of nan over 0 customers."""
    from recsys.cli.app import app

    rows = make_synthetic(n_users=40).rows
    if shape == "one item each":
        firsts = {}
        for row in rows:
            firsts.setdefault(row[0], row)
        rows, why = list(firsts.values()), "every customer took a single item (40 customers)"
    else:
        rows, why = [(user, "6/15/2022 12:00", item, rating) for user, _, item, rating in rows], "took all of their items at one time"
    data = tmp_path / "export.csv"
    data.write_text(csv_text(rows), encoding="utf-8")
    result = CliRunner().invoke(app, ["evaluate", "--data", str(data), "--split", split])
    assert result.exit_code == 1, (result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    [line] = result.stderr.splitlines()
    assert line.startswith("error: nothing to evaluate: no customer has a later item to hold out: ") and why in line, line
    assert result.stdout == ""


def test_cli_evaluate_rejects_an_unknown_split_with_one_line(small_csv):
    from recsys.cli.app import app

    result = CliRunner().invoke(app, ["evaluate", "--data", str(small_csv), "--split", "nonsense"])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stderr.splitlines() == ["error: --split must be 'test' or 'validation'"]
    assert result.stdout == ""


def test_cli_evaluate_on_a_missing_file_exits_1_with_one_line(tmp_path):
    from recsys.cli.app import app

    missing = tmp_path / "missing.csv"
    result = CliRunner().invoke(app, ["evaluate", "--data", str(missing)])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing.csv" in lines[0]
