"""Ranking metrics of top-k lists against held-out items, on item codes, and their uncertainty.

Every metric is first computed per customer (:func:`user_metrics`), so that a mean can carry a
bootstrap confidence interval over customers (:func:`mean_interval`) and two recommenders scored
on the same customers can be compared pairwise (:func:`paired_difference`, :func:`ratio_interval`).
"""

from __future__ import annotations

import math
import time

import numpy as np
import scipy.sparse as sp

DEFAULT_K = 12
LEVEL = 0.95  # two-sided level of every confidence interval
RESAMPLES = 1000


def user_metrics(recommended: np.ndarray, relevant: sp.csr_matrix, k: int = DEFAULT_K) -> dict[str, np.ndarray]:
    """NDCG@k, Recall@k and HitRate@k of each customer's list (arrays of ``len(relevant)``).

    ``recommended`` is ``n_users x (>= k)`` item codes (-1 = padding, never a hit); row ``r`` of
    ``relevant`` (``n_users x n_items``, non-zero = held out, every row non-empty) holds the items
    of the same customer. Gains are binary; DCG sums ``1 / log2(rank + 1)`` over hits at 1-based
    ranks ``<= k``, an item repeated in a list counting once; the ideal DCG and the recall
    denominator use ``min(|relevant|, k)`` hits.
    """
    recommended = np.asarray(recommended)
    relevant = sp.csr_matrix(relevant)
    n_users = relevant.shape[0]
    if recommended.ndim != 2 or recommended.shape[0] != n_users:
        raise ValueError(f"recommended must be ({n_users}, >= {k}), got shape {recommended.shape}")
    if recommended.shape[1] < k:
        raise ValueError(f"recommended has {recommended.shape[1]} columns, fewer than k={k}")
    sizes = np.diff(relevant.indptr)
    if (sizes == 0).any():
        raise ValueError("every scored user needs at least one relevant item")
    if n_users == 0:
        empty = np.zeros(0)
        return {"ndcg": empty, "recall": empty, "hit_rate": empty}
    top = recommended[:, :k].astype(np.int64)
    hits = _hits(top, relevant)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.minimum(sizes, k) - 1]
    n_hits = hits.sum(axis=1)
    return {
        "ndcg": (hits @ discounts) / ideal,
        "recall": n_hits / np.minimum(sizes, k),
        "hit_rate": (n_hits > 0).astype(np.float64),
    }


def ranking_metrics(recommended: np.ndarray, relevant: sp.csr_matrix, k: int = DEFAULT_K, *, n_catalog: int) -> dict:
    """The means of :func:`user_metrics`, and coverage: the number of distinct items recommended
    to anyone in the top k over ``n_catalog``. Adds ``users`` (count) and ``k``."""
    per_user = user_metrics(recommended, relevant, k)
    n_users = len(per_user["ndcg"])
    if n_users == 0:
        return {"ndcg": math.nan, "recall": math.nan, "hit_rate": math.nan, "coverage": 0.0, "users": 0, "k": k}
    top = np.asarray(recommended)[:, :k]
    coverage = len(np.unique(top[top >= 0])) / n_catalog if n_catalog else math.nan
    return {
        **{name: float(values.mean()) for name, values in per_user.items()},
        "coverage": float(coverage),
        "users": int(n_users),
        "k": int(k),
    }


def _resampled_means(values: list[np.ndarray], resamples: int, seed: int) -> list[np.ndarray]:
    """Means of each array over the same bootstrap resamples of their (aligned) customers."""
    n = len(values[0])
    rng = np.random.default_rng(seed)
    out = [np.empty(resamples) for _ in values]
    for start in range(0, resamples, 100):
        stop = min(start + 100, resamples)
        picks = rng.integers(0, n, size=(stop - start, n))
        for array, means in zip(values, out):
            means[start:stop] = array[picks].mean(axis=1)
    return out


def _bounds(samples: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return float(low), float(high)


def mean_interval(values: np.ndarray, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval (over customers) of the mean of per-customer ``values``."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return (math.nan, math.nan)
    (means,) = _resampled_means([values], resamples, seed)
    return _bounds(means, level)


def paired_difference(
    a: np.ndarray, b: np.ndarray, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``a - b`` over the same customers, and its paired bootstrap interval: (mean, low, high)."""
    difference = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(difference) < 2:
        return (float(difference.mean()) if len(difference) else math.nan, math.nan, math.nan)
    (means,) = _resampled_means([difference], resamples, seed)
    return (float(difference.mean()), *_bounds(means, level))


def ratio_interval(
    a: np.ndarray, b: np.ndarray, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float, float]:
    """``mean(a) / mean(b)`` over the same customers, and its paired bootstrap interval: (ratio, low, high)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ratio = float(a.mean() / b.mean()) if len(a) and b.mean() > 0 else math.nan
    if len(a) < 2:
        return (ratio, math.nan, math.nan)
    means_a, means_b = _resampled_means([a, b], resamples, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (ratio, *_bounds(means_a / means_b, level))


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


def score_fitted(model, split, k: int = DEFAULT_K, seed: int = 0, started: float | None = None) -> tuple[dict, np.ndarray]:
    """The metrics of a recommender fitted on ``split.train`` (a ``recsys.models.base.Recommender``)
    on ``split``'s customers, training items excluded, coverage against the items the training rows
    hold; with ``ndcg_low``/``ndcg_high`` (the bootstrap interval) and ``seconds`` (since
    ``started``, fit included when given). Returns (metrics, each scored customer's NDCG)."""
    started = time.perf_counter() if started is None else started
    lists = model.recommend(split.users, k, exclude_seen=True)
    seconds = time.perf_counter() - started
    relevant = split.relevant_rows()
    catalogue = int(np.count_nonzero(split.train.item_counts()))
    metrics = ranking_metrics(lists.items, relevant, k, n_catalog=catalogue)
    ndcg = user_metrics(lists.items, relevant, k)["ndcg"]
    low, high = mean_interval(ndcg, seed=seed)
    return {**metrics, "ndcg_low": low, "ndcg_high": high, "seconds": seconds}, ndcg
