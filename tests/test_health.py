"""The health check before every swap: the rules on hand-made lists, then the flow refusing to
publish lists that fail it (a diverged model, scores that blow up) and leaving the store as it was."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest

from conftest import interactions_of, run_flow
from recsys.scoring.health import check_lists
from recsys.scoring.lists import Lists


def catalogue(n_users: int = 4, n_items: int = 6, taken: int = 2):
    """``n_users`` customers who each took the first ``taken`` items of ``n_items``."""
    rows = [(f"u{u}", f"item {i}", pd.Timestamp("2021-01-01") + pd.Timedelta(days=u + i), 5) for u in range(n_users) for i in range(taken)]
    rows += [("u0", f"item {i}", pd.Timestamp("2021-03-01"), 4) for i in range(taken, n_items)]  # every item exists
    frame = pd.DataFrame(rows, columns=["user_id", "item", "timestamp", "rating"])
    return interactions_of(frame)


def lists_of(rows, scores=None) -> Lists:
    items = np.array(rows, dtype=np.int64)
    if scores is None:
        scores = np.where(items >= 0, -np.arange(items.shape[1], dtype=np.float64)[None, :], -np.inf)
    return Lists(items=items, scores=np.asarray(scores, dtype=np.float64), reasons=np.zeros(items.shape, dtype=np.int32))


def problems(lists, data=None, length=3, **kwargs):
    return check_lists(lists, data or catalogue(), length, True, "two_stage", **kwargs).problems


def test_full_unseen_lists_pass_and_are_recorded():
    data = catalogue()  # u0 took every item; u1..u3 took items 0 and 1
    health = check_lists(lists_of([[-1, -1, -1], [2, 3, 4], [5, 4, 3], [3, 2, 5]]), data, 3, True, "two_stage")
    assert health.ok, health.problems
    record = health.record
    assert record["recommender"] == "two_stage" and record["customers"] == 4 and record["length"] == 3
    assert (record["full"], record["short_by_catalogue"], record["empty"]) == (3, 1, 1)
    assert record["coverage"] == pytest.approx(4 / 6)
    assert record["score"]["min"] == -2.0 and record["score"]["max"] == 0.0
    json.dumps(record)  # goes to runs.metrics as it is


def test_an_empty_list_where_the_catalogue_allows_items_fails():
    found = problems(lists_of([[-1, -1, -1], [2, 3, 4], [-1, -1, -1], [3, 2, 5]]))
    assert len(found) == 1 and "1 customer with a list shorter than the catalogue allows" in found[0]
    assert "'u2': 0 of 3" in found[0]


def test_a_list_as_long_as_the_unseen_items_passes_when_shorter_than_asked():
    data = catalogue(taken=4)  # 2 unseen items each
    assert not problems(lists_of([[-1, -1, -1], [4, 5, -1], [5, 4, -1], [4, 5, -1]]), data)


def test_with_seen_items_allowed_every_list_must_be_full():
    data = catalogue(taken=4)
    health = check_lists(lists_of([[0, 1, 2], [4, 5, -1], [0, 1, 2], [0, 1, 2]]), data, 3, False, "popularity")
    assert len(health.problems) == 1 and "shorter than the catalogue allows" in health.problems[0]


@pytest.mark.parametrize(
    ("rows", "scores", "expect"),
    [
        ([[-1, -1, -1], [2, 3, 4], [5, 4, 3], [3, 2, 5]], [[-np.inf] * 3, [1.0, np.nan, 0.0], [1.0, 0.5, 0.0], [1.0, 0.5, 0.0]], "NaN or infinite score"),
        ([[-1, -1, -1], [2, 3, 4], [5, 4, 3], [3, 2, 5]], [[-np.inf] * 3, [np.inf, 1.0, 0.0], [1.0, 0.5, 0.0], [1.0, 0.5, 0.0]], "NaN or infinite score"),
        ([[-1, -1, -1], [2, 2, 4], [5, 4, 3], [3, 2, 5]], None, "the same item twice"),
        ([[-1, -1, -1], [2, -1, 4], [5, 4, 3], [3, 2, 5]], None, "an empty slot before a filled one"),
        ([[-1, -1, -1], [2, 3, 4], [5, 4, 9], [3, 2, 5]], None, "outside the catalogue"),
    ],
    ids=["nan", "inf", "twice", "gap", "unknown item"],
)
def test_broken_lists_fail(rows, scores, expect):
    found = problems(lists_of(rows, scores))
    assert any(expect in problem for problem in found), found


def test_the_cold_start_list_is_checked_too():
    good = lists_of([[-1, -1, -1], [2, 3, 4], [5, 4, 3], [3, 2, 5]])
    assert not problems(good, cold_start=(np.array([0, 1, 2]), np.array([3.0, 2.0, 1.0])))
    assert any("cold-start list holds 0 items" in p for p in problems(good, cold_start=(np.zeros(0, np.int64), np.zeros(0))))
    assert any("cold-start list has a NaN" in p for p in problems(good, cold_start=(np.array([0, 1, 2]), np.array([np.nan, 2.0, 1.0]))))


def ruled(data, tmp_path, catalogue_rows: str, **rules):
    """The run's rules over ``data`` from a catalogue CSV's rows (``item,family,active``) and ``rules``."""
    from recsys.config import Rules
    from recsys.data.catalogue import read_catalogue
    from recsys.scoring.rules import item_rules

    path = tmp_path / "catalogue.csv"
    path.write_text("item,family,active\n" + catalogue_rows)
    return item_rules(data, read_catalogue(path), Rules(**rules), k=3).rules


@pytest.mark.parametrize(
    ("catalogue_rows", "rules", "rows", "room"),
    [
        # 2 recommendable items, both taken by every customer
        ("item 2,,false\nitem 3,,false\nitem 4,,false\nitem 5,,false\n", {}, [[-1, -1, -1]] * 4, 2),
        # 2 families, at most 1 of each
        ("".join(f"item {i},f{i % 2},true\n" for i in range(6)), {"max_per_family": 1},
         [[-1, -1, -1], [2, 3, -1], [4, 5, -1], [5, 2, -1]], 2),
    ],
    ids=["inactive", "max_per_family"],
)
def test_the_cold_start_list_is_full_at_what_the_rules_allow(tmp_path, catalogue_rows, rules, rows, room):
    """Fewer recommendable items than the list length (or a strict family cap over few families)
    is not a short cold-start list: the run publishes; one item fewer still fails."""
    data = catalogue()
    rules = ruled(data, tmp_path, catalogue_rows, **rules)
    nobody = lists_of(rows)  # the customers' lists, as long as the rules let them be
    full = (np.arange(room), np.arange(room, 0, -1).astype(np.float64))
    assert not problems(nobody, data, cold_start=full, rules=rules)
    short = (np.arange(room - 1), np.arange(room - 1, 0, -1).astype(np.float64))
    found = problems(nobody, data, cold_start=short, rules=rules)
    assert list(found) == [f"the cold-start list holds {room - 1} items, the catalogue allows {room}"]


def record(coverage: float, p01: float, p99: float, customers: int = 4, recommender: str = "two_stage") -> dict:
    return {"recommender": recommender, "customers": customers, "coverage": coverage, "score": {"p01": p01, "p99": p99}}


def test_coverage_or_score_spread_wildly_off_the_previous_run_fails():
    lists = lists_of([[-1, -1, -1], [2, 3, 4], [5, 4, 3], [3, 2, 5]])  # coverage 4/6, scores -2..0
    assert not problems(lists, previous=record(0.5, -3.0, 0.5))
    assert any("cover 66.7% of the catalogue, the previous run's 5.0%" in p for p in problems(lists, previous=record(0.05, -2.0, 0.0)))
    assert any("scores spread over" in p for p in problems(lists, previous=record(0.6, -500.0, 400.0)))
    assert any("scores spread over" in p for p in problems(lists, previous=record(0.6, -0.01, 0.0)))
    # The level may move (a listwise ranker's scores are defined up to a constant); the spread may not.
    assert not problems(lists, previous=record(0.6, 998.0, 1000.0))


def test_no_comparison_with_another_recommender_or_another_size_of_run():
    lists = lists_of([[-1, -1, -1], [2, 3, 4], [5, 4, 3], [3, 2, 5]])
    assert not problems(lists, previous=record(0.01, -500.0, 400.0, recommender="popularity"))
    assert not problems(lists, previous=record(0.01, -500.0, 400.0, customers=400))
    assert not problems(lists, previous={})


# --- the flow -----------------------------------------------------------------------------------------

pytestmark_flow = pytest.mark.slow
FLOW = dict(epochs=2, ranking_epochs=2, evaluate=False)


@pytest.fixture(autouse=True)
def no_db_url_env(monkeypatch):
    monkeypatch.delenv("RECSYS_DB_URL", raising=False)


@pytest.fixture(scope="module")
def published(prefect_test_harness, synthetic, tmp_path_factory):
    summary, data, output = run_flow(synthetic, tmp_path_factory.mktemp("health"), **FLOW)
    assert summary["status"] == "succeeded"
    return summary, output


def snapshot(output):
    with sqlite3.connect(output / "recsys.db") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        lists = conn.execute("SELECT * FROM recommendations ORDER BY user_id, rank").fetchall()
        runs = conn.execute("SELECT run_id, status, is_current, metrics, message FROM runs ORDER BY run_id").fetchall()
    return lists, runs, (output / "recommendations.parquet").read_bytes()


@pytest.mark.slow
def test_a_published_run_records_its_lists_health(published):
    summary, output = published
    _, runs, _ = snapshot(output)
    health = json.loads(runs[-1][3])["lists"]
    assert health["recommender"] == "two_stage" and health["customers"] == 120 and health["full"] == 120
    assert health["empty"] == 0 and 0 < health["coverage"] <= 1 and health["score"]["p01"] <= health["score"]["p99"]


def _diverge(monkeypatch, how: str) -> None:
    from recsys.models.ranking import Ranker

    real = Ranker.scores

    def scores(self, items, features):
        values = real(self, items, features)
        if how == "nan":
            return np.full_like(values, np.nan)
        return values * 1e4  # blown up

    monkeypatch.setattr(Ranker, "scores", scores)


@pytest.mark.slow
# NaN through the real scorer, and scores blown far off the previous run's; the other broken
# shapes (an infinite score, NaN in some lists) are test_broken_lists_fail's.
@pytest.mark.parametrize("how", ["nan", "blown up"])
def test_lists_that_fail_the_check_fail_the_run_and_replace_nothing(published, synthetic, tmp_path, monkeypatch, how):
    import shutil

    from flows.nightly import nightly
    from recsys.errors import ListsUnhealthy
    from recsys.settings import RunOptions

    summary, shared = published
    output = tmp_path / "out"
    snapshot(shared)
    shutil.copytree(shared, output, ignore=shutil.ignore_patterns("*-wal", "*-shm"))
    lists_before, runs_before, parquet_before = snapshot(output)
    data = tmp_path / "interactions.csv"
    from conftest import csv_text

    data.write_text(csv_text(synthetic.rows))
    _diverge(monkeypatch, how)
    with pytest.raises(ListsUnhealthy, match="health check") as raised:
        nightly(RunOptions(data=data, output=output, **FLOW))
    assert "\n" not in str(raised.value)
    lists_after, runs_after, parquet_after = snapshot(output)
    assert lists_after == lists_before and parquet_after == parquet_before
    assert runs_after[: len(runs_before)] == runs_before
    [(run_id, status, current, _, message)] = runs_after[len(runs_before):]
    assert (status, current) == ("failed", 0) and "health check" in message
