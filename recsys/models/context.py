"""What the ranking stage knows about customers and items, and the features it computes from it.

Everything here is NumPy and SciPy (no TensorFlow), so a scoring shard can compute features in any
process: popularity (all time, recent, around the customer's last visit), mean ratings, the
customer's activity and recency, the customer's items of the candidate's family, item-item
co-occurrence with the customer's items, and how often the candidate came next after the
customer's latest item.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recsys.data.families import item_families
from recsys.data.interactions import (
    DAY,
    Interactions,
    PairTimes,
    item_popularity,
    pair_times,
    recent_popularity,
    user_histories,
)
from recsys.models.item_item import cosine_neighbours, gather, next_item_shares

CONTEXT_FEATURES = (
    "popularity",  # log(1 + distinct customers of the item)
    "recent_popularity",  # log(1 + distinct customers in the last --cold-start-days days)
    "family_match",  # log(1 + the customer's items of the candidate's family)
    "cooccurrence",  # summed cosine similarity to the customer's items
    "last_item_similarity",  # cosine similarity to the customer's latest item
    "last_item_transition",  # share of the candidate among the items customers took next after the customer's latest item
    "item_rating",  # the item's mean rating, shrunk towards the overall mean
    "user_activity",  # log(1 + the customer's distinct items)
    "days_inactive",  # log(1 + days since the customer's last visit)
    "popularity_when_active",  # log(1 + customers who took the item in the 30 days to the customer's last visit)
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
    transitions: sp.csr_matrix  # (items, items) float32: share of j among the items taken right after i
    last_time: np.ndarray
    first_day: int  # day number of the first interaction
    item_days: np.ndarray  # (items, days + 1) int32: customers who first took the item up to each day
    family: np.ndarray  # (items,) int32 family code of each item (recsys.data.families)
    user_families: sp.csr_matrix  # (users, families) float32: the customer's distinct items per family


def context_of(
    data: Interactions, recent_days: int, times: PairTimes | None = None, transitions: sp.csr_matrix | None = None
) -> Context:
    """Popularity, ratings, activity and co-occurrence computed from ``data``.

    One sort of the rows (``pair_times``, passed as ``times`` when the caller has it) gives every
    customer-item pair with its first and last time, and everything else is counted from those
    pairs (at a million customers, each extra pass over 41M rows costs seconds). ``transitions``:
    ``next_item_shares`` of the same rows, when the caller has them.
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
    family, names = item_families(data.items)
    membership = sp.csr_matrix(
        (np.ones(n_items, dtype=np.float32), (np.arange(n_items), family)), shape=(n_items, len(names))
    )
    return Context(
        family=family,
        user_families=(seen @ membership).tocsr(),
        popularity=np.log1p(item_popularity(data, pairs=pairs, dtype=np.float32)),
        recent=np.log1p(recent_popularity(data, recent_days, pairs=pairs, dtype=np.float32)),
        rating=item_rating.astype(np.float32),
        activity=np.log1p(per_user.astype(np.float32)),
        inactive_days=np.log1p(np.maximum(end - last_time, 0) / float(DAY)).astype(np.float32),
        seen=seen,
        last_item=user_histories(data, 1, pairs=pairs)[:, 0],
        similarity=cooccurrence_similarity(seen),
        transitions=next_item_shares(pair_user, pair_item, first_time, n_items) if transitions is None else transitions,
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


def context_features(context: Context, items: np.ndarray, rows: np.ndarray, names) -> list[np.ndarray]:
    """The named ``CONTEXT_FEATURES`` of candidates ``items`` (b, m; -1 = none) of customers ``rows``."""
    safe = np.maximum(items, 0)
    out = []
    for name in names:
        if name == "popularity":
            out.append(context.popularity[safe])
        elif name == "recent_popularity":
            out.append(context.recent[safe])
        elif name == "family_match":
            out.append(np.log1p(gather(context.user_families[rows], context.family[safe])))
        elif name == "cooccurrence":
            out.append(gather(context.seen[rows] @ context.similarity, safe))
        elif name == "last_item_similarity":
            out.append(_from_last_item(context, context.similarity, rows, safe))
        elif name == "last_item_transition":
            out.append(_from_last_item(context, context.transitions, rows, safe))
        elif name == "item_rating":
            out.append(context.rating[safe])
        elif name == "user_activity":
            out.append(np.broadcast_to(context.activity[rows][:, None], items.shape))
        elif name == "days_inactive":
            out.append(np.broadcast_to(context.inactive_days[rows][:, None], items.shape))
        elif name == "popularity_when_active":
            out.append(popularity_when_active(context, safe, rows))
        else:
            raise ValueError(f"unknown context feature {name!r}")
    return out


def _from_last_item(context: Context, matrix: sp.csr_matrix, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """``matrix[latest item, candidate]`` per customer of ``rows`` (0 for a customer with no item)."""
    last = context.last_item[rows]
    has_last = last < matrix.shape[0]
    return gather(matrix[np.where(has_last, last, 0)], items) * has_last[:, None]


def cooccurrence_similarity(seen: sp.csr_matrix, neighbours: int | None = None) -> sp.csr_matrix:
    """Cosine similarity of items by the users they share (zero diagonal), each item's top ``neighbours`` kept.

    Rule: 200 neighbours for catalogues up to 2,000 items, 50 above (what a customer's dozen
    items can reach stays well covered, and scoring a million customers stays fast).
    """
    if neighbours is None:
        neighbours = 200 if seen.shape[1] <= 2000 else 50
    return cosine_neighbours(seen, neighbours)
