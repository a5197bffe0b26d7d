"""Work one run shares: the temporal splits of each part of the export, and fitted baselines.

A nightly run fits EASE on the same training rows for the quality gate's table, for the two-stage
model's ranking stage and for its candidates; it splits the same rows the same way for the
evaluation and for the ranking stage. A :class:`FitCache` makes each of those happen once: a split
of a part of the export, or a recommender with given settings fitted on a part, is computed the
first time it is asked for and handed out again after.
"""

from __future__ import annotations

from collections.abc import Callable

from recsys.data.interactions import Interactions
from recsys.data.splits import Split, temporal_holdout


class FitCache:
    """Splits and fitted recommenders of one run, by the part of the export they come from."""

    def __init__(self) -> None:
        self._splits: dict[int, tuple[Interactions, Split]] = {}
        self._fitted: dict[tuple, tuple[Interactions, object]] = {}

    def holdout(self, data: Interactions) -> Split:
        """``temporal_holdout(data)``, computed once per ``data``."""
        known = self._splits.get(id(data))
        if known is None or known[0] is not data:
            known = (data, temporal_holdout(data))
            self._splits[id(data)] = known
        return known[1]

    def fitted(self, name: str, settings: dict | None, data: Interactions, make: Callable[[], object]):
        """``make().fit(data)``, computed once per (``name``, ``settings``, ``data``)."""
        key = (name, tuple(sorted((settings or {}).items())), id(data))
        known = self._fitted.get(key)
        if known is None or known[0] is not data:
            known = (data, make().fit(data))
            self._fitted[key] = known
        return known[1]

    def keep_only(self, data: Interactions) -> int:
        """Forget every split, and every fit on rows other than ``data``: once the evaluation and the
        training sequence are done, only fits on the whole export are asked for again (the model's
        final sources, a fallback baseline). Their memory (at a million customers, splits of 40
        million rows and the baselines fitted on them) is freed before scoring. Returns how many
        entries were dropped."""
        before = len(self._splits) + len(self._fitted)
        # Parts of the export can outlive the cache (the model keeps its evaluation split's
        # training rows for the rules' cost): their recency-weighted histories are not read again.
        parts = [known[0] for known in self._fitted.values()]
        parts += [part for rows, split in self._splits.values() for part in (rows, split.train)]
        for part in parts:
            if part is not data:
                part.forget_by_recency()
        self._splits.clear()
        self._fitted = {key: known for key, known in self._fitted.items() if known[0] is data}
        return before - len(self._fitted)
