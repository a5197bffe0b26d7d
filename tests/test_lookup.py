"""The fast read path: recsys.lookup and `recsys lookup`, on a store published by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from recsys.cli.app import app
from recsys.errors import StoreError
from recsys.store.lookup import lookup
from recsys.settings import resolve_db_url
from recsys.store.publish import Store

GENERATED = datetime(2024, 3, 1, 2, 0, tzinfo=timezone.utc)
INJECTION = "x' OR '1'='1"
UNICODE_USER = "José Ñandú 😀"
USERS = {
    "u1": [f"item {n:02d}" for n in range(12)],
    "u2": [f"item {n:02d}" for n in range(11, -1, -1)],
    INJECTION: [f"item {n:02d}" for n in range(12, 24)],
    UNICODE_USER: [f"Café {n}" for n in range(12)],
}
POPULAR = [f"popular {n}" for n in range(12)]


def list_table() -> pa.Table:
    rows = [(u, r + 1, item, 1.0 - r / 100) for u, items in USERS.items() for r, item in enumerate(items)]
    return pa.table(
        {
            "user_id": pa.array([r[0] for r in rows]),
            "rank": pa.array([r[1] for r in rows], pa.int16()),
            "item": pa.array([r[2] for r in rows]),
            "score": pa.array([r[3] for r in rows]),
            "reason": pa.array([f"because you redeemed {r[2]}" for r in rows]),
        }
    )


def popular_table() -> pa.Table:
    return pa.table(
        {
            "rank": pa.array(range(1, 13), pa.int16()),
            "item": pa.array(POPULAR),
            "score": pa.array([float(12 - n) for n in range(12)]),
            "reason": pa.array(["popular lately"] * 12),
        }
    )


@pytest.fixture(autouse=True)
def no_db_url_env(monkeypatch):
    monkeypatch.delenv("RECSYS_DB_URL", raising=False)


@pytest.fixture
def output(tmp_path) -> Path:
    out = tmp_path / "out"
    store = Store(resolve_db_url(out), out)
    store.begin_run("run1", GENERATED, "in.csv")
    store.publish("run1", GENERATED, iter([list_table()]), popular_table())
    store.finish_run("run1", "succeeded")
    return out


def test_known_user_gets_ranks_1_to_12_in_order(output):
    answer = lookup("u2", resolve_db_url(output))
    assert answer.cold_start is False
    assert answer.user == "u2"
    assert [r[0] for r in answer.rows] == list(range(1, 13))
    assert [r[1] for r in answer.rows] == USERS["u2"]
    assert answer.rows[0][2] == pytest.approx(1.0)
    assert answer.run_id == "run1"
    assert answer.generated_at is not None and answer.generated_at.startswith("2024-03-01 02:00")


def test_surrounding_spaces_of_the_id_are_ignored(output):
    answer = lookup("  u1 ", resolve_db_url(output))
    assert answer.cold_start is False and [r[1] for r in answer.rows] == USERS["u1"]


def test_unknown_user_gets_the_popular_list(output):
    answer = lookup("nobody", resolve_db_url(output))
    assert answer.cold_start is True
    assert [r[1] for r in answer.rows] == POPULAR
    assert [r[0] for r in answer.rows] == list(range(1, 13))
    assert answer.run_id == "run1"
    # The cold-start list was published by that run: its time is the run's start.
    assert answer.generated_at is not None and answer.generated_at.startswith("2024-03-01 02:00")


@pytest.mark.parametrize(
    "user",
    ["' OR 1=1 --", "u1'; DROP TABLE recommendations; --", "u1' --", '" OR ""="', "%", "_1", "u%"],
)
def test_sql_injection_like_ids_are_data(output, user):
    answer = lookup(user, resolve_db_url(output))
    assert answer.cold_start is True
    assert [r[1] for r in answer.rows] == POPULAR
    # The store is intact afterwards.
    assert lookup("u1", resolve_db_url(output)).cold_start is False


def test_ids_with_quotes_and_unicode_are_found_exactly(output):
    db = resolve_db_url(output)
    assert [r[1] for r in lookup(INJECTION, db).rows] == USERS[INJECTION]
    answer = lookup(UNICODE_USER, db)
    assert answer.cold_start is False and [r[1] for r in answer.rows] == USERS[UNICODE_USER]
    assert lookup("José Ñandú", db).cold_start is True


def test_lookup_through_sqlalchemy_url_gives_the_same_answer(output):
    """A non-``sqlite:///`` URL takes the SQLAlchemy path; same answers."""
    url = resolve_db_url(output).replace("sqlite:///", "sqlite+pysqlite:///")
    for user in ("u1", INJECTION, UNICODE_USER, "nobody"):
        assert lookup(user, url) == lookup(user, resolve_db_url(output))


def test_lookup_never_creates_or_changes_the_store(tmp_path, output):
    db = output / "recsys.db"
    before = db.read_bytes()
    lookup("u1", resolve_db_url(output))
    lookup("nobody", resolve_db_url(output))
    assert db.read_bytes() == before
    with pytest.raises(StoreError):
        lookup("u1", resolve_db_url(tmp_path / "missing"))
    assert not (tmp_path / "missing").exists()


def test_missing_store_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match=r"no store at .*recsys\.db.*recsys run"):
        lookup("u1", resolve_db_url(tmp_path))


def test_corrupt_store_is_a_store_error(tmp_path):
    (tmp_path / "recsys.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot be read"):
        lookup("u1", resolve_db_url(tmp_path))


# --- the command line -----------------------------------------------------------------------------


def test_cli_lookup_known_user(output):
    result = CliRunner().invoke(app, ["lookup", "u1", "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert "item 00" in result.stdout and "item 11" in result.stdout
    assert "cold-start" not in result.stdout


def test_cli_lookup_unknown_user_says_cold_start(output):
    result = CliRunner().invoke(app, ["lookup", "nobody", "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert "cold-start" in result.stdout and "popular 0" in result.stdout


def test_cli_lookup_json(output):
    result = CliRunner().invoke(app, ["lookup", UNICODE_USER, "--output", str(output), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["user_id"] == UNICODE_USER
    assert payload["cold_start"] is False
    assert payload["run_id"] == "run1"
    assert [r["rank"] for r in payload["recommendations"]] == list(range(1, 13))
    assert [r["item"] for r in payload["recommendations"]] == USERS[UNICODE_USER]

    cold = json.loads(CliRunner().invoke(app, ["lookup", "nobody", "-o", str(output), "--json"]).stdout)
    assert cold["cold_start"] is True and [r["item"] for r in cold["recommendations"]] == POPULAR


def test_cli_lookup_db_url_option_and_env(output, tmp_path, monkeypatch):
    url = resolve_db_url(output)
    elsewhere = tmp_path / "empty-output"
    result = CliRunner().invoke(app, ["lookup", "u1", "--output", str(elsewhere), "--db-url", url, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cold_start"] is False
    monkeypatch.setenv("RECSYS_DB_URL", url)
    result = CliRunner().invoke(app, ["lookup", "u1", "--output", str(elsewhere), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cold_start"] is False


def test_cli_lookup_missing_store_exits_1_with_one_line(tmp_path):
    result = CliRunner().invoke(app, ["lookup", "u1", "--output", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: no store at ")
    assert "Traceback" not in result.output
    assert result.stdout == ""


@pytest.mark.parametrize("entry", ["recsys.cli.launcher", "recsys.cli.app"], ids=["recsys-command", "typer-app"])
def test_lookup_command_imports_no_heavy_modules(output, entry):
    code = (
        "import sys, json\n"
        f"from {entry} import main\n"
        f"sys.argv = ['recsys', 'lookup', 'u1', '--output', {str(output)!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "else:\n"
        "    code = 0\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'tensorflow', 'prefect', 'pandas', 'pyarrow', 'sqlalchemy'})\n"
        "print('RESULT=' + json.dumps({'code': code, 'heavy': heavy}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RECSYS_DB_URL"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    (line,) = [l for l in done.stdout.splitlines() if l.startswith("RESULT=")]
    result = json.loads(line[len("RESULT="):])
    assert result["code"] in (0, None)
    assert "item 00" in done.stdout  # the lookup really ran
    top = {m.split(".")[0] for m in result["heavy"]}
    assert not top & {"tensorflow", "prefect", "pandas"}, result["heavy"]
    # Reported, not asserted: pyarrow / sqlalchemy on the lookup path (expected: neither).
    print("heavy modules imported by `recsys lookup`:", sorted(top) or "none")


def _launch(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RECSYS_DB_URL"}
    return subprocess.run(
        [sys.executable, "-c", "from recsys.cli.launcher import main; main()", *args],
        capture_output=True, text=True, env=env, timeout=120,
    )


@pytest.mark.parametrize("user", ["u1", "nobody", "1' OR '1'='1"])
@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_fast_lookup_path_answers_exactly_like_the_typer_command(output, user, as_json):
    """`recsys lookup` skips Typer for speed; what it prints must not differ."""
    args = ["lookup", user, "--output", str(output)] + (["--json"] if as_json else [])
    fast = _launch(*args)
    typer_result = CliRunner().invoke(app, args)
    assert fast.returncode == typer_result.exit_code == 0
    assert fast.stdout == typer_result.stdout


def test_fast_lookup_path_missing_store_is_one_line(tmp_path):
    done = _launch("lookup", "u1", "--output", str(tmp_path / "none"))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [f"error: no store at {tmp_path / 'none' / 'recsys.db'}: run `recsys run` first (or pass --output / --db-url)"]


def test_fast_lookup_path_hands_help_and_other_commands_to_typer(output):
    assert "Usage: recsys lookup" in _launch("lookup", "--help").stdout
    runs = _launch("runs", "--output", str(output))
    assert runs.returncode == 0 and "runs, newest first" in runs.stdout


def test_lookup_json_times_carry_their_offset_and_scores_are_rounded(tmp_path):
    out = tmp_path / "out"
    store = Store(resolve_db_url(out), out)
    store.begin_run("run1", GENERATED, "in.csv")
    lists = pa.table({
        "user_id": pa.array(["u1", "u1"]), "rank": pa.array([1, 2], pa.int16()),
        "item": pa.array(["a", "b"]), "score": pa.array([4.928992748260498, 0.000123456]),
        "reason": pa.array(["popular lately", "popular lately"]),
    })
    store.publish("run1", GENERATED, iter([lists]), popular_table())
    store.finish_run("run1", "succeeded")
    known = json.loads(CliRunner().invoke(app, ["lookup", "u1", "-o", str(out), "--json"]).stdout)
    assert known["generated_at"] == "2024-03-01T02:00:00+00:00"
    assert [r["score"] for r in known["recommendations"]] == [4.929, 0.0001]
    cold = json.loads(CliRunner().invoke(app, ["lookup", "nobody", "-o", str(out), "--json"]).stdout)
    assert cold["cold_start"] is True and cold["generated_at"] == "2024-03-01T02:00:00+00:00"
    table = CliRunner().invoke(app, ["lookup", "u1", "-o", str(out)]).stdout
    assert "4.9290" in table and "4.928992" not in table


def _recsys(*args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "recsys.cli", *args], capture_output=True, text=True, timeout=120)


def test_an_unknown_lookup_option_is_answered_like_any_other_commands(output):
    """The fast path (argparse) hands arguments it cannot read to the Typer app: Click's style."""
    lookup_typo = _recsys("lookup", "u1", "--jsn", "--output", str(output))
    run_typo = _recsys("runs", "--jsn", "--output", str(output))
    assert lookup_typo.returncode == run_typo.returncode == 2
    assert "usage: recsys lookup" not in lookup_typo.stderr  # argparse's
    assert "Usage: recsys lookup [OPTIONS] [USER]" in lookup_typo.stderr
    assert "No such option" in lookup_typo.stderr and "--json" in lookup_typo.stderr
    assert "No such option" in run_typo.stderr


def test_a_mistyped_command_is_suggested_once_and_the_version_is_printed():
    typo = _recsys("rnu")
    assert typo.returncode == 2 and typo.stderr.count("Did you mean") == 1, typo.stderr
    from importlib.metadata import version

    shown = _recsys("--version")
    assert shown.returncode == 0 and shown.stdout.strip() == f"recsys {version('recsys')}"


def test_a_store_published_before_reasons_existed_is_still_read(tmp_path):
    """A run rolled back to from before the upgrade has no ``reason`` column: its lists are still
    answered, with empty reasons, instead of an error."""
    import sqlite3

    from recsys.store.lookup import lookup

    db = tmp_path / "recsys.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(
            """
            CREATE TABLE runs (run_id TEXT PRIMARY KEY, started_at TEXT);
            CREATE TABLE recommendations (user_id TEXT, rank INTEGER, item TEXT, score REAL, run_id TEXT, generated_at TEXT);
            CREATE TABLE popular_items (rank INTEGER, item TEXT, score REAL, run_id TEXT);
            INSERT INTO runs VALUES ('r1', '2026-01-01 02:00:00');
            INSERT INTO recommendations VALUES ('7', 1, 'Cine Colombia 2D', 0.5, 'r1', '2026-01-01 02:00:00');
            INSERT INTO popular_items VALUES (1, 'Bono Jumbo 100', 3.0, 'r1');
            """
        )
    known = lookup("7", f"sqlite:///{db}")
    assert not known.cold_start and known.rows == ((1, "Cine Colombia 2D", 0.5, ""),)
    unknown = lookup("8", f"sqlite:///{db}")
    assert unknown.cold_start and unknown.rows == ((1, "Bono Jumbo 100", 3.0, ""),)
