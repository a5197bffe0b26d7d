"""The run log: one row per run in the ``runs`` table, from "running" to how it ended."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import sqlalchemy as sa

from recsys.store.tables import runs_table


def utc_now() -> datetime:
    """The current time in UTC (timezone-aware)."""
    return datetime.now(timezone.utc)


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, unique run id: UTC time to the microsecond."""
    return (now or utc_now()).strftime("%Y%m%dT%H%M%S%fZ")


def is_run_id(text: str) -> bool:
    """Whether ``text`` has the form of a run id (``20261127T020000123456Z``)."""
    try:
        datetime.strptime(text, "%Y%m%dT%H%M%S%fZ")
    except (TypeError, ValueError):
        return False
    return len(text) == 22


def as_row_values(fields: dict) -> dict:
    """Run fields as column values: ``metrics`` as JSON text."""
    values = dict(fields)
    if "metrics" in values and not isinstance(values["metrics"], str):
        values["metrics"] = json.dumps(values["metrics"], sort_keys=True, default=float)
    return values


class RunLog:
    """Reads and writes the ``runs`` table of one database."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.table = runs_table(sa.MetaData())

    def ensure(self, conn) -> None:
        """Create the table if it does not exist yet (inside the caller's transaction)."""
        self.table.create(conn, checkfirst=True)

    def begin(self, run_id: str, started_at: datetime, input_path: str) -> None:
        """Record a run as running; earlier runs left running by a killed process become failed."""
        with self.engine.begin() as conn:
            self.ensure(conn)
            conn.execute(
                self.table.update()
                .where(self.table.c.status == "running")
                .values(status="failed", message="interrupted: the process ended before the run finished")
            )
            conn.execute(
                self.table.insert().values(
                    run_id=run_id, started_at=started_at, status="running", is_current=False, input_path=input_path
                )
            )

    def finish(self, run_id: str, status: str | None = None, **fields) -> None:
        """Record how a run ended (status, counts, metrics as JSON, message)."""
        values = as_row_values(fields)
        if status is not None:
            values.update(status=status, finished_at=utc_now())
        with self.engine.begin() as conn:
            conn.execute(self.table.update().where(self.table.c.run_id == run_id).values(**values))

    def mark_published(self, conn, run_id: str, status: str, fields: dict) -> None:
        """Inside the swap's transaction: the run's status and fields, and the run is the current one."""
        values = as_row_values(dict(fields, status=status, finished_at=utc_now()))
        conn.execute(self.table.update().where(self.table.c.run_id == run_id).values(**values))
        self.make_current(conn, run_id)

    def make_current(self, conn, run_id: str) -> None:
        """Inside the caller's transaction: ``run_id`` becomes the one current run."""
        conn.execute(self.table.update().values(is_current=(self.table.c.run_id == run_id)))

    def current(self, conn=None) -> str | None:
        """The run whose lists are published now."""
        query = sa.select(self.table.c.run_id).where(self.table.c.is_current)
        if conn is not None:
            return conn.execute(query).scalar()
        with self.engine.connect() as own:
            return own.execute(query).scalar()

    def current_metrics(self) -> dict:
        """The metrics of the run whose lists are published now ({} when there is none)."""
        query = sa.select(self.table.c.metrics).where(self.table.c.is_current)
        with self.engine.connect() as conn:
            text = conn.execute(query).scalar()
        try:
            return json.loads(text) if text else {}
        except ValueError:
            return {}

    def note(self, conn, run_id: str, message: str) -> None:
        """Inside the caller's transaction: set a run's message."""
        conn.execute(self.table.update().where(self.table.c.run_id == run_id).values(message=message))

    def _message(self, conn, run_id: str) -> str | None:
        return conn.execute(sa.select(self.table.c.message).where(self.table.c.run_id == run_id)).scalar()

    def add_note(self, conn, run_id: str, note: str) -> None:
        """Inside the caller's transaction: append ``note`` to a run's message (a degraded run keeps its reason)."""
        message = self._message(conn, run_id)
        self.note(conn, run_id, f"{message} | {note}" if message else note)

    def drop_note(self, conn, run_id: str, prefix: str) -> None:
        """Inside the caller's transaction: remove the notes starting with ``prefix`` from a run's message."""
        message = self._message(conn, run_id)
        if not message:
            return
        kept = [part for part in message.split(" | ") if not part.startswith(prefix)]
        self.note(conn, run_id, " | ".join(kept) or None)
