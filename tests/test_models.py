"""The two stages on a tiny planted-structure export: shapes, exclusions, determinism, structure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import interactions_of
from recsys.data.splits import temporal_holdout
from recsys.errors import DataError
from recsys.models.candidates import candidate_features, gather_candidates
from recsys.models.retrieval import candidates_for
from recsys.models.two_stage import TwoStage, untrainable
from recsys.settings import ModelSettings, RunOptions
from recsys.store.publish import list_tables

FAST = RunOptions(epochs=2, ranking_epochs=2)


def train(frame: pd.DataFrame, options: RunOptions = FAST, settings: ModelSettings | None = None):
    """The two-stage model fitted on ``frame`` and every customer's top-12."""
    data = interactions_of(frame)
    model = TwoStage(options, settings).fit(data)
    return model, model.recommend(np.arange(data.n_users), 12)


@pytest.fixture(scope="module")
def trained(synthetic):
    model, lists = train(synthetic.frame.copy())
    return dict(model=model, data=model.interactions, retrieval=model.retrieval, ranking=model.ranking, lists=lists)


def consumed_by(frame: pd.DataFrame) -> dict[str, set[str]]:
    return {user: set(items) for user, items in frame.groupby("user_id")["item"]}


def test_the_ranking_split_holds_out_every_customers_latest_items(trained, synthetic):
    data = trained["data"]
    assert data.n_users == 120 and data.n_items == 40
    assert list(data.users) == sorted(synthetic.frame["user_id"].unique())
    assert list(data.items) == sorted(synthetic.frame["item"].unique())
    assert len(data.user) == len(synthetic.frame)  # duplicates kept as rows
    # Every user has >= 2 distinct items, so every user has a held-out target, all in the future
    # of the early interactions.
    split = temporal_holdout(data)
    assert len(split.users) == 120
    assert split.relevant.shape == (120, 40)
    assert len(split.train) < len(data)
    early_pairs = set(zip(split.train.user.tolist(), split.train.item.tolist()))
    targets = split.relevant.tocoo()
    assert early_pairs.isdisjoint(zip(targets.row.tolist(), targets.col.tolist()))


def test_pipeline_trains_both_stages(trained):
    retrieval, ranking = trained["retrieval"], trained["ranking"]
    # 2 epochs on the inner split's training rows, then max(1, 2 // 2) refreshing twice (the
    # outer split's training rows, then every row).
    assert retrieval.epochs_run == 2 + 1 + 1
    assert ranking is not None and ranking.lists > 0
    assert ranking.configs and ranking.features
    # What the shapes were chosen on: every shape alone and every ensemble of them, each scored.
    assert len(ranking.choice) == 2 ** len(ModelSettings().rankers) - 1
    assert max(ranking.choice, key=lambda c: c[1])[0] == ranking.configs
    # The model evaluated itself one step back in time, on the outer split's customers.
    evaluation = trained["model"].evaluation
    assert len(evaluation.users) > 0 and evaluation.items.shape == (len(evaluation.users), trained["model"].options.top_k)


def test_every_user_gets_top_k_distinct_unseen_items(trained, synthetic):
    data, lists = trained["data"], trained["lists"]
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
    data = trained["data"]
    lists = trained["model"].recommend(np.arange(data.n_users), 12, exclude_seen=False)
    consumed = consumed_by(synthetic.frame)
    hits = 0
    for row, user in enumerate(data.users):
        names = data.items[lists.items[row]].tolist()
        assert len(set(names)) == 12 and (lists.items[row] >= 0).all()
        hits += len(set(names) & consumed[user])
    assert hits > 0, "with include_seen some list should hold an item its customer already had"


def test_lists_shorter_than_top_k_are_padded_never_filled_with_seen(trained, synthetic):
    """top_k 38 of 40 items: each user (>= 4 items consumed) gets only the items they did not have."""
    data = trained["data"]
    lists = trained["model"].recommend(np.arange(data.n_users), 38)
    consumed = consumed_by(synthetic.frame)
    for row, user in enumerate(data.users):
        valid = lists.items[row] >= 0
        assert valid.sum() == 40 - len(consumed[user])
        assert valid[: valid.sum()].all(), "padding only at the end"
        assert not set(data.items[lists.items[row][valid]]) & consumed[user]
    tables = list(list_tables(data.users, data.items, lists, chunk_users=50))
    assert len(tables) == 3  # 120 users in chunks of 50
    assert sum(t.num_rows for t in tables) == int((lists.items >= 0).sum())


def test_retrieval_candidates_shape_and_exclusion(trained):
    data, retrieval = trained["data"], trained["retrieval"]
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


def test_list_tables_name_every_customer_and_item(trained):
    data, lists = trained["data"], trained["lists"]
    (table,) = list(list_tables(data.users, data.items, lists))
    assert table.column_names == ["user_id", "rank", "item", "score", "reason"]
    assert table.num_rows == 120 * 12
    frame = table.to_pandas()
    assert set(frame["user_id"]) == set(data.users)
    assert (frame.groupby("user_id")["rank"].apply(list) == [list(range(1, 13))] * 120).all()
    names = data.items[lists.items]
    assert (frame.sort_values(["user_id", "rank"])["item"].to_numpy() == names[np.argsort(data.users.astype(str))].ravel()).all()


def test_same_seed_gives_identical_lists(trained, synthetic):
    _, again = train(synthetic.frame.copy())
    np.testing.assert_array_equal(again.items, trained["lists"].items)
    np.testing.assert_allclose(again.scores, trained["lists"].scores, rtol=1e-6)


def test_two_stage_scores_given_candidates_as_its_own_lists_rank_them(trained):
    """score(users, items) is the ranking stage's score: given its own candidates (every source's
    top 20), its best 12 are the published list, with the same scores."""
    model, lists, data = trained["model"], trained["lists"], trained["data"]
    scorer = model.scorer()
    users = np.arange(data.n_users)
    candidates = gather_candidates(scorer.sources, users, FAST.candidates, scorer.context.seen)
    scores = model.score(users, candidates.items)
    assert scores.shape == candidates.items.shape
    order = np.argsort(-scores, axis=1, kind="stable")[:, :12]
    np.testing.assert_array_equal(np.take_along_axis(candidates.items, order, axis=1), lists.items)
    np.testing.assert_allclose(np.take_along_axis(scores, order, axis=1), lists.scores, rtol=1e-5, atol=1e-5)
    padded = model.score(users[:3], np.where(np.arange(12) < 6, lists.items[:3], -1))
    assert np.isneginf(padded[:, 6:]).all() and np.isfinite(padded[:, :6]).all()


def test_items_a_fitted_part_never_mentions_are_never_recommended(synthetic):
    """Fitted on an evaluation's training rows, the model knows nothing of items only the rest holds."""
    data = interactions_of(synthetic.frame.copy())
    dropped = data.item_codes(["Bono restaurante 0", "Curso deporte 1"])
    part = data.take(~np.isin(data.item, dropped))
    model = TwoStage(FAST).fit(part)
    lists = model.recommend(np.arange(data.n_users), 12)
    assert not np.isin(lists.items, dropped).any()
    assert (lists.items >= 0).all()


def test_planted_taste_groups_are_learned(synthetic):
    """Group-A customers mostly get group-A items (90% of their picks come from their group)."""
    model, lists = train(synthetic.frame.copy(), RunOptions(epochs=10, ranking_epochs=10))
    data = model.interactions
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
    data = interactions_of(synthetic.frame[synthetic.frame["user_id"] == "1"])
    assert untrainable(data).startswith("too little data to train on (1 customers")
    with pytest.raises(DataError, match=r"too little data.*1 customers.*at least 2"):
        TwoStage().fit(data)


def test_one_item_is_too_little_data(synthetic):
    frame = synthetic.frame[synthetic.frame["item"] == "Bono restaurante 0"]
    assert frame["user_id"].nunique() > 1
    data = interactions_of(frame)
    assert "1 items" in untrainable(data)
    with pytest.raises(DataError, match=r"too little data.*1 items.*at least 2"):
        TwoStage().fit(data)


@pytest.mark.parametrize("hidden", [0, 16])
def test_numpy_ranker_scores_like_the_keras_models(synthetic, trained, hidden):
    """Scoring (in-process or on Dask workers) uses the ranker's NumPy weights: same scores as Keras."""
    from recsys.settings import RankerConfig

    settings = ModelSettings(rankers=(RankerConfig(None, hidden=hidden, l2=1e-3),))
    model = TwoStage(FAST, settings).fit(trained["data"])
    assert ("hidden_kernel" in model.scorer().ranker.members[0].weights[0]) is bool(hidden)
    shape, scorer = model.ranking.shapes[0], model.scorer()
    rows = np.arange(trained["data"].n_users)
    candidates = gather_candidates(scorer.sources, rows, 20, scorer.context.seen)
    features = candidate_features(scorer.context, candidates, scorer.features)
    valid = candidates.items >= 0
    inputs = {"valid": valid, "features": (((features - shape.mean) / shape.std) * valid[..., None]).astype(np.float32)}
    output = np.mean([member(inputs).numpy() for member in shape.models], axis=0)
    keras = np.where(valid, output, -np.inf)
    numpy = scorer.ranker.scores(candidates.items, features)
    assert np.isfinite(keras).sum() > 1000
    np.testing.assert_array_equal(np.isfinite(keras), np.isfinite(numpy))
    np.testing.assert_allclose(numpy[np.isfinite(numpy)], keras[np.isfinite(keras)], rtol=1e-4, atol=1e-4)


def _planted_lists(n: int = 240, m: int = 10, seed: int = 0):
    """Candidate lists whose next item is the one with the highest feature "a" plus noise."""
    from recsys.models.ranking import Examples

    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, m, 3))
    items = np.tile(np.arange(m), (n, 1))
    items[:, -2:] = -1  # two padding candidates per list
    taste = features[..., 0] + 0.5 * features[..., 1] + rng.normal(scale=0.5, size=(n, m))
    taste[items < 0] = -np.inf
    labels = np.zeros((n, m))
    labels[np.arange(n), taste.argmax(axis=1)] = 1
    return Examples(rows=np.arange(n), items=items, features=features, labels=labels, names=("a", "b", "c"))


def test_an_ensemble_of_shapes_scores_the_mean_of_their_keras_logits():
    """Shapes reading different features average their logits, each on its own columns and scaling."""
    from recsys.models.ranking import fit_ranking
    from recsys.settings import RankerConfig

    lists = _planted_lists()
    configs = (RankerConfig(("c", "a"), hidden=0, l2=1e-3), RankerConfig(None, hidden=8, l2=1e-3))
    stage = fit_ranking(lists, configs, ModelSettings(ranking_steps=40), seed=1)
    assert stage.configs == configs and stage.features == ("c", "a", "b")
    valid = lists.items >= 0
    keras = []
    for shape in stage.shapes:
        columns = [lists.names.index(name) for name in shape.features]
        x = ((lists.features[..., columns] - shape.mean) / shape.std) * valid[..., None]
        keras.append(np.mean([model({"valid": valid, "features": x.astype(np.float32)}).numpy() for model in shape.models], axis=0))
    expected = np.where(valid, np.mean(keras, axis=0), -np.inf)
    columns = [lists.names.index(name) for name in stage.features]
    numpy = stage.ranker().scores(lists.items, lists.features[..., columns])
    np.testing.assert_array_equal(np.isfinite(numpy), valid)
    np.testing.assert_allclose(numpy[valid], expected[valid], rtol=1e-4, atol=1e-4)


def test_the_ranker_trains_every_epoch_in_one_pass_and_reports_each_one():
    """The epochs run as one pass over repeated batches: the optimiser takes epochs x batches
    steps (the last batch of each epoch partial), and progress is reported once per epoch, in order."""
    from recsys.models.ranking import _fit, ranking_epochs_for
    from recsys.settings import RankerConfig

    lists = _planted_lists(n=150)  # 3 batches of 64 per epoch, the last one of 22 lists
    settings = ModelSettings(ranking_steps=40)
    epochs = ranking_epochs_for(150, 40)
    calls = []
    shape = _fit(lists, RankerConfig(None, hidden=0, l2=1e-3), settings, seed=0, epochs=None, progress=lambda *c: calls.append(c))
    assert epochs == 14 and calls == [(done, epochs) for done in range(1, epochs + 1)]
    assert int(shape.models[0].optimizer.iterations.numpy()) == epochs * 3


def test_the_ranker_is_chosen_among_shapes_and_their_ensemble_on_held_out_lists():
    from recsys.models.ranking import list_ndcg, train_ranking
    from recsys.settings import RankerConfig

    lists = _planted_lists()
    useless, useful = RankerConfig(("c",), hidden=0, l2=1.0), RankerConfig(("a", "b"), hidden=0, l2=1e-3)
    stage = train_ranking(lists, ModelSettings(rankers=(useless, useful), ranking_steps=150), seed=3)
    tried = dict(stage.choice)
    assert set(tried) == {(useless,), (useful,), (useless, useful)}
    # The held-out NDCG of the planted feature beats the noise feature, and the best choice is kept.
    assert tried[(useful,)] > tried[(useless,)] + 0.1
    assert stage.configs == max(tried, key=tried.get)
    columns = [lists.names.index(name) for name in stage.features]
    ndcg = list_ndcg(stage.ranker().scores(lists.items, lists.features[..., columns]), lists.labels).mean()
    assert ndcg > tried[(useless,)] + 0.1


def test_candidates_are_the_union_of_every_sources_top_items():
    from recsys.models.candidates import _union

    items, counts = _union([np.array([[3, 1, -1], [5, 5, -1]]), np.array([[1, 2, 4], [-1, -1, -1]])])
    assert items.tolist() == [[1, 2, 3, 4], [5, -1, -1, -1]]
    assert counts.tolist() == [[2, 1, 1, 1], [2, 0, 0, 0]]


def test_rank_and_z_features_are_computed_within_each_list():
    from recsys.models.candidates import _log_rank, _z

    scores = np.array([[0.5, 2.0, -np.inf, 1.0], [3.0, 3.0, 1.0, 0.0]])
    valid = np.array([[True, True, True, False], [True, True, True, True]])
    # Row 0: 2.0 best, then 0.5; -inf (a source that cannot score it) ranks after every score.
    assert np.exp(_log_rank(scores, valid)).round().astype(int).tolist()[0][:3] == [2, 1, 3]
    assert np.exp(_log_rank(scores, valid)).round().astype(int).tolist()[1] == [1, 2, 3, 4]  # ties: list order
    z = _z(scores, valid)
    assert z[0, :2] == pytest.approx([-1.0, 1.0], abs=1e-6)
    assert z[0, 2] == pytest.approx(-1.0, abs=1e-6)  # the list's lowest value
    assert z[1].mean() == pytest.approx(0.0, abs=1e-6)


def test_family_match_counts_the_customers_items_of_the_candidates_family():
    from recsys.data.interactions import Interactions
    from recsys.models.context import context_features, context_of

    data = Interactions.from_columns(
        ["a", "a", "b"], ["Bono Frisby 20", "Cine 2D", "Bono Frisby 50"], np.array([0, 10, 20]) * 86400, [5, 5, 5]
    )
    context = context_of(data, 90)
    frisby_30 = data.item_codes(["Bono Frisby 50"])
    cine = data.item_codes(["Cine 2D"])
    [match] = context_features(context, np.array([[frisby_30[0], cine[0]]] * 2), data.user_codes(["a", "b"]), ["family_match"])
    # a has one Frisby voucher (another denomination) and the cinema ticket; b has the voucher itself.
    assert np.expm1(match).round().tolist() == [[1.0, 1.0], [1.0, 0.0]]


def test_last_item_transition_is_the_share_of_customers_who_took_the_candidate_next():
    from recsys.data.interactions import Interactions
    from recsys.models.context import context_features, context_of, next_item_shares

    # Three customers go A -> B, one goes A -> C; D then A is d's history (its latest item is A).
    # Rows are given out of time order on purpose: order comes from the times.
    users = ["a", "a", "b", "b", "c", "c", "e", "e", "d", "d"]
    items = ["B", "A", "A", "B", "A", "B", "A", "C", "A", "D"]
    days = [5, 1, 2, 3, 1, 9, 0, 4, 7, 6]
    data = Interactions.from_columns(users, items, np.array(days) * 86400, [5] * 10)
    context = context_of(data, 90)
    a, b, c = data.item_codes(["A", "B", "C"])
    # After A: 4 customers moved on (3 to B, 1 to C), so B's share is 3 / (4 + 1), C's 1 / 5.
    assert context.transitions[a, b] == pytest.approx(3 / 5)
    assert context.transitions[a, c] == pytest.approx(1 / 5)
    assert context.transitions[b, a] == 0.0  # direction matters: nobody took A right after B
    [feature] = context_features(context, np.array([[b, c, -1]]), data.user_codes(["d"]), ["last_item_transition"])
    assert feature[0, :2].tolist() == pytest.approx([3 / 5, 1 / 5])
    assert context.transitions.nnz == 3  # A -> B, A -> C and D -> A
    # Each item keeps only its strongest successors.
    from recsys.data.interactions import pair_times

    user, item, first, _ = pair_times(data)
    pruned = next_item_shares(user, item, first, data.n_items, neighbours=1)
    assert pruned[a].nnz == 1 and pruned[a, b] == pytest.approx(3 / 5)
    # The next-item source counts the same shares (the two-stage model hands them to the context),
    # with or without the pair times handed to it.
    from recsys.models.baselines import NextItem

    for source in (NextItem(), NextItem(times=pair_times(data))):
        assert (source.fit(data).shares != context.transitions).nnz == 0
