"""When the nightly deployment runs: its cron, its time zone and its name, checked before serving.

``recsys schedule`` and ``prefect.yaml`` register the same deployment; both take their defaults
from here. Standard library only (Prefect's cron check is imported when a cron is checked).
"""

from __future__ import annotations

import os
from pathlib import Path

from recsys.errors import OptionError

DEFAULT_CRON = "0 2 * * *"
DEPLOYMENT_NAME = "nightly"
FLOW_NAME = "recsys-nightly"
ENTRYPOINT = "flows/nightly.py:nightly"
# A run that falls due while one runs waits for it (Prefect's deployment concurrency limit).
CONCURRENCY_LIMIT = 1
COLLISION_STRATEGY = "ENQUEUE"


def machine_timezone() -> str:
    """This machine's IANA time zone (``Europe/Madrid``): ``$TZ``, else what /etc/localtime
    links to, else /etc/timezone, else ``UTC``."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        target = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    try:
        candidates.append(Path("/etc/timezone").read_text().strip())
    except OSError:
        pass
    for name in candidates:
        if name and _is_zone(name):
            return name
    return "UTC"


def _is_zone(name: str) -> bool:
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(name)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return False
    return True


def check_timezone(name: str) -> str:
    """``name`` if it is an IANA time zone, else ``OptionError``."""
    if not _is_zone(name):
        raise OptionError(f"--timezone {name!r} is not an IANA time zone; use a name like 'Europe/Madrid' or 'UTC'")
    return name


def check_cron(cron: str) -> str:
    """``cron`` if Prefect can schedule it (five fields, no random or hashed ones), else ``OptionError``."""
    from prefect.schedules import validate_cron_string

    try:
        return validate_cron_string(cron)
    except ValueError:
        raise OptionError(
            f"--cron {cron!r} is not a cron expression: five fields, minute hour day month weekday, "
            f"e.g. '{DEFAULT_CRON}' (every night at 02:00)"
        ) from None
