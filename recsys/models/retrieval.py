"""Retrieval stage: a TFRS two-tower model and batched candidate generation.

The user tower sees the user id and the user's recent items (their embeddings averaged, leaving
out the item being predicted while training); the item tower sees the item id and the words of the
item's name. Training uses in-batch softmax with a log-popularity correction of the negatives
(items that appear often in a batch are not punished for being popular). Candidates come from a
block-wise matrix product of all user vectors with all item vectors, never a per-user model call.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

import recsys  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from recsys.data.interactions import Interactions, Pairs, distinct_pairs, user_histories
from recsys.progress import Progress
from recsys.scoring.lists import Lists
from recsys.scoring.topk import top_k_dot
from recsys.settings import ModelSettings

_WORD = re.compile(r"[^\W\d_]+|\d+", re.UNICODE)


def _tf():
    if "tensorflow_recommenders" not in sys.modules:
        from recsys.native_logs import native_startup_lines_dropped

        with native_startup_lines_dropped():  # TensorFlow's C++ start-up lines on fd 2
            import tensorflow_recommenders  # noqa: F401
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    return tf, tfrs


def build_model(n_users: int, n_items: int, words: np.ndarray, n_words: int, settings: ModelSettings):
    """The two-tower TFRS model (Keras 2), untrained."""
    tf, tfrs = _tf()
    dim = settings.embedding_dim
    correct = settings.popularity_correction

    class TwoTower(tfrs.Model):
        """Towers and loss only: user and item vectors, in-batch softmax with popularity correction."""

        def __init__(self):
            super().__init__()
            self.item_words = tf.constant(words, dtype=tf.int32)
            self.pad_item = n_items
            # Row 0 is shared by every customer with too few items to learn a vector of their own
            # (see ``id_rows``): their tower output comes from their items, not from noise. No
            # weight penalty on the tables: it would touch every row at every step, and the
            # sparse updates are what keep training fast on a million customers.
            self.user_embedding = tf.keras.layers.Embedding(n_users + 1, dim)
            self.history_embedding = tf.keras.layers.Embedding(n_items + 1, dim)
            self.item_embedding = tf.keras.layers.Embedding(n_items, dim)
            self.word_embedding = tf.keras.layers.Embedding(n_words, dim)
            self.user_dense = tf.keras.layers.Dense(dim)
            self.item_dense = tf.keras.layers.Dense(dim)
            self.task = tfrs.tasks.Retrieval(remove_accidental_hits=True)

        def user_vectors(self, user, history, leave_out=None):
            """User tower: id embedding and the mean embedding of the user's items."""
            mask = tf.not_equal(history, self.pad_item)
            if leave_out is not None:
                mask &= tf.not_equal(history, tf.expand_dims(leave_out, 1))
            weights = tf.cast(mask, tf.float32)
            summed = tf.einsum("bh,bhd->bd", weights, self.history_embedding(history))
            mean = summed / tf.maximum(tf.reduce_sum(weights, axis=1, keepdims=True), 1.0)
            return self.user_dense(tf.concat([self.user_embedding(user), mean], axis=1))

        def item_vectors(self, item):
            """Item tower: id embedding and the mean embedding of the name's words."""
            words = tf.gather(self.item_words, item)
            weights = tf.cast(tf.not_equal(words, 0), tf.float32)
            summed = tf.einsum("bw,bwd->bd", weights, self.word_embedding(words))
            mean = summed / tf.maximum(tf.reduce_sum(weights, axis=1, keepdims=True), 1.0)
            return self.item_dense(tf.concat([self.item_embedding(item), mean], axis=1))

        def compute_loss(self, features, training=False):
            users = self.user_vectors(features["user"], features["history"], leave_out=features["item"])
            items = self.item_vectors(features["item"])
            return self.task(
                users,
                items,
                candidate_sampling_probability=features["probability"] if correct else None,
                candidate_ids=features["item"],
                compute_metrics=False,
                compute_batch_metrics=False,
            )

    return TwoTower()


@dataclass
class RetrievalStage:
    """A trained two-tower model with the vocabularies it was built on."""

    model: object
    users: np.ndarray
    items: np.ndarray
    settings: ModelSettings
    seed: int
    epochs_run: int = 0
    first_epochs: int = 0  # the epochs of the first training (a refresh runs half as many)
    seconds: float = 0.0

    def fit(
        self, data: Interactions, epochs: int, progress: Progress | None = None, budget: int | None = None
    ) -> "RetrievalStage":
        """Train (or keep training) on the distinct (user, item) pairs of ``data``, at most
        ``budget`` examples in all (default ``MAX_TRAINING_EXAMPLES``)."""
        tf, _ = _tf()
        started = time.perf_counter()
        if self.epochs_run == 0:
            self.first_epochs = epochs
        users, items, _ = distinct_pairs(data)
        if len(users) == 0:
            return self
        history = user_histories(data, self.settings.history_length)
        rows = id_rows(history, len(self.items), self.settings.user_id_min_items)
        counts = np.bincount(items, minlength=len(self.items)).astype(np.float32)
        probability = (counts / counts.sum())[items]
        batch = self.settings.batch_size or batch_size_for(len(users))
        per_epoch = examples_per_epoch(len(users), epochs, budget)
        rng = np.random.default_rng(self.seed + self.epochs_run)
        for epoch in range(epochs):
            # A fresh random sample (all pairs while they fit the budget) in a fresh order each epoch.
            pick = rng.permutation(len(users))[:per_epoch]
            dataset = (
                tf.data.Dataset.from_tensor_slices(
                    {
                        "user": rows[users[pick]],
                        "item": items[pick],
                        "history": history[users[pick]],
                        "probability": probability[pick],
                    }
                )
                .batch(batch)
                .prefetch(2)
            )
            self.model.fit(dataset, epochs=1, verbose=0)
            if progress:
                progress(epoch + 1, epochs)
        self.epochs_run += epochs
        self.seconds += time.perf_counter() - started
        return self

    def describe(self) -> str:
        """What training did, for the log."""
        return f"{self.epochs_run} epochs in {self.seconds:.1f}s"

    def user_vectors(self, history: np.ndarray, batch: int = 65536) -> np.ndarray:
        """User-tower output for every user of the vocabulary, given their current histories."""
        codes = id_rows(history, len(self.items), self.settings.user_id_min_items)
        out = [
            self.model.user_vectors(codes[start : start + batch], history[start : start + batch]).numpy()
            for start in range(0, len(codes), batch)
        ]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.settings.embedding_dim), np.float32)

    def item_vectors(self) -> np.ndarray:
        """Item-tower output for every item of the vocabulary."""
        return self.model.item_vectors(np.arange(len(self.items), dtype=np.int32)).numpy().astype(np.float32)

    def vectors(self, data: Interactions, pairs: Pairs | None = None) -> tuple[np.ndarray, np.ndarray]:
        """User vectors (from each user's current history in ``data``) and item vectors.

        ``pairs``: ``distinct_pairs(data)`` when the caller has it already.
        """
        history = user_histories(data, self.settings.history_length, pairs)
        return self.user_vectors(history), self.item_vectors()


def candidates_for(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    rows: np.ndarray,
    n: int,
    seen: sp.csr_matrix | None,
    threads: int | None = None,
    blocked: np.ndarray | None = None,
) -> Lists:
    """Top ``n`` items for users ``rows`` by dot product, skipping ``seen`` items and ``blocked`` ones.

    Exact, in blocks of users with a grouped selection that costs about as much as the matrix
    product itself (:func:`recsys.scoring.topk.top_k_dot`); ties go to the lower item index, so results do
    not depend on blocks or threads.
    """
    rows = np.asarray(rows, dtype=np.int64)
    block_seen = seen[rows] if seen is not None else None
    items, scores = top_k_dot(user_vectors[rows], item_vectors, n, block_seen, threads=threads, blocked=blocked)
    return Lists(items=items, scores=scores.astype(np.float64))


def id_rows(history: np.ndarray, n_items: int, min_items: int) -> np.ndarray:
    """Embedding row of each customer's id: their own (code + 1) with ``min_items`` items or more, else 0."""
    counts = (history != n_items).sum(axis=1)
    return np.where(counts >= min_items, np.arange(1, len(history) + 1), 0).astype(np.int32)


# The two-tower's training budget, in examples: past about a million the candidates it proposes
# do not change the ranked lists measurably (the baselines' candidates carry most of them; see
# benchmarks/results/quality_attempts.md), while every example costs the same time.
MAX_TRAINING_EXAMPLES = 1_000_000


def batch_size_for(pairs: int) -> int:
    """Rule: 256 pairs per batch below 20k pairs, 512 below 500k, 1024 above.

    Larger batches give more in-batch negatives, but the softmax costs grow with the batch for
    every example: past 1024 training gets slower per example on a CPU, not faster.
    """
    if pairs < 20_000:
        return 256
    if pairs < 500_000:
        return 512
    return 1024


def epochs_for(pairs: int) -> int:
    """Rule: about 60k gradient examples at least, at most 30 epochs, at least 3."""
    return int(np.clip(np.ceil(60_000 / max(pairs, 1)), 3, 30))


def examples_per_epoch(pairs: int, epochs: int, budget: int | None = None) -> int:
    """Rule: every pair each epoch, unless that passes ``budget`` examples in all; then a random sample.

    Past a million examples the model has seen each item hundreds of times; more epochs
    over tens of millions of pairs would cost many minutes for little change.
    """
    return int(min(pairs, max((budget or MAX_TRAINING_EXAMPLES) // max(epochs, 1), 1)))


def new_stage(data: Interactions, settings: ModelSettings, seed: int) -> RetrievalStage:
    """An untrained retrieval stage over ``data``'s vocabularies, seeded for repeatable results."""
    tf, _ = _tf()
    tf.keras.utils.set_random_seed(seed)
    words, n_words = name_words(data.items)
    model = build_model(data.n_users, data.n_items, words, n_words, settings)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=settings.learning_rate))
    return RetrievalStage(model=model, users=data.users, items=data.items, settings=settings, seed=seed)


def name_words(items: np.ndarray, max_words: int = 8) -> tuple[np.ndarray, int]:
    """Word codes of each item name (lowercased words and numbers), 0 = padding; and the vocabulary size."""
    tokens = [_WORD.findall(str(name).lower())[:max_words] for name in items]
    vocabulary = {word: code for code, word in enumerate(sorted({w for ws in tokens for w in ws}), start=1)}
    words = np.zeros((len(items), max_words), dtype=np.int32)
    for row, ws in enumerate(tokens):
        words[row, : len(ws)] = [vocabulary[w] for w in ws]
    return words, len(vocabulary) + 1
