"""The temporal splits: what a model may learn from, and what it is asked to predict.

One protocol serves the evaluation (test and validation), the quality gate and the ranking
stage's training split, so all of them mean the same thing by "the future":

* :func:`temporal_holdout` - for each customer with at least 2 distinct items, the items are
  ordered by first interaction time (ties by item name) and those at positions
  ``r >= floor(train_fraction * n)`` are held out (always at least the last one). The customer's
  training rows are those strictly before the first held-out interaction; other customers are
  untouched. Scored customers have at least one training item and one held-out item.
* :func:`validation_holdout` - the same protocol applied to the training part of the test split,
  for choosing without touching the test holdout.
* :func:`cold_start_split` - customers whose first interaction falls in the last 10% of the time
  span, asked to be predicted from the rows before the cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recsys.data.interactions import Interactions, distinct_pairs, lex_order


@dataclass(frozen=True)
class Split:
    """Training rows, the customers scored and what each of them is to be predicted to take.

    ``train`` keeps the vocabularies of the whole export. ``relevant`` is customers × items (all
    customers, same codes): 1 where a scored customer's held-out item is; rows of customers not
    scored are empty.
    """

    train: Interactions
    users: np.ndarray  # (n_scored,) int64 codes of the scored customers, ascending
    relevant: sp.csr_matrix  # (n_users, n_items) float32
    cut: int | None = None  # cold start: the time (seconds) before which rows train

    def relevant_rows(self) -> sp.csr_matrix:
        """``relevant`` for the scored customers only, rows in the order of ``users``."""
        return self.relevant[self.users]


def temporal_holdout(data: Interactions, train_fraction: float = 0.8) -> Split:
    """Per-customer temporal holdout (see the module docstring), vectorised on codes: one sort of
    the (customer, item) pairs and array arithmetic."""
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    n_users = data.n_users
    u = data.user.astype(np.int64)
    i = data.item.astype(np.int64)
    t = data.time
    # First interaction time of every (customer, item) pair.
    key = u * max(data.n_items, 1) + i
    order = lex_order(key, t)
    first = order[np.r_[True, key[order][1:] != key[order][:-1]]] if len(order) else order
    del key
    pu, pi, pt = u[first], i[first], t[first]
    # Item codes are in name order, so sorting on (user, time, code) breaks time ties by name.
    order = lex_order(pu, pt, pi)
    pu, pi, pt = pu[order], pi[order], pt[order]

    n_items = np.bincount(pu, minlength=n_users)
    group_start = np.concatenate(([0], np.cumsum(n_items)[:-1]))
    position = np.arange(len(pu)) - group_start[pu]
    # The epsilon keeps e.g. 0.8 * 5 from flooring to 3 if it ever lands at 3.9999...
    first_held = np.minimum(np.floor(train_fraction * n_items + 1e-9).astype(np.int64), n_items - 1)
    eligible = n_items >= 2
    held = eligible[pu] & (position >= first_held[pu])

    # Earliest held-out interaction per customer; "never" for customers with nothing held out.
    never = np.iinfo(np.int64).max
    cutoff = np.full(n_users, never, dtype=np.int64)
    at_cut = held & (position == first_held[pu])
    cutoff[pu[at_cut]] = pt[at_cut]

    # A held-out item's first interaction is >= the cutoff, so "strictly before the cutoff"
    # already excludes every row of held-out items.
    keep = t < cutoff[u]
    has_train = np.bincount(u[keep], minlength=n_users) > 0
    scored = has_train & (cutoff != never)
    chosen = held & scored[pu]
    return Split(
        train=data.take(keep),
        users=np.flatnonzero(scored).astype(np.int64),
        relevant=_pairs_matrix(pu[chosen], pi[chosen], data),
    )


def nothing_held_out(data: Interactions, split: Split) -> str | None:
    """Why ``split``, the temporal holdout of ``data``, scores no customer; None when it scores some.

    Without a customer who took an item after an earlier one, nothing can be held out: the
    evaluation has no customer to score and the ranking stage no later item to learn from. The
    reason says which of the two shapes of export it is (one item per customer, or every item
    of a customer taken at one time). Counts only when the split is empty.
    """
    if len(split.users):
        return None
    prefix = "no customer has a later item to hold out"
    users, _, _ = distinct_pairs(data)
    items = np.bincount(users, minlength=data.n_users)
    customers = int(np.count_nonzero(items))
    single = int(np.count_nonzero(items == 1))
    several = customers - single
    if several == 0:
        return f"{prefix}: every customer took a single item ({customers:,} customers)"
    first = np.full(data.n_users, np.iinfo(np.int64).max, dtype=np.int64)
    last = np.full(data.n_users, np.iinfo(np.int64).min, dtype=np.int64)
    np.minimum.at(first, data.user, data.time)
    np.maximum.at(last, data.user, data.time)
    at_once = bool(np.all(first[items >= 2] == last[items >= 2]))
    how = "took all of their items at one time" if at_once else "took their last items at the time of their first"
    if single == 0:
        return f"{prefix}: every customer {how} ({several:,} customers)"
    return f"{prefix}: {single:,} customers took a single item and the other {several:,} {how}"


def validation_holdout(data: Interactions, train_fraction: float = 0.8) -> Split:
    """The temporal holdout of the *training part* of the test holdout, for model selection."""
    return temporal_holdout(temporal_holdout(data, train_fraction).train, train_fraction)


def cold_start_split(data: Interactions, cut_fraction: float = 0.9) -> Split:
    """Customers first seen in the last ``1 - cut_fraction`` of the time span.

    ``cut = min_time + cut_fraction * (max_time - min_time)``; training rows are those strictly
    before the cut; relevant items are each cold customer's distinct items (all at/after the cut).
    """
    if not 0.0 < cut_fraction < 1.0:
        raise ValueError(f"cut_fraction must be in (0, 1), got {cut_fraction}")
    if len(data) == 0:
        return Split(train=data, users=np.zeros(0, np.int64), relevant=_pairs_matrix([], [], data))
    low, high = int(data.time.min()), int(data.time.max())
    cut = low + (high - low) * cut_fraction
    before = data.time < cut
    # A customer is cold when none of their rows falls before the cut.
    warm = np.bincount(data.user[before], minlength=data.n_users) > 0
    cold_rows = ~warm[data.user]
    relevant = _pairs_matrix(data.user[cold_rows], data.item[cold_rows], data)
    users = np.flatnonzero(np.diff(relevant.indptr) > 0).astype(np.int64)
    return Split(train=data.take(before), users=users, relevant=relevant, cut=int(np.ceil(cut)))


def _pairs_matrix(users, items, data: Interactions) -> sp.csr_matrix:
    """Binary customers × items matrix with a 1 at each given (customer, item)."""
    matrix = sp.csr_matrix(
        (np.ones(len(users), dtype=np.float32), (np.asarray(users, np.int64), np.asarray(items, np.int64))),
        shape=(data.n_users, data.n_items),
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def sample_users(split: Split, most: int, seed: int = 0) -> Split:
    """``split`` with at most ``most`` scored customers, drawn at random (seeded); the same training rows."""
    if len(split.users) <= most:
        return split
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(split.users, most, replace=False))
    return Split(train=split.train, users=chosen, relevant=split.relevant, cut=split.cut)
