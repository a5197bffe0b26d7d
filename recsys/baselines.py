"""Non-neural baselines that any new model has to beat, behind one ``Recommender`` interface.

Every recommender takes the canonical interactions frame (``user_id``, ``item``, ``timestamp``,
``rating``) in :meth:`fit` and answers :meth:`recommend` for an array of user ids with two
``n_users x k`` arrays: item names (object dtype, ``None`` where fewer than ``k`` items can be
recommended) and scores (``-inf`` in those slots). Users not seen in ``fit`` get the model's
non-personal fallback list. Interactions are treated as binary (a customer did or did not take an
experience): repeats and ratings carry no extra weight, which matches how the evaluation scores.

Scoring is vectorised: a sparse user x item matrix, dense score blocks of bounded size, and
:func:`recsys.topk.top_k_excluding` for the selection, so a few million customers fit in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.topk import blockwise_top_k, top_k_shared_excluding

REQUIRED_COLUMNS = ("user_id", "item", "timestamp")


@runtime_checkable
class Recommender(Protocol):
    """What the evaluation needs from a model: fit on interactions, recommend top k per user."""

    name: str

    def fit(self, interactions: pd.DataFrame) -> "Recommender":
        """Learn from the canonical interactions frame; returns ``self``."""
        ...

    def recommend(
        self, users: np.ndarray, k: int, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """(items, scores): 2-D arrays n_users x k; items object dtype of item names; users unseen
        in fit get the non-personal fallback (popularity)."""
        ...


@dataclass(frozen=True)
class InteractionMatrix:
    """Binary user x item CSR matrix with its id vocabularies (both sorted ascending)."""

    users: np.ndarray  # object array of user ids, sorted
    items: np.ndarray  # object array of item names, sorted
    matrix: sp.csr_matrix  # float32, 1.0 where the user interacted with the item

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_users, n_items)``."""
        return self.matrix.shape

    def user_index(self, users: np.ndarray) -> np.ndarray:
        """Row index of each user id, ``-1`` for ids not in the vocabulary."""
        return _lookup(self.users, users)

    def item_index(self, items: np.ndarray) -> np.ndarray:
        """Column index of each item name, ``-1`` for names not in the vocabulary."""
        return _lookup(self.items, items)

    def item_popularity(self) -> np.ndarray:
        """Number of distinct users per item (column non-zeros)."""
        return np.diff(self.matrix.tocsc().indptr).astype(np.float64)


def _lookup(vocabulary: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Positions of ``values`` in the sorted ``vocabulary``; ``-1`` where absent."""
    values = np.asarray(values, dtype=object)
    if len(vocabulary) == 0:
        return np.full(len(values), -1, dtype=np.int64)
    # Index.get_indexer hashes instead of comparing Python objects pairwise: fast on object ids.
    return pd.Index(vocabulary, dtype=object).get_indexer(values).astype(np.int64)


def _as_object(values: pd.Series | np.ndarray) -> np.ndarray:
    """Plain numpy object array of Python strings (pandas 3 defaults to its own string dtype)."""
    return np.asarray(values, dtype=object)


def build_interaction_matrix(
    interactions: pd.DataFrame, items: np.ndarray | None = None
) -> InteractionMatrix:
    """Binary user x item CSR matrix of the canonical frame, plus sorted id vocabularies.

    ``items`` fixes the item vocabulary (sorted, object dtype) when the caller needs the columns to
    line up with another matrix; rows whose item is not in it are dropped.
    """
    missing = [c for c in ("user_id", "item") if c not in interactions.columns]
    if missing:
        raise ValueError(f"interactions frame lacks column(s) {missing}")
    u_codes, u_uniques = pd.factorize(interactions["user_id"], sort=True)
    if items is None:
        i_codes, i_uniques = pd.factorize(interactions["item"], sort=True)
        items = _as_object(i_uniques)
    else:
        items = np.asarray(items, dtype=object)
        i_codes = _lookup(items, _as_object(interactions["item"]))
    keep = (u_codes >= 0) & (i_codes >= 0)
    matrix = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32), (u_codes[keep], i_codes[keep])),
        shape=(len(u_uniques), len(items)),
    )
    # Duplicates were summed on construction; the models see only "interacted or not".
    matrix.data[:] = 1.0
    matrix.sort_indices()
    return InteractionMatrix(users=_as_object(u_uniques), items=items, matrix=matrix)


def _names(items: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Item names for an index array, ``None`` where the index is ``-1``."""
    out = np.full(idx.shape, None, dtype=object)
    ok = idx >= 0
    out[ok] = items[idx[ok]]
    return out


def _tie_break(popularity: np.ndarray) -> np.ndarray:
    """A score offset far below any real score difference that orders ties by popularity."""
    return 1e-9 * popularity / (popularity.max(initial=0.0) + 1.0)


@dataclass(frozen=True)
class _Fitted:
    """State shared by the fitted baselines (kept off the public surface)."""

    data: InteractionMatrix
    fallback: np.ndarray  # per-item score used for unknown users and as tie-break


class _MatrixRecommender:
    """Shared fit/recommend plumbing: subclasses supply per-user scores for known users."""

    name: str = "base"
    # True when every user's scores are the fallback vector: recommend then only has to look at
    # the global top k + |seen| items per user.
    _non_personal: bool = False

    def __init__(self) -> None:
        self._state: _Fitted | None = None

    # --- subclass hooks -------------------------------------------------------------------
    def _fit(self, data: InteractionMatrix, interactions: pd.DataFrame) -> np.ndarray:
        """Fit model state; return the non-personal fallback score per item."""
        raise NotImplementedError

    def _score(self, rows: np.ndarray) -> np.ndarray:
        """Dense scores ``(len(rows), n_items)`` for known user rows."""
        raise NotImplementedError

    # --- public surface -------------------------------------------------------------------
    def fit(self, interactions: pd.DataFrame) -> "_MatrixRecommender":
        """Learn from the canonical interactions frame; returns ``self``."""
        data = build_interaction_matrix(interactions)
        fallback = self._fit(data, interactions)
        self._state = _Fitted(data=data, fallback=np.asarray(fallback, dtype=np.float64))
        return self

    @property
    def items(self) -> np.ndarray:
        """Item vocabulary learned in :meth:`fit` (sorted names)."""
        return self._fitted.data.items

    @property
    def _fitted(self) -> _Fitted:
        if self._state is None:
            raise RuntimeError(f"{type(self).__name__} must be fitted before recommending")
        return self._state

    def recommend(
        self, users: np.ndarray, k: int, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """(items, scores): 2-D arrays n_users x k; items object dtype of item names; users unseen
        in fit get the non-personal fallback (popularity)."""
        state = self._fitted
        data = state.data
        users = np.asarray(users, dtype=object)
        rows = data.user_index(users)
        known = rows >= 0
        n_items = data.shape[1]

        known_rows = rows[known]
        seen = data.matrix[known_rows] if exclude_seen else None

        def score_block(block: slice) -> np.ndarray:
            return self._score(known_rows[block])

        if self._non_personal and seen is not None:
            k_idx, k_val = top_k_shared_excluding(state.fallback, seen, k)
        else:
            k_idx, k_val = blockwise_top_k(score_block, len(known_rows), n_items, k, seen)

        # Unknown users have nothing to exclude: they all share one fallback list.
        f_idx, f_val = blockwise_top_k(
            lambda block: state.fallback[None, :], 1, n_items, k, None
        )
        idx = np.empty((len(users), k), dtype=np.int64)
        val = np.empty((len(users), k))
        idx[known], val[known] = k_idx, k_val
        idx[~known], val[~known] = f_idx[0], f_val[0]
        return _names(data.items, idx), val


class Popularity(_MatrixRecommender):
    """Most popular items overall: score = number of distinct customers per item, all time."""

    name = "popularity"
    _non_personal = True

    def _fit(self, data: InteractionMatrix, interactions: pd.DataFrame) -> np.ndarray:
        """Popularity is both the model and its own fallback."""
        return data.item_popularity()

    def _score(self, rows: np.ndarray) -> np.ndarray:
        """Everyone gets the same scores; seen items are masked by the caller."""
        return np.broadcast_to(self._fitted.fallback, (len(rows), self._fitted.fallback.size))


class RecentPopularity(Popularity):
    """Most popular items in the trailing ``window_days`` ending at the last timestamp in fit.

    Score = distinct customers in the window + a small all-time term, so that items tied (or
    absent) in the window are still ordered by overall popularity and lists are always full.
    """

    def __init__(self, window_days: float = 90) -> None:
        """``window_days``: length of the trailing window, in days (> 0)."""
        super().__init__()
        if window_days <= 0:
            raise ValueError(f"window_days must be > 0, got {window_days}")
        self.window_days = window_days
        self.name = f"recent_popularity_{window_days:g}d"

    def _fit(self, data: InteractionMatrix, interactions: pd.DataFrame) -> np.ndarray:
        """Count distinct customers per item since ``last timestamp - window``."""
        if "timestamp" not in interactions.columns:
            raise ValueError("RecentPopularity needs a timestamp column")
        ts = pd.to_datetime(interactions["timestamp"])
        if len(ts) == 0:
            return data.item_popularity()
        start = ts.max() - pd.Timedelta(days=self.window_days)
        recent = build_interaction_matrix(interactions[ts.to_numpy() >= start.to_datetime64()],
                                          items=data.items)
        all_time = data.item_popularity()
        # The all-time term is < 1 in total, so it can only reorder items with equal recent counts.
        return recent.item_popularity() + all_time / (all_time.max(initial=0.0) + 1.0)


class ItemKNN(_MatrixRecommender):
    """Item-based neighbours: cosine similarity of the binary user x item columns.

    A user's score for an item is the sum of its similarities to the user's items; ties (and
    users whose items co-occur with nothing) are broken by popularity.
    """

    name = "item_knn"

    def __init__(self) -> None:
        super().__init__()
        self._similarity: sp.csr_matrix | None = None

    def _fit(self, data: InteractionMatrix, interactions: pd.DataFrame) -> np.ndarray:
        """Sparse item x item cosine matrix with a zero diagonal."""
        x = data.matrix
        co = (x.T @ x).tocsr().astype(np.float64)
        norms = np.sqrt(co.diagonal())
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        sim = sp.diags(inv) @ co @ sp.diags(inv)
        # Self-similarity would only push a user's own items up, which matters when seen items
        # are not excluded and means nothing otherwise.
        sim.setdiag(0.0)
        sim.eliminate_zeros()
        self._similarity = sim.tocsr()
        return data.item_popularity()

    def _score(self, rows: np.ndarray) -> np.ndarray:
        """User rows times the similarity matrix, plus the popularity tie-break."""
        state = self._fitted
        scores = (state.data.matrix[rows].astype(np.float64) @ self._similarity).toarray()
        return scores + _tie_break(state.fallback)[None, :]


class ALS(_MatrixRecommender):
    """Implicit-feedback matrix factorisation (``implicit`` package, CPU, deterministic).

    Confidence is ``alpha`` on every observed (binary) cell. Training runs single-threaded with a
    fixed ``random_state`` so repeated runs give identical factors; scoring uses the dot product of
    the learned factors and the shared top-k, with popularity as fallback and tie-break.
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

    def _fit(self, data: InteractionMatrix, interactions: pd.DataFrame) -> np.ndarray:
        """Fit ALS on the binary matrix with BLAS held to one thread (determinism, no oversubscription)."""
        try:
            from implicit.cpu.als import AlternatingLeastSquares
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "The ALS baseline needs the optional 'implicit' package: pip install implicit"
            ) from exc
        from threadpoolctl import threadpool_limits

        # implicit checks the BLAS thread count when the model is built, so build it inside too.
        with threadpool_limits(limits=1, user_api="blas"):
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                random_state=self.random_state,
                num_threads=1,
            )
            model.fit(data.matrix, show_progress=False)
        self._user_factors = np.asarray(model.user_factors, dtype=np.float64)
        self._item_factors = np.asarray(model.item_factors, dtype=np.float64)
        return data.item_popularity()

    def _score(self, rows: np.ndarray) -> np.ndarray:
        """Factor dot products plus the popularity tie-break."""
        scores = self._user_factors[rows] @ self._item_factors.T
        return scores + _tie_break(self._fitted.fallback)[None, :]


__all__ = [
    "ALS",
    "InteractionMatrix",
    "ItemKNN",
    "Popularity",
    "RecentPopularity",
    "Recommender",
    "build_interaction_matrix",
]
