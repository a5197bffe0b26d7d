"""What the run report shows, read from the store: the runs and what the published lists hold.

Everything here is figures, no drawing: the runs (newest first, metrics decoded), the published
lists summed per item (and per reason when the table has a ``reason`` column), and the
summaries the page draws from them. The lists are counted by the database (``GROUP BY``), so a
store of a million customers costs the report one pass over the table, not a copy of it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from recsys.data.families import family_of
from recsys.evaluation import recorded_k
from recsys.errors import StoreError
from recsys.store.database import engine_for, store_errors
from recsys.store.lookup import recent_runs
from recsys.store.tables import RECOMMENDATIONS

MODEL = "two_stage"
# Reasons are texts like "because you redeemed Cine Colombia 2D": counted by what they start with.
REASON_GROUPS = ("because you redeemed", "popular lately", "new in the catalogue", "campaign")
TOP_SHARE = 10  # "the 10 most recommended items take x% of the slots"
TOP_CHART = 20  # items in the bar chart of the most recommended
# The segments of ``recsys.evaluation.segments``, in the order a reader expects them.
SEGMENT_ORDER = ("new customers", "1-2 items", "3+ items")


@dataclass(frozen=True)
class Snapshot:
    """The store as the report reads it."""

    runs: list[dict]  # newest first: run_id, started_at, finished_at, status, is_current, users, metrics, message
    item_slots: dict[str, int]  # published list slots per item
    reason_slots: dict[str, int] | None  # slots per reason text; None when the table has no reason column
    catalogue_items: int | None  # items of the published run's export
    source: str  # the store's URL, password masked

    @property
    def current(self) -> dict | None:
        """The run whose lists are published now."""
        return next((run for run in self.runs if run["is_current"]), None)

    @property
    def latest(self) -> dict:
        """The newest run, whatever its status."""
        return self.runs[0]


def read_store(db_url: str, limit: int = 30) -> Snapshot:
    """The newest ``limit`` runs and the published lists' counts; ``StoreError`` with no store."""
    runs = recent_runs(db_url, limit)
    if not runs:
        raise StoreError("the store has no runs yet: run `recsys run` first")
    engine = engine_for(db_url)
    source = engine.url.render_as_string(hide_password=True)
    try:
        with store_errors(db_url, Path("."), "cannot read the published lists"), engine.connect() as conn:
            columns = {column["name"] for column in sa.inspect(conn).get_columns(RECOMMENDATIONS)}
            table = sa.table(RECOMMENDATIONS, *(sa.column(name) for name in columns))
            items = dict(conn.execute(sa.select(table.c.item, sa.func.count()).group_by(table.c.item)).all())
            reasons = None
            if "reason" in columns:
                reasons = dict(conn.execute(sa.select(table.c.reason, sa.func.count()).group_by(table.c.reason)).all())
            current = sa.table("runs", sa.column("items"), sa.column("is_current"))
            catalogue = conn.execute(sa.select(current.c["items"]).where(current.c.is_current)).scalar()
    finally:
        engine.dispose()
    return Snapshot(runs, {str(k): int(v) for k, v in items.items()}, reasons, catalogue, source)


# --- quality ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% interval (low/high None when it could not be computed)."""

    mean: float
    low: float | None = None
    high: float | None = None

    @classmethod
    def of(cls, values) -> "Interval | None":
        """From ``[mean, low, high]`` (or a shorter list); None when there is no mean."""
        values = list(values or []) + [None, None, None]
        mean, low, high = (_number(v) for v in values[:3])
        return None if mean is None else cls(mean, low, high)

    def bounds(self) -> str:
        """The interval as text ("0.2663 to 0.3011"), "-" when there is none."""
        return "-" if self.low is None or self.high is None else f"{self.low:.4f} to {self.high:.4f}"

    def text(self) -> str:
        """The mean and its interval as text ("0.2843 (0.2663 to 0.3011)")."""
        return f"{self.mean:.4f}" if self.low is None or self.high is None else f"{self.mean:.4f} ({self.bounds()})"


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def evaluated_run(snapshot: Snapshot) -> dict | None:
    """The run whose quality the report shows: the published one if it was evaluated, else the
    newest run that was."""
    current = snapshot.current
    if current is not None and current["metrics"].get("evaluation"):
        return current
    return next((run for run in snapshot.runs if run["metrics"].get("evaluation")), None)


def run_k(run: dict | None) -> int:
    """The list length ``run``'s figures were measured at (its ``--top-k``; 12 for a run recorded
    before the evaluation kept it): what its NDCG is "@"."""
    return recorded_k(((run or {}).get("metrics") or {}).get("evaluation"))


def quality_rows(run: dict) -> list[dict]:
    """One row per recommender of ``run``'s evaluation, best NDCG first: recommender, ndcg
    (an Interval), recall, hit_rate, coverage, users, and whether it is the model or the best baseline."""
    evaluation = run["metrics"].get("evaluation") or {}
    best = (run["metrics"].get("gate") or {}).get("best_baseline")
    rows = []
    for name, values in evaluation.items():
        ndcg = Interval(_number(values.get("ndcg")) or 0.0, _number(values.get("ndcg_low")), _number(values.get("ndcg_high")))
        rows.append(
            {
                "recommender": name, "ndcg": ndcg, "recall": _number(values.get("recall")),
                "hit_rate": _number(values.get("hit_rate")), "coverage": _number(values.get("coverage")),
                "users": values.get("users"), "model": name == MODEL, "best_baseline": name == best,
            }
        )
    return sorted(rows, key=lambda row: -row["ndcg"].mean)


@dataclass(frozen=True)
class TrendPoint:
    """One evaluated run in the trend: the model's and the best baseline's NDCG."""

    run_id: str
    started_at: str
    status: str
    model: Interval | None
    baseline: Interval | None
    baseline_name: str | None
    k: int = 12  # the list length the run's NDCG is at (its --top-k)


def trend(snapshot: Snapshot) -> list[TrendPoint]:
    """The evaluated runs among the snapshot's, oldest first."""
    points = []
    for run in reversed(snapshot.runs):
        evaluation = run["metrics"].get("evaluation")
        if not evaluation:
            continue
        best = (run["metrics"].get("gate") or {}).get("best_baseline")
        if best is None:
            baselines = {name: values for name, values in evaluation.items() if name != MODEL}
            best = max(baselines, key=lambda name: baselines[name].get("ndcg") or 0.0) if baselines else None

        def interval(name):
            values = evaluation.get(name) if name else None
            return Interval.of([values.get("ndcg"), values.get("ndcg_low"), values.get("ndcg_high")]) if values else None

        points.append(
            TrendPoint(run["run_id"], str(run["started_at"] or "")[:16], run["status"], interval(MODEL), interval(best), best, run_k(run))
        )
    return points


# --- the lists -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListContents:
    """What the published lists hold."""

    slots: int  # list slots (rows) published
    distinct_items: int
    catalogue_items: int | None
    top: list[tuple[str, int]]  # the most recommended items and their slots, most first
    top_share: float  # share of slots taken by the TOP_SHARE most recommended items
    families: list[tuple[str, int]] = field(default_factory=list)  # slots per family, most first

    @property
    def coverage(self) -> float | None:
        """Share of the catalogue recommended to someone at least once."""
        return self.distinct_items / self.catalogue_items if self.catalogue_items else None


def list_contents(snapshot: Snapshot) -> ListContents:
    """Coverage, concentration and families of the published lists (families by
    ``recsys.data.families.family_of``, the rule used when no catalogue names them)."""
    counts = Counter(snapshot.item_slots)
    slots = sum(counts.values())
    ranked = counts.most_common()
    families: Counter = Counter()
    for item, n in ranked:
        families[family_of(item)] += n
    top_share = sum(n for _, n in ranked[:TOP_SHARE]) / slots if slots else 0.0
    return ListContents(
        slots=slots, distinct_items=len(counts), catalogue_items=snapshot.catalogue_items,
        top=ranked[:TOP_CHART], top_share=top_share, families=families.most_common(),
    )


def reason_group(reason: str | None) -> str:
    """The group of one reason text: the known prefix it starts with, else the text itself."""
    text = " ".join(str(reason or "").split())
    if not text:
        return "(no reason)"
    lowered = text.lower()
    return next((group for group in REASON_GROUPS if lowered.startswith(group)), text)


def reason_groups(snapshot: Snapshot) -> list[tuple[str, int]] | None:
    """Slots per reason group, most first; None when the published table has no reason column."""
    if snapshot.reason_slots is None:
        return None
    groups: Counter = Counter()
    for reason, n in snapshot.reason_slots.items():
        groups[reason_group(reason)] += n
    return groups.most_common()


# --- segments and rules ----------------------------------------------------------------------------


def segment_rows(run: dict) -> list[dict]:
    """``run``'s quality by segment (``runs.metrics["segments"]``): segment, users, and each
    recommender's Interval, in the record's order; [] when the run has none."""
    record = run["metrics"].get("segments") or {}
    rows = []
    for segment in sorted(record, key=lambda name: (SEGMENT_ORDER.index(name) if name in SEGMENT_ORDER else len(SEGMENT_ORDER), name)):
        entry = record[segment]
        names = sorted((name for name in entry if name != "users"), key=lambda name: (not is_published_list(name), name))
        rows.append({"segment": segment, "users": entry.get("users"), "recommenders": {name: Interval.of(entry[name]) for name in names}})
    return rows


def is_published_list(name: str) -> bool:
    """Whether ``name`` is what the run gives customers (the model, or the cold-start list) rather than a baseline."""
    return name == MODEL or name.startswith("cold_start_list")


@dataclass(frozen=True)
class RulesCost:
    """What the business rules changed and cost (``runs.metrics["rules"]``)."""

    removed: dict[str, int]
    pins_placed: int | None
    with_rules: Interval | None
    without_rules: Interval | None
    config: str | None
    config_sha256: str | None


def rules_cost(run: dict) -> RulesCost | None:
    """The rules record of ``run``, None when no rules were applied."""
    record = run["metrics"].get("rules")
    if not record:
        return None
    removed = {str(k): int(v) for k, v in (record.get("removed") or {}).items() if _number(v) is not None}
    if not record.get("config") and not any(removed.values()) and not record.get("pins_placed"):
        return None  # a run without a config or a catalogue that changed anything
    return RulesCost(
        removed=removed, pins_placed=record.get("pins_placed"),
        with_rules=Interval.of(record.get("ndcg_with_rules")), without_rules=Interval.of(record.get("ndcg_without_rules")),
        config=record.get("config"), config_sha256=record.get("config_sha256"),
    )


# --- the summary attached to the Prefect run -------------------------------------------------------


def summary_rows(snapshot: Snapshot) -> list[dict[str, str]]:
    """The report's headline figures as rows of (figure, value), for a table artifact."""
    current = snapshot.current or snapshot.latest
    contents = list_contents(snapshot)
    rows = [("run", current["run_id"]), ("status", current["status"]), ("customers", f"{current['users'] or 0:,}")]
    rows.append(("catalogue coverage", f"{100 * contents.coverage:.1f}%" if contents.coverage is not None else "-"))
    rows.append((f"slots taken by the top {TOP_SHARE} items", f"{100 * contents.top_share:.1f}%"))
    run = evaluated_run(snapshot)
    k = run_k(current)
    if run is not None and run["run_id"] == current["run_id"]:
        for row in quality_rows(run):
            if row["model"] or row["best_baseline"]:
                label = f"model NDCG@{k}" if row["model"] else f"best baseline NDCG@{k} ({row['recommender']})"
                rows.append((label, row["ndcg"].text()))
    else:
        rows.append((f"held-out NDCG@{k}", "not evaluated"))
    cost = rules_cost(current)
    if cost is not None and cost.with_rules and cost.without_rules:
        rows.append((f"NDCG@{k} cost of the rules", f"{cost.without_rules.mean - cost.with_rules.mean:+.4f}"))
    return [{"figure": label, "value": value} for label, value in rows]


def quality_table(run: dict) -> list[dict]:
    """``run``'s evaluation as rows for a table artifact (best NDCG first)."""
    k = run_k(run)
    return [
        {
            "recommender": row["recommender"], f"ndcg@{k}": round(row["ndcg"].mean, 4),
            "95% interval": row["ndcg"].bounds(),
            f"recall@{k}": _rounded(row["recall"]), f"hit_rate@{k}": _rounded(row["hit_rate"]),
            "coverage": _rounded(row["coverage"]), "customers": row["users"],
        }
        for row in quality_rows(run)
    ]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
