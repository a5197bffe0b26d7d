"""The trained two-stage model as plain arrays, and the one loop that scores customers with it.

A :class:`Scorer` holds the customer and item vectors of the retrieval towers, the ranking
context and the ranker's NumPy weights: no TensorFlow, picklable. It is built once after
training; shards of customers are then scored from it in this process or on Dask workers, which
receive it once.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from recsys.models.context import Context, pair_features
from recsys.models.ranking import Ranker
from recsys.models.retrieval import candidates_for
from recsys.progress import timed
from recsys.scoring.lists import Lists, empty_lists, put
from recsys.scoring.topk import one_blas_thread, top_k_excluding

BLOCK_USERS = 4096  # customers per ranking block


@dataclass(frozen=True)
class Scorer:
    """Everything scoring needs, as arrays (see the module docstring)."""

    users: np.ndarray  # (n_users, dim) float32 customer vectors
    items: np.ndarray  # (n_items, dim) float32 item vectors
    context: Context
    ranker: Ranker | None  # None: lists follow retrieval order
    candidates: int  # retrieval candidates per customer
    features: tuple[str, ...] | None = None  # the ranker's features (None: all)
    blocked: np.ndarray | None = None  # item codes never recommended (the model knows nothing of them)

    @property
    def n_users(self) -> int:
        """Customers the scorer has vectors for."""
        return len(self.users)

    def lists(
        self,
        rows: np.ndarray,
        k: int,
        exclude_seen: bool = True,
        seconds: dict[str, float] | None = None,
        threads: int | None = None,
        block: int = BLOCK_USERS,
    ) -> Lists:
        """Top-``k`` lists of customer codes ``rows``: retrieval candidates, then ranking order.

        ``seconds``, if given, accumulates the time spent in each stage: "retrieval_scoring" (the
        candidate search: product with every item vector, seen items masked, exact top-N) and
        "ranking_scoring" (pair features, the ranker, the final top-k). ``threads``: how many
        threads the candidate search and the ranking use (default: one per core).
        """
        seconds = {} if seconds is None else seconds
        rows = np.asarray(rows, dtype=np.int64)
        seen = self.context.seen if exclude_seen else None
        threads = threads or os.cpu_count() or 1
        out = empty_lists(len(rows), k)
        # One BLAS thread: the products here are tall and thin (candidates x 10 features), where
        # OpenBLAS's threads cost 5x more than they give; the candidate search has its own threads.
        with one_blas_thread():
            # Candidates for 8 blocks at a time (fewer thread pools and buffers to set up), ranked a
            # block at a time.
            for chunk_start in range(0, len(rows), 8 * block):
                chunk = rows[chunk_start : chunk_start + 8 * block]
                clock = time.perf_counter()
                found = candidates_for(
                    self.users, self.items, chunk, max(self.candidates, k), seen, threads=threads, blocked=self.blocked
                )
                timed(seconds, "retrieval_scoring", clock)
                starts = range(0, len(chunk), block)

                def rank(start: int) -> Lists:
                    part = slice(start, start + block)
                    return self._top(chunk[part], Lists(found.items[part], found.scores[part]), k)

                # Ranking blocks on every core: NumPy and SciPy release the GIL in the heavy parts.
                clock = time.perf_counter()
                with ThreadPoolExecutor(min(len(starts), threads)) as pool:
                    ranked = list(pool.map(rank, starts))
                timed(seconds, "ranking_scoring", clock)
                for start, lists in zip(starts, ranked):
                    put(out, chunk_start + start, lists)
        return out

    def score(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Ranking scores ``(len(rows), m)`` of the item codes ``items`` for customer codes ``rows``,
        taking each row's items as its candidate list in the order given (-1: no item, ``-inf``)."""
        rows = np.asarray(rows, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        valid = items >= 0
        dots = np.einsum("nd,nmd->nm", self.users[rows], self.items[np.maximum(items, 0)]).astype(np.float64)
        candidates = Lists(items=np.where(valid, items, -1), scores=np.where(valid, dots, -np.inf))
        with one_blas_thread():
            return np.where(valid, self._order(rows, candidates), -np.inf)

    def _order(self, rows: np.ndarray, candidates: Lists) -> np.ndarray:
        if self.ranker is None:
            return candidates.scores
        features = pair_features(self.context, candidates, rows, self.features)
        return self.ranker.scores(rows, candidates, features)

    def _top(self, rows: np.ndarray, candidates: Lists, k: int) -> Lists:
        """The final top-k of customers ``rows`` from their candidates, in ranking order."""
        order = self._order(rows, candidates)
        picked, scores = top_k_excluding(order, None, min(k, order.shape[1]))
        chosen = np.take_along_axis(candidates.items, np.maximum(picked, 0), axis=1)
        chosen[picked < 0] = -1
        return Lists(items=chosen, scores=scores)
