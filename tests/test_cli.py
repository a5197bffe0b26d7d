"""The command line as an operator meets it: refusals in one line, before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recsys.cli.app import app


def invoke(*args: str, **kwargs):
    return CliRunner().invoke(app, list(args), **kwargs)


def one_error_line(result) -> str:
    """The command failed with exactly one line on stderr, and no traceback; returns it."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# --- recsys generate ---------------------------------------------------------------------------------


def test_generate_never_replaces_an_existing_file_without_force(tmp_path):
    out = tmp_path / "sample.csv"
    out.write_text("precious")
    line = one_error_line(invoke("generate", "--customers", "10", "--items", "20", "--out", str(out)))
    assert "--force" in line and str(out) in line
    assert out.read_text() == "precious"
    done = invoke("generate", "--customers", "10", "--items", "20", "--out", str(out), "--force")
    assert done.exit_code == 0, done.output
    assert out.read_text().startswith('"ID_CLIENTE"')
    assert done.stdout.strip().endswith(f"to {out.resolve()}")


@pytest.mark.parametrize("name, expected", [("missing/sample.csv", "does not exist"), ("sample.txt", ".csv or .parquet")])
def test_generate_refuses_a_missing_folder_or_an_unreadable_name(tmp_path, name, expected):
    out = tmp_path / name
    assert expected in one_error_line(invoke("generate", "--customers", "10", "--items", "20", "--out", str(out)))
    assert not out.exists() and not out.parent.exists() or list(tmp_path.iterdir()) == []


def test_generate_writes_parquet_and_says_where(tmp_path):
    out = tmp_path / "sample.parquet"
    done = invoke("generate", "--customers", "10", "--items", "20", "--out", str(out))
    assert done.exit_code == 0, done.output
    assert out.is_file() and str(out.resolve()) in done.stdout


# --- bad input reported before anything starts ---------------------------------------------------------


def test_a_bad_export_is_reported_before_prefect_starts_and_leaves_no_logs(tmp_path):
    """No Prefect server (a fresh PREFECT_HOME, no PREFECT_API_URL): the export is read and refused
    in the time the read takes; no temporary server, no DIR/logs in a folder that had none."""
    bad = tmp_path / "bad.csv"
    bad.write_text('"ID_CLIENTE","FECHA_INTERACCION","NOMBRE_CORTO_DE_EXPERIENCIA","CALIFICACION"\n"1","1/4/2021 9:47","x","cinco"\n')
    output = tmp_path / "out"
    output.mkdir()
    home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "RECSYS_DB_URL")}
    env.update(PREFECT_HOME=str(home))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "recsys.cli", "run", "--data", str(bad), "--output", str(output)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    seconds = time.perf_counter() - started
    assert done.returncode == 1, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {bad}: line 2, column CALIFICACION: rating 'cinco' is not a whole number from 1 to 5"]
    assert "Traceback" not in done.stderr and "temporary server" not in done.stderr
    assert list(output.iterdir()) == []  # no logs/, no store
    assert not (home / "prefect.db").exists()  # no temporary Prefect server was started
    assert seconds < 5, f"bad export reported after {seconds:.1f}s"


@pytest.mark.parametrize("where", ["file", "parent-file"])
def test_an_unusable_output_folder_is_refused_before_prefect_starts(tmp_path, where):
    from recsys.cli.console import run_with_progress  # noqa: F401 - the path under test
    from recsys.settings import RunOptions  # noqa: F401

    data = Path(__file__).parents[1] / "data/interactions_sample.csv"
    (tmp_path / "afile").write_text("a file")
    output = tmp_path / "afile" if where == "file" else tmp_path / "afile" / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "RECSYS_DB_URL")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"))
    done = subprocess.run(
        [sys.executable, "-m", "recsys.cli", "run", "--data", str(data), "--output", str(output)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(output) in errors[0] and "not writable" in errors[0], done.stderr
    assert not (tmp_path / "prefect-home" / "prefect.db").exists()
    assert (tmp_path / "afile").read_text() == "a file"


def _in_a_terminal(args: list[str], env: dict, timeout: float = 120) -> str:
    """What ``python -m recsys.cli ARGS`` writes to a terminal (a pseudo-terminal), both streams."""
    import pty
    import select

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "recsys.cli", *args], stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True
    )
    os.close(follower)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process ended
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    process.wait(timeout=30)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_no_prefect_telemetry_notice_on_a_first_run_in_a_terminal(tmp_path):
    """Prefect prints its telemetry notice the first time it is imported in a terminal: not in
    `recsys`'s (the command opts out unless the operator set DO_NOT_TRACK themselves)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DO_NOT_TRACK", "CI", "PREFECT_API_URL")}
    env.update(PREFECT_HOME=str(tmp_path / "fresh-home"), TERM="xterm")
    sample = Path(__file__).parents[1] / "data/interactions_sample.csv"
    text = _in_a_terminal(["schedule", "--data", str(sample), "--output", str(tmp_path / "out"), "--cron", "every night"], env)
    assert "is not a cron expression" in text, text  # Prefect was imported (its cron check)
    assert "anonymous usage" not in text and "telemetry" not in text, text
