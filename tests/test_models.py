"""The two stages on a tiny planted-structure export: shapes, exclusions, determinism, structure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys import model as two_stage
from recsys.errors import DataError
from recsys.retrieval import candidates_for
from recsys.settings import ModelSettings, Settings

FAST = Settings(model=ModelSettings(retrieval_epochs=2, ranking_epochs=2))


def train(frame: pd.DataFrame, settings: Settings = FAST):
    prepared = two_stage.prepare(frame)
    retrieval = two_stage.train_retrieval(prepared, settings)
    ranking = two_stage.train_ranking_stage(prepared, retrieval, settings)
    retrieval = two_stage.refresh_retrieval(retrieval, prepared, settings)
    lists = two_stage.score_all(prepared.data, retrieval, ranking, settings)
    return prepared, retrieval, ranking, lists


@pytest.fixture(scope="module")
def trained(synthetic):
    prepared, retrieval, ranking, lists = train(synthetic.frame.copy())
    return dict(prepared=prepared, retrieval=retrieval, ranking=ranking, lists=lists)


def consumed_by(frame: pd.DataFrame) -> dict[str, set[str]]:
    return {user: set(items) for user, items in frame.groupby("user_id")["item"]}


def test_prepare_encodes_and_splits(trained, synthetic):
    prepared = trained["prepared"]
    data = prepared.data
    assert data.n_users == 120 and data.n_items == 40
    assert list(data.users) == sorted(synthetic.frame["user_id"].unique())
    assert list(data.items) == sorted(synthetic.frame["item"].unique())
    assert len(data.user) == len(synthetic.frame)  # duplicates kept as rows
    # Every user has >= 2 distinct items, so every user has a held-out target, all in the future
    # of the early interactions.
    assert len(prepared.target_rows) == 120
    assert prepared.targets.shape == (120, 40)
    assert len(prepared.early.user) < len(data.user)
    early_pairs = set(zip(prepared.early.user.tolist(), prepared.early.item.tolist()))
    targets = prepared.targets.tocoo()
    assert early_pairs.isdisjoint(zip(targets.row.tolist(), targets.col.tolist()))


def test_pipeline_trains_both_stages(trained):
    retrieval, ranking = trained["retrieval"], trained["ranking"]
    assert retrieval.epochs_run == 2 + 1  # 2 on the early part, then max(1, 2 // 2) refreshing
    assert ranking is not None and ranking.lists > 0


def test_every_user_gets_top_k_distinct_unseen_items(trained, synthetic):
    data, lists = trained["prepared"].data, trained["lists"]
    assert lists.items.shape == (120, 12) and lists.scores.shape == (120, 12)
    assert (lists.items >= 0).all()
    assert np.isfinite(lists.scores).all()
    consumed = consumed_by(synthetic.frame)
    for row, user in enumerate(data.users):
        names = data.items[lists.items[row]].tolist()
        assert len(set(names)) == 12, user
        assert not set(names) & consumed[user], user
        # Scores come out in rank order.
        assert (np.diff(lists.scores[row]) <= 0).all(), user


def test_include_seen_allows_consumed_items(trained, synthetic):
    data = trained["prepared"].data
    settings = FAST.with_(include_seen=True)
    lists = two_stage.score_all(data, trained["retrieval"], trained["ranking"], settings)
    consumed = consumed_by(synthetic.frame)
    hits = 0
    for row, user in enumerate(data.users):
        names = data.items[lists.items[row]].tolist()
        assert len(set(names)) == 12 and (lists.items[row] >= 0).all()
        hits += len(set(names) & consumed[user])
    assert hits > 0, "with include_seen some list should hold an item its customer already had"


def test_lists_shorter_than_top_k_are_padded_never_filled_with_seen(trained, synthetic):
    """top_k 38 of 40 items: each user (>= 4 items consumed) gets only the items they did not have."""
    data = trained["prepared"].data
    settings = FAST.with_(top_k=38)
    lists = two_stage.score_all(data, trained["retrieval"], trained["ranking"], settings)
    consumed = consumed_by(synthetic.frame)
    for row, user in enumerate(data.users):
        valid = lists.items[row] >= 0
        assert valid.sum() == 40 - len(consumed[user])
        assert valid[: valid.sum()].all(), "padding only at the end"
        assert not set(data.items[lists.items[row][valid]]) & consumed[user]
    tables = list(two_stage.list_tables(data, lists, chunk_users=50))
    assert len(tables) == 3  # 120 users in chunks of 50
    assert sum(t.num_rows for t in tables) == int((lists.items >= 0).sum())


def test_retrieval_candidates_shape_and_exclusion(trained):
    prepared, retrieval = trained["prepared"], trained["retrieval"]
    data = prepared.data
    users, items = retrieval.vectors(data)
    assert users.shape == (120, 32) and items.shape == (40, 32)
    seen = data.seen()
    rows = np.array([0, 5, 17, 119])
    candidates = candidates_for(users, items, rows, 20, seen)
    assert candidates.items.shape == (4, 20) and candidates.scores.shape == (4, 20)
    for i, row in enumerate(rows):
        had = set(seen[row].indices.tolist())
        got = candidates.items[i].tolist()
        assert -1 not in got and len(set(got)) == 20
        assert not had & set(got)
        np.testing.assert_allclose(candidates.scores[i], users[row] @ items[got].T, rtol=1e-5, atol=1e-5)
        assert (np.diff(candidates.scores[i]) <= 0).all()
    # Asking for more than the catalogue: every unseen item, then -1 padding.
    everything = candidates_for(users, items, rows, 100, seen)
    assert everything.items.shape == (4, 40)
    for i, row in enumerate(rows):
        n_seen = len(seen[row].indices)
        assert (everything.items[i, : 40 - n_seen] >= 0).all()
        assert (everything.items[i, 40 - n_seen :] == -1).all()
    # Without exclusion, seen items can be candidates.
    unfiltered = candidates_for(users, items, rows, 40, None)
    assert (unfiltered.items >= 0).all()


def test_list_and_popular_tables(trained):
    data, lists = trained["prepared"].data, trained["lists"]
    (table,) = list(two_stage.list_tables(data, lists))
    assert table.column_names == ["user_id", "rank", "item", "score"]
    assert table.num_rows == 120 * 12
    frame = table.to_pandas()
    assert set(frame["user_id"]) == set(data.users)
    assert (frame.groupby("user_id")["rank"].apply(list) == [list(range(1, 13))] * 120).all()
    popular = two_stage.popular_table(data, FAST)
    assert popular.column("rank").to_pylist() == list(range(1, 13))
    assert len(set(popular.column("item").to_pylist())) == 12
    scores = popular.column("score").to_pylist()
    assert scores == sorted(scores, reverse=True)


def test_same_seed_gives_identical_lists(trained, synthetic):
    _, _, _, again = train(synthetic.frame.copy())
    np.testing.assert_array_equal(again.items, trained["lists"].items)
    np.testing.assert_allclose(again.scores, trained["lists"].scores, rtol=1e-6)


def test_two_stage_recommend_with_unknown_user(synthetic):
    model = two_stage.TwoStage(FAST).fit(synthetic.frame.copy())
    users = np.array(["1", "no-such-customer", "2"], dtype=object)
    items, scores = model.recommend(users, 12)
    assert items.shape == (3, 12) and scores.shape == (3, 12)
    data = model.prepared.data
    popular, popular_scores = two_stage.cold_start(data, model.settings.with_(top_k=12))
    assert items[1].tolist() == data.items[popular].tolist()
    np.testing.assert_allclose(scores[1], popular_scores)
    consumed = consumed_by(synthetic.frame)
    for row, user in ((0, "1"), (2, "2")):
        assert None not in items[row].tolist()
        assert len(set(items[row])) == 12
        assert not set(items[row]) & consumed[user]
    assert "fit" in model.timings


def test_planted_taste_groups_are_learned(synthetic):
    """Group-A customers mostly get group-A items (90% of their picks come from their group)."""
    settings = Settings(model=ModelSettings(retrieval_epochs=10, ranking_epochs=10))
    prepared, _, _, lists = train(synthetic.frame.copy(), settings)
    data = prepared.data
    user_group = np.array([synthetic.user_group[u] for u in data.users])
    item_group = np.array([synthetic.item_group[i] for i in data.items])
    picked = item_group[lists.items]
    share_a = (picked[user_group == 0] == 0).mean()
    share_b = (picked[user_group == 1] == 1).mean()
    # A customer has 4-8 items, mostly from their 20-item group; 12 unseen picks at random would
    # be about 40% own-group. A clear majority shows the structure was learned.
    assert share_a > 0.6, share_a
    assert share_b > 0.6, share_b


def test_one_customer_is_too_little_data(synthetic):
    frame = synthetic.frame[synthetic.frame["user_id"] == "1"]
    assert two_stage.untrainable(two_stage.prepare(frame).data).startswith("too little data to train on (1 customers")
    with pytest.raises(DataError, match=r"too little data.*1 customers.*at least 2"):
        two_stage.TwoStage().fit(frame)


def test_one_item_is_too_little_data(synthetic):
    frame = synthetic.frame[synthetic.frame["item"] == "Bono restaurante 0"]
    assert frame["user_id"].nunique() > 1
    assert "1 items" in two_stage.untrainable(two_stage.prepare(frame).data)
    with pytest.raises(DataError, match=r"too little data.*1 items.*at least 2"):
        two_stage.TwoStage().fit(frame)


@pytest.mark.parametrize("ids", [False, True])
def test_numpy_ranker_scores_like_the_keras_models(synthetic, trained, ids):
    """Scoring (in-process or on Dask workers) uses the ranker's NumPy weights: same scores as Keras."""
    prepared, retrieval = trained["prepared"], trained["retrieval"]
    ranking = trained["ranking"]
    if ids:
        settings = FAST.with_(model=ModelSettings(retrieval_epochs=2, ranking_epochs=2, ranking_ids=True))
        ranking = two_stage.train_ranking_stage(prepared, retrieval, settings)
    scorer = two_stage.scorer_for(prepared.data, retrieval, ranking, FAST)
    rows = np.arange(prepared.data.n_users)
    candidates = candidates_for(scorer.users, scorer.items, rows, 30, scorer.context.seen)
    features = two_stage.pair_features(scorer.context, candidates, rows)
    inputs = {
        "user": rows.astype(np.int32),
        "items": np.maximum(candidates.items, 0).astype(np.int32),
        "valid": candidates.items >= 0,
        "features": (features - ranking.mean) / ranking.std,
    }
    output = np.mean([model(inputs).numpy() for model in ranking.models], axis=0)
    keras = np.where(candidates.items >= 0, output, -np.inf)
    numpy = scorer.ranker.scores(rows, candidates, features)
    assert np.isfinite(keras).sum() > 1000
    np.testing.assert_array_equal(np.isfinite(keras), np.isfinite(numpy))
    np.testing.assert_allclose(numpy[np.isfinite(numpy)], keras[np.isfinite(keras)], rtol=1e-4, atol=1e-4)
