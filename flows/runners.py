"""Where the scoring shards run: this process's threads, or a Dask cluster through prefect-dask."""

from __future__ import annotations

import os

from recsys.settings import RunOptions, TaskRunner


def task_runner(options: RunOptions):
    """The Prefect task runner for ``options.task_runner``.

    ``threads``: this process; the flow calls the shard tasks one after another (each keeps every
    core busy, and the per-stage seconds stay wall-clock seconds). ``dask``: a Dask cluster through
    prefect-dask, the one at ``options.dask_address`` (``tcp://host:8786``) or else a local cluster
    of one worker process per core.
    """
    if options.task_runner is TaskRunner.threads:
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=1)
    from prefect_dask import DaskTaskRunner

    if options.dask_address:
        return DaskTaskRunner(address=options.dask_address)

    class LocalDaskTaskRunner(DaskTaskRunner):
        """A local cluster whose workers report to this process's Prefect API.

        Without it every worker process would start a temporary Prefect server of its own.
        """

        @property
        def client(self):
            if not self._client:
                from prefect.client.orchestration import get_client

                api = str(get_client(sync_client=True).api_url)
                # A worker's task lines ("Task run 'score_shard-980' - Finished in state
                # Completed()") go to the Prefect server, not into this terminal's progress
                # bars; its warnings still show.
                env = {"PREFECT_API_URL": api, "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING"}
                self.cluster_kwargs = {**self.cluster_kwargs, "env": env}
            return super().client

    return LocalDaskTaskRunner(cluster_kwargs={"n_workers": os.cpu_count() or 1, "threads_per_worker": 1})


def flow_for(flow, options: RunOptions):
    """``flow`` with the task runner ``options`` ask for."""
    return flow if options.task_runner is TaskRunner.threads else flow.with_options(task_runner=task_runner(options))


def dask_client():
    """The Dask client of this flow run's task runner, or ``None`` when the flow runs on threads."""
    from prefect.context import FlowRunContext
    from prefect_dask import DaskTaskRunner

    context = FlowRunContext.get()
    runner = context.task_runner if context else None
    return runner.client if isinstance(runner, DaskTaskRunner) else None


def worker_threads() -> int | None:
    """On a Dask worker, its thread count (a shard must not start one thread per core on every
    worker of a machine); elsewhere ``None``: one per core."""
    try:
        from distributed import get_worker

        return get_worker().state.nthreads
    except (ImportError, ValueError):
        return None


def shard_results(task, handle, shards: list[tuple[int, int]], args: tuple, on_dask: bool):
    """Run ``task(handle, start, stop, *args)`` for every shard; yields each result as it is read.

    On Dask the shards are submitted at once (one task each on the cluster) and each future is
    dropped once read: it holds its shard's lists until then. In this process they run one after
    another, each called as a task: a task submitted to a worker thread measured 1.8x slower here
    (its NumPy threads wait for the GIL behind Prefect's own threads), and a shard already keeps
    every core busy.
    """
    from collections import deque

    if on_dask:
        futures = deque(task.submit(handle, start, stop, *args) for start, stop in shards)
        for _ in range(len(shards)):
            yield futures.popleft().result()
    else:
        for start, stop in shards:
            yield task(handle, start, stop, *args)
