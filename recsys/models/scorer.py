"""The trained two-stage model as plain arrays, and the one loop that scores customers with it.

A :class:`Scorer` holds the candidate sources (the retrieval towers' customer and item vectors,
the fitted EASE and RP3beta), the ranking context and the ranker's NumPy weights: no TensorFlow,
picklable. It is built once after training; shards of customers are then scored from it in this
process or on Dask workers, which receive it once.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from recsys.models.candidates import Candidates, Sources, candidate_features, gather_candidates, given_candidates
from recsys.models.context import Context
from recsys.models.ranking import Ranker
from recsys.scoring.lists import Lists, empty_lists, put
from recsys.scoring.rules import Curator, add_counts
from recsys.scoring.topk import one_blas_thread, top_k_excluding

BLOCK_USERS = 4096  # customers per ranking block


@dataclass(frozen=True)
class Scorer:
    """Everything scoring needs, as arrays (see the module docstring)."""

    sources: Sources
    context: Context
    ranker: Ranker | None  # None: lists follow the two-tower's scores
    candidates: int  # candidates per customer from each source
    features: tuple[str, ...]  # the ranker's features
    # The final cut under the run's rules, with reasons (recsys.scoring.rules); None: the plain top k.
    curator: Curator | None = None

    @property
    def n_users(self) -> int:
        """Customers the scorer has vectors for."""
        return len(self.sources.user_vectors)

    def lists(
        self,
        rows: np.ndarray,
        k: int,
        exclude_seen: bool = True,
        seconds: dict[str, float] | None = None,
        threads: int | None = None,
        block: int = BLOCK_USERS,
        removed: dict[str, int] | None = None,
    ) -> Lists:
        """Top-``k`` lists of customer codes ``rows``: candidates of every source, then ranking order.

        ``seconds``, if given, accumulates the time spent in each stage: "retrieval_scoring" (every
        source's top candidates, merged and scored by every source) and "ranking_scoring" (the
        features, the ranker, the final top-k). ``threads``: how many threads the two-tower's
        candidate search and the ranking use (default: one per core). ``removed``, if given,
        accumulates how many list slots each rule took out (``recsys.scoring.rules.COUNTED``).
        """
        seconds = {} if seconds is None else seconds
        rows = np.asarray(rows, dtype=np.int64)
        seen = self.context.seen if exclude_seen else None
        threads = threads or os.cpu_count() or 1
        out = empty_lists(len(rows), k)
        n = max(self.candidates, k)
        # One BLAS thread: the products here are tall and thin (candidates x a few features), where
        # OpenBLAS's threads cost 5x more than they give; the candidate search has its own threads.
        with one_blas_thread():
            starts = range(0, len(rows), block)

            def score_block(start: int) -> tuple[int, Lists, float, float, dict]:
                part = rows[start : start + block]
                clock = time.perf_counter()
                candidates = gather_candidates(self.sources, part, n, seen, threads=1)
                found = time.perf_counter()
                lists, counts = self._top(candidates, k)
                return start, lists, found - clock, time.perf_counter() - found, counts

            # Blocks on every core: NumPy and SciPy release the GIL in the heavy parts.
            with ThreadPoolExecutor(min(len(starts), threads) or 1) as pool:
                for start, lists, retrieval, ranking, counts in pool.map(score_block, starts):
                    put(out, start, lists)
                    if removed is not None:
                        add_counts(removed, counts)
                    seconds["retrieval_scoring"] = seconds.get("retrieval_scoring", 0.0) + retrieval
                    seconds["ranking_scoring"] = seconds.get("ranking_scoring", 0.0) + ranking
        return out

    def score(self, rows: np.ndarray, items: np.ndarray, exclude_seen: bool = True) -> np.ndarray:
        """Ranking scores ``(len(rows), m)`` of the item codes ``items`` for customer codes ``rows``
        (-1: no item, ``-inf``), as :meth:`lists` would score them among its candidates."""
        seen = self.context.seen if exclude_seen else None
        candidates = given_candidates(self.sources, rows, items, self.candidates, seen)
        with one_blas_thread():
            return self._order(candidates)

    def _order(self, candidates: Candidates) -> np.ndarray:
        if self.ranker is None:
            return candidates.scores[self.sources.names[0]]
        return self.ranker.scores(candidates.items, candidate_features(self.context, candidates, self.features))

    def _top(self, candidates: Candidates, k: int) -> tuple[Lists, dict]:
        """The final top-k of the candidates, in ranking order (under the curator's rules, with
        reasons, when there is one), and what the rules removed."""
        order = self._order(candidates)
        if self.curator is not None:
            return self.curator.finish(candidates.rows, candidates.items, order, k)
        picked, scores = top_k_excluding(order, None, min(k, order.shape[1]))
        chosen = np.take_along_axis(candidates.items, np.maximum(picked, 0), axis=1)
        chosen[picked < 0] = -1
        return Lists(items=chosen, scores=scores), {}
