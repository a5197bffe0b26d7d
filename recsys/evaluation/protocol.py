"""The offline protocol: fit each recommender on a split's training rows, recommend, score.

Every recommender is reached through the shared surface (``recsys.models.base``): the two-stage
model and every baseline it must beat are fitted on the same training rows, asked for the same
customers' lists (training items excluded) and scored by the same metrics, each NDCG with its
bootstrap interval over customers. Settings of the baselines (EASE's λ, RP3beta's α and β, their recency weight) are
chosen on the temporal holdout of the split's training rows (``recsys.evaluation.tuning``), never
on the split being scored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recsys.data.interactions import Interactions
from recsys.data.splits import Split, cold_start_split, nothing_held_out, sample_users, temporal_holdout
from recsys.evaluation.metrics import DEFAULT_K, mean_interval, ranking_metrics, score_fitted, user_metrics
from recsys.models.base import Recommender
from recsys.models.fits import FitCache
from recsys.settings import RunOptions

MODEL_NAME = "two_stage"
METRIC_COLUMNS = ("ndcg", "recall", "hit_rate", "coverage")
TABLE_COLUMNS = ["recommender", "ndcg", "ndcg_low", "ndcg_high", "recall", "hit_rate", "coverage", "users", "k", "seconds"]
# The most customers a nightly evaluation scores (drawn at random with the run's seed): the 95%
# interval of a mean NDCG near 0.2 over 20,000 customers is about ±0.005.
EVALUATION_USERS = 20_000

RecommenderFactory = Callable[[], Recommender]


@dataclass(frozen=True)
class Evaluation:
    """Metrics of several recommenders on one split: the table, and each one's NDCG per customer
    (the same customers, in the same order, for every recommender)."""

    table: pd.DataFrame
    per_user: dict[str, np.ndarray] = field(default_factory=dict)
    settings: dict[str, dict] = field(default_factory=dict)  # the settings tuning chose, by recommender
    users: np.ndarray | None = None  # the scored customers' codes, in the order of ``per_user``

    @property
    def k(self) -> int:
        """The list length the table was scored at."""
        return int(self.table["k"].iloc[0])

    def ndcg(self) -> dict[str, float]:
        """Mean NDCG by recommender."""
        return dict(zip(self.table["recommender"], self.table["ndcg"]))


def score_recommender(
    factory: RecommenderFactory, split: Split, k: int = DEFAULT_K, seed: int = 0
) -> tuple[dict, np.ndarray]:
    """Fit a fresh recommender on ``split.train``, recommend for ``split.users``, score the lists.

    Training items are excluded from the lists; coverage counts against the items the training
    rows hold. Returns the metrics (with ``ndcg_low``/``ndcg_high``, the bootstrap interval, and
    ``seconds`` of fit + recommend) and the NDCG of each scored customer.
    """
    started = time.perf_counter()
    model = factory().fit(split.train)
    return score_fitted(model, split, k, seed, started)


def evaluate_recommenders(
    recommenders: Mapping[str, RecommenderFactory],
    split: Split,
    k: int = DEFAULT_K,
    progress=None,
    settings: dict[str, dict] | None = None,
    fits: FitCache | None = None,
) -> Evaluation:
    """Every named recommender on ``split``; ``progress(done, total, note)`` before and after
    each one (``note``: which one, "ease, 4 of 6").

    ``settings``: what tuning chose for some of them, kept with the result (and the key under
    which ``fits`` shares their fits on ``split.train``).
    """
    rows, per_user = [], {}
    total = len(recommenders)
    for done, (label, factory) in enumerate(recommenders.items(), start=1):
        if progress:
            progress(done - 1, total, f"{label}, {done} of {total}")
        started = time.perf_counter()
        model = fits.fitted(label, (settings or {}).get(label), split.train, factory) if fits else factory().fit(split.train)
        metrics, ndcg = score_fitted(model, split, k, started=started)
        rows.append({"recommender": label, **metrics})
        per_user[label] = ndcg
        if progress:
            progress(done, total, f"{label}, {done} of {total}")
    return Evaluation(
        table=pd.DataFrame(rows, columns=TABLE_COLUMNS), per_user=per_user, settings=dict(settings or {}), users=split.users
    )


def with_rows(evaluation: Evaluation, other: Evaluation) -> Evaluation:
    """``other``'s recommenders put first, then ``evaluation``'s (which must score the same customers)."""
    if evaluation.users is not None and other.users is not None and not np.array_equal(evaluation.users, other.users):
        raise ValueError("the two evaluations scored different customers: their NDCGs cannot be compared pairwise")
    return Evaluation(
        table=pd.concat([other.table, evaluation.table], ignore_index=True),
        per_user={**other.per_user, **evaluation.per_user},
        settings={**evaluation.settings, **other.settings},
        users=evaluation.users if evaluation.users is not None else other.users,
    )


def self_evaluation_of(model, k: int) -> Evaluation:
    """The two-stage model's own held-out evaluation (``TwoStage.evaluation``) as a table row,
    scored by the same metrics as every other recommender."""
    own = model.evaluation
    split = Split(train=own.split.train, users=own.users, relevant=own.split.relevant)
    relevant = split.relevant_rows()
    catalogue = int(np.count_nonzero(split.train.item_counts()))
    metrics = ranking_metrics(own.items, relevant, k, n_catalog=catalogue)
    ndcg = user_metrics(own.items, relevant, k)["ndcg"]
    low, high = mean_interval(ndcg)
    row = {"recommender": MODEL_NAME, **metrics, "ndcg_low": low, "ndcg_high": high, "seconds": model.seconds.get("fit", 0.0)}
    return Evaluation(table=pd.DataFrame([row], columns=TABLE_COLUMNS), per_user={MODEL_NAME: ndcg}, users=own.users)


def baseline_factories(options: RunOptions | None = None, settings: Mapping[str, dict] | None = None) -> dict[str, RecommenderFactory]:
    """Every baseline the model must beat, by name; ``settings`` (what tuning chose, by name, e.g.
    ``{"ease": {"regularization": 300.0}}``) replace the defaults. ALS only if ``implicit`` is installed."""
    from recsys.models.baselines import ALS, EASE, ItemKNN, NextItem, Popularity, RecentPopularity, RP3Beta

    options = options or RunOptions()
    settings = settings or {}
    factories: dict[str, RecommenderFactory] = {
        "popularity": Popularity,
        f"recent_popularity_{options.cold_start_days}d": lambda: RecentPopularity(options.cold_start_days),
        "item_knn": ItemKNN,
        "ease": lambda: EASE(**settings.get("ease", {})),
        "rp3beta": lambda: RP3Beta(**settings.get("rp3beta", {})),
        "next_item": NextItem,
    }
    try:
        import implicit  # noqa: F401

        # Few factors, strong regularisation: the best ALS setting on the validation split of the real export.
        factories["als"] = lambda: ALS(factors=4, regularization=10.0)
    except ImportError:
        pass
    return factories


def standard_recommenders(options: RunOptions | None = None, model_settings=None, settings=None) -> dict[str, RecommenderFactory]:
    """The two-stage model and every baseline it must beat, by name (see :func:`baseline_factories`)."""
    options = options or RunOptions()

    def two_stage():
        from recsys.models.two_stage import TwoStage

        return TwoStage(options, model_settings, tuned=settings)

    return {MODEL_NAME: two_stage, **baseline_factories(options, settings)}


def evaluate_baselines(
    interactions: Interactions, options: RunOptions, fits: FitCache | None = None, progress=None
) -> Evaluation:
    """Every baseline on the temporal holdout of ``interactions`` (at most ``EVALUATION_USERS``
    customers scored), EASE and RP3beta tuned first on the holdout of its training rows. The
    result's ``settings`` hold what tuning chose."""
    from recsys.evaluation.tuning import tune_baselines

    fits = fits or FitCache()
    # One bar for the whole step: tuning EASE and RP3beta (the longest part on large exports)
    # are its first two units, then one unit per baseline.
    tuning, total = 2, 2 + len(baseline_factories(options))
    if progress:
        progress(0, total, "tuning EASE and RP3beta")
    split = fits.holdout(interactions)
    scored = sample_users(split, EVALUATION_USERS, options.seed)
    choices = tune_baselines(
        fits.holdout(split.train), options.top_k, seed=options.seed, fits=fits,
        progress=(lambda done, note: progress(done, total, note)) if progress else None,
    )
    settings = {name: choice.settings for name, choice in choices.items()}

    def evaluated(done: int, of: int, note: str | None = None) -> None:
        progress(tuning + done, total, note)

    return evaluate_recommenders(
        baseline_factories(options, settings), scored, options.top_k, evaluated if progress else None, settings, fits
    )


def evaluate_all(interactions: Interactions, options: RunOptions, split: Split, progress=None) -> Evaluation:
    """The two-stage model and every baseline on ``split`` (at most ``EVALUATION_USERS`` customers
    scored), the baselines tuned first on the temporal holdout of ``split.train``: the offline
    protocol, every recommender fitted on ``split.train``."""
    from recsys.evaluation.tuning import tune_baselines

    fits = FitCache()
    scored = sample_users(split, EVALUATION_USERS, options.seed)
    choices = tune_baselines(fits.holdout(split.train), options.top_k, seed=options.seed, fits=fits)
    settings = {name: choice.settings for name, choice in choices.items()}
    recommenders = baseline_factories(options, settings)

    def two_stage():
        from recsys.models.two_stage import TwoStage

        return TwoStage(options, tuned=settings, fits=fits)

    return evaluate_recommenders({MODEL_NAME: two_stage, **recommenders}, scored, options.top_k, progress, settings, fits)


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
    holdout: Evaluation
    cold_start: Evaluation
    cold_start_cut: int | None  # seconds


def evaluation_report(interactions: Interactions, options: RunOptions | None = None, split: str = "test") -> EvaluationReport:
    """The protocol in full: model and baselines on the holdout, non-personal lists on cold start.

    ``split="test"``: the temporal holdout of the export; ``"validation"``: the temporal holdout
    of the test split's training rows (never looking past them, for cold start too). Raises
    ``DataError`` saying why when there is nothing to evaluate: too little data to train the model
    on, or a holdout without a customer (no customer has a later item to hold out).
    """
    from recsys.errors import DataError
    from recsys.models.two_stage import untrainable

    options = options or RunOptions()
    too_small = untrainable(interactions)
    if too_small:
        raise DataError(too_small)
    test = temporal_holdout(interactions)
    holdout = test if split == "test" else temporal_holdout(test.train)
    nothing = nothing_held_out(interactions, test)
    if nothing is None and split == "validation":
        nothing = nothing_held_out(test.train, holdout)
        if nothing:
            nothing = nothing.replace(" to hold out", " to hold out in the test split's training rows (--split validation)", 1)
    if nothing:
        raise DataError(f"nothing to evaluate: {nothing}")
    evaluation = evaluate_all(interactions, options, holdout)
    cold = cold_start_split(interactions if split == "test" else test.train)
    cold_evaluation = evaluate_recommenders(cold_start_recommenders(options), cold, options.top_k)
    return EvaluationReport(split=split, holdout=evaluation, cold_start=cold_evaluation, cold_start_cut=cold.cut)


def markdown_table(table: pd.DataFrame, title: str | None = None) -> str:
    """A metrics frame as a markdown table (no extra dependency); NDCG with its 95% interval."""
    lines = [f"### {title}", ""] if title else []
    lines.append("| recommender | ndcg | 95% interval | recall | hit_rate | coverage | users | seconds |")
    lines.append("|" + "---|" * 8)
    for row in table.to_dict("records"):
        cells = [
            row["recommender"], f"{row['ndcg']:.4f}", f"{row['ndcg_low']:.4f} to {row['ndcg_high']:.4f}",
            f"{row['recall']:.4f}", f"{row['hit_rate']:.4f}", f"{row['coverage']:.4f}", f"{int(row['users'])}",
            f"{row['seconds']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def metrics_record(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """The metrics frame as JSON-ready ``{recommender: {metric: value}}``, with the list length
    ``k`` the metrics were measured at (``--top-k``: what NDCG@k, recall@k and hit rate@k are labelled)."""
    return {
        row["recommender"]: {
            **{name: round(float(row[name]), 6) for name in ("ndcg", "ndcg_low", "ndcg_high", *METRIC_COLUMNS[1:], "seconds")},
            "users": int(row["users"]),
            "k": int(row["k"]),
        }
        for row in table.to_dict("records")
    }


def rules_cost(model, rules, k: int, days: float) -> dict | None:
    """What the run's rules cost the model: its own held-out evaluation (``TwoStage.evaluation``)
    scored with the rules applied to its candidate lists and without, on the same customers.

    Returns ``{"ndcg_with_rules": [mean, low, high], "ndcg_without_rules": [mean, low, high]}``,
    or None when the model has no evaluation. The rules see what each customer had in the
    evaluation's training rows (pins, families) and fill from their recent popularity.
    """
    from recsys.scoring.rules import curator_for

    own = getattr(model, "evaluation", None)
    if own is None or own.candidates is None or len(own.users) == 0:
        return None
    train = own.split.train
    curator = curator_for(rules, train, days, True, None)
    with_rules, _ = curator.finish(own.users, own.candidates, own.order, k)
    relevant = Split(train=train, users=own.users, relevant=own.split.relevant).relevant_rows()
    out = {}
    for key, items in (("ndcg_with_rules", with_rules.items), ("ndcg_without_rules", own.items)):
        ndcg = user_metrics(items, relevant, k)["ndcg"]
        low, high = mean_interval(ndcg)
        out[key] = [round(float(np.mean(ndcg)), 6), round(float(low), 6), round(float(high), 6)]
    return out
