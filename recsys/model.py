"""The two stages put together: split, train retrieval, train ranking, refresh, score every user.

Each public function is one step of the nightly flow (``flows/nightly.py``) and of the offline
evaluation (``TwoStage``), so both train exactly the same model.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.errors import DataError
from recsys.evaluate import holdout_arrays
from recsys.features import Interactions, distinct_pairs, pair_times, recent_popularity, to_codes
from recsys.ranking import Context, Ranker, RankingStage, context_of, pair_features, ranking_examples, train_ranking
from recsys.retrieval import Candidates, Progress, RetrievalStage, candidates_for, epochs_for, new_stage
from recsys.settings import Settings
from recsys.topk import one_blas_thread, top_k_excluding

if TYPE_CHECKING:
    import pyarrow as pa

BLOCK_USERS = 4096
MAX_RANKING_LISTS = 50_000


@dataclass(frozen=True)
class Prepared:
    """The interactions as codes, plus the time split the ranking stage learns from.

    ``early`` holds each user's interactions before their latest items; ``targets`` marks those
    latest items (users × items). Retrieval first trains on ``early`` so the ranking stage sees
    candidates for items the retrieval model never saw, as it will be at serving time.
    """

    data: Interactions
    early: Interactions
    targets: sp.csr_matrix
    target_rows: np.ndarray


@dataclass(frozen=True)
class Lists:
    """Top-k item codes and scores per user (rows follow ``data.users``); -1 marks no item."""

    items: np.ndarray
    scores: np.ndarray


def prepare(frame: pd.DataFrame) -> Prepared:
    """Encode the interactions and carve out the split the ranking stage trains on (the evaluation protocol's)."""
    data = to_codes(frame)
    split = holdout_arrays(data.user, data.item, data.time, data.n_users)
    keep = split.keep
    early = Interactions(
        users=data.users, items=data.items,
        user=data.user[keep], item=data.item[keep], time=data.time[keep], rating=data.rating[keep],
    )
    targets = sp.csr_matrix(
        (np.ones(len(split.held_users), dtype=np.float32), (split.held_users, split.held_items)),
        shape=(data.n_users, data.n_items),
    )
    return Prepared(data=data, early=early, targets=targets, target_rows=np.flatnonzero(split.scored))


MIN_USERS = 2
MIN_ITEMS = 2
MIN_PAIRS = 3


def untrainable(data: Interactions) -> str | None:
    """Why ``data`` is too small to train the two stages on, or ``None`` when it is not."""
    pairs = len(distinct_pairs(data)[0])
    if data.n_users < MIN_USERS or data.n_items < MIN_ITEMS or pairs < MIN_PAIRS:
        return (
            f"too little data to train on ({data.n_users} customers, {data.n_items} items, {pairs} distinct "
            f"customer-item pairs; need at least {MIN_USERS}, {MIN_ITEMS} and {MIN_PAIRS})"
        )
    return None


def train_retrieval(prepared: Prepared, settings: Settings, progress: Progress | None = None) -> RetrievalStage:
    """Train the two-tower model on the early interactions."""
    pairs = len(distinct_pairs(prepared.early)[0])
    epochs = settings.model.retrieval_epochs or epochs_for(pairs)
    stage = new_stage(prepared.data, settings.model)
    return stage.fit(prepared.early, epochs, progress)


def train_ranking_stage(
    prepared: Prepared, retrieval: RetrievalStage, settings: Settings, progress: Progress | None = None
) -> RankingStage | None:
    """Train the ranking model on early-retrieval candidates labelled by what users consumed next."""
    times = pair_times(prepared.early)
    context = context_of(prepared.early, settings.cold_start_days, times)
    users, items = retrieval.vectors(prepared.early, distinct_pairs(prepared.early, times))
    rows = prepared.target_rows
    if len(rows) > MAX_RANKING_LISTS:
        # A random sample of lists teaches the ranker as well as all of them, in a fraction of the time.
        rng = np.random.default_rng(settings.model.seed)
        rows = np.sort(rng.choice(rows, MAX_RANKING_LISTS, replace=False))
    candidates = candidates_for(users, items, rows, settings.candidates, context.seen)
    examples = ranking_examples(context, candidates, rows, prepared.targets, settings.model)
    return train_ranking(examples, prepared.data.n_users, prepared.data.n_items, settings.model, progress=progress)


def refresh_retrieval(
    retrieval: RetrievalStage, prepared: Prepared, settings: Settings, progress: Progress | None = None
) -> RetrievalStage:
    """Keep training the retrieval model on all interactions, so it knows everyone's latest items."""
    epochs = max(1, retrieval.epochs_run // 2)
    return retrieval.fit(prepared.data, epochs, progress)


@dataclass(frozen=True)
class Scorer:
    """Everything scoring needs, as plain arrays: no TensorFlow, picklable.

    Built once after training (user and item vectors from the towers, the ranking context, the
    ranker's weights); shards of customers are then scored from it in this process or on Dask
    workers, which receive it once.
    """

    users: np.ndarray  # (n_users, dim) user-tower vectors
    items: np.ndarray  # (n_items, dim) item-tower vectors
    context: Context
    ranker: Ranker | None
    candidates: int
    top_k: int
    exclude_seen: bool
    features: tuple[str, ...] | None = None



def scorer_for(
    data: Interactions,
    retrieval: RetrievalStage,
    ranking: RankingStage | None,
    settings: Settings,
    exclude_seen: bool | None = None,
    seconds: dict[str, float] | None = None,
) -> Scorer:
    """The trained stages turned into a :class:`Scorer` for the users of ``data``.

    ``seconds`` gets "user_vectors" (the user tower over every customer's current history) and
    "ranking_scoring" (the ranking context).
    """
    seconds = {} if seconds is None else seconds
    clock = time.perf_counter()
    times = pair_times(data)  # one sort of the rows, shared by the histories and the context
    users, items = retrieval.vectors(data, distinct_pairs(data, times))
    _add(seconds, "user_vectors", clock)
    clock = time.perf_counter()
    context = context_of(data, settings.cold_start_days, times)
    ranker = ranking.ranker() if ranking is not None else None
    _add(seconds, "ranking_scoring", clock)
    return Scorer(
        users=users,
        items=items,
        context=context,
        ranker=ranker,
        candidates=max(settings.candidates, settings.top_k),
        top_k=settings.top_k,
        exclude_seen=(not settings.include_seen) if exclude_seen is None else exclude_seen,
        features=settings.model.ranking_features,
    )


def score_rows(
    scorer: Scorer,
    rows: np.ndarray,
    block: int = BLOCK_USERS,
    seconds: dict[str, float] | None = None,
    threads: int | None = None,
) -> Iterator[tuple[np.ndarray, Lists]]:
    """Yield (rows, top-k lists) for blocks of users ``rows``: retrieval candidates, then ranking order.

    ``seconds``, if given, accumulates the time spent in each stage: "retrieval_scoring" (the
    candidate search: product with every item vector, seen items masked, exact top-N) and
    "ranking_scoring" (pair features, the ranker, the final top-k). ``threads``: how many threads
    the candidate search and the ranking use (default: one per core).
    """
    seconds = {} if seconds is None else seconds
    rows = np.asarray(rows, dtype=np.int64)
    seen = scorer.context.seen if scorer.exclude_seen else None
    # One BLAS thread: the products here are tall and thin (candidates x 10 features), where
    # OpenBLAS's threads cost 5x more than they give; the candidate search has its own threads.
    with one_blas_thread():
        yield from _score_rows(scorer, rows, seen, block, seconds, threads or os.cpu_count() or 1)


def _score_rows(scorer: Scorer, rows: np.ndarray, seen, block: int, seconds: dict[str, float], threads: int):
    # Candidates for 8 blocks at a time (fewer thread pools and buffers to set up), ranked a block at a time.
    for chunk_start in range(0, len(rows), 8 * block):
        chunk = rows[chunk_start : chunk_start + 8 * block]
        clock = time.perf_counter()
        chunk_candidates = candidates_for(scorer.users, scorer.items, chunk, scorer.candidates, seen, threads=threads)
        _add(seconds, "retrieval_scoring", clock)
        starts = range(0, len(chunk), block)

        def rank(start: int) -> Lists:
            part = chunk[start : start + block]
            candidates = Candidates(
                items=chunk_candidates.items[start : start + block], scores=chunk_candidates.scores[start : start + block]
            )
            return _rank(scorer, part, candidates)

        # Ranking blocks on every core: NumPy and SciPy release the GIL in the heavy parts.
        clock = time.perf_counter()
        with ThreadPoolExecutor(min(len(starts), threads)) as pool:
            ranked = list(pool.map(rank, starts))
        _add(seconds, "ranking_scoring", clock)
        for start, lists in zip(starts, ranked):
            yield chunk[start : start + block], lists


def _rank(scorer: Scorer, part: np.ndarray, candidates: Candidates) -> Lists:
    """The final top-k of users ``part`` from their candidates, in ranking order."""
    if scorer.ranker is None:
        order = candidates.scores
    else:
        features = pair_features(scorer.context, candidates, part, scorer.features)
        order = scorer.ranker.scores(part, candidates, features)
    picked, scores = top_k_excluding(order, None, min(scorer.top_k, order.shape[1]))
    chosen = np.take_along_axis(candidates.items, np.maximum(picked, 0), axis=1)
    chosen[picked < 0] = -1
    return Lists(items=chosen, scores=scores)


def score_shard(scorer: Scorer, start: int, stop: int, threads: int | None = None) -> tuple[Lists, dict[str, float]]:
    """Top-k lists of users ``start..stop-1`` (one shard), and the seconds each stage took."""
    seconds: dict[str, float] = {}
    shard = empty_lists(stop - start, scorer.top_k)
    for rows, lists in score_rows(scorer, np.arange(start, stop), seconds=seconds, threads=threads):
        put(shard, int(rows[0]) - start, lists)
    return shard, seconds


def shard_bounds(n_users: int, shard_users: int) -> list[tuple[int, int]]:
    """Consecutive (start, stop) ranges of at most ``shard_users`` users covering every user."""
    size = max(1, shard_users)
    return [(start, min(start + size, n_users)) for start in range(0, n_users, size)]


def score_blocks(
    data: Interactions,
    retrieval: RetrievalStage,
    ranking: RankingStage | None,
    settings: Settings,
    rows: np.ndarray | None = None,
    exclude_seen: bool | None = None,
    block: int = BLOCK_USERS,
    seconds: dict[str, float] | None = None,
) -> Iterator[tuple[np.ndarray, Lists]]:
    """Yield (rows, top-k lists) for blocks of users ``rows`` (default: all), straight from the stages."""
    scorer = scorer_for(data, retrieval, ranking, settings, exclude_seen, seconds)
    rows = np.arange(data.n_users) if rows is None else rows
    yield from score_rows(scorer, rows, block, seconds)


def _add(seconds: dict[str, float], name: str, since: float) -> None:
    seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - since


def cold_start(data: Interactions, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """The list for customers with no history: most popular items of the recent past."""
    popularity = recent_popularity(data, settings.cold_start_days)
    order = np.lexsort((np.arange(data.n_items), -popularity))[: settings.top_k]
    return order, popularity[order].astype(np.float64)


class TwoStage:
    """The two-stage model behind the ``fit``/``recommend`` surface the baselines share."""

    name = "two-stage (TFRS)"

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings()
        self.timings: dict[str, float] = {}

    def fit(self, interactions: pd.DataFrame) -> "TwoStage":
        """Train both stages on ``interactions`` (``DataError`` if there is too little to train on)."""
        started = time.perf_counter()
        self.prepared = prepare(interactions)
        reason = untrainable(self.prepared.data)
        if reason:
            raise DataError(reason)
        self.retrieval = train_retrieval(self.prepared, self.settings)
        self.ranking = train_ranking_stage(self.prepared, self.retrieval, self.settings)
        self.retrieval = refresh_retrieval(self.retrieval, self.prepared, self.settings)
        self.timings["fit"] = time.perf_counter() - started
        return self

    def recommend(self, users: np.ndarray, k: int, exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(items, scores), ``len(users)`` × ``k``; unknown users get the cold-start list."""
        data = self.prepared.data
        settings = self.settings.with_(top_k=k)
        users = np.asarray(users, dtype=object).astype(str)
        vocab = data.users.astype(str)
        position = np.clip(np.searchsorted(vocab, users), 0, len(vocab) - 1)
        known = vocab[position] == users
        items = np.full((len(users), k), None, dtype=object)
        scores = np.full((len(users), k), -np.inf)
        popular, popular_scores = cold_start(data, settings)
        items[~known, : len(popular)] = data.items[popular]
        scores[~known, : len(popular)] = popular_scores
        known_at = np.flatnonzero(known)
        offset = 0
        for rows, lists in score_blocks(
            data, self.retrieval, self.ranking, settings, rows=position[known], exclude_seen=exclude_seen
        ):
            target = known_at[offset : offset + len(rows)]
            offset += len(rows)
            valid = lists.items >= 0
            items[target] = np.where(valid, data.items[np.maximum(lists.items, 0)], None)
            scores[target] = lists.scores
        return items, scores


def score_all(
    data: Interactions,
    retrieval: RetrievalStage,
    ranking: RankingStage | None,
    settings: Settings,
    progress: Progress | None = None,
    seconds: dict[str, float] | None = None,
) -> Lists:
    """Every user's top-k list (rows follow ``data.users``), in this process; ``seconds`` as in ``score_rows``."""
    seconds = {} if seconds is None else seconds
    scorer = scorer_for(data, retrieval, ranking, settings, seconds=seconds)
    lists = empty_lists(data.n_users, settings.top_k)
    for start, stop in shard_bounds(data.n_users, settings.shard_users):
        shard, shard_seconds = score_shard(scorer, start, stop)
        put(lists, start, shard)
        add_seconds(seconds, shard_seconds)
        if progress:
            progress(stop, data.n_users)
    return lists


def empty_lists(n_users: int, k: int) -> Lists:
    """Lists of ``n_users`` users with no item yet."""
    return Lists(items=np.full((n_users, k), -1, dtype=np.int64), scores=np.full((n_users, k), -np.inf))


def put(lists: Lists, start: int, part: Lists) -> None:
    """Copy ``part``'s lists into ``lists`` from row ``start`` (a shorter list leaves its tail empty)."""
    rows, width = part.items.shape
    lists.items[start : start + rows, :width] = part.items
    lists.scores[start : start + rows, :width] = part.scores


def add_seconds(total: dict[str, float], part: dict[str, float]) -> None:
    """Add a shard's seconds per stage to ``total``."""
    for name, value in part.items():
        total[name] = total.get(name, 0.0) + value


def list_tables(data: Interactions, lists: Lists, chunk_users: int = 100_000) -> Iterator["pa.Table"]:
    """The lists as Arrow tables (user_id, rank, item, score), a chunk of users at a time."""
    import pyarrow as pa

    k = lists.items.shape[1]
    for start in range(0, data.n_users, chunk_users):
        items = lists.items[start : start + chunk_users]
        valid = items >= 0
        users = np.repeat(data.users[start : start + len(items)], k).reshape(items.shape)
        ranks = np.broadcast_to(np.arange(1, k + 1, dtype=np.int16), items.shape)
        yield pa.table(
            {
                "user_id": pa.array(users[valid].astype(str)),
                "rank": pa.array(ranks[valid]),
                "item": pa.array(data.items[items[valid]].astype(str)),
                "score": pa.array(lists.scores[start : start + chunk_users][valid]),
            }
        )


def popular_table(data: Interactions, settings: Settings) -> "pa.Table":
    """The cold-start list as an Arrow table (rank, item, score)."""
    import pyarrow as pa

    items, scores = cold_start(data, settings)
    return pa.table(
        {
            "rank": pa.array(np.arange(1, len(items) + 1, dtype=np.int16)),
            "item": pa.array(data.items[items].astype(str)),
            "score": pa.array(scores),
        }
    )


def lists_from_names(data: Interactions, items: np.ndarray, scores: np.ndarray) -> Lists:
    """Lists given as item names (a baseline's output, ``None`` = no item) turned into codes of ``data``."""
    names = np.asarray(items, dtype=object)
    present = np.array([name is not None for name in names.ravel()]).reshape(names.shape)
    vocab = data.items.astype(str)
    codes = np.full(names.shape, -1, dtype=np.int64)
    wanted = names[present].astype(str)
    position = np.clip(np.searchsorted(vocab, wanted), 0, len(vocab) - 1)
    codes[present] = np.where(vocab[position] == wanted, position, -1)
    present &= codes >= 0
    return Lists(items=codes, scores=np.where(present, scores, -np.inf))
