"""The business rules as arrays over item codes, and the final cut of every list that obeys them.

:class:`ItemRules` is built once per run from the catalogue and the config's ``[rules]``
(:func:`item_rules`). :func:`apply_rules` then takes a block of customers' ranked candidates
(any recommender's: the two-stage model's, a baseline's, the cold-start list's) and cuts each
list to ``k`` in NumPy, a block at a time, never a loop per customer:

1. items not recommendable on the day of the run (blocklisted, inactive, outside
   ``valid_from``..``valid_to``) are dropped;
2. every score is multiplied by its item's boost (a negative score, which a listwise ranker may
   give, is divided by it instead, so a boost above 1 always raises an item); an item boosted
   to 0 scores 0 and is ordered after every candidate and fill item not boosted to 0
   (:func:`by_boosted`), so it is only shown when nothing else can fill the list;
3. with ``exclude_seen_families``, items of a family the customer already had are dropped;
4. with ``max_per_family``, a family's items after the first ``max_per_family`` are dropped
   (a pinned item counts first; pins are never dropped, so more pins of one family than the
   cap exceed it, and :func:`pin_cap_notes` says in how many lists);
5. each pin goes to its rank for every customer who has not had the item; the other items fill
   the other slots in order (a list the rules keep shorter than a pin's rank closes up, so the
   pin moves up to follow the list's last item);
6. a list the candidates cannot fill is filled from the recommendable items by recent
   popularity times boost (the cold-start order), so every list stays ``k`` long wherever the
   catalogue allows.

Scores stay non-increasing along a list: a pinned or filled item takes the score of the slot
above it, and so does an item boosted to 0 below a negative score.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import scipy.sparse as sp

from recsys.data.families import family_of
from recsys.data.interactions import DAY, Interactions, recent_popularity
from recsys.data.names import difference, fold, shown
from recsys.errors import OptionError
from recsys.models.item_item import gather
from recsys.scoring.lists import Lists
from recsys.scoring.reasons import CAMPAIGN, reason_codes
from recsys.scoring.topk import top_k_excluding

#: What ``ItemRules.removed`` codes mean (0: recommendable).
REMOVED = {1: "blocklist", 2: "inactive", 3: "expired"}
SEEN_FAMILY, FAMILY_CAP = 4, 5
#: The counts ``runs.metrics["rules"]["removed"]`` records, by code.
COUNTED = {**REMOVED, SEEN_FAMILY: "seen_family", FAMILY_CAP: "family_cap"}
#: An item is "new in the catalogue" for this many days.
NEW_DAYS = 30


@dataclass(frozen=True)
class ItemRules:
    """The rules of one run over the item codes of its interactions."""

    removed: np.ndarray  # (n_items,) int8: 0 recommendable, else a key of REMOVED
    boost: np.ndarray  # (n_items,) float64 multiplier of the ranking score
    family: np.ndarray  # (n_items,) int32 family code
    families: np.ndarray  # (n_families,) object: family names by code
    max_per_family: int | None
    exclude_seen_families: bool
    pins: np.ndarray  # (P,) int64 item codes, by rank
    pin_ranks: np.ndarray  # (P,) int64 list positions (0 = first)
    new: np.ndarray  # (n_items,) bool: new in the catalogue (its reason)

    @property
    def allowed(self) -> np.ndarray:
        """(n_items,) bool: recommendable on the day of the run."""
        return self.removed == 0

    @property
    def changes_lists(self) -> bool:
        """Whether the rules can change any list (without them the cut is the plain top k)."""
        return bool(
            self.removed.any() or (self.boost != 1.0).any() or self.max_per_family or self.exclude_seen_families
            or len(self.pins)
        )


@dataclass(frozen=True)
class RuleSetup:
    """:func:`item_rules`'s answer: the rules, and what building them found."""

    rules: ItemRules
    notes: tuple[str, ...]  # names of the catalogue or the config that the export does not hold, ...
    unseen: tuple[str, ...]  # catalogue items never seen in the export


def rules_record(config, removed: dict, lists: Lists, cost: dict | None, notes: list[str] | None = None) -> dict:
    """``runs.metrics["rules"]``: the config used (``recsys.config.Config``: text and hash), what
    the rules took out of the lists, the pins placed, the model's held-out NDCG with and without
    the rules (``cost``), and what the lists found (``notes``: :func:`pin_cap_notes`)."""
    pins = int(np.count_nonzero(lists.reasons == CAMPAIGN)) if lists.reasons is not None else 0
    return {
        "config": config.text if config is not None else None,
        "config_sha256": config.sha256 if config is not None else None,
        "removed": {name: int(removed.get(name, 0)) for name in COUNTED.values()},
        "pins_placed": pins,
        "ndcg_with_rules": (cost or {}).get("ndcg_with_rules"),
        "ndcg_without_rules": (cost or {}).get("ndcg_without_rules"),
        "notes": list(notes or ()),
    }


def pin_cap_notes(rules: ItemRules, lists: Lists, names) -> list[str]:
    """Where pins of one family hold more slots than ``max_per_family``: pins are campaigns and
    win over the cap (the family's other items give way first), so each such family gets one
    note saying in how many of the customers' ``lists`` it happened (``names``: item names by
    code)."""
    if not rules.max_per_family or len(rules.pins) <= rules.max_per_family or lists.reasons is None:
        return []
    notes = []
    for family in np.unique(rules.family[rules.pins]):
        pins = np.unique(rules.pins[rules.family[rules.pins] == family])
        if len(pins) <= rules.max_per_family:
            continue
        over = 0
        for start in range(0, len(lists.items), 100_000):  # blocks: small temporaries at a million lists
            items, reasons = lists.items[start : start + 100_000], lists.reasons[start : start + 100_000]
            held = ((reasons == CAMPAIGN) & np.isin(items, pins)).sum(axis=1)
            over += int(np.count_nonzero(held > rules.max_per_family))
        if over:
            shown = ", ".join(repr(str(names[code])) for code in pins)
            notes.append(
                f"{len(pins)} pins of family {str(rules.families[family])!r} ({shown}) exceed max_per_family = "
                f"{rules.max_per_family} in {over:,} lists: pins win over the cap"
            )
    return notes


def catalogue_record(setup: RuleSetup, catalogue, config, day: date) -> dict:
    """``runs.metrics["catalogue"]``: the files read (paths or None), the day the catalogue was
    checked against, and the catalogue items the export never saw."""
    return {
        "catalogue": str(catalogue) if catalogue is not None else None,
        "config": str(config) if config is not None else None,
        "day": day.isoformat(),
        "unseen": list(setup.unseen),
        "notes": list(setup.notes),
    }


def item_rules(data: Interactions, catalogue=None, rules=None, day: date | None = None, k: int = 12) -> RuleSetup:
    """The rules over ``data``'s item codes: ``catalogue`` (``recsys.data.catalogue.Catalogue``)
    and ``rules`` (``recsys.config.Rules``) on ``day`` (default: today) for lists of ``k``.

    Families: the catalogue's, else the name rule's (``recsys.data.families``). "New in the
    catalogue": ``valid_from`` within the last ``NEW_DAYS`` days before ``day``, or first seen in
    the export within its last ``NEW_DAYS`` days (in an export spanning more than that).
    """
    day = day or date.today()
    names = [str(name) for name in data.items]
    n = len(names)
    families = [family_of(name) for name in names]
    removed = np.zeros(n, dtype=np.int8)
    boost = np.ones(n, dtype=np.float64)
    new = _first_seen_lately(data)
    notes, unseen = [], []
    match = _name_matcher(names, notes)
    if catalogue is not None:
        notes.extend(getattr(catalogue, "notes", ()))
        for row, name in enumerate(catalogue.items):
            codes = match(name, "catalogue")
            if not codes:
                unseen.append(name)
            for code in codes:
                if catalogue.family[row]:
                    families[code] = catalogue.family[row]
                boost[code] = catalogue.boost[row]
                start, end = catalogue.valid_from[row], catalogue.valid_to[row]
                if not catalogue.active[row]:
                    removed[code] = 2
                elif (start is not None and day < start) or (end is not None and day > end):
                    removed[code] = 3
                if start is not None and 0 <= (day - start).days < NEW_DAYS:
                    new[code] = True
        if unseen:
            notes.append(f"{len(unseen):,} catalogue items never seen in the export: " + _some(unseen))
    pins, ranks = [], []
    if rules is not None:
        missing = []
        for name in rules.blocklist:
            codes = match(name, "blocklist")
            if not codes:
                missing.append(name)
            removed[codes] = 1
        if missing:
            notes.append(f"blocklist items not in the export: {_some(missing)}")
        for pin in rules.pins:
            if pin.rank > k:
                raise OptionError(f"pin {pin.item!r}: rank {pin.rank} is beyond --top-k {k}")
            codes = match(pin.item, "pin", several=False)
            if not codes:
                notes.append(f"pinned item {shown(pin.item)} is not in the export: not placed")
            elif len(codes) > 1:
                notes.append(
                    f"pinned item {shown(pin.item)} matches {len(codes)} export items that differ from it only in "
                    f"case or Unicode form ({_some([names[code] for code in codes])}): not placed (a pin places one "
                    "item: write its name exactly as the export does)"
                )
            elif codes[0] in pins:
                rank = ranks[pins.index(codes[0])] + 1
                notes.append(f"pinned item {shown(pin.item)} is the item already pinned at rank {rank}: not placed")
            elif removed[codes[0]]:
                notes.append(f"pinned item {shown(pin.item)} is {REMOVED[int(removed[codes[0]])]}: not placed")
            else:
                pins.append(codes[0])
                ranks.append(pin.rank - 1)
    family_names = np.array(sorted(set(families)), dtype=object)
    family_code = {name: code for code, name in enumerate(family_names)}
    return RuleSetup(
        rules=ItemRules(
            removed=removed,
            boost=boost,
            family=np.array([family_code[name] for name in families], dtype=np.int32),
            families=family_names,
            max_per_family=getattr(rules, "max_per_family", None),
            exclude_seen_families=bool(getattr(rules, "exclude_seen_families", False)),
            pins=np.array(pins, dtype=np.int64),
            pin_ranks=np.array(ranks, dtype=np.int64),
            new=new,
        ),
        notes=tuple(notes),
        unseen=tuple(unseen),
    )


def _some(names: list[str], most: int = 10) -> str:
    shown_names = ", ".join(shown(name) for name in names[:most])
    return shown_names + (f" and {len(names) - most:,} more" if len(names) > most else "")


def _name_matcher(names: list[str], notes: list[str]):
    """``match(name, what)``: the export item codes a business name applies to (``what``: where it
    was written, for the notes): the item of exactly that name; else every item whose name is the
    same but for letter case and Unicode form (``recsys.data.names.fold``), each such match noted,
    since a business user who blocks or deactivates "bono jumbo 100" means "Bono Jumbo 100", and
    means it of every spelling of it the export holds. An exact match that has such near-twins in
    the export is applied to itself alone, and noted too. ``several=False`` (a pin, which places
    one item): several near-twins are returned unnoted, for the caller to refuse."""
    index = {name: code for code, name in enumerate(names)}
    folded: dict[str, list[int]] = {}
    for code, name in enumerate(names):
        folded.setdefault(fold(name), []).append(code)

    def match(name: str, what: str, several: bool = True) -> list[int]:
        twins = folded.get(fold(name), [])
        code = index.get(name)
        if code is not None:
            others = [other for other in twins if other != code]
            if others:
                notes.append(
                    f"{what} {shown(name)} applied to that item only; the export also has "
                    + ", ".join(f"{shown(names[other])} ({difference(name, names[other])})" for other in others)
                )
            return [code]
        if twins and (several or len(twins) == 1):
            notes.append(
                f"{what} {shown(name)} applied to "
                + ", ".join(f"{shown(names[other])} ({difference(name, names[other])})" for other in twins)
            )
        return list(twins)

    return match


def _first_seen_lately(data: Interactions) -> np.ndarray:
    """Items first seen in the export's last ``NEW_DAYS`` days (none when it spans fewer)."""
    new = np.zeros(data.n_items, dtype=bool)
    if len(data.time) == 0:
        return new
    start, end = int(data.time.min()), int(data.time.max())
    if end - start <= NEW_DAYS * DAY:
        return new
    first = np.full(data.n_items, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, data.item, data.time)
    return first >= end - NEW_DAYS * DAY


def boosted(scores: np.ndarray, boost: np.ndarray) -> np.ndarray:
    """Scores times their boost (a negative score divided by it: a boost above 1 always raises).

    A boost of 0 makes any score 0 (not a negative score divided by 0): what places such an
    item below every other is the order (:func:`by_boosted`), so its published score stays a
    plain number.
    """
    scores = np.asarray(scores, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # -inf (no item) times a boost of 0, replaced below
        out = np.where(scores >= 0, scores * boost, scores / np.maximum(boost, 1e-12))
    return np.where(boost == 0, np.where(np.isfinite(scores), 0.0, scores), out)


def by_boosted(scores: np.ndarray, boost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The best-first order along the last axis of ``scores`` under their items' ``boost`` (same
    shape), and the boosted scores (:func:`boosted`).

    Items boosted to 0 come after every item that is not, among themselves in the order of their
    own scores; infinite or NaN scores (no item) come last, at -inf. Ties keep their positions.
    """
    scores = np.asarray(scores, dtype=np.float64)
    scores = np.where(np.isfinite(scores), scores, -np.inf)
    values = boosted(scores, boost)
    zero = boost == 0
    if not zero.any():  # no tiers: the boosted order (no item, at -inf, comes last by itself)
        return np.argsort(-values, axis=-1, kind="stable"), values
    # Tier 0: boosted; 1: boosted to 0 (ordered by their own scores); 2: nothing there.
    tier = np.where(np.isfinite(scores), zero.astype(np.int8), np.int8(2))
    key = np.where(zero, scores, values)
    return np.lexsort((-key, tier), axis=-1), values  # by tier, then best first; ties keep positions


def fill_order(rules: ItemRules, data: Interactions, days: float) -> tuple[np.ndarray, np.ndarray]:
    """The recommendable items by recent popularity in ``data`` times boost, best first: what
    fills a list the candidates cannot (item codes, scores)."""
    popularity = np.asarray(recent_popularity(data, days), dtype=np.float64).copy()
    popularity[~rules.allowed] = -np.inf
    order, scores = by_boosted(popularity, rules.boost)  # items boosted to 0 last
    order = order[np.isfinite(scores[order])]
    return order.astype(np.int64), scores[order]


@dataclass(frozen=True)
class Cut:
    """A block's lists after the rules: items and scores ``(b, k)``, which slots hold a pin, and
    how many slots of the rule-free lists each rule took out (``COUNTED`` names)."""

    items: np.ndarray
    scores: np.ndarray
    pinned: np.ndarray
    removed: dict[str, int]


def apply_rules(
    rules: ItemRules,
    items: np.ndarray,
    scores: np.ndarray,
    k: int,
    seen: sp.csr_matrix,
    fill: np.ndarray,
    fill_scores: np.ndarray,
    exclude_seen: bool = True,
) -> Cut:
    """The top ``k`` of each row of ranked candidates ``items`` ``(b, m)`` (-1: none) with their
    ranking ``scores``, under ``rules`` (see the module docstring).

    ``seen`` (b × n_items) marks what each customer had (pins skip them; their families; left out
    of the fill when ``exclude_seen``); ``fill``/``fill_scores``: :func:`fill_order`.
    """
    items = np.asarray(items, dtype=np.int64)
    b, m = items.shape
    seen = sp.csr_matrix(seen)
    valid = items >= 0
    raw = np.where(valid, np.asarray(scores, dtype=np.float64), -np.inf)
    raw[np.isnan(raw)] = -np.inf
    base, _ = top_k_excluding(raw.copy(), None, max(1, min(k, m)))  # the rule-free list (positions)
    order, ranked = by_boosted(raw, rules.boost[np.maximum(items, 0)])  # items boosted to 0 last
    ranked = np.take_along_axis(ranked, order, axis=1)
    candidates = np.where(np.isfinite(ranked), np.take_along_axis(items, order, axis=1), -1)
    applies = _pins_apply(rules, seen, b)
    out_items = np.full((b, k), -1, dtype=np.int64)
    out_scores = np.full((b, k), -np.inf)
    out_pinned = np.zeros((b, k), dtype=bool)
    user_families = _user_families(rules, seen) if rules.exclude_seen_families else None
    seen_count = np.diff(seen.indptr)
    todo = np.arange(b)
    width = min(len(fill), 2 * k + (int(seen_count.max()) if b else 0))
    flags = np.zeros((b, m), dtype=np.int8)
    while len(todo):
        part = slice(None) if len(todo) == b else todo
        chosen, chosen_scores, pinned, why = _select(
            rules, candidates[part], ranked[part], fill[:width], fill_scores[:width], seen[todo],
            applies[part], user_families[todo] if user_families is not None else None, k, exclude_seen,
        )
        out_items[todo], out_scores[todo], out_pinned[todo] = chosen, chosen_scores, pinned
        # The fate of the candidates with the fill that made the list (a candidate boosted to 0
        # comes after the fill's other items, so their family counts reach it).
        flags[todo] = why[:, :m]
        short = (chosen >= 0).sum(axis=1) < k
        if width >= len(fill) or not short.any():
            break
        todo, width = todo[short], min(len(fill), 2 * width)
    # What each rule took out of the rule-free list: its slots' candidates, by their fate.
    fate = np.zeros((b, m), dtype=np.int8)
    if m:
        np.put_along_axis(fate, order, flags, axis=1)
    in_base = base >= 0
    codes = np.take_along_axis(fate, np.maximum(base, 0), axis=1)[in_base] if m else np.zeros(0, np.int8)
    counts = np.bincount(codes, minlength=FAMILY_CAP + 1)
    return Cut(out_items, out_scores, out_pinned, {name: int(counts[code]) for code, name in COUNTED.items()})


def _pins_apply(rules: ItemRules, seen: sp.csr_matrix, b: int) -> np.ndarray:
    """(b, P) bool: pin p applies to row r (the customer has not had its item)."""
    if not len(rules.pins):
        return np.zeros((b, 0), dtype=bool)
    return gather(seen, np.broadcast_to(rules.pins, (b, len(rules.pins)))) <= 0


def _user_families(rules: ItemRules, seen: sp.csr_matrix) -> sp.csr_matrix:
    """(b, n_families): each customer's items per family."""
    n_items = len(rules.family)
    membership = sp.csr_matrix(
        (np.ones(n_items, dtype=np.float32), (np.arange(n_items), rules.family)), shape=(n_items, len(rules.families))
    )
    return (seen.astype(np.float32) @ membership).tocsr()


def _select(rules, candidates, ranked, fill, fill_scores, seen, applies, user_families, k, exclude_seen):
    """:func:`apply_rules` for rows whose candidates are sorted best first, with ``fill`` after them.

    Returns (items, scores, pinned) ``(b, k)`` and each entry's fate ``(b, width)`` int8 (0: kept
    or not reached, else a key of ``COUNTED``).
    """
    b = len(candidates)
    entries = np.concatenate([candidates, np.broadcast_to(fill, (b, len(fill)))], axis=1)
    values = np.concatenate([ranked, np.broadcast_to(fill_scores, (b, len(fill)))], axis=1)
    # Items boosted to 0 after every other candidate and fill item (each part keeps its order).
    last = (entries >= 0) & (rules.boost[np.maximum(entries, 0)] == 0)
    moved = last.any()
    if moved:
        place = np.argsort(last, axis=1, kind="stable")
        entries, values = np.take_along_axis(entries, place, axis=1), np.take_along_axis(values, place, axis=1)
    safe = np.maximum(entries, 0)
    ok = (entries >= 0) & ~_later_duplicates(entries)
    fate = np.zeros(entries.shape, dtype=np.int8)
    removed = rules.removed[safe]
    fate[ok & (removed > 0)] = removed[ok & (removed > 0)]
    ok &= removed == 0
    if exclude_seen:
        ok &= gather(seen, safe) <= 0
    pinned_here = np.zeros(entries.shape, dtype=bool)
    for p, code in enumerate(rules.pins):
        pinned_here |= (entries == code) & applies[:, p][:, None]
    ok &= ~pinned_here
    family = rules.family[safe]
    if user_families is not None:
        had = (gather(user_families, family) > 0) & ok
        fate[had] = SEEN_FAMILY
        ok &= ~had
    if rules.max_per_family:
        before = np.zeros(entries.shape, dtype=np.int64)  # pinned items of the family, counted first
        for p, code in enumerate(rules.pins):
            before += applies[:, p][:, None] & (family == rules.family[code])
        over = ok & (_running_count(family, ok) + before >= rules.max_per_family)
        fate[over] = FAMILY_CAP
        ok &= ~over
    out = np.full((b, k), -1, dtype=np.int64)
    scores = np.full((b, k), -np.inf)
    pinned = np.zeros((b, k), dtype=bool)
    for p, code in enumerate(rules.pins):
        rows = np.flatnonzero(applies[:, p])
        out[rows, rules.pin_ranks[p]] = code
        pinned[rows, rules.pin_ranks[p]] = True
    free = ~pinned
    need = free.sum(axis=1)
    taken = ok & (np.cumsum(ok, axis=1) <= need[:, None])
    rows, columns = np.nonzero(taken)  # row-major: each row's entries best first
    got = taken.sum(axis=1)
    nth = np.arange(len(rows)) - np.repeat(np.cumsum(got) - got, got)
    _, free_columns = np.nonzero(free)
    slots = free_columns[(np.cumsum(need) - need)[rows] + nth]
    out[rows, slots] = entries[rows, columns]
    scores[rows, slots] = values[rows, columns]
    scores[pinned] = np.nan
    out, scores, pinned = _compact(out, scores, pinned)
    if moved:  # each entry's fate back at its place before the move
        unmoved = np.empty_like(fate)
        np.put_along_axis(unmoved, place, fate, axis=1)
        fate = unmoved
    return out, _non_increasing(scores), pinned, fate


def _later_duplicates(entries: np.ndarray) -> np.ndarray:
    """True at every repeat of an item earlier in its row."""
    b, width = entries.shape
    key = np.where(entries >= 0, np.arange(b)[:, None] * (int(entries.max(initial=0)) + 1) + entries, -1)
    flat = key.ravel()
    order = np.argsort(flat, kind="stable")
    ordered = flat[order]
    repeat = np.r_[False, ordered[1:] == ordered[:-1]] & (ordered >= 0)
    out = np.empty(flat.shape, dtype=bool)
    out[order] = repeat
    return out.reshape(b, width)


def _running_count(family: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """For each ``ok`` entry, how many ``ok`` entries before it in its row share its family."""
    b, width = family.shape
    key = np.where(ok, np.arange(b)[:, None] * (int(family.max(initial=0)) + 1) + family, -1).ravel()
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    position = np.arange(len(ordered))
    start = np.maximum.accumulate(np.where(np.r_[True, ordered[1:] != ordered[:-1]], position, 0))
    out = np.empty(len(key), dtype=np.int64)
    out[order] = position - start
    return out.reshape(b, width)


def _compact(items: np.ndarray, scores: np.ndarray, pinned: np.ndarray):
    """Empty slots moved to the end of each row (a short list keeps its order, pins included)."""
    if (items >= 0).all():
        return items, scores, pinned
    order = np.argsort(items < 0, axis=1, kind="stable")
    return (
        np.take_along_axis(items, order, axis=1),
        np.take_along_axis(scores, order, axis=1),
        np.take_along_axis(pinned, order, axis=1),
    )


def _non_increasing(scores: np.ndarray) -> np.ndarray:
    """Pinned slots (NaN) take the score above them (the row's best at the top); then every score
    is at most the one above it, so each list stays sorted."""
    scores = scores.copy()
    if scores.shape[1] == 0:
        return scores
    top = np.isnan(scores[:, 0])
    if top.any():
        others = np.where(np.isnan(scores[top]) | ~np.isfinite(scores[top]), -np.inf, scores[top]).max(axis=1)
        scores[top, 0] = np.where(np.isfinite(others), others, 0.0)
    for slot in range(1, scores.shape[1]):  # a loop over the k slots, not the customers
        gap = np.isnan(scores[:, slot])
        scores[gap, slot] = scores[gap, slot - 1]
    filled = np.isfinite(scores)
    capped = np.minimum.accumulate(np.where(filled, scores, np.inf), axis=1)
    return np.where(filled, capped, -np.inf)


@dataclass(frozen=True)
class Curator:
    """What turns ranked candidates into published lists: the rules (when they change anything),
    the fill order, and what the reasons need (what customers had, an item-item similarity)."""

    rules: ItemRules
    seen: sp.csr_matrix  # customers × items of the run (or of the split evaluated)
    fill: np.ndarray
    fill_scores: np.ndarray
    similarity: sp.csr_matrix | None  # None: non-personal lists ("popular lately")
    exclude_seen: bool = True

    def finish(self, rows: np.ndarray | None, items: np.ndarray, scores: np.ndarray, k: int, seen=None) -> tuple[Lists, dict]:
        """Lists of ``k`` with reasons from ranked candidates of customer codes ``rows`` (or of
        customers who had ``seen``, a (b × n_items) matrix), and the removal counts."""
        seen = self.seen[np.asarray(rows, dtype=np.int64)] if seen is None else sp.csr_matrix(seen)
        if self.rules.changes_lists:
            cut = apply_rules(self.rules, items, scores, k, seen, self.fill, self.fill_scores, self.exclude_seen)
            chosen, values, pinned, removed = cut.items, cut.scores, cut.pinned, cut.removed
        else:
            width = max(1, min(k, items.shape[1]))
            picked, values = top_k_excluding(np.where(items >= 0, scores, -np.inf).astype(np.float64), None, width)
            chosen = np.where(picked >= 0, np.take_along_axis(items, np.maximum(picked, 0), axis=1), -1)
            if width < k:
                chosen = np.pad(chosen, [(0, 0), (0, k - width)], constant_values=-1)
                values = np.pad(values, [(0, 0), (0, k - width)], constant_values=-np.inf)
            pinned, removed = np.zeros(chosen.shape, dtype=bool), {}
        reasons = reason_codes(chosen, seen, self.similarity, self.rules.new, pinned)
        return Lists(items=chosen, scores=values, reasons=reasons), removed


def add_counts(total: dict, part: dict) -> None:
    """Add one block's removal counts to ``total``."""
    for name, value in part.items():
        total[name] = total.get(name, 0) + value


def curator_for(
    rules: ItemRules, data: Interactions, days: float, exclude_seen: bool, similarity: sp.csr_matrix | None,
    seen: sp.csr_matrix | None = None,
) -> Curator:
    """The curator of lists made from ``data`` (fill by its recent popularity over ``days``)."""
    fill, fill_scores = fill_order(rules, data, days)
    return Curator(rules, data.seen() if seen is None else seen, fill, fill_scores, similarity, exclude_seen)


def list_room(rules: ItemRules, seen: sp.csr_matrix, k: int, exclude_seen: bool) -> np.ndarray:
    """(b,) the most items the rules let a list of the customers who had ``seen`` (b × n_items)
    hold: recommendable items (not had, when ``exclude_seen``; not of a family had, with
    ``exclude_seen_families``), at most ``max_per_family`` of each family, at most ``k``."""
    seen = sp.csr_matrix(seen).astype(bool).astype(np.float32)
    n_items, n_families = len(rules.family), len(rules.families)
    allowed = rules.allowed.astype(np.float32)
    size = np.bincount(rules.family, weights=allowed, minlength=n_families)  # recommendable items per family
    cap = float(rules.max_per_family) if rules.max_per_family else np.inf
    full = float(np.minimum(size, cap).sum())

    def per_family(weights):
        return sp.csr_matrix((weights, (np.arange(n_items), rules.family)), shape=(n_items, n_families))

    touched = (seen @ per_family(np.ones(n_items, np.float32))).tocoo()  # families each customer had items of
    had = (seen @ per_family(allowed)).tocsr()  # of which recommendable items, per family
    rows, family = touched.row, touched.col
    before = np.minimum(size[family], cap)
    if rules.exclude_seen_families:
        after = np.zeros(len(family))
    elif exclude_seen:
        after = np.minimum(size[family] - np.asarray(had[rows, family]).ravel(), cap)
    else:
        after = before
    room = full - np.bincount(rows, weights=before - after, minlength=seen.shape[0])
    return np.minimum(k, np.maximum(room, 0)).astype(np.int64)


def candidate_width(rules: ItemRules, k: int) -> int:
    """How many ranked items to ask a recommender for so that its ``k`` best survive the rules:
    ``k``, plus every item the rules remove for everyone, the pins, and ``k`` more for the
    family rules (what still falls short is filled, see :func:`apply_rules`)."""
    if not rules.changes_lists:
        return k
    family_rules = bool(rules.max_per_family or rules.exclude_seen_families)
    wide = k + int(np.count_nonzero(~rules.allowed)) + len(rules.pins) + (k if family_rules else 0)
    return max(k, min(wide, len(rules.removed)))


def curated_lists(recommend, n_users: int, k: int, curator: Curator, removed: dict | None = None, block_cells: int = 1 << 22) -> Lists:
    """Every customer's list of ``k`` from ``recommend(users, n, exclude_seen=...)`` (the shared
    recommender surface) under the curator's rules, with reasons, a block of customers at a time."""
    from recsys.scoring.lists import empty_lists, put

    wide = candidate_width(curator.rules, k)
    out = empty_lists(n_users, k)
    block = max(1, block_cells // wide)
    for start in range(0, n_users, block):  # a loop over blocks of customers, each cut in NumPy
        rows = np.arange(start, min(n_users, start + block))
        ranked = recommend(rows, wide, exclude_seen=curator.exclude_seen)
        lists, counts = curator.finish(rows, ranked.items, ranked.scores, k)
        put(out, start, lists)
        if removed is not None:
            add_counts(removed, counts)
    return out


def curated_single(curator: Curator, items: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One non-personal list (the cold-start list: a customer who had nothing) under the rules:
    (item codes, scores, reason codes), empty slots dropped."""
    nothing = sp.csr_matrix((1, len(curator.rules.removed)), dtype=np.float32)
    lists, _ = curator.finish(None, np.asarray(items, dtype=np.int64)[None, :], np.asarray(scores, dtype=np.float64)[None, :], k, seen=nothing)
    valid = lists.items[0] >= 0
    return lists.items[0][valid], lists.scores[0][valid], lists.reasons[0][valid]


def family_table(data: Interactions, catalogue=None) -> list[dict]:
    """The families of ``data``'s items (the catalogue's, else the name rule's), largest first:
    ``[{"family", "items", "names"}]``."""
    rules = item_rules(data, catalogue).rules
    out = []
    for code, name in enumerate(rules.families):
        members = sorted(str(item) for item in data.items[rules.family == code])
        out.append({"family": str(name), "items": len(members), "names": members})
    return sorted(out, key=lambda row: (-row["items"], row["family"]))
