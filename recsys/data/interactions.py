"""The one representation of an export that everything after loading works on.

:class:`Interactions` holds every redemption as integer codes against two sorted vocabularies
(customer ids and item names), with its time and rating. Names appear only at the edges: the
loader builds the codes once, publishing and reports turn codes back into names. The functions
below count facts of the interactions (pairs, histories, popularity) in NumPy, so they run the
same on a few thousand rows or tens of millions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

DAY = 86_400  # seconds


@dataclass(frozen=True)
class Interactions:
    """Redemptions as codes: row ``r`` is customer ``users[user[r]]`` taking ``items[item[r]]``.

    Both vocabularies are sorted (item codes follow name order, which breaks time ties in the
    evaluation protocol) and every code is used by at least one row of the export they were built
    from. A part of the export (:meth:`take`) keeps the vocabularies whole, so a code means the same
    customer or item everywhere in a run.
    """

    users: np.ndarray  # (n_users,) object: customer ids, sorted
    items: np.ndarray  # (n_items,) object: item names, sorted
    user: np.ndarray  # (rows,) int32 customer code per row
    item: np.ndarray  # (rows,) int32 item code per row
    time: np.ndarray  # (rows,) int64 seconds since 1970-01-01 (the export's wall time)
    rating: np.ndarray  # (rows,) int8, 1 to 5

    @property
    def n_users(self) -> int:
        """Customers in the vocabulary."""
        return len(self.users)

    @property
    def n_items(self) -> int:
        """Items in the vocabulary."""
        return len(self.items)

    def __len__(self) -> int:
        return len(self.user)

    def take(self, rows: np.ndarray) -> "Interactions":
        """The rows selected by ``rows`` (a boolean mask or indices), with the same vocabularies."""
        return Interactions(
            users=self.users, items=self.items,
            user=self.user[rows], item=self.item[rows], time=self.time[rows], rating=self.rating[rows],
        )

    def seen(self) -> sp.csr_matrix:
        """Binary customers × items matrix of what each customer took (rows sorted by item).

        Built once and shared (every model fitted on these rows reads the same matrix): do not
        modify it.
        """
        matrix = self.__dict__.get("_seen")
        if matrix is None:
            matrix = sp.csr_matrix(
                (np.ones(len(self.user), dtype=np.float32), (self.user, self.item)),
                shape=(self.n_users, self.n_items),
            )
            matrix.sum_duplicates()
            matrix.data[:] = 1.0
            object.__setattr__(self, "_seen", matrix)  # a cache, not a field: frozen otherwise
        return matrix

    def seen_by_recency(self, recency: float) -> sp.csr_matrix:
        """:func:`recency_weights` of these rows, built once per ``recency`` and shared like
        :meth:`seen` (EASE and RP3beta, and every setting tuning tries, read the same matrix)."""
        if recency == 1.0:
            return self.seen()
        built = self.__dict__.setdefault("_by_recency", {})
        if recency not in built:
            built[recency] = recency_weights(self, recency)
        return built[recency]

    def forget_by_recency(self) -> None:
        """Drop the matrices :meth:`seen_by_recency` keeps (built again if asked for)."""
        self.__dict__.pop("_by_recency", None)

    def item_counts(self) -> np.ndarray:
        """Rows per item code (0 for an item this part of the export never mentions)."""
        return np.bincount(self.item, minlength=self.n_items)

    def user_codes(self, ids) -> np.ndarray:
        """Code of each customer id, -1 where the id is not in the vocabulary."""
        return _positions(self.users, ids)

    def item_codes(self, names) -> np.ndarray:
        """Code of each item name, -1 where the name is not in the vocabulary."""
        return _positions(self.items, names)

    def to_frame(self):
        """The rows with their names, as a pandas frame (``user_id``, ``item``, ``timestamp``, ``rating``).

        For reports and tests: the nightly path never turns codes back into names row by row.
        """
        import pandas as pd

        return pd.DataFrame(
            {
                "user_id": self.users[self.user].astype(str),
                "item": self.items[self.item].astype(str),
                "timestamp": self.time.astype("datetime64[s]").astype("datetime64[ns]"),
                "rating": self.rating,
            }
        )

    @classmethod
    def from_columns(cls, users, items, times, ratings) -> "Interactions":
        """Encode columns of names (customer ids, item names; any sequence or Arrow array), times
        (datetime64 values, or int64 seconds) and ratings, one entry per row."""
        import pyarrow as pa
        import pyarrow.compute as pc

        def encoded(values):
            array = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(np.asarray(values, dtype=object).astype(str))
            if not pa.types.is_dictionary(array.type):
                array = pc.dictionary_encode(array)
            if isinstance(array, pa.ChunkedArray):
                array = array.unify_dictionaries().combine_chunks()
            return sorted_codes(array)

        user_vocabulary, user = encoded(users)
        item_vocabulary, item = encoded(items)
        times = np.asarray(times)
        seconds = times.astype("datetime64[s]").view(np.int64) if times.dtype.kind == "M" else times.astype(np.int64)
        return cls(
            users=user_vocabulary, items=item_vocabulary, user=user, item=item,
            time=np.ascontiguousarray(seconds, dtype=np.int64), rating=np.asarray(ratings, dtype=np.int8),
        )


def sorted_codes(encoded) -> tuple[np.ndarray, np.ndarray]:
    """A dictionary-encoded Arrow array as (sorted vocabulary of the values rows use, int32 code per row).

    The dictionary is sorted once (a few thousand to a million entries) and the row codes are
    remapped by one take: the rows' strings are never hashed again.
    """
    import pyarrow.compute as pc

    dictionary = encoded.dictionary
    indices = np.asarray(encoded.indices.to_numpy(zero_copy_only=False))
    used = np.bincount(indices, minlength=len(dictionary)) > 0
    order = np.asarray(pc.array_sort_indices(dictionary))
    order = order[used[order]]  # an entry no row uses (possible in a reader's dictionary) is no code
    rank = np.full(len(dictionary), -1, dtype=np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    vocabulary = np.asarray(dictionary.take(order).to_pylist(), dtype=object)
    return vocabulary, rank[indices]


def _positions(vocabulary: np.ndarray, values) -> np.ndarray:
    """Position of each value in a sorted vocabulary, -1 where absent."""
    values = np.asarray(values, dtype=object).astype(str)
    if len(vocabulary) == 0:
        return np.full(len(values), -1, dtype=np.int64)
    strings = vocabulary.astype(str)
    position = np.clip(np.searchsorted(strings, values), 0, len(strings) - 1)
    return np.where(strings[position] == values, position, -1).astype(np.int64)


def lex_order(*keys: np.ndarray) -> np.ndarray:
    """Indices that sort rows by ``keys`` (integer arrays, the first one most significant), stably.

    The same order as ``np.lexsort(keys[::-1])``, but when the keys' value ranges fit in 63 bits
    together they are packed into one int64 and sorted once, which is several times faster on
    tens of millions of rows.
    """
    if len(keys[0]) == 0:
        return np.zeros(0, dtype=np.int64)
    lows = [int(key.min()) for key in keys]
    spans = [int(key.max()) - low + 1 for key, low in zip(keys, lows)]
    if int(np.prod([float(span) for span in spans])) >= 2**62:
        return np.lexsort(keys[::-1])
    packed = np.zeros(len(keys[0]), dtype=np.int64)
    for key, low, span in zip(keys, lows, spans):
        packed *= span
        packed += np.asarray(key, dtype=np.int64) - low
    return np.argsort(packed, kind="stable")


Pairs = tuple[np.ndarray, np.ndarray, np.ndarray]  # (user, item, time of the last interaction), by (user, item)
PairTimes = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # (user, item, first time, last time)


def pair_times(data: Interactions) -> PairTimes:
    """Each (user, item) once, ordered by (user, item): user, item, first and last interaction time."""
    key = data.user.astype(np.int64) * data.n_items + data.item
    order = lex_order(key, data.time)
    key = key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, dtype=np.int64)
    ends = np.r_[starts[1:], len(key)] - 1 if len(key) else starts
    chosen = order[starts]
    return data.user[chosen], data.item[chosen], data.time[chosen], data.time[order[ends]]


def distinct_pairs(data: Interactions, times: PairTimes | None = None) -> Pairs:
    """Each (user, item) once, with the time of its last interaction (from ``times`` if given)."""
    users, items, _, last = times if times is not None else pair_times(data)
    return users, items, last


def user_histories(data: Interactions, length: int, pairs: Pairs | None = None) -> np.ndarray:
    """Each user's most recent distinct items, newest first, padded with ``n_items``.

    ``pairs``: ``distinct_pairs(data)`` when the caller has it already.
    """
    users, items, times = pairs if pairs is not None else distinct_pairs(data)
    order = lex_order(users, -times)
    users, items = users[order], items[order]
    starts = np.searchsorted(users, np.arange(data.n_users))
    position = np.arange(len(users)) - starts[users]
    keep = position < length
    history = np.full((data.n_users, length), data.n_items, dtype=np.int32)
    history[users[keep], position[keep]] = items[keep]
    return history


def checked_recency(recency: float) -> float:
    """``recency`` as a float, or a ValueError when it is outside (0, 1]."""
    if not 0.0 < recency <= 1.0:
        raise ValueError(f"recency must be in (0, 1], got {recency}")
    return float(recency)


def recency_weights(data: Interactions, recency: float) -> sp.csr_matrix:
    """Customers × items like :meth:`Interactions.seen`, each customer's items weighted by how
    recently the customer took them: ``recency ** n`` for an item when the customer last took
    their other items at ``n`` distinct times after its own last time (the latest item 1, the one
    before it ``recency``, ...; items last taken at the same time weigh the same). ``recency`` in
    (0, 1]."""
    recency = checked_recency(recency)
    users, items, times = distinct_pairs(data)
    if len(users) == 0:
        return sp.csr_matrix((data.n_users, data.n_items), dtype=np.float32)
    order = lex_order(users, -times)
    users, items, times = users[order], items[order], times[order]
    same_user = np.r_[False, users[1:] == users[:-1]]
    steps = np.cumsum(same_user & np.r_[False, times[1:] != times[:-1]])
    starts = np.searchsorted(users, users)  # the first pair of each pair's customer
    newer = steps - steps[starts]
    weights = np.power(np.float32(recency), newer.astype(np.float32))
    matrix = sp.csr_matrix((weights, (users, items)), shape=(data.n_users, data.n_items), dtype=np.float32)
    matrix.sort_indices()
    return matrix


def item_popularity(data: Interactions, since: int | None = None, pairs: Pairs | None = None, dtype=np.float64) -> np.ndarray:
    """Distinct users per item, counting only interactions at or after ``since`` (seconds) if given."""
    _, items, last = pairs if pairs is not None else distinct_pairs(data)
    # A pair has an interaction at or after ``since`` exactly when its last one is.
    counted = items if since is None else items[last >= since]
    return np.bincount(counted, minlength=data.n_items).astype(dtype)


def recent_popularity(data: Interactions, days: float, pairs: Pairs | None = None, dtype=np.float64) -> np.ndarray:
    """Distinct users per item in the trailing ``days`` before the last interaction, ties by all time.

    The all-time count, scaled below 1 in total, only orders items with equal recent counts (and
    items with no recent activity), so a list built from it is always full. ``dtype``: float64 by
    default (at a million customers float32 cannot hold the tie-break next to counts of 100,000);
    the ranking features ask for float32, the precision they are computed in.
    """
    if len(data.time) == 0:
        return np.zeros(data.n_items, dtype=dtype)
    pairs = pairs if pairs is not None else distinct_pairs(data)
    recent = item_popularity(data, since=int(data.time.max()) - int(days * DAY), pairs=pairs, dtype=dtype)
    overall = item_popularity(data, pairs=pairs, dtype=dtype)
    return recent + overall / (overall.max() + 1.0)
