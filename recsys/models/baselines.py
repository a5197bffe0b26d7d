"""The simple recommenders any new model has to beat, on the shared surface (``recsys.models.base``).

Interactions are treated as binary (a customer did or did not take an experience): repeats and
ratings carry no extra weight, which matches how the evaluation scores. EASE and RP3beta may weigh
a customer's own items by recency where the customer's scores start (their ``recency``). Scoring is vectorised: a
sparse customers × items matrix, dense score blocks of bounded size and the shared top-k.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.data.interactions import (
    Interactions,
    PairTimes,
    checked_recency,
    distinct_pairs,
    item_popularity,
    pair_times,
    recent_popularity,
    user_histories,
)
from recsys.models.base import MatrixRecommender, tie_break
from recsys.models.item_item import cosine_neighbours, item_item_scaled, next_item_shares


class Popularity(MatrixRecommender):
    """Most popular items overall: score = number of distinct customers per item, all time."""

    name = "popularity"
    non_personal = True

    def _fit(self, interactions: Interactions, seen: sp.csr_matrix) -> np.ndarray:
        return item_popularity(interactions)


class RecentPopularity(Popularity):
    """Most popular items in the trailing ``window_days`` ending at the last interaction fitted on.

    Score = distinct customers in the window + a small all-time term, so that items tied (or
    absent) in the window are still ordered by overall popularity and lists are always full. The
    cold-start list is this recommender's list (:func:`cold_start_list`).
    """

    def __init__(self, window_days: float = 90) -> None:
        """``window_days``: length of the trailing window, in days (> 0)."""
        super().__init__()
        if window_days <= 0:
            raise ValueError(f"window_days must be > 0, got {window_days}")
        self.window_days = window_days
        self.name = f"recent_popularity_{window_days:g}d"

    def _fit(self, interactions: Interactions, seen: sp.csr_matrix) -> np.ndarray:
        return recent_popularity(interactions, self.window_days)


def cold_start_list(interactions: Interactions, days: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The list for customers with no history: the item codes of :class:`RecentPopularity`'s
    list, and as scores the distinct customers of each in the window (what the store documents;
    the all-time tie-break below 1 that orders equal counts is dropped)."""
    model = RecentPopularity(days).fit(interactions)
    lists = model.recommend(np.zeros(1, dtype=np.int64), k, exclude_seen=False)
    valid = lists.items[0] >= 0
    return lists.items[0][valid], np.floor(lists.scores[0][valid])


class ItemKNN(MatrixRecommender):
    """Item-based neighbours: cosine similarity of the binary customers × items columns.

    A customer's score for an item is the sum of its similarities to the customer's items; ties
    (and customers whose items co-occur with nothing) are broken by popularity. Rule: every
    neighbour for catalogues up to 2,000 items, each item's 200 nearest above (the similarity is
    built a block of items at a time, never as a dense items × items matrix).
    """

    name = "item_knn"
    sparse = True

    def __init__(self, neighbours: int | None = None) -> None:
        super().__init__()
        self.neighbours = neighbours
        self._similarity: sp.csr_matrix | None = None

    def _fit(self, interactions: Interactions, seen: sp.csr_matrix) -> np.ndarray:
        neighbours = self.neighbours
        if neighbours is None and interactions.n_items > 2000:
            neighbours = 200
        self._similarity = cosine_neighbours(seen, neighbours, dtype=np.float64)[:, self._columns].tocsr()
        return item_popularity(interactions)

    def _product(self, users: np.ndarray) -> sp.csr_matrix:
        return (self._history_of(users) @ self._similarity).tocsr()


class EASE(MatrixRecommender):
    """Embarrassingly shallow autoencoder (Steck 2019): a closed-form item × item linear model.

    With X the binary customers × items matrix, G = XᵀX + λI, P = G⁻¹ and B = -P / diag(P) column
    by column with a zero diagonal; a customer's scores are x B. Rule for λ: ``strength`` times the
    mean number of customers of the modelled items (the mean of diag(XᵀX)), 10 by default, which
    scales with the data (an absolute ``regularization`` overrides it). Rule for large catalogues:
    the model covers the ``max_items`` most popular items (3,000 by default: G and its inverse then
    take 72 MB each), and the other items are not recommended by it. With ``recency`` < 1, x is
    the customer's history weighted by recency (B is learnt from the binary X as before).
    """

    def __init__(
        self, regularization: float | None = None, strength: float = 10.0, max_items: int = 3000, recency: float = 1.0
    ) -> None:
        """``regularization``: λ itself (> 0); else ``strength`` × the mean item degree.
        ``recency``: the weight of a customer's items by recency (1: all alike; see
        :func:`recsys.data.interactions.recency_weights`)."""
        super().__init__()
        if regularization is not None and regularization <= 0:
            raise ValueError(f"regularization must be > 0, got {regularization}")
        if strength <= 0:
            raise ValueError(f"strength must be > 0, got {strength}")
        self.regularization, self.strength, self.max_items = regularization, strength, max_items
        self.recency = checked_recency(recency)
        self.name = (f"ease_l{regularization:g}" if regularization is not None else f"ease_s{strength:g}") + _recency_suffix(recency)
        self._weights: np.ndarray | None = None

    def _fit(self, interactions: Interactions, seen: sp.csr_matrix) -> np.ndarray:
        popularity = item_popularity(interactions)
        self._columns, gram = _ease_gram(seen, popularity, self.max_items)
        self._weights = _ease_weights(gram, self._lambda(gram))
        return popularity

    def _lambda(self, gram: np.ndarray) -> float:
        if self.regularization is not None:
            return self.regularization
        return self.strength * max(float(np.diag(gram).mean()) if len(gram) else 1.0, 1e-9)

    @classmethod
    def fitted_family(cls, interactions: Interactions, points, max_items: int = 3000) -> list["EASE"]:
        """One fitted model per (strength, recency) of ``points``, the Gram matrix computed once,
        the weights once per strength and the weighted histories once per recency (for tuning)."""
        template = cls(max_items=max_items)
        template.fit_state(interactions)
        popularity = item_popularity(interactions)
        columns, gram = _ease_gram(template._seen, popularity, max_items)
        weights, models = {}, []
        for strength, recency in points:
            model = cls(strength=strength, max_items=max_items, recency=recency)
            model._seen, model._fallback, model._columns = template._seen, popularity, columns
            model._history = interactions.seen_by_recency(recency)
            if strength not in weights:
                weights[strength] = _ease_weights(gram, model._lambda(gram))
            model._weights = weights[strength]
            models.append(model)
        return models

    def _scores(self, users: np.ndarray) -> np.ndarray:
        history = self._history_of(users)[:, self._columns]
        return history @ self._weights + tie_break(self._fallback[self._columns])[None, :]


def _ease_gram(seen: sp.csr_matrix, popularity: np.ndarray, max_items: int) -> tuple[np.ndarray, np.ndarray]:
    """The items EASE models (the ``max_items`` most popular known ones, ascending codes) and XᵀX over them."""
    known = np.flatnonzero(popularity > 0)
    if len(known) > max_items:
        order = np.lexsort((known, -popularity[known]))  # most popular first, ties by code
        known = np.sort(known[order[:max_items]])
    x = seen[:, known].astype(np.float64)
    return known, (x.T @ x).toarray()


def _ease_weights(gram: np.ndarray, regularization: float) -> np.ndarray:
    """B = -P / diag(P) with P = (G + λI)⁻¹ and a zero diagonal."""
    gram = gram.copy()
    gram[np.diag_indices_from(gram)] += regularization
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)[None, :]
    weights[np.diag_indices_from(weights)] = 0.0
    return weights


def _recency_suffix(recency: float) -> str:
    return "" if recency == 1.0 else f"_r{recency:g}"


class RP3Beta(MatrixRecommender):
    """RP3beta (Paudel et al. 2017): a two-step random walk item → customer → item, re-weighted.

    Transition probabilities (customer → item 1/|customer's items|, item → customer 1/|item's
    customers|) are raised to ``alpha``; the walk's arrival at item j is divided by
    popularity(j)^``beta``, which lifts less popular items. Rule: every neighbour for catalogues up
    to 2,000 items, each item's 100 strongest above (50, 100 and 200 measured the same on a
    20,000-item catalogue). With ``recency`` < 1 the walk starts from the customer's items weighted
    by recency instead of alike (the walk itself is the same).
    """

    sparse = True

    def __init__(self, alpha: float = 0.5, beta: float = 0.0, neighbours: int | None = None, recency: float = 1.0) -> None:
        """``neighbours`` per item kept (None: the rule in the class docstring); ``recency``: the
        weight of a customer's items by recency, where the walk starts (1: all alike)."""
        super().__init__()
        self.alpha, self.beta, self.neighbours = alpha, beta, neighbours
        self.recency = checked_recency(recency)
        self.name = f"rp3beta_a{alpha:g}_b{beta:g}" + _recency_suffix(recency)
        self._walk: sp.csr_matrix | None = None

    def _fit(self, interactions: Interactions, seen: sp.csr_matrix) -> np.ndarray:
        popularity = item_popularity(interactions)
        [walk] = _rp3_walks(seen, popularity, self.alpha, [self.beta], self.neighbours)
        self._walk = walk[:, self._columns].tocsr()
        return popularity

    @classmethod
    def fitted_family(cls, interactions: Interactions, alpha: float, points, neighbours: int | None = None) -> list["RP3Beta"]:
        """One fitted model per (β, recency) of ``points`` for one α, the walk's product computed
        once and the weighted histories once per recency (for tuning)."""
        template = cls(alpha=alpha, neighbours=neighbours)
        template.fit_state(interactions)
        popularity = item_popularity(interactions)
        betas = list(dict.fromkeys(beta for beta, _ in points))
        walks = dict(zip(betas, _rp3_walks(template._seen, popularity, alpha, betas, neighbours)))
        walks = {beta: walk[:, template._columns].tocsr() for beta, walk in walks.items()}
        models = []
        for beta, recency in points:
            model = cls(alpha=alpha, beta=beta, neighbours=neighbours, recency=recency)
            model._seen, model._fallback, model._columns = template._seen, popularity, template._columns
            model._history, model._walk = interactions.seen_by_recency(recency), walks[beta]
            models.append(model)
        return models

    def _product(self, users: np.ndarray) -> sp.csr_matrix:
        return (self._history_of(users) @ self._walk).tocsr()


def _rp3_walks(seen: sp.csr_matrix, popularity: np.ndarray, alpha: float, betas: list[float], neighbours: int | None):
    """The RP3beta walk matrices (items × items) for one α and several β."""
    user_degree = np.asarray(seen.sum(axis=1)).ravel()
    item_degree = np.asarray(seen.sum(axis=0)).ravel()
    to_items = sp.diags(_power(user_degree, -alpha)) @ seen  # customer -> item, ^alpha
    to_users = sp.diags(_power(item_degree, -alpha)) @ seen.T.tocsr()  # item -> customer, ^alpha
    if neighbours is None and seen.shape[1] > 2000:
        neighbours = 100
    scales = [_power(popularity, -beta) for beta in betas]
    return item_item_scaled(to_users, to_items.tocsr(), neighbours, scales, dtype=np.float64)


class NextItem(MatrixRecommender):
    """What customers took right after the customer's latest item: a first-order Markov chain.

    Each customer's distinct items in the order they were first taken give the transitions; an
    item's score is its share of the customers who moved on from the customer's latest item (the
    one taken most recently), smoothed so that one transition is not a certainty
    (:func:`recsys.models.item_item.next_item_shares`), each item's strongest successors kept.
    Items no transition reaches are ordered by popularity, as is a customer with no history.
    """

    name = "next_item"
    sparse = True

    def __init__(self, times: PairTimes | None = None) -> None:
        """``times``: ``pair_times`` of the rows it is about to be fitted on, when the caller has
        them (saves a sort of every row; used by the next fit only)."""
        super().__init__()
        self._times = times
        self.shares: sp.csr_matrix | None = None  # (items, items) float32 over every item code
        self._next: sp.csr_matrix | None = None  # the same, columns restricted to the model's items
        self._latest: sp.csr_matrix | None = None

    def _fit(self, interactions: Interactions, seen: sp.csr_matrix) -> np.ndarray:
        times = self._times if self._times is not None else pair_times(interactions)
        self._times = None
        user, item, first, _ = times
        self.shares = next_item_shares(user, item, first, interactions.n_items)
        self._next = self.shares[:, self._columns].tocsr().astype(np.float64)
        pairs = distinct_pairs(interactions, times)
        latest = user_histories(interactions, 1, pairs=pairs)[:, 0]
        has = np.flatnonzero(latest < interactions.n_items)
        self._latest = sp.csr_matrix(
            (np.ones(len(has)), (has, latest[has])), shape=(interactions.n_users, interactions.n_items)
        )
        return item_popularity(interactions, pairs=pairs)

    def _product(self, users: np.ndarray) -> sp.csr_matrix:
        return (self._latest[users] @ self._next).tocsr()


def _power(values: np.ndarray, exponent: float) -> np.ndarray:
    """``values ** exponent`` with 0 where a value is 0 (an item or customer with no interactions)."""
    values = np.asarray(values, dtype=np.float64)
    out = np.zeros_like(values)
    np.power(values, exponent, out=out, where=values > 0)
    return out


class ALS(MatrixRecommender):
    """Implicit-feedback matrix factorisation (``implicit`` package, CPU, deterministic).

    Confidence is ``alpha`` on every observed (binary) cell. Training uses every core (each
    customer's and item's solve is independent, so the factors do not depend on the thread count)
    with a fixed ``random_state``, so repeated runs give identical factors; scoring uses the dot product of
    the learned factors, with popularity as the tie-break.
    """

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        alpha: float = 1.0,
        iterations: int = 15,
        random_state: int = 42,
    ) -> None:
        """Hyper-parameters as in ``implicit.als.AlternatingLeastSquares``."""
        super().__init__()
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.random_state = random_state
        self.name = f"als_f{factors}_r{regularization:g}_a{alpha:g}"
        self._user_factors: np.ndarray | None = None
        self._item_factors: np.ndarray | None = None

    def _fit(self, interactions: Interactions, seen: sp.csr_matrix) -> np.ndarray:
        try:
            from implicit.cpu.als import AlternatingLeastSquares
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("The ALS baseline needs the optional 'implicit' package: pip install implicit") from exc
        from threadpoolctl import threadpool_limits

        # implicit checks the BLAS thread count when the model is built, so build it inside too.
        with threadpool_limits(limits=1, user_api="blas"):
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                random_state=self.random_state,
                num_threads=0,
            )
            model.fit(seen, show_progress=False)
        self._user_factors = np.asarray(model.user_factors, dtype=np.float64)
        self._item_factors = np.asarray(model.item_factors, dtype=np.float64)
        return item_popularity(interactions)

    def _scores(self, users: np.ndarray) -> np.ndarray:
        scores = self._user_factors[users] @ self._item_factors[self._columns].T
        return scores + tie_break(self._fallback)[self._columns][None, :]
