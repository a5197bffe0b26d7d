"""The offline protocol: fit each recommender on a split's training rows, recommend, score.

Every recommender is reached through the shared surface (``recsys.models.base``): the two-stage
model and every baseline it must beat are fitted on the same training rows, asked for the same
customers' lists (training items excluded) and scored by the same metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.data.interactions import Interactions
from recsys.data.splits import Split, cold_start_split, temporal_holdout
from recsys.evaluation.metrics import DEFAULT_K, ranking_metrics
from recsys.models.base import Recommender
from recsys.settings import RunOptions

MODEL_NAME = "two_stage"
METRIC_COLUMNS = ("ndcg", "recall", "hit_rate", "coverage")
TABLE_COLUMNS = ["recommender", *METRIC_COLUMNS, "users", "k", "seconds"]

RecommenderFactory = Callable[[], Recommender]


def score_recommender(factory: RecommenderFactory, split: Split, k: int = DEFAULT_K) -> dict:
    """Fit a fresh recommender on ``split.train``, recommend for ``split.users``, score the lists.

    Training items are excluded from the lists; coverage counts against the items the training
    rows hold. Adds ``seconds`` (fit + recommend wall time) to :func:`ranking_metrics`.
    """
    started = time.perf_counter()
    model = factory().fit(split.train)
    lists = model.recommend(split.users, k, exclude_seen=True)
    seconds = time.perf_counter() - started
    catalogue = int(np.count_nonzero(split.train.item_counts()))
    return {**ranking_metrics(lists.items, split.relevant_rows(), k, n_catalog=catalogue), "seconds": seconds}


def evaluate_recommenders(
    recommenders: Mapping[str, RecommenderFactory], split: Split, k: int = DEFAULT_K, progress=None
) -> pd.DataFrame:
    """One row of metrics per named recommender factory, all on ``split``; columns ``TABLE_COLUMNS``.

    ``progress(done, total)`` is called after each recommender.
    """
    rows = []
    for done, (label, factory) in enumerate(recommenders.items(), start=1):
        rows.append({"recommender": label, **score_recommender(factory, split, k)})
        if progress:
            progress(done, len(recommenders))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def standard_recommenders(options: RunOptions | None = None, settings=None) -> dict[str, RecommenderFactory]:
    """The two-stage model and every baseline it must beat, by name (ALS only if ``implicit`` is installed)."""
    from recsys.models.baselines import ALS, ItemKNN, Popularity, RecentPopularity

    options = options or RunOptions()

    def two_stage():
        from recsys.models.two_stage import TwoStage

        return TwoStage(options, settings)

    factories: dict[str, RecommenderFactory] = {
        MODEL_NAME: two_stage,
        "popularity": Popularity,
        f"recent_popularity_{options.cold_start_days}d": lambda: RecentPopularity(options.cold_start_days),
        "item_knn": ItemKNN,
    }
    try:
        import implicit  # noqa: F401
    except ImportError:
        return factories
    # Few factors, strong regularisation: the best ALS setting on the validation split of the real export.
    factories["als"] = lambda: ALS(factors=4, regularization=10.0)
    return factories


def cold_start_recommenders(options: RunOptions | None = None) -> dict[str, RecommenderFactory]:
    """Non-personal lists for customers with no history: all-time and recent popularity."""
    from recsys.models.baselines import Popularity, RecentPopularity

    options = options or RunOptions()
    days = options.cold_start_days
    return {
        "popularity": Popularity,
        f"cold_start_list (recent_popularity_{days}d)": lambda: RecentPopularity(days),
    }


@dataclass(frozen=True)
class EvaluationReport:
    """Everything ``recsys evaluate`` prints."""

    split: str
    holdout: pd.DataFrame
    cold_start: pd.DataFrame
    cold_start_cut: int | None  # seconds


def evaluation_report(interactions: Interactions, options: RunOptions | None = None, split: str = "test") -> EvaluationReport:
    """The protocol in full: model and baselines on the holdout, non-personal lists on cold start."""
    options = options or RunOptions()
    test = temporal_holdout(interactions)
    holdout = test if split == "test" else temporal_holdout(test.train)
    table = evaluate_recommenders(standard_recommenders(options), holdout, options.top_k)
    # Validation never looks past the test split's training part, for cold start too.
    cold = cold_start_split(interactions if split == "test" else test.train)
    cold_table = evaluate_recommenders(cold_start_recommenders(options), cold, options.top_k)
    return EvaluationReport(split=split, holdout=table, cold_start=cold_table, cold_start_cut=cold.cut)


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
