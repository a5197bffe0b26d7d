"""The health check before every swap: are the new lists fit to replace the published ones?

A model that diverged scores NaN, and the top-k turns NaN into "no item": its lists come out
empty, and an empty list looks like an unknown customer to the lookup. So before publishing, the
new lists are checked as a whole, on codes:

* every customer has a full list wherever the catalogue allows: ``length`` items, or every item
  the customer has not taken yet when there are fewer;
* no list has a gap (an empty slot before a filled one), the same item twice, or an item code
  outside the catalogue;
* every score is finite;
* against the previous published run, when the same recommender made it for a comparable number
  of customers (within a factor of ``COMPARABLE``): the share of the catalogue the lists use
  (coverage) and the spread of the scores (1st to 99th percentile) within a factor of ``WILD``
  either way. Only the spread is compared, not the level: a listwise ranking model's scores
  are defined up to a constant, which moves from one training to the next.

The cold-start list gets the first checks too (full: as long as the rules let a list of a
customer who had nothing be). :func:`check_lists` returns the problems found and
the record the next run compares with (``runs.metrics["lists"]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recsys.data.interactions import Interactions
from recsys.scoring.lists import Lists

WILD = 10.0  # coverage or score spread this many times larger or smaller than the previous run's
COMPARABLE = 2.0  # the previous run is compared with when its customers are within this factor


@dataclass(frozen=True)
class Health:
    """What the check found: ``problems`` (empty when the lists may be published) and ``record``."""

    record: dict
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """Whether the lists passed."""
        return not self.problems


def check_lists(
    lists: Lists,
    interactions: Interactions,
    length: int,
    exclude_seen: bool,
    recommender: str,
    previous: dict | None = None,
    cold_start: tuple[np.ndarray, np.ndarray] | None = None,
    rules=None,
) -> Health:
    """Check ``lists`` (one row per customer code of ``interactions``) before they are published.

    ``length``: the list length asked for (the most items a list can hold); ``exclude_seen``:
    whether lists leave out what a customer took; ``recommender``: who made them;
    ``previous``: the record of the run published now (``runs.metrics["lists"]``), if any;
    ``cold_start``: the cold-start list as (item codes, scores); ``rules``: the run's
    ``recsys.scoring.rules.ItemRules``, which bound how long a list can be.
    """
    n_users, n_items = interactions.n_users, interactions.n_items
    if lists.items.shape[0] != n_users:
        return Health({"recommender": recommender}, (f"{lists.items.shape[0]:,} lists for {n_users:,} customers",))
    rows = _RowChecks.of(lists, n_items)
    names = interactions.users
    count = rows.count

    def flagged(*checks: tuple[np.ndarray, str]) -> list[str]:
        return [_customers(mask, names, what) for mask, what in checks if mask.any()]

    problems = flagged(
        (rows.outside, "an item code outside the catalogue"),
        (rows.gaps, "an empty slot before a filled one"),
        (rows.twice, "the same item twice"),
    )
    if lists.reasons is None:
        problems.append("the lists carry no reasons")
    problems += flagged(
        (rows.bad_reasons, "a reason code outside the vocabulary"), (rows.bad_scores, "a NaN or infinite score")
    )

    room = np.full(n_users, min(length, n_items), dtype=np.int64)
    short = np.flatnonzero(count < room)
    if len(short) and rules is not None and rules.changes_lists:
        from recsys.scoring.rules import list_room

        room[short] = list_room(rules, interactions.seen()[short], length, exclude_seen)
    elif len(short) and exclude_seen:
        room[short] = np.minimum(length, n_items - _distinct_items(interactions, short))
    too_short = count < room
    if too_short.any():
        first = int(np.argmax(too_short))
        problems.append(
            _customers(too_short, names, "a list shorter than the catalogue allows")
            + f" ({names[first]!r}: {int(count[first])} of {int(room[first])})"
        )

    record = {
        "recommender": recommender,
        "customers": int(n_users),
        "length": int(length),
        "full": int(np.count_nonzero(count >= min(length, n_items))),
        "short_by_catalogue": int(np.count_nonzero((count < min(length, n_items)) & ~too_short)),
        "empty": int(np.count_nonzero(count == 0)),
        "coverage": round(int(np.count_nonzero(rows.recommended)) / n_items, 6) if n_items else 0.0,
        "score": _score_summary(rows.finite),
    }
    if cold_start is not None:
        problems += _cold_start_problems(*cold_start, _cold_start_room(rules, length, n_items), n_items)
    problems += _against_previous(record, previous)
    return Health(record, tuple(problems))


BLOCK = 100_000  # customers checked at a time: the row checks' temporaries stay small at a million lists


@dataclass(frozen=True)
class _RowChecks:
    """The per-list checks, worked out a block of customers at a time (one flag per customer)."""

    count: np.ndarray  # filled slots per list
    outside: np.ndarray
    gaps: np.ndarray
    twice: np.ndarray
    bad_reasons: np.ndarray
    bad_scores: np.ndarray
    recommended: np.ndarray  # (n_items,) whether any list holds the item
    finite: np.ndarray  # every finite score of a filled slot

    @classmethod
    def of(cls, lists: Lists, n_items: int) -> "_RowChecks":
        n, k = lists.items.shape
        flags = {name: np.zeros(n, dtype=bool) for name in ("outside", "gaps", "twice", "bad_reasons", "bad_scores")}
        count = np.zeros(n, dtype=np.int64)
        recommended = np.zeros(n_items, dtype=bool)
        finite = np.empty(lists.scores.size, dtype=np.float64)
        kept = 0
        empty_marks = -1 - np.arange(k)  # distinct stand-ins for empty slots, so they never count as twice
        for start in range(0, n, BLOCK):
            part = slice(start, min(start + BLOCK, n))
            items, scores = lists.items[part], lists.scores[part]
            filled = items >= 0
            count[part] = filled.sum(axis=1)
            outside = filled & (items >= n_items)
            flags["outside"][part] = outside.any(axis=1)
            flags["gaps"][part] = (filled[:, 1:] & ~filled[:, :-1]).any(axis=1)
            ordered = np.sort(np.where(filled, items, empty_marks), axis=1)
            flags["twice"][part] = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
            if lists.reasons is not None:
                reasons = lists.reasons[part]
                flags["bad_reasons"][part] = (filled & ((reasons < 0) | (reasons >= 3 + n_items))).any(axis=1)
            good = np.isfinite(scores)
            flags["bad_scores"][part] = (filled & ~good).any(axis=1)
            recommended[items[filled & ~outside]] = True
            block = scores[filled & good]
            finite[kept : kept + len(block)] = block
            kept += len(block)
        return cls(count=count, recommended=recommended, finite=finite[:kept], **flags)


def _distinct_items(interactions: Interactions, users: np.ndarray) -> np.ndarray:
    """How many distinct items each customer code in ``users`` took (only their rows are read)."""
    chosen = np.zeros(interactions.n_users, dtype=bool)
    chosen[users] = True
    rows = chosen[interactions.user]
    pairs = np.unique(interactions.user[rows].astype(np.int64) * interactions.n_items + interactions.item[rows])
    return np.bincount(pairs // max(interactions.n_items, 1), minlength=interactions.n_users)[users]


def _customers(mask: np.ndarray, names: np.ndarray, what: str) -> str:
    count = int(np.count_nonzero(mask))
    first = names[int(np.argmax(mask))]
    return f"{count:,} customer{'s' if count > 1 else ''} with {what} (first: {first!r})"


def _score_summary(finite: np.ndarray) -> dict:
    if len(finite) == 0:
        return {}
    smallest, largest = float(finite.min()), float(finite.max())
    low, middle, high = np.percentile(finite, [1, 50, 99], overwrite_input=True)  # the caller's own copy
    return {"min": smallest, "p01": float(low), "p50": float(middle), "p99": float(high), "max": largest}


def _cold_start_room(rules, length: int, n_items: int) -> int:
    """How long the cold-start list can be: ``length`` items of the catalogue, or, under ``rules``,
    as many as they let a list of a customer who had nothing hold (recommendable items, at most
    ``max_per_family`` of each family)."""
    room = min(length, n_items)
    if rules is not None and rules.changes_lists:
        import scipy.sparse as sp

        from recsys.scoring.rules import list_room

        room = int(list_room(rules, sp.csr_matrix((1, n_items), dtype=np.float32), length, False)[0])
    return room


def _cold_start_problems(codes: np.ndarray, scores: np.ndarray, room: int, n_items: int) -> list[str]:
    problems = []
    codes, scores = np.asarray(codes), np.asarray(scores, dtype=np.float64)
    if len(codes) < room:
        problems.append(f"the cold-start list holds {len(codes)} items, the catalogue allows {room}")
    if len(codes) and ((codes < 0) | (codes >= n_items)).any():
        problems.append("the cold-start list holds an item code outside the catalogue")
    if len(np.unique(codes)) < len(codes):
        problems.append("the cold-start list holds an item twice")
    if not np.isfinite(scores).all():
        problems.append("the cold-start list has a NaN or infinite score")
    return problems


def _against_previous(record: dict, previous: dict | None) -> list[str]:
    """Coverage and score spread against the previous run's record, when it is comparable."""
    if not previous or previous.get("recommender") != record["recommender"]:
        return []
    before, now = previous.get("customers") or 0, record["customers"]
    if not before or not now or max(before, now) > COMPARABLE * min(before, now):
        return []
    problems = []
    old_coverage, new_coverage = previous.get("coverage") or 0.0, record["coverage"]
    if old_coverage > 0 and not old_coverage / WILD <= new_coverage <= old_coverage * WILD:
        problems.append(
            f"the lists cover {new_coverage:.1%} of the catalogue, the previous run's {old_coverage:.1%} "
            f"(more than {WILD:g} times apart)"
        )
    old, new = previous.get("score") or {}, record["score"]
    if {"p01", "p99"} <= old.keys() and {"p01", "p99"} <= new.keys():
        old_spread, new_spread = old["p99"] - old["p01"], new["p99"] - new["p01"]
        # A spread of zero (every score equal) still has a scale: the scores' own size.
        scale = max(old_spread, 1e-6 * max(1.0, abs(old["p01"]), abs(old["p99"])))
        if new_spread > WILD * scale or (old_spread > 0 and new_spread * WILD < old_spread):
            problems.append(
                f"the scores spread over {new_spread:.4g} (1st to 99th percentile), the previous run's over "
                f"{old_spread:.4g} (more than {WILD:g} times apart)"
            )
    return problems
