"""Why each item is in a list, as small integer codes turned into text only when publishing.

Codes: ``POPULAR`` "popular lately", ``NEW`` "new in the catalogue", ``CAMPAIGN`` "campaign",
and ``HISTORY + j`` "because you redeemed <item j>". In order of precedence: a pinned item is a
campaign; an item new in the catalogue (``recsys.scoring.rules.NEW_DAYS``) says so; otherwise the
customer's past item most similar to it (the largest item-item similarity, ties to the lower item
code) is the reason, when any of them is similar at all; otherwise it is popular lately.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.models.item_item import gather

POPULAR, NEW, CAMPAIGN, HISTORY = 0, 1, 2, 3
FIXED = ("popular lately", "new in the catalogue", "campaign")
BECAUSE = "because you redeemed "


def reason_vocabulary(items) -> list[str]:
    """The text of every reason code, for the item vocabulary ``items``."""
    return [*FIXED, *(BECAUSE + str(name) for name in items)]


def reason_codes(
    items: np.ndarray,
    seen: sp.csr_matrix,
    similarity: sp.csr_matrix | None,
    new: np.ndarray | None = None,
    pinned: np.ndarray | None = None,
) -> np.ndarray:
    """Reason codes ``(b, k)`` int32 of the lists ``items`` (-1: none) of customers who had
    ``seen`` (b × n_items); ``similarity`` (items × items) None: no personal reason."""
    items = np.asarray(items, dtype=np.int64)
    codes = np.full(items.shape, POPULAR, dtype=np.int32)
    b = len(items)
    if similarity is not None and b and items.size:
        seen = sp.csr_matrix(seen)
        seen.sort_indices()
        similarity = sp.csr_matrix(similarity)
        # Customers in groups whose past items' similarity rows hold at most about SIMILARITY_CELLS
        # values: a block of a million customers' lists would otherwise copy every row at once.
        owner = np.repeat(np.arange(b), np.diff(seen.indptr))
        cost = np.bincount(owner, weights=np.diff(similarity.indptr)[seen.indices], minlength=b)
        group = np.cumsum(cost) // SIMILARITY_CELLS
        bounds = np.r_[0, np.flatnonzero(np.diff(group)) + 1, b]
        for start, stop in zip(bounds[:-1], bounds[1:]):
            _personal(items[start:stop], seen[start:stop], similarity, codes[start:stop])
    if new is not None:
        codes[(items >= 0) & new[np.maximum(items, 0)]] = NEW
    if pinned is not None:
        codes[pinned] = CAMPAIGN
    codes[items < 0] = POPULAR
    return codes


#: About how many similarity values one group of customers reads at once (``reason_codes``).
SIMILARITY_CELLS = 1 << 23


def _personal(items: np.ndarray, seen: sp.csr_matrix, similarity: sp.csr_matrix, codes: np.ndarray) -> None:
    """Set ``codes`` (in place) to each list item's most similar past item (``HISTORY + j``) where
    there is one."""
    counts = np.diff(seen.indptr)
    history = seen.indices.astype(np.int64)
    if not len(history):
        return
    owner = np.repeat(np.arange(len(items)), counts)
    # One row per (customer, past item): that item's similarity to each of the list's items.
    values = gather(similarity[history], np.maximum(items[owner], 0)).astype(np.float64)
    has = counts > 0
    starts = seen.indptr[:-1][has]
    best = np.maximum.reduceat(values, starts, axis=0)
    segment = np.repeat(np.arange(len(starts)), counts[has])
    position = np.arange(len(history))[:, None]
    first = np.minimum.reduceat(np.where((values == best[segment]) & (values > 0), position, len(history)), starts, axis=0)
    codes[has] = np.where(first < len(history), HISTORY + history[np.minimum(first, len(history) - 1)], POPULAR)
