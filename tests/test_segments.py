"""Quality by customer segment, on cases small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd

from conftest import interactions_of
from recsys.evaluation.metrics import mean_interval
from recsys.evaluation.protocol import Evaluation
from recsys.evaluation.segments import FEW, MANY, NEW, customer_segments, history_sizes, interval_record, returning_segments
from recsys.settings import RunOptions


def frame(rows):
    """(user, item, day) rows as the canonical frame."""
    return pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item": [r[1] for r in rows],
            "timestamp": pd.to_datetime("2024-01-01") + pd.to_timedelta([r[2] for r in rows], unit="D"),
            "rating": np.full(len(rows), 5, dtype=np.int8),
        }
    )


# Customers a (1 item), b (2 distinct items, one of them twice), c (3 items), d (4 items).
TRAIN = interactions_of(
    frame(
        [("a", "x", 0), ("b", "x", 1), ("b", "y", 2), ("b", "y", 3), ("c", "x", 1), ("c", "y", 2), ("c", "z", 3),
         ("d", "w", 0), ("d", "x", 1), ("d", "y", 2), ("d", "z", 3)]
    )
)


def test_history_sizes_count_distinct_items():
    users = TRAIN.user_codes(["a", "b", "c", "d"])
    assert history_sizes(TRAIN, users).tolist() == [1, 2, 3, 4]


def test_returning_segments_split_the_per_customer_ndcg_by_history():
    users = TRAIN.user_codes(["a", "b", "c", "d"])
    evaluation = Evaluation(
        table=pd.DataFrame(),
        per_user={"two_stage": np.array([1.0, 0.0, 0.5, 0.25]), "ease": np.array([0.0, 0.0, 1.0, 1.0])},
        users=users,
    )
    record = returning_segments(evaluation, TRAIN, ["two_stage", "ease"])
    assert record[FEW]["users"] == 2 and record[MANY]["users"] == 2
    assert record[FEW]["two_stage"][0] == 0.5  # customers a and b: (1 + 0) / 2
    assert record[MANY]["two_stage"][0] == 0.375  # c and d: (0.5 + 0.25) / 2
    assert record[FEW]["ease"][0] == 0.0 and record[MANY]["ease"][0] == 1.0
    # The interval is the same bootstrap as every other NDCG interval, over the segment's customers.
    low, high = mean_interval(np.array([0.5, 0.25]))
    assert record[MANY]["two_stage"][1:] == [round(low, 6), round(high, 6)]
    assert record[MANY]["ease"][1:] == [1.0, 1.0]  # every resample of (1, 1) has mean 1


def test_an_empty_or_single_customer_segment_has_no_interval():
    assert interval_record(np.array([])) == [None, None, None]
    assert interval_record(np.array([0.5])) == [0.5, None, None]


def test_new_customers_are_the_cold_start_split_scored_on_the_cold_start_list():
    # Days 0..100: the cut is at day 90. Customers e and f are first seen after it; "x" is the most
    # popular item before it, and what they redeem: hit at rank 1 for both.
    rows = [(f"old{n}", "x", n) for n in range(10)] + [("old0", "y", 20), ("old1", "y", 80), ("old2", "z", 85)]
    rows += [("e", "x", 95), ("f", "x", 100)]
    data = interactions_of(frame(rows))
    evaluation = Evaluation(table=pd.DataFrame(), per_user={"two_stage": np.array([])}, users=np.zeros(0, np.int64))
    record = customer_segments(data, evaluation, data, ["two_stage"], RunOptions(top_k=3))
    new = record[NEW]
    assert new["users"] == 2
    assert new["popularity"] == [1.0, 1.0, 1.0]
    assert new["cold_start_list (recent_popularity_90d)"][0] == 1.0
    assert record[FEW] == {"users": 0, "two_stage": [None, None, None]}


def test_no_new_customer_gives_an_empty_segment():
    data = interactions_of(frame([("a", "x", 0), ("a", "y", 100)]))
    assert customer_segments(data, Evaluation(table=pd.DataFrame(), per_user={}, users=np.zeros(0, np.int64)), data, [], RunOptions())[NEW] == {"users": 0}
