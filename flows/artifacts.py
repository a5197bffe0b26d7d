"""What a nightly run leaves for people beside its lists: Prefect artifacts (the run, its quality,
a summary table, a link to the report) and the run report, DIR/report.html; and knowing when the
Prefect API has gone away. None of it may fail a published run.
"""

from __future__ import annotations

from prefect import get_run_logger

from recsys.settings import RunOptions


def lost_prefect(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is the Prefect API going away: a transport error of
    Prefect's HTTP client, or the server answering with a 5xx."""
    import httpx

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, httpx.TransportError):
            return True
        if isinstance(exc, httpx.HTTPStatusError) and exc.response is not None and exc.response.status_code >= 500:
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


class _Artifacts:
    """Whether this flow run's Prefect API has been found gone: each try against an unreachable
    server costs about a minute of the client's retries, so the run's remaining artifacts are
    skipped (``make_artifact``)."""

    api_gone = False


def new_run() -> None:
    """A new flow run starts: its Prefect API is not known to be gone."""
    _Artifacts.api_gone = False


def api_answers() -> str | None:
    """Ask the configured Prefect API's ``/health`` once, through Prefect's own client (its TLS
    and auth settings) with its retries off: None when it answers (or no server is configured:
    the API runs in this process), else why not."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    if not PREFECT_API_URL.value():
        return None
    with temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 0}), get_client(sync_client=True) as client:
        exc = client.api_healthcheck()
    return one_line(exc) if exc is not None and lost_prefect(exc) else None


def make_artifact(name: str, create) -> bool:
    """Create one Prefect artifact with ``create()``. An artifact is a report for the UI: failing
    to create one is a warning, never a failed run. Returns whether it was created.

    Each artifact asks the API's health first (``api_answers``, one request), so a server that
    went away during the run costs no retries here."""
    if _Artifacts.api_gone:
        return False
    gone = api_answers()
    if gone is not None:
        _Artifacts.api_gone = True
        get_run_logger().warning("could not create the %s artifact or any after it: the Prefect API is gone (%s)", name, gone)
        return False
    try:
        create()
        return True
    except Exception as exc:  # noqa: BLE001 - see the docstring
        _Artifacts.api_gone = lost_prefect(exc)
        get_run_logger().warning("could not create the %s artifact (%s)", name, one_line(exc))
        return False


def report_artifact(summary: dict) -> None:
    """The run's outcome as a Prefect artifact (``recsys-run``): its run id beside Prefect's own."""
    from prefect.artifacts import create_markdown_artifact

    lines = [
        f"**Run:** {summary['run_id']} ({summary['status']})",
        f"**Customers with a list:** {summary['users']:,} ({summary['rows']:,} rows)",
        f"**Parquet:** {summary['parquet']}",
        f"**SQL:** {summary['db_url']}",
    ]
    if summary.get("reason"):
        lines.append(f"**Reason:** {summary['reason']}")
    make_artifact("run", lambda: create_markdown_artifact(
        key="recsys-run", markdown="\n\n".join(lines), description=f"recsys run {summary['run_id']}"
    ))


def write_run_report(options: RunOptions) -> str | None:
    """Write the run report (``DIR/report.html``) from the store just published to, and attach its
    summary to the Prefect run. The lists are published already: a report or an artifact that
    cannot be made is a warning, never a failed run. Returns the report's path (None if not written)."""
    log = get_run_logger()
    path = options.output / "report.html"
    try:
        from recsys.report import contents, page  # the plotting library is imported here

        path = options.output / page.FILENAME
        snapshot = contents.read_store(options.resolved_db_url())
        page.save(page.render(snapshot), path)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("could not write the run report %s (%s); the run stands", path, one_line(exc), exc_info=exc)
        return None
    log.info("run report written to %s", path)
    attach_summary(snapshot, path)
    return str(path)


def attach_summary(snapshot, path) -> None:
    """The report's headline figures and the quality table as table artifacts, and a link to the
    report, on the Prefect run; each one that fails (no API, a server error) is a warning."""
    from prefect.artifacts import create_link_artifact, create_table_artifact

    from recsys.evaluation import recorded_k
    from recsys.report.contents import quality_table, summary_rows

    current = snapshot.current or snapshot.latest
    artifacts = [
        ("summary", lambda: create_table_artifact(summary_rows(snapshot), key="recsys-run-summary", description="Nightly run: headline figures")),
        ("report link", lambda: create_link_artifact(
            path.resolve().as_uri(), link_text=f"run report ({path.name})", key="recsys-report",
            description="The run report: one self-contained HTML file on the machine that ran the flow",
        )),
    ]
    if current["metrics"].get("evaluation"):
        artifacts.insert(1, ("quality table", lambda: create_table_artifact(
            quality_table(current), key="recsys-quality-table",
            description=f"Held-out NDCG@{recorded_k(current['metrics']['evaluation'])} with 95% intervals, every recommender",
        )))
    for name, create in artifacts:
        make_artifact(name, create)


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
