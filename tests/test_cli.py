"""The command line as an operator meets it: refusals in one line, before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
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
