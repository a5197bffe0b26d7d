"""Candidate generation from several sources, and the features the ranking stage sees of each candidate.

The two-stage model's first stage takes each customer's top ``n`` items from every source: the
TFRS two-tower retrieval model, the strongest simple recommenders (EASE, RP3beta) and the items
customers took next after the customer's latest item (a Markov chain), the customer's own items
left out. The union (each item once) is the customer's candidate list. Every
source then scores every candidate of the list, so the ranking stage can learn from all their
opinions: per source, the candidate's rank within the list (log) and its score standardised
within the list, besides facts of the item and the customer (``recsys.models.context``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from recsys.models.base import MatrixRecommender
from recsys.models.context import CONTEXT_FEATURES, Context, context_features
from recsys.models.item_item import gather
from recsys.models.retrieval import candidates_for

TWO_TOWER = "two_tower"
SOURCES = (TWO_TOWER, "ease", "rp3beta", "next_item")  # the candidate sources, in this order


def source_features(source: str) -> tuple[str, ...]:
    """The features of one source: the candidate's log rank in the list by its score, and the score's z-value."""
    return (f"{source}_logrank", f"{source}_z")


FEATURES = tuple(name for source in SOURCES for name in source_features(source)) + ("n_sources", *CONTEXT_FEATURES)


@dataclass(frozen=True)
class Sources:
    """The fitted candidate sources of one set of interactions: two-tower vectors and baselines.

    Plain arrays and SciPy matrices (no TensorFlow), picklable.
    """

    user_vectors: np.ndarray  # (n_users, dim) float32
    item_vectors: np.ndarray  # (n_items, dim) float32
    baselines: dict[str, MatrixRecommender] = field(default_factory=dict)  # by source name
    blocked: np.ndarray | None = None  # item codes the two-tower must not propose (unknown to the rows)

    @property
    def names(self) -> tuple[str, ...]:
        """The sources, two-tower first."""
        return (TWO_TOWER, *self.baselines)

    def top(self, source: str, rows: np.ndarray, n: int, seen: sp.csr_matrix | None, threads: int | None = None):
        """The source's own top ``n`` item codes ``(len(rows), <= n)`` for customer codes ``rows``,
        leaving out the items ``seen`` (customers × items, all customers) marks when given."""
        if source == TWO_TOWER:
            return candidates_for(self.user_vectors, self.item_vectors, rows, n, seen, threads=threads, blocked=self.blocked).items
        # The opinion's top, as gather_candidates reads it (an item-item model's sparse opinion
        # proposes only the items it reaches, where recommend would fill up by popularity).
        return self.baselines[source].opinion(rows).top(n, exclude_seen=seen is not None)

    def scores(self, source: str, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The source's scores ``items.shape`` of item codes ``items`` (-1: none, ``-inf``)."""
        if source == TWO_TOWER:
            valid = items >= 0
            dots = np.einsum("nd,nmd->nm", self.user_vectors[rows], self.item_vectors[np.maximum(items, 0)])
            return np.where(valid, dots.astype(np.float64), -np.inf)
        return self.baselines[source].score(rows, items)


@dataclass(frozen=True)
class Candidates:
    """Each customer's candidate list, and what every source thinks of every candidate."""

    rows: np.ndarray  # (b,) customer codes
    items: np.ndarray  # (b, m) int64 item codes, -1 = padding (at the end)
    scores: dict[str, np.ndarray]  # by source: (b, m) float64, -inf where the source gives no score
    sources: np.ndarray  # (b, m) int8: how many sources' own top n hold the candidate


def gather_candidates(
    sources: Sources, rows: np.ndarray, n: int, seen: sp.csr_matrix | None, threads: int | None = None
) -> Candidates:
    """The union of every source's top ``n`` for customer codes ``rows`` (the items ``seen``
    (customers × items, all customers) marks are left out when given), scored by every source.

    Each baseline's scores of the block are computed once (its ``opinion``) and read twice: for
    its own top items, then for every candidate.
    """
    rows = np.asarray(rows, dtype=np.int64)
    opinions = {name: model.opinion(rows) for name, model in sources.baselines.items()}
    tops = [sources.top(TWO_TOWER, rows, n, seen, threads)]
    tops += [opinion.top(n, exclude_seen=seen is not None) for opinion in opinions.values()]
    items, count = _union(tops)
    scores = {TWO_TOWER: sources.scores(TWO_TOWER, rows, items)}
    scores.update({name: opinion.at(items) for name, opinion in opinions.items()})
    return Candidates(rows=rows, items=items, scores=scores, sources=count)


def given_candidates(
    sources: Sources, rows: np.ndarray, items: np.ndarray, n: int, seen: sp.csr_matrix | None
) -> Candidates:
    """Candidates the caller names (``items`` (b, m), -1 = none), scored by every source, each
    counted in the sources whose own top ``n`` (leaving out ``seen`` when given) holds it."""
    rows = np.asarray(rows, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    scores = {name: sources.scores(name, rows, items) for name in sources.names}
    count = np.zeros(items.shape, dtype=np.int8)
    for name in sources.names:
        top = sources.top(name, rows, n, seen)
        count += ((items[:, :, None] == top[:, None, :]) & (items[:, :, None] >= 0)).any(axis=2)
    return Candidates(rows=rows, items=items, scores=scores, sources=count)


def _union(tops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each row's distinct items of several top lists (ascending codes, padding last), and in how
    many of the lists each one stands."""
    stacked = np.concatenate(tops, axis=1) if tops else np.zeros((0, 0), dtype=np.int64)
    if stacked.size == 0:
        return np.full((len(stacked), 1), -1, dtype=np.int64), np.zeros((len(stacked), 1), dtype=np.int8)
    pad = np.iinfo(np.int64).max
    keys = np.where(stacked >= 0, stacked, pad)
    keys.sort(axis=1)  # padding last
    padding = keys == pad
    first = ~padding
    first[:, 1:] &= keys[:, 1:] != keys[:, :-1]
    # Row-major, every non-padding slot belongs to the run of the first occurrence before it.
    run = np.cumsum(first.ravel()) - 1
    per_run = np.bincount(run[~padding.ravel()], minlength=int(first.sum()))
    counts = np.zeros(keys.shape, dtype=np.int8)
    counts.ravel()[first.ravel()] = per_run
    order = np.argsort(~first, axis=1, kind="stable")  # distinct items first, ascending
    width = max(int(first.sum(axis=1).max()), 1)
    items = np.take_along_axis(np.where(first, keys, -1), order, axis=1)[:, :width]
    counts = np.take_along_axis(counts, order, axis=1)[:, :width]
    return items.astype(np.int64), counts


def candidate_features(context: Context, candidates: Candidates, names: tuple[str, ...]) -> np.ndarray:
    """Feature tensor ``(b, m, len(names))`` float32 of the candidates (0 in padding slots)."""
    items = candidates.items
    valid = items >= 0
    columns = []
    context_names = [name for name in names if name in CONTEXT_FEATURES]
    from_context = dict(zip(context_names, context_features(context, items, candidates.rows, context_names)))
    for name in names:
        if name in from_context:
            columns.append(from_context[name])
        elif name == "n_sources":
            columns.append(candidates.sources.astype(np.float32))
        elif name.endswith("_logrank"):
            columns.append(_log_rank(candidates.scores[name[: -len("_logrank")]], valid))
        elif name.endswith("_z"):
            columns.append(_z(candidates.scores[name[: -len("_z")]], valid))
        else:
            raise ValueError(f"unknown ranking feature {name!r}")
    stacked = np.stack(columns, axis=-1).astype(np.float32) if columns else np.zeros((*items.shape, 0), np.float32)
    stacked[~valid] = 0.0
    return stacked


def _log_rank(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """log(1 + rank) of each candidate within its list by ``scores`` (best = rank 0; no score: last)."""
    keyed = np.where(valid & np.isfinite(scores), -scores, np.inf)
    order = np.argsort(keyed, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(scores.shape[1])[None, :].repeat(len(scores), axis=0), axis=1)
    return np.log1p(rank).astype(np.float32)


def _z(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each score standardised within its list; a candidate the source cannot score gets the
    list's lowest value."""
    finite = valid & np.isfinite(scores)
    present = np.where(finite, scores, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nanmean(present, axis=1, keepdims=True)
        std = np.nanstd(present, axis=1, keepdims=True)
        z = (present - mean) / (std + 1e-9)
        low = np.nanmin(z, axis=1, keepdims=True)
    z = np.where(finite, z, low)
    return np.nan_to_num(z, nan=0.0).astype(np.float32)


def labels_of(candidates: Candidates, targets: sp.csr_matrix) -> np.ndarray:
    """1 where a candidate is one of its customer's ``targets`` (customers × items), else 0."""
    return gather(targets[candidates.rows], np.maximum(candidates.items, 0)) * (candidates.items >= 0)
