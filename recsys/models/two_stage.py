"""The two-stage model: one training sequence, and the recommender surface over it.

:func:`train` is the only place that knows the order of training: retrieval on the earlier part
of every customer's history, ranking on that retrieval model's candidates labelled by what each
customer took next, then retrieval refreshed on everything. The nightly flow runs each step as a
Prefect task by passing its own ``run``; the evaluation and the tests call it as it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from recsys.data.interactions import Interactions, distinct_pairs, pair_times
from recsys.data.splits import Split, temporal_holdout
from recsys.errors import DataError
from recsys.models.context import context_of
from recsys.models.ranking import RankingStage, ranking_examples, train_ranking as fit_ranking
from recsys.models.retrieval import RetrievalStage, candidates_for, epochs_for, new_stage
from recsys.models.scorer import Scorer
from recsys.progress import Progress, timed
from recsys.scoring.lists import Lists
from recsys.settings import ModelSettings, RunOptions

MAX_RANKING_LISTS = 50_000
MIN_USERS = 2
MIN_ITEMS = 2
MIN_PAIRS = 3

# run(step, *args) -> step(*args): how the training sequence calls each of its steps.
StepRunner = Callable[..., Any]


def run_directly(step: Callable[..., Any], *args) -> Any:
    """Call a training step as it is (no progress display)."""
    return step(*args)


def untrainable(data: Interactions) -> str | None:
    """Why ``data`` is too small to train the two stages on, or ``None`` when it is not."""
    pairs = len(distinct_pairs(data)[0])
    if data.n_users < MIN_USERS or data.n_items < MIN_ITEMS or pairs < MIN_PAIRS:
        return (
            f"too little data to train on ({data.n_users} customers, {data.n_items} items, {pairs} distinct "
            f"customer-item pairs; need at least {MIN_USERS}, {MIN_ITEMS} and {MIN_PAIRS})"
        )
    return None


def train_retrieval(
    split: Split, options: RunOptions, settings: ModelSettings, progress: Progress | None = None
) -> RetrievalStage:
    """Train the two-tower model on the earlier interactions (the split's training rows)."""
    pairs = len(distinct_pairs(split.train)[0])
    stage = new_stage(split.train, settings, options.seed)
    return stage.fit(split.train, options.epochs or epochs_for(pairs), progress)


def train_ranking(
    split: Split,
    retrieval: RetrievalStage,
    options: RunOptions,
    settings: ModelSettings,
    progress: Progress | None = None,
) -> RankingStage | None:
    """Train the ranking model on early-retrieval candidates labelled by what customers took next."""
    early = split.train
    times = pair_times(early)
    context = context_of(early, options.cold_start_days, times)
    users, items = retrieval.vectors(early, distinct_pairs(early, times))
    rows = split.users
    if len(rows) > MAX_RANKING_LISTS:
        # A random sample of lists teaches the ranker as well as all of them, in a fraction of the time.
        rng = np.random.default_rng(options.seed)
        rows = np.sort(rng.choice(rows, MAX_RANKING_LISTS, replace=False))
    candidates = candidates_for(users, items, rows, options.candidates, context.seen)
    examples = ranking_examples(context, candidates, rows, split.relevant, settings)
    return fit_ranking(
        examples, early.n_users, early.n_items, settings, options.seed, epochs=options.ranking_epochs, progress=progress
    )


def refresh_retrieval(
    retrieval: RetrievalStage, interactions: Interactions, progress: Progress | None = None
) -> RetrievalStage:
    """Keep training the retrieval model on all interactions, so it knows everyone's latest items."""
    return retrieval.fit(interactions, max(1, retrieval.epochs_run // 2), progress)


class TwoStage:
    """The two-stage model on the shared recommender surface (``recsys.models.base``)."""

    name = "two_stage"

    def __init__(self, options: RunOptions | None = None, settings: ModelSettings | None = None):
        self.options = options or RunOptions()
        self.settings = settings or ModelSettings()
        self.interactions: Interactions | None = None
        self.retrieval: RetrievalStage | None = None
        self.ranking: RankingStage | None = None
        self.seconds: dict[str, float] = {}
        self._scorer: Scorer | None = None

    def fit(self, interactions: Interactions, run: StepRunner = run_directly) -> "TwoStage":
        """Train both stages on ``interactions`` (``DataError`` if there is too little to train on).

        ``run(step, *args)`` calls each step of the sequence (default: directly).
        """
        reason = untrainable(interactions)
        if reason:
            raise DataError(reason)
        split = temporal_holdout(interactions)  # the ranking stage learns what came next
        retrieval = run(train_retrieval, split, self.options, self.settings)
        ranking = run(train_ranking, split, retrieval, self.options, self.settings)
        self.retrieval = run(refresh_retrieval, retrieval, interactions)
        self.ranking, self.interactions, self._scorer = ranking, interactions, None
        return self

    def scorer(self) -> Scorer:
        """The trained stages as plain arrays, for the customers of the fitted interactions.

        ``seconds`` gets "user_vectors" (the user tower over every customer's current history) and
        "ranking_scoring" (the ranking context).
        """
        if self._scorer is None:
            if self.retrieval is None:
                raise RuntimeError("TwoStage must be fitted before scoring")
            data = self.interactions
            clock = time.perf_counter()
            times = pair_times(data)  # one sort of the rows, shared by the histories and the context
            users, items = self.retrieval.vectors(data, distinct_pairs(data, times))
            timed(self.seconds, "user_vectors", clock)
            clock = time.perf_counter()
            context = context_of(data, self.options.cold_start_days, times)
            ranker = self.ranking.ranker() if self.ranking is not None else None
            timed(self.seconds, "ranking_scoring", clock)
            unknown = np.flatnonzero(data.item_counts() == 0)
            self._scorer = Scorer(
                users=users,
                items=items,
                context=context,
                ranker=ranker,
                candidates=self.options.candidates,
                features=self.settings.ranking_features,
                blocked=unknown if len(unknown) else None,
            )
        return self._scorer

    def recommend(self, users: np.ndarray, k: int, exclude_seen: bool = True) -> Lists:
        """Top ``k`` item codes and scores per customer code in ``users``."""
        return self.scorer().lists(users, k, exclude_seen)

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Ranking scores of the item codes ``items`` ``(len(users), m)`` for customer codes ``users``."""
        return self.scorer().score(users, items)
