"""The run report as one self-contained HTML page: CSS inline, charts inline SVG, no script,
nothing fetched from anywhere, so it opens offline from a file or an e-mail attachment."""

from __future__ import annotations

import html
import os
from datetime import datetime, timezone
from pathlib import Path

from recsys.errors import StoreError
from recsys.report import charts
from recsys.report.contents import (
    TOP_SHARE,
    Interval,
    Snapshot,
    evaluated_run,
    is_published_list,
    list_contents,
    quality_rows,
    read_store,
    reason_groups,
    rules_cost,
    run_k,
    segment_rows,
    trend,
)

FILENAME = "report.html"
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 980px;
       padding: 1.5rem; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; }
.meta { color: #59636e; } .note { background: #fff8c5; border-left: 4px solid #d4a72c; padding: .5rem .8rem; }
.fail { background: #ffebe9; border-left-color: #cf222e; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .9rem; }
th, td { padding: .25rem .7rem; border-bottom: 1px solid #d0d7de; text-align: right; }
th:first-child, td:first-child { text-align: left; } tr.model td { font-weight: 600; color: #1f6feb; }
.figures { display: flex; gap: 1rem; flex-wrap: wrap; } .figure { border: 1px solid #d0d7de; border-radius: 6px; padding: .6rem 1rem; }
.figure b { display: block; font-size: 1.4rem; }
svg { max-width: 100%; height: auto; display: block; margin: .6rem 0; }
pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; font-size: .8rem; }
"""


def write_report(db_url: str, path: Path, limit: int = 30) -> Path:
    """Read the store at ``db_url`` and write the report to ``path`` (replaced as a whole: written
    beside it, then renamed). ``limit``: runs in the trend. ``StoreError`` with no store, or when
    the file cannot be written."""
    return save(render(read_store(db_url, limit)), path)


def save(page: str, path: Path) -> Path:
    """Write ``page`` to ``path`` as a whole (beside it, then renamed), so a browser never reads
    half a report; ``StoreError`` when it cannot be written."""
    path = Path(path)
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staged.write_text(page, encoding="utf-8")
        os.replace(staged, path)
    except OSError as exc:
        staged.unlink(missing_ok=True)
        raise StoreError(f"{path}: cannot write the report ({exc.strerror or exc})") from None
    return path


def render(snapshot: Snapshot) -> str:
    """The whole page for ``snapshot``."""
    sections = [
        _header(snapshot), _quality(snapshot), _trend(snapshot), _lists(snapshot), _segments(snapshot), _rules(snapshot),
    ]
    title = "recsys run report"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{title}</title><style>{CSS}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def _e(value) -> str:
    return html.escape(str(value))


def _f(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _interval(value: Interval | None) -> str:
    return "-" if value is None else value.text()


def _table(header: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        f"<tr{' class=' + chr(34) + cls + chr(34) if cls else ''}>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>"
        for row, cls in zip(rows, classes or [""] * len(rows))
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(label: str, value: str) -> str:
    return f'<div class="figure">{_e(label)}<b>{_e(value)}</b></div>'


def _header(snapshot: Snapshot) -> str:
    current, latest = snapshot.current, snapshot.latest
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = ["<h1>recsys run report</h1>", f'<p class="meta">Written {made} from {_e(snapshot.source)}.</p>']
    if current is None:
        parts.append('<p class="note fail">No run is published: the lists below are empty.</p>')
    else:
        users = f"{current['users']:,}" if current["users"] is not None else "-"
        parts.append(
            f"<p>Published now: run <b>{_e(current['run_id'])}</b> ({_e(current['status'])}), "
            f"started {_e(str(current['started_at'])[:19])} UTC, lists for {users} customers.</p>"
        )
        if current["status"] == "degraded" and current["message"]:
            parts.append(f'<p class="note">Degraded: {_e(current["message"])}</p>')
    if current is None or latest["run_id"] != current["run_id"]:
        message = f": {latest['message']}" if latest["message"] else ""
        how = "is still running" if latest["status"] == "running" else latest["status"]
        parts.append(
            f'<p class="note fail">The latest run, {_e(latest["run_id"])}, {_e(how)}{_e(message)}; '
            "the lists below are those published before it.</p>"
        )
    return "\n".join(parts)


def _quality(snapshot: Snapshot) -> str:
    parts = ['<h2 id="quality">Quality against every baseline</h2>']
    run = evaluated_run(snapshot)
    # Why the published run has no figures, as the run recorded it (runs before it was recorded: unknown).
    why = snapshot.current["metrics"].get("not_evaluated") if snapshot.current is not None else None
    because = f": {_e(why)}" if why else ""
    if run is None:
        if why:
            parts.append(f"<p>The published run was not evaluated{because}. No run in the store was: there is no quality figure to show.</p>")
        else:
            parts.append(
                "<p>No run in the store was evaluated (runs with <code>--no-evaluate</code>, runs whose evaluation "
                "failed, and runs on an export in which no customer has a later item to hold out): there is no "
                "quality figure to show.</p>"
            )
        return "\n".join(parts)
    if snapshot.current is None or run["run_id"] != snapshot.current["run_id"]:
        parts.append(
            f'<p class="note">The published run was not evaluated{because}; these figures are of run '
            f'{_e(run["run_id"])}, the latest that was.</p>'
        )
    rows = quality_rows(run)
    k = run_k(run)  # the run's --top-k: its gate's reason says the same
    users = next((row["users"] for row in rows if row["users"]), None)
    parts.append(
        f"<p>NDCG@{k} on the items {users:,} customers redeemed after the training period (held out), with its 95% "
        "bootstrap interval over customers: the model (blue) against every baseline (best baseline orange). "
        "Intervals that overlap mean the difference may be noise.</p>" if users else f"<p>NDCG@{k} on held-out items.</p>"
    )
    gate = run["metrics"].get("gate") or {}
    if gate.get("reason"):
        parts.append(f"<p><b>Quality gate:</b> {_e(gate['reason'])}</p>")
    colour = lambda row: charts.MODEL_COLOUR if row["model"] else charts.BASELINE_COLOUR if row["best_baseline"] else charts.OTHER_COLOUR  # noqa: E731
    parts.append(
        charts.interval_chart(
            [(row["recommender"], row["ndcg"].mean, row["ndcg"].low, row["ndcg"].high, colour(row)) for row in rows],
            f"NDCG@{k} (95% interval)", f"Run {run['run_id']}: held-out NDCG@{k}",
        )
    )
    parts.append(
        _table(
            ["recommender", f"NDCG@{k}", "95% interval", f"recall@{k}", f"hit rate@{k}", "coverage", "customers"],
            [
                [row["recommender"], _f(row["ndcg"].mean), row["ndcg"].bounds(), _f(row["recall"]), _f(row["hit_rate"]),
                 _pct(row["coverage"]), f"{row['users']:,}" if row["users"] else "-"]
                for row in rows
            ],
            ["model" if row["model"] else "" for row in rows],
        )
    )
    return "\n".join(parts)


def _trend(snapshot: Snapshot) -> str:
    parts = ['<h2 id="trend">Trend over the last runs</h2>']
    points = trend(snapshot)
    skipped = len(snapshot.runs) - len(points)
    if not points:
        parts.append("<p>No evaluated run yet: the trend starts with the first run that is evaluated.</p>")
        return "\n".join(parts)
    note = f" {skipped} of the last {len(snapshot.runs)} runs were not evaluated (or failed) and are left out." if skipped else ""
    if len(points) == 1:
        note += " One evaluated run so far: the trend builds up night after night."
    ks = sorted({p.k for p in points})
    # Each run's figures are at its own --top-k; runs of different k are told apart in the table.
    at = f"NDCG@{ks[0]}" if len(ks) == 1 else "NDCG@k"
    if len(ks) > 1:
        note += f" The runs were evaluated at different list lengths (k = {', '.join(map(str, ks))}, their --top-k): see the k column."
    parts.append(f"<p>The model's held-out {at} and the best baseline's, run after run, with their 95% bands.{note}</p>")
    parts.append(
        charts.trend_chart(
            _run_labels(points), [p.model for p in points], [p.baseline for p in points],
            [p.status == "degraded" for p in points], f"Model vs best baseline, {at} over runs",
        )
    )
    header = ["run", "status", f"model {at}", "best baseline", f"its {at}"] + (["k"] if len(ks) > 1 else [])
    parts.append(
        _table(
            header,
            [[p.run_id, p.status, _interval(p.model), p.baseline_name or "-", _interval(p.baseline)] + ([str(p.k)] if len(ks) > 1 else [])
             for p in reversed(points)],
        )
    )
    return "\n".join(parts)


def _run_labels(points) -> list[str]:
    """The x labels of the trend: the runs' dates, with the time when several runs share a day."""
    days = [p.started_at[:10] or p.run_id[:8] for p in points]
    if len(set(days)) == len(days):
        return days
    return [p.started_at[:16] or p.run_id for p in points]


def _lists(snapshot: Snapshot) -> str:
    contents = list_contents(snapshot)
    parts = ['<h2 id="lists">What the lists hold</h2>']
    if not contents.slots:
        parts.append("<p>No list is published.</p>")
        return "\n".join(parts)
    catalogue = f"{contents.distinct_items:,} of {contents.catalogue_items:,} items" if contents.catalogue_items else f"{contents.distinct_items:,} items"
    parts.append(
        '<div class="figures">'
        + _figure("catalogue coverage", _pct(contents.coverage) if contents.coverage is not None else "-")
        + _figure("items recommended at least once", catalogue)
        + _figure(f"slots taken by the top {TOP_SHARE} items", _pct(contents.top_share))
        + _figure("families in the lists", f"{len(contents.families):,}")
        + "</div>"
    )
    parts.append(
        charts.bar_chart(
            [item for item, _ in contents.top], [n / contents.slots for _, n in contents.top], "share of all list slots",
            f"The {len(contents.top)} most recommended items",
        )
    )
    families = contents.families[:15]
    parts.append(
        "<p>Families: an item's family is its name with amounts and variants removed "
        "(\"Bono virtual Crepes&amp;Waffles 30\" belongs to \"bono virtual crepes&amp;waffles\").</p>"
    )
    parts.append(
        charts.bar_chart(
            [name for name, _ in families], [n / contents.slots for _, n in families], "share of all list slots",
            f"The {len(families)} largest families", colour=charts.BASELINE_COLOUR,
        )
    )
    parts.append('<h3 id="reasons">Reasons</h3>')
    reasons = reason_groups(snapshot)
    if reasons is None:
        parts.append("<p>The published lists have no <code>reason</code> column (a run before reasons were added): no reason chart.</p>")
    else:
        total = sum(n for _, n in reasons) or 1
        parts.append(
            charts.bar_chart([name for name, _ in reasons], [n / total for _, n in reasons], "share of all list slots", "Why items are in the lists")
        )
    return "\n".join(parts)


def _segments(snapshot: Snapshot) -> str:
    parts = ['<h2 id="segments">Quality by customer segment</h2>']
    run = evaluated_run(snapshot)
    rows = segment_rows(run) if run else []
    k = run_k(run)
    if not rows:
        parts.append("<p>No evaluated run recorded quality by segment.</p>")
        return "\n".join(parts)
    parts.append(
        "<p>New customers: first seen in the last tenth of the export's time span, given the cold-start list "
        "(compared with all-time popularity). Returning customers by how many items they had: the model against "
        f"the best baseline. NDCG@{k} with its 95% interval.</p>"
    )
    chart, table, classes = [], [], []
    for row in rows:
        for name, value in row["recommenders"].items():
            users = f"{row['users']:,}" if row["users"] is not None else "-"
            table.append([row["segment"], users, name, _interval(value)])
            classes.append("model" if is_published_list(name) else "")
            if value is not None:
                colour = charts.MODEL_COLOUR if is_published_list(name) else charts.BASELINE_COLOUR
                chart.append((f"{row['segment']} ({users}): {name}", value.mean, value.low, value.high, colour))
        if not row["recommenders"]:
            table.append([row["segment"], f"{row['users'] or 0:,}", "-", "no customer"])
            classes.append("")
    if chart:
        parts.append(charts.interval_chart(chart, f"NDCG@{k} (95% interval)", "Quality by customer segment"))
    parts.append(_table(["segment", "customers", "recommender", f"NDCG@{k} (95% interval)"], table, classes))
    return "\n".join(parts)


def _rules(snapshot: Snapshot) -> str:
    parts = ['<h2 id="rules">What the rules cost</h2>']
    run = snapshot.current or snapshot.latest
    cost = rules_cost(run)
    k = run_k(run)  # the rules' cost is measured on the run's own evaluation, at its --top-k
    if cost is None:
        parts.append("<p>No rules were applied in this run.</p>")
        return "\n".join(parts)
    compared = [(label, value) for label, value in (("without rules", cost.without_rules), ("with rules", cost.with_rules)) if value]
    if compared:
        parts.append(
            charts.interval_chart(
                [(label, v.mean, v.low, v.high, charts.OTHER_COLOUR if label == "without rules" else charts.MODEL_COLOUR) for label, v in compared],
                f"NDCG@{k} (95% interval)", f"The model's held-out NDCG@{k} with and without the rules",
            )
        )
    if cost.with_rules and cost.without_rules:
        parts.append(f"<p>The rules cost {cost.without_rules.mean - cost.with_rules.mean:+.4f} NDCG@{k} (without minus with).</p>")
    removed = [[reason.replace("_", " "), f"{n:,}"] for reason, n in cost.removed.items()]
    if cost.pins_placed is not None:
        removed.append(["pins placed", f"{int(cost.pins_placed):,}"])
    if removed:
        parts.append(_table(["what the rules changed", "count"], removed))
    if cost.config:
        digest = f" (sha256 {cost.config_sha256[:12]}…)" if cost.config_sha256 else ""
        parts.append(f"<p>The configuration used{_e(digest)}:</p><pre>{_e(cost.config)}</pre>")
    return "\n".join(parts)
