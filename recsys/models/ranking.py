"""Ranking stage: a TFRS model that orders each customer's candidates.

Each (customer, candidate) pair is described by features (``recsys.models.candidates``): what each
candidate source thinks of it, and facts of the item and the customer. The model is trained
listwise (softmax cross-entropy over each customer's candidate list) on items the customers took
*after* the interactions the sources were fitted on, so it learns to order candidates the way
the future went. Scoring uses its weights in NumPy (:class:`Ranker`), so scoring shards need no
TensorFlow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

import recsys  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from recsys.models.retrieval import _tf, progress_callback
from recsys.progress import Progress
from recsys.settings import ModelSettings



def build_model(n_features: int, settings: ModelSettings):
    """The TFRS ranking model (Keras 2), untrained: pair features -> one score per candidate.

    A linear score of the features, plus (``settings.ranking_hidden`` > 0) a small ReLU network
    for their interactions; every kernel carries an L2 penalty of ``settings.ranking_l2``. With a
    few hundred to a few thousand training lists, a strongly regularised linear ranker is what
    measured best on validation (benchmarks/results/quality_attempts.md).
    """
    tf, tfrs = _tf()
    regularizer = tf.keras.regularizers.l2(settings.ranking_l2) if settings.ranking_l2 > 0 else None

    class Ranker(tfrs.Model):
        """Scores a list of candidates; loss = softmax cross-entropy over the list."""

        def __init__(self):
            super().__init__()
            self.linear = tf.keras.layers.Dense(1, kernel_regularizer=regularizer)
            self.hidden = None
            if settings.ranking_hidden:
                self.hidden = tf.keras.Sequential(
                    [
                        tf.keras.layers.Dense(settings.ranking_hidden, activation="relu", kernel_regularizer=regularizer),
                        tf.keras.layers.Dense(1, kernel_regularizer=regularizer),
                    ]
                )
            # Listwise: softmax cross-entropy over each customer's candidates (a pointwise binary
            # loss measured far worse on validation; see benchmarks/results/quality_attempts.md).
            self.task = tfrs.tasks.Ranking(loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True))

        def call(self, features):
            x = features["features"]
            logits = self.linear(x)
            if self.hidden is not None:
                logits = logits + self.hidden(x)
            # Padding candidates (no item) must never win.
            return tf.where(features["valid"], tf.squeeze(logits, -1), -1e9)

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

    def scores(self, items: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Ranking score of every candidate (``items`` (n, m), -1 = none; ``features`` (n, m, f)):
        the ensemble's mean logit, ``-inf`` for no item."""
        valid = items >= 0
        # One (lists x candidates, features) matrix: a single BLAS call per layer, not one per list.
        x = ((features - self.mean) / self.std).astype(np.float32).reshape(-1, features.shape[-1])
        outputs = []
        for weights in self.members:
            logits = x @ weights["linear_kernel"]
            logits += weights["linear_bias"]
            if "hidden_kernel" in weights:
                hidden = x @ weights["hidden_kernel"]
                hidden += weights["hidden_bias"]
                np.maximum(hidden, 0.0, out=hidden)
                logits += hidden @ weights["out_kernel"] + weights["out_bias"]
            outputs.append(logits.reshape(items.shape))
        return np.where(valid, np.mean(outputs, axis=0), -np.inf)


def export_weights(model) -> dict[str, np.ndarray]:
    """One Keras ranking model's weights by name (see ``build_model``)."""
    weights = {"linear_kernel": model.linear.kernel.numpy(), "linear_bias": model.linear.bias.numpy()}
    if model.hidden is not None:
        hidden, out = model.hidden.layers
        weights.update(
            hidden_kernel=hidden.kernel.numpy(), hidden_bias=hidden.bias.numpy(),
            out_kernel=out.kernel.numpy(), out_bias=out.bias.numpy(),
        )
    return weights


@dataclass
class RankingStage:
    """Trained ranking models (an ensemble over seeds) with the feature scaling they were trained with."""

    models: list
    mean: np.ndarray
    std: np.ndarray
    lists: int = 0
    seconds: float = 0.0

    def describe(self) -> str:
        """What training did, for the log."""
        return f"trained on {self.lists:,} candidate lists in {self.seconds:.1f}s"

    def ranker(self) -> Ranker:
        """The models as NumPy weights (what scoring uses, in this process or on a Dask worker)."""
        return Ranker(members=tuple(export_weights(model) for model in self.models), mean=self.mean, std=self.std)


@dataclass(frozen=True)
class Examples:
    """Training lists for the ranking model: features, labels and candidate codes per user row."""

    rows: np.ndarray
    items: np.ndarray
    features: np.ndarray
    labels: np.ndarray


def train_ranking(
    examples: Examples,
    settings: ModelSettings,
    seed: int,
    epochs: int | None = None,
    progress: Progress | None = None,
) -> RankingStage | None:
    """Train the ranking model on labelled candidate lists; ``None`` when there are none.

    Features are standardised over the real candidates (padding left at zero). Rule: about
    ``settings.ranking_steps`` gradient steps of 64 lists, 1 to 200 epochs, unless ``epochs``.
    """
    tf, _ = _tf()
    started = time.perf_counter()
    if len(examples.rows) == 0:
        return None
    features, valid = examples.features, examples.items >= 0
    real = features[valid]
    mean, std = real.mean(axis=0), real.std(axis=0)
    std[std < 1e-6] = 1.0
    batch = 64
    epochs = epochs or ranking_epochs_for(len(examples.rows), settings.ranking_steps, batch)
    inputs = {
        "valid": valid,
        "features": (((features - mean) / std) * valid[..., None]).astype(np.float32),
        "labels": examples.labels.astype(np.float32),
    }
    models = []
    # Models from different seeds, averaged (settings.ranking_models; 1 by default).
    for member in range(settings.ranking_models):
        member_seed = seed + 1000 * member
        tf.keras.utils.set_random_seed(member_seed)
        model = build_model(features.shape[-1], settings)
        model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=settings.ranking_learning_rate))
        dataset = tf.data.Dataset.from_tensor_slices(inputs).shuffle(len(examples.rows), seed=member_seed).batch(batch)
        callbacks = [progress_callback(epochs * settings.ranking_models, progress, offset=member * epochs)] if progress else []
        model.fit(dataset, epochs=epochs, verbose=0, callbacks=callbacks)
        models.append(model)
    return RankingStage(models=models, mean=mean, std=std, lists=len(examples.rows), seconds=time.perf_counter() - started)


def ranking_epochs_for(lists: int, steps: int, batch: int = 64) -> int:
    """Rule: about ``steps`` gradient steps of ``batch`` lists, between 1 and 200 epochs."""
    per_epoch = max(1, -(-lists // batch))
    return int(np.clip(np.ceil(steps / per_epoch), 1, 200))
