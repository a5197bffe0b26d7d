"""Scoring shards on a local Dask cluster (prefect-dask): same lists as on threads, model shipped once."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from conftest import csv_text

pytestmark = pytest.mark.slow

EPOCHS = dict(epochs=2, ranking_epochs=2, evaluate=False)
COLUMNS = ["user_id", "rank", "item", "score"]


def test_flow_on_a_local_dask_cluster_equals_the_single_process_run(
    prefect_test_harness, synthetic, tmp_path, monkeypatch
):
    import distributed

    import flows.nightly as nightly_module
    import flows.runners as runners
    from flows.nightly import nightly
    from recsys.settings import RunOptions

    data = tmp_path / "interactions.csv"
    data.write_text(csv_text(synthetic.rows), encoding="utf-8")
    # Small shards, so several scoring tasks run (the export has 120 customers).
    single = nightly(RunOptions(data=data, output=tmp_path / "threads", shard_size=25, **EPOCHS))

    handles, scatters = [], []
    real_submit = nightly_module.score_shard.submit
    real_client = runners.dask_client

    def recording_submit(scorer, *args):
        handles.append(scorer)
        return real_submit(scorer, *args)

    def recording_client():
        client = real_client()
        real_scatter = client.scatter

        def scatter(data, **kwargs):
            scatters.append(kwargs)
            return real_scatter(data, **kwargs)

        monkeypatch.setattr(client, "scatter", scatter)
        return client

    monkeypatch.setattr(nightly_module.score_shard, "submit", recording_submit)
    monkeypatch.setattr(runners, "dask_client", recording_client)
    options = RunOptions(data=data, output=tmp_path / "dask", shard_size=25, task_runner="dask", **EPOCHS)
    distributed_run = runners.flow_for(nightly, options)(options)

    assert single["status"] == distributed_run["status"] == "succeeded"
    assert single["rows"] == distributed_run["rows"] == 120 * 12
    threads_lists = pq.read_table(single["parquet"]).to_pandas()[COLUMNS]
    dask_lists = pq.read_table(distributed_run["parquet"]).to_pandas()[COLUMNS]
    assert threads_lists.equals(dask_lists)
    # The scorer went to the workers once (one broadcast scatter); each of the 5 shard tasks got
    # only a reference to it, never the arrays themselves.
    assert scatters == [{"broadcast": True, "hash": False}]
    assert len(handles) == 5
    assert all(isinstance(handle, distributed.Future) for handle in handles)
    assert len({handle.key for handle in handles}) == 1


def test_unknown_task_runner_is_refused():
    from recsys.errors import OptionError
    from recsys.settings import RunOptions

    with pytest.raises(OptionError, match="threads.*dask"):
        RunOptions(task_runner="spark")


@pytest.mark.parametrize(
    "arguments, code, message",
    [
        (["--task-runner", "spark"], 2, "'spark' is not one of 'threads', 'dask'"),
        (["--dask-address", "tcp://127.0.0.1:8786"], 1, "error: --dask-address needs --task-runner dask"),
    ],
)
def test_run_refuses_bad_runner_options(arguments, code, message, tmp_path):
    from typer.testing import CliRunner

    from recsys.cli.app import app

    result = CliRunner().invoke(app, ["run", "--output", str(tmp_path / "out"), *arguments])
    assert result.exit_code == code
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_dask_address_without_a_reachable_prefect_server_is_refused(tmp_path):
    """Remote workers cannot report to this process's temporary Prefect server: say so up front."""
    import os
    import subprocess
    import sys

    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")  # no profile that could name a server
    result = subprocess.run(
        [sys.executable, "-m", "recsys.cli", "run", "--output", str(tmp_path / "out"),
         "--task-runner", "dask", "--dask-address", "tcp://127.0.0.1:1"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 1
    assert "PREFECT_API_URL" in result.stderr
    assert not (tmp_path / "out").exists()
