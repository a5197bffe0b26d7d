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
from recsys.features import (
    Interactions,
    cooccurrence_similarity,
    gather,
    PairTimes,
    item_popularity,
    pair_times,
    recent_popularity,
    user_histories,
)
from recsys.retrieval import Candidates, Progress, _tf, progress_callback
from recsys.settings import ModelSettings

FEATURES = (
    "retrieval_zscore",
    "retrieval_position",
    "popularity",
    "recent_popularity",
    "cooccurrence",
    "last_item_similarity",
    "item_rating",
    "user_activity",
    "days_inactive",
    "popularity_when_active",
)
_WINDOW_DAYS = 30


@dataclass(frozen=True)
class Context:
    """What is known about users and items at scoring time, from one set of interactions."""

    popularity: np.ndarray
    recent: np.ndarray
    rating: np.ndarray
    activity: np.ndarray
    inactive_days: np.ndarray
    seen: sp.csr_matrix
    last_item: np.ndarray
    similarity: sp.csr_matrix
    last_time: np.ndarray
    first_day: int  # day number of the first interaction
    item_days: np.ndarray  # (items, days + 1) int32: customers who first took the item up to each day


def context_of(data: Interactions, recent_days: int, times: PairTimes | None = None) -> Context:
    """Popularity, ratings, activity and co-occurrence computed from ``data``.

    One sort of the rows (``pair_times``, passed as ``times`` when the caller has it) gives every
    customer-item pair with its first and last time, and everything else is counted from those
    pairs (at a million customers, each extra pass over 41M rows costs seconds).
    """
    n_users, n_items = data.n_users, data.n_items
    pair_user, pair_item, first_time, last_time_pair = times if times is not None else pair_times(data)
    pairs = (pair_user, pair_item, last_time_pair)
    per_user = np.bincount(pair_user, minlength=n_users)
    seen = sp.csr_matrix(
        (np.ones(len(pair_user), dtype=np.float32), pair_item, np.r_[0, np.cumsum(per_user)]), shape=(n_users, n_items)
    )
    ratings = np.bincount(data.item, weights=data.rating, minlength=n_items)
    counts = np.bincount(data.item, minlength=n_items)
    prior = float(data.rating.mean()) if len(data.rating) else 0.0
    # Shrink towards the global mean so an item rated once is not "the best item".
    item_rating = (ratings + 10 * prior) / (counts + 10)
    end = int(data.time.max()) if len(data.time) else 0
    last_time = np.zeros(n_users, dtype=np.int64)
    np.maximum.at(last_time, pair_user, last_time_pair)
    return Context(
        popularity=np.log1p(item_popularity(data, pairs=pairs)),
        recent=np.log1p(recent_popularity(data, recent_days, pairs=pairs)),
        rating=item_rating.astype(np.float32),
        activity=np.log1p(per_user.astype(np.float32)),
        inactive_days=np.log1p(np.maximum(end - last_time, 0) / 86400.0).astype(np.float32),
        seen=seen,
        last_item=user_histories(data, 1, pairs=pairs)[:, 0],
        similarity=cooccurrence_similarity(seen),
        last_time=last_time,
        **_daily_counts(pair_item, first_time, n_items),
    )


def _daily_counts(pair_item: np.ndarray, first_time: np.ndarray, n_items: int) -> dict:
    """Cumulative count, per item and day, of customers who had taken the item by that day."""
    days = first_time // 86400
    first_day = int(days.min()) if len(days) else 0
    n_days = int(days.max()) - first_day + 1 if len(days) else 1
    counts = np.zeros((n_items, n_days + 1), dtype=np.int32)
    np.add.at(counts, (pair_item, days - first_day + 1), 1)
    return {"first_day": first_day, "item_days": np.cumsum(counts, axis=1, dtype=np.int32)}


def popularity_when_active(context: Context, items: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Customers who took each candidate in the 30 days up to the customer's own last visit."""
    last_column = context.item_days.shape[1] - 1
    end = np.clip(context.last_time[rows] // 86400 - context.first_day + 1, 0, last_column)[:, None]
    start = np.clip(end - _WINDOW_DAYS, 0, last_column)
    return np.log1p(context.item_days[items, end] - context.item_days[items, start]).astype(np.float32)


def pair_features(
    context: Context, candidates: Candidates, rows: np.ndarray, names: tuple[str, ...] | None = None
) -> np.ndarray:
    """Feature tensor (len(rows), N, len(FEATURES)) for the candidate lists of users ``rows``."""
    items = np.maximum(candidates.items, 0)
    valid = candidates.items >= 0
    scores = np.where(valid, candidates.scores, 0.0)
    n = items.shape[1]
    cooccurrence = gather(context.seen[rows] @ context.similarity, items)
    last = context.last_item[rows]
    n_items = context.similarity.shape[0]
    has_last = last < n_items
    last_similarity = gather(context.similarity[np.where(has_last, last, 0)], items) * has_last[:, None]
    spread = np.where(valid, scores, np.nan)
    zscore = (scores - np.nanmean(spread, axis=1, keepdims=True)) / (np.nanstd(spread, axis=1, keepdims=True) + 1e-6)
    columns = [
        np.where(valid, zscore, 0.0),
        np.broadcast_to(np.log1p(np.arange(n, dtype=np.float32)), items.shape),
        context.popularity[items],
        context.recent[items],
        cooccurrence,
        last_similarity,
        context.rating[items],
        np.broadcast_to(context.activity[rows][:, None], items.shape),
        np.broadcast_to(context.inactive_days[rows][:, None], items.shape),
        popularity_when_active(context, items, rows),
    ]
    stacked = np.stack(columns, axis=-1).astype(np.float32)
    if names is None:
        return stacked
    return stacked[..., [FEATURES.index(name) for name in names]]


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

    def scores(self, rows: np.ndarray, candidates: Candidates, features: np.ndarray) -> np.ndarray:
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
    context: Context, candidates: Candidates, rows: np.ndarray, targets: sp.csr_matrix, settings: ModelSettings
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
            pair_features(context, Candidates(items[block], scores[block]), rows[block], settings.ranking_features)
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
    epochs = epochs or settings.ranking_epochs or ranking_epochs_for(len(rows))
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
        seed = settings.seed + 1000 * member
        tf.keras.utils.set_random_seed(seed)
        model = build_model(n_users, n_items, features.shape[-1], settings)
        model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=settings.ranking_learning_rate))
        dataset = (
            tf.data.Dataset.from_tensor_slices(inputs)
            .shuffle(len(rows), seed=seed)
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
