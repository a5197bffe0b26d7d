"""Ranking metrics of top-k lists against held-out items, on item codes."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

DEFAULT_K = 12


def ranking_metrics(recommended: np.ndarray, relevant: sp.csr_matrix, k: int = DEFAULT_K, *, n_catalog: int) -> dict:
    """NDCG@k, Recall@k, HitRate@k and coverage of top-k lists against held-out item sets.

    ``recommended`` is ``n_users x (>= k)`` item codes (-1 = padding, never a hit); row ``r`` of
    ``relevant`` (``n_users x n_items``, non-zero = held out, every row non-empty) holds the items
    of the same customer. Gains are binary; DCG sums ``1 / log2(rank + 1)`` over hits at 1-based
    ranks ``<= k``, an item repeated in a list counting once; the ideal DCG and the recall
    denominator use ``min(|relevant|, k)`` hits. Coverage is the number of distinct items
    recommended to anyone in the top k over ``n_catalog``. Returns the means as floats plus
    ``users`` (count) and ``k``.
    """
    recommended = np.asarray(recommended)
    relevant = sp.csr_matrix(relevant)
    n_users = relevant.shape[0]
    if recommended.ndim != 2 or recommended.shape[0] != n_users:
        raise ValueError(f"recommended must be ({n_users}, >= {k}), got shape {recommended.shape}")
    if recommended.shape[1] < k:
        raise ValueError(f"recommended has {recommended.shape[1]} columns, fewer than k={k}")
    if n_users == 0:
        return {"ndcg": math.nan, "recall": math.nan, "hit_rate": math.nan, "coverage": 0.0, "users": 0, "k": k}
    sizes = np.diff(relevant.indptr)
    if (sizes == 0).any():
        raise ValueError("every scored user needs at least one relevant item")
    top = recommended[:, :k].astype(np.int64)
    hits = _hits(top, relevant)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = hits @ discounts
    ideal = np.cumsum(discounts)[np.minimum(sizes, k) - 1]
    n_hits = hits.sum(axis=1)
    present = top[top >= 0]
    coverage = len(np.unique(present)) / n_catalog if n_catalog else math.nan
    return {
        "ndcg": float(np.mean(dcg / ideal)),
        "recall": float(np.mean(n_hits / np.minimum(sizes, k))),
        "hit_rate": float(np.mean(n_hits > 0)),
        "coverage": float(coverage),
        "users": int(n_users),
        "k": int(k),
    }


def _hits(top: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    """Boolean ``top.shape``: the slot holds a held-out item of its row, seen for the first time in the row."""
    n_users, k = top.shape
    width = max(relevant.shape[1], int(top.max(initial=0)) + 1)
    rows = np.repeat(np.arange(n_users, dtype=np.int64), k)
    keys = rows * width + np.maximum(top.ravel(), 0)
    owner = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(relevant.indptr))
    relevant_keys = np.sort(owner * width + relevant.indices)
    position = np.clip(np.searchsorted(relevant_keys, keys), 0, max(len(relevant_keys) - 1, 0))
    found = (relevant_keys[position] == keys) if len(relevant_keys) else np.zeros(len(keys), dtype=bool)
    # A list that repeats an item must not earn its gain twice: only first occurrences count.
    first = np.zeros(len(keys), dtype=bool)
    first[np.unique(keys, return_index=True)[1]] = True
    return (found & first & (top.ravel() >= 0)).reshape(n_users, k)
