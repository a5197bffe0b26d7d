"""Fault injection beyond the kill trials: a database connection dropped while publishing, a
Prefect server that goes away mid-run, two runs started at once, an export that keeps changing
while it is read. Each ends with the store holding one complete run, and a clear message."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import csv_text, run_flow
from test_postgres import pg_url, server_url  # noqa: F401 - fixtures
from test_robustness import check_store, cli_env, read_sql, recsys_cmd, runs_rows

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
FLOW = dict(epochs=1, ranking_epochs=1, evaluate=False)
RUN_ARGS = ["--no-evaluate", "--epochs", "1", "--ranking-epochs", "1"]


@pytest.fixture(autouse=True)
def no_db_url_env(monkeypatch):
    monkeypatch.delenv("RECSYS_DB_URL", raising=False)


@pytest.fixture
def quick_retries(monkeypatch):
    import flows.nightly

    for name in ("load", "publish"):
        monkeypatch.setattr(flows.nightly, name, getattr(flows.nightly, name).with_options(retry_delay_seconds=0))


def pg_lists(url: str) -> list[tuple]:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql("SELECT user_id, rank, item, run_id FROM recommendations")]
    finally:
        engine.dispose()


def whole(rows: list[tuple], customers: int, top_k: int = 12) -> str:
    """The one run the rows come from, after checking each customer has ranks 1..top_k."""
    assert len(rows) == customers * top_k, len(rows)
    ranks: dict[str, list[int]] = {}
    for user, rank, _item, _run in rows:
        ranks.setdefault(user, []).append(rank)
    assert all(sorted(r) == list(range(1, top_k + 1)) for r in ranks.values())
    (run,) = {r[3] for r in rows}
    return run


def folder(tmp_path: Path, name: str) -> Path:
    (tmp_path / name).mkdir()
    return tmp_path / name


def drop_connection_while_copying(monkeypatch, admin_url: str, times: int) -> list[int]:
    """Terminate the bulk load's own connection (from the server side) in its first ``times`` COPYs."""
    import psycopg

    from recsys.store import bulk
    from recsys.store.lookup import _postgres_params

    real = bulk._copy_csv
    dropped: list[int] = []

    def copy(raw, name, chunk):
        if len(dropped) < times:
            dropped.append(raw.info.backend_pid)
            with psycopg.connect(**_postgres_params(admin_url), autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (raw.info.backend_pid,))
        return real(raw, name, chunk)

    monkeypatch.setattr(bulk, "_copy_csv", copy)
    return dropped


def test_a_connection_dropped_while_publishing_is_retried_and_the_lists_stay_whole(
    pg_url, server_url, prefect_test_harness, synthetic, tmp_path, monkeypatch, quick_retries  # noqa: F811
):
    first, _, _ = run_flow(synthetic, folder(tmp_path, "first"), db_url=pg_url, **FLOW)
    dropped = drop_connection_while_copying(monkeypatch, server_url, times=1)
    second, _, _ = run_flow(synthetic, folder(tmp_path, "second"), db_url=pg_url, **FLOW)
    assert len(dropped) == 1 and second["status"] == "succeeded"
    assert whole(pg_lists(pg_url), 120) == second["run_id"]
    import sqlalchemy as sa

    with sa.create_engine(pg_url).connect() as conn:
        runs = dict(conn.exec_driver_sql("SELECT run_id, status FROM runs").fetchall())
    assert runs == {first["run_id"]: "succeeded", second["run_id"]: "succeeded"}


def test_a_connection_that_keeps_dropping_fails_the_run_in_one_line_and_keeps_the_lists(
    pg_url, server_url, prefect_test_harness, synthetic, tmp_path, monkeypatch, quick_retries  # noqa: F811
):
    from recsys.errors import StoreUnavailable

    first, _, _ = run_flow(synthetic, folder(tmp_path, "first"), db_url=pg_url, **FLOW)
    dropped = drop_connection_while_copying(monkeypatch, server_url, times=10)
    with pytest.raises(StoreUnavailable) as raised:
        run_flow(synthetic, folder(tmp_path, "second"), db_url=pg_url, **FLOW)
    assert len(dropped) == 3  # the first try and two retries
    message = str(raised.value)
    assert "\n" not in message and "the connection dropped" in message and ":***@" in message, message
    assert whole(pg_lists(pg_url), 120) == first["run_id"]


# --- a Prefect server that goes away mid-run --------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_prefect_server(home: Path) -> tuple[subprocess.Popen, str]:
    """A Prefect API server of its own (its own PREFECT_HOME), as Prefect starts a temporary one."""
    import httpx
    import prefect

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_UI_ENABLED="0", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parent.parent), "--factory",
         "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "error"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/api"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.kill()
    raise RuntimeError("the Prefect server did not start")


def test_a_prefect_server_that_goes_away_mid_run_ends_in_one_clear_line_and_a_whole_store(prefect_test_harness, synthetic, tmp_path):
    summary, data, output = run_flow(synthetic, tmp_path, **FLOW)  # a published store to protect
    previous = summary["run_id"]
    server, url = start_prefect_server(tmp_path / "prefect")
    env = {k: v for k, v in cli_env().items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=url, PREFECT_HOME=str(tmp_path / "prefect-client"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    started = time.perf_counter()
    run = subprocess.Popen(
        recsys_cmd("run", "--data", str(data), "--output", str(output), "--no-evaluate", "--epochs", "3", "--ranking-epochs", "2"),
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    log = output / "logs" / "recsys.log"
    try:
        # Kill the server once the run has read the export (training is under way).
        deadline = time.time() + 120
        while time.time() < deadline and not (log.exists() and "read " in log.read_text()):
            time.sleep(0.2)
        assert log.exists() and "read " in log.read_text(), "the run never read its export"
    finally:
        server.kill()
        server.wait()
    out, err = run.communicate(timeout=400)
    elapsed = time.perf_counter() - started
    assert "Traceback" not in err and "Error logging to API" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith(("error:", "warning:"))]
    assert len(lines) == 1 and "Prefect server" in lines[0] and url in lines[0], err[-3000:]
    assert len(err.splitlines()) < 15, err[-3000:]  # progress bars and that line, no Prefect noise
    current = check_store(output)
    runs = runs_rows(output / "recsys.db")
    if run.returncode == 0:
        assert lines[0].startswith("warning:") and current != previous and runs[current]["status"] == "succeeded"
        assert f"run {current}" in lines[0]
    else:
        assert run.returncode == 1 and lines[0].startswith("error:") and current == previous
    assert not [r for r, v in runs.items() if v["status"] == "running"], runs
    assert elapsed < 400


# --- two runs at once ---------------------------------------------------------------------------------


def start_run(data: Path, output: Path, *extra: str, env=None) -> subprocess.Popen:
    return subprocess.Popen(
        recsys_cmd("run", "--data", str(data), "--output", str(output), *RUN_ARGS, *extra),
        env=env or cli_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_two_runs_started_at_once_on_one_output_publish_one_complete_run(prefect_test_harness, synthetic, tmp_path):
    data = tmp_path / "interactions.csv"
    data.write_text(csv_text(synthetic.rows))
    output = tmp_path / "out"
    runs = [start_run(data, output), start_run(data, output)]
    results = [(run.wait(timeout=400), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _ in results)
    loser = [err for code, err in results if code == 1]
    assert codes == [0, 1], results
    assert [line for line in loser[0].splitlines() if line.startswith("error:")] == [
        line for line in loser[0].splitlines() if "another recsys run is already publishing here" in line
    ]
    check_store(output)
    assert [v["status"] for v in runs_rows(output / "recsys.db").values()] == ["succeeded"]


def test_two_runs_with_different_outputs_into_one_postgres_store_publish_one_complete_run(
    pg_url, prefect_test_harness, synthetic, tmp_path  # noqa: F811
):
    data = tmp_path / "interactions.csv"
    data.write_text(csv_text(synthetic.rows))
    runs = [start_run(data, tmp_path / "a", "--db-url", pg_url), start_run(data, tmp_path / "b", "--db-url", pg_url)]
    results = [(run.wait(timeout=400), run.stderr.read()) for run in runs]
    codes = [code for code, _ in results]
    assert sorted(codes) == [0, 1], results
    loser = results[codes.index(1)][1]
    errors = [line for line in loser.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "another recsys run is already publishing to this database" in errors[0], loser
    import sqlalchemy as sa

    run_id = whole(pg_lists(pg_url), 120)
    with sa.create_engine(pg_url).connect() as conn:
        statuses = dict(conn.exec_driver_sql("SELECT run_id, status FROM runs").fetchall())
    assert statuses == {run_id: "succeeded"}


# --- an export that keeps changing while it is read ---------------------------------------------------


def test_an_export_that_keeps_changing_fails_cleanly_after_the_retries(prefect_test_harness, synthetic, tmp_path, monkeypatch, quick_retries):
    import recsys.data.export
    from flows.nightly import nightly
    from recsys.errors import ExportChanged
    from recsys.settings import RunOptions

    summary, data, output = run_flow(synthetic, tmp_path, **FLOW)
    real_validate = recsys.data.export._validate
    reads = []

    def validate_then_append(*args, **kwargs):
        reads.append(1)
        table = real_validate(*args, **kwargs)
        with open(data, "a") as handle:  # another copy still being written
            handle.write(csv_text(synthetic.rows[:1]).split("\n", 1)[1])
        return table

    monkeypatch.setattr(recsys.data.export, "_validate", validate_then_append)
    with pytest.raises(ExportChanged, match="changed while it was being read"):
        nightly(RunOptions(data=data, output=output, **FLOW))
    assert len(reads) == 3
    assert check_store(output) == summary["run_id"]
    assert [v["status"] for v in runs_rows(output / "recsys.db").values()] == ["succeeded"]
    assert read_sql(output / "recsys.db", "SELECT count(*) FROM runs") == [(1,)]


def test_once_the_prefect_api_is_gone_the_remaining_artifacts_are_skipped(prefect_test_harness):
    """Each artifact tried against a dead server costs a minute of client retries: after the first
    connection failure the run tries no more; another error does not stop the next artifact."""
    import httpx
    from prefect import flow

    from flows import artifacts as prefect_artifacts

    calls: list[str] = []

    def gone():
        calls.append("gone")
        raise httpx.ConnectError("[Errno 111] Connection refused")

    def broken():
        calls.append("broken")
        raise ValueError("a table artifact with a bad cell")

    @flow
    def artifacts():
        prefect_artifacts.new_run()
        made = prefect_artifacts.make_artifact
        return [made("a", broken), made("b", gone), made("c", gone)]

    assert artifacts() == [False, False, False]
    assert calls == ["broken", "gone"]


def test_the_health_probe_tells_a_dead_api_from_a_live_one_without_retries(prefect_test_harness):
    """The probe before each artifact: the session's server answers; a port nobody listens on is
    gone, found at once (the client's retries would take a minute)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.artifacts import api_answers

    assert api_answers() is None
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        started = time.perf_counter()
        gone = api_answers()
        assert time.perf_counter() - started < 10
    assert gone is not None and "ConnectError" in gone


def test_an_api_found_gone_by_the_probe_skips_the_artifact_without_trying_it(prefect_test_harness, monkeypatch, caplog):
    from prefect import flow

    from flows import artifacts as prefect_artifacts

    monkeypatch.setattr(prefect_artifacts, "api_answers", lambda: "ConnectError: [Errno 111] Connection refused")
    calls: list[str] = []

    @flow
    def artifacts():
        prefect_artifacts.new_run()
        return [prefect_artifacts.make_artifact(name, lambda: calls.append(name)) for name in ("a", "b")]

    assert artifacts() == [False, False]
    assert calls == []
    assert "the Prefect API is gone (ConnectError" in caplog.text
