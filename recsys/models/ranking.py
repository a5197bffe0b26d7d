"""Ranking stage: a TFRS model that orders each user's retrieval candidates.

Each (user, candidate) pair is described by the ids and by facts beyond them: the retrieval score
(raw and relative to the user's best), the candidate's position in retrieval, the item's all-time
and recent popularity, its co-occurrence with the user's items and with the user's latest item,
the item's mean rating, the user's activity and how long ago they were last active. The model is
trained listwise (softmax cross-entropy over each user's candidate list) on items the users
consumed *after* the interactions the retrieval model was trained on, so it learns to order
candidates the way the future went.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

import recsys  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from recsys.models.context import FEATURES, Context, pair_features
from recsys.models.item_item import gather
from recsys.models.retrieval import _tf, progress_callback
from recsys.progress import Progress
from recsys.scoring.lists import Lists
from recsys.settings import ModelSettings


def build_model(n_users: int, n_items: int, n_features: int, settings: ModelSettings):
    """The TFRS ranking model (Keras 2), untrained: ids + pair features -> one score per candidate."""
    tf, tfrs = _tf()
    regularizer = tf.keras.regularizers.l2(1e-5)

    class Ranker(tfrs.Model):
        """Scores a list of candidates; loss = softmax cross-entropy over the list."""

        def __init__(self):
            super().__init__()
            self.user_embedding = tf.keras.layers.Embedding(n_users, 8, embeddings_regularizer=regularizer)
            self.item_embedding = tf.keras.layers.Embedding(n_items, 8, embeddings_regularizer=regularizer)
            # A linear part that can follow popularity and co-occurrence from the first step, plus a
            # small network for their interactions: with a few thousand lists, linear carries most.
            self.linear = tf.keras.layers.Dense(1)
            self.scorer = tf.keras.Sequential(
                [
                    tf.keras.layers.Dense(32, activation="relu", kernel_regularizer=regularizer),
                    tf.keras.layers.Dense(1, kernel_regularizer=regularizer),
                ]
            )
            # Listwise: softmax cross-entropy over each customer's candidates (a pointwise binary
            # loss measured far worse on validation; see benchmarks/results/quality_attempts.md).
            self.task = tfrs.tasks.Ranking(loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True))

        def call(self, features):
            items = features["items"]
            users = tf.broadcast_to(tf.expand_dims(features["user"], 1), tf.shape(items))
            parts = [features["features"]]
            if settings.ranking_ids:
                parts = [self.user_embedding(users), self.item_embedding(items)] + parts
            inputs = tf.concat(parts, axis=-1)
            logits = tf.squeeze(self.linear(features["features"]) + self.scorer(inputs), -1)
            # Padding candidates (no item) must never win.
            return tf.where(features["valid"], logits, -1e9)

        def compute_loss(self, features, training=False):
            labels = features["labels"]
            labels = labels / tf.maximum(tf.reduce_sum(labels, axis=1, keepdims=True), 1.0)
            return self.task(labels=labels, predictions=self(features), compute_metrics=False)

    return Ranker()


@dataclass(frozen=True)
class Ranker:
    """The trained ranking models as NumPy weights: the Keras models' scores, without TensorFlow.

    Picklable and small, so scoring can run in any process (a Dask worker) from plain arrays.
    """

    members: tuple[dict[str, np.ndarray], ...]
    mean: np.ndarray
    std: np.ndarray

    def scores(self, rows: np.ndarray, candidates: Lists, features: np.ndarray) -> np.ndarray:
        """Ranking score of every candidate of users ``rows``: the ensemble's mean logit (invalid: -inf)."""
        items = np.maximum(candidates.items, 0)
        valid = candidates.items >= 0
        # One (lists x candidates, features) matrix: a single BLAS call per layer, not one per list.
        x = ((features - self.mean) / self.std).astype(np.float32).reshape(-1, features.shape[-1])
        outputs = []
        for weights in self.members:
            inputs = x
            if "user_embedding" in weights:
                users = np.repeat(weights["user_embedding"][rows], items.shape[1], axis=0)
                inputs = np.concatenate([users, weights["item_embedding"][items.ravel()], x], axis=1)
            hidden = inputs @ weights["hidden_kernel"]
            hidden += weights["hidden_bias"]
            np.maximum(hidden, 0.0, out=hidden)
            logits = x @ weights["linear_kernel"] + hidden @ weights["out_kernel"]
            logits += weights["linear_bias"] + weights["out_bias"]
            outputs.append(np.where(valid, logits.reshape(items.shape), np.float32(-1e9)))
        return np.where(valid, np.mean(outputs, axis=0), -np.inf)


def export_weights(model, ids: bool) -> dict[str, np.ndarray]:
    """One Keras ranking model's weights by name (see ``build_model``)."""
    hidden, out = model.scorer.layers
    weights = {
        "linear_kernel": model.linear.kernel.numpy(),
        "linear_bias": model.linear.bias.numpy(),
        "hidden_kernel": hidden.kernel.numpy(),
        "hidden_bias": hidden.bias.numpy(),
        "out_kernel": out.kernel.numpy(),
        "out_bias": out.bias.numpy(),
    }
    if ids:
        weights["user_embedding"] = model.user_embedding.embeddings.numpy()
        weights["item_embedding"] = model.item_embedding.embeddings.numpy()
    return weights


@dataclass
class RankingStage:
    """Trained ranking models (an ensemble over seeds) with the feature scaling they were trained with."""

    models: list
    mean: np.ndarray
    std: np.ndarray
    lists: int = 0
    seconds: float = 0.0
    ids: bool = False

    def describe(self) -> str:
        """What training did, for the log."""
        return f"trained on {self.lists:,} candidate lists in {self.seconds:.1f}s"

    def ranker(self) -> Ranker:
        """The models as NumPy weights (what scoring uses, in this process or on a Dask worker)."""
        return Ranker(members=tuple(export_weights(model, self.ids) for model in self.models), mean=self.mean, std=self.std)


@dataclass(frozen=True)
class Examples:
    """Training lists for the ranking model: features, labels and candidate codes per user row."""

    rows: np.ndarray
    items: np.ndarray
    features: np.ndarray
    labels: np.ndarray


def ranking_examples(
    context: Context, candidates: Lists, rows: np.ndarray, targets: sp.csr_matrix, settings: ModelSettings
) -> Examples:
    """The candidate lists of users ``rows`` labelled by ``targets`` (users × items: what they consumed next).

    Lists holding no consumed item teach a listwise loss nothing and are dropped.
    """
    items = candidates.items
    labels = gather(targets[rows], np.maximum(items, 0)) * (items >= 0)
    useful = labels.sum(axis=1) > 0
    rows, items, scores, labels = rows[useful], items[useful], candidates.scores[useful], labels[useful]
    features = np.concatenate(
        [
            pair_features(context, Lists(items[block], scores[block]), rows[block], settings.ranking_features)
            for block in _blocks(len(rows))
        ]
    ) if len(rows) else np.zeros((0, items.shape[1], len(settings.ranking_features or FEATURES)), np.float32)
    return Examples(rows=rows, items=items, features=features, labels=labels)


def _blocks(n: int, size: int = 4096) -> list[slice]:
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def train_ranking(
    examples: Examples,
    n_users: int,
    n_items: int,
    settings: ModelSettings,
    seed: int,
    epochs: int | None = None,
    progress: Progress | None = None,
) -> RankingStage | None:
    """Train the ranking model on labelled candidate lists; ``None`` when there are none."""
    tf, _ = _tf()
    started = time.perf_counter()
    if len(examples.rows) == 0:
        return None
    rows, features = examples.rows, examples.features
    flat = features.reshape(-1, features.shape[-1])
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    std[std < 1e-6] = 1.0
    epochs = epochs or ranking_epochs_for(len(rows))
    inputs = {
        "user": rows.astype(np.int32),
        "items": np.maximum(examples.items, 0).astype(np.int32),
        "valid": examples.items >= 0,
        "features": (features - mean) / std,
        "labels": examples.labels,
    }
    models = []
    # A few small models from different seeds, averaged: with a few hundred training lists one
    # model's ordering depends on its seed far more than an average of several does.
    for member in range(settings.ranking_models):
        member_seed = seed + 1000 * member
        tf.keras.utils.set_random_seed(member_seed)
        model = build_model(n_users, n_items, features.shape[-1], settings)
        model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=settings.ranking_learning_rate))
        dataset = (
            tf.data.Dataset.from_tensor_slices(inputs)
            .shuffle(len(rows), seed=member_seed)
            .batch(64 if len(rows) < 20_000 else 512)
        )
        callbacks = [progress_callback(epochs * settings.ranking_models, progress, offset=member * epochs)] if progress else []
        model.fit(dataset, epochs=epochs, verbose=0, callbacks=callbacks)
        models.append(model)
    return RankingStage(
        models=models, mean=mean, std=std, lists=len(rows), seconds=time.perf_counter() - started, ids=settings.ranking_ids
    )


def ranking_epochs_for(lists: int) -> int:
    """Rule: about 40k list updates at least, between 5 and 60 epochs."""
    return int(np.clip(np.ceil(40_000 / max(lists, 1)), 5, 60))
