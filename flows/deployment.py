"""The scheduled deployment of the nightly flow: the same options as ``recsys run``, on a cron."""

from __future__ import annotations

from pathlib import Path

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

from flows.nightly import nightly
from flows.runners import flow_for
from recsys.settings import RunOptions


def deployment(options: RunOptions, cron: str, name: str = "nightly"):
    """The ``recsys-nightly/<name>`` deployment: every field of ``options`` is one of its parameters
    (the Prefect UI shows them as a form), its paths made absolute so it runs from anywhere."""
    options = options.with_(
        data=Path(options.data).resolve(),
        output=Path(options.output).resolve(),
        catalogue=Path(options.catalogue).resolve() if options.catalogue is not None else None,
        config=Path(options.config).resolve() if options.config is not None else None,
    )
    # One run at a time: a run due while another is running waits for it (the store's locks would
    # refuse it otherwise).
    one_at_a_time = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
    return flow_for(nightly, options).to_deployment(
        name=name, cron=cron, parameters={"options": options.as_parameters()}, concurrency_limit=one_at_a_time
    )
