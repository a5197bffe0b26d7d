"""The scheduled deployment takes every option of `recsys run`, under the same names."""

from __future__ import annotations

import dataclasses

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
        return {word.strip("│ ,") for word in text.split() if word.startswith("--")}

    run, schedule = option_names("run"), option_names("schedule")
    for spec in dataclasses.fields(RunOptions):
        flag = "--" + spec.name.replace("_", "-")
        assert flag in run and flag in schedule, flag
    assert schedule - run == {"--cron", "--name"}


def test_the_deployment_runs_one_at_a_time_queueing_the_next(tmp_path):
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    from flows.deployment import deployment

    served = deployment(RunOptions(data=tmp_path / "export.csv", output=tmp_path / "out"), "0 2 * * *")
    assert served.concurrency_limit == 1
    assert served.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.ENQUEUE
