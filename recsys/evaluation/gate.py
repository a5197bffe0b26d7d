"""The quality gate: may the model's lists be published, or must the best baseline's be?

The model is published unless its NDCG@k on the evaluation split is *significantly* below the
best baseline's: the 95% paired bootstrap interval over customers of (model - best baseline)
lies wholly below zero (a one-sided test at the 2.5% level). Otherwise the best baseline's lists
are published and the run is ``degraded``, with the figures in the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from recsys.evaluation.metrics import LEVEL, paired_difference
from recsys.evaluation.protocol import MODEL_NAME, Evaluation


@dataclass(frozen=True)
class Gate:
    """The quality gate's verdict: publish the model, or the named baseline, and why."""

    passed: bool
    publish: str
    reason: str
    best_baseline: str | None = None
    difference: tuple[float, float, float] | None = None  # model - best baseline: (mean, low, high)


def best_baseline(evaluation: Evaluation) -> str:
    """The baseline with the highest mean NDCG (popularity wins ties: the simplest list)."""
    scores = {name: value for name, value in evaluation.ndcg().items() if name != MODEL_NAME}
    return max(scores, key=lambda name: (scores[name], name == "popularity"))


def quality_gate(evaluation: Evaluation) -> Gate:
    """The verdict on ``evaluation`` (see the module docstring)."""
    k = evaluation.k
    best = best_baseline(evaluation)
    scores = evaluation.ndcg()
    model, baseline = scores[MODEL_NAME], scores[best]
    mean, low, high = paired_difference(evaluation.per_user[MODEL_NAME], evaluation.per_user[best])
    figures = (
        f"model NDCG@{k} {model:.4f} vs best baseline {best} {baseline:.4f}: difference {mean:+.4f} "
        f"({LEVEL:.0%} interval {low:+.4f} to {high:+.4f})"
    )
    if not high < 0:  # also when the interval cannot be computed (fewer than 2 customers)
        return Gate(True, MODEL_NAME, f"{figures}, not significantly below", best, (mean, low, high))
    return Gate(False, best, f"{figures}, significantly below: published {best} instead", best, (mean, low, high))
