"""The ``recsys`` command line: a thin layer over the package.

Heavy modules (TensorFlow, Prefect, pandas, pyarrow) are imported inside the commands that need
them, so ``recsys lookup`` starts in a blink.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from recsys.errors import RecsysError
from recsys.settings import DEFAULT_DATA, DEFAULT_OUTPUT, ColumnMap, Settings, resolve_db_url

app = typer.Typer(
    help="Nightly two-stage recommender: train, publish every customer's top-12, look customers up.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

OutputOption = Annotated[Path, typer.Option("--output", "-o", help="Folder of the published store.")]
DbUrlOption = Annotated[
    Optional[str],
    typer.Option("--db-url", envvar="RECSYS_DB_URL", help="SQLAlchemy URL of the SQL store [default: SQLite in --output]."),
]


TaskRunnerOption = Annotated[
    str,
    typer.Option(
        "--task-runner",
        help="Where the scoring tasks run: 'threads' (this process) or 'dask' (a Dask cluster: a local one, or --dask-address).",
    ),
]
DaskAddressOption = Annotated[
    Optional[str], typer.Option(help="Scheduler of an existing Dask cluster, e.g. tcp://10.0.0.5:8786 (with --task-runner dask).")
]


def _check_runner(task_runner: str, dask_address: str | None) -> None:
    if task_runner not in ("threads", "dask"):
        _fail("--task-runner must be 'threads' or 'dask'")
    if dask_address and task_runner != "dask":
        _fail("--dask-address needs --task-runner dask")
    if dask_address:
        from prefect.settings import get_current_settings

        if not get_current_settings().api.url:
            # Workers elsewhere cannot reach this process's temporary Prefect server.
            _fail(
                "--dask-address needs a Prefect server that the Dask workers can reach: set PREFECT_API_URL "
                "(here and on the workers), e.g. http://prefect.example:4200/api"
            )


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def run(
    data: Annotated[Path, typer.Option("--data", "-d", help="Interactions export (CSV or Parquet).")] = DEFAULT_DATA,
    output: OutputOption = DEFAULT_OUTPUT,
    db_url: DbUrlOption = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, max=100, help="Items per customer.")] = 12,
    candidates: Annotated[int, typer.Option("--candidates", min=1, help="Retrieval candidates per customer.")] = 100,
    include_seen: Annotated[bool, typer.Option("--include-seen", help="Allow items the customer already had.")] = False,
    cold_start_days: Annotated[int, typer.Option(help="Window (days) of the popular list for new customers.")] = 90,
    user_column: Annotated[str, typer.Option(help="Column holding the customer id.")] = ColumnMap().user,
    time_column: Annotated[str, typer.Option(help="Column holding the interaction time.")] = ColumnMap().timestamp,
    item_column: Annotated[str, typer.Option(help="Column holding the item name.")] = ColumnMap().item,
    rating_column: Annotated[str, typer.Option(help="Column holding the 1-5 rating.")] = ColumnMap().rating,
    date_format: Annotated[str, typer.Option(help="strftime format of the time column.")] = Settings().date_format,
    delimiter: Annotated[str, typer.Option(help="CSV field separator ('tab' for a tab).")] = ",",
    epochs: Annotated[Optional[int], typer.Option(help="Retrieval epochs [default: derived from the data size].")] = None,
    ranking_epochs: Annotated[Optional[int], typer.Option(help="Ranking epochs [default: derived].")] = None,
    seed: Annotated[int, typer.Option(help="Random seed: same data and options give the same lists.")] = 42,
    evaluate: Annotated[
        bool,
        typer.Option(
            "--evaluate/--no-evaluate",
            help="Score the model and the baselines on a validation split first; publish the best baseline if the model loses to popularity.",
        ),
    ] = True,
    shard_size: Annotated[int, typer.Option(min=1, help="Customers per scoring task.")] = Settings().shard_users,
    task_runner: TaskRunnerOption = "threads",
    dask_address: DaskAddressOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print Prefect's log lines instead of writing them to DIR/logs/recsys.log.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Run the nightly flow once: train both stages and publish every customer's list."""
    _check_runner(task_runner, dask_address)
    parameters = dict(
        data=str(data), output=str(output), db_url=db_url, top_k=top_k, candidates=candidates,
        include_seen=include_seen, cold_start_days=cold_start_days, user_column=user_column,
        time_column=time_column, item_column=item_column, rating_column=rating_column,
        date_format=date_format, delimiter="\t" if delimiter == "tab" else delimiter,
        retrieval_epochs=epochs, ranking_epochs=ranking_epochs, seed=seed, evaluate=evaluate,
        shard_size=shard_size,
    )
    from recsys.console import run_with_progress

    try:
        summary = run_with_progress(parameters, verbose=verbose or debug, runner=task_runner, dask_address=dask_address)
    except RecsysError as exc:
        if debug:
            raise
        _fail(str(exc))
    except Exception as exc:
        if debug:
            raise
        log = Path(output) / "logs" / "recsys.log"
        _fail(f"the run failed: {type(exc).__name__}: {exc} (details in {log}; --debug shows the traceback)")
    from recsys.console import print_summary

    print_summary(summary)


@app.command()
def lookup(
    user: Annotated[str, typer.Argument(help="Customer id.", show_default=False)] = None,
    output: OutputOption = DEFAULT_OUTPUT,
    db_url: DbUrlOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show a customer's published list (the cold-start list for unknown customers)."""
    from recsys.lookup import format_answer
    from recsys.lookup import lookup as read_list

    if user is None:
        user = typer.prompt("Customer id")
    try:
        answer = read_list(user, resolve_db_url(output, db_url))
    except RecsysError as exc:
        _fail(str(exc))
    typer.echo(json.dumps(answer.as_dict(), ensure_ascii=False, indent=2) if as_json else format_answer(answer))


@app.command("evaluate")
def evaluate_command(
    data: Annotated[Path, typer.Option("--data", "-d", help="Interactions export (CSV or Parquet).")] = DEFAULT_DATA,
    split: Annotated[str, typer.Option(help="'test' (the temporal holdout) or 'validation' (carved from its training part).")] = "test",
    cold_start_days: Annotated[int, typer.Option(help="Window (days) of the cold-start list.")] = 90,
    seed: Annotated[int, typer.Option(help="Random seed of the model.")] = 42,
) -> None:
    """Run the offline protocol: the model and every baseline, per-customer holdout and cold start."""
    from recsys.console import print_evaluation
    from recsys.data import load_interactions
    from recsys.evaluate import evaluation_report
    from recsys.settings import ModelSettings

    if split not in ("test", "validation"):
        _fail("--split must be 'test' or 'validation'")
    settings = Settings(data=data, cold_start_days=cold_start_days, model=ModelSettings(seed=seed))
    try:
        frame, _ = load_interactions(data)
        report = evaluation_report(frame, settings, split)
    except RecsysError as exc:
        _fail(str(exc))
    print_evaluation(report)


@app.command()
def runs(
    output: OutputOption = DEFAULT_OUTPUT,
    db_url: DbUrlOption = None,
    limit: Annotated[int, typer.Option(min=1, help="How many runs, newest first.")] = 20,
) -> None:
    """List past runs: when, status, customers scored, headline metrics."""
    from recsys.console import print_runs
    from recsys.lookup import recent_runs

    try:
        rows = recent_runs(resolve_db_url(output, db_url), limit)
    except RecsysError as exc:
        _fail(str(exc))
    print_runs(rows)


@app.command()
def rollback(output: OutputOption = DEFAULT_OUTPUT, db_url: DbUrlOption = None) -> None:
    """Make the previously published run current again (one transaction), for the morning after a bad night."""
    from recsys.lock import run_lock
    from recsys.lookup import require_store
    from recsys.store import Store

    url = resolve_db_url(output, db_url)
    try:
        require_store(url)
        with run_lock(output):
            store = Store(url, output)
            store.reconcile()  # finish whatever an interrupted run or rollback left half done
            was, now = store.rollback()
    except RecsysError as exc:
        _fail(str(exc))
    typer.echo(f"rolled back: run {now} is current again (run {was} is kept as the previous one; roll back again to undo)")


@app.command()
def schedule(
    cron: Annotated[str, typer.Option(help="Cron expression of the nightly run (server time zone).")] = "0 2 * * *",
    name: Annotated[str, typer.Option(help="Deployment name.")] = "nightly",
    data: Annotated[Path, typer.Option("--data", "-d", help="Interactions export read each night.")] = DEFAULT_DATA,
    output: OutputOption = DEFAULT_OUTPUT,
    db_url: DbUrlOption = None,
    task_runner: TaskRunnerOption = "threads",
    dask_address: DaskAddressOption = None,
) -> None:
    """Serve the flow as a Prefect deployment on a cron schedule (runs until stopped)."""
    _check_runner(task_runner, dask_address)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.nightly import nightly
    from flows.nightly import task_runner as make_runner

    parameters = {"data": str(Path(data).resolve()), "output": str(Path(output).resolve()), "db_url": db_url}
    flow = nightly if task_runner == "threads" else nightly.with_options(task_runner=make_runner(task_runner, dask_address))
    typer.echo(f"serving deployment recsys-nightly/{name} on cron '{cron}'; Ctrl-C to stop")
    flow.serve(name=name, cron=cron, parameters=parameters)


@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", help="Where to write the export (.csv or .parquet).")] = DEFAULT_DATA,
    customers: Annotated[int, typer.Option(min=1)] = 2500,
    items: Annotated[int, typer.Option(min=2)] = 250,
    per_customer: Annotated[float, typer.Option(help="Mean distinct items per customer.")] = 2.5,
    seed: Annotated[int, typer.Option()] = 7,
) -> None:
    """Write a synthetic export in the real export's format (the sample in data/ comes from this)."""
    from recsys.synthetic import main as synthetic_main

    synthetic_main(
        ["--customers", str(customers), "--items", str(items), "--per-customer", str(per_customer),
         "--seed", str(seed), "--out", str(out)]
    )


def main() -> None:
    """Entry point of ``python -m recsys.cli``."""
    app()


if __name__ == "__main__":
    main()
