"""The one surface every recommender offers, on integer codes (in the spirit of ``implicit``).

* ``fit(interactions)`` learns from :class:`~recsys.data.interactions.Interactions`;
* ``recommend(users, k, exclude_seen)`` returns the top ``k`` item codes and scores of customer
  codes ``users`` as :class:`~recsys.scoring.lists.Lists`, leaving out what each customer took in
  the fitted interactions when ``exclude_seen``;
* ``score(users, items)`` scores given (customer, item) candidates: ``items`` is
  ``(len(users), m)`` item codes, the answer ``(len(users), m)`` float64 (``-inf`` where an item
  code is -1).

Codes are those of the fitted interactions' vocabularies. An item the fitted interactions never
mention (a part of the export, such as an evaluation's training rows, can lack some) is never
recommended: nothing was learnt about it. The evaluation, the quality gate and the degraded path
use nothing but this surface.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from recsys.data.interactions import Interactions
from recsys.models.item_item import gather
from recsys.scoring.lists import Lists
from recsys.scoring.topk import (
    blockwise_sparse_top_k,
    blockwise_top_k,
    ragged_top_k,
    top_k_excluding,
    top_k_shared_excluding,
)


@runtime_checkable
class Recommender(Protocol):
    """Fit on interactions; recommend the top k for customers; score given candidates."""

    name: str

    def fit(self, interactions: Interactions) -> "Recommender":
        """Learn from ``interactions``; returns ``self``."""
        ...

    def recommend(self, users: np.ndarray, k: int, exclude_seen: bool = True) -> Lists:
        """Top ``k`` item codes and scores per customer code in ``users``."""
        ...

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores ``(len(users), m)`` of the item codes ``items`` ``(len(users), m)``."""
        ...


class MatrixRecommender:
    """Shared plumbing for recommenders whose scores come as dense (customers × items) blocks.

    Subclasses implement ``_fit`` (learn, return the non-personal fallback score per item, used as
    the tie-break) and ``_scores`` (dense scores of a block of customer codes over the item codes
    in ``self._columns``: by default every item the fitted interactions mention; a model may
    cover fewer). Non-personal models set ``non_personal`` and get the fast path that reads only
    the global top ``k + |seen|``. Item-item models set ``sparse`` and implement ``_product``
    instead of ``_scores`` (the sparse product of a block of customers' rows with an items × items
    matrix; the dense scores are it plus the popularity tie-break): their lists and opinions are
    read from the sparse product, never a dense row per customer
    (:func:`recsys.scoring.topk.sparse_top_k`: the same lists as the dense top-k).
    """

    name: str = "base"
    non_personal: bool = False
    sparse: bool = False  # scores are ``_product`` plus the tie-break
    # Item-item models score a customer from their items, each weighing recency ** (the distinct
    # later times at which the customer last took other items; ``recency_weights``): 1 weighs
    # every item the same.
    recency: float = 1.0

    def __init__(self) -> None:
        self._seen: sp.csr_matrix | None = None
        self._history: sp.csr_matrix | None = None  # ``_seen`` weighted by recency (``_seen`` itself for 1)
        self._fallback: np.ndarray | None = None
        self._columns: np.ndarray | None = None

    def _fit(self, interactions: Interactions, seen: sp.csr_matrix) -> np.ndarray:
        raise NotImplementedError

    def _scores(self, users: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _product(self, users: np.ndarray) -> sp.csr_matrix:
        raise NotImplementedError

    def _tie(self) -> np.ndarray:
        """The popularity tie-break of every item the model scores."""
        return tie_break(self._fallback)[self._columns]

    def fit(self, interactions: Interactions) -> "MatrixRecommender":
        """Learn from ``interactions``; returns ``self``."""
        self.fit_state(interactions)
        self._fallback = np.asarray(self._fit(interactions, self._seen), dtype=np.float64)
        return self

    def fit_state(self, interactions: Interactions) -> None:
        """What every model keeps of its rows: the seen matrix and the items it may recommend."""
        self._seen = interactions.seen()
        self._history = interactions.seen_by_recency(self.recency)
        # Items the fitted rows never mention are never recommended: nothing was learnt about them.
        self._columns = np.flatnonzero(interactions.item_counts() > 0)

    def _history_of(self, users: np.ndarray) -> sp.csr_matrix:
        """The rows of customer codes ``users`` an item-item model scores from: what each took,
        weighted by recency (float64)."""
        return self._history[users].astype(np.float64)

    @property
    def fallback(self) -> np.ndarray:
        """The non-personal score per item (what a customer with no history is ranked by)."""
        self._require_fit()
        return self._fallback

    @property
    def columns(self) -> np.ndarray:
        """The item codes the model scores (any other item is never recommended)."""
        self._require_fit()
        return self._columns

    def _require_fit(self) -> None:
        if self._seen is None:
            raise RuntimeError(f"{type(self).__name__} must be fitted before recommending")

    def recommend(self, users: np.ndarray, k: int, exclude_seen: bool = True) -> Lists:
        """Top ``k`` item codes and scores per customer code in ``users`` (see the module docstring)."""
        self._require_fit()
        users = np.asarray(users, dtype=np.int64)
        columns = self._columns
        seen = self._seen[users][:, columns] if exclude_seen else None
        if self.non_personal:
            if seen is None:
                seen = sp.csr_matrix((len(users), len(columns)), dtype=np.float32)
            picked, scores = top_k_shared_excluding(self._fallback[columns], seen, k)
        elif self.sparse:
            picked, scores = blockwise_sparse_top_k(lambda block: self._product(users[block]), len(users), self._tie(), k, seen)
        else:
            picked, scores = blockwise_top_k(lambda block: self._scores(users[block]), len(users), len(columns), k, seen)
        items = np.where(picked >= 0, columns[np.maximum(picked, 0)] if len(columns) else -1, -1)
        return Lists(items=items.astype(np.int64), scores=scores)

    def positions(self, items: np.ndarray) -> np.ndarray:
        """Where each item code stands in ``columns`` (-1: not scored by the model, or no item)."""
        lookup = np.full(self._seen.shape[1] + 1, -1, dtype=np.int64)
        lookup[self._columns] = np.arange(len(self._columns))
        items = np.asarray(items, dtype=np.int64)
        return np.where(items >= 0, lookup[np.where(items >= 0, items, -1)], -1)

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores of the item codes ``items`` ``(len(users), m)`` for customer codes ``users``."""
        return self.opinion(users).at(items)

    def opinion(self, users: np.ndarray) -> Opinion | SparseOpinion:
        """The model's scores of every item it covers for customer codes ``users``, to read its top
        items and its scores of candidates from (one computation for a block of customers)."""
        self._require_fit()
        users = np.asarray(users, dtype=np.int64)
        if self.sparse:
            return SparseOpinion(self, users, self._product(users))
        if self.non_personal:
            dense = np.broadcast_to(self._fallback[self._columns], (len(users), len(self._columns)))
        else:
            dense = self._scores(users)
        return Opinion(self, users, dense)


class Opinion:
    """What a fitted matrix model thinks of every item for one block of customers, computed once
    and read twice: its own top items, and its scores of given candidates."""

    def __init__(self, model: "MatrixRecommender", users: np.ndarray, dense: np.ndarray):
        self.model, self.users, self.dense = model, users, dense  # dense: (len(users), len(model.columns))

    def top(self, n: int, exclude_seen: bool = True) -> np.ndarray:
        """The model's top ``n`` item codes per customer (-1 padding), their own items left out."""
        seen = self.model._seen[self.users][:, self.model.columns] if exclude_seen else None
        picked, _ = top_k_excluding(np.array(self.dense, dtype=np.float64, copy=True), seen, n)
        return _codes(self.model.columns, picked)

    def at(self, items: np.ndarray) -> np.ndarray:
        """The model's scores of item codes ``items`` (len(users), m); ``-inf`` where it has none."""
        where = self.model.positions(items)
        picked = np.take_along_axis(self.dense, np.maximum(where, 0), axis=1) if self.dense.shape[1] else np.zeros(where.shape)
        return np.where(where >= 0, picked, -np.inf)


class SparseOpinion:
    """The opinion of an item-item model for a block of customers: their sparse ``product`` rows
    (``MatrixRecommender._product``; an item none of the customer's items points to scores only the
    popularity tie-break)."""

    def __init__(self, model: MatrixRecommender, users: np.ndarray, product: sp.csr_matrix):
        self.model, self.users = model, users
        self.product = product
        self.tie = model._tie()

    def at(self, items: np.ndarray) -> np.ndarray:
        """The model's scores of item codes ``items`` (len(users), m); ``-inf`` where it has none."""
        where = self.model.positions(items)
        values = gather(self.product, np.maximum(where, 0)).astype(np.float64) + self.tie[np.maximum(where, 0)]
        return np.where(where >= 0, values, -np.inf)

    def top(self, n: int, exclude_seen: bool = True) -> np.ndarray:
        """The model's top ``n`` item codes among the items its matrix reaches from each customer's
        items (-1 padding: a customer reaching fewer items gets a shorter list), own items left out."""
        product = self.product
        if exclude_seen:
            seen = self.model._seen[self.users][:, self.model.columns]
            product = (product - product.multiply(seen)).tocsr()
            product.eliminate_zeros()
        counts = np.diff(product.indptr)
        rows = np.repeat(np.arange(len(self.users)), counts)
        width = max(int(counts.max(initial=0)), 1)
        chosen, _ = ragged_top_k(rows, product.indices, product.data + self.tie[product.indices], len(self.users), min(n, width))
        return _codes(self.model.columns, chosen)


def _codes(columns: np.ndarray, picked: np.ndarray) -> np.ndarray:
    """Positions in ``columns`` (-1: none) as item codes (-1: none)."""
    if not len(columns):
        return np.full(picked.shape, -1, dtype=np.int64)
    return np.where(picked >= 0, columns[np.maximum(picked, 0)], -1).astype(np.int64)


def tie_break(popularity: np.ndarray) -> np.ndarray:
    """A score offset far below any real score difference that orders ties by popularity."""
    return 1e-9 * popularity / (popularity.max(initial=0.0) + 1.0)
