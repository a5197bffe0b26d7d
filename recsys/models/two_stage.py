"""The two-stage model: one training sequence, and the recommender surface over it.

Stage one proposes candidates from several sources: the TFRS two-tower retrieval model and simple
recommenders, EASE, RP3beta and next-item (``recsys.models.candidates``). Stage two, a TFRS
ranking model, orders each customer's candidates from what every source thinks of them and from
facts of the item and the customer.

:meth:`TwoStage.fit` is the only place that knows the order of training. On the export ``D``,
with ``T`` its temporal holdout and ``V`` the temporal holdout of ``T``'s training rows:

1. the two-tower trains on ``V``'s training rows;
2. the ranker's shape is chosen, and a ranker trained, on candidates for ``V``'s customers
   (sources fitted on ``V``'s training rows) labelled by what each took next;
3. the two-tower is refreshed on ``T``'s training rows;
4. that ranker orders the candidates of ``T``'s customers (sources fitted on ``T``'s training
   rows): the model's own held-out evaluation, the procedure one step back in time (the quality
   gate reads it); the final ranker, of the chosen shape, then trains on those same lists;
5. the two-tower is refreshed on every row, and the sources refitted on every row serve.

The nightly flow runs each step as a Prefect task by passing its own ``run``; the evaluation and
the tests call it as it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from recsys.data.interactions import Interactions, PairTimes, distinct_pairs, pair_times
from recsys.data.splits import Split, sample_users
from recsys.errors import DataError
from recsys.models.base import MatrixRecommender
from recsys.models.candidates import FEATURES, Sources, candidate_features, gather_candidates, labels_of
from recsys.models.context import Context, context_of
from recsys.models.fits import FitCache
from recsys.models.ranking import Examples, RankingStage, fit_ranking
from recsys.models.ranking import train_ranking as fit_ranker
from recsys.models.retrieval import MAX_TRAINING_EXAMPLES, RetrievalStage, epochs_for, new_stage
from recsys.models.scorer import Scorer
from recsys.progress import Progress, timed
from recsys.scoring.lists import Lists
from recsys.settings import ModelSettings, RunOptions

# The most customers whose candidate lists teach the ranker (and on whom the model evaluates
# itself): a random sample of lists teaches as well as all of them, in a fraction of the time.
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


def source_model(name: str, settings: dict | None = None, times: PairTimes | None = None) -> MatrixRecommender:
    """A fresh baseline that serves as a candidate source (``settings``: what tuning chose;
    ``times``: the pair times of the rows it will be fitted on, which next-item reads)."""
    from recsys.models.baselines import EASE, NextItem, RP3Beta

    kinds = {"ease": EASE, "rp3beta": RP3Beta, "next_item": NextItem}
    if name not in kinds:
        raise ValueError(f"unknown candidate source {name!r}: use {', '.join(kinds)}")
    if name == "next_item":
        return NextItem(times=times)
    return kinds[name](**(settings or {}))


@dataclass(frozen=True)
class Stage:
    """The sources and the ranking context of one part of the export."""

    sources: Sources
    context: Context


def fit_stage(
    data: Interactions,
    retrieval: RetrievalStage,
    settings: ModelSettings,
    tuned: dict,
    cold_start_days: int,
    fits: FitCache,
    seconds: dict | None = None,
) -> Stage:
    """The candidate sources on ``data`` (the two-tower's vectors, the baselines fitted on it)
    and the ranking context of ``data``."""
    seconds = {} if seconds is None else seconds
    clock = time.perf_counter()
    times = pair_times(data)  # one sort of the rows, shared by the histories and the context
    user_vectors, item_vectors = retrieval.vectors(data, distinct_pairs(data, times))
    timed(seconds, "user_vectors", clock)
    clock = time.perf_counter()
    baselines = {
        name: fits.fitted(name, tuned.get(name), data, lambda name=name: source_model(name, tuned.get(name), times))
        for name in settings.sources
    }
    timed(seconds, "fit_sources", clock)
    clock = time.perf_counter()
    # The next-item source has counted the transitions the context's feature reads.
    context = context_of(data, cold_start_days, times, transitions=getattr(baselines.get("next_item"), "shares", None))
    timed(seconds, "ranking_context", clock)
    unknown = np.flatnonzero(data.item_counts() == 0)
    sources = Sources(user_vectors, item_vectors, baselines, blocked=unknown if len(unknown) else None)
    return Stage(sources, context)


def lists_for(stage: Stage, split: Split, n: int, names: tuple[str, ...]) -> Examples:
    """Candidate lists of ``split``'s scored customers, with the features ``names``, labelled by
    their held-out items (every customer kept, also those whose candidates miss them)."""
    rows = split.users
    items, features, labels = [], [], []
    for start in range(0, len(rows), 4096):
        part = rows[start : start + 4096]
        candidates = gather_candidates(stage.sources, part, n, stage.context.seen)
        items.append(candidates.items)
        features.append(candidate_features(stage.context, candidates, names))
        labels.append(labels_of(candidates, split.relevant))
    width = max((block.shape[1] for block in items), default=1)

    def padded(blocks, value):
        if not blocks:
            return np.zeros((0, width) + ((len(names),) if value == 0.0 else ()))
        return np.concatenate(
            [np.pad(b, [(0, 0), (0, width - b.shape[1])] + [(0, 0)] * (b.ndim - 2), constant_values=value) for b in blocks]
        )

    items, features, labels = padded(items, -1), padded(features, 0.0), padded(labels, 0)
    return Examples(rows=rows, items=items.astype(np.int64), features=features, labels=labels, names=names)


def _with_positives(examples: Examples) -> Examples:
    """The lists holding at least one later item (a list without one teaches a listwise loss nothing)."""
    return examples.part(np.flatnonzero(examples.labels.sum(axis=1) > 0))


def _all_features(settings: ModelSettings) -> tuple[str, ...]:
    return tuple(name for name in FEATURES if any(c.features is None or name in c.features for c in settings.rankers))


def train_retrieval(
    split: Split, options: RunOptions, settings: ModelSettings, progress: Progress | None = None
) -> RetrievalStage:
    """Train the two-tower model on the split's training rows."""
    pairs = len(distinct_pairs(split.train)[0])
    stage = new_stage(split.train, settings, options.seed)
    return stage.fit(split.train, options.epochs or epochs_for(pairs), progress)


def choose_ranker(
    split: Split,
    retrieval: RetrievalStage,
    options: RunOptions,
    settings: ModelSettings,
    tuned: dict,
    fits: FitCache,
    progress: Progress | None = None,
) -> RankingStage | None:
    """The ranker's shape chosen, and a ranker trained, on candidate lists of ``split``'s
    customers (sources fitted on its training rows) labelled by what each took next."""
    stage = fit_stage(split.train, retrieval, settings, tuned, options.cold_start_days, fits)
    lists = lists_for(stage, sample_users(split, MAX_RANKING_LISTS, options.seed), options.candidates, _all_features(settings))
    return fit_ranker(_with_positives(lists), settings, options.seed, epochs=options.ranking_epochs, progress=progress)


@dataclass(frozen=True)
class SelfEvaluation:
    """The model's own held-out evaluation: the top-k lists it gives the scored customers of its
    outer split, trained one step back in time (see the module docstring)."""

    split: Split  # the outer split: its training rows and held-out items
    users: np.ndarray  # (n,) customer codes, ascending: the split's scored customers (sampled)
    items: np.ndarray  # (n, k) item codes of each customer's list, -1 = none
    # Each customer's candidates (n, m), -1 = none, and their ranking scores (-inf = none): what
    # the lists were cut from, so the run's rules can be evaluated on the same customers.
    candidates: np.ndarray | None = None
    order: np.ndarray | None = None


def train_ranking(
    split: Split,
    retrieval: RetrievalStage,
    chooser: RankingStage | None,
    options: RunOptions,
    settings: ModelSettings,
    tuned: dict,
    fits: FitCache,
    progress: Progress | None = None,
) -> tuple[RankingStage | None, SelfEvaluation]:
    """Candidate lists of ``split``'s customers (sources fitted on its training rows): ``chooser``
    orders them (the model's held-out evaluation), then the final ranker, of the shape
    ``chooser`` chose, trains on them."""
    stage = fit_stage(split.train, retrieval, settings, tuned, options.cold_start_days, fits)
    scored = sample_users(split, MAX_RANKING_LISTS, options.seed)
    lists = lists_for(stage, scored, options.candidates, _all_features(settings))
    evaluation = _evaluate(lists, chooser, scored, options.top_k)
    shapes = chooser.configs if chooser is not None else settings.rankers[:1]
    final = fit_ranking(
        _with_positives(lists), shapes, settings, options.seed, epochs=options.ranking_epochs, progress=progress
    )
    if final is not None and chooser is not None:
        final.choice = chooser.choice  # what the shapes were chosen on
    return final, evaluation


def _evaluate(lists: Examples, ranker: RankingStage | None, split: Split, k: int) -> SelfEvaluation:
    """The top k of each customer's candidates as ``ranker`` orders them (no ranker: the
    candidates' order, the two-tower's first)."""
    if ranker is not None:
        part = lists.part(np.arange(len(lists.rows)), ranker.features)
        order = ranker.ranker().scores(part.items, part.features)
    else:
        order = -np.broadcast_to(np.arange(lists.items.shape[1], dtype=np.float64), lists.items.shape)
    order = np.where(lists.items >= 0, order, -np.inf)
    top = np.argsort(-order, axis=1, kind="stable")[:, :k]
    items = np.take_along_axis(lists.items, top, axis=1)
    items = np.where(np.take_along_axis(order, top, axis=1) > -np.inf, items, -1)
    if items.shape[1] < k:
        items = np.pad(items, [(0, 0), (0, k - items.shape[1])], constant_values=-1)
    return SelfEvaluation(split=split, users=lists.rows, items=items, candidates=lists.items, order=order)


def refresh_retrieval(
    retrieval: RetrievalStage, interactions: Interactions, progress: Progress | None = None
) -> RetrievalStage:
    """Keep training the retrieval model on more rows, so it knows everyone's latest items: half
    the epochs and half the example budget of its first training."""
    epochs = max(1, retrieval.first_epochs // 2)
    return retrieval.fit(interactions, epochs, progress, budget=MAX_TRAINING_EXAMPLES // 2)


class TwoStage:
    """The two-stage model on the shared recommender surface (``recsys.models.base``).

    ``tuned``: settings of the baseline sources (e.g. ``{"ease": {"strength": 10.0, "recency": 0.7}}``), as the
    evaluation's tuning chose them; their defaults otherwise. ``fits``: the run's shared splits
    and fitted baselines.
    """

    name = "two_stage"

    def __init__(
        self,
        options: RunOptions | None = None,
        settings: ModelSettings | None = None,
        tuned: dict | None = None,
        fits: FitCache | None = None,
    ):
        self.options = options or RunOptions()
        self.settings = settings or ModelSettings()
        self.tuned = tuned or {}
        self.fits = fits or FitCache()
        self.interactions: Interactions | None = None
        self.retrieval: RetrievalStage | None = None
        self.ranking: RankingStage | None = None
        self.evaluation: SelfEvaluation | None = None
        self.seconds: dict[str, float] = {}
        self._scorer: Scorer | None = None

    def fit(self, interactions: Interactions, run: StepRunner = run_directly) -> "TwoStage":
        """Train both stages on ``interactions`` (``DataError`` if there is too little to train on).

        ``run(step, *args)`` calls each step of the sequence (default: directly).
        """
        reason = untrainable(interactions)
        if reason:
            raise DataError(reason)
        started = time.perf_counter()
        options, settings, tuned, fits = self.options, self.settings, self.tuned, self.fits
        outer = fits.holdout(interactions)
        inner = fits.holdout(outer.train)
        retrieval = run(train_retrieval, inner, options, settings)
        chooser = run(choose_ranker, inner, retrieval, options, settings, tuned, fits)
        retrieval = run(refresh_retrieval, retrieval, outer.train)
        ranking, evaluation = run(train_ranking, outer, retrieval, chooser, options, settings, tuned, fits)
        self.retrieval = run(refresh_retrieval, retrieval, interactions)
        self.ranking, self.evaluation, self.interactions, self._scorer = ranking, evaluation, interactions, None
        self.seconds["fit"] = time.perf_counter() - started
        return self

    def scorer(self) -> Scorer:
        """The trained model as plain arrays, for the customers of the fitted interactions.

        ``seconds`` gets "user_vectors" (the user tower over every customer's current history),
        "fit_sources" (the baselines refitted on all interactions) and "ranking_context".
        """
        if self._scorer is None:
            if self.retrieval is None:
                raise RuntimeError("TwoStage must be fitted before scoring")
            stage = fit_stage(
                self.interactions, self.retrieval, self.settings, self.tuned, self.options.cold_start_days, self.fits,
                self.seconds,
            )
            self._scorer = Scorer(
                sources=stage.sources,
                context=stage.context,
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
