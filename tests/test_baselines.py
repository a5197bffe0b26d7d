"""Hand-worked cases for the shared top-k selection and every baseline recommender."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.baselines import (
    ALS,
    ItemKNN,
    Popularity,
    RecentPopularity,
    Recommender,
    build_interaction_matrix,
)
from recsys.topk import blockwise_top_k, top_k_excluding, top_k_shared_excluding

DAY0 = pd.Timestamp("2022-01-01")


@pytest.fixture
def tiny() -> pd.DataFrame:
    """u1: A B | u2: A C | u3: A B D | u4: B | u5: E | u6: D.

    All-time distinct customers: A 3, B 3, D 2, C 1, E 1. Last timestamp is day 100; in the last
    30 days only C (u2, day 90) and D (u3 day 95, u6 day 99) occur.
    """
    rows = [
        ("u1", "A", 1), ("u1", "B", 2), ("u1", "B", 3),  # the repeat counts once
        ("u2", "A", 5), ("u2", "C", 90),
        ("u3", "A", 10), ("u3", "B", 11), ("u3", "D", 95),
        ("u4", "B", 20),
        ("u5", "E", 0),
        ("u6", "D", 99), ("u6", "D", 100),
    ]
    return pd.DataFrame({
        "user_id": [r[0] for r in rows],
        "item": [r[1] for r in rows],
        "timestamp": [DAY0 + pd.Timedelta(days=r[2]) for r in rows],
        "rating": 4,
    })


def recs(model: Recommender, users: list[str], k: int) -> list[list[str | None]]:
    items, scores = model.recommend(np.array(users, dtype=object), k)
    assert items.shape == scores.shape == (len(users), k)
    assert items.dtype == object
    return items.tolist()


# --- top-k -----------------------------------------------------------------------------------

def test_top_k_sorts_breaks_ties_by_index_and_pads() -> None:
    scores = np.array([[1.0, 3.0, 3.0, 2.0, 3.0],
                       [0.0, 0.0, 0.0, 0.0, 0.0]])
    seen = sp.csr_matrix(np.array([[0, 0, 1, 0, 0], [1, 1, 1, 1, 0]]))
    idx, val = top_k_excluding(scores.copy(), seen, 3)
    assert idx.tolist() == [[1, 4, 3], [4, -1, -1]]
    assert val[0].tolist() == [3.0, 3.0, 2.0]
    assert val[1, 0] == 0.0 and np.isneginf(val[1, 1:]).all()


def test_top_k_more_than_catalogue() -> None:
    idx, val = top_k_excluding(np.array([[0.5, 0.1]]), None, 4)
    assert idx.tolist() == [[0, 1, -1, -1]]


def test_blockwise_matches_single_block() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(37, 11)).astype(float)  # many ties
    seen = sp.random(37, 11, density=0.2, random_state=1, format="csr")
    whole = top_k_excluding(scores.copy(), seen, 5)
    blocks = blockwise_top_k(lambda rows: scores[rows], 37, 11, 5, seen, block_cells=30)
    np.testing.assert_array_equal(whole[0], blocks[0])
    np.testing.assert_array_equal(whole[1], blocks[1])


# --- shared matrix ---------------------------------------------------------------------------

def test_interaction_matrix(tiny: pd.DataFrame) -> None:
    m = build_interaction_matrix(tiny)
    assert m.users.tolist() == ["u1", "u2", "u3", "u4", "u5", "u6"]
    assert m.items.tolist() == ["A", "B", "C", "D", "E"]
    assert m.matrix.max() == 1.0
    assert m.item_popularity().tolist() == [3, 3, 1, 2, 1]
    assert m.user_index(np.array(["u6", "nobody"], dtype=object)).tolist() == [5, -1]


# --- baselines -------------------------------------------------------------------------------

def test_popularity(tiny: pd.DataFrame) -> None:
    model = Popularity().fit(tiny)
    assert isinstance(model, Recommender)
    assert recs(model, ["u4", "nobody", "u3"], 3) == [
        ["A", "D", "C"],
        ["A", "B", "D"],
        ["C", "E", None],  # u3 has seen A, B, D: only two items are left
    ]
    items, _ = model.recommend(np.array(["u4"], dtype=object), 3, exclude_seen=False)
    assert items.tolist() == [["A", "B", "D"]]
    _, scores = model.recommend(np.array(["nobody"], dtype=object), 5)
    assert scores.tolist() == [[3.0, 3.0, 2.0, 1.0, 1.0]]


def test_recent_popularity(tiny: pd.DataFrame) -> None:
    model = RecentPopularity(window_days=30).fit(tiny)
    # Window [day 70, day 100]: D 2, C 1; the rest follow by all-time popularity (A, B tie -> A).
    assert recs(model, ["nobody"], 5) == [["D", "C", "A", "B", "E"]]
    assert recs(model, ["u6", "u2"], 4) == [["C", "A", "B", "E"], ["D", "B", "E", None]]
    # A window covering everything reduces to all-time popularity.
    everything = RecentPopularity(window_days=1000).fit(tiny)
    assert recs(everything, ["nobody"], 5) == recs(Popularity().fit(tiny), ["nobody"], 5)
    assert model.name == "recent_popularity_30d"


def test_item_knn(tiny: pd.DataFrame) -> None:
    model = ItemKNN().fit(tiny)
    # cos(A,B)=2/3, cos(A,C)=1/sqrt(3), cos(A,D)=cos(B,D)=1/sqrt(6), E co-occurs with nothing.
    # u4 (B): A .667, D .408, then C and E at 0 ordered by popularity (tie -> name).
    assert recs(model, ["u4"], 4) == [["A", "D", "C", "E"]]
    # u2 (A, C): B .667, D .408, E 0.
    assert recs(model, ["u2"], 4) == [["B", "D", "E", None]]
    # u5 (E) shares nothing: pure popularity among unseen items.
    assert recs(model, ["u5", "nobody"], 4) == [["A", "B", "D", "C"], ["A", "B", "D", "C"]]
    _, scores = model.recommend(np.array(["u4"], dtype=object), 2)
    assert scores[0] == pytest.approx([2 / 3, 1 / np.sqrt(6)], abs=1e-6)


def test_als(tiny: pd.DataFrame) -> None:
    pytest.importorskip("implicit")
    users = np.array(["u1", "u2", "u3", "u4", "u5", "u6", "nobody"], dtype=object)
    a = ALS(factors=4, iterations=5).fit(tiny).recommend(users, 5)
    b = ALS(factors=4, iterations=5).fit(tiny).recommend(users, 5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    items = a[0].tolist()
    seen = tiny.groupby("user_id")["item"].agg(set).to_dict()
    for user, row in zip(users, items):
        listed = [x for x in row if x is not None]
        assert not (set(listed) & seen.get(user, set()))
        # Full lists whenever the catalogue allows it.
        assert len(listed) == 5 - len(seen.get(user, set()))
    assert items[-1] == ["A", "B", "D", "C", "E"]


def test_unfitted_model_raises() -> None:
    with pytest.raises(RuntimeError):
        Popularity().recommend(np.array(["x"], dtype=object), 3)


def test_shared_top_k_matches_dense() -> None:
    rng = np.random.default_rng(5)
    item_scores = rng.integers(0, 5, size=40).astype(float)  # heavy ties
    seen = sp.random(300, 40, density=0.15, random_state=2, format="lil")
    seen[7, :] = 1.0  # a user who has seen everything gets an all-padding row
    seen = sp.csr_matrix(seen)
    dense = top_k_excluding(np.tile(item_scores, (300, 1)), seen, 6)
    shared = top_k_shared_excluding(item_scores, seen, 6, block_cells=64)
    np.testing.assert_array_equal(dense[0], shared[0])
    np.testing.assert_array_equal(dense[1], shared[1])
    assert (shared[0][7] == -1).all()
