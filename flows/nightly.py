"""The nightly Prefect flow: read the export, decide what may be published, train both stages,
score every customer, publish.

The flow's body is the table of contents of the nightly job; each task is one call into the
``recsys`` package. Retries sit on the I/O tasks only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows import runners
from flows import artifacts
from flows.artifacts import lost_prefect, make_artifact, one_line, report_artifact, write_run_report
from recsys.data.export import LoadReport, load_interactions, read_before
from recsys.data.interactions import Interactions
from recsys.data.splits import nothing_held_out
from recsys.errors import ListsUnhealthy
from recsys.evaluation import gate as quality
from recsys.models.baselines import cold_start_list
from recsys.models.fits import FitCache
from recsys.models.two_stage import TwoStage, untrainable
from recsys.progress import Stopwatch, add_seconds, step
from recsys.scoring.lists import Lists, empty_lists, put, shard_bounds
from recsys.scoring.rules import catalogue_record, pin_cap_notes, rules_record
from recsys.settings import RunOptions
from recsys.store.database import is_transient
from recsys.store.lock import run_lock
from recsys.store.publish import Store, list_tables, ranked_table
from recsys.store.runs import is_run_id, new_run_id, utc_now

# Inputs are large arrays and TensorFlow models: hashing them for a cache key would be slow and
# pointless, since every night's data is new.
TASK = dict(cache_policy=NO_CACHE, persist_result=False)


def retryable(exc: BaseException) -> bool:
    """Whether a failed I/O task is worth another try: a dropped connection, a busy database, an
    export replaced while it was read. Bad input, a full disk, no memory and bugs are not."""
    return is_transient(exc)


def _transient(task, task_run, state) -> bool:
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the failed task's own error, judged by its cause
        return retryable(exc)
    return False


RETRY = dict(retries=2, retry_delay_seconds=10, retry_condition_fn=_transient)
# What the progress display calls each training step.
STEPS = {
    "train_retrieval": "Training retrieval",
    "choose_ranker": "Choosing the ranker",
    "refresh_retrieval": "Refreshing retrieval",
    "train_ranking": "Training ranking",
}


# The flow run is named after the product's run id (Prefect's UI and `recsys runs` show the same
# name), and the flow takes its run id from that name.
@flow(name="recsys-nightly", flow_run_name=new_run_id, task_runner=ThreadPoolTaskRunner(max_workers=1))
def nightly(options: RunOptions = RunOptions()) -> dict:
    """Retrain both stages on the latest export and publish every customer's top-k list."""
    run_id = this_run_id()
    artifacts.new_run()
    with scheduled_run_log(options), unrecorded_failures_kept(options, run_id) as recorded:
        get_run_logger().info("recsys run %s: %s -> %s", run_id, options.data, options.output)
        summary = publish_nightly(options, run_id, recorded)
    report_artifact(summary)
    return summary


def publish_nightly(options: RunOptions, run_id: str, recorded) -> dict:
    """The nightly job: read, decide, train, score, check, publish; ``recorded()`` is called
    once the run is in the store's ``runs`` table."""
    watch = Stopwatch()
    interactions, report = load(options)
    setup, config = load_rules(interactions, options)  # a bad catalogue or config stops here: nothing written
    watch.lap("load")
    metrics: dict = {"set_aside": report.set_aside} if report.set_aside else {}
    removed: dict[str, int] = {}
    # Nothing is written before the input has been read and validated; then one run at a time.
    with run_lock(options.output), open_store(options) as (store, repaired):
        started_at = utc_now()
        with store.recording(run_id, started_at, report.path, _counts(report)):
            recorded()
            fits = FitCache()  # the splits and baseline fits the evaluation and the model share
            status, reason, fallback, model = decide(interactions, options, metrics, watch, fits, run_id)
            fits.keep_only(interactions)  # the splits' fits are done with: scoring gets their memory
            cost = rules_cost(model, setup.rules, options)
            if fallback is None:
                try:
                    lists = score(model, options, metrics, setup.rules, removed)
                except Exception as exc:  # noqa: BLE001 - odd but valid data still publishes a baseline
                    if lost_prefect(exc):
                        raise  # the orchestration went away, not the data
                    fallback = (metrics.get("gate") or {}).get("best_baseline") or "popularity"
                    status, reason = "degraded", failure("scoring", exc, fallback)
                else:
                    watch.lap("score")
            if fallback is not None:
                removed.clear()  # what the model's scoring counted, if it failed part way
                lists, fallback, trouble = fallback_lists(
                    interactions, fallback, options, metrics.get("tuning"), fits, setup.rules, removed
                )
                reason = (reason or "") + trouble
                watch.lap("baseline_lists")
            popular = cold_start(interactions, options, setup.rules)
            rule_notes = pin_cap_notes(setup.rules, lists, interactions.items)
            for note in rule_notes:
                get_run_logger().warning("rules: %s", note)
            metrics["rules"] = rules_record(config, removed, lists, cost, rule_notes)
            if config is not None or options.catalogue is not None:
                metrics["catalogue"] = catalogue_record(setup, options.catalogue, options.config, options.day())
            metrics["lists"] = check(store, interactions, lists, popular, options, fallback or TwoStage.name, setup.rules)
            fields = dict(metrics=dict(metrics, seconds=watch.seconds), message=reason, **_counts(report))
            published = publish(store, run_id, started_at, interactions, lists, popular, options, status, fields)
            watch.lap("publish")
        # Only the publish time is new here; the status was recorded with the swap.
        store.finish_run(run_id, metrics=dict(metrics, seconds=watch.seconds))
        report_path = write_run_report(options)
    return {
        "run_id": run_id,
        "status": status,
        "reason": reason,
        "evaluation": metrics.get("evaluation"),
        "gate_passed": (metrics.get("gate") or {}).get("passed"),
        "repaired": repaired,
        "users": published.users,
        "rows": published.rows,
        "items": report.items,
        "customers": report.users,
        "input_rows": report.rows,
        "notes": list(report.notes) + list(setup.notes) + list(metrics["rules"]["notes"]),
        "rules": metrics.get("rules"),
        "unseen_catalogue_items": list(setup.unseen),
        "seconds": watch.seconds,
        "parquet": str(published.parquet),
        "db_url": store.engine.url.render_as_string(hide_password=True),
        "report": report_path,
    }


def this_run_id() -> str:
    """The run id: the flow run's name (see ``flow_run_name``), or a new one if it was renamed."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    name = context.flow_run.name if context and context.flow_run else ""
    return name if is_run_id(name) else new_run_id()


def is_scheduled() -> bool:
    """Whether this flow run belongs to a deployment (nobody's terminal watches it)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return bool(context and context.flow_run and context.flow_run.deployment_id)


@contextmanager
def scheduled_run_log(options: RunOptions) -> Iterator[None]:
    """A scheduled run writes the log file `recsys run` writes (``DIR/logs/recsys.log``)."""
    from recsys.logfile import is_written, log_path, logging_to

    path = log_path(options.output)
    if not is_scheduled() or is_written(path):
        yield
        return
    with logging_to(path):
        yield


@contextmanager
def unrecorded_failures_kept(options: RunOptions, run_id: str):
    """Yields ``recorded``, to call once the run is in the store's ``runs`` table; a scheduled run
    that fails before that (refused by the lock, a bad export, no store) is kept for ``recsys runs``
    in ``DIR/logs/not_started.jsonl``."""
    from recsys.store import not_started

    state = {"recorded": False}
    try:
        yield lambda: state.update(recorded=True)
    except Exception as exc:
        if not state["recorded"] and is_scheduled():
            from recsys.store.diagnosis import redact

            not_started.record(options.output, run_id, redact(one_line(exc)))
        raise


@task(name="load_interactions", **RETRY, **TASK)
def load(options: RunOptions) -> tuple[Interactions, LoadReport]:
    """Read, validate and encode the export."""
    started = time.perf_counter()
    loaded = read_before(options.data, options.export_format)  # `recsys run` read and validated it before starting Prefect
    how = "(read before the run started)"
    if loaded is None:
        with step("Reading the export"):
            loaded = load_interactions(options.data, *options.export_format)
        how = f"in {time.perf_counter() - started:.1f}s"
    interactions, report = loaded
    log = get_run_logger()
    log.info(
        "read %s rows (%s duplicates) of %s customers and %s items from %s %s",
        f"{report.rows:,}", f"{report.duplicate_rows:,}", f"{report.users:,}", f"{report.items:,}", report.path, how,
    )
    for note in report.notes:
        log.info("input: %s", note)
    return interactions, report


@task(name="load_rules", **TASK)
def load_rules(interactions: Interactions, options: RunOptions):
    """Read and validate the catalogue and the config's rules, and turn them into arrays over the
    export's item codes for the day of the run: (``RuleSetup``, ``Config`` or None)."""
    from recsys.config import read_rule_files
    from recsys.scoring.rules import item_rules

    # `recsys run` and `recsys schedule` read them before Prefect started; a scheduled run reads
    # the files as they are tonight.
    catalogue, config = read_rule_files(options)
    setup = item_rules(interactions, catalogue, config.rules if config else None, options.day(), options.top_k)
    log = get_run_logger()
    if catalogue is not None:
        log.info("catalogue %s: %s items, %s not in the export", catalogue.path, f"{len(catalogue):,}", f"{len(setup.unseen):,}")
    for note in setup.notes:
        log.info("rules: %s", note)
    return setup, config


def rules_cost(model: TwoStage, rules, options: RunOptions):
    """The model's held-out NDCG with and without the rules (``recsys.evaluation.protocol.rules_cost``)."""
    from recsys.evaluation.protocol import rules_cost as cost

    if model is None:
        return None
    try:
        return cost(model, rules, options.top_k, options.cold_start_days)
    except Exception as exc:  # noqa: BLE001 - a figure for the report; the lists stand without it
        get_run_logger().warning("could not measure what the rules cost (%s)", one_line(exc), exc_info=exc)
        return None


def cold_start(interactions: Interactions, options: RunOptions, rules):
    """The cold-start list under the rules: (item codes, scores, reason codes)."""
    from recsys.scoring.rules import candidate_width, curated_single, curator_for

    width = candidate_width(rules, options.top_k)
    codes, scores = cold_start_list(interactions, options.cold_start_days, width)
    curator = curator_for(rules, interactions, options.cold_start_days, False, None)
    return curated_single(curator, codes, scores, options.top_k)


@contextmanager
def open_store(options: RunOptions) -> Iterator[tuple[Store, str | None]]:
    """The store of ``options`` with its database's run lock held for the block, its tables
    created, and what an interrupted run left to repair."""
    store = Store(options.resolved_db_url(), options.output)
    with store.lock():
        store.ensure_schema()
        repaired = store.reconcile()
        if repaired:
            get_run_logger().warning("store: %s (left by an interrupted run)", repaired)
        yield store, repaired


def decide(interactions: Interactions, options: RunOptions, metrics: dict, watch: Stopwatch, fits: FitCache, run_id: str):
    """What this run publishes: (status, reason, baseline, model), ``baseline`` None when the
    trained ``model``'s lists are to be published.

    Too little data publishes popularity, and so does an export in which no customer has a later
    item to hold out (one item each, or every customer's items at one time): the ranker learns
    from later items and the evaluation scores them, so neither could run, and without an
    evaluation there is no best baseline to choose. Otherwise the baselines are evaluated (with
    the evaluation on), the model is trained, and the quality gate compares the model's own
    held-out evaluation with the baselines' on the same customers (``metrics`` gets the table, the
    tuned settings and the verdict). A run that is not evaluated says why in
    ``metrics["not_evaluated"]``.
    """
    too_small = untrainable(interactions)
    if too_small:
        get_run_logger().warning("%s: publishing the popularity list for everyone", too_small)
        metrics["not_evaluated"] = too_small
        return "degraded", f"{too_small}: published the popularity list for everyone", "popularity", None
    # The split the evaluation and the training share (``fits`` keeps it for them).
    nothing = nothing_held_out(interactions, fits.holdout(interactions))
    if nothing:
        get_run_logger().warning(
            "%s: the ranker cannot be trained and the model cannot be evaluated; publishing the popularity list for everyone", nothing
        )
        metrics["not_evaluated"] = nothing
        return "degraded", f"{nothing}, so the ranker cannot be trained and the model cannot be evaluated: published the popularity list for everyone", "popularity", None
    baselines = None
    if options.evaluate:
        try:
            baselines = evaluate(interactions, options, fits)
        except Exception as exc:  # noqa: BLE001 - odd but valid data: publish popularity and say why
            if lost_prefect(exc):
                raise  # the orchestration went away, not the data
            watch.lap("evaluate")
            metrics["not_evaluated"] = failure("evaluation", exc, "popularity")
            return "degraded", metrics["not_evaluated"], "popularity", None
        watch.lap("evaluate")
        metrics["tuning"] = baselines.settings
    else:
        metrics["not_evaluated"] = "the run was started with --no-evaluate"
    try:
        model = train(interactions, options, watch, metrics.get("tuning"), fits)
    except Exception as exc:  # noqa: BLE001 - odd but valid data: publish the best baseline and say why
        if lost_prefect(exc):
            raise  # the orchestration went away, not the data
        fallback = quality.best_baseline(baselines) if baselines is not None and len(baselines.table) else "popularity"
        reason = failure("training", exc, fallback)
        metrics.setdefault("not_evaluated", reason)
        return "degraded", reason, fallback, None
    metrics["ranking_lists"] = model.ranking.lists if model.ranking else 0
    if baselines is None or model.evaluation is None or len(model.evaluation.users) == 0:
        metrics.setdefault("not_evaluated", "the model's evaluation scored no customer")
        return "succeeded", None, None, model
    evaluation, gate = judge(baselines, model, options, run_id)
    from recsys.evaluation.protocol import metrics_record

    metrics["evaluation"] = metrics_record(evaluation.table)
    metrics["gate"] = {
        "passed": gate.passed, "published": gate.publish, "reason": gate.reason,
        "best_baseline": gate.best_baseline, "difference": gate.difference,
    }
    segments = segment_quality(interactions, evaluation, model, gate.best_baseline, options)
    if segments:
        metrics["segments"] = segments
    if gate.passed:
        return "succeeded", None, None, model
    return "degraded", gate.reason, gate.publish, model


@task(name="evaluate", **TASK)
def evaluate(interactions: Interactions, options: RunOptions, fits: FitCache):
    """Score every baseline on the temporal holdout (EASE and RP3beta tuned first)."""
    from recsys.evaluation.protocol import evaluate_baselines

    started = time.perf_counter()
    with step("Evaluating the baselines") as update:
        baselines = evaluate_baselines(interactions, options, fits, progress=update)
    get_run_logger().info(
        "baselines evaluated in %.1fs on %s customers (tuned: %s)",
        time.perf_counter() - started, f"{len(baselines.users):,}", baselines.settings,
    )
    return baselines


def judge(baselines, model: TwoStage, options: RunOptions, run_id: str):
    """The model's own held-out evaluation beside the baselines', and the quality gate's verdict."""
    from prefect.artifacts import create_markdown_artifact

    from recsys.evaluation.protocol import markdown_table, self_evaluation_of, with_rows

    evaluation = with_rows(baselines, self_evaluation_of(model, options.top_k))
    gate = quality.quality_gate(evaluation)
    users = int(evaluation.table["users"].iloc[0])
    markdown = markdown_table(evaluation.table, f"Held-out NDCG@{options.top_k} and friends ({users:,} customers)")
    log = get_run_logger()
    make_artifact("quality", lambda: create_markdown_artifact(
        key="recsys-quality", markdown=f"**Run:** {run_id}\n\n{markdown}\n\n**Gate:** {gate.reason}",
        description=f"Nightly quality of run {run_id}",
    ))
    log.info("evaluation:\n%s", markdown)
    (log.info if gate.passed else log.warning)("quality gate: %s", gate.reason)
    return evaluation, gate


def segment_quality(interactions: Interactions, evaluation, model: TwoStage, best: str, options: RunOptions) -> dict | None:
    """NDCG by customer segment (new, 1-2 items, 3+) of the model and the best baseline, from the
    evaluation's per-customer figures; None (with a warning) if it cannot be computed: it is a
    figure for the report, the gate's verdict stands without it."""
    from recsys.evaluation.protocol import MODEL_NAME
    from recsys.evaluation.segments import customer_segments

    try:
        return customer_segments(interactions, evaluation, model.evaluation.split.train, [MODEL_NAME, best], options)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        get_run_logger().warning("could not compute the quality by segment (%s)", one_line(exc), exc_info=exc)
        return None


def failure(stage: str, exc: Exception, fallback: str) -> str:
    """Why the run publishes ``fallback``: ``stage`` raised ``exc`` (logged with its traceback)."""
    get_run_logger().warning("%s failed; publishing %s instead", stage, fallback, exc_info=exc)
    return f"{stage} failed ({one_line(exc)}): published {fallback} instead"


def fallback_lists(
    interactions: Interactions, name: str, options: RunOptions, settings: dict | None, fits: FitCache | None = None,
    rules=None, removed: dict | None = None,
):
    """Lists of the baseline ``name``, or of popularity if that one cannot be fitted.

    Returns (lists, the baseline published, what to add to the run's reason: "" when ``name`` was).
    Popularity fits any export that passed validation; if even it fails, the run fails.
    """
    try:
        return baseline_lists(interactions, name, options, settings, fits, rules, removed), name, ""
    except Exception as exc:  # noqa: BLE001 - the simplest list is the last resort
        if name == "popularity":
            raise
        get_run_logger().warning("%s could not be fitted; publishing popularity instead", name, exc_info=exc)
        if removed is not None:
            removed.clear()
        lists = baseline_lists(interactions, "popularity", options, settings, None, rules, removed)
        return lists, "popularity", f"; {name} could not be fitted ({one_line(exc)}): published popularity instead"


@task(name="baseline_lists", **TASK)
def baseline_lists(
    interactions: Interactions, name: str, options: RunOptions, settings: dict | None = None, fits: FitCache | None = None,
    rules=None, removed: dict | None = None,
) -> Lists:
    """The lists of the named baseline (with the ``settings`` tuning chose) for every customer,
    published when the model may not be: under the run's ``rules`` (none: the rules of an empty
    config) with reasons; ``removed`` gets what the rules took out."""
    from recsys.evaluation.protocol import baseline_factories
    from recsys.models.context import cooccurrence_similarity
    from recsys.scoring.rules import curated_lists, curator_for, item_rules

    factory = baseline_factories(options, settings)[name]
    recommender = fits.fitted(name, (settings or {}).get(name), interactions, factory) if fits else factory().fit(interactions)
    rules = rules if rules is not None else item_rules(interactions, day=options.day(), k=options.top_k).rules
    # A non-personal list owes nothing to a customer's history: its reasons say "popular lately".
    similarity = None if getattr(recommender, "non_personal", False) else cooccurrence_similarity(interactions.seen())
    curator = curator_for(rules, interactions, options.cold_start_days, not options.include_seen, similarity)
    return curated_lists(recommender.recommend, interactions.n_users, options.top_k, curator, removed)


def train(
    interactions: Interactions, options: RunOptions, watch: Stopwatch, tuned: dict | None, fits: FitCache
) -> TwoStage:
    """Train both stages, each step of the one training sequence as a Prefect task with its progress
    bar; the baseline sources take the ``tuned`` settings of the evaluation when it ran."""
    log = get_run_logger()

    def run(training_step, *args):
        name = training_step.__name__
        with step(STEPS[name]) as update:
            result = task(training_step, name=name, **TASK)(*args, progress=update)
        watch.lap(name)
        trained = result[0] if isinstance(result, tuple) else result  # train_ranking: (ranker, evaluation)
        if trained is None:
            log.warning("%s: no candidate list held a later item; lists follow the candidates' order", name)
        else:
            log.info("%s: %s", name, trained.describe())
        return result

    return TwoStage(options, tuned=tuned, fits=fits).fit(interactions, run=run)


@task(name="scoring_model", **TASK)
def scoring_model(model: TwoStage):
    """Turn the trained stages into plain arrays (vectors, context, ranker weights) that shards score from."""
    return model.scorer()


@task(name="score_shard", **TASK)
def score_shard(scorer, start: int, stop: int, k: int, exclude_seen: bool):
    """Top-k lists of customers ``start..stop-1``: retrieval candidates, then ranking order, then
    the rules; also the seconds of each stage and what the rules removed."""
    import numpy as np

    seconds: dict[str, float] = {}
    removed: dict[str, int] = {}
    lists = scorer.lists(
        np.arange(start, stop), k, exclude_seen, seconds=seconds, threads=runners.worker_threads(), removed=removed
    )
    return start, lists, seconds, removed


def score(model: TwoStage, options: RunOptions, metrics: dict, rules=None, removed: dict | None = None) -> Lists:
    """Every customer's top-k, one Prefect task per shard of customers (on threads or Dask workers).

    The scorer is built once; on Dask it is scattered to every worker once (``broadcast``), and the
    shard tasks receive a reference to it, so no task ships the model again. ``metrics`` gets the
    seconds of each scoring stage, summed over the shards; ``removed`` what the ``rules`` took out.
    """
    import dataclasses

    from recsys.scoring.rules import add_counts, curator_for, item_rules

    started = time.perf_counter()
    scorer = scoring_model(model)
    interactions = model.interactions
    rules = rules if rules is not None else item_rules(interactions, day=options.day(), k=options.top_k).rules
    context = scorer.context
    curator = curator_for(
        rules, interactions, options.cold_start_days, not options.include_seen, context.similarity, seen=context.seen
    )
    scorer = dataclasses.replace(scorer, curator=curator)
    seconds = dict(model.seconds)
    client = runners.dask_client()
    handle = client.scatter(scorer, broadcast=True, hash=False) if client is not None else scorer
    n_users = scorer.n_users
    lists = empty_lists(n_users, options.top_k)
    shards = shard_bounds(n_users, options.shard_size)
    args = (options.top_k, not options.include_seen)
    with step("Scoring customers") as update:
        done = 0
        for start, shard, shard_seconds, shard_removed in runners.shard_results(
            score_shard, handle, shards, args, client is not None
        ):
            put(lists, start, shard)
            add_seconds(seconds, shard_seconds)
            if removed is not None:
                add_counts(removed, shard_removed)
            done += len(shard)
            if update:
                update(done, n_users)
    where = f"{len(shards)} shards on Dask at {client.scheduler.address}" if client is not None else f"{len(shards)} shards"
    get_run_logger().info(
        "scored %s customers (%d candidates each, %s) in %.1fs (user vectors %.1fs, retrieval %.1fs, "
        "ranking %.1fs; shard times summed)",
        f"{n_users:,}", options.candidates, where, time.perf_counter() - started, seconds.get("user_vectors", 0.0),
        seconds.get("retrieval_scoring", 0.0), seconds.get("ranking_scoring", 0.0),
    )
    metrics["scoring_seconds"] = {name: round(value, 2) for name, value in seconds.items()}
    return lists


@task(name="check_lists", **TASK)
def check(
    store: Store, interactions: Interactions, lists: Lists, popular, options: RunOptions, recommender: str, rules=None
) -> dict:
    """The health check before the swap (``recsys.scoring.health``), against the run published now.

    Returns the record the next run compares with; lists that fail raise ``ListsUnhealthy``, so
    the run fails and nothing is replaced.
    """
    from recsys.scoring.health import check_lists

    # The model's lists cannot be longer than its candidate lists.
    length = min(options.top_k, options.candidates) if recommender == TwoStage.name else options.top_k
    previous = store.current_metrics().get("lists")
    with step("Checking the lists"):
        health = check_lists(lists, interactions, length, not options.include_seen, recommender, previous, popular[:2], rules)
    if not health.ok:
        raise ListsUnhealthy(
            f"the new lists of {recommender} failed the health check, nothing was replaced: " + "; ".join(health.problems)
        )
    record = health.record
    get_run_logger().info(
        "health check passed: %s of %s customers with a full list (%s short only where the catalogue is), "
        "coverage %.1f%%, scores %s", f"{record['full']:,}", f"{record['customers']:,}",
        f"{record['short_by_catalogue']:,}", 100 * record["coverage"], record["score"] or "none",
    )
    return record


@task(name="publish", **RETRY, **TASK)
def publish(store: Store, run_id: str, generated_at, interactions: Interactions, lists: Lists, popular, options: RunOptions, status: str, fields: dict):
    """Swap the new lists into the SQL table and the Parquet file as a whole; the run becomes current.

    ``popular``: the cold-start list as (item codes, scores, reason codes).
    """
    started = time.perf_counter()
    popular = ranked_table(interactions.items, *popular)
    with step("Publishing"):
        published = store.publish(
            run_id, generated_at, list_tables(interactions.users, interactions.items, lists), popular, status=status, **fields
        )
    log = get_run_logger()
    if published.parquet_pending:
        log.warning("publish: %s", published.parquet_pending)
    log.info(
        "published %s rows for %s customers to %s and %s in %.1fs",
        f"{published.rows:,}", f"{published.users:,}", published.parquet,
        store.engine.url.render_as_string(hide_password=True), time.perf_counter() - started,
    )
    return published


def _counts(report: LoadReport) -> dict:
    return {"rows": report.rows, "users": report.users, "items": report.items, "input_sha256": report.sha256}
