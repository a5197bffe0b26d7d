"""What the command line shows: progress bars during a run, the run summary, a customer's list."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timezone
from contextlib import contextmanager, nullcontext
from pathlib import Path


from rich.console import Console
from rich.table import Table

from recsys.logfile import PasswordFilter, file_handler as run_log_handler, log_path  # noqa: F401 - PasswordFilter: re-exported



@contextmanager
def prefect_logs_to(path: Path) -> Iterator[Path | None]:
    """Send Prefect's console log lines (task logs, tracebacks) to ``path`` instead of the terminal.

    The terminal keeps the progress bars, the summary and one-line errors; the full story of a run
    is in the log file (and on the Prefect server, when one is configured).
    """
    import logging

    from prefect.logging.handlers import PrefectConsoleHandler

    root = logging.getLogger()
    consoles = [handler for handler in root.handlers if isinstance(handler, PrefectConsoleHandler)]
    # Prefect's internal services (its event and log workers) log to stderr on a handler of their
    # own: when its server stops answering, a line per event it could not send.
    internal = logging.getLogger("prefect._internal")
    internal_streams = [handler for handler in internal.handlers if isinstance(handler, logging.StreamHandler)]
    file_handler, path = run_log_handler(path)
    for handler in consoles:
        root.removeHandler(handler)
    root.addHandler(file_handler)
    for handler in internal_streams:
        internal.removeHandler(handler)
    internal.addHandler(file_handler)
    # Python warnings (NumPy's "Mean of empty slice" on a tiny export) are log lines too.
    logging.captureWarnings(True)
    try:
        yield path
    finally:
        logging.captureWarnings(False)
        root.removeHandler(file_handler)
        internal.removeHandler(file_handler)
        file_handler.close()
        for handler in consoles:
            root.addHandler(handler)
        for handler in internal_streams:
            internal.addHandler(handler)


def quiet_prefect_exit() -> None:
    """Keep Prefect's "Stopping temporary server" line, logged when the process exits (after the
    run's log lines went to the log file), off the terminal and out of piped output."""
    import logging
    import sys

    if "prefect.logging.handlers" not in sys.modules:
        return  # Prefect never started (bad input refused before it): nothing to quiet, nothing to import

    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(isinstance(f, _TemporaryServerFilter) for f in handler.filters):
            handler.addFilter(_TemporaryServerFilter())


class _TemporaryServerFilter:
    def filter(self, record) -> bool:
        return not (record.name == "prefect" and record.getMessage().startswith("Stopping temporary server"))


def run_with_progress(options, verbose: bool = False) -> dict:
    """Run the nightly flow once with ``options`` (``RunOptions``), with Rich progress for every step.

    What can be checked without Prefect is checked first: the export is read and validated, so
    are the catalogue and the config's rules (pins within ``--top-k``), and the output folder is
    tried, so bad input is reported in the time the read takes, before a Prefect server starts,
    and leaves no ``logs/`` behind. The run then takes the export as read (unless the file
    changed meanwhile) and reads the small catalogue and config again. Prefect's log lines go to
    ``<output>/logs/recsys.log`` unless ``verbose``.
    """
    from recsys.config import read_rule_files
    from recsys.data.export import load_interactions, read_once
    from recsys.errors import RecsysError
    from recsys.progress import reporting, step
    from recsys.store.lock import check_writable

    with _progress_display() as reporter, reporting(reporter):
        arguments = (options.data, *options.export_format)
        started = time.perf_counter()
        with step("Reading the export"):
            try:
                loaded = load_interactions(*arguments)
            except RecsysError as exc:
                if not exc.transient:
                    raise
                loaded = None  # replaced while read (a new night's file landing): the run reads it again, with retries
            read_rule_files(options)
        read_seconds = time.perf_counter() - started
        check_writable(options.output)
        reporter.waiting("Starting the Prefect run")  # until the flow's first step begins
        from flows.nightly import nightly
        from flows.runners import flow_for

        already_read = read_once(options.data, options.export_format, loaded) if loaded is not None else nullcontext()
        with already_read, (nullcontext() if verbose else prefect_logs_to(log_path(options.output))) as log:
            summary = flow_for(nightly, options)(options)
    seconds = summary["seconds"]
    # The export was read here, before the run: its seconds are the load's.
    seconds["load"] = round(seconds.get("load", 0.0) + read_seconds, 2)
    return dict(summary, log=str(log) if log else None)


class _Reporter:
    """The progress display's side of ``recsys.progress``: one line per step, a bar once the
    step knows its total, what the step is doing now after its name."""

    def __init__(self, progress) -> None:
        self.progress = progress
        self.pending: list = []  # "waiting" lines, done as soon as the next step starts

    def waiting(self, description: str) -> None:
        """A line for something with no steps of its own (Prefect starting): done when a step begins."""
        self.pending.append(self.progress.add_task(description, total=None))

    def _settle(self) -> None:
        for task_id in self.pending:
            self.progress.update(task_id, total=1, completed=1)
        self.pending.clear()

    def __call__(self, description: str):
        self._settle()
        task_id = self.progress.add_task(description, total=None)

        def update(done: int, total: int, note: str | None = None) -> None:
            text = f"{description}: {note}" if note else description
            self.progress.update(task_id, completed=done, total=total, description=text)

        def close() -> None:
            task = self.progress.tasks[task_id]
            total = task.total or task.completed or 1
            self.progress.update(task_id, completed=total, total=total, description=description)

        return update, close


@contextmanager
def _progress_display():
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class Counts(ProgressColumn):
        """done/total once the total is known; nothing before (never a ``0/?`` that stays)."""

        def render(self, task) -> Text:
            if task.total is None:
                return Text("")
            return Text(f"{int(task.completed):,}/{int(task.total):,}", style="progress.download")

    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), Counts(), TimeElapsedColumn(), console=console, transient=False
    ) as progress:
        reporter = _Reporter(progress)
        try:
            yield reporter
        finally:
            reporter._settle()


def print_summary(summary: dict) -> None:
    """The end-of-run summary: status, counts, seconds per stage, where the files are."""
    console = Console(soft_wrap=True)  # a path or a message is never cut into lines
    status = summary["status"]
    style = "green" if status == "succeeded" else "yellow"
    console.print(f"[bold {style}]{status}[/]: run {summary['run_id']}")
    customers = summary.get("customers", summary["users"])
    console.print(
        f"published lists for {summary['users']:,} of {customers:,} customers ({summary['rows']:,} rows) over "
        f"{summary['items']:,} items from {summary['input_rows']:,} interactions"
    )
    if summary["users"] < customers:
        console.print(
            f"  {customers - summary['users']:,} customers got no list: they already took every item there is "
            "to offer them (`recsys lookup` says so)"
        )
    for note in summary.get("notes", []):
        console.print(f"  input: {note}")
    if summary.get("reason"):
        label = "quality gate" if summary.get("gate_passed") is False else "degraded"
        console.print(f"  [bold yellow]{label}: {summary['reason']}[/]", soft_wrap=True)
    rules = summary.get("rules") or {}
    if rules.get("config") or any((rules.get("removed") or {}).values()) or rules.get("pins_placed"):
        removed = ", ".join(f"{name} {count:,}" for name, count in rules["removed"].items() if count) or "nothing"
        console.print(f"  rules: took out {removed} (list slots); {rules['pins_placed']:,} pins placed", soft_wrap=True)
        if rules.get("ndcg_with_rules") and rules.get("ndcg_without_rules"):
            (w, wl, wh), (o, ol, oh) = rules["ndcg_with_rules"], rules["ndcg_without_rules"]
            console.print(f"  rules cost: held-out NDCG {o:.4f} ({ol:.4f}-{oh:.4f}) without, {w:.4f} ({wl:.4f}-{wh:.4f}) with")
    # Catalogue items the export never saw are among the input notes above (runs.metrics has them all).
    evaluation = summary.get("evaluation")
    if evaluation:
        from recsys.evaluation import recorded_k

        k = recorded_k(evaluation)  # the run's --top-k: the gate's line above says the same
        table = Table(title=f"held-out evaluation (NDCG@{k} with its 95% interval, recall@{k})", box=None)
        table.add_column("recommender")
        table.add_column("ndcg", justify="right")
        table.add_column("95% interval", justify="right")
        table.add_column("recall", justify="right")
        for name, values in evaluation.items():
            table.add_row(name, f"{values['ndcg']:.4f}", _interval(values), f"{values['recall']:.4f}")
        console.print(table)
    stages = Table(title="seconds per stage", show_header=False, box=None)
    seconds = dict(summary["seconds"])
    total = summary.get("total_seconds")
    if total is not None:
        # What no stage timed (starting Python and Prefect, the flow's own bookkeeping), so the
        # lines add up to the run's wall time.
        seconds["other (start-up, Prefect)"] = max(0.0, total - sum(seconds.values()))
    for stage, value in seconds.items():
        stages.add_row(stage, f"{value:.1f}")
    if total is not None:
        stages.add_row("total", f"{total:.1f}")
    console.print(stages)
    console.print(f"Parquet: {summary['parquet']}")
    console.print(f"SQL:     {summary['db_url']}")
    if summary.get("report"):
        console.print(f"Report:  {summary['report']}")
    if summary.get("log"):
        console.print(f"Log:     {summary['log']}")


def print_evaluation(report, as_format: str | None = None) -> None:
    """The protocol's tables: holdout (model and baselines) and cold start.

    In a terminal or a pipe: tables that fit 80 columns (short headers, a legend below, figures
    to 4 decimals); ``as_format`` ``"json"`` or ``"csv"``: every figure whole, the seconds too.
    """
    cut = datetime.fromtimestamp(report.cold_start_cut, timezone.utc) if report.cold_start_cut is not None else None
    if as_format:
        print(evaluation_text(report, as_format, cut), end="")
        return
    console = Console(soft_wrap=True)
    console.print(_metrics_table(report.holdout, f"per-customer temporal holdout ({report.split})"))
    after = f"first seen after {cut:%Y-%m-%d}" if cut else "no customers"
    console.print(_metrics_table(report.cold_start, f"cold start (customers {after})"))
    console.print(
        f"ndcg, recall, hit (hit rate): at {report.holdout.k}, on held-out items; 95% CI: bootstrap interval of ndcg; "
        "cover: share of the catalogue the lists use; custs: customers scored; *: the cold-start list. "
        "--json or --csv print every figure whole, and the seconds.",
        soft_wrap=False,  # prose: wrapped at the width, unlike the figures
    )


def evaluation_text(report, as_format: str, cut: datetime | None) -> str:
    """The report as JSON (an object with both tables) or CSV (one row per recommender and table)."""
    import csv
    import io
    import json

    tables = {"holdout": report.holdout.table, "cold_start": report.cold_start.table}
    if as_format == "json":
        document = {
            "split": report.split,
            "cold_start_cut": cut.isoformat() if cut else None,
            **{name: _records(table) for name, table in tables.items()},
        }
        return json.dumps(document, indent=2) + "\n"
    out = io.StringIO()
    writer = None
    for name, table in tables.items():
        for row in _records(table):
            if writer is None:
                writer = csv.DictWriter(out, fieldnames=["table", "split", *row], lineterminator="\n")
                writer.writeheader()
            writer.writerow({"table": name, "split": report.split, **row})
    return out.getvalue()


def _records(table) -> list[dict]:
    """Rows with plain Python values (NaN, an interval over too few customers, as null)."""
    records = []
    for row in table.to_dict("records"):
        clean = {}
        for key, value in row.items():
            value = value.item() if hasattr(value, "item") else value
            clean[key] = None if isinstance(value, float) and value != value else value
        records.append(clean)
    return records


def _interval(values: dict) -> str:
    low, high = values.get("ndcg_low"), values.get("ndcg_high")
    if low is None or high is None or low != low:  # NaN: too few customers for an interval
        return "-"
    return f"{low:.3f}-{high:.3f}"


def _display_name(name: str) -> str:
    """A recommender's name as the 80-column table shows it (the cold-start list marked ``*``)."""
    if name.startswith("cold_start_list (") and name.endswith(")"):
        return name[len("cold_start_list (") : -1] + "*"
    return name


def _metrics_table(evaluation, title: str) -> Table:
    from rich import box

    # No vertical rules and short headers: a 22-character name and six figures fit 80 columns.
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("recommender", no_wrap=True)
    for column in ("ndcg", "95% CI", "recall", "hit", "cover", "custs"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in evaluation.table.to_dict("records"):
        table.add_row(
            _display_name(row["recommender"]), f"{row['ndcg']:.4f}", _interval(row), f"{row['recall']:.4f}",
            f"{row['hit_rate']:.4f}", f"{row['coverage']:.3f}", f"{int(row['users']):,}",
        )
    return table


def print_not_started(entries: list[dict]) -> None:
    """Scheduled runs that ended before the store recorded them, newest first."""
    if not entries:
        return
    console = Console(soft_wrap=True)
    console.print("not started (scheduled runs that ended before they were recorded; DIR/logs/recsys.log has the rest):")
    for entry in entries:
        console.print(f"  {entry.get('run_id', '?')} at {entry.get('at', '?')}: {entry.get('message', '')}", markup=False)


def print_runs(rows: list[dict], quiet_when_empty: bool = False) -> None:
    """Past runs, newest first; notes (why a run failed or was degraded) below the table."""
    console = Console(soft_wrap=True)  # a path or a message is never cut into lines
    if not rows:
        if not quiet_when_empty:
            console.print("no runs yet")
        return
    from rich import box

    # No vertical rules: a run id, its status, customers and the two figures fit 80 columns.
    table = Table(title="runs, newest first (* = published now)", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("run", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("customers", justify="right", no_wrap=True)
    table.add_column("model/best", justify="right", no_wrap=True)
    table.add_column("gap, 95%", justify="right", no_wrap=True)
    from recsys.evaluation import recorded_k

    # Each run's figures are at its own --top-k; when the runs listed differ, each figure says its k.
    ks = {recorded_k(row["metrics"]["evaluation"]) for row in rows if row["metrics"].get("evaluation")}
    notes = []
    for row in rows:
        evaluation = row["metrics"].get("evaluation", {})
        gate = row["metrics"].get("gate", {})
        best = gate.get("best_baseline")
        model = evaluation.get("two_stage", {}).get("ndcg")
        baseline = evaluation.get(best, {}).get("ndcg") if best else None
        headline = f"{model:.3f}/{baseline:.3f}" if model is not None and baseline is not None else "-"
        if headline != "-" and len(ks) > 1:
            headline += f" @{recorded_k(evaluation)}"
        difference = gate.get("difference")
        gap = f"{difference[1]:+.3f}..{difference[2]:+.3f}" if difference and difference[1] == difference[1] else "-"
        marker = "* " if row["is_current"] else "  "
        table.add_row(
            marker + row["run_id"], row["status"],
            f"{row['users']:,}" if row["users"] is not None else "-", headline, gap,
        )
        if row["message"]:
            notes.append(f"{row['run_id']}: {row['message']}")
    console.print(table)
    at = f"NDCG@{ks.pop() if ks else recorded_k(None)}" if len(ks) <= 1 else "NDCG@k (k: the run's --top-k, after the figures)"
    console.print(
        f"model/best: {at} of the model and of the best baseline on held-out items; gap: the 95% interval of their difference",
        soft_wrap=False,  # prose: wrapped at the width
    )
    for note in notes:
        console.print(note, soft_wrap=True)


def print_families(rows: list[dict]) -> None:
    """The families of an export: family, how many items, their names."""
    console = Console()
    table = Table(title=f"{len(rows):,} families", box=None)
    table.add_column("family")
    table.add_column("items", justify="right")
    table.add_column("names")
    for row in rows:
        table.add_row(row["family"], f"{row['items']:,}", "; ".join(row["names"]))
    console.print(table)
