"""The scheduled deployment of the nightly flow: the same options as ``recsys run``, on a cron in a
time zone, one run at a time. ``prefect.yaml`` registers the same deployment with ``prefect deploy``."""

from __future__ import annotations

from pathlib import Path

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.schedules import Cron

from flows.nightly import nightly
from flows.runners import flow_for
from recsys.schedule import COLLISION_STRATEGY, CONCURRENCY_LIMIT, DEFAULT_CRON, DEPLOYMENT_NAME, machine_timezone
from recsys.settings import RunOptions


def deployment(options: RunOptions, cron: str = DEFAULT_CRON, name: str = DEPLOYMENT_NAME, timezone: str | None = None):
    """The ``recsys-nightly/<name>`` deployment: every field of ``options`` is one of its parameters
    (the Prefect UI shows them as a form), its paths made absolute so it runs from anywhere;
    ``cron`` is read in ``timezone`` (default: this machine's)."""
    options = options.with_(
        data=Path(options.data).resolve(),
        output=Path(options.output).resolve(),
        catalogue=Path(options.catalogue).resolve() if options.catalogue is not None else None,
        config=Path(options.config).resolve() if options.config is not None else None,
    )
    # One run at a time: a run due while another is running waits for it (the store's locks would
    # refuse it otherwise).
    one_at_a_time = ConcurrencyLimitConfig(
        limit=CONCURRENCY_LIMIT, collision_strategy=ConcurrencyLimitStrategy(COLLISION_STRATEGY)
    )
    return flow_for(nightly, options).to_deployment(
        name=name,
        schedule=Cron(cron, timezone=timezone or machine_timezone()),
        parameters={"options": options.as_parameters()},
        concurrency_limit=one_at_a_time,
    )
