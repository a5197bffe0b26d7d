"""Hand-worked cases for the evaluation protocol, the ranking metrics and the cold-start split."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from conftest import interactions_of
from recsys.data.interactions import Interactions
from recsys.data.splits import Split, cold_start_split, temporal_holdout, validation_holdout
from recsys.evaluation.metrics import ranking_metrics
from recsys.evaluation.protocol import evaluate_recommenders
from recsys.models.baselines import Popularity

DAY0 = pd.Timestamp("2022-01-01")


def frame(rows: list[tuple[str, str, float]]) -> Interactions:
    """Interactions from (user, item, day offset) triples; rating fixed at 5."""
    return interactions_of(
        pd.DataFrame(
            {
                "user_id": [r[0] for r in rows],
                "item": [r[1] for r in rows],
                "timestamp": pd.to_datetime([DAY0 + pd.Timedelta(days=r[2]) for r in rows]),
                "rating": 5,
            }
        )
    )


def scored(split: Split) -> list[str]:
    """The scored customers' ids, in order."""
    return split.train.users[split.users].tolist()


def held_out(split: Split) -> dict[str, set[str]]:
    """Each scored customer's held-out item names."""
    rows = split.relevant_rows()
    items = split.train.items
    return {user: set(items[rows[i].indices].tolist()) for i, user in enumerate(scored(split))}


def relevant(data_items: list[str], *sets: set[str]):
    """Held-out sets of names as the metrics take them: a customers × items matrix."""
    import scipy.sparse as sp

    code = {name: i for i, name in enumerate(data_items)}
    rows = [r for r, names in enumerate(sets) for _ in names]
    cols = [code[name] for names in sets for name in sorted(names)]
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(sets), len(data_items)))


def codes(data_items: list[str], lists: list[list[str | None]]) -> np.ndarray:
    """Lists of names as item codes (None = -1)."""
    code = {name: i for i, name in enumerate(data_items)}
    return np.array([[code[name] if name is not None else -1 for name in row] for row in lists])


@pytest.fixture
def protocol_frame() -> Interactions:
    rows = [
        # A: n=2 -> floor(1.6)=1, the last item b is held out; the later repeat of a is dropped.
        ("A", "a", 1), ("A", "b", 2), ("A", "a", 3),
        # B: n=5 -> floor(4.0)=4, only position 4 held out. d and e tie on time: d comes first.
        ("B", "e", 1), ("B", "d", 1), ("B", "c", 2), ("B", "b", 3), ("B", "a", 4),
        ("B", "d", 5),  # after the cutoff: dropped
        ("B", "e", 3.5),  # a repeat of a training item before the cutoff: kept
        # C: n=10 -> floor(8.0)=8, positions 8 and 9 held out.
        *[("C", f"i{j:02d}", j) for j in range(10)],
        ("C", "i09", 0.5),  # i09's first interaction is day 0.5 -> it moves to position 1
        # D: a single item, repeated: stays whole in training, not scored.
        ("D", "z", 1), ("D", "z", 2), ("D", "z", 30),
        # G: n=3 -> floor(2.4)=2; q and r tie at day 2, so r (by name) is held out. q shares the
        # cutoff time and is not strictly before it, so it leaves training too.
        ("G", "p", 1), ("G", "r", 2), ("G", "q", 2), ("G", "p", 3),
        # E: two items at the same instant: y held out, nothing strictly before -> not scored.
        ("E", "x", 1), ("E", "y", 1),
    ]
    return frame(rows)


def train_pairs(train: Interactions, user: str) -> list[tuple[str, float]]:
    rows = train.user == train.user_codes([user])[0]
    days = (train.time[rows] - int(DAY0.timestamp())) / 86400
    return sorted(zip(train.items[train.item[rows]].tolist(), days.tolist()))


def test_temporal_holdout_hand_worked(protocol_frame: Interactions) -> None:
    h = temporal_holdout(protocol_frame)
    assert scored(h) == ["A", "B", "C", "G"]
    rel = held_out(h)
    assert rel["A"] == {"b"}
    assert rel["B"] == {"a"}
    # C's order: i00 (0), i09 (0.5), i01..i07, i08 -> positions 8, 9 are i07 and i08.
    assert rel["C"] == {"i07", "i08"}
    assert rel["G"] == {"r"}

    assert train_pairs(h.train, "A") == [("a", 1.0)]
    assert train_pairs(h.train, "B") == [("b", 3.0), ("c", 2.0), ("d", 1.0), ("e", 1.0),
                                         ("e", 3.5)]
    assert train_pairs(h.train, "C") == sorted(
        [("i00", 0.0), ("i09", 0.5)] + [(f"i{j:02d}", float(j)) for j in range(1, 7)]
    )
    assert train_pairs(h.train, "G") == [("p", 1.0)]
    assert train_pairs(h.train, "E") == []
    # The one-item customer is untouched; the vocabularies stay those of the whole export.
    assert train_pairs(h.train, "D") == [("z", 1.0), ("z", 2.0), ("z", 30.0)]
    assert h.train.users is protocol_frame.users and h.train.items is protocol_frame.items


def test_temporal_holdout_leaves_other_customers_untouched(protocol_frame: Interactions) -> None:
    frame_rows = protocol_frame.to_frame()
    extra = pd.DataFrame({"user_id": ["K", "K"], "item": ["k1", "k1"], "timestamp": [DAY0, DAY0 + pd.Timedelta(days=40)], "rating": 5})
    both = interactions_of(pd.concat([frame_rows, extra], ignore_index=True))
    h = temporal_holdout(both)
    assert train_pairs(h.train, "K") == [("k1", 0.0), ("k1", 40.0)]
    assert "K" not in scored(h)


def test_holdout_is_unaffected_by_row_order(protocol_frame: Interactions) -> None:
    shuffled = protocol_frame.take(np.random.default_rng(3).permutation(len(protocol_frame)))
    a, b = temporal_holdout(protocol_frame), temporal_holdout(shuffled)
    assert scored(a) == scored(b)
    assert held_out(a) == held_out(b)
    assert sorted(zip(a.train.user, a.train.item, a.train.time)) == sorted(zip(b.train.user, b.train.item, b.train.time))


def test_validation_holdout_is_carved_from_training(protocol_frame: Interactions) -> None:
    v = validation_holdout(protocol_frame)
    # B's training part has d, e (day 1), c (2), b (3): n=4 -> floor(3.2)=3 -> b held out.
    assert held_out(v)["B"] == {"b"}
    test_items = {("B", "a"), ("A", "b"), ("G", "r")}
    val_pairs = set(zip(v.train.users[v.train.user], v.train.items[v.train.item]))
    assert not (test_items & val_pairs)


def test_ranking_metrics_perfect() -> None:
    items = ["a", "b", "c", "x"]
    m = ranking_metrics(codes(items, [["a", "b", "x"], ["c", None, None]]), relevant(items, {"a", "b"}, {"c"}), k=3, n_catalog=4)
    assert m["ndcg"] == pytest.approx(1.0)
    assert m["recall"] == pytest.approx(1.0)
    assert m["hit_rate"] == pytest.approx(1.0)
    assert m["coverage"] == pytest.approx(4 / 4)
    assert m["users"] == 2


def test_ranking_metrics_hand_worked() -> None:
    items = ["a", "b", "q", "x", "y"] + [f"f{j}" for j in range(8)] + [f"g{j}" for j in range(12)]
    recs = codes(items, [["x", "a", "y", "b"] + [f"f{j}" for j in range(8)], [f"g{j}" for j in range(12)]])
    m = ranking_metrics(recs, relevant(items, {"a", "b"}, {"q"}), k=12, n_catalog=40)
    ndcg_user0 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert m["ndcg"] == pytest.approx(ndcg_user0 / 2)
    assert m["recall"] == pytest.approx(0.5)
    assert m["hit_rate"] == pytest.approx(0.5)
    # Distinct names: x, a, y, b, f0..f7, g0..g11 -> 24.
    assert m["coverage"] == pytest.approx(24 / 40)


def test_ranking_metrics_caps_at_k_and_ignores_tail() -> None:
    # 3 relevant with k=2: ideal is 2 hits; a hit beyond k does not count; repeats count once.
    items = ["a", "b", "c"]
    m = ranking_metrics(codes(items, [["a", "a", "b"]]), relevant(items, {"a", "b", "c"}), k=2, n_catalog=3)
    assert m["recall"] == pytest.approx(1 / 2)
    assert m["ndcg"] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert m["coverage"] == pytest.approx(1 / 3)


def test_ranking_metrics_rejects_short_lists_and_empty_sets() -> None:
    with pytest.raises(ValueError):
        ranking_metrics(codes(["a"], [["a"]]), relevant(["a"], {"a"}), k=2, n_catalog=1)
    with pytest.raises(ValueError):
        ranking_metrics(codes(["a"], [["a"]]), relevant(["a"], set()), k=1, n_catalog=1)


def test_cold_start_split_hand_worked() -> None:
    df = frame([
        ("u1", "a", 0), ("u1", "b", 95),   # warm: has a row before the cut
        ("u2", "a", 90), ("u2", "b", 95), ("u2", "a", 96),  # first at the cut -> cold
        ("u3", "c", 100),  # cold
        ("u4", "d", 89),  # warm, nothing after
    ])
    cs = cold_start_split(df)
    assert cs.cut == int((DAY0 + pd.Timedelta(days=90)).timestamp())
    assert scored(cs) == ["u2", "u3"]
    assert held_out(cs) == {"u2": {"a", "b"}, "u3": {"c"}}
    assert sorted(zip(cs.train.users[cs.train.user], cs.train.items[cs.train.item])) == [("u1", "a"), ("u4", "d")]

    result = evaluate_recommenders({"pop": Popularity}, cs, k=2).table
    # Popularity on the training rows: a, d (1 customer each; tie by name) for everyone.
    row = result.iloc[0]
    assert row["recall"] == pytest.approx((1 / 2 + 0) / 2)
    assert row["hit_rate"] == pytest.approx(0.5)
    assert row["coverage"] == pytest.approx(1.0)


def test_evaluate_recommenders_runs_the_protocol(protocol_frame: Interactions) -> None:
    result = evaluate_recommenders({"pop": Popularity}, temporal_holdout(protocol_frame), k=12).table
    assert list(result["recommender"]) == ["pop"]
    assert int(result.loc[0, "users"]) == 4
    assert 0.0 < result.loc[0, "ndcg"] <= 1.0
    assert result.loc[0, "seconds"] >= 0.0


def test_the_nightly_evaluation_reports_its_total_before_any_work_and_names_each_step(synthetic_frame) -> None:
    """A bar that knows its length from the first second (no ``0/?`` through the tuning) and says
    what it is doing: tuning first, then "ease, 4 of 6"."""
    from recsys.evaluation.protocol import baseline_factories, evaluate_baselines
    from recsys.settings import RunOptions

    calls = []
    evaluate_baselines(interactions_of(synthetic_frame), RunOptions(), progress=lambda *call: calls.append(call))
    names = list(baseline_factories(RunOptions()))
    total = 2 + len(names)
    assert calls[0] == (0, total, "tuning EASE and RP3beta")
    assert all(call[1] == total for call in calls)
    done = [call[0] for call in calls]
    assert done == sorted(done) and done[-1] == total
    notes = [call[2] for call in calls]
    assert "tuning EASE" in notes and "tuning RP3beta" in notes
    assert f"{names[2]}, 3 of {len(names)}" in notes


# --- nothing to hold out ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "why"),
    [
        ([("A", "a", 1), ("B", "b", 2), ("C", "a", 3), ("C", "a", 9)], "every customer took a single item (3 customers)"),
        ([("A", "a", 1), ("A", "b", 1), ("B", "a", 2), ("B", "c", 2)], "every customer took all of their items at one time (2 customers)"),
        (
            [("A", "a", 1), ("A", "b", 1), ("B", "c", 2), ("C", "a", 3)],
            "2 customers took a single item and the other 1 took all of their items at one time",
        ),
    ],
    ids=["one item each", "every customer's items at one time", "both"],
)
def test_a_holdout_that_scores_nobody_says_why(rows, why) -> None:
    from recsys.data.splits import nothing_held_out

    data = frame(rows)
    split = temporal_holdout(data)
    assert len(split.users) == 0
    assert nothing_held_out(data, split) == f"no customer has a later item to hold out: {why}"


def test_a_holdout_that_scores_someone_has_no_reason(protocol_frame: Interactions) -> None:
    from recsys.data.splits import nothing_held_out

    assert nothing_held_out(protocol_frame, temporal_holdout(protocol_frame)) is None
