"""Offline quality: ranking metrics, the evaluation protocol on the temporal splits, the quality gate."""

# The list length of runs recorded before ``runs.metrics["evaluation"]`` held its ``k``: the default
# ``--top-k`` (``recsys.evaluation.metrics.DEFAULT_K``, which imports NumPy; this module does not).
RECORDED_K_DEFAULT = 12


def recorded_k(evaluation: dict | None) -> int:
    """The list length a run's ``runs.metrics["evaluation"]`` record was measured at (its ``k``,
    the run's ``--top-k``): what its NDCG, recall and hit rate are "@". Standard library only, so
    ``recsys runs`` can label its figures without loading the evaluation."""
    for values in (evaluation or {}).values():
        if isinstance(values, dict) and values.get("k"):
            return int(values["k"])
    return RECORDED_K_DEFAULT
