"""The two-stage model: one training sequence, and the recommender surface over it.

Stage one proposes candidates from several sources: the TFRS two-tower retrieval model and the
strongest simple recommenders, EASE and RP3beta (``recsys.models.candidates``). Stage two, a TFRS
ranking model, orders each customer's candidates from what every source thinks of them and from
facts of the item and the customer. :func:`TwoStage.fit` is the only place that knows the order of
training: retrieval and the baselines on the earlier part of every customer's history, ranking on
their candidates labelled by what each customer took next, then retrieval refreshed and the
baselines refitted on everything. The nightly flow runs each step as a Prefect task by passing its
own ``run``; the evaluation and the tests call it as it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from recsys.data.interactions import Interactions, distinct_pairs, pair_times
from recsys.data.splits import Split, temporal_holdout
from recsys.errors import DataError
from recsys.models.base import MatrixRecommender
from recsys.models.candidates import FEATURES, Sources, candidate_features, gather_candidates, labels_of
from recsys.models.context import context_of
from recsys.models.ranking import Examples, RankingStage, train_ranking as fit_ranker
from recsys.models.retrieval import MAX_TRAINING_EXAMPLES, RetrievalStage, epochs_for, new_stage
from recsys.models.scorer import Scorer
from recsys.progress import Progress, timed
from recsys.scoring.lists import Lists
from recsys.settings import ModelSettings, RunOptions

MAX_RANKING_LISTS = 20_000
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


def source_model(name: str, settings: dict | None = None) -> MatrixRecommender:
    """A fresh baseline that serves as a candidate source (``settings``: what tuning chose)."""
    from recsys.models.baselines import EASE, RP3Beta

    kinds = {"ease": EASE, "rp3beta": RP3Beta}
    if name not in kinds:
        raise ValueError(f"unknown candidate source {name!r}: use {', '.join(kinds)}")
    return kinds[name](**(settings or {}))


def fit_sources(
    data: Interactions, retrieval: RetrievalStage, settings: ModelSettings, tuned: dict | None, seconds: dict | None = None
) -> Sources:
    """The candidate sources on ``data``: the two-tower's vectors and the baselines fitted on it."""
    seconds = {} if seconds is None else seconds
    clock = time.perf_counter()
    times = pair_times(data)
    user_vectors, item_vectors = retrieval.vectors(data, distinct_pairs(data, times))
    timed(seconds, "user_vectors", clock)
    clock = time.perf_counter()
    baselines = {name: source_model(name, (tuned or {}).get(name)).fit(data) for name in settings.sources}
    timed(seconds, "fit_sources", clock)
    unknown = np.flatnonzero(data.item_counts() == 0)
    return Sources(user_vectors, item_vectors, baselines, blocked=unknown if len(unknown) else None)


def train_retrieval(
    split: Split, options: RunOptions, settings: ModelSettings, progress: Progress | None = None
) -> RetrievalStage:
    """Train the two-tower model on the earlier interactions (the split's training rows)."""
    pairs = len(distinct_pairs(split.train)[0])
    stage = new_stage(split.train, settings, options.seed)
    return stage.fit(split.train, options.epochs or epochs_for(pairs), progress)


def ranking_examples(
    split: Split, retrieval: RetrievalStage, options: RunOptions, settings: ModelSettings, tuned: dict | None
) -> Examples:
    """Every source fitted on the split's training rows proposes candidates for (at most
    ``MAX_RANKING_LISTS``) scored customers, labelled by what each took next."""
    early = split.train
    sources = fit_sources(early, retrieval, settings, tuned)
    context = context_of(early, options.cold_start_days)
    rows = split.users
    if len(rows) > MAX_RANKING_LISTS:
        # A random sample of lists teaches the ranker as well as all of them, in a fraction of the time.
        rng = np.random.default_rng(options.seed)
        rows = np.sort(rng.choice(rows, MAX_RANKING_LISTS, replace=False))
    names = tuple(name for name in FEATURES if any(c.features is None or name in c.features for c in settings.rankers))
    items, features, labels = [], [], []
    for start in range(0, len(rows), 4096):
        part = rows[start : start + 4096]
        candidates = gather_candidates(sources, part, options.candidates, context.seen)
        items.append(candidates.items)
        features.append(candidate_features(context, candidates, names))
        labels.append(labels_of(candidates, split.relevant))
    width = max((block.shape[1] for block in items), default=1)

    def padded(blocks, value):
        return np.concatenate(
            [np.pad(b, [(0, 0), (0, width - b.shape[1])] + [(0, 0)] * (b.ndim - 2), constant_values=value) for b in blocks]
        ) if blocks else np.zeros((0, width))

    items, features, labels = padded(items, -1), padded(features, 0.0), padded(labels, 0.0)
    useful = labels.sum(axis=1) > 0  # a list holding no later item teaches a listwise loss nothing
    return Examples(
        rows=rows[useful], items=items[useful].astype(np.int64), features=features[useful], labels=labels[useful], names=names
    )


def train_ranking(
    split: Split,
    retrieval: RetrievalStage,
    options: RunOptions,
    settings: ModelSettings,
    tuned: dict | None = None,
    progress: Progress | None = None,
) -> RankingStage | None:
    """Train the ranking model on the sources' candidates labelled by what customers took next."""
    examples = ranking_examples(split, retrieval, options, settings, tuned)
    return fit_ranker(examples, settings, options.seed, epochs=options.ranking_epochs, progress=progress)


def refresh_retrieval(
    retrieval: RetrievalStage, interactions: Interactions, progress: Progress | None = None
) -> RetrievalStage:
    """Keep training the retrieval model on all interactions, so it knows everyone's latest items:
    half the epochs and half the example budget of its first training."""
    return retrieval.fit(interactions, max(1, retrieval.epochs_run // 2), progress, budget=MAX_TRAINING_EXAMPLES // 2)


class TwoStage:
    """The two-stage model on the shared recommender surface (``recsys.models.base``).

    ``tuned``: settings of the baseline sources (e.g. ``{"ease": {"regularization": 300.0}}``),
    as the evaluation's tuning chose them; their defaults otherwise.
    """

    name = "two_stage"

    def __init__(self, options: RunOptions | None = None, settings: ModelSettings | None = None, tuned: dict | None = None):
        self.options = options or RunOptions()
        self.settings = settings or ModelSettings()
        self.tuned = tuned or {}
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
        ranking = run(train_ranking, split, retrieval, self.options, self.settings, self.tuned)
        self.retrieval = run(refresh_retrieval, retrieval, interactions)
        self.ranking, self.interactions, self._scorer = ranking, interactions, None
        return self

    def scorer(self) -> Scorer:
        """The trained model as plain arrays, for the customers of the fitted interactions.

        ``seconds`` gets "user_vectors" (the user tower over every customer's current history),
        "fit_sources" (the baselines refitted on all interactions) and "ranking_scoring" (the
        ranking context).
        """
        if self._scorer is None:
            if self.retrieval is None:
                raise RuntimeError("TwoStage must be fitted before scoring")
            data = self.interactions
            sources = fit_sources(data, self.retrieval, self.settings, self.tuned, self.seconds)
            clock = time.perf_counter()
            context = context_of(data, self.options.cold_start_days)
            timed(self.seconds, "ranking_scoring", clock)
            self._scorer = Scorer(
                sources=sources,
                context=context,
                ranker=self.ranking.ranker() if self.ranking is not None else None,
                candidates=self.options.candidates,
                features=self.ranking.features if self.ranking is not None else (),
            )
        return self._scorer

    def recommend(self, users: np.ndarray, k: int, exclude_seen: bool = True) -> Lists:
        """Top ``k`` item codes and scores per customer code in ``users``."""
        return self.scorer().lists(users, k, exclude_seen)

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Ranking scores of the item codes ``items`` ``(len(users), m)`` for customer codes ``users``."""
        return self.scorer().score(users, items)
