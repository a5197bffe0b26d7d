"""Block-wise top-k selection over dense score blocks, with already-seen items masked out.

Pure numpy/scipy so that every scorer (the baselines, the TFRS retrieval scoring) shares one
definition of "top k": scores sorted descending, exact ties broken by the lower item index, and
items that cannot be recommended (seen, or masked by the caller with ``-inf``) reported as index
``-1`` with score ``-inf`` rather than silently filling the list.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import scipy.sparse as sp

#: Target number of float64 cells in one dense score block (about 128 MB).
DEFAULT_BLOCK_CELLS = 1 << 24


def block_rows(n_items: int, block_cells: int = DEFAULT_BLOCK_CELLS) -> int:
    """Rows per dense score block so that one block holds about ``block_cells`` scores."""
    return max(1, block_cells // max(1, n_items))


def iter_blocks(n_rows: int, rows_per_block: int) -> Iterator[slice]:
    """Yield consecutive row slices of at most ``rows_per_block`` rows covering ``range(n_rows)``."""
    for start in range(0, n_rows, rows_per_block):
        yield slice(start, min(start + rows_per_block, n_rows))


def top_k_excluding(
    scores: np.ndarray, seen: sp.spmatrix | sp.sparray | np.ndarray | None, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` item indices and scores of every row of a dense score block.

    ``scores`` is ``(n_rows, n_items)``; ``seen`` is a sparse matrix or boolean array of the same
    shape whose non-zero cells are excluded (or ``None``). The block is modified in place only if
    it is already float64 and writeable; pass a copy when the caller still needs it.

    Returns ``(indices, values)``, both ``(n_rows, k)``, sorted by descending score; exact ties are
    broken by the lower item index so results are deterministic. Where fewer than ``k`` items are
    eligible the tail is padded with index ``-1`` and score ``-inf``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D, got shape {scores.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n_rows, n_items = scores.shape
    if not scores.flags.writeable:
        scores = scores.copy()
    if seen is not None:
        if sp.issparse(seen):
            coo = sp.coo_matrix(seen)
            nz = coo.data != 0
            scores[coo.row[nz], coo.col[nz]] = -np.inf
        else:
            scores[np.asarray(seen, dtype=bool)] = -np.inf
    # NaN would break the threshold comparisons below; a NaN score means "cannot rank".
    scores[np.isnan(scores)] = -np.inf

    kk = min(k, n_items)
    if n_rows == 0 or kk == 0:
        idx = np.full((n_rows, k), -1, dtype=np.int64)
        return idx, np.full((n_rows, k), -np.inf)

    # k-th largest score per row; everything strictly above it is in, and the remaining slots go
    # to the lowest-index items that tie with it. argpartition alone would pick among boundary
    # ties arbitrarily, which makes rankings differ between runs and block sizes.
    threshold = np.partition(scores, n_items - kk, axis=1)[:, n_items - kk]
    above = scores > threshold[:, None]
    at = scores == threshold[:, None]
    need = kk - above.sum(axis=1)
    # Only rows with more boundary ties than free slots need the (costly) running count.
    over = at.sum(axis=1) > need
    if over.any():
        sub = at[over]
        at[over] = sub & (np.cumsum(sub, axis=1) <= need[over, None])
    take = above | at
    rows, cols = np.nonzero(take)  # row-major, so each row's kk columns are contiguous
    cols = cols.reshape(n_rows, kk)
    vals = scores[rows, cols.ravel()].reshape(n_rows, kk)
    # Stable sort on the negated score keeps ascending item index among equal scores.
    order = np.argsort(-vals, axis=1, kind="stable")
    cols = np.take_along_axis(cols, order, axis=1)
    vals = np.take_along_axis(vals, order, axis=1)

    idx = np.full((n_rows, k), -1, dtype=np.int64)
    out = np.full((n_rows, k), -np.inf)
    idx[:, :kk] = cols
    out[:, :kk] = vals
    idx[~np.isfinite(out) & (out < 0)] = -1
    return idx, out


def blockwise_top_k(
    score_block: Callable[[slice], np.ndarray],
    n_rows: int,
    n_items: int,
    k: int,
    seen: sp.spmatrix | sp.sparray | None = None,
    block_cells: int = DEFAULT_BLOCK_CELLS,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` for ``n_rows`` rows whose scores are produced block by block.

    ``score_block(rows)`` returns the dense ``(len(rows), n_items)`` scores for the row slice
    ``rows``; ``seen`` (CSR, ``n_rows x n_items``) marks cells to exclude. Only one block is
    materialised at a time, so memory stays bounded by ``block_cells`` whatever ``n_rows`` is.
    Returns ``(indices, values)`` as :func:`top_k_excluding` does.
    """
    idx = np.full((n_rows, k), -1, dtype=np.int64)
    vals = np.full((n_rows, k), -np.inf)
    seen_csr = sp.csr_matrix(seen) if seen is not None else None
    for rows in iter_blocks(n_rows, block_rows(n_items, block_cells)):
        block = np.array(score_block(rows), dtype=np.float64, copy=True)
        if block.shape != (rows.stop - rows.start, n_items):
            raise ValueError(f"score_block returned shape {block.shape} for rows {rows}")
        block_seen = seen_csr[rows] if seen_csr is not None else None
        idx[rows], vals[rows] = top_k_excluding(block, block_seen, k)
    return idx, vals


def sparse_top_k(
    product: sp.spmatrix | sp.sparray, base: np.ndarray, seen: sp.spmatrix | sp.sparray | None, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_k_excluding` of the scores ``product.toarray() + base`` (``base``: one score per
    column, added to every row), without the dense block: the same items, scores, ties and padding.

    An item-item model's product reaches a few thousand of a large catalogue's items per customer;
    every other item scores just its ``base``. So the ``k`` best of a row are among its stored cells
    and the ``k`` best of its other eligible items by ``base`` (ties to the lower item), and only
    those are ranked. ``seen`` (CSR, the product's shape) marks cells to exclude.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    product = sp.csr_matrix(product, dtype=np.float64)
    if not product.has_canonical_format:  # sorted columns, one cell per (row, column), as ``toarray`` adds them
        product = product.copy()
        product.sum_duplicates()
    n_rows, n_items = product.shape
    base = np.asarray(base, dtype=np.float64).ravel()
    if base.shape != (n_items,):
        raise ValueError(f"base must have {n_items} values, got {base.shape}")
    if n_rows == 0 or n_items == 0:
        return np.full((n_rows, k), -1, dtype=np.int64), np.full((n_rows, k), -np.inf)
    cell_rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(product.indptr))
    cell_keys = cell_rows * n_items + product.indices
    seen_keys = _cell_keys(seen, n_items) if seen is not None else np.empty(0, dtype=np.int64)
    stored = ~_member(cell_keys, seen_keys)
    # The other items by base, best first, ties to the lower item; NaN and -inf are never eligible.
    eligible = np.flatnonzero(~np.isnan(base) & (base > -np.inf))
    order = eligible[np.lexsort((eligible, -base[eligible]))]
    # A row with k stored cells above every base needs no other item (the usual case).
    cell_values = product.data + base[product.indices]
    best_base = base[order[0]] if len(order) else -np.inf
    above = np.bincount(cell_rows[stored & (cell_values > best_base)], minlength=n_rows)
    needy = np.flatnonzero(above < k)
    rows, items, values = cell_rows[stored], product.indices[stored].astype(np.int64), cell_values[stored]
    if len(needy):
        excluded = np.sort(np.concatenate([cell_keys, seen_keys]))
        fill_rows, fill_items = _first_free(order, excluded, needy, n_items, k)
        rows = np.concatenate([rows, fill_rows])
        items = np.concatenate([items, fill_items])
        values = np.concatenate([values, base[fill_items]])
        by_item = np.lexsort((items, rows))  # each row's candidates in item order: ties go to the lower item
        rows, items, values = rows[by_item], items[by_item], values[by_item]
    return ragged_top_k(rows, items, values, n_rows, k)


def ragged_top_k(
    rows: np.ndarray, columns: np.ndarray, values: np.ndarray, n_rows: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` of rows given as candidate cells (``rows`` ascending, each row's ``columns``
    ascending): (columns, values), both ``(n_rows, k)``, as :func:`top_k_excluding` orders and pads
    them (ties to the lower column). Each row's candidates are laid side by side in one block."""
    counts = np.bincount(rows, minlength=n_rows)
    width = max(int(counts.max(initial=0)), 1)
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    block = np.full((n_rows, width), -np.inf)
    placed = np.full((n_rows, width), -1, dtype=np.int64)
    block[rows, slot], placed[rows, slot] = values, columns
    picked, out = top_k_excluding(block, None, k)
    return np.where(picked >= 0, np.take_along_axis(placed, np.maximum(picked, 0), axis=1), -1), out


def _cell_keys(matrix: sp.spmatrix | sp.sparray, n_columns: int) -> np.ndarray:
    """``row * n_columns + column`` of each non-zero cell, sorted."""
    csr = sp.csr_matrix(matrix, copy=True)
    csr.sum_duplicates()
    csr.eliminate_zeros()
    return np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr)) * n_columns + csr.indices


def _member(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Which of ``keys`` are in ``sorted_keys``."""
    if len(sorted_keys) == 0:
        return np.zeros(keys.shape, dtype=bool)
    position = np.clip(np.searchsorted(sorted_keys, keys), 0, len(sorted_keys) - 1)
    return sorted_keys[position] == keys


def _first_free(
    order: np.ndarray, excluded: np.ndarray, rows: np.ndarray, n_items: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``rows``, the first ``k`` items of ``order`` whose cell is not in ``excluded``
    (sorted keys), as (rows, items). Reads a prefix of ``order``, longer only for the rows that need it."""
    out_rows, out_items = [], []
    todo = np.asarray(rows, dtype=np.int64)
    length = min(len(order), k + 16)
    while len(todo) and length:
        prefix = order[:length]
        free = ~_member(todo[:, None] * n_items + prefix[None, :], excluded)
        counts = free.sum(axis=1)
        done = (counts >= k) | (length == len(order))
        take = free[done] & (np.cumsum(free[done], axis=1) <= k)
        where_rows, where_slots = np.nonzero(take)
        out_rows.append(todo[done][where_rows])
        out_items.append(prefix[where_slots])
        todo = todo[~done]
        length = min(len(order), 2 * length)
    if not out_rows:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.concatenate(out_rows), np.concatenate(out_items).astype(np.int64)


def blockwise_sparse_top_k(
    product_block: Callable[[slice], sp.spmatrix],
    n_rows: int,
    base: np.ndarray,
    k: int,
    seen: sp.spmatrix | sp.sparray | None = None,
    block_cells: int = DEFAULT_BLOCK_CELLS,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`blockwise_top_k` for scores ``product + base`` whose ``product`` is sparse
    (``product_block(rows)``: the rows' CSR product), one block of rows at a time, through
    :func:`sparse_top_k`: the same lists without a dense block."""
    idx = np.full((n_rows, k), -1, dtype=np.int64)
    vals = np.full((n_rows, k), -np.inf)
    seen_csr = sp.csr_matrix(seen) if seen is not None else None
    for rows in iter_blocks(n_rows, block_rows(len(base), block_cells)):
        block_seen = seen_csr[rows] if seen_csr is not None else None
        idx[rows], vals[rows] = sparse_top_k(product_block(rows), base, block_seen, k)
    return idx, vals


def top_k_shared_excluding(
    item_scores: np.ndarray,
    seen: sp.spmatrix | sp.sparray,
    k: int,
    block_cells: int = DEFAULT_BLOCK_CELLS,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` per row when every row shares one score vector, minus each row's seen items.

    A non-personal ranking (popularity) needs, for a user who has seen ``s`` items, only the
    global top ``k + s``: rows are processed in order of their seen count with exactly that many
    candidate columns, so the cost scales with ``n_rows * (k + s)`` instead of
    ``n_rows * n_items``. ``seen`` is CSR ``n_rows x len(item_scores)``. Results, ties and padding
    are as in :func:`top_k_excluding`.
    """
    item_scores = np.asarray(item_scores, dtype=np.float64).ravel()
    n_items = item_scores.size
    seen_csr = sp.csr_matrix(seen)
    n_rows = seen_csr.shape[0]
    idx = np.full((n_rows, k), -1, dtype=np.int64)
    vals = np.full((n_rows, k), -np.inf)
    if n_rows == 0 or n_items == 0:
        return idx, vals
    ranking, _ = top_k_excluding(item_scores[None, :].copy(), None, n_items)
    # Items scored -inf (never recommendable) are not in the ranking at all.
    ranking = ranking[0][ranking[0] >= 0]
    n_ranked = len(ranking)
    if n_ranked == 0:
        return idx, vals
    n_seen = np.diff(seen_csr.indptr)
    by_seen = np.argsort(n_seen, kind="stable")
    width = np.minimum(n_ranked, k + n_seen[by_seen])  # candidates each row needs, in block order
    start = 0
    while start < n_rows:
        stop = min(n_rows, start + max(1, block_cells // int(width[start])))
        # Rows are sorted by seen count, so the block's last row needs the most candidates, and
        # the whole block gets that width: shrink it until that fits the budget too.
        while stop - start > 1 and (stop - start) * int(width[stop - 1]) > block_cells:
            stop = start + (stop - start) // 2
        m = int(width[stop - 1])
        rows = by_seen[start:stop]
        candidates = ranking[:m]
        block_seen = seen_csr[rows][:, candidates]
        block = np.broadcast_to(item_scores[candidates], (len(rows), m)).copy()
        b_idx, b_val = top_k_excluding(block, block_seen, k)
        ok = b_idx >= 0
        b_idx[ok] = candidates[b_idx[ok]]
        idx[rows], vals[rows] = b_idx, b_val
        start = stop
    return idx, vals


#: Items per group in :func:`top_k_dot` (its group maxima are one cheap pass over a score block).
DOT_GROUP = 32
#: Customers per score block in :func:`top_k_dot`: a block of 20,000 items stays in the CPU cache.
DOT_BLOCK = 256


def top_k_dot(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    k: int,
    seen: sp.csr_matrix | None = None,
    threads: int | None = None,
    block: int = DOT_BLOCK,
    blocked: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top ``k`` items by dot product for every user, skipping ``seen`` (CSR users × items)
    and the item codes ``blocked`` (for everyone).

    Returns ``(indices, scores)`` ``(n_users, k)`` (int64, float32), sorted by descending score,
    ties to the lower item index, ``-1``/``-inf`` where fewer than ``k`` items are eligible.

    A full sort or ``argpartition`` of each row costs several times the matrix product itself, so
    selection works on groups of items: the maximum of every group (one pass), the ``k``-th largest
    group maximum ``t`` (which can never exceed the ``k``-th largest score, since ``k`` groups reach
    it), then only the groups whose maximum is at least ``t`` (about ``k`` of them) are read again
    to collect the few scores ``>= t``, of which the best ``k`` are exact. Blocks of ``block``
    users run on ``threads`` threads (default: every core), each with one-thread BLAS and its own
    score buffer, so no block allocates memory in the loop.
    """
    from concurrent.futures import ThreadPoolExecutor

    users = np.ascontiguousarray(user_vectors, dtype=np.float32)
    n_users, n_items = len(users), len(item_vectors)
    k = min(k, n_items) if n_items else k
    indices = np.full((n_users, k), -1, dtype=np.int64)
    scores = np.full((n_users, k), -np.inf, dtype=np.float32)
    if n_users == 0 or n_items == 0:
        return indices, scores
    groups = -(-n_items // DOT_GROUP)
    padded = groups * DOT_GROUP
    matrix = np.zeros((item_vectors.shape[1], padded), dtype=np.float32)
    matrix[:, :n_items] = np.asarray(item_vectors, dtype=np.float32).T
    seen = sp.csr_matrix(seen) if seen is not None else None
    threads = max(1, min(threads or os.cpu_count() or 1, -(-n_users // block)))
    buffers = queue.SimpleQueue()
    for _ in range(threads):
        buffers.put(np.empty((block, padded), dtype=np.float32))

    def run(start: int) -> None:
        buffer = buffers.get()
        try:
            stop = min(start + block, n_users)
            block_seen = seen[start:stop] if seen is not None else None
            out = _top_k_block(users[start:stop], matrix, n_items, k, block_seen, buffer[: stop - start], blocked)
            indices[start:stop], scores[start:stop] = out
        finally:
            buffers.put(buffer)

    with one_blas_thread():
        if threads == 1:
            for start in range(0, n_users, block):
                run(start)
        else:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(run, range(0, n_users, block)))
    return indices, scores


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limits = None


@contextmanager
def one_blas_thread():
    """Hold BLAS to one thread while any caller is inside (the limit is process-wide, so it is
    counted: concurrent scoring shards on threads must not restore it under each other)."""
    global _blas_users, _blas_limits
    from threadpoolctl import threadpool_limits

    with _blas_lock:
        if _blas_users == 0:
            _blas_limits = threadpool_limits(1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limits is not None:
                _blas_limits.restore_original_limits()
                _blas_limits = None


def _top_k_block(
    users: np.ndarray,
    matrix: np.ndarray,
    n_items: int,
    k: int,
    seen: sp.csr_matrix | None,
    scores: np.ndarray,
    blocked: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_k_dot` for one block of users; ``scores`` is a reusable (len(users), padded) buffer."""
    b, padded = scores.shape
    np.matmul(users, matrix, out=scores)
    scores[:, n_items:] = -np.inf
    if blocked is not None and len(blocked):
        scores[:, blocked] = -np.inf
    if seen is not None and seen.nnz:
        mask = seen.tocoo()
        scores[mask.row, mask.col] = -np.inf
    groups = padded // DOT_GROUP
    if groups <= 2 * k:
        # A small catalogue: sorting whole rows is cheap, and grouping would not prune anything.
        return _sorted_top(scores[:, :n_items].copy(), np.arange(n_items), k)
    # Group g holds items g, g + groups, g + 2*groups, ...: its maximum is a reduction over the
    # block's outer axis, which vectorises (a reduction over 32 adjacent columns does not).
    maxima = np.maximum.reduce(scores.reshape(b, DOT_GROUP, groups), axis=1)
    if np.isnan(maxima).any():  # a diverged model: NaN cannot be ranked, treat it as "no item"
        scores[np.isnan(scores)] = -np.inf
        maxima = np.maximum.reduce(scores.reshape(b, DOT_GROUP, groups), axis=1)
    threshold = np.partition(maxima, groups - k, axis=1)[:, groups - k]
    # Every group holding a score >= threshold has its maximum >= threshold: take all such groups.
    wide = int((maxima >= threshold[:, None]).sum(axis=1).max())
    if wide < groups:
        chosen = np.sort(np.argpartition(maxima, groups - wide, axis=1)[:, groups - wide :], axis=1)
    else:
        chosen = np.broadcast_to(np.arange(groups), (b, groups))
    # Columns laid out offset-major (item g + groups*r for r, then g ascending): with the groups
    # sorted they ascend along each row, so the hits come out in item order and one stable sort
    # by score breaks ties by the lower item.
    columns = (groups * np.arange(DOT_GROUP)[:, None] + chosen[:, None, :]).reshape(b, -1)
    values = np.take(scores.ravel(), columns + (np.arange(b) * padded)[:, None])
    hits = np.flatnonzero(values >= threshold[:, None])
    rows = hits // values.shape[1]
    counts = np.bincount(rows, minlength=b)
    width = max(int(counts.max()), k)
    slot = np.arange(len(hits)) - np.repeat(np.cumsum(counts) - counts, counts)
    short_values = np.full((b, width), -np.inf, dtype=np.float32)
    short_columns = np.full((b, width), padded, dtype=np.int64)  # padding sorts after every item
    short_values[rows, slot] = values.ravel()[hits]
    short_columns[rows, slot] = columns.ravel()[hits]
    return _sorted_top(short_values, short_columns, k)


def _sorted_top(values: np.ndarray, columns: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` of each row of ``values`` (columns ascending within a row, so ties go to the lower column)."""
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(values, order, 1)
    picked = np.broadcast_to(columns, values.shape) if columns.ndim == 1 else columns
    picked = np.take_along_axis(picked, order, 1)
    finite = np.isfinite(top)
    return np.where(finite, picked, -1), np.where(finite, top, np.float32(-np.inf))
