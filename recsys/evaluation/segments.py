"""Quality by customer segment: new customers, customers with 1-2 items, customers with 3 or more.

The returning customers' figures come from the evaluation the run already made: each scored
customer's NDCG (``Evaluation.per_user``) is put in a segment by how many distinct items the
customer had in the split's training rows, and each segment gets its mean with a bootstrap
interval, nothing refitted. New customers are the cold-start split (customers first seen in the
last 10% of the export's time span), scored on the list they are given (recent popularity, the
cold-start list) and on all-time popularity: two counts over the rows before the cut.

The record, kept in ``runs.metrics["segments"]``::

    {"new customers": {"users": n, "<recommender>": [mean, low, high], ...},
     "1-2 items": {...}, "3+ items": {...}}

A figure that cannot be computed (no customer, or one: no interval) is ``null``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from recsys.data.interactions import Interactions
from recsys.data.splits import cold_start_split, sample_users
from recsys.evaluation.metrics import mean_interval
from recsys.evaluation.protocol import EVALUATION_USERS, Evaluation, cold_start_recommenders, evaluate_recommenders
from recsys.settings import RunOptions

NEW = "new customers"
FEW = "1-2 items"
MANY = "3+ items"
SEGMENTS = (NEW, FEW, MANY)


def history_sizes(train: Interactions, users: np.ndarray) -> np.ndarray:
    """Distinct items of each of ``users`` (codes) in ``train``."""
    return np.diff(train.seen().indptr)[np.asarray(users, dtype=np.int64)]


def interval_record(values: np.ndarray, seed: int = 0) -> list[float | None]:
    """[mean, low, high] of per-customer ``values`` (bootstrap interval); None where undefined."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean()) if len(values) else math.nan
    low, high = mean_interval(values, seed=seed)
    return [None if math.isnan(v) else round(v, 6) for v in (mean, low, high)]


def returning_segments(
    evaluation: Evaluation, train: Interactions, recommenders: Sequence[str], seed: int = 0
) -> dict[str, dict]:
    """The 1-2 and 3+ item segments of ``evaluation``'s customers (history counted in ``train``,
    the rows the evaluated recommenders were fitted on), for each of ``recommenders``."""
    sizes = history_sizes(train, evaluation.users)
    out = {}
    for label, members in ((FEW, sizes <= 2), (MANY, sizes >= 3)):
        entry: dict = {"users": int(members.sum())}
        for name in recommenders:
            entry[name] = interval_record(evaluation.per_user[name][members], seed)
        out[label] = entry
    return out


def new_customer_segment(interactions: Interactions, options: RunOptions) -> dict:
    """The cold-start split's customers (at most ``EVALUATION_USERS``): the cold-start list
    against all-time popularity."""
    split = sample_users(cold_start_split(interactions), EVALUATION_USERS, options.seed)
    entry: dict = {"users": int(len(split.users))}
    if len(split.users) == 0:
        return entry
    evaluation = evaluate_recommenders(cold_start_recommenders(options), split, options.top_k)
    for name, values in evaluation.per_user.items():
        entry[name] = interval_record(values)
    return entry


def customer_segments(
    interactions: Interactions, evaluation: Evaluation, train: Interactions, recommenders: Sequence[str], options: RunOptions
) -> dict[str, dict]:
    """Every segment (see the module docstring): ``evaluation`` scored on the holdout whose
    training rows are ``train``, ``recommenders`` the ones to report (the model and the best
    baseline); new customers from the cold-start split of ``interactions``."""
    return {NEW: new_customer_segment(interactions, options), **returning_segments(evaluation, train, recommenders)}
