"""The run report: written by `recsys report` and by the nightly flow, self-contained, every
section present whatever the store holds, and opened in a real headless Chromium."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import SAMPLE, list_table, popular_list, run_flow
from recsys.settings import RunOptions

CHROMIUM = Path("/usr/bin/chromium")
SECTIONS = ("quality", "trend", "lists", "reasons", "segments", "rules")


@pytest.fixture(autouse=True)
def no_db_url_env(monkeypatch):
    monkeypatch.delenv("RECSYS_DB_URL", raising=False)


def external_references(page: str) -> list[str]:
    """Every src/href (and CSS url()) of ``page`` that a browser would fetch from the network."""
    found = re.findall(r"""(?:src|href)\s*=\s*["']?\s*((?:https?:)?//[^"'\s>]+)""", page, flags=re.I)
    found += re.findall(r"""url\(\s*["']?((?:https?:)?//[^)"']+)""", page, flags=re.I)
    found += re.findall(r"@import", page)
    return found


# --- a store after real runs on the committed sample -------------------------------------------------


@pytest.fixture(scope="module")
def sample_store(prefect_test_harness, tmp_path_factory):
    """Two runs of the nightly flow on the sample export into one store: evaluated, then not
    (``--no-evaluate``). Returns (summaries, output folder)."""
    from flows.nightly import nightly

    if not SAMPLE.is_file():
        pytest.skip("no committed sample in data/")
    output = tmp_path_factory.mktemp("report") / "out"
    first = nightly(RunOptions(data=SAMPLE, output=output, epochs=2, ranking_epochs=2))
    first_page = (output / "report.html").read_text(encoding="utf-8")
    second = nightly(RunOptions(data=SAMPLE, output=output, epochs=2, ranking_epochs=2, evaluate=False))
    return (first, second), output, first_page


@pytest.mark.slow
def test_the_flow_writes_a_self_contained_report_after_publishing(sample_store):
    (first, second), output, first_page = sample_store
    assert first["report"] == str(output / "report.html") == second["report"]
    page = (output / "report.html").read_text(encoding="utf-8")
    for text in (first_page, page):
        assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
        assert external_references(text) == []
        assert "<script" not in text and "<link" not in text and "<img" not in text
        for section in SECTIONS:
            assert f'id="{section}"' in text
    # The evaluated run's page: quality chart and table, trend, lists, reasons, segments; no rules.
    assert first_page.count("<svg") == 6  # quality, trend, top items, families, reasons, segments
    # The run's own status, whichever the gate gave: with 2 epochs on the sample the model can fall
    # significantly below RP3beta, and then the run publishes RP3beta as degraded, and says so.
    assert first["status"] in ("succeeded", "degraded")
    assert f"run <b>{first['run_id']}</b> ({first['status']})" in first_page
    assert "no <code>reason</code> column" not in first_page and "Why items are in the lists" in first_page
    assert "No rules were applied in this run." in first_page
    for name in first["evaluation"]:
        assert f"<td>{name}</td>" in first_page
    # The unevaluated run published after it: quality and segments fall back to the evaluated one, said so.
    assert f"these figures are of run {first['run_id']}, the latest that was" in page
    assert "1 of the last 2 runs were not evaluated" in page


@pytest.mark.slow
def test_the_evaluated_run_records_quality_by_segment(sample_store):
    (first, _), output, _ = sample_store
    with sqlite3.connect(output / "recsys.db") as conn:
        metrics = json.loads(conn.execute("SELECT metrics FROM runs WHERE run_id = ?", (first["run_id"],)).fetchone()[0])
    segments = metrics["segments"]
    assert list(segments) == ["1-2 items", "3+ items", "new customers"]  # JSON keys are stored sorted
    best = metrics["gate"]["best_baseline"]
    returning = segments["1-2 items"]["users"] + segments["3+ items"]["users"]
    assert returning == metrics["evaluation"]["two_stage"]["users"]  # every evaluated customer, once
    for segment in ("1-2 items", "3+ items"):
        assert set(segments[segment]) == {"users", "two_stage", best}
        mean, low, high = segments[segment]["two_stage"]
        assert low <= mean <= high
    new = segments["new customers"]
    assert new["users"] > 0 and set(new) == {"users", "popularity", "cold_start_list (recent_popularity_90d)"}


@pytest.mark.slow
def test_the_flow_attaches_the_summary_as_artifacts(sample_store):
    from prefect.artifacts import Artifact

    (first, second), output, _ = sample_store
    summary = Artifact.get("recsys-run-summary")
    rows = {row["figure"]: row["value"] for row in summary.data} if isinstance(summary.data, list) else None
    rows = rows or {row["figure"]: row["value"] for row in json.loads(summary.data)}
    assert rows["run"] == second["run_id"] and rows["held-out NDCG@12"] == "not evaluated"
    quality = Artifact.get("recsys-quality-table")  # from the first run: the second was not evaluated
    table = quality.data if isinstance(quality.data, list) else json.loads(quality.data)
    assert {row["recommender"] for row in table} == set(first["evaluation"])
    link = Artifact.get("recsys-report")
    assert (output / "report.html").resolve().as_uri() in str(link.data)


@pytest.mark.slow
def test_recsys_report_rewrites_the_report_from_the_store(sample_store, tmp_path):
    from recsys.cli.app import app

    _, output, _ = sample_store
    out = tmp_path / "elsewhere" / "r.html"
    result = CliRunner().invoke(app, ["report", "--output", str(output), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output and out.is_file()
    assert external_references(out.read_text(encoding="utf-8")) == []


# --- the flow stands when the report or its artifacts cannot be made --------------------------------


QUICK = dict(epochs=2, ranking_epochs=2, evaluate=False)


@pytest.mark.slow
def test_a_report_that_cannot_be_written_does_not_fail_the_run(prefect_test_harness, synthetic, tmp_path, monkeypatch):
    import recsys.report.page

    def broken(snapshot):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(recsys.report.page, "render", broken)
    summary, _, output = run_flow(synthetic, tmp_path, **QUICK)
    assert summary["status"] == "succeeded" and summary["report"] is None
    assert not (output / "report.html").exists()
    with sqlite3.connect(output / "recsys.db") as conn:
        assert conn.execute("SELECT status, is_current FROM runs").fetchall() == [("succeeded", 1)]


@pytest.mark.slow
def test_artifacts_that_cannot_be_created_do_not_fail_the_run(prefect_test_harness, synthetic, tmp_path, monkeypatch):
    import prefect.artifacts

    def no_api(*args, **kwargs):
        raise ConnectionError("the Prefect API went away")

    monkeypatch.setattr(prefect.artifacts, "create_table_artifact", no_api)
    monkeypatch.setattr(prefect.artifacts, "create_link_artifact", no_api)
    summary, _, output = run_flow(synthetic, tmp_path, **QUICK)
    assert summary["status"] == "succeeded"
    assert summary["report"] == str(output / "report.html") and (output / "report.html").is_file()


# --- a store built by hand: degraded runs, rules, reasons -------------------------------------------


def hand_built_store(output: Path, reasons: bool = True) -> Path:
    """A store of three runs: evaluated and succeeded, evaluated and degraded with rules, then a
    failed one; the published lists carry a ``reason`` column when ``reasons``."""
    from recsys.store.publish import Store

    store = Store(f"sqlite:///{output / 'recsys.db'}", output)
    store.ensure_schema()
    start = datetime(2026, 11, 1, 2, tzinfo=timezone.utc)

    def evaluation(model: float, best: float) -> dict:
        return {
            "two_stage": {"ndcg": model, "ndcg_low": model - 0.02, "ndcg_high": model + 0.02, "recall": 0.4, "hit_rate": 0.5, "coverage": 0.9, "users": 400},
            "ease": {"ndcg": best, "ndcg_low": best - 0.02, "ndcg_high": best + 0.02, "recall": 0.41, "hit_rate": 0.52, "coverage": 0.5, "users": 400},
            "popularity": {"ndcg": 0.15, "ndcg_low": 0.13, "ndcg_high": 0.17, "recall": 0.3, "hit_rate": 0.35, "coverage": 0.05, "users": 400},
        }

    segments = {
        "new customers": {"users": 30, "cold_start_list (recent_popularity_90d)": [0.2, 0.15, 0.25], "popularity": [0.18, 0.12, 0.24]},
        "1-2 items": {"users": 300, "two_stage": [0.31, 0.28, 0.34], "ease": [0.3, 0.27, 0.33]},
        "3+ items": {"users": 100, "two_stage": [0.25, 0.2, 0.3], "ease": [0.33, 0.28, 0.38]},
    }
    rules = {
        "config": '[rules]\nblocklist = ["Curso Prueba"]\nmax_per_family = 2\n',
        "config_sha256": "ab" * 32,
        "removed": {"blocklist": 40, "inactive": 3, "expired": 7, "family_cap": 120, "seen_family": 0},
        "pins_placed": 95,
        "ndcg_with_rules": [0.27, 0.25, 0.29],
        "ndcg_without_rules": [0.3, 0.28, 0.32],
    }
    # Names with markup and dollar signs: escaped in the page, not mathtext in the charts.
    items = [f"Bono virtual Crepes&Waffles {n}" for n in (10, 20, 30)] + [f"Cine <b>{n}</b>" for n in range(8)] + ["Bono $50 $100"]
    why = ["because you redeemed Cine 1", "because you redeemed Bono 2", "popular lately", "campaign", "new in the catalogue"]
    for night, (status, model, message) in enumerate(
        [("succeeded", 0.30, None), ("degraded", 0.26, "model NDCG@12 0.26 vs best baseline ease 0.31: published ease instead")]
    ):
        run_id = f"2026110{night + 1}T020000000000Z"
        store.begin_run(run_id, start + timedelta(days=night), "export.csv")
        lists = list_table([(str(u), r, items[(u + r) % len(items)], 1.0 / r) for u in range(50) for r in range(1, 13)])
        metrics = {
            "evaluation": evaluation(model, 0.31),
            "gate": {"passed": status == "succeeded", "best_baseline": "ease", "difference": [model - 0.31, -0.05, 0.01],
                     "reason": message or "not significantly below"},
            "segments": segments,
            **({"rules": rules} if night == 1 else {}),
        }
        store.publish(run_id, start + timedelta(days=night), [lists], popular_list(run_id), status=status,
                      metrics=metrics, message=message, rows=600, users=50, items=len(items) + 3)
    store.begin_run("20261103T020000000000Z", start + timedelta(days=2), "export.csv")
    store.finish_run("20261103T020000000000Z", "failed", message="DataError: export.csv line 3: bad date")
    store.engine.dispose()
    with sqlite3.connect(output / "recsys.db") as conn:
        if reasons:
            conn.execute(f"UPDATE recommendations SET reason = CASE rank % 5 {' '.join(f'WHEN {i} THEN {chr(39)}{w}{chr(39)}' for i, w in enumerate(why))} END")
        else:  # lists published before reasons existed (a rollback across the upgrade)
            conn.execute("ALTER TABLE recommendations DROP COLUMN reason")
    return output


def test_the_report_of_a_degraded_run_with_rules_and_reasons(tmp_path):
    from recsys.report.page import write_report

    output = hand_built_store(tmp_path / "out")
    page = write_report(f"sqlite:///{output / 'recsys.db'}", output / "report.html").read_text(encoding="utf-8")
    assert external_references(page) == []
    assert "run <b>20261102T020000000000Z</b> (degraded)" in page
    assert "Degraded: model NDCG@12 0.26 vs best baseline ease 0.31: published ease instead" in page
    assert "The latest run, 20261103T020000000000Z, failed: DataError: export.csv line 3: bad date" in page
    assert "Cine &lt;b&gt;1&lt;/b&gt;" in page and "<b>1</b>" not in page  # names are escaped
    # 12 distinct items of 15 in the catalogue; 3 denominations of one voucher are one family.
    assert "<b>80.0%</b>" in page and "12 of 15 items" in page
    assert "families in the lists<b>10</b>" in page
    # Rules: the with/without chart, the cost, what was removed, the config.
    assert "The rules cost +0.0300 NDCG@12" in page
    assert "<td>family cap</td><td>120</td>" in page and "<td>pins placed</td><td>95</td>" in page
    assert "max_per_family = 2" in page
    assert page.count("<svg") == 7  # quality, trend, items, families, reasons, segments, rules
    assert "1 of the last 3 runs were not evaluated" in page


def _evaluated_at(db: Path, k: int, run_ids: list[str]) -> None:
    """Record the runs' evaluation as measured at ``k`` (``--top-k k``), their gate's words too."""
    with sqlite3.connect(db) as conn:
        for run_id in run_ids:
            metrics = json.loads(conn.execute("SELECT metrics FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0])
            for values in metrics["evaluation"].values():
                values["k"] = k
            metrics["gate"]["reason"] = metrics["gate"]["reason"].replace("NDCG@12", f"NDCG@{k}")
            conn.execute(
                "UPDATE runs SET metrics = ?, message = replace(message, 'NDCG@12', ?) WHERE run_id = ?",
                (json.dumps(metrics), f"NDCG@{k}", run_id),
            )


def test_the_figures_are_labelled_at_the_k_the_run_used(tmp_path):
    """With --top-k 5 the gate says NDCG@5: so do the report, the artifacts' tables and `recsys runs`
    (they said NDCG@12 whatever the run's k); a run recorded before k was kept reads as 12."""
    from recsys.cli.app import app
    from recsys.report.contents import quality_table, read_store, summary_rows
    from recsys.report.page import write_report

    output = hand_built_store(tmp_path / "out")
    db = output / "recsys.db"
    _evaluated_at(db, 5, ["20261101T020000000000Z", "20261102T020000000000Z"])
    page = write_report(f"sqlite:///{db}", output / "report.html").read_text(encoding="utf-8")
    assert "NDCG@12" not in page and "recall@12" not in page
    assert "<th>NDCG@5</th>" in page and "<th>recall@5</th>" in page and "<th>model NDCG@5</th>" in page
    assert "Degraded: model NDCG@5 0.26" in page and "The rules cost +0.0300 NDCG@5" in page
    assert "the best baseline. NDCG@5 with its 95% interval." in page  # segments
    snapshot = read_store(f"sqlite:///{db}")
    assert {row["figure"] for row in summary_rows(snapshot)} >= {"model NDCG@5", "best baseline NDCG@5 (ease)", "NDCG@5 cost of the rules"}
    assert {"ndcg@5", "recall@5", "hit_rate@5"} <= set(quality_table(snapshot.current)[0])
    listed = CliRunner().invoke(app, ["runs", "--output", str(output)], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert "model/best: NDCG@5 of the model" in listed.stdout and "NDCG@12" not in listed.stdout
    # The first run recorded before the evaluation kept its k (at 12): each figure says its k.
    _evaluated_at(db, 12, ["20261101T020000000000Z"])
    with sqlite3.connect(db) as conn:
        metrics = json.loads(conn.execute("SELECT metrics FROM runs WHERE run_id = '20261101T020000000000Z'").fetchone()[0])
        for values in metrics["evaluation"].values():
            del values["k"]
        conn.execute("UPDATE runs SET metrics = ? WHERE run_id = '20261101T020000000000Z'", (json.dumps(metrics),))
    page = write_report(f"sqlite:///{db}", output / "report.html").read_text(encoding="utf-8")
    assert "different list lengths (k = 5, 12, their --top-k)" in page and "<th>model NDCG@k</th>" in page
    assert "<td>ease</td><td>0.3100 (0.2900 to 0.3300)</td><td>5</td></tr>" in page  # the degraded run, at 5
    assert "<td>ease</td><td>0.3100 (0.2900 to 0.3300)</td><td>12</td></tr>" in page  # the older run, at 12
    listed = CliRunner().invoke(app, ["runs", "--output", str(output)], env={"COLUMNS": "200"})
    assert "0.260/0.310 @5" in listed.stdout and "0.300/0.310 @12" in listed.stdout
    assert "NDCG@k (k: the run's --top-k, after the figures)" in listed.stdout


def test_reasons_are_counted_by_their_prefix(tmp_path):
    from recsys.report.contents import read_store, reason_groups

    output = hand_built_store(tmp_path / "out")
    groups = dict(reason_groups(read_store(f"sqlite:///{output / 'recsys.db'}")))
    # 50 customers x 12 ranks; rank % 5 picks the reason: 0 and 1 are both "because you redeemed".
    assert groups == {"because you redeemed": 50 * 5, "popular lately": 50 * 3, "campaign": 50 * 2, "new in the catalogue": 50 * 2}


def test_segments_are_shown_new_customers_first_with_the_published_list_highlighted(tmp_path):
    from recsys.report.contents import read_store, segment_rows

    output = hand_built_store(tmp_path / "out")
    snapshot = read_store(f"sqlite:///{output / 'recsys.db'}")
    rows = segment_rows(snapshot.current)
    assert [row["segment"] for row in rows] == ["new customers", "1-2 items", "3+ items"]
    assert list(rows[0]["recommenders"]) == ["cold_start_list (recent_popularity_90d)", "popularity"]
    assert list(rows[2]["recommenders"]) == ["two_stage", "ease"]
    assert rows[2]["recommenders"]["ease"].mean == 0.33


def test_one_run_without_evaluation_or_reasons(tmp_path):
    from recsys.report.page import write_report
    from recsys.store.publish import Store

    output = tmp_path / "out"
    store = Store(f"sqlite:///{output / 'recsys.db'}", output)
    store.ensure_schema()
    store.begin_run("20261101T020000000000Z", datetime(2026, 11, 1, tzinfo=timezone.utc), "export.csv")
    store.publish("20261101T020000000000Z", datetime(2026, 11, 1, tzinfo=timezone.utc),
                  [list_table([("1", 1, "Cine", 1.0)])], popular_list("r"), metrics={"seconds": {}}, users=1, items=4)
    store.engine.dispose()
    with sqlite3.connect(output / "recsys.db") as conn:  # lists published before reasons existed
        conn.execute("ALTER TABLE recommendations DROP COLUMN reason")
    page = write_report(store.db_url, output / "report.html").read_text(encoding="utf-8")
    assert "No run in the store was evaluated" in page
    assert "No evaluated run yet" in page
    assert "No evaluated run recorded quality by segment." in page
    assert "no <code>reason</code> column" in page and "No rules were applied in this run." in page
    assert "<b>25.0%</b>" in page  # coverage: 1 item of 4
    assert page.count("<svg") == 2  # the most recommended items, families


def test_recsys_report_without_a_store_is_one_line(tmp_path):
    from recsys.cli.app import app

    result = CliRunner().invoke(app, ["report", "--output", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and result.output.startswith("error: no store at")
    assert not (tmp_path / "none").exists()


# --- in a real browser -------------------------------------------------------------------------------


def require_chromium():
    """Skip without Debian's chromium or Playwright, except in CI, where that fails the test:
    the browser check must not pass by not running."""
    missing = None
    if not CHROMIUM.is_file():
        missing = f"Debian's chromium is not installed ({CHROMIUM}; apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "playwright is not installed (pip install -r requirements.lock)"
    if missing is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must run the browser test: {missing}")
    pytest.skip(missing)


def test_the_report_renders_in_headless_chromium(tmp_path):
    require_chromium()
    import io

    from PIL import Image
    from playwright.sync_api import sync_playwright

    from recsys.report.page import write_report

    output = hand_built_store(tmp_path / "out")
    path = write_report(f"sqlite:///{output / 'recsys.db'}", output / "report.html")
    errors, requests = [], []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(path.resolve().as_uri(), wait_until="load")
            charts = page.locator("svg")
            assert charts.count() == 7
            sizes = [charts.nth(i).bounding_box() for i in range(charts.count())]
            shot = page.screenshot(full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert [url for url in requests if not url.startswith("file://")] == []  # nothing fetched
    for box in sizes:
        assert box is not None and box["width"] > 300 and box["height"] > 100
    image = Image.open(io.BytesIO(shot)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 200  # text, bars, points and bands in several colours: not a blank page
    white = max(count for count, colour in colours if colour == (255, 255, 255))
    assert white / (image.width * image.height) < 0.97
