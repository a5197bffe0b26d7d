"""The simple recommenders any new model has to beat, on the shared surface (``recsys.models.base``).

Interactions are treated as binary (a customer did or did not take an experience): repeats and
ratings carry no extra weight, which matches how the evaluation scores. Scoring is vectorised: a
sparse customers × items matrix, dense score blocks of bounded size and the shared top-k.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.data.interactions import Interactions, item_popularity, recent_popularity
from recsys.models.base import MatrixRecommender, tie_break


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
    """The list for customers with no history: (item codes, scores) of :class:`RecentPopularity`."""
    model = RecentPopularity(days).fit(interactions)
    lists = model.recommend(np.zeros(1, dtype=np.int64), k, exclude_seen=False)
    valid = lists.items[0] >= 0
    return lists.items[0][valid], lists.scores[0][valid]


class ItemKNN(MatrixRecommender):
    """Item-based neighbours: cosine similarity of the binary customers × items columns.

    A customer's score for an item is the sum of its similarities to the customer's items; ties
    (and customers whose items co-occur with nothing) are broken by popularity.
    """

    name = "item_knn"

    def __init__(self) -> None:
        super().__init__()
        self._similarity: sp.csr_matrix | None = None

    def _fit(self, interactions: Interactions, seen: sp.csr_matrix) -> np.ndarray:
        co = (seen.T @ seen).tocsr().astype(np.float64)
        norms = np.sqrt(co.diagonal())
        inverse = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        similarity = sp.diags(inverse) @ co @ sp.diags(inverse)
        # Self-similarity would only push a customer's own items up, which matters when seen items
        # are not excluded and means nothing otherwise.
        similarity.setdiag(0.0)
        similarity.eliminate_zeros()
        self._similarity = similarity.tocsr()
        return item_popularity(interactions)

    def _scores(self, users: np.ndarray) -> np.ndarray:
        scores = (self._seen[users].astype(np.float64) @ self._similarity).toarray()
        return scores + tie_break(self._fallback)[None, :]


class ALS(MatrixRecommender):
    """Implicit-feedback matrix factorisation (``implicit`` package, CPU, deterministic).

    Confidence is ``alpha`` on every observed (binary) cell. Training runs single-threaded with a
    fixed ``random_state`` so repeated runs give identical factors; scoring uses the dot product of
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
                num_threads=1,
            )
            model.fit(seen, show_progress=False)
        self._user_factors = np.asarray(model.user_factors, dtype=np.float64)
        self._item_factors = np.asarray(model.item_factors, dtype=np.float64)
        return item_popularity(interactions)

    def _scores(self, users: np.ndarray) -> np.ndarray:
        scores = self._user_factors[users] @ self._item_factors.T
        return scores + tie_break(self._fallback)[None, :]
