"""Offline evaluation protocol: per-customer temporal holdout, ranking metrics, cold start.

Protocol (the numbers every model is compared on):

* :func:`temporal_holdout` - for each customer with at least 2 distinct items, the items are
  ordered by first interaction time (ties by item name) and those at positions
  ``r >= floor(train_fraction * n)`` are held out (always at least the last one). The customer's
  training rows are those strictly before the first held-out interaction; other customers are
  untouched. Scored customers have at least one training item and one held-out item.
* :func:`ranking_metrics` - NDCG@k, Recall@k, HitRate@k (binary relevance) and catalogue coverage.
* :func:`cold_start_split` - customers whose first interaction falls in the last 10% of the time
  span, scored on one non-personal list fitted on the rows before the cut.
* :func:`validation_holdout` - the same protocol applied to the training part of the test split,
  for tuning without touching the test holdout.
* :func:`evaluate_recommenders` - fit each recommender on the training part, recommend excluding
  training items, score, and time it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.baselines import Recommender
from recsys.features import lex_order

DEFAULT_K = 12


@dataclass(frozen=True)
class Holdout:
    """A temporal split: training rows, scored users (sorted) and their held-out item sets."""

    train: pd.DataFrame
    users: np.ndarray
    relevant: Sequence[frozenset[str]]


@dataclass(frozen=True)
class ColdStart:
    """Cold-start split: rows before ``cut``, users first seen at/after it, their items."""

    train: pd.DataFrame
    users: np.ndarray
    relevant: Sequence[frozenset[str]]
    cut: pd.Timestamp


def _codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes in sorted order of the values, and the sorted uniques as an object array."""
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(np.int64), np.asarray(uniques, dtype=object)


def _group_sets(user_codes: np.ndarray, item_codes: np.ndarray, items: np.ndarray
                ) -> list[frozenset[str]]:
    """Item sets per user for (user, item) pairs already sorted by user code."""
    if len(user_codes) == 0:
        return []
    bounds = np.flatnonzero(np.diff(user_codes)) + 1
    return [frozenset(items[chunk].tolist()) for chunk in np.split(item_codes, bounds)]


@dataclass(frozen=True)
class HoldoutArrays:
    """The temporal holdout on integer codes: which rows train, which users are scored, what is held out."""

    keep: np.ndarray  # bool per row: the row stays in training
    scored: np.ndarray  # bool per user code: the user has training and held-out items
    held_users: np.ndarray  # user code of each held-out (user, item) pair of a scored user, sorted
    held_items: np.ndarray  # item code of each such pair


def holdout_arrays(
    user: np.ndarray, item: np.ndarray, time: np.ndarray, n_users: int, train_fraction: float = 0.8
) -> HoldoutArrays:
    """The protocol of :func:`temporal_holdout` on codes; item codes must follow name order (ties)."""
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    u = np.asarray(user, dtype=np.int64)
    i = np.asarray(item, dtype=np.int64)
    t = np.asarray(time, dtype=np.int64)
    n_item_codes = int(i.max()) + 1 if len(i) else 1
    # First interaction time of every (customer, item) pair.
    key = u * n_item_codes + i
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
    sel = held & scored[pu]
    return HoldoutArrays(keep=keep, scored=scored, held_users=pu[sel], held_items=pi[sel])


def temporal_holdout(interactions: pd.DataFrame, train_fraction: float = 0.8) -> Holdout:
    """Per-customer temporal holdout of the canonical interactions frame (see module docstring).

    Vectorised: one sort of the (customer, item) pairs and array arithmetic (:func:`holdout_arrays`).
    """
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    if len(interactions) == 0:
        return Holdout(interactions.copy(), np.array([], dtype=object), ())

    u, users = _codes(interactions["user_id"])
    i, items = _codes(interactions["item"])
    t = interactions["timestamp"].to_numpy(dtype="datetime64[ns]").view(np.int64)
    split = holdout_arrays(u, i, t, len(users), train_fraction)
    train = interactions.loc[split.keep]
    # held_users is sorted, so the pairs come grouped by user in the order of `users`.
    relevant = _group_sets(split.held_users, split.held_items, items)
    return Holdout(train=train, users=users[split.scored], relevant=tuple(relevant))


def validation_holdout(interactions: pd.DataFrame, train_fraction: float = 0.8) -> Holdout:
    """The temporal holdout of the *training part* of the test holdout, for model selection."""
    return temporal_holdout(temporal_holdout(interactions, train_fraction).train, train_fraction)


def cold_start_split(interactions: pd.DataFrame, cut_fraction: float = 0.9) -> ColdStart:
    """Customers first seen in the last ``1 - cut_fraction`` of the time span.

    ``cut = min_time + cut_fraction * (max_time - min_time)``; training rows are those strictly
    before the cut; relevant items are each cold customer's distinct items (all at/after the cut).
    """
    if not 0.0 < cut_fraction < 1.0:
        raise ValueError(f"cut_fraction must be in (0, 1), got {cut_fraction}")
    ts = pd.to_datetime(interactions["timestamp"])
    if len(ts) == 0:
        return ColdStart(interactions.copy(), np.array([], dtype=object), (), pd.NaT)
    lo, hi = ts.min(), ts.max()
    cut = lo + (hi - lo) * cut_fraction
    before = (ts < cut).to_numpy()

    u, users = _codes(interactions["user_id"])
    i, items = _codes(interactions["item"])
    # A customer is cold when none of their rows falls before the cut.
    warm = np.bincount(u[before], minlength=len(users)) > 0
    cold_rows = ~warm[u]
    pairs = np.unique(np.stack([u[cold_rows], i[cold_rows]], axis=1), axis=0)
    relevant = _group_sets(pairs[:, 0], pairs[:, 1], items)
    cold_users = users[np.unique(pairs[:, 0])] if len(pairs) else np.array([], dtype=object)
    return ColdStart(train=interactions.loc[before], users=cold_users,
                     relevant=tuple(relevant), cut=cut)


def ranking_metrics(
    recommended: np.ndarray,
    relevant: Sequence[set[str] | frozenset[str]],
    k: int = DEFAULT_K,
    *,
    n_catalog: int,
) -> dict[str, float]:
    """NDCG@k, Recall@k, HitRate@k and coverage of top-k lists against held-out item sets.

    ``recommended`` is ``n_users x (>= k)`` item names (``None`` = padding, never a hit), aligned
    with ``relevant`` (non-empty sets). Gains are binary; DCG sums ``1 / log2(rank + 1)`` over hits
    at 1-based ranks ``<= k``; the ideal DCG and the recall denominator use
    ``min(|relevant|, k)`` hits. Coverage is the number of distinct items recommended to anyone in
    the top k over ``n_catalog``. Returns the means as floats plus ``users`` (count) and ``k``.
    """
    recs = np.asarray(recommended, dtype=object)
    n_users = len(relevant)
    if recs.ndim != 2 or recs.shape[0] != n_users:
        raise ValueError(f"recommended must be ({n_users}, >= {k}), got shape {recs.shape}")
    if recs.shape[1] < k:
        raise ValueError(f"recommended has {recs.shape[1]} columns, fewer than k={k}")
    if n_users == 0:
        return {"ndcg": math.nan, "recall": math.nan, "hit_rate": math.nan,
                "coverage": 0.0, "users": 0, "k": k}
    sizes = np.fromiter((len(s) for s in relevant), dtype=np.int64, count=n_users)
    if (sizes == 0).any():
        raise ValueError("every scored user needs at least one relevant item")
    top = recs[:, :k]

    # Encode (user, item) as one integer so hits are a single vectorised membership test.
    rel_users = np.repeat(np.arange(n_users), sizes)
    rel_items = np.fromiter((x for s in relevant for x in s), dtype=object, count=int(sizes.sum()))
    present = pd.notna(top.ravel())
    codes, vocab = pd.factorize(np.concatenate([top.ravel()[present], rel_items]))
    n_vocab = max(len(vocab), 1)
    top_codes = np.full(top.size, -1, dtype=np.int64)
    top_codes[present] = codes[: int(present.sum())]
    rel_keys = rel_users * n_vocab + codes[int(present.sum()):]
    top_keys = np.repeat(np.arange(n_users), k) * n_vocab + top_codes
    # A list that repeats an item must not earn its gain twice: only first occurrences count.
    repeated = pd.Series(top_keys).duplicated().to_numpy()
    hits = (np.isin(top_keys, rel_keys) & (top_codes >= 0) & ~repeated).reshape(n_users, k)

    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = hits @ discounts
    ideal = np.cumsum(discounts)[np.minimum(sizes, k) - 1]
    n_hits = hits.sum(axis=1)
    coverage = len(pd.unique(top.ravel()[present])) / n_catalog if n_catalog else math.nan
    return {
        "ndcg": float(np.mean(dcg / ideal)),
        "recall": float(np.mean(n_hits / np.minimum(sizes, k))),
        "hit_rate": float(np.mean(n_hits > 0)),
        "coverage": float(coverage),
        "users": int(n_users),
        "k": int(k),
    }


RecommenderFactory = Callable[[], Recommender]


def _n_catalog(train: pd.DataFrame) -> int:
    """Catalogue size for coverage: distinct items a model fitted on ``train`` could recommend."""
    return int(train["item"].nunique())


def score_recommender(
    factory: RecommenderFactory,
    split: Holdout | ColdStart,
    k: int = DEFAULT_K,
) -> dict[str, float]:
    """Fit a fresh recommender on ``split.train``, recommend for ``split.users``, score it.

    Training items are excluded from the lists. Adds ``seconds`` (fit + recommend wall time) and
    ``name`` to the metrics of :func:`ranking_metrics`.
    """
    start = time.perf_counter()
    model = factory().fit(split.train)
    items, _ = model.recommend(np.asarray(split.users, dtype=object), k, exclude_seen=True)
    seconds = time.perf_counter() - start
    metrics = ranking_metrics(items, split.relevant, k, n_catalog=_n_catalog(split.train))
    return {"name": getattr(model, "name", type(model).__name__), **metrics, "seconds": seconds}


def evaluate_recommenders(
    interactions: pd.DataFrame,
    recommenders: Mapping[str, RecommenderFactory],
    k: int = DEFAULT_K,
    split: Holdout | ColdStart | None = None,
) -> pd.DataFrame:
    """Run the protocol for every named recommender factory; one row of metrics per name.

    ``split`` defaults to ``temporal_holdout(interactions)``; pass :func:`validation_holdout` or
    :func:`cold_start_split` results (computed once) to tune or to score cold start instead.
    Columns: ``recommender``, ``ndcg``, ``recall``, ``hit_rate``, ``coverage``, ``users``, ``k``,
    ``seconds``.
    """
    if split is None:
        split = temporal_holdout(interactions)
    rows = []
    for label, factory in recommenders.items():
        result = score_recommender(factory, split, k)
        result.pop("name")
        rows.append({"recommender": label, **result})
    return pd.DataFrame(rows, columns=["recommender", "ndcg", "recall", "hit_rate", "coverage",
                                       "users", "k", "seconds"])




METRIC_COLUMNS = ("ndcg", "recall", "hit_rate", "coverage")
MODEL_NAME = "two_stage"


def standard_recommenders(settings=None) -> dict[str, RecommenderFactory]:
    """The two-stage model and every baseline it must beat, by name (ALS only if ``implicit`` is installed)."""
    from recsys.baselines import ALS, ItemKNN, Popularity, RecentPopularity
    from recsys.settings import Settings

    settings = settings or Settings()

    def two_stage():
        from recsys.model import TwoStage

        return TwoStage(settings)

    factories: dict[str, RecommenderFactory] = {
        MODEL_NAME: two_stage,
        "popularity": Popularity,
        f"recent_popularity_{settings.cold_start_days}d": lambda: RecentPopularity(settings.cold_start_days),
        "item_knn": ItemKNN,
    }
    try:
        import implicit  # noqa: F401
    except ImportError:
        return factories
    # Few factors, strong regularisation: the best ALS setting on the validation split of the real export.
    factories["als"] = lambda: ALS(factors=4, regularization=10.0)
    return factories


def cold_start_recommenders(settings=None) -> dict[str, RecommenderFactory]:
    """Non-personal lists for customers with no history: all-time and recent popularity."""
    from recsys.baselines import Popularity, RecentPopularity
    from recsys.settings import Settings

    settings = settings or Settings()
    return {
        "popularity": Popularity,
        f"cold_start_list (recent_popularity_{settings.cold_start_days}d)": lambda: RecentPopularity(
            settings.cold_start_days
        ),
    }


@dataclass(frozen=True)
class Gate:
    """The quality gate's verdict: publish the model, or the named baseline, and why."""

    passed: bool
    publish: str
    reason: str


def quality_gate(table: pd.DataFrame) -> Gate:
    """The model passes when its NDCG@k is at least popularity's; otherwise the best baseline is published."""
    scores = dict(zip(table["recommender"], table["ndcg"]))
    k = int(table["k"].iloc[0])
    model, popularity = scores[MODEL_NAME], scores["popularity"]
    if model >= popularity:
        return Gate(True, MODEL_NAME, f"model NDCG@{k} {model:.4f} >= popularity {popularity:.4f} on validation")
    baselines = {name: value for name, value in scores.items() if name != MODEL_NAME}
    best = max(baselines, key=lambda name: (baselines[name], name == "popularity"))
    return Gate(
        False,
        best,
        f"model NDCG@{k} {model:.4f} < popularity {popularity:.4f} on validation: published {best} "
        f"({baselines[best]:.4f}) instead",
    )


def markdown_table(table: pd.DataFrame, title: str | None = None) -> str:
    """A metrics frame as a markdown table (no extra dependency)."""
    columns = ["recommender", "ndcg", "recall", "hit_rate", "coverage", "users", "seconds"]
    lines = [f"### {title}", ""] if title else []
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "---|" * len(columns))
    for row in table[columns].itertuples(index=False):
        cells = [row[0]] + [f"{v:.4f}" for v in row[1:5]] + [f"{int(row[5])}", f"{row[6]:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def metrics_record(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """The metrics frame as JSON-ready ``{recommender: {metric: value}}``."""
    return {
        row["recommender"]: {
            **{name: round(float(row[name]), 6) for name in (*METRIC_COLUMNS, "seconds")},
            "users": int(row["users"]),
        }
        for row in table.to_dict("records")
    }


@dataclass(frozen=True)
class EvaluationReport:
    """Everything ``recsys evaluate`` prints."""

    split: str
    holdout: pd.DataFrame
    cold_start: pd.DataFrame
    cold_start_cut: pd.Timestamp


def evaluation_report(interactions: pd.DataFrame, settings=None, split: str = "test") -> EvaluationReport:
    """The protocol in full: model and baselines on the holdout, non-personal lists on cold start."""
    test = temporal_holdout(interactions)
    holdout = test if split == "test" else temporal_holdout(test.train)
    table = evaluate_recommenders(interactions, standard_recommenders(settings), split=holdout)
    # Validation never looks past the test split's training part, for cold start too.
    cold = cold_start_split(interactions if split == "test" else test.train)
    cold_table = evaluate_recommenders(interactions, cold_start_recommenders(settings), split=cold)
    return EvaluationReport(split=split, holdout=table, cold_start=cold_table, cold_start_cut=cold.cut)
