"""Unreachable and unusable stores: one line naming the store (its password masked), what failed
and what to check; no password in any message, log line, flow parameter or runs.message."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import csv_text

REPO = Path(__file__).resolve().parents[1]
SECRET = "Sup3r-s3cret"
RUN_ARGS = ["--no-evaluate", "--epochs", "1", "--ranking-epochs", "1"]
# Unreachable in different ways: nothing listens; no such host; no server socket; not a URL; a
# driver that is not installed; a dialect that does not exist.
STORES = {
    "connection refused": (f"postgresql+psycopg://recsys:{SECRET}@127.0.0.1:1/recsys", "check that the server is running"),
    "unknown host": (f"postgresql+psycopg://recsys:{SECRET}@no-such-host.invalid/recsys", "check the host name"),
    "no server socket": (f"postgresql+psycopg://recsys:{SECRET}@/recsys?host=/nonexistent", "no server listens"),
    "not a port": (f"postgresql+psycopg://recsys:{SECRET}@db.example:port/recsys", "is not a database URL"),
    "driver not installed": (f"mysql://recsys:{SECRET}@db.example/recsys", "driver"),
    "unknown dialect": (f"nosuchdb://recsys:{SECRET}@db.example/recsys", "is not a database URL"),
}


@pytest.fixture(autouse=True)
def no_db_url_env(monkeypatch):
    monkeypatch.delenv("RECSYS_DB_URL", raising=False)


def one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    assert "Traceback" not in stderr and "sqlalche.me" not in stderr, stderr[-3000:]
    return errors[0]


@pytest.mark.slow
@pytest.mark.parametrize("case", list(STORES))
def test_recsys_run_on_an_unusable_store_says_which_what_and_what_to_check(prefect_test_harness, synthetic, tmp_path, capfd, case):
    from recsys.cli.app import app

    url, check = STORES[case]
    data = tmp_path / "interactions.csv"
    data.write_text(csv_text(synthetic.rows))
    output = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", "--data", str(data), "--output", str(output), "--db-url", url, *RUN_ARGS])
    captured = capfd.readouterr()
    everything = result.output + captured.out + captured.err
    assert result.exit_code == 1, everything[-3000:]
    line = one_error_line(result.stderr)
    assert "recsys:***@" in line and check in line, line
    assert SECRET not in everything
    log = output / "logs" / "recsys.log"
    assert not log.exists() or SECRET not in log.read_text()


def _flow_parameters() -> list[str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return [repr(run.parameters) for run in client.read_flow_runs(limit=200)]


@pytest.mark.slow
def test_a_password_in_db_url_never_becomes_a_flow_parameter(prefect_test_harness, synthetic, tmp_path, capfd):
    """Prefect keeps every flow run's parameters in its database and shows them in its UI."""
    from recsys.cli.app import app

    data = tmp_path / "interactions.csv"
    data.write_text(csv_text(synthetic.rows))
    url = STORES["connection refused"][0]
    before = set(_flow_parameters())
    result = CliRunner().invoke(app, ["run", "--data", str(data), "--output", str(tmp_path / "out"), "--db-url", url, *RUN_ARGS])
    capfd.readouterr()
    assert result.exit_code == 1
    new = [p for p in _flow_parameters() if p not in before]
    assert new, "the flow never started"
    assert not [p for p in new if SECRET in p]
    assert os.environ.get("RECSYS_DB_URL") is None  # the run's environment is given back


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RECSYS_DB_URL"}
    return subprocess.run([sys.executable, "-m", "recsys.cli", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("command", ["lookup", "runs", "rollback"])
@pytest.mark.parametrize("case", ["connection refused", "unknown host"])
def test_the_other_commands_on_an_unreachable_store_say_it_in_one_line(tmp_path, command, case):
    url, check = STORES[case]
    args = [command, "42"] if command == "lookup" else [command]
    done = cli(*args, "--db-url", url, "--output", str(tmp_path / "out"))
    assert done.returncode == 1, done.stderr[-3000:]
    line = one_error_line(done.stderr)
    assert "recsys:***@" in line and check in line, line
    assert SECRET not in done.stdout + done.stderr


def test_a_failed_run_records_its_message_without_the_password(tmp_path):
    from datetime import UTC, datetime

    from recsys.settings import resolve_db_url
    from recsys.store.publish import Store

    store = Store(resolve_db_url(tmp_path / "out"), tmp_path / "out")
    store.ensure_schema()
    with pytest.raises(RuntimeError):
        with store.recording("run1", datetime(2024, 1, 1, tzinfo=UTC), "in.csv", {}):
            raise RuntimeError(f"could not reach postgresql://recsys:{SECRET}@db.example/recsys (password={SECRET})")
    with sqlite3.connect(tmp_path / "out" / "recsys.db") as conn:
        [(status, message)] = conn.execute("SELECT status, message FROM runs").fetchall()
    assert status == "failed" and SECRET not in message and "recsys:***@db.example" in message


def test_a_wrong_password_against_a_real_server_is_one_line(tmp_path):
    """(Needs RECSYS_TEST_POSTGRES_URL.)"""
    url = os.environ.get("RECSYS_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("RECSYS_TEST_POSTGRES_URL is not set")
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    wrong = url.replace(f":{parts.password}@", f":{SECRET}@", 1)
    done = cli("runs", "--db-url", wrong)
    assert done.returncode == 1
    line = one_error_line(done.stderr)
    assert "check the user name and password" in line and SECRET not in done.stderr, line


def test_store_errors_are_described_by_what_to_check():
    from recsys.store.diagnosis import advice, describe, redact, safe_url

    assert advice('connection to server at "h", port 5432 failed: FATAL:  password authentication failed for user "u"') == (
        "check the user name and password", False)
    assert advice("server closed the connection unexpectedly")[1] is True
    assert advice("database is locked")[1] is True
    assert advice("database or disk is full")[1] is False
    assert advice("something new", sqlstate="40001")[1] is True
    assert safe_url(f"postgresql://u:{SECRET}@h:5432/db?sslmode=require") == "postgresql://u:***@h:5432/db?sslmode=require"
    assert SECRET not in safe_url(f"postgresql://u@h/db?password={SECRET}")
    assert safe_url("sqlite:////srv/recsys.db") == "sqlite:////srv/recsys.db"
    text = redact(f"failed: postgresql+psycopg://u:{SECRET}@h/db and dsn password={SECRET} host=h")
    assert SECRET not in text and "u:***@h" in text
    line = describe(f"postgresql://u:{SECRET}@h/db", "cannot open the store", f"connection failed: refused {SECRET}\n\tIs the server running?")
    assert line == "postgresql://u:***@h/db: cannot open the store (connection failed: refused ***); check the database server and its log"


@pytest.mark.parametrize(
    ("make", "expect"),
    [
        (lambda tmp: "sqlite:////proc/recsys-test/recsys.db", "cannot create the database's folder"),
        (lambda tmp: f"sqlite:///{tmp}", "check that the database file's folder exists and is writable"),
        (lambda tmp: f"sqlite:///{_not_a_database(tmp)}", "it is not a SQLite database"),
    ],
    ids=["folder cannot be made", "a directory", "not a database"],
)
def test_an_unusable_sqlite_store_names_the_database_and_what_to_check(tmp_path, make, expect):
    from recsys.errors import StoreError
    from recsys.store.publish import Store

    url = make(tmp_path)
    with pytest.raises(StoreError) as raised:
        Store(url, tmp_path / "out").ensure_schema()
    message = str(raised.value)
    assert message.startswith(url) and expect in message and "\n" not in message, message


def _not_a_database(tmp: Path) -> Path:
    path = tmp / "notes.txt"
    path.write_text("not a database, " * 100)
    return path
