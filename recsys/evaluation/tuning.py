"""Choosing the baselines' settings on a split of their own: EASE's λ, RP3beta's α and β, and
for both the weight of a customer's recent items.

Each setting of a grid is fitted on the tuning split's training rows and scored on its held-out
items. Tuning splits are small and noisy (a few hundred customers on a small export), so the
setting with the best mean NDCG is not simply taken: the grid is ordered from the most preferred
setting (EASE's rule λ = 10 × the mean item degree; RP3beta's plain walk α = 0.5, β = 0; every
item of a customer alike, recency 1; then their neighbours), and
the first setting that the best one does not beat both significantly (the same paired bootstrap as
the quality gate) and by more than 2% wins. A setting only wins over a simpler one on evidence of
a gain that matters.

The split is always the temporal holdout of the training rows of the split being evaluated, so
nothing is chosen on the customers a figure is reported for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recsys.data.splits import Split
from recsys.evaluation.metrics import DEFAULT_K, paired_difference, score_fitted

# The weight of a customer's items by recency (``recsys.data.interactions.recency_weights``),
# most preferred first: every item alike, then the latest items counting more. On exports where
# customers move on from what they took last (MovieLens, the synthetic generator's companions)
# 0.5-0.7 lifted RP3beta and EASE by 4-30% on validation folds; on the real export it was neutral.
RECENCY_GRID = (1.0, 0.7, 0.5)
# EASE's strength (λ in multiples of the mean item degree), most preferred first: the rule's 10,
# which measured within 1% of the best λ on every dataset tried, then further and further from it;
# each with every recency, ordered by how far the pair is from (10, 1).
EASE_STRENGTHS = (10.0, 3.0, 30.0)
EASE_GRID = tuple(
    sorted(
        ((strength, recency) for strength in EASE_STRENGTHS for recency in RECENCY_GRID),
        key=lambda point: (EASE_STRENGTHS.index(point[0]) + RECENCY_GRID.index(point[1]), RECENCY_GRID.index(point[1])),
    )
)
# (α, β, recency) of RP3beta, most preferred first: the plain two-step walk, then by distance from
# it. α measured flat from 0.25 to 1.25 on every dataset tried; β is what separates a head-heavy
# catalogue (0) from a long-tail one (0.3).
RP3_GRID = tuple(
    sorted(
        ((alpha, beta, recency) for alpha in (0.5,) for beta in (0.0, 0.15, 0.3, 0.5) for recency in RECENCY_GRID),
        key=lambda point: (abs(point[0] - 0.5) + abs(point[1]) + (1.0 - point[2]), -point[0], -point[2]),
    )
)


# How much better (relatively) a less preferred setting must score, besides significantly, to win.
MARGIN = 0.02
# The most customers a tuning split scores (drawn at random with the run's seed): enough to tell
# settings apart that matter, and the fits, not the scoring, are then what tuning costs.
TUNING_USERS = 5_000


@dataclass(frozen=True)
class Choice:
    """The setting tuning chose for one baseline, and what every setting scored."""

    settings: dict
    scores: list[tuple[dict, float]] = field(default_factory=list)  # (setting, tuning NDCG)


def choose(candidates: list[tuple[dict, object]], split: Split, k: int = DEFAULT_K, seed: int = 0) -> Choice:
    """The chosen one of ``candidates`` ((setting, fitted recommender) pairs, most preferred
    first, fitted on ``split.train``), scored on ``split``."""

    if len(split.users) == 0:
        return Choice(settings=candidates[0][0])
    results = [(settings, *score_fitted(model, split, k, seed)) for settings, model in candidates]
    best = max(results, key=lambda result: result[1]["ndcg"])
    scores = [(settings, metrics["ndcg"]) for settings, metrics, _ in results]
    for settings, metrics, per_user in results:
        _, _, high = paired_difference(per_user, best[2], seed=seed)
        # Kept unless the best is better by a margin that matters (2%) and beyond the noise.
        if not high < 0 or best[1]["ndcg"] <= metrics["ndcg"] * (1 + MARGIN):
            return Choice(settings=settings, scores=scores)
    return Choice(settings=best[0], scores=scores)


def tune_baselines(split: Split, k: int = DEFAULT_K, seed: int = 0, fits=None, progress=None) -> dict[str, Choice]:
    """EASE and RP3beta with their settings chosen on ``split`` (at most ``TUNING_USERS``
    customers scored), by name. Fits that share work share it: one Gram matrix for every λ, one
    walk product per α for every β; with ``fits`` (a ``FitCache``), the fits of every setting
    are kept for whoever needs the chosen one on the same rows (the two-stage model's sources).
    ``progress(done, note)``: 0 before EASE, 1 before RP3beta, 2 when both are chosen."""
    from recsys.data.splits import sample_users
    from recsys.models.baselines import EASE, RP3Beta

    scored = sample_users(split, TUNING_USERS, seed)
    if progress:
        progress(0, "tuning EASE")
    ease_settings = [{"strength": strength, "recency": recency} for strength, recency in EASE_GRID]
    ease = list(zip(ease_settings, EASE.fitted_family(split.train, EASE_GRID)))
    ease_choice = choose(ease, scored, k, seed)
    if progress:
        progress(1, "tuning RP3beta")
    rp3 = []
    for alpha in dict.fromkeys(alpha for alpha, _, _ in RP3_GRID):
        points = [(beta, recency) for a, beta, recency in RP3_GRID if a == alpha]
        models = RP3Beta.fitted_family(split.train, alpha, points)
        rp3 += [({"alpha": alpha, "beta": beta, "recency": recency}, model) for (beta, recency), model in zip(points, models)]
    rp3.sort(key=lambda pair: RP3_GRID.index((pair[0]["alpha"], pair[0]["beta"], pair[0]["recency"])))  # most preferred first
    rp3_choice = choose(rp3, scored, k, seed)
    if progress:
        progress(2, "tuned")
    if fits is not None:
        for name, family in (("ease", ease), ("rp3beta", rp3)):
            for settings, model in family:
                fits.fitted(name, settings, split.train, lambda model=model: _Fitted(model))
    return {"ease": ease_choice, "rp3beta": rp3_choice}


class _Fitted:
    """A recommender already fitted, handed to a ``FitCache`` (its ``fit`` returns it as it is)."""

    def __init__(self, model):
        self.model = model

    def fit(self, interactions):
        return self.model
