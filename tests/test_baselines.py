"""Hand-worked cases for the shared top-k selection and every baseline recommender."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from conftest import interactions_of
from recsys.data.interactions import Interactions
from recsys.models.base import Recommender
from recsys.models.baselines import ALS, EASE, ItemKNN, NextItem, Popularity, RecentPopularity, RP3Beta, cold_start_list
from recsys.scoring.topk import blockwise_top_k, top_k_excluding, top_k_shared_excluding

DAY0 = pd.Timestamp("2022-01-01")


@pytest.fixture
def tiny() -> Interactions:
    """u1: A B | u2: A C | u3: A B D | u4: B | u5: E | u6: D | nobody: no rows (a customer the
    fitted part of the export knows nothing of).

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
        ("nobody", "E", 50),
    ]
    data = interactions_of(pd.DataFrame({
        "user_id": [r[0] for r in rows],
        "item": [r[1] for r in rows],
        "timestamp": pd.to_datetime([DAY0 + pd.Timedelta(days=r[2]) for r in rows]),
        "rating": 4,
    }))
    return data.take(data.user != data.user_codes(["nobody"])[0])


def recs(model: Recommender, data: Interactions, users: list[str], k: int, **options) -> list[list[str | None]]:
    """The model's lists for the named customers, as names (None = no item)."""
    lists = model.recommend(data.user_codes(users), k, **options)
    assert lists.items.shape == lists.scores.shape == (len(users), k)
    assert lists.items.dtype == np.int64
    return [[data.items[code] if code >= 0 else None for code in row] for row in lists.items]


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


# --- baselines -------------------------------------------------------------------------------

def test_popularity(tiny: Interactions) -> None:
    model = Popularity().fit(tiny)
    assert isinstance(model, Recommender)
    assert recs(model, tiny, ["u4", "nobody", "u3"], 3) == [
        ["A", "D", "C"],
        ["A", "B", "D"],
        ["C", "E", None],  # u3 has seen A, B, D: only two items are left
    ]
    assert recs(model, tiny, ["u4"], 3, exclude_seen=False) == [["A", "B", "D"]]
    scores = model.recommend(tiny.user_codes(["nobody"]), 5).scores
    assert scores.tolist() == [[3.0, 3.0, 2.0, 1.0, 1.0]]


def test_recent_popularity_and_the_cold_start_list_are_one(tiny: Interactions) -> None:
    model = RecentPopularity(window_days=30).fit(tiny)
    # Window [day 70, day 100]: D 2, C 1; the rest follow by all-time popularity (A, B tie -> A).
    assert recs(model, tiny, ["nobody"], 5) == [["D", "C", "A", "B", "E"]]
    assert recs(model, tiny, ["u6", "u2"], 4) == [["C", "A", "B", "E"], ["D", "B", "E", None]]
    # A window covering everything reduces to all-time popularity.
    everything = RecentPopularity(window_days=1000).fit(tiny)
    assert recs(everything, tiny, ["nobody"], 5) == recs(Popularity().fit(tiny), tiny, ["nobody"], 5)
    assert model.name == "recent_popularity_30d"
    codes, scores = cold_start_list(tiny, 30, 4)
    assert tiny.items[codes].tolist() == ["D", "C", "A", "B"]
    # The score the store documents: distinct customers in the window (the all-time tie-break
    # orders equal counts but is not part of it).
    assert scores.tolist() == [2.0, 1.0, 0.0, 0.0]


def test_item_knn(tiny: Interactions) -> None:
    model = ItemKNN().fit(tiny)
    # cos(A,B)=2/3, cos(A,C)=1/sqrt(3), cos(A,D)=cos(B,D)=1/sqrt(6), E co-occurs with nothing.
    # u4 (B): A .667, D .408, then C and E at 0 ordered by popularity (tie -> name).
    assert recs(model, tiny, ["u4"], 4) == [["A", "D", "C", "E"]]
    # u2 (A, C): B .667, D .408, E 0.
    assert recs(model, tiny, ["u2"], 4) == [["B", "D", "E", None]]
    # u5 (E) shares nothing: pure popularity among unseen items.
    assert recs(model, tiny, ["u5", "nobody"], 4) == [["A", "B", "D", "C"], ["A", "B", "D", "C"]]
    scores = model.recommend(tiny.user_codes(["u4"]), 2).scores
    assert scores[0] == pytest.approx([2 / 3, 1 / np.sqrt(6)], abs=1e-6)
    # score() of given candidates is the same score recommend() ranks by.
    a, d = tiny.item_codes(["A", "D"])
    assert model.score(tiny.user_codes(["u4"]), np.array([[d, a, -1]]))[0].tolist() == pytest.approx(
        [1 / np.sqrt(6), 2 / 3, -np.inf], abs=1e-6
    )


def test_als(tiny: Interactions) -> None:
    pytest.importorskip("implicit")
    users = ["u1", "u2", "u3", "u4", "u5", "u6", "nobody"]
    a = ALS(factors=4, iterations=5).fit(tiny).recommend(tiny.user_codes(users), 5)
    b = ALS(factors=4, iterations=5).fit(tiny).recommend(tiny.user_codes(users), 5)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.scores, b.scores)
    frame = tiny.to_frame()
    seen = frame.groupby("user_id")["item"].agg(set).to_dict()
    for user, row in zip(users, recs(ALS(factors=4, iterations=5).fit(tiny), tiny, users, 5)):
        listed = [x for x in row if x is not None]
        assert not (set(listed) & seen.get(user, set()))
        # Full lists whenever the catalogue allows it.
        assert len(listed) == 5 - len(seen.get(user, set()))


def test_unfitted_model_raises() -> None:
    with pytest.raises(RuntimeError):
        Popularity().recommend(np.array([0]), 3)


def test_items_the_fitted_part_never_mentions_are_never_recommended(tiny: Interactions) -> None:
    without_e = tiny.take(tiny.item != tiny.item_codes(["E"])[0])
    for model in (Popularity(), RecentPopularity(30), ItemKNN()):
        lists = model.fit(without_e).recommend(np.arange(tiny.n_users), 5, exclude_seen=False)
        assert not (lists.items == tiny.item_codes(["E"])[0]).any(), model.name
        assert ((lists.items >= 0).sum(axis=1) == 4).all(), model.name


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


def test_ease_is_the_closed_form_of_its_paper(tiny: Interactions) -> None:
    """B = -P / diag(P) with P = (XᵀX + λI)⁻¹ and a zero diagonal; scores = x B."""
    lam = 2.0
    model = EASE(regularization=lam).fit(tiny)
    x = tiny.seen().toarray().astype(np.float64)
    known = np.flatnonzero(x.sum(axis=0) > 0)
    x = x[:, known]
    p = np.linalg.inv(x.T @ x + lam * np.eye(len(known)))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    u4 = tiny.user_codes(["u4"])
    lists = model.recommend(u4, 4, exclude_seen=True)
    expected = (x[u4[0]] @ b)
    order = [i for i in np.argsort(-expected, kind="stable") if x[u4[0], i] == 0]
    assert lists.items[0].tolist() == known[order].tolist()
    assert lists.scores[0] == pytest.approx(expected[order], abs=1e-6)
    assert model.name == "ease_l2"


def test_ease_covers_only_the_most_popular_items_when_told_to(tiny: Interactions) -> None:
    model = EASE(regularization=1.0, max_items=3).fit(tiny)
    assert tiny.items[model.columns].tolist() == ["A", "B", "D"]  # 3, 3 and 2 customers
    lists = model.recommend(np.arange(tiny.n_users), 5, exclude_seen=False)
    assert set(lists.items[lists.items >= 0].tolist()) <= set(model.columns.tolist())


def test_rp3beta_is_the_two_step_walk_of_its_paper(tiny: Interactions) -> None:
    alpha, beta = 0.5, 0.5
    model = RP3Beta(alpha=alpha, beta=beta).fit(tiny)
    x = tiny.seen().toarray().astype(np.float64)
    users, items = x.sum(axis=1), x.sum(axis=0)
    with np.errstate(divide="ignore"):
        to_items = np.where(x > 0, (x / np.maximum(users, 1)[:, None]) ** alpha, 0.0)
        to_users = np.where(x.T > 0, (x.T / np.maximum(items, 1)[:, None]) ** alpha, 0.0)
    walk = to_users @ to_items
    walk = walk / np.where(items > 0, items**beta, np.inf)[None, :]
    np.fill_diagonal(walk, 0.0)
    u2 = tiny.user_codes(["u2"])[0]
    expected = x[u2] @ walk
    lists = model.recommend(np.array([u2]), 3, exclude_seen=True)
    unseen = [i for i in np.argsort(-expected, kind="stable") if x[u2, i] == 0 and items[i] > 0]
    assert lists.items[0].tolist() == unseen[:3]
    assert lists.scores[0] == pytest.approx(expected[unseen[:3]], abs=1e-6)


def _dated(rows) -> Interactions:
    """(customer, item, day) rows as Interactions, rating 4."""
    return interactions_of(pd.DataFrame({
        "user_id": [r[0] for r in rows], "item": [r[1] for r in rows],
        "timestamp": pd.to_datetime([DAY0 + pd.Timedelta(days=r[2]) for r in rows]), "rating": 4,
    }))


def test_recency_weights_count_the_customers_later_times() -> None:
    """Each item weighs recency ** (the distinct later times at which the customer last took other items):
    items taken at the same moment weigh the same, a repeat counts at its latest time."""
    from recsys.data.interactions import recency_weights

    data = _dated([("u1", "A", 1), ("u1", "B", 2), ("u1", "A", 5), ("u1", "C", 3), ("u1", "D", 3), ("u2", "C", 7)])
    weights = recency_weights(data, 0.5).toarray()
    by_name = {name: weights[:, code].tolist() for code, name in enumerate(data.items)}
    # u1's latest is A (day 5), then C and D together (day 3), then B (day 2).
    assert by_name == {"A": [1.0, 0.0], "B": [0.25, 0.0], "C": [0.5, 1.0], "D": [0.5, 0.0]}
    assert (recency_weights(data, 1.0).toarray() == data.seen().toarray()).all()
    with pytest.raises(ValueError, match="recency"):
        EASE(recency=0.0)


@pytest.mark.parametrize("make", [lambda r: EASE(regularization=2.0, recency=r), lambda r: RP3Beta(0.5, 0.5, recency=r)])
def test_ease_and_rp3beta_with_recency_score_from_the_weighted_history(tiny: Interactions, make) -> None:
    """With recency < 1 the item × item matrix is the same; a customer's scores are their weighted
    history times it instead of their binary one (u3: D latest, then B, then A)."""
    from recsys.data.interactions import recency_weights

    weighted, plain = make(0.5).fit(tiny), make(1.0).fit(tiny)
    matrix = plain._weights if isinstance(plain, EASE) else plain._walk.toarray()
    u3 = tiny.user_codes(["u3"])
    history = recency_weights(tiny, 0.5)[u3].toarray()[0]
    assert history[tiny.item_codes(["D", "B", "A"])].tolist() == [1.0, 0.5, 0.25]
    binary = tiny.seen()[u3].toarray()[0]
    items = np.arange(tiny.n_items)[None, :]
    # Both add the same popularity tie-break, so their difference is the histories' difference.
    difference = weighted.score(u3, items)[0] - plain.score(u3, items)[0]
    assert difference == pytest.approx((history - binary) @ matrix, abs=1e-9)
    assert np.abs(difference).max() > 0.01
    assert weighted.name.endswith("_r0.5") and "_r" not in plain.name


def test_a_tuning_family_fits_what_one_fit_of_each_setting_does(tiny: Interactions) -> None:
    """Tuning fits a grid at once (shared Gram matrix, walk and weighted histories): each member
    recommends what the same setting fitted alone does."""
    users = np.arange(tiny.n_users)
    candidates = users[:, None] % tiny.n_items
    ease_points = [(10.0, 1.0), (3.0, 0.5), (10.0, 0.5)]
    rp3_points = [(0.0, 1.0), (0.5, 0.7), (0.0, 0.7)]
    pairs = [
        *zip(EASE.fitted_family(tiny, ease_points), (EASE(strength=s, recency=r) for s, r in ease_points)),
        *zip(RP3Beta.fitted_family(tiny, 0.5, rp3_points), (RP3Beta(0.5, b, recency=r) for b, r in rp3_points)),
    ]
    for member, alone in pairs:
        alone.fit(tiny)
        assert member.name == alone.name
        assert member.recommend(users, 4).items.tolist() == alone.recommend(users, 4).items.tolist()
        assert member.score(users, candidates) == pytest.approx(alone.score(users, candidates))


def test_next_item_ranks_what_customers_took_right_after_the_latest_item() -> None:
    # Distinct items in the order first taken: three customers went A -> B, one A -> C, u9 A -> D
    # (u9 took A again last, so A is its latest item); u5 took D only, and nothing follows D.
    frame = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u2", "u3", "u3", "u4", "u4", "u5", "u9", "u9", "u9"],
            "item": ["A", "B", "A", "B", "A", "B", "A", "C", "D", "A", "D", "A"],
            "timestamp": np.array([0, 1, 0, 2, 1, 3, 0, 1, 0, 0, 5, 9]) * 86400,
            "rating": 5,
        }
    )
    data = interactions_of(frame)
    model = NextItem().fit(data)
    u5, u9 = data.user_codes(["u5", "u9"])
    a, b, c, d = data.item_codes(["A", "B", "C", "D"])
    # After A: 5 customers moved on (B 3, C 1, D 1), shares over 5 + 1; C and D tie, and the
    # popularity tie-break puts D (2 customers) before C (1).
    lists = model.recommend(np.array([u9]), 3, exclude_seen=False)
    assert lists.items[0].tolist() == [b, d, c]
    assert lists.scores[0] == pytest.approx([3 / 6, 1 / 6, 1 / 6], abs=1e-6)
    assert model.recommend(np.array([u9]), 3).items[0].tolist() == [b, c, -1]  # A and D are u9's own
    # Nothing follows D: u5's list is popularity's.
    assert model.recommend(np.array([u5]), 3).items[0].tolist() == [a, b, c]
    # As a candidate source it proposes only the items the transitions reach.
    assert model.opinion(np.array([u9, u5])).top(5).tolist() == [[b, c], [-1, -1]]


@pytest.mark.parametrize("make", [Popularity, lambda: RecentPopularity(30), ItemKNN, lambda: EASE(5.0), RP3Beta, NextItem])
def test_score_gives_the_scores_recommend_ranks_by(tiny: Interactions, make) -> None:
    model = make().fit(tiny)
    users = np.arange(tiny.n_users)
    lists = model.recommend(users, 4, exclude_seen=False)
    scores = model.score(users, lists.items)
    valid = lists.items >= 0
    assert scores[valid] == pytest.approx(lists.scores[valid], abs=1e-9)
    assert np.isneginf(scores[~valid]).all()
    # An item the model does not cover scores -inf.
    without_e = tiny.take(tiny.item != tiny.item_codes(["E"])[0])
    partial = make().fit(without_e)
    assert np.isneginf(partial.score(users[:1], tiny.item_codes(["E"])[None, :])).all()


@pytest.mark.parametrize("make", [ItemKNN, RP3Beta, lambda: EASE(5.0), Popularity, NextItem])
def test_an_opinions_top_items_are_the_models_own_list(synthetic, make) -> None:
    """The candidates a baseline proposes (its opinion's top) are its recommend() list wherever its
    scores reach that far, and the opinion's scores of them are recommend()'s."""
    from conftest import interactions_of

    data = interactions_of(synthetic.frame)
    model = make().fit(data)
    users = np.arange(data.n_users)
    lists = model.recommend(users, 6)
    opinion = model.opinion(users)
    top = opinion.top(6)
    full = (top >= 0).all(axis=1)
    assert full.mean() > 0.5
    np.testing.assert_array_equal(top[full], lists.items[full])
    np.testing.assert_allclose(opinion.at(lists.items)[full], lists.scores[full], rtol=1e-9)


@pytest.mark.parametrize("make", [ItemKNN, lambda: RP3Beta(0.5, 0.3), NextItem, lambda: ItemKNN(neighbours=3)])
def test_item_item_lists_from_the_sparse_product_are_the_dense_ones(synthetic, make) -> None:
    """The item-item models rank from their sparse product: the lists are those of the dense scores
    (the product plus the popularity tie-break, every item scored) through the dense top-k, item for
    item and score for score."""
    from conftest import interactions_of

    data = interactions_of(synthetic.frame)
    model = make().fit(data)
    users = np.arange(data.n_users)
    for exclude_seen in (True, False):
        seen = model._seen[users][:, model.columns] if exclude_seen else None
        def dense(block):
            return model._product(users[block]).toarray() + model._tie()[None, :]

        picked, scores = blockwise_top_k(dense, len(users), len(model.columns), 15, seen)
        lists = model.recommend(users, 15, exclude_seen=exclude_seen)
        np.testing.assert_array_equal(lists.items, np.where(picked >= 0, model.columns[np.maximum(picked, 0)], -1))
        np.testing.assert_array_equal(lists.scores, scores)


def test_a_fit_cache_keeps_only_the_whole_exports_fits_for_scoring(tiny):
    """After the evaluation and the training sequence, the run keeps the fits on the whole export
    (the model's final sources, a fallback) and frees the splits and the fits on their rows."""
    import gc
    import weakref

    from recsys.models.fits import FitCache

    fits = FitCache()
    split = fits.holdout(tiny)
    on_split = fits.fitted("popularity", None, split.train, Popularity)
    on_all = fits.fitted("popularity", None, tiny, Popularity)
    gone = weakref.ref(on_split)
    del on_split, split
    assert fits.keep_only(tiny) == 2  # the split and the fit on its training rows
    gc.collect()
    assert gone() is None
    assert fits.fitted("popularity", None, tiny, lambda: pytest.fail("refitted")) is on_all


def test_a_fit_cache_forgets_the_recency_weighted_histories_of_the_parts_it_drops(tiny):
    """A part of the export the run still holds (the model keeps its evaluation split's training
    rows) keeps no recency-weighted history once the cache has let go of it; the whole export
    keeps its own, which the final sources score from."""
    from recsys.models.fits import FitCache

    fits = FitCache()
    part = fits.holdout(tiny).train
    fits.fitted("ease", {"recency": 0.5}, part, lambda: EASE(recency=0.5))
    final = fits.fitted("ease", {"recency": 0.5}, tiny, lambda: EASE(recency=0.5))
    assert "_by_recency" in part.__dict__ and "_by_recency" in tiny.__dict__
    fits.keep_only(tiny)
    assert "_by_recency" not in part.__dict__
    assert tiny.seen_by_recency(0.5) is final._history
    assert part.seen_by_recency(0.5).toarray().tolist() == EASE(recency=0.5).fit(part)._history.toarray().tolist()


def _ring_export(shuffled: bool, customers: int = 600, items: int = 40, seed: int = 0) -> Interactions:
    """Customers walking a ring of items, one step a day from a random start: what each takes next
    is the neighbour of their latest item. ``shuffled``: the same sets taken in a random order."""
    rng = np.random.default_rng(seed)
    rows = []
    for customer in range(customers):
        start, length = rng.integers(items), rng.integers(3, 9)
        days = rng.permutation(length) if shuffled else np.arange(length)
        rows += [(f"c{customer}", f"item{(start + step) % items:02d}", int(day)) for step, day in zip(range(length), days)]
    return _dated(rows)


@pytest.mark.parametrize("shuffled", [False, True])
def test_tuning_weighs_recent_items_only_where_the_latest_ones_tell_what_comes_next(shuffled) -> None:
    """On the ring the next item neighbours the latest one, and tuning gives recent items more
    weight in EASE and RP3beta; when the same sets come in a random order it keeps them all alike."""
    from recsys.data.splits import temporal_holdout
    from recsys.evaluation.tuning import tune_baselines

    choices = tune_baselines(temporal_holdout(_ring_export(shuffled)))
    recencies = {name: choice.settings["recency"] for name, choice in choices.items()}
    if shuffled:
        assert recencies == {"ease": 1.0, "rp3beta": 1.0}
    else:
        assert recencies["ease"] < 1.0 and recencies["rp3beta"] < 1.0
        scores = dict((tuple(sorted(s.items())), v) for s, v in choices["rp3beta"].scores)
        plain = scores[(("alpha", 0.5), ("beta", 0.0), ("recency", 1.0))]
        assert max(choices["rp3beta"].scores, key=lambda pair: pair[1])[1] > 1.2 * plain
