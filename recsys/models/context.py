"""What the ranking stage knows about customers and items, and the features of (customer, candidate) pairs.

Everything here is NumPy and SciPy (no TensorFlow), so a scoring shard can compute features in any
process: popularity (all time, recent, around the customer's last visit), mean ratings, the
customer's activity and recency, and item-item co-occurrence with the customer's items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recsys.data.interactions import (
    DAY,
    Interactions,
    PairTimes,
    item_popularity,
    pair_times,
    recent_popularity,
    user_histories,
)
from recsys.models.item_item import cosine_neighbours, gather
from recsys.scoring.lists import Lists

FEATURES = (
    "retrieval_zscore",
    "retrieval_position",
    "popularity",
    "recent_popularity",
    "cooccurrence",
    "last_item_similarity",
    "item_rating",
    "user_activity",
    "days_inactive",
    "popularity_when_active",
)
_WINDOW_DAYS = 30


@dataclass(frozen=True)
class Context:
    """What is known about users and items at scoring time, from one set of interactions."""

    popularity: np.ndarray
    recent: np.ndarray
    rating: np.ndarray
    activity: np.ndarray
    inactive_days: np.ndarray
    seen: sp.csr_matrix
    last_item: np.ndarray
    similarity: sp.csr_matrix
    last_time: np.ndarray
    first_day: int  # day number of the first interaction
    item_days: np.ndarray  # (items, days + 1) int32: customers who first took the item up to each day


def context_of(data: Interactions, recent_days: int, times: PairTimes | None = None) -> Context:
    """Popularity, ratings, activity and co-occurrence computed from ``data``.

    One sort of the rows (``pair_times``, passed as ``times`` when the caller has it) gives every
    customer-item pair with its first and last time, and everything else is counted from those
    pairs (at a million customers, each extra pass over 41M rows costs seconds).
    """
    n_users, n_items = data.n_users, data.n_items
    pair_user, pair_item, first_time, last_time_pair = times if times is not None else pair_times(data)
    pairs = (pair_user, pair_item, last_time_pair)
    per_user = np.bincount(pair_user, minlength=n_users)
    seen = sp.csr_matrix(
        (np.ones(len(pair_user), dtype=np.float32), pair_item, np.r_[0, np.cumsum(per_user)]), shape=(n_users, n_items)
    )
    ratings = np.bincount(data.item, weights=data.rating, minlength=n_items)
    counts = np.bincount(data.item, minlength=n_items)
    prior = float(data.rating.mean()) if len(data.rating) else 0.0
    # Shrink towards the global mean so an item rated once is not "the best item".
    item_rating = (ratings + 10 * prior) / (counts + 10)
    end = int(data.time.max()) if len(data.time) else 0
    last_time = np.zeros(n_users, dtype=np.int64)
    np.maximum.at(last_time, pair_user, last_time_pair)
    return Context(
        popularity=np.log1p(item_popularity(data, pairs=pairs, dtype=np.float32)),
        recent=np.log1p(recent_popularity(data, recent_days, pairs=pairs, dtype=np.float32)),
        rating=item_rating.astype(np.float32),
        activity=np.log1p(per_user.astype(np.float32)),
        inactive_days=np.log1p(np.maximum(end - last_time, 0) / float(DAY)).astype(np.float32),
        seen=seen,
        last_item=user_histories(data, 1, pairs=pairs)[:, 0],
        similarity=cooccurrence_similarity(seen),
        last_time=last_time,
        **_daily_counts(pair_item, first_time, n_items),
    )


def _daily_counts(pair_item: np.ndarray, first_time: np.ndarray, n_items: int) -> dict:
    """Cumulative count, per item and day, of customers who had taken the item by that day."""
    days = first_time // DAY
    first_day = int(days.min()) if len(days) else 0
    n_days = int(days.max()) - first_day + 1 if len(days) else 1
    counts = np.zeros((n_items, n_days + 1), dtype=np.int32)
    np.add.at(counts, (pair_item, days - first_day + 1), 1)
    return {"first_day": first_day, "item_days": np.cumsum(counts, axis=1, dtype=np.int32)}


def popularity_when_active(context: Context, items: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Customers who took each candidate in the 30 days up to the customer's own last visit."""
    last_column = context.item_days.shape[1] - 1
    end = np.clip(context.last_time[rows] // DAY - context.first_day + 1, 0, last_column)[:, None]
    start = np.clip(end - _WINDOW_DAYS, 0, last_column)
    return np.log1p(context.item_days[items, end] - context.item_days[items, start]).astype(np.float32)


def pair_features(
    context: Context, candidates: Lists, rows: np.ndarray, names: tuple[str, ...] | None = None
) -> np.ndarray:
    """Feature tensor (len(rows), N, len(FEATURES)) for the candidate lists of users ``rows``."""
    items = np.maximum(candidates.items, 0)
    valid = candidates.items >= 0
    scores = np.where(valid, candidates.scores, 0.0)
    n = items.shape[1]
    cooccurrence = gather(context.seen[rows] @ context.similarity, items)
    last = context.last_item[rows]
    n_items = context.similarity.shape[0]
    has_last = last < n_items
    last_similarity = gather(context.similarity[np.where(has_last, last, 0)], items) * has_last[:, None]
    spread = np.where(valid, scores, np.nan)
    zscore = (scores - np.nanmean(spread, axis=1, keepdims=True)) / (np.nanstd(spread, axis=1, keepdims=True) + 1e-6)
    columns = [
        np.where(valid, zscore, 0.0),
        np.broadcast_to(np.log1p(np.arange(n, dtype=np.float32)), items.shape),
        context.popularity[items],
        context.recent[items],
        cooccurrence,
        last_similarity,
        context.rating[items],
        np.broadcast_to(context.activity[rows][:, None], items.shape),
        np.broadcast_to(context.inactive_days[rows][:, None], items.shape),
        popularity_when_active(context, items, rows),
    ]
    stacked = np.stack(columns, axis=-1).astype(np.float32)
    if names is None:
        return stacked
    return stacked[..., [FEATURES.index(name) for name in names]]


def cooccurrence_similarity(seen: sp.csr_matrix, neighbours: int | None = None) -> sp.csr_matrix:
    """Cosine similarity of items by the users they share (zero diagonal), each item's top ``neighbours`` kept.

    Rule: 200 neighbours for catalogues up to 2,000 items, 50 above (what a customer's dozen
    items can reach stays well covered, and scoring a million customers stays fast).
    """
    if neighbours is None:
        neighbours = 200 if seen.shape[1] <= 2000 else 50
    return cosine_neighbours(seen, neighbours)
