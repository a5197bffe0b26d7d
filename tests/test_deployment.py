"""The scheduled deployment takes every option of `recsys run`, under the same names."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from typer.testing import CliRunner

from recsys.settings import RunOptions


def test_every_run_option_is_a_typed_parameter_of_the_deployment(tmp_path):
    from flows.deployment import deployment

    options = RunOptions(data=tmp_path / "export.csv", output=tmp_path / "out", top_k=7, epochs=3, shard_size=500)
    served = deployment(options, "0 2 * * *", "nightly")
    assert served.name == "nightly"
    parameters = served.parameters["options"]
    names = [spec.name for spec in dataclasses.fields(RunOptions)]
    assert list(parameters) == names
    assert parameters["data"] == str((tmp_path / "export.csv").resolve())
    assert (parameters["top_k"], parameters["epochs"], parameters["shard_size"]) == (7, 3, 500)
    assert parameters["task_runner"] == "threads"
    # The form the Prefect UI shows: one typed field per option.
    schema = served._parameter_openapi_schema.model_dump()
    form = schema["definitions"]["RunOptions"]["properties"]
    assert list(form) == names
    assert form["top_k"]["type"] == "integer" and form["include_seen"]["type"] == "boolean"
    # What the deployment stores comes back as the same options.
    assert RunOptions(**parameters) == options.with_(data=(tmp_path / "export.csv").resolve(), output=(tmp_path / "out").resolve())


def test_run_and_schedule_take_the_same_options():
    from recsys.cli.app import app

    def option_names(command: str) -> set[str]:
        text = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "300"}).stdout
        return {word.strip("│ ,.") for word in text.split() if word.startswith("--")}

    run, schedule = option_names("run"), option_names("schedule")
    for spec in dataclasses.fields(RunOptions):
        flag = "--" + spec.name.replace("_", "-")
        assert flag in run and flag in schedule, flag
    assert schedule - run == {"--cron", "--name", "--timezone"}


def test_the_deployment_runs_one_at_a_time_queueing_the_next(tmp_path):
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    from flows.deployment import deployment

    served = deployment(RunOptions(data=tmp_path / "export.csv", output=tmp_path / "out"), "0 2 * * *")
    assert served.concurrency_limit == 1
    assert served.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.ENQUEUE


def test_the_deployment_has_a_time_zone_by_default_this_machines(tmp_path):
    from flows.deployment import deployment
    from recsys.schedule import machine_timezone

    options = RunOptions(data=tmp_path / "export.csv", output=tmp_path / "out")
    [default] = deployment(options, "0 2 * * *").schedules
    assert default.schedule.timezone == machine_timezone() and default.schedule.cron == "0 2 * * *"
    [madrid] = deployment(options, "30 3 * * 1-5", timezone="Europe/Madrid").schedules
    assert (madrid.schedule.cron, madrid.schedule.timezone) == ("30 3 * * 1-5", "Europe/Madrid")


def test_the_machine_time_zone_is_an_iana_name(monkeypatch):
    from zoneinfo import ZoneInfo

    from recsys.schedule import machine_timezone

    monkeypatch.setenv("TZ", "America/Bogota")
    assert machine_timezone() == "America/Bogota"
    monkeypatch.setenv("TZ", "Not/AZone")
    ZoneInfo(machine_timezone())  # falls back to the system's, or UTC


SAMPLE = Path(__file__).parents[1] / "data/interactions_sample.csv"


def _one_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--cron", "every night"], "--cron 'every night' is not a cron expression"),
        (["--cron", "61 2 * * *"], "is not a cron expression"),
        (["--timezone", "Mars/Olympus"], "--timezone 'Mars/Olympus' is not an IANA time zone"),
        (["--data", "/no/such/export.csv"], "--data /no/such/export.csv: does not exist"),
    ],
)
def test_schedule_refuses_what_can_never_run_in_one_line(tmp_path, args, expected):
    from recsys.cli.app import app

    result = CliRunner().invoke(app, ["schedule", "--data", str(SAMPLE), "--output", str(tmp_path / "out"), *args])
    assert expected in _one_error(result)
    assert not (tmp_path / "out").exists()


def _schedule_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "RECSYS_DB_URL")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", **extra)
    return env


def test_schedule_without_a_prefect_server_says_how_to_start_one(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "recsys.cli", "schedule", "--data", str(SAMPLE), "--output", str(tmp_path / "out")],
        capture_output=True, text=True, env=_schedule_env(PREFECT_HOME=str(tmp_path / "home")), timeout=120,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "prefect server start" in lines[0] and "prefect config set PREFECT_API_URL=" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_schedule_serves_until_ctrl_c_and_ends_in_one_line(prefect_test_harness, tmp_path):
    from prefect.settings import PREFECT_API_URL

    process = subprocess.Popen(
        [sys.executable, "-m", "recsys.cli", "schedule", "--data", str(SAMPLE), "--output", str(tmp_path / "out"),
         "--timezone", "Europe/Madrid", "--name", "ctrl-c-test"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_schedule_env(PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONFAULTHANDLER="1"),
        # As in a terminal: a test run started in the background (`cmd &` without job control)
        # ignores SIGINT, the child would inherit that, and Ctrl-C would never arrive.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        first = process.stdout.readline()
        assert "serving deployment recsys-nightly/ctrl-c-test: cron '0 2 * * *' in Europe/Madrid" in first, first
        time.sleep(8)  # let it register the deployment and start polling
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
            out, err = process.communicate(timeout=60)
            pytest.fail(f"still serving 120 s after Ctrl-C; stdout: {out[-2000:]!r}; stderr: {err[-6000:]}")
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err[-3000:]
    assert "stopped serving recsys-nightly/ctrl-c-test" in out
    assert "Traceback" not in err, err[-3000:]


REPO = Path(__file__).parents[1]


def test_prefect_yaml_registers_the_deployment_recsys_schedule_serves(tmp_path):
    """`prefect deploy` and `recsys schedule` give one deployment: the same flow, cron, concurrency
    limit and collision strategy, and parameters that are valid options of a run."""
    import yaml
    from zoneinfo import ZoneInfo

    from prefect.cli.deploy._models import PrefectYamlModel

    from flows.deployment import deployment
    from flows.nightly import nightly
    from recsys.schedule import DEFAULT_CRON, DEPLOYMENT_NAME, ENTRYPOINT

    text = yaml.safe_load((REPO / "prefect.yaml").read_text())
    PrefectYamlModel.model_validate(text)  # what `prefect deploy` reads it with
    [spec] = text["deployments"]
    assert spec["name"] == DEPLOYMENT_NAME
    # The entrypoint exists and names the flow.
    assert spec["entrypoint"] == ENTRYPOINT
    path, _, attribute = spec["entrypoint"].partition(":")
    assert (REPO / path).is_file()
    from prefect.flows import load_flow_from_entrypoint

    loaded = load_flow_from_entrypoint(str(REPO / path) + ":" + attribute)
    assert loaded.name == nightly.name == "recsys-nightly"
    served = deployment(RunOptions(data=tmp_path / "export.csv", output=tmp_path / "out"))
    [schedule] = spec["schedules"]
    assert schedule["cron"] == DEFAULT_CRON == served.schedules[0].schedule.cron
    ZoneInfo(schedule["timezone"])
    assert spec["concurrency_limit"]["limit"] == served.concurrency_limit == 1
    assert spec["concurrency_limit"]["collision_strategy"] == served.concurrency_options.collision_strategy.value
    # Parameters: the flow's one `options` parameter, every key a field of RunOptions.
    assert list(spec["parameters"]) == list(served.parameters)
    options = RunOptions(**spec["parameters"]["options"])
    assert options.with_(data=RunOptions().data, output=RunOptions().output) == RunOptions()
    assert (REPO / options.data).is_file()
