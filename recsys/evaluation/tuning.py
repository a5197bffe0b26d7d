"""Choosing the baselines' settings on a split of their own: EASE's λ, RP3beta's α and β.

Each setting of a grid is fitted on the tuning split's training rows and scored on its held-out
items; the best mean NDCG wins (ties to the more regularised setting). The split is always the
temporal holdout of the training rows of the split being evaluated, so nothing is chosen on the
customers a figure is reported for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from recsys.data.splits import Split
from recsys.evaluation.metrics import DEFAULT_K

# λ of EASE: a wide geometric grid (the best λ grows with the number of customers).
EASE_GRID = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
# (α, β) of RP3beta.
RP3_GRID = tuple((alpha, beta) for alpha in (0.25, 0.5, 0.75, 1.0) for beta in (0.0, 0.1, 0.2, 0.3, 0.5))


@dataclass(frozen=True)
class Choice:
    """The setting tuning chose for one baseline, and what every setting scored."""

    settings: dict
    scores: list[tuple[dict, float]] = field(default_factory=list)  # (setting, tuning NDCG)


def tune(candidates: list[tuple[dict, Callable]], split: Split, k: int = DEFAULT_K, seed: int = 0) -> Choice:
    """The best of ``candidates`` ((setting, factory) pairs, most regularised first) on ``split``."""
    from recsys.evaluation.protocol import score_recommender

    scores = []
    best = None
    for settings, factory in candidates:
        ndcg = score_recommender(factory, split, k, seed)[0]["ndcg"] if len(split.users) else 0.0
        scores.append((settings, ndcg))
        if best is None or ndcg > best[2]:
            best = (settings, factory, ndcg)
    return Choice(settings=best[0], scores=scores)


def tune_baselines(split: Split, k: int = DEFAULT_K, seed: int = 0) -> dict[str, Choice]:
    """EASE and RP3beta with their settings chosen on ``split``, by name."""
    from recsys.models.baselines import EASE, RP3Beta

    ease = [({"regularization": value}, _factory(EASE, regularization=value)) for value in sorted(EASE_GRID, reverse=True)]
    rp3 = [({"alpha": a, "beta": b}, _factory(RP3Beta, alpha=a, beta=b)) for a, b in RP3_GRID]
    return {"ease": tune(ease, split, k, seed), "rp3beta": tune(rp3, split, k, seed)}


def _factory(cls, **settings) -> Callable:
    return lambda: cls(**settings)
