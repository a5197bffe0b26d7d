"""Deterministic synthetic interaction exports in the exact schema of the company's real export.

The real export is a quoted CSV with four columns::

    "ID_CLIENTE","FECHA_INTERACCION","NOMBRE_CORTO_DE_EXPERIENCIA","CALIFICACION"
    "1","1/4/2021 9:47","Bono virtual Crepes&Waffles 10","5"

This module fakes it so the pipeline can be developed, tested and benchmarked without customer
data. The fake keeps the quirks that the cleaning code must survive (exact duplicate rows for
several units redeemed at once, the same item redeemed again later, stray spaces around some
experience names, unpadded US-style dates, a rating scale dominated by fives) and plants a taste
structure so that a recommender has something to learn and an evaluation has something to
measure:

* customers belong to one of ``groups`` taste groups; every item has a home group, and about
  two thirds of a customer's fresh picks come from their group's items;
* the remaining picks follow a global Zipf-like popularity with a category bias (vouchers for
  restaurants and supermarkets dominate, as in the real data);
* popularity drifts over the period (some items trend up, some fade, some launch late), so
  recent popularity carries signal that all-time popularity misses;
* a customer's next pick is often a "companion" of the previous one (an item of the same
  home group), so the order of a customer's history carries signal too;
* ratings are a little higher for in-group items, so explicit feedback correlates with taste.

Everything is vectorised with numpy and pyarrow; the only Python loops run over categories,
groups, catalogue names or dependency depth, never over rows or customers. One million customers
with twenty interactions each generate in well under two minutes.

Command line::

    python -m recsys.synthetic.generate --out data/interactions_sample.csv
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

__all__ = [
    "EXPORT_COLUMNS",
    "DATE_FORMAT",
    "PlantedStructure",
    "PickModel",
    "pick_model",
    "build_catalogue",
    "generate_export",
    "write_export",
    "main",
]

EXPORT_COLUMNS: tuple[str, ...] = (
    "ID_CLIENTE",
    "FECHA_INTERACCION",
    "NOMBRE_CORTO_DE_EXPERIENCIA",
    "CALIFICACION",
)
#: strptime format of FECHA_INTERACCION (the export itself does not zero-pad, strptime accepts both).
DATE_FORMAT = "%m/%d/%Y %H:%M"

# Real-export rating shares for 1..5 (they sum to 1.002 in the report; normalised at use).
_RATING_SHARES = (0.034, 0.005, 0.013, 0.12, 0.83)
# In-group picks are rated a little better; out-of-group shares are solved so that the overall
# mix stays at _RATING_SHARES.
_IN_GROUP_RATING_SHARES = (0.018, 0.004, 0.010, 0.105, 0.863)

# Hour-of-day profile of redemptions: nothing at night, peaks at lunch and after work.
_HOUR_WEIGHTS = (
    0.2, 0.1, 0.05, 0.05, 0.05, 0.1, 0.4, 1.0, 2.0, 3.0, 3.5, 4.0,
    5.5, 5.0, 3.5, 3.0, 3.0, 3.5, 4.5, 5.0, 4.5, 3.0, 1.5, 0.6,
)

_TIME_BINS = 24  # popularity is piecewise constant over this many equal slices of the period

# What a customer's later pick is (the first pick is always fresh): a repeat of an earlier pick, a
# companion of the previous pick, or a fresh pick; fresh picks come from the customer's group's
# items with IN_GROUP_SHARE, else from the global popularity.
REPEAT_SHARE = 0.10
COMPANION_SHARE = 0.25
IN_GROUP_SHARE = 0.65


# --------------------------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------------------------

def _category_names() -> dict[str, list[str]]:
    """Natural names per category, in a fixed order, from ``catalogue.toml`` beside this module."""
    import itertools
    import tomllib

    with open(Path(__file__).with_name("catalogue.toml"), "rb") as handle:
        spec = tomllib.load(handle)
    names: dict[str, list[str]] = {}
    for category, groups in spec.items():
        names[category] = []
        for group in groups:
            if "names" in group:
                names[category] += group["names"]
                continue
            keys = group["order"]
            pools = [group[key] for key in keys]
            for values in itertools.product(*pools):
                fields = dict(zip(keys, values))
                templates = [fields.pop("template")] if "template" in fields else group["template"]
                names[category] += [template.format(**fields) for template in templates]
    return names


# Share of the catalogue per category, and how much more popular its items are globally; the
# real export is dominated by restaurant and supermarket vouchers.
_CATEGORY_SHARE = {
    "restaurantes": 0.22, "supermercados": 0.14, "cine": 0.08, "cursos": 0.14,
    "bienestar": 0.12, "deportes": 0.12, "viajes": 0.10, "entretenimiento": 0.08,
}
_CATEGORY_POPULARITY = {
    "restaurantes": 3.0, "supermercados": 3.0, "cine": 1.5, "cursos": 0.6,
    "bienestar": 0.8, "deportes": 0.6, "viajes": 0.7, "entretenimiento": 1.0,
}
# Branch suffixes used only when a category needs more items than it has natural names.
_CITIES = (
    "Bogotá", "Medellín", "Cali", "Barranquilla", "Cartagena", "Bucaramanga", "Pereira",
    "Manizales", "Santa Marta", "Cúcuta", "Ibagué", "Villavicencio", "Neiva", "Pasto",
    "Armenia", "Montería", "Popayán", "Tunja", "Valledupar", "Sincelejo",
)


def build_catalogue(items: int, seed: int = 7) -> pd.DataFrame:
    """Return a catalogue of ``items`` experiences: columns ``name`` (as exported, possibly with
    stray surrounding spaces), ``clean_name`` (stripped, unique) and ``category``.

    Names come from natural per-category templates; when a category needs more items than it has
    natural names (large benchmark catalogues), branch variants such as
    ``"Bono Éxito 50 - Medellín"`` and ``"... - Medellín sede 2"`` keep them unique.
    """
    if items < 1:
        raise ValueError("items must be >= 1")
    rng = np.random.default_rng([seed, 1])
    pools = _category_names()
    categories = list(pools)
    shares = np.array([_CATEGORY_SHARE[c] for c in categories])
    # Largest-remainder allocation so category sizes sum exactly to `items`.
    raw = shares / shares.sum() * items
    counts = np.floor(raw).astype(int)
    counts[np.argsort(-(raw - counts), kind="stable")[: items - counts.sum()]] += 1

    names: list[str] = []
    cats: list[str] = []
    for category, count in zip(categories, counts):
        pool = [pools[category][i] for i in rng.permutation(len(pools[category]))]
        for k in range(count):
            base = pool[k % len(pool)]
            round_ = k // len(pool)
            if round_ == 0:
                names.append(base)
            else:
                city = _CITIES[(round_ - 1) % len(_CITIES)]
                branch = (round_ - 1) // len(_CITIES)
                names.append(f"{base} - {city}" if branch == 0 else f"{base} - {city} sede {branch + 1}")
            cats.append(category)
    clean = np.array(names, dtype=object)
    if len(set(names)) != len(names):  # guards against template edits introducing collisions
        raise AssertionError("catalogue names are not unique")

    # Shuffle so item index carries no category information.
    order = rng.permutation(items)
    clean = clean[order]
    category = np.array(cats, dtype=object)[order]

    # The sloppy-catalogue quirk: a few entries were typed with stray spaces, always the same way.
    u = rng.random(items)
    exported = clean.copy()
    trailing = u < 0.06
    leading = (u >= 0.06) & (u < 0.075)
    both = (u >= 0.075) & (u < 0.08)
    exported[trailing] = [s + " " for s in clean[trailing]]
    exported[leading] = [" " + s for s in clean[leading]]
    exported[both] = [" " + s + "  " for s in clean[both]]
    return pd.DataFrame(
        {"name": exported.astype(str), "clean_name": clean.astype(str), "category": category.astype(str)}
    )


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlantedStructure:
    """Ground truth planted by :func:`generate_export`, for tests and evaluation sanity checks.

    ``customer_group``: taste group per ID_CLIENTE (index: ID_CLIENTE as exported).
    ``item_group``: home group per item and ``item_category``: category per item (index: the
    stripped experience name). ``item_trend``: +1 for items trending up, -1 fading, 0 stable.
    """

    customer_group: pd.Series
    item_group: pd.Series
    item_category: pd.Series
    item_trend: pd.Series


def _segmented_cdf(weights: np.ndarray, members: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate per-segment CDFs, segment s shifted by +s, so one ``searchsorted`` of
    ``s + u`` samples every row from its own segment at once.

    ``weights`` is (time_bins, items); ``members`` lists the item ids of each segment family (one
    family per group, each expanded over all time bins). Returns (flat_cdf, flat_item).
    """
    cdfs, ids = [], []
    seg = 0
    for member in members:
        w = weights[:, member]
        for t in range(weights.shape[0]):
            c = np.cumsum(w[t])
            c /= c[-1]
            c[-1] = 1.0  # so the segment's last value is exactly seg + 1 and u < 1 stays inside
            cdfs.append(c + seg)
            ids.append(member)
            seg += 1
    return np.concatenate(cdfs), np.concatenate(ids).astype(np.int32)


def _date_strings(days: int, start: pd.Timestamp) -> pa.Array:
    """All ``m/d/yyyy h:mm`` strings (no zero padding, as the export) for minutes 0..days*1440-1."""
    dates = pd.date_range(start, periods=days, freq="D")
    day_str = pa.array([f"{d.month}/{d.day}/{d.year} " for d in dates])
    hm_str = pa.array([f"{h}:{m:02d}" for h in range(24) for m in range(60)])
    minute = np.arange(days * 1440, dtype=np.int64)
    joined = pc.binary_join_element_wise(
        pc.take(day_str, pa.array(minute // 1440)), pc.take(hm_str, pa.array(minute % 1440)), ""
    )
    return joined.cast(pa.large_string())


@dataclass(frozen=True)
class _ItemModel:
    """Per-item arrays of the planted structure (small: one entry per item or per time bin)."""

    groups: int
    group: np.ndarray  # home group per item
    trend: np.ndarray  # +1 up, -1 fading, 0 stable
    flat_cdf: np.ndarray  # segmented CDFs: groups*bins group segments, then bins global ones
    flat_item: np.ndarray
    companions: np.ndarray  # (items, k) likely next items


def _plant_items(catalogue: pd.DataFrame, groups: int, rng: np.random.Generator) -> _ItemModel:
    """Draw home groups, popularity, drift and companions for the catalogue's items."""
    items = len(catalogue)
    categories = list(_CATEGORY_SHARE)
    cat_idx = pd.Categorical(catalogue["category"], categories=categories).codes.astype(np.int64)
    n_cat = len(categories)
    # Each group favours two categories; an item's home group is drawn mostly among the groups
    # that favour its category so groups differ in kind, not only in arbitrary items.
    favoured = np.zeros((groups, n_cat))
    favoured[np.arange(groups), np.arange(groups) % n_cat] = 1.0
    favoured[np.arange(groups), (np.arange(groups) * 3 + 1) % n_cat] = 1.0
    affinity = favoured + 0.15
    item_group = np.empty(items, dtype=np.int64)
    for c in range(n_cat):
        members = np.flatnonzero(cat_idx == c)
        p = affinity[:, c] / affinity[:, c].sum()
        item_group[members] = rng.choice(groups, size=members.size, p=p)
    # Every group needs at least one item to be sampled from.
    item_group[rng.permutation(items)[:groups]] = np.arange(groups)
    group_members = [np.flatnonzero(item_group == g) for g in range(groups)]

    # Zipf-like popularity, globally (biased towards voucher categories) and within each group
    # (an independent ranking, so a group's favourites are not just the global best sellers).
    zipf_s = 1.05
    cat_boost = np.array([_CATEGORY_POPULARITY[c] for c in categories])[cat_idx]
    global_base = cat_boost / (rng.permutation(items) + 1) ** zipf_s
    within_rank = np.empty(items, dtype=np.int64)
    for members in group_members:
        within_rank[members] = rng.permutation(members.size) + 1
    group_base = 1.0 / within_rank**zipf_s

    # Drift: 20% trend up, 12% fade, 10% launch during the period (never a group's top item,
    # so no group segment is ever empty).
    u = rng.random(items)
    trend = np.where(u < 0.20, 1, np.where(u < 0.32, -1, 0))
    launch = np.where((rng.random(items) < 0.10) & (within_rank > 1), rng.random(items) * 0.8, 0.0)
    t_mid = (np.arange(_TIME_BINS) + 0.5) / _TIME_BINS
    slope = np.where(trend == 1, 3.5, np.where(trend == -1, -2.5, 0.0))
    drift = np.exp(np.outer(t_mid - 0.5, slope)) * (t_mid[:, None] >= launch[None, :])
    cdf_g, ids_g = _segmented_cdf(group_base[None, :] * drift, group_members)
    cdf_w, ids_w = _segmented_cdf(global_base[None, :] * drift, [np.arange(items)])

    n_comp = 3
    companions = np.empty((items, n_comp), dtype=np.int32)
    for members in group_members:
        p = group_base[members] / group_base[members].sum()
        companions[members] = rng.choice(members, size=(members.size, n_comp), p=p)
    return _ItemModel(
        groups=groups,
        group=item_group,
        trend=trend,
        flat_cdf=np.concatenate([cdf_g, cdf_w + groups * _TIME_BINS]),
        flat_item=np.concatenate([ids_g, ids_w]),
        companions=companions,
    )


@dataclass(frozen=True)
class PickModel:
    """The planted probabilities of a customer's next pick, for ceiling studies: what a recommender
    that knew the generator's hidden truth would score (``benchmarks/ceiling.py``).

    Item axes follow ``names`` (the stripped experience names in the generator's order).
    ``group_p[g, t]`` and ``global_p[t]``: the fresh-pick distribution of taste group ``g`` and of
    the global popularity in time bin ``t``; ``companions``: each item's likely next items.
    """

    names: np.ndarray  # (items,) str
    group_p: np.ndarray  # (groups, bins, items)
    global_p: np.ndarray  # (bins, items)
    companions: np.ndarray  # (items, k) indices into names
    start: pd.Timestamp
    days: int

    def time_bin(self, seconds: np.ndarray) -> np.ndarray:
        """The time bin of wall times in seconds since 1970 (the export's times, as loaded)."""
        day = (np.asarray(seconds, dtype=np.int64) - self.start.value // 10**9) // 86400
        return np.clip(day * _TIME_BINS // self.days, 0, _TIME_BINS - 1)


def pick_model(
    items: int = 250, groups: int = 8, seed: int = 7, start: str = "2021-01-01", end: str = "2022-12-31"
) -> PickModel:
    """The :class:`PickModel` behind ``generate_export`` with the same catalogue arguments."""
    catalogue = build_catalogue(items, seed)
    model = _plant_items(catalogue, groups, np.random.default_rng([seed, 2]))
    t_start = pd.Timestamp(start).normalize()
    days = (pd.Timestamp(end).normalize() - t_start).days + 1
    # flat_cdf holds segment s's CDF shifted by +s and ending exactly at s + 1, so its steps are
    # the probabilities; segments are (group, bin) for every group, then (global, bin).
    sizes = np.r_[np.repeat(np.bincount(model.group, minlength=groups), _TIME_BINS), np.full(_TIME_BINS, items)]
    segment = np.repeat(np.arange(sizes.size), sizes)
    p = np.zeros((sizes.size, items))
    np.add.at(p, (segment, model.flat_item), np.diff(np.r_[0.0, model.flat_cdf]))
    p = p.reshape(groups + 1, _TIME_BINS, items)
    return PickModel(
        names=catalogue["clean_name"].to_numpy().astype(str),
        group_p=p[:groups],
        global_p=p[groups],
        companions=model.companions,
        start=t_start,
        days=days,
    )


def _event_times(
    customers: int, n_events: np.ndarray, days: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Return (customer index, minute since start) per event, sorted by customer then time."""
    n_total = int(n_events.sum())
    ev_cust = np.repeat(np.arange(customers, dtype=np.int32), n_events)
    # Each customer is active over a random window of the period.
    win_start = rng.random(customers)
    win_len = (1.0 - win_start) * rng.uniform(0.15, 1.0, customers)
    frac = win_start[ev_cust] + win_len[ev_cust] * rng.random(n_total)
    day = np.minimum((frac * days).astype(np.int64), days - 1)
    del frac
    hour_p = np.array(_HOUR_WEIGHTS) / sum(_HOUR_WEIGHTS)
    key = rng.choice(24, size=n_total, p=hour_p) * 60 + rng.integers(0, 60, n_total)
    key += day * 1440
    del day
    # Sorting one combined key orders every customer's events in time without a per-customer
    # loop; customers keep their contiguous blocks because the customer index is the high part.
    key |= ev_cust.astype(np.int64) << 32
    key.sort()
    key &= 0xFFFFFFFF
    return ev_cust, key


def _event_items(
    model: _ItemModel,
    cust_group: np.ndarray,
    ev_cust: np.ndarray,
    pos: np.ndarray,
    time_bin: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Pick an item per event: fresh picks (group taste or global popularity, at that time),
    companions of the previous pick, or repeats of an earlier pick of the same customer."""
    n_total = ev_cust.size
    groups = model.groups
    u = rng.random(n_total)
    kind = np.zeros(n_total, dtype=np.int8)  # 0 fresh, 1 companion of previous, 2 repeat
    later = pos > 0
    kind[later & (u < REPEAT_SHARE)] = 2
    kind[later & (u >= REPEAT_SHARE) & (u < REPEAT_SHARE + COMPANION_SHARE)] = 1
    del u, later
    src = np.arange(-1, n_total - 1, dtype=np.int64)
    rep = np.flatnonzero(kind == 2)
    src[rep] -= (rng.random(rep.size) * pos[rep]).astype(np.int64)
    del rep

    fresh = np.flatnonzero(kind == 0)
    in_group = rng.random(fresh.size) < IN_GROUP_SHARE
    segment = np.where(
        in_group,
        cust_group[ev_cust[fresh]] * _TIME_BINS + time_bin[fresh],
        groups * _TIME_BINS + time_bin[fresh],
    )
    key = segment + rng.random(fresh.size)
    del segment, in_group
    item = np.full(n_total, -1, dtype=np.int32)
    at = np.searchsorted(model.flat_cdf, key, side="right")
    item[fresh] = model.flat_item[np.minimum(at, model.flat_cdf.size - 1)]
    del key, at, fresh
    # Dependencies point strictly backwards within a customer, so resolving whatever is ready
    # terminates after (max chain depth) rounds, which is short because chains are geometric.
    pending = np.flatnonzero(kind != 0)
    comp_pick = rng.integers(0, model.companions.shape[1], n_total, dtype=np.int8)
    while pending.size:
        ready = item[src[pending]] >= 0
        rows = pending[ready]
        base = item[src[rows]]
        item[rows] = np.where(kind[rows] == 1, model.companions[base, comp_pick[rows]], base)
        pending = pending[~ready]
    return item


def _ratings(liked: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rating minus one (0..4) per event; in-group items are liked a bit more while the overall
    mix stays at the real export's shares."""
    overall = np.array(_RATING_SHARES) / sum(_RATING_SHARES)
    in_shares = np.array(_IN_GROUP_RATING_SHARES) / sum(_IN_GROUP_RATING_SHARES)
    share_in = float(liked.mean()) if liked.size else 0.0
    out_shares = np.clip(overall - share_in * in_shares, 1e-4, None) / max(1.0 - share_in, 1e-9)
    out_shares /= out_shares.sum()
    u = rng.random(liked.size)
    return np.where(
        liked,
        np.searchsorted(np.cumsum(in_shares)[:-1], u, side="right"),
        np.searchsorted(np.cumsum(out_shares)[:-1], u, side="right"),
    ).astype(np.int8)


def generate_export(
    customers: int = 2500,
    items: int = 250,
    interactions_per_customer: float = 2.5,
    groups: int = 8,
    seed: int = 7,
    start: str = "2021-01-01",
    end: str = "2022-12-31",
    *,
    return_groups: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, PlantedStructure]:
    """Generate a synthetic interaction export.

    Returns a DataFrame with exactly :data:`EXPORT_COLUMNS`, all ``str`` dtype, one row per
    redeemed unit, sorted by customer then time (several units redeemed together are exact
    duplicate rows). ``interactions_per_customer`` is the mean number of interaction events per
    customer before unit duplication (skewed: many customers have one or two, a few ten or more).
    Same arguments give an identical frame. With ``return_groups=True`` also returns the
    :class:`PlantedStructure` ground truth.
    """
    if customers < 1:
        raise ValueError("customers must be >= 1")
    if groups < 1 or items < 2 * groups:
        raise ValueError("need groups >= 1 and items >= 2 * groups")
    if interactions_per_customer < 1:
        raise ValueError("interactions_per_customer must be >= 1")
    t_start, t_end = pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize()
    days = (t_end - t_start).days + 1
    if days < 1:
        raise ValueError("end must not be before start")

    # Independent streams per concern so tweaking one part does not reshuffle the others.
    catalogue = build_catalogue(items, seed)
    rng_items, rng_cust, rng_time, rng_pick, rng_rate = (
        np.random.default_rng([seed, k]) for k in (2, 3, 4, 5, 6)
    )
    model = _plant_items(catalogue, groups, rng_items)

    # Real ids have gaps (deleted or never-active customers).
    cust_id = np.cumsum(1 + (rng_cust.random(customers) < 0.25)).astype(np.int64)
    cust_group = rng_cust.choice(groups, size=customers, p=rng_cust.dirichlet(np.full(groups, 8.0)))
    # Negative binomial: skewed, many ones and twos, a long tail.
    r = 1.2
    n_events = 1 + rng_cust.negative_binomial(r, r / (r + interactions_per_customer - 1), customers)

    ev_cust, ts = _event_times(customers, n_events, days, rng_time)
    pos = np.arange(ts.size, dtype=np.int64) - np.repeat(np.cumsum(n_events) - n_events, n_events)
    time_bin = ts // 1440 * _TIME_BINS // days
    item = _event_items(model, cust_group, ev_cust, pos, time_bin, rng_pick)
    del pos, time_bin
    rating = _ratings(model.group[item] == cust_group[ev_cust], rng_rate)

    # Several vouchers redeemed at once become exact duplicate rows (~half the export).
    units = 1 + (rng_rate.random(ts.size) < 0.45) * rng_rate.geometric(0.42, ts.size)
    df = _export_frame(cust_id, ev_cust, ts, item, rating, units, catalogue["name"], days, t_start)
    if not return_groups:
        return df

    clean_index = pd.Index(catalogue["clean_name"], name="NOMBRE_CORTO_DE_EXPERIENCIA")
    truth = PlantedStructure(
        customer_group=pd.Series(
            cust_group, index=pd.Index(cust_id.astype(str), name="ID_CLIENTE"), name="group"
        ),
        item_group=pd.Series(model.group, index=clean_index, name="group"),
        item_category=pd.Series(catalogue["category"].to_numpy(), index=clean_index, name="category"),
        item_trend=pd.Series(model.trend, index=clean_index, name="trend"),
    )
    return df, truth


def _export_frame(
    cust_id: np.ndarray,
    ev_cust: np.ndarray,
    ts: np.ndarray,
    item: np.ndarray,
    rating: np.ndarray,
    units: np.ndarray,
    names: pd.Series,
    days: int,
    start: pd.Timestamp,
) -> pd.DataFrame:
    """Expand events to unit rows and render the four string columns.

    Each column is a pyarrow ``take`` from a small dictionary of strings (ids, minutes of the
    period, item names, ratings), so no Python runs per row; ``large_string`` throughout because
    pandas stores ``str`` columns that way and would otherwise copy every column.
    """
    row_event = np.repeat(np.arange(ts.size, dtype=np.int64), units)
    dictionaries = {
        "ID_CLIENTE": (pc.cast(pa.array(cust_id), pa.large_string()), ev_cust),
        "FECHA_INTERACCION": (_date_strings(days, start), ts),
        "NOMBRE_CORTO_DE_EXPERIENCIA": (pa.array(names.to_numpy(), pa.large_string()), item),
        "CALIFICACION": (pa.array(["1", "2", "3", "4", "5"], pa.large_string()), rating),
    }
    columns = {}
    for name, (strings, index) in dictionaries.items():
        columns[name] = pd.Series(
            pd.arrays.ArrowStringArray(pc.take(strings, pa.array(index[row_event]))), dtype="str"
        )
    return pd.DataFrame(columns)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

EXPORT_SUFFIXES = (".csv", ".parquet")


def check_destination(path: str | Path, force: bool = False) -> Path:
    """``path`` if an export may be written there, else ``OptionError`` saying why not.

    Refused: a name that is not ``.csv`` or ``.parquet`` (nothing could read it back), a folder
    that does not exist (a typo, not a wish to create one), and an existing file unless ``force``
    (the committed sample is one ``generate`` away from being replaced).
    """
    from recsys.errors import OptionError

    path = Path(path)
    if path.suffix.lower() not in EXPORT_SUFFIXES:
        raise OptionError(f"--out {path}: the name must end in .csv or .parquet, not {path.suffix or 'nothing'!r}")
    if not path.parent.is_dir():
        raise OptionError(f"--out {path}: folder {path.parent} does not exist; create it first")
    if path.is_dir():
        raise OptionError(f"--out {path}: is a folder; name a file in it")
    if path.exists() and not force:
        raise OptionError(f"--out {path}: the file exists; pass --force to replace it, or name another file")
    return path


def write_export(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` like the real export: UTF-8 CSV, header and every field double-quoted, comma
    separated, ``\\n`` line endings. A path ending in ``.parquet`` writes Parquet instead.
    Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df, preserve_index=False)
    if path.suffix == ".parquet":
        pq.write_table(table, path)
        return path
    try:
        # pyarrow's writer is several times faster than pandas' for tens of millions of rows.
        table = table.cast(pa.schema([pa.field(n, pa.large_string()) for n in table.column_names]))
        pa_csv.write_csv(table, path, pa_csv.WriteOptions(quoting_style="all_valid"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # Non-string columns that arrow cannot cast: fall back to pandas, same format.
        df.to_csv(path, index=False, quoting=csv.QUOTE_ALL, lineterminator="\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    """Command-line entry: generate an export and write it, printing a one-line summary."""
    parser = argparse.ArgumentParser(
        prog="python -m recsys.synthetic.generate", description="Generate a synthetic interaction export."
    )
    parser.add_argument("--customers", type=int, default=2500)
    parser.add_argument("--items", type=int, default=250)
    parser.add_argument("--per-customer", type=float, default=2.5,
                        help="mean interaction events per customer before unit duplicates")
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", default="2021-01-01")
    parser.add_argument("--end", default="2022-12-31")
    parser.add_argument("--out", default="data/interactions_sample.csv",
                        help="output path (.csv, or .parquet for Parquet)")
    parser.add_argument("--force", action="store_true", help="replace the file if it exists")
    args = parser.parse_args(argv)
    from recsys.errors import RecsysError

    try:
        check_destination(args.out, args.force)
    except RecsysError as exc:
        parser.exit(1, f"error: {exc}\n")
    df = generate_export(
        customers=args.customers, items=args.items, interactions_per_customer=args.per_customer,
        groups=args.groups, seed=args.seed, start=args.start, end=args.end,
    )
    path = write_export(df, args.out)
    print(summary_line(df, path))


def summary_line(df: pd.DataFrame, path: Path) -> str:
    """What ``generate`` wrote and where (the absolute path: the caller's folder may not be obvious)."""
    return (
        f"wrote {len(df):,} rows, {df['ID_CLIENTE'].nunique():,} customers, "
        f"{df['NOMBRE_CORTO_DE_EXPERIENCIA'].nunique():,} items to {Path(path).resolve()}"
    )


if __name__ == "__main__":
    main()
