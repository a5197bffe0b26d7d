"""Top-k lists as arrays: what every recommender returns and what publishing takes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Lists:
    """Top-k item codes and scores, one row per customer asked for; -1 / -inf mark "no item"."""

    items: np.ndarray  # (n, k) int64 item codes, best first
    scores: np.ndarray  # (n, k) float64, descending along each row
    reasons: np.ndarray | None = None  # (n, k) int32 reason codes (recsys.scoring.reasons); None: not given

    def __len__(self) -> int:
        return len(self.items)

    @property
    def k(self) -> int:
        """Slots per list."""
        return self.items.shape[1]


def empty_lists(n: int, k: int) -> Lists:
    """``n`` lists of ``k`` slots with no item yet."""
    return Lists(
        items=np.full((n, k), -1, dtype=np.int64), scores=np.full((n, k), -np.inf), reasons=np.zeros((n, k), dtype=np.int32)
    )


def put(lists: Lists, start: int, part: Lists) -> None:
    """Copy ``part``'s lists into ``lists`` from row ``start`` (a shorter list leaves its tail empty)."""
    rows, width = part.items.shape
    lists.items[start : start + rows, :width] = part.items
    lists.scores[start : start + rows, :width] = part.scores
    if lists.reasons is not None and part.reasons is not None:
        lists.reasons[start : start + rows, :width] = part.reasons


def shard_bounds(n_users: int, shard_size: int) -> list[tuple[int, int]]:
    """Consecutive (start, stop) ranges of at most ``shard_size`` customers covering every customer."""
    size = max(1, shard_size)
    return [(start, min(start + size, n_users)) for start in range(0, n_users, size)]
