"""The command line as an operator meets it: refusals in one line, before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import options_app
from recsys.cli.app import app
from recsys.settings import RunOptions


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


SAMPLE = Path(__file__).parents[1] / "data/interactions_sample.csv"


def _without_prefect(tmp_path) -> dict:
    """An environment with no Prefect server (none to reach, a fresh PREFECT_HOME): a command that
    started one would leave ``prefect.db`` there."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "RECSYS_DB_URL")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


@pytest.mark.parametrize("case", ["duplicate item", "missing catalogue from the config", "pin beyond top-k"])
def test_a_bad_catalogue_or_rules_config_is_reported_before_prefect_starts_and_leaves_no_logs(tmp_path, case):
    """Like a bad export: the catalogue and the config's rules are read before Prefect starts, so
    the one line comes in the time the read takes and nothing is created (the probe saw ~7 s, the
    "Starting the Prefect run" bar and a DIR/logs/recsys.log)."""
    catalogue = tmp_path / "catalogue.csv"
    config = tmp_path / "rules.toml"
    if case == "duplicate item":
        catalogue.write_text("item,family,active,valid_from,valid_to,boost\nPlanetario,,true,,,1\nPlanetario,,true,,,2\n")
        args = ["--catalogue", str(catalogue)]
        expected = f"error: {catalogue}: line 3, column item: duplicate item 'Planetario' (first on line 2)"
    elif case == "missing catalogue from the config":
        config.write_text('[run]\ncatalogue = "/nonexistent.csv"\n')
        args = ["--config", str(config)]
        expected = "error: /nonexistent.csv: no such catalogue file"
    else:
        config.write_text('[[rules.pin]]\nitem = "Cena show para dos"\nrank = 13\n')
        args = ["--config", str(config)]
        expected = f"error: {config}: [[rules.pin]] 'Cena show para dos': rank 13 is beyond top-k 12"
    output = tmp_path / "out"  # a fresh folder: not created
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "recsys.cli", "run", "--data", str(SAMPLE), "--output", str(output), *args],
        capture_output=True, text=True, env=_without_prefect(tmp_path), timeout=120,
    )
    seconds = time.perf_counter() - started
    assert done.returncode == 1, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(expected), done.stderr
    assert "Traceback" not in done.stderr and "Starting the Prefect run" not in done.stderr
    assert not output.exists()  # no logs/, no store
    assert not (tmp_path / "prefect-home" / "prefect.db").exists()  # no temporary Prefect server
    assert seconds < 5, f"reported after {seconds:.1f}s"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--catalogue", "/nonexist.csv"], "error: /nonexist.csv: no such catalogue file"),
        (["--config", "{config}"], "error: {config}: [[rules.pin]] 'Cena show para dos': rank 13 is beyond top-k 12"),
        (["--config", "{missing}"], "error: /nonexistent.csv: no such catalogue file"),
    ],
)
def test_schedule_refuses_a_bad_catalogue_or_config_before_serving(tmp_path, args, expected):
    """Checked with the cron, the zone, the export and the output folder: before it looks for a
    Prefect server (none here, so without the check the answer would be that one is missing)."""
    config, missing = tmp_path / "rules.toml", tmp_path / "missing.toml"
    config.write_text('[[rules.pin]]\nitem = "Cena show para dos"\nrank = 13\n')
    missing.write_text('[run]\ncatalogue = "/nonexistent.csv"\n')
    names = dict(config=config, missing=missing)
    done = subprocess.run(
        [sys.executable, "-m", "recsys.cli", "schedule", "--data", str(SAMPLE), "--output", str(tmp_path / "out"),
         *(arg.format(**names) for arg in args)],
        capture_output=True, text=True, env=_without_prefect(tmp_path), timeout=120,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected.format(**names)), done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[run]\ntop-k = 0\n", "[run] top-k: must be at least 1, not 0"),
        ("[run]\ncold-start-days = -5\n", "[run] cold-start-days: must be at least 1, not -5"),
        ("[run]\nrun-date = 2022-12-31T10:00:00\n", '[run] run-date: must be a day, not the time 2022-12-31T10:00:00: write "2022-12-31"'),
    ],
)
def test_a_bad_value_in_the_config_names_the_file_and_key_not_the_flag(tmp_path, text, expected):
    """The value came from the file: the line says which file and key, not `--top-k`."""
    config = tmp_path / "run.toml"
    config.write_text(text)
    result = invoke("run", "--config", str(config), "--output", str(tmp_path / "out"))
    line = one_error_line(result)
    assert line == f"error: {config}: {expected}"
    assert "--top-k" not in line and "--cold-start-days" not in line
    assert not (tmp_path / "out").exists()


def test_a_toml_date_is_the_run_date(tmp_path):
    """`run-date = 2022-12-31`, a TOML date as a TOML user writes it, is the run's day (it was
    refused with "must be text, not datetime.date(2022, 12, 31)")."""
    import datetime

    config = tmp_path / "run.toml"
    config.write_text("[run]\nrun-date = 2022-12-31\n")
    app, seen = options_app()
    result = CliRunner().invoke(app, ["show", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert seen["options"].run_date == "2022-12-31" and seen["options"].day() == datetime.date(2022, 12, 31)
    # As the deployment stores it: a string, JSON-ready.
    assert seen["options"].as_parameters()["run_date"] == "2022-12-31"


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
