"""The quality gate: may the model's lists be published, or must a baseline's be?"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from recsys.evaluation.protocol import MODEL_NAME


@dataclass(frozen=True)
class Gate:
    """The quality gate's verdict: publish the model, or the named baseline, and why."""

    passed: bool
    publish: str
    reason: str


def quality_gate(table: pd.DataFrame) -> Gate:
    """The model passes when its NDCG@k is at least popularity's; otherwise the best baseline is published."""
    scores = dict(zip(table["recommender"], table["ndcg"]))
    k = int(table["k"].iloc[0])
    model, popularity = scores[MODEL_NAME], scores["popularity"]
    if model >= popularity:
        return Gate(True, MODEL_NAME, f"model NDCG@{k} {model:.4f} >= popularity {popularity:.4f} on validation")
    baselines = {name: value for name, value in scores.items() if name != MODEL_NAME}
    best = max(baselines, key=lambda name: (baselines[name], name == "popularity"))
    return Gate(
        False,
        best,
        f"model NDCG@{k} {model:.4f} < popularity {popularity:.4f} on validation: published {best} "
        f"({baselines[best]:.4f}) instead",
    )
