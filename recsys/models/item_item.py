"""Item × item matrices built a block of items at a time, each item's strongest neighbours kept.

The cosine similarity of item-kNN and of the ranking stage's co-occurrence features, and the
two-step random walk of RP3beta, are all ``left @ right`` with ``left`` items × customers and
``right`` customers × items: a catalogue of tens of thousands of items never needs the full
items × items product in memory, only one block of rows at a time. The next-item shares of the
Markov-chain baseline and of the ranking stage count consecutive items instead, straight into a
sparse matrix.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.data.interactions import lex_order

BLOCK_ITEMS = 2048


def item_item(
    left: sp.csr_matrix,
    right: sp.csr_matrix,
    neighbours: int | None,
    column_scale: np.ndarray | None = None,
    block: int = BLOCK_ITEMS,
    dtype=np.float32,
) -> sp.csr_matrix:
    """``left @ right`` (items × items), columns times ``column_scale``, zero diagonal, and in each
    row only the ``neighbours`` largest positive values (all of them when ``neighbours`` is None)."""
    return item_item_scaled(left, right, neighbours, [column_scale], block, dtype)[0]


def item_item_scaled(
    left: sp.csr_matrix,
    right: sp.csr_matrix,
    neighbours: int | None,
    column_scales: list[np.ndarray | None],
    block: int = BLOCK_ITEMS,
    dtype=np.float32,
) -> list[sp.csr_matrix]:
    """:func:`item_item` for several column scalings at once: the product is computed once."""
    n_items = right.shape[1]
    keep = n_items if neighbours is None else min(neighbours, max(n_items - 1, 1))
    left = sp.csr_matrix(left, dtype=dtype)
    right = sp.csr_matrix(right, dtype=dtype)
    parts = [([], [], []) for _ in column_scales]
    for start in range(0, n_items, block):
        stop = min(start + block, n_items)
        product = (left[start:stop] @ right).toarray()
        product[np.arange(stop - start), np.arange(start, stop)] = 0.0
        for scale, (rows, cols, values) in zip(column_scales, parts):
            dense = product * scale[None, :].astype(dtype) if scale is not None else product
            if keep < n_items:
                top = np.argpartition(-dense, keep - 1, axis=1)[:, :keep]
            else:
                top = np.broadcast_to(np.arange(n_items), (stop - start, n_items))
            picked = np.take_along_axis(dense, top, axis=1)
            positive = picked > 0
            rows.append(np.nonzero(positive)[0] + start)
            cols.append(top[positive])
            values.append(picked[positive])
    return [
        sp.csr_matrix(
            (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(n_items, n_items), dtype=dtype
        )
        for rows, cols, values in parts
    ]


def cosine_neighbours(seen: sp.csr_matrix, neighbours: int | None, dtype=np.float32) -> sp.csr_matrix:
    """Cosine similarity of items by the customers they share (zero diagonal), each item's top
    ``neighbours`` kept (``seen``: the binary customers × items matrix)."""
    item_users = seen.T.tocsr().astype(dtype)
    norms = np.sqrt(np.asarray(item_users.multiply(item_users).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    scaled = sp.diags(1.0 / norms).astype(dtype) @ item_users
    return item_item(scaled, scaled.T.tocsr(), neighbours, dtype=dtype)


def next_item_shares(
    pair_user: np.ndarray, pair_item: np.ndarray, first_time: np.ndarray, n_items: int, neighbours: int | None = None
) -> sp.csr_matrix:
    """How often each item came right after another: for items i, j, the customers whose next new
    item after i was j, divided by (the customers with any next item after i + 1), so an item
    followed once is not "always followed by" its one successor. Each customer's distinct items are
    ordered by first time (ties by code); each item's top ``neighbours`` successors are kept, 200 for
    catalogues up to 2,000 items, 50 above (the rule of the co-occurrence features).
    """
    if neighbours is None:
        neighbours = 200 if n_items <= 2000 else 50
    order = lex_order(pair_user, first_time, pair_item)
    user, item = pair_user[order], pair_item[order]
    follows = np.flatnonzero(user[1:] == user[:-1])
    counts = sp.csr_matrix(
        (np.ones(len(follows), dtype=np.float32), (item[follows], item[follows + 1])), shape=(n_items, n_items)
    )
    counts.sum_duplicates()
    totals = np.asarray(counts.sum(axis=1)).ravel()
    shares = (sp.diags((1.0 / (totals + 1.0)).astype(np.float32)) @ counts).tocsr()
    return _strongest(shares, neighbours)


def _strongest(matrix: sp.csr_matrix, keep: int) -> sp.csr_matrix:
    """``matrix`` with only each row's ``keep`` largest values."""
    lengths = np.diff(matrix.indptr)
    if lengths.max(initial=0) <= keep:
        return matrix
    row = np.repeat(np.arange(matrix.shape[0]), lengths)
    order = np.lexsort((-matrix.data, row))
    rank = np.arange(len(order)) - matrix.indptr[row[order]]
    kept = order[rank < keep]
    return sp.csr_matrix((matrix.data[kept], (row[kept], matrix.indices[kept])), shape=matrix.shape, dtype=matrix.dtype)


def gather(matrix: sp.spmatrix, columns: np.ndarray) -> np.ndarray:
    """``matrix[r, columns[r, j]]`` for every row ``r`` (0 where the sparse matrix holds nothing)."""
    matrix = sp.csr_matrix(matrix)
    matrix.sort_indices()
    n_columns = matrix.shape[1]
    owner = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    keys = owner * n_columns + matrix.indices
    wanted = np.arange(len(columns), dtype=np.int64)[:, None] * n_columns + columns
    if len(keys) == 0:
        return np.zeros(columns.shape, dtype=matrix.dtype)
    position = np.clip(np.searchsorted(keys, wanted), 0, len(keys) - 1)
    return np.where(keys[position] == wanted, matrix.data[position], 0.0).astype(matrix.dtype)
