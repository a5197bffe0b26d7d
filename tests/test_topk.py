"""The grouped exact top-k of dot products (retrieval candidates) against a brute-force sort."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.scoring.topk import top_k_dot


def exact(values: np.ndarray) -> np.ndarray:
    """Values rounded to quarters: their dot products (16 terms) are exact in float32 whatever order
    a BLAS kernel sums them in, so ties are real ties on every machine and every block shape."""
    return (np.round(values * 4) / 4).astype(np.float32)


def brute(users, items, k, seen=None):
    """Reference: full scores, seen masked, stable sort (ties to the lower item index)."""
    scores = (users @ items.T).astype(np.float32)
    if seen is not None:
        scores[seen.toarray().astype(bool)] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(scores, order, 1)
    return np.where(np.isfinite(top), order, -1), top


@pytest.mark.parametrize("n_items", [50, 3000, 20_011])
@pytest.mark.parametrize("threads", [1, 2])
def test_top_k_dot_matches_a_full_sort(n_items, threads):
    rng = np.random.default_rng(n_items)
    users = exact(rng.standard_normal((700, 16)))
    # Popularity-like skew: a few items score high for everyone, as trained embeddings do.
    items = exact(np.clip(rng.standard_normal((n_items, 16)) * (1 + rng.pareto(2.0, (n_items, 1))), -16, 16))
    seen = sp.random(700, n_items, density=min(0.3, 40 / n_items), format="csr", random_state=1)
    seen.data[:] = 1
    got = top_k_dot(users, items, 40, seen, threads=threads, block=128)
    want = brute(users, items, 40, seen)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert not (seen[np.arange(700)[:, None], np.maximum(got[0], 0)].toarray() * (got[0] >= 0)).any()


def test_top_k_dot_ties_go_to_the_lower_item_and_short_rows_are_padded():
    rng = np.random.default_rng(0)
    base = exact(rng.standard_normal((600, 8)))
    items = np.repeat(base, 10, axis=0)  # every vector ten times: every score ties ten ways
    users = exact(rng.standard_normal((300, 8)))
    seen = sp.lil_matrix((300, len(items)))
    seen[0, 10:] = 1  # user 0 may only get items 0..9
    seen = seen.tocsr()
    got_items, got_scores = top_k_dot(users, items, 25, seen, block=64)
    want_items, want_scores = brute(users, items, 25, seen)
    np.testing.assert_array_equal(got_items, want_items)
    np.testing.assert_array_equal(got_scores, want_scores)
    assert (got_items[0, :10] == np.arange(10)[np.argsort(-(users[0] @ items[:10].T), kind="stable")]).all()
    assert (got_items[0, 10:] == -1).all() and np.isneginf(got_scores[0, 10:]).all()


def test_top_k_dot_treats_nan_as_no_item_and_handles_empty_inputs():
    rng = np.random.default_rng(3)
    users = rng.standard_normal((10, 4)).astype(np.float32)
    items = rng.standard_normal((5000, 4)).astype(np.float32)
    items[7] = np.nan
    got_items, got_scores = top_k_dot(users, items, 30)
    assert not (got_items == 7).any() and np.isfinite(got_scores).all()
    empty_items, empty_scores = top_k_dot(users[:0], items, 30)
    assert empty_items.shape == (0, 30) and empty_scores.shape == (0, 30)
    none_items, _ = top_k_dot(users, items[:0], 30)
    assert (none_items == -1).all()


def test_the_shared_top_k_keeps_every_block_within_its_budget(monkeypatch):
    """Rows are taken in order of how much they have seen: a block sized for its first (light) row
    must not hold its last (heavy) row's width for every row. At a million customers that block
    was all of them times the heaviest customer's width: 2 GB of scores at once."""
    import recsys.scoring.topk as topk

    rng = np.random.default_rng(0)
    n_rows, n_items, k, budget = 5000, 400, 12, 20_000
    counts = np.where(rng.random(n_rows) < 0.01, 300, 1)  # a few heavy customers, many light ones
    rows = np.repeat(np.arange(n_rows), counts)
    cols = np.concatenate([rng.choice(n_items, c, replace=False) for c in counts])
    seen = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_rows, n_items))
    scores = rng.random(n_items)
    blocks = []
    real = topk.top_k_excluding

    def recording(block, block_seen, k):
        blocks.append(block.size)
        return real(block, block_seen, k)

    monkeypatch.setattr(topk, "top_k_excluding", recording)
    got = topk.top_k_shared_excluding(scores, seen, k, block_cells=budget)
    monkeypatch.undo()
    assert max(blocks[1:]) <= budget, max(blocks[1:])  # blocks[0]: the one ranking of the items
    want = topk.top_k_excluding(np.broadcast_to(scores, (n_rows, n_items)).copy(), seen, k)
    np.testing.assert_array_equal(got[0], want[0])


def test_the_sparse_top_k_is_the_dense_one_on_random_blocks():
    """``sparse_top_k(product, base, seen, k)`` against ``top_k_excluding`` of the dense block
    ``product.toarray() + base``: the same items and scores, with ties, explicit zeros, negative
    and NaN cells, -inf and NaN bases, seen masks, rows that reach nothing and k past the catalogue."""
    from recsys.scoring.topk import sparse_top_k, top_k_excluding

    rng = np.random.default_rng(7)
    for _ in range(1500):
        rows, n = int(rng.integers(0, 10)), int(rng.integers(1, 40))
        values = rng.choice([0.0, 0.5, 1.0, 2.0, -1.0, np.nan], size=(rows, n))
        stored = rng.random((rows, n)) < rng.choice([0.0, 0.1, 0.5, 0.95])
        r, c = np.nonzero(stored)
        product = sp.csr_matrix((values[r, c], (r, c)), shape=(rows, n))  # explicit zeros kept
        base = rng.choice([0.0, 1e-9, 2e-9, -np.inf, np.nan], size=n) if rng.random() < 0.5 else rng.integers(0, 3, n) * 1e-9
        seen = sp.csr_matrix((rng.random((rows, n)) < rng.choice([0.0, 0.3, 0.8])).astype(float)) if rng.random() < 0.7 else None
        k = int(rng.integers(1, 45))
        want = top_k_excluding(product.toarray() + base[None, :], seen, k)
        got = sparse_top_k(product, base, seen, k)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
