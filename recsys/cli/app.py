"""The ``recsys`` command line: a thin layer over the package.

``recsys run`` and ``recsys schedule`` take every field of :class:`recsys.settings.RunOptions` as
an option of the same name (their options are generated from it, so the command line, the flow's
parameters and the deployment's never drift apart). Heavy modules (TensorFlow, Prefect, pandas,
pyarrow) are imported inside the commands that need them, so ``recsys lookup`` starts in a blink.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import logging
import os
import time
import typing
from pathlib import Path
from typing import Annotated, Optional

import typer

from recsys.errors import OptionError, RecsysError
from recsys.schedule import DEFAULT_CRON, DEPLOYMENT_NAME, FLOW_NAME, machine_timezone
from recsys.settings import DB_URL_ENV, DEFAULT_OUTPUT, RunOptions, resolve_db_url

app = typer.Typer(
    help="Nightly two-stage recommender: train, publish every customer's top-12, look customers up.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    suggest_commands=False,  # Click suggests a command for a typo itself: "Did you mean" once
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"recsys {version('recsys')}")
        except PackageNotFoundError:
            typer.echo("recsys (not installed: version unknown)")
        raise typer.Exit()


# Seconds a run waits for its temporary Prefect server to answer (Prefect's own default is 20).
EPHEMERAL_STARTUP_SECONDS = 180


@app.callback()
def _every_command(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Nightly two-stage recommender: train, publish every customer's top-12, look customers up."""
    # Before Prefect is imported by any command: its first-run telemetry notice and its server's
    # analytics are not the operator's concern (set them to opt in).
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The temporary Prefect server of a run without PREFECT_API_URL creates and migrates its
    # database on a machine's first run, which took more than Prefect's 20 s on a fresh 2-core
    # machine (the README's first command failed there). An operator's own value wins.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(EPHEMERAL_STARTUP_SECONDS))


OutputOption = Annotated[Path, typer.Option("--output", "-o", help="Folder of the published store.")]
DbUrlOption = Annotated[
    Optional[str],
    typer.Option("--db-url", envvar="RECSYS_DB_URL", help="SQLAlchemy URL of the SQL store [default: SQLite in --output]."),
]

# The options that say how to read an export (`recsys families`), and those of `recsys evaluate`:
# reading it and training the model.
READ_OPTIONS = (
    "data", "user_column", "time_column", "item_column", "rating_column", "rating_scale", "date_format", "delimiter",
    "header",
)
EVALUATE_OPTIONS = READ_OPTIONS + ("top_k", "candidates", "cold_start_days", "epochs", "ranking_epochs", "seed")
# The same config file as `recsys run` (its [run] section), for the commands that only read an
# export: the nightly job's column names and formats need not be typed again.
READ_CONFIG_HELP = (
    "Config file of `recsys run` (TOML): its [run] options that this command has are used (the command "
    "line overrides them); [rules] is not applied here."
)


def _fail(message: str, code: int = 1) -> None:
    from recsys.store.diagnosis import redact

    # One line, and never a password (the messages are masked where they are made; this is the
    # last look before the terminal).
    typer.echo(f"error: {redact(' '.join(str(message).split()))}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def _db_url_in_environment(options: RunOptions):
    """``options`` without ``db_url``, which goes to ``RECSYS_DB_URL`` for the block instead.

    A flow's parameters are kept by the Prefect server and shown in its UI; a password in the
    database URL must not be one of them. The flow reads the URL from the environment.
    """
    if not options.db_url:
        yield options
        return
    before = os.environ.get(DB_URL_ENV)
    os.environ[DB_URL_ENV] = options.db_url
    try:
        yield options.with_(db_url=None)
    finally:
        if before is None:
            os.environ.pop(DB_URL_ENV, None)
        else:
            os.environ[DB_URL_ENV] = before


def with_run_options(only: tuple[str, ...] | None = None, helps: dict[str, str] | None = None):
    """Give a command every field of :class:`RunOptions` (or those in ``only``) as an option.

    The command receives them as one ``options: RunOptions`` argument; its other parameters stay
    its own. ``helps`` replaces an option's help text for this command. An option given an
    impossible value is refused in one line.
    """
    hints = typing.get_type_hints(RunOptions)
    specs = [spec for spec in dataclasses.fields(RunOptions) if only is None or spec.name in only]

    def decorate(command):
        # The command's own options, their annotations evaluated (this module's are strings, and
        # Typer would lose their help reading them off the wrapper).
        own_hints = typing.get_type_hints(command, include_extras=True)
        own = [
            p.replace(annotation=own_hints.get(p.name, p.annotation))
            for p in inspect.signature(command).parameters.values() if p.name != "options"
        ]
        parameters = []
        for spec in specs:
            meta = spec.metadata
            flags = meta["flags"] or ("--" + spec.name.replace("_", "-"),)
            kind, optional = _unwrap_optional(hints[spec.name])
            limits = {"min": meta["low"], "max": meta["high"]} if kind is int else {}
            limits = {key: value for key, value in limits.items() if value is not None}
            annotation = Annotated[
                Optional[kind] if optional else kind,
                typer.Option(*flags, help=(helps or {}).get(spec.name, meta["help"]), envvar=meta["env"], **limits),
            ]
            parameters.append(inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=spec.default, annotation=annotation))
        parameters += [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]

        @functools.wraps(command)
        def wrapper(**values):
            chosen = {spec.name: values.pop(spec.name) for spec in specs}
            try:
                chosen = _with_config(chosen)
                options = RunOptions(**chosen)
            except RecsysError as exc:
                _fail(str(exc))
            return command(options, **values)

        wrapper.__signature__ = inspect.Signature(parameters)
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        del wrapper.__wrapped__  # Typer reads the signature above, not the command's own
        return wrapper

    return decorate


def _with_config(chosen: dict) -> dict:
    """The options with the ``[run]`` section of ``--config`` (when given) filled in: an option
    given on the command line (or by its environment variable) overrides the file."""
    if not chosen.get("config"):
        return chosen
    import click
    from click.core import ParameterSource

    from recsys.config import read_config

    config = read_config(chosen["config"])
    context = click.get_current_context(silent=True)
    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    out = dict(chosen)
    for name, value in config.run.items():
        if name in out and (context is None or context.get_parameter_source(name) not in given):
            out[name] = value
    return out


def _unwrap_optional(kind) -> tuple[type, bool]:
    """``X | None`` as (X, True); any other type as (type, False)."""
    args = typing.get_args(kind)
    if type(None) in args:
        return next(arg for arg in args if arg is not type(None)), True
    return kind, False


def _check_runner(options: RunOptions) -> None:
    if options.dask_address:
        from prefect.settings import get_current_settings

        if not get_current_settings().api.url:
            # Workers elsewhere cannot reach this process's temporary Prefect server.
            _fail(
                "--dask-address needs a Prefect server that the Dask workers can reach: set PREFECT_API_URL "
                "(here and on the workers), e.g. http://prefect.example:4200/api"
            )


@app.command()
@with_run_options()
def run(
    options: RunOptions,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print Prefect's log lines instead of writing them to DIR/logs/recsys.log.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Run the nightly flow once: train both stages and publish every customer's list.

    When the model may not be published (too little data, no customer with a later item to hold
    out, the quality gate, an evaluation or training that fails on the export) a baseline's lists
    are published instead, with status 'degraded' and the reason. The new lists are health-checked before they replace anything.
    The export, the catalogue and the config's rules are read and validated, and the output
    folder tried, before Prefect starts: bad input is reported in the time the read takes. Exit 0: published (`recsys runs` shows degraded
    runs; the summary says where the log is); exit 1: nothing was replaced, and one line on
    stderr says why.
    """
    began = time.time()
    _check_runner(options)
    from recsys.cli.console import print_summary, quiet_prefect_exit, run_with_progress

    from recsys.store.runs import new_run_id

    url = options.resolved_db_url()
    started = new_run_id()  # run ids are UTC times: the run this command starts sorts after it
    ABANDON_PREFECT_AT_EXIT.clear()
    raise_exceptions = logging.raiseExceptions
    if not (verbose or debug):
        # Errors of Prefect's own log shipping (its server gone) are not the operator's to read.
        logging.raiseExceptions = False
    try:
        with _db_url_in_environment(options) as flow_options:
            summary = run_with_progress(flow_options, verbose=verbose or debug)
    except RecsysError as exc:
        if debug:
            raise
        _fail(str(exc))
    except Exception as exc:
        if debug:
            raise
        from flows.nightly import lost_prefect
        from recsys.store.diagnosis import first_line, redact

        if lost_prefect(exc):
            _lost_prefect(redact(first_line(str(exc)) or type(exc).__name__, url), url, started)

        log = Path(options.output) / "logs" / "recsys.log"
        cause = redact(first_line(str(exc)), url)
        _fail(f"the run failed: {type(exc).__name__}: {cause} (details in {log}; --debug shows the traceback)")
    finally:
        logging.raiseExceptions = raise_exceptions
        if not (verbose or debug):
            quiet_prefect_exit()
    print_summary(dict(summary, total_seconds=time.time() - (PROCESS_STARTED[0] if PROCESS_STARTED else began)))


# When the ``recsys`` process started (set by the launcher): the summary's total is the operator's
# wall time, Python's start-up included. Empty when the app is called in-process (tests).
PROCESS_STARTED: list[float] = []


def _lost_prefect(cause: str, db_url: str, started: str) -> None:
    """The Prefect server stopped answering during ``recsys run``: say whether the run published
    (the store knows), then leave without the minutes Prefect's exit would spend retrying it."""
    from prefect.settings import get_current_settings

    from recsys.store.lookup import recent_runs

    api = get_current_settings().api.url or "(this run's temporary one)"
    try:
        mine = [row for row in recent_runs(db_url, 5) if row["run_id"] >= started]
    except RecsysError:
        mine = []
    published = [row for row in mine if row["is_current"] and row["status"] in ("succeeded", "degraded")]
    ABANDON_PREFECT_AT_EXIT.append(True)
    if published:
        run = published[0]
        typer.echo(f"{run['status']}: run {run['run_id']}")
        typer.echo(
            f"warning: the Prefect server at {api} stopped answering ({cause}); run {run['run_id']} was published "
            f"({run['status']}), but Prefect's record of it is incomplete; `recsys runs` shows it",
            err=True,
        )
        raise typer.Exit(0)
    _fail(
        f"the Prefect server at {api} stopped answering ({cause}) before the run published; nothing was replaced; "
        "check that the server is running, or unset PREFECT_API_URL to let each run start a temporary one"
    )


# Set when `run` lost the Prefect server: the ``recsys`` command then exits at once, skipping
# Prefect's exit-time flushes of logs and events, which would retry the dead server for minutes.
ABANDON_PREFECT_AT_EXIT: list[bool] = []


@app.command()
def lookup(
    user: Annotated[str, typer.Argument(help="Customer id.", show_default=False)] = None,
    output: OutputOption = DEFAULT_OUTPUT,
    db_url: DbUrlOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show a customer's published list (the cold-start list for unknown customers)."""
    from recsys.store.lookup import format_answer
    from recsys.store.lookup import lookup as read_list

    if user is None:
        user = typer.prompt("Customer id")
    try:
        answer = read_list(user, resolve_db_url(output, db_url))
    except RecsysError as exc:
        _fail(str(exc))
    typer.echo(json.dumps(answer.as_dict(), ensure_ascii=False, indent=2) if as_json else format_answer(answer))


@app.command("evaluate")
@with_run_options(only=EVALUATE_OPTIONS + ("config",), helps={"config": READ_CONFIG_HELP})
def evaluate_command(
    options: RunOptions,
    split: Annotated[str, typer.Option(help="'test' (the temporal holdout) or 'validation' (carved from its training part).")] = "test",
    as_json: Annotated[bool, typer.Option("--json", help="Print the tables as JSON, every figure whole.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print the tables as CSV, every figure whole.")] = False,
) -> None:
    """Run the offline protocol: the model and every baseline, per-customer holdout and cold start.

    The tables fit 80 columns (a legend below them says what the short headers mean); --json or
    --csv print every figure whole, for scripts. An export with nothing to evaluate (too little
    data to train on, no customer with a later item to hold out) is one line saying why, exit 1.
    """
    from recsys.cli.console import print_evaluation
    from recsys.data.export import load_interactions
    from recsys.evaluation.protocol import evaluation_report

    if split not in ("test", "validation"):
        _fail("--split must be 'test' or 'validation'")
    if as_json and as_csv:
        _fail("--json and --csv: choose one")
    try:
        interactions, _ = load_interactions(options.data, *options.export_format)
        report = evaluation_report(interactions, options, split)
    except RecsysError as exc:
        _fail(str(exc))
    print_evaluation(report, "json" if as_json else "csv" if as_csv else None)


@app.command()
@with_run_options(
    only=READ_OPTIONS + ("config", "catalogue"),
    helps={"config": READ_CONFIG_HELP, "catalogue": "Catalogue whose family column overrides the name rule."},
)
def families(
    options: RunOptions,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print the families of an export's items (family, how many items, their names).

    Without a catalogue an item's family comes from its name: lowercased, accents removed, amounts
    ("30", "20.000", "10 mil") and digits glued to a word's end dropped, so "Bono virtual
    Crepes&Waffles 10/20/30" are one family.
    """
    from recsys.cli.console import print_families
    from recsys.data.catalogue import read_catalogue
    from recsys.data.export import load_interactions
    from recsys.scoring.rules import family_table

    try:
        interactions, _ = load_interactions(options.data, *options.export_format)
        table = family_table(interactions, read_catalogue(options.catalogue) if options.catalogue else None)
    except RecsysError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(table, ensure_ascii=False, indent=2))
    else:
        print_families(table)


@app.command()
def runs(
    output: OutputOption = DEFAULT_OUTPUT,
    db_url: DbUrlOption = None,
    limit: Annotated[int, typer.Option(min=1, help="How many runs, newest first.")] = 20,
) -> None:
    """List past runs: when, status, customers with a list, headline metrics; then the scheduled
    runs that ended before they could be recorded (refused, a bad export), from DIR/logs."""
    from recsys.cli.console import print_not_started, print_runs
    from recsys.store import not_started
    from recsys.store.lookup import recent_runs

    unrecorded = not_started.recent(output, limit)
    try:
        rows = recent_runs(resolve_db_url(output, db_url), limit)
    except RecsysError as exc:
        if not unrecorded:
            _fail(str(exc))
        rows = []
    print_runs(rows, quiet_when_empty=bool(unrecorded))
    print_not_started(unrecorded)


@app.command()
def report(
    output: OutputOption = DEFAULT_OUTPUT,
    db_url: DbUrlOption = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Where to write the report [default: DIR/report.html].")] = None,
    limit: Annotated[int, typer.Option("--runs", min=1, help="How many of the newest runs the trend shows.")] = 30,
) -> None:
    """Write the run report: one self-contained HTML file to open in a browser (works offline).

    It shows the published run's held-out quality against every baseline with 95% intervals,
    the trend over the last runs, what the lists hold (catalogue coverage, the most recommended
    items, families, reasons), quality by customer segment, and what the business rules cost.
    The nightly run writes the same report to DIR/report.html after publishing.
    """
    from recsys.report.page import FILENAME, write_report

    try:
        path = write_report(resolve_db_url(output, db_url), out or Path(output) / FILENAME, limit)
    except RecsysError as exc:
        _fail(str(exc))
    typer.echo(f"report: {path} (open file://{path.resolve()} in a browser)")


@app.command()
def rollback(output: OutputOption = DEFAULT_OUTPUT, db_url: DbUrlOption = None) -> None:
    """Make the previously published run current again (one transaction), for the morning after a bad night.

    Takes the same locks as a run (the output folder's and the database's), so it never
    interleaves with a publish.
    """
    from recsys.store.lock import run_lock
    from recsys.store.lookup import require_store
    from recsys.store.publish import Store

    url = resolve_db_url(output, db_url)
    try:
        require_store(url)
        with run_lock(output):
            store = Store(url, output)
            with store.lock():
                store.reconcile()  # finish whatever an interrupted run or rollback left half done
                was, now = store.rollback()
    except RecsysError as exc:
        _fail(str(exc))
    typer.echo(f"rolled back: run {now} is current again (run {was} is kept as the previous one; roll back again to undo)")


@app.command()
@with_run_options()
def schedule(
    options: RunOptions,
    cron: Annotated[str, typer.Option(help="Cron expression of the nightly run, read in --timezone.")] = DEFAULT_CRON,
    timezone: Annotated[
        str, typer.Option("--timezone", help=f"IANA time zone the cron is read in [default: this machine's, {machine_timezone()}].", show_default=False)
    ] = None,
    name: Annotated[str, typer.Option(help="Deployment name.")] = DEPLOYMENT_NAME,
) -> None:
    """Serve the flow as a Prefect deployment on a cron schedule (runs until stopped, Ctrl-C).

    Every option of `recsys run` is a parameter of the deployment (the Prefect UI shows them).
    One run at a time: a run that falls due while one runs waits for it. Needs a Prefect server
    (PREFECT_API_URL); the export, the catalogue and the config (read and validated, as a run
    would), the cron, the time zone and the output folder are checked before serving. Each run writes DIR/logs/recsys.log; `recsys runs` lists it (or why it could
    not start).
    """
    from recsys.config import read_rule_files
    from recsys.schedule import check_cron, check_timezone
    from recsys.store.lock import check_writable

    timezone = timezone or machine_timezone()
    try:
        check_cron(cron)
        check_timezone(timezone)
        data = Path(options.data)
        if not data.is_file():
            what = "is a folder" if data.is_dir() else "does not exist"
            raise OptionError(f"--data {data}: {what}; the deployment reads that export every night: name the file")
        # Read again by every run (a campaign is changed by editing them), but bad now they would
        # fail tonight's run: refused here, like the export that does not exist.
        read_rule_files(options)
        check_writable(options.output)
    except RecsysError as exc:
        _fail(str(exc))
    _check_runner(options)
    _check_prefect_server()
    from prefect import serve

    from flows.deployment import deployment

    with _db_url_in_environment(options) as served:
        # The served runs inherit this process's environment, where the database URL goes.
        planned = deployment(served, cron, name, timezone)
        typer.echo(
            f"serving deployment {FLOW_NAME}/{name}: cron '{cron}' in {timezone}, one run at a time, "
            f"export {data.resolve()}, output {Path(options.output).resolve()}; Ctrl-C to stop"
        )
        try:
            serve(planned, print_starting_message=False)
        except KeyboardInterrupt:
            pass
    typer.echo(f"stopped serving {FLOW_NAME}/{name}: no run is scheduled until `recsys schedule` serves it again")


def _check_prefect_server() -> None:
    """A served deployment needs a Prefect server that outlives this process, and one that answers."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        _fail(
            "recsys schedule needs a Prefect server (a temporary one would take the schedule with it): "
            "start one with `prefect server start` and point at it with "
            "`prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api` (or export PREFECT_API_URL)"
        )
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        _fail(f"the Prefect server at {url} does not answer ({type(problem).__name__}); start it with `prefect server start`")


@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", help="Where to write the export (.csv or .parquet; its folder must exist).")] = Path("data/interactions_sample.csv"),
    customers: Annotated[int, typer.Option(min=1)] = 2500,
    items: Annotated[int, typer.Option(min=2)] = 250,
    per_customer: Annotated[
        float, typer.Option(help="Mean redemptions per customer (repeats of an item count; units redeemed together do not).")
    ] = 2.5,
    seed: Annotated[int, typer.Option()] = 7,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists (never replaced otherwise).")] = False,
) -> None:
    """Write a synthetic export in the real export's format (the sample in data/ comes from this).

    An existing file is never replaced without --force; the last line says where the file went.
    """
    from recsys.synthetic.generate import main as synthetic_main

    synthetic_main(
        ["--customers", str(customers), "--items", str(items), "--per-customer", str(per_customer),
         "--seed", str(seed), "--out", str(out)] + (["--force"] if force else [])
    )


def main() -> None:
    """Entry point of the Typer app (``recsys.cli.launcher`` is the ``recsys`` command's)."""
    app()
