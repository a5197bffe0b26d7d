"""The nightly Prefect flow: load, train retrieval, train ranking, score everyone, publish.

Each task is one call into the ``recsys`` package; the flow only orders them, retries what can
fail transiently, and logs what each step did.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from recsys import model as two_stage
from recsys.data import LoadReport, load_interactions
from recsys.errors import RecsysError
from recsys.evaluate import metrics_record
from recsys.progress import step
from recsys.settings import ColumnMap, ModelSettings, Settings
from recsys.lock import run_lock
from recsys.store import Store, new_run_id, utc_now

# Inputs are DataFrames and TensorFlow models: hashing them for a cache key would be slow and
# pointless, since every night's data is new.
TASK = dict(cache_policy=NO_CACHE, persist_result=False)


def _transient(task, task_run, state) -> bool:
    """Retry only what may go away by itself (a flaky disk or database), never bad input."""
    try:
        state.result()
    except RecsysError:
        return False
    except Exception:
        return True
    return True


RETRY = dict(retries=2, retry_delay_seconds=10, retry_condition_fn=_transient)


def task_runner(kind: str = "threads", dask_address: str | None = None, workers: int | None = None):
    """The Prefect task runner the scoring shards run on.

    ``threads``: this process; ``score`` calls the shard tasks one after another (each keeps every
    core busy, and the per-stage seconds stay wall-clock seconds). ``dask``: a Dask cluster
    through prefect-dask, the one at ``dask_address`` (``tcp://host:8786``) or else a local
    cluster of ``workers`` processes (default: one per core).
    """
    import os

    if kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=1)
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)

        class LocalDaskTaskRunner(DaskTaskRunner):
            """A local cluster whose workers report to this process's Prefect API.

            Without it every worker process would start a temporary Prefect server of its own.
            """

            @property
            def client(self):
                if not self._client:
                    from prefect.client.orchestration import get_client

                    api = str(get_client(sync_client=True).api_url)
                    self.cluster_kwargs = {**self.cluster_kwargs, "env": {"PREFECT_API_URL": api}}
                return super().client

        return LocalDaskTaskRunner(
            cluster_kwargs={"n_workers": workers or os.cpu_count() or 1, "threads_per_worker": 1}
        )
    raise ValueError(f"unknown task runner {kind!r}: use 'threads' or 'dask'")


@task(name="load_interactions", **RETRY, **TASK)
def load(settings: Settings):
    """Read and validate the export."""
    started = time.perf_counter()
    frame, report = load_interactions(settings.data, settings.columns, settings.date_format, settings.delimiter)
    log = get_run_logger()
    log.info(
        "read %s rows (%s duplicates) of %s customers and %s items from %s in %.1fs",
        f"{report.rows:,}", f"{report.duplicate_rows:,}", f"{report.users:,}", f"{report.items:,}",
        report.path, time.perf_counter() - started,
    )
    for note in report.notes:
        log.info("input: %s", note)
    return frame, report


@task(name="evaluate", **TASK)
def evaluate(frame, settings: Settings):
    """Score the model and every baseline on the validation split; decide what may be published."""
    from prefect.artifacts import create_markdown_artifact

    from recsys.evaluate import (
        evaluate_recommenders,
        markdown_table,
        quality_gate,
        standard_recommenders,
        validation_holdout,
    )

    started = time.perf_counter()
    split = validation_holdout(frame)
    log = get_run_logger()
    if len(split.users) == 0:
        log.warning("evaluation: no customer has both validation and training items; quality gate skipped")
        return None, None
    recommenders = standard_recommenders(settings)
    with step("Evaluating (validation)") as update:
        rows = []
        for done, (name, factory) in enumerate(recommenders.items(), start=1):
            rows.append(evaluate_recommenders(frame, {name: factory}, settings.top_k, split=split))
            if update:
                update(done, len(recommenders))
    import pandas as pd

    table = pd.concat(rows, ignore_index=True)
    gate = quality_gate(table)
    markdown = markdown_table(table, f"Validation NDCG@{settings.top_k} and friends ({len(split.users):,} customers)")
    create_markdown_artifact(key="recsys-quality", markdown=markdown + f"\n\n**Gate:** {gate.reason}", description="Nightly quality")
    log.info("evaluation in %.1fs:\n%s", time.perf_counter() - started, markdown)
    (log.info if gate.passed else log.warning)("quality gate: %s", gate.reason)
    return table, gate


@task(name="baseline_lists", **TASK)
def baseline_lists(frame, prepared, name: str, settings: Settings):
    """The lists of the named baseline, for every customer (published when the model fails the gate)."""
    from recsys.evaluate import standard_recommenders

    recommender = standard_recommenders(settings)[name]().fit(frame)
    items, scores = recommender.recommend(prepared.data.users, settings.top_k, exclude_seen=not settings.include_seen)
    return two_stage.lists_from_names(prepared.data, items, scores)


@task(name="prepare", **TASK)
def prepare(frame):
    """Encode ids and split off each customer's latest items for the ranking stage."""
    return two_stage.prepare(frame)


@task(name="train_retrieval", **TASK)
def train_retrieval(prepared, settings: Settings):
    """Train the two-tower retrieval model on the earlier interactions."""
    with step("Training retrieval") as update:
        stage = two_stage.train_retrieval(prepared, settings, update)
    get_run_logger().info("retrieval: %d epochs in %.1fs", stage.epochs_run, stage.seconds)
    return stage


@task(name="train_ranking", **TASK)
def train_ranking(prepared, retrieval, settings: Settings):
    """Train the ranking model on retrieval candidates labelled by what customers did next."""
    with step("Training ranking") as update:
        ranking = two_stage.train_ranking_stage(prepared, retrieval, settings, update)
    log = get_run_logger()
    if ranking is None:
        log.warning("ranking: no candidate list held a later item; lists follow retrieval order")
    else:
        log.info("ranking: trained on %s candidate lists in %.1fs", f"{ranking.lists:,}", ranking.seconds)
    return ranking


@task(name="refresh_retrieval", **TASK)
def refresh_retrieval(retrieval, prepared, settings: Settings):
    """Keep training retrieval on every interaction, so lists reflect each customer's latest items."""
    started = time.perf_counter()
    with step("Refreshing retrieval") as update:
        retrieval = two_stage.refresh_retrieval(retrieval, prepared, settings, update)
    get_run_logger().info("retrieval refreshed on all interactions in %.1fs", time.perf_counter() - started)
    return retrieval


@task(name="scoring_model", **TASK)
def scoring_model(prepared, retrieval, ranking, settings: Settings):
    """Turn the trained stages into plain arrays (vectors, context, ranker weights) that shards score from."""
    seconds: dict[str, float] = {}
    scorer = two_stage.scorer_for(prepared.data, retrieval, ranking, settings, seconds=seconds)
    return scorer, seconds


@task(name="score_shard", **TASK)
def score_shard(scorer, start: int, stop: int):
    """Top-k lists of customers ``start..stop-1``: retrieval candidates, then ranking order."""
    lists, seconds = two_stage.score_shard(scorer, start, stop, threads=_worker_threads())
    return start, lists, seconds


def _worker_threads() -> int | None:
    """On a Dask worker, its thread count (a shard must not start one thread per core on every
    worker of a machine); elsewhere ``None``: one per core."""
    try:
        from distributed import get_worker

        return get_worker().state.nthreads
    except (ImportError, ValueError):
        return None


def _dask_client():
    """The Dask client of this flow run's task runner, or ``None`` when the flow runs on threads."""
    from prefect.context import FlowRunContext

    from prefect_dask import DaskTaskRunner

    context = FlowRunContext.get()
    runner = context.task_runner if context else None
    return runner.client if isinstance(runner, DaskTaskRunner) else None


def score(prepared, retrieval, ranking, settings: Settings):
    """Every customer's top-k, one Prefect task per shard of customers (on threads or Dask workers).

    The scorer is built once; on Dask it is scattered to every worker once (``broadcast``), and the
    shard tasks receive a reference to it, so no task ships the model again.
    """
    started = time.perf_counter()
    scorer, seconds = scoring_model(prepared, retrieval, ranking, settings)
    client = _dask_client()
    handle = client.scatter(scorer, broadcast=True, hash=False) if client is not None else scorer
    n_users = prepared.data.n_users
    lists = two_stage.empty_lists(n_users, settings.top_k)
    shards = two_stage.shard_bounds(n_users, settings.shard_users)
    with step("Scoring customers") as update:
        if client is not None:
            futures = deque(score_shard.submit(handle, start, stop) for start, stop in shards)
            # Each future is dropped once read: it holds its shard's lists until then.
            results = (futures.popleft().result() for _ in range(len(shards)))
        else:
            # In this process the shards run one after another, each called as a task: a task
            # submitted to a worker thread measured 1.8x slower here (its NumPy threads wait for
            # the GIL behind Prefect's own threads), and a shard already keeps every core busy.
            results = (score_shard(handle, start, stop) for start, stop in shards)
        done = 0
        for start, shard, shard_seconds in results:
            two_stage.put(lists, start, shard)
            two_stage.add_seconds(seconds, shard_seconds)
            done += len(shard.items)
            if update:
                update(done, n_users)
    where = f"{len(shards)} shards on Dask at {client.scheduler.address}" if client is not None else f"{len(shards)} shards"
    get_run_logger().info(
        "scored %s customers (%d candidates each, %s) in %.1fs (user vectors %.1fs, retrieval %.1fs, "
        "ranking %.1fs; shard times summed)",
        f"{n_users:,}", settings.candidates, where, time.perf_counter() - started, seconds.get("user_vectors", 0.0),
        seconds.get("retrieval_scoring", 0.0), seconds.get("ranking_scoring", 0.0),
    )
    return lists, {name: round(value, 2) for name, value in seconds.items()}


@task(name="publish", **RETRY, **TASK)
def publish(store: Store, run_id: str, generated_at, prepared, lists, settings: Settings, status: str, fields: dict):
    """Swap the new lists into the SQL table and the Parquet file as a whole; the run becomes current."""
    started = time.perf_counter()
    published = store.publish(
        run_id,
        generated_at,
        two_stage.list_tables(prepared.data, lists),
        two_stage.popular_table(prepared.data, settings),
        status=status,
        **fields,
    )
    if published.parquet_pending:
        get_run_logger().warning("publish: %s", published.parquet_pending)
    get_run_logger().info(
        "published %s rows for %s customers to %s and %s in %.1fs",
        f"{published.rows:,}", f"{published.users:,}", published.parquet, store.engine.url.render_as_string(hide_password=True),
        time.perf_counter() - started,
    )
    return published


@flow(name="recsys-nightly", task_runner=task_runner("threads"))
def nightly(
    data: str = str(Settings().data),
    output: str = str(Settings().output),
    db_url: str | None = None,
    top_k: int = 12,
    candidates: int = 100,
    include_seen: bool = False,
    cold_start_days: int = 90,
    user_column: str = ColumnMap().user,
    time_column: str = ColumnMap().timestamp,
    item_column: str = ColumnMap().item,
    rating_column: str = ColumnMap().rating,
    date_format: str = Settings().date_format,
    delimiter: str = ",",
    embedding_dim: int = 32,
    retrieval_epochs: int | None = None,
    ranking_epochs: int | None = None,
    seed: int = 42,
    evaluate: bool = True,
    shard_size: int = Settings().shard_users,
) -> dict:
    """Retrain both stages on the latest export and publish every customer's top-k list."""
    settings = Settings(
        data=Path(data),
        output=Path(output),
        db_url=db_url,
        top_k=top_k,
        candidates=candidates,
        include_seen=include_seen,
        cold_start_days=cold_start_days,
        columns=ColumnMap(user_column, time_column, item_column, rating_column),
        date_format=date_format,
        delimiter=delimiter,
        evaluate=evaluate,
        shard_users=shard_size,
        model=ModelSettings(
            embedding_dim=embedding_dim, retrieval_epochs=retrieval_epochs, ranking_epochs=ranking_epochs, seed=seed
        ),
    )
    return run_nightly(settings)


def run_nightly(settings: Settings) -> dict:
    """The body of the flow, callable with a ready ``Settings`` (the CLI and tests use this inside the flow)."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 2)
        clock = now

    frame, report = load(settings)
    lap("load")
    # Nothing is written before the input has been read and validated; then one run at a time.
    with run_lock(settings.output):
        store = Store(settings.resolved_db_url(), settings.output)
        store.ensure_schema()
        repaired = store.reconcile()
        if repaired:
            get_run_logger().warning("store: %s (left by an interrupted run)", repaired)
        run_id, started_at = new_run_id(), utc_now()
        store.begin_run(run_id, started_at, str(report.path))
        try:
            metrics: dict = {}
            prepared, fallback = _prepare_and_gate(frame, settings, lap, metrics)
            # From here on only the integer codes are needed: at a million customers the frame
            # holds 41M rows, so it goes before training starts.
            del frame
            _release_memory()
            if fallback is None:
                status, reason = "succeeded", None
                lists = _train_and_score(prepared, settings, lap, metrics)
            else:
                status, reason, lists = fallback
            fields = dict(metrics=dict(metrics, seconds=timings), message=reason, **_counts(report))
            published = publish(store, run_id, started_at, prepared, lists, settings, status, fields)
            lap("publish")
        except BaseException as exc:
            store.finish_run(run_id, "failed", message=f"{type(exc).__name__}: {exc}"[:2000], **_counts(report))
            raise
        # Only the publish time is new here; the status was recorded with the swap.
        store.finish_run(run_id, metrics=dict(metrics, seconds=timings))
    return {
        "run_id": run_id,
        "status": status,
        "reason": reason,
        "validation": metrics.get("validation"),
        "repaired": repaired,
        "users": published.users,
        "rows": published.rows,
        "items": report.items,
        "input_rows": report.rows,
        "notes": list(report.notes),
        "seconds": timings,
        "parquet": str(published.parquet),
        "db_url": store.engine.url.render_as_string(hide_password=True),
    }


def _release_memory() -> None:
    """Hand freed Arrow buffers back to the operating system (Arrow's allocator keeps them for
    reuse otherwise, and NumPy and TensorFlow cannot use them): about 3 GB after a
    million-customer export's frame is dropped."""
    import gc

    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()


def _prepare_and_gate(frame, settings: Settings, lap, metrics: dict):
    """Encode the export and decide whether the model may be trained and published.

    Returns (prepared, fallback): ``fallback`` is ``None`` when the model should be trained, else
    (status, reason, lists) of the baseline published instead. ``metrics`` gets the evaluation.
    """
    prepared = prepare(frame)
    too_small = two_stage.untrainable(prepared.data)
    if too_small:
        get_run_logger().warning("%s: publishing the popularity list for everyone", too_small)
        lists = baseline_lists(frame, prepared, "popularity", settings)
        lap("baseline_lists")
        return prepared, ("degraded", f"{too_small}: published the popularity list for everyone", lists)
    if settings.evaluate:
        table, gate = evaluate(frame, settings)
        lap("evaluate")
        if gate is not None:
            metrics["validation"] = metrics_record(table)
            metrics["gate"] = {"passed": gate.passed, "published": gate.publish, "reason": gate.reason}
            if not gate.passed:
                lists = baseline_lists(frame, prepared, gate.publish, settings)
                lap("baseline_lists")
                return prepared, ("degraded", gate.reason, lists)
    return prepared, None


def _train_and_score(prepared, settings: Settings, lap, metrics: dict):
    """Train both stages and score every customer; returns the lists (``metrics`` gets counts and seconds)."""
    retrieval = train_retrieval(prepared, settings)
    lap("train_retrieval")
    ranking = train_ranking(prepared, retrieval, settings)
    lap("train_ranking")
    retrieval = refresh_retrieval(retrieval, prepared, settings)
    lap("refresh_retrieval")
    lists, scoring = score(prepared, retrieval, ranking, settings)
    lap("score")
    metrics["ranking_lists"] = ranking.lists if ranking else 0
    metrics["scoring_seconds"] = scoring
    return lists


def _counts(report: LoadReport) -> dict:
    return {"rows": report.rows, "users": report.users, "items": report.items, "input_sha256": report.sha256}
