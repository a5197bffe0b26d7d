"""Choosing the baselines' settings on a split of their own: EASE's λ, RP3beta's α and β.

Each setting of a grid is fitted on the tuning split's training rows and scored on its held-out
items. Tuning splits are small and noisy (a few hundred customers on a small export), so the
setting with the best mean NDCG is not simply taken: the grid is ordered from the most preferred
setting (the most regularised λ; RP3beta's plain walk α = 0.5, β = 0, then its neighbours), and
the first setting whose NDCG is not significantly below the best one's (the same paired bootstrap
as the quality gate) wins. A setting only wins over a simpler one on evidence.

The split is always the temporal holdout of the training rows of the split being evaluated, so
nothing is chosen on the customers a figure is reported for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from recsys.data.splits import Split
from recsys.evaluation.metrics import DEFAULT_K, paired_difference

# λ of EASE, most preferred (most regularised) first: a wide geometric grid (the best λ grows with
# the number of customers).
EASE_GRID = (10000.0, 3000.0, 1000.0, 300.0, 100.0, 30.0, 10.0)
# (α, β) of RP3beta, most preferred first: the plain two-step walk, then by distance from it.
RP3_GRID = tuple(
    sorted(
        ((alpha, beta) for alpha in (0.25, 0.5, 0.75, 1.0) for beta in (0.0, 0.1, 0.2, 0.3, 0.5)),
        key=lambda point: (abs(point[0] - 0.5) + abs(point[1]), -point[0]),
    )
)


@dataclass(frozen=True)
class Choice:
    """The setting tuning chose for one baseline, and what every setting scored."""

    settings: dict
    scores: list[tuple[dict, float]] = field(default_factory=list)  # (setting, tuning NDCG)


def tune(candidates: list[tuple[dict, Callable]], split: Split, k: int = DEFAULT_K, seed: int = 0) -> Choice:
    """The chosen one of ``candidates`` ((setting, factory) pairs, most preferred first) on ``split``."""
    from recsys.evaluation.protocol import score_recommender

    if len(split.users) == 0:
        return Choice(settings=candidates[0][0])
    results = [(settings, *score_recommender(factory, split, k, seed)) for settings, factory in candidates]
    best = max(results, key=lambda result: result[1]["ndcg"])
    for settings, _, per_user in results:
        _, _, high = paired_difference(per_user, best[2], seed=seed)
        if not high < 0:  # not significantly below the best
            return Choice(settings=settings, scores=[(s, m["ndcg"]) for s, m, _ in results])
    return Choice(settings=best[0], scores=[(s, m["ndcg"]) for s, m, _ in results])


def tune_baselines(split: Split, k: int = DEFAULT_K, seed: int = 0) -> dict[str, Choice]:
    """EASE and RP3beta with their settings chosen on ``split``, by name."""
    from recsys.models.baselines import EASE, RP3Beta

    ease = [({"regularization": value}, _factory(EASE, regularization=value)) for value in EASE_GRID]
    rp3 = [({"alpha": a, "beta": b}, _factory(RP3Beta, alpha=a, beta=b)) for a, b in RP3_GRID]
    return {"ease": tune(ease, split, k, seed), "rp3beta": tune(rp3, split, k, seed)}


def _factory(cls, **settings) -> Callable:
    return lambda: cls(**settings)
