"""Ranking stage: a TFRS model that orders each customer's candidates.

Each (customer, candidate) pair is described by features (``recsys.models.candidates``): what each
candidate source thinks of it, and facts of the item and the customer. The model is trained
listwise (softmax cross-entropy over each customer's candidate list) on items the customers took
*after* the interactions the sources were fitted on, so it learns to order candidates the way
the future went. Scoring uses its weights in NumPy (:class:`Ranker`), so scoring shards need no
TensorFlow.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import numpy as np

import recsys  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from recsys.models.retrieval import _tf
from recsys.progress import Progress
from recsys.settings import ModelSettings, RankerConfig



def build_model(config: RankerConfig):
    """The TFRS ranking model (Keras 2), untrained: pair features -> one score per candidate.

    A linear score of the features, plus (``config.hidden`` > 0) a small ReLU network for their
    interactions; every kernel carries an L2 penalty of ``config.l2``. With a few hundred to a few
    thousand training lists, a strongly regularised linear ranker is what measured best on
    validation (benchmarks/results/quality_attempts.md).
    """
    tf, tfrs = _tf()
    regularizer = tf.keras.regularizers.l2(config.l2) if config.l2 > 0 else None

    class Ranker(tfrs.Model):
        """Scores a list of candidates; loss = softmax cross-entropy over the list."""

        def __init__(self):
            super().__init__()
            self.linear = tf.keras.layers.Dense(1, kernel_regularizer=regularizer)
            self.hidden = None
            if config.hidden:
                self.hidden = tf.keras.Sequential(
                    [
                        tf.keras.layers.Dense(config.hidden, activation="relu", kernel_regularizer=regularizer),
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
class Member:
    """One trained shape as NumPy weights: its models (seeds), the columns of the feature array it
    reads and their training scaling."""

    weights: tuple[dict[str, np.ndarray], ...]
    columns: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def logits(self, flat: np.ndarray) -> np.ndarray:
        """Mean logit of the shape's models for ``flat`` (candidates, every feature)."""
        # One (lists x candidates, features) matrix: a single BLAS call per layer, not one per list.
        x = ((flat[:, self.columns] - self.mean) / self.std).astype(np.float32)
        outputs = []
        for weights in self.weights:
            logits = x @ weights["linear_kernel"]
            logits += weights["linear_bias"]
            if "hidden_kernel" in weights:
                hidden = x @ weights["hidden_kernel"]
                hidden += weights["hidden_bias"]
                np.maximum(hidden, 0.0, out=hidden)
                logits += hidden @ weights["out_kernel"] + weights["out_bias"]
            outputs.append(logits)
        return np.mean(outputs, axis=0)


@dataclass(frozen=True)
class Ranker:
    """The trained ranking models as NumPy weights: the Keras models' scores, without TensorFlow.

    Picklable and small, so scoring can run in any process (a Dask worker) from plain arrays.
    """

    members: tuple[Member, ...]

    def scores(self, items: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Ranking score of every candidate (``items`` (n, m), -1 = none; ``features`` (n, m, f)):
        the mean logit of the chosen shapes, ``-inf`` for no item."""
        valid = items >= 0
        flat = features.reshape(-1, features.shape[-1])
        logits = np.mean([member.logits(flat) for member in self.members], axis=0)
        return np.where(valid, logits.reshape(items.shape), -np.inf)


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
class Shape:
    """One trained ranker shape: its Keras models (one per seed), the features it reads and their
    training scaling."""

    config: RankerConfig
    models: list
    features: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray


@dataclass
class RankingStage:
    """The chosen ranker: one shape, or an ensemble of shapes whose logits are averaged."""

    shapes: list[Shape]
    lists: int = 0
    seconds: float = 0.0
    choice: list = field(default_factory=list)  # (configs, held-out NDCG) of every choice tried

    @property
    def configs(self) -> tuple[RankerConfig, ...]:
        return tuple(shape.config for shape in self.shapes)

    @property
    def features(self) -> tuple[str, ...]:
        """Every feature some shape reads, in the order first read."""
        return tuple(dict.fromkeys(name for shape in self.shapes for name in shape.features))

    def describe(self) -> str:
        """What training did, for the log."""
        tried = "; ".join(f"{label(configs)}: {ndcg:.4f}" for configs, ndcg in self.choice)
        return (
            f"{label(self.configs)}, trained on {self.lists:,} candidate lists in {self.seconds:.1f}s"
            + (f" (held-out NDCG {tried})" if tried else "")
        )

    def ranker(self) -> Ranker:
        """The models as NumPy weights (what scoring uses, in this process or on a Dask worker)."""
        names = self.features
        return Ranker(
            members=tuple(
                Member(
                    weights=tuple(export_weights(model) for model in shape.models),
                    columns=np.array([names.index(name) for name in shape.features], dtype=np.int64),
                    mean=shape.mean,
                    std=shape.std,
                )
                for shape in self.shapes
            )
        )


def label(configs: tuple[RankerConfig, ...]) -> str:
    """A shape, or an ensemble of shapes, in words."""

    def one(config: RankerConfig) -> str:
        kind = f"{config.hidden}-unit network" if config.hidden else "linear"
        features = f"{len(config.features)} features" if config.features else "every feature"
        return f"{kind} on {features}, L2 {config.l2:g}"

    if len(configs) == 1:
        return one(configs[0])
    return "mean of " + " and ".join(f"({one(config)})" for config in configs)


@dataclass(frozen=True)
class Examples:
    """Training lists for the ranking model: candidate codes, features (named ``names``) and labels per customer."""

    rows: np.ndarray
    items: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...] = ()

    def part(self, lists: np.ndarray, names: tuple[str, ...] | None = None) -> "Examples":
        """The lists at positions ``lists``, with only the features ``names`` (default: all)."""
        names = self.names if names is None else names
        columns = [self.names.index(name) for name in names]
        return Examples(self.rows[lists], self.items[lists], self.features[lists][..., columns], self.labels[lists], names)


def train_ranking(
    examples: Examples,
    settings: ModelSettings,
    seed: int,
    epochs: int | None = None,
    progress: Progress | None = None,
) -> RankingStage | None:
    """The ranking model trained on labelled candidate lists, chosen among ``settings.rankers``
    and their ensembles; ``None`` when there are no lists.

    The choice is made on the training lists themselves, held out by customer: with fewer than
    5,000 lists, 3-fold cross-validation (every list scored once, the chosen shapes retrained on
    all lists); with more, one 80/20 split (the chosen shapes kept as trained on the 80%). Every
    shape is trained once per fold; each choice (one shape, or the mean logit of two or more, an
    ensemble that costs no further training to score) is scored by the NDCG@12 of its order of
    the held-out lists. The best mean wins, ties to the choice listed first (single shapes before
    ensembles, in the order of ``settings.rankers``). With one shape, or fewer than 50 lists, the
    first is trained on all.
    """
    started = time.perf_counter()
    if len(examples.rows) == 0:
        return None
    configs = settings.rankers
    n = len(examples.rows)
    if len(configs) == 1 or n < 50:
        return fit_ranking(examples, configs[:1], settings, seed, epochs, progress)
    every = np.arange(n)
    folds = 3 if n < 5000 else 1
    fold = np.random.default_rng(seed).permutation(n) % (folds if folds > 1 else 5)  # one split: fold 0 = 20%
    held_out = fold >= 0 if folds > 1 else fold == 0
    steps = len(configs) * folds + (len(configs) if folds > 1 else 0)
    done = 0

    def update(part_done: int, part_total: int) -> None:
        if progress:
            progress(done * part_total + part_done, steps * part_total)

    # Each shape's held-out logits of every list (one split: of the 20%).
    logits, kept = [], []
    for config in configs:
        names = _names(config, examples)
        values = np.full(examples.items.shape, -np.inf)
        for number in range(folds):
            held = fold == number
            shape = _fit(examples.part(every[~held], names), config, settings, seed, epochs, update)
            part = examples.part(every[held], names)
            values[held] = RankingStage([shape]).ranker().scores(part.items, part.features)
            done += 1
        logits.append(values[held_out])
        kept.append(shape)
    labels = examples.labels[held_out]
    choices = [c for size in range(1, len(configs) + 1) for c in itertools.combinations(range(len(configs)), size)]
    scores = [float(list_ndcg(np.mean([logits[i] for i in choice], axis=0), labels).mean()) for choice in choices]
    chosen = choices[int(np.argmax(scores))]
    if folds > 1:
        picked = tuple(configs[i] for i in chosen)

        def final(part_done: int, part_total: int) -> None:  # part_total spans the picked shapes' fits
            if progress:
                each = part_total // len(picked)
                progress(done * each + part_done, (done + len(picked)) * each)

        stage = fit_ranking(examples, picked, settings, seed, epochs, final)
    else:
        stage = RankingStage([kept[i] for i in chosen])
    stage.choice = [(tuple(configs[i] for i in choice), score) for choice, score in zip(choices, scores)]
    stage.lists = n
    stage.seconds = time.perf_counter() - started
    return stage


def fit_ranking(
    examples: Examples,
    configs: tuple[RankerConfig, ...],
    settings: ModelSettings,
    seed: int,
    epochs: int | None = None,
    progress: Progress | None = None,
) -> RankingStage | None:
    """The shapes ``configs`` (one, or an ensemble) trained on every list, without a choice;
    ``None`` when there are no lists."""
    started = time.perf_counter()
    n = len(examples.rows)
    if n == 0:
        return None
    every, shapes = np.arange(n), []
    for number, config in enumerate(configs):

        def update(part_done: int, part_total: int, number=number) -> None:
            if progress:
                progress(number * part_total + part_done, len(configs) * part_total)

        shapes.append(_fit(examples.part(every, _names(config, examples)), config, settings, seed, epochs, update))
    return RankingStage(shapes, lists=n, seconds=time.perf_counter() - started)


def _names(config: RankerConfig, examples: Examples) -> tuple[str, ...]:
    return tuple(config.features) if config.features else examples.names


def list_ndcg(scores: np.ndarray, labels: np.ndarray, k: int = 12) -> np.ndarray:
    """NDCG@k of each list ordered by ``scores`` against its binary ``labels`` (the candidates taken next)."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    gains = np.take_along_axis(labels > 0, order, axis=1).astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(2, gains.shape[1] + 2))
    ideal = np.cumsum(discounts)[np.minimum((labels > 0).sum(axis=1), gains.shape[1]) - 1]
    return (gains @ discounts) / ideal


def _fit(
    examples: Examples, config: RankerConfig, settings: ModelSettings, seed: int, epochs: int | None, progress
) -> Shape:
    """One ranker of shape ``config`` trained on ``examples`` (which carry just its features)."""
    tf, _ = _tf()
    features, valid = examples.features, examples.items >= 0
    real = features[valid]
    mean, std = real.mean(axis=0), real.std(axis=0)
    std[std < 1e-6] = 1.0
    # Rule: a fixed number of gradient steps (the linear softmax objective is convex: it is driven
    # to its optimum whatever the number of lists); larger batches past 5,000 lists.
    batch, steps = (64, settings.ranking_steps) if len(examples.rows) <= 5000 else (256, 2 * settings.ranking_steps)
    epochs = epochs or ranking_epochs_for(len(examples.rows), steps, batch)
    inputs = {
        "valid": valid,
        "features": (((features - mean) / std) * valid[..., None]).astype(np.float32),
        "labels": examples.labels.astype(np.float32),
    }
    models = []
    for member in range(settings.ranking_models):
        member_seed = seed + 1000 * member
        tf.keras.utils.set_random_seed(member_seed)
        model = build_model(config)
        model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=settings.ranking_learning_rate))
        # Every epoch's batches in one pass (repeat after batch: the same reshuffled batches as
        # ``epochs`` separate epochs), so Keras's per-epoch overhead is paid once, not up to 200 times.
        dataset = (
            tf.data.Dataset.from_tensor_slices(inputs).shuffle(len(examples.rows), seed=member_seed).batch(batch).repeat(epochs)
        )
        per_epoch = -(-len(examples.rows) // batch)
        callbacks = [_epoch_progress(epochs * settings.ranking_models, progress, member * epochs, per_epoch)] if progress else []
        model.fit(dataset, epochs=1, verbose=0, callbacks=callbacks)
        models.append(model)
    return Shape(config=config, models=models, features=examples.names, mean=mean, std=std)


def _epoch_progress(epochs: int, progress: Progress, offset: int, batches: int):
    """A Keras callback for a fit that is one pass over repeated epochs of ``batches`` batches:
    reports each finished epoch as ``progress(offset + done, epochs)``."""
    tf, _ = _tf()

    class EpochProgress(tf.keras.callbacks.Callback):
        _supports_tf_logs = True  # the logs are not read: no per-batch copy to NumPy

        def on_train_batch_end(self, batch, logs=None):
            if (batch + 1) % batches == 0:
                progress(offset + (batch + 1) // batches, epochs)

    return EpochProgress()


def ranking_epochs_for(lists: int, steps: int, batch: int = 64) -> int:
    """Rule: about ``steps`` gradient steps of ``batch`` lists, between 1 and 200 epochs."""
    per_epoch = max(1, -(-lists // batch))
    return int(np.clip(np.ceil(steps / per_epoch), 1, 200))
