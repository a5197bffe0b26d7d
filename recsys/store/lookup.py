"""The fast read path: one customer's list from the store, without the model.

Standard library only for the default SQLite store, psycopg alone for PostgreSQL (importing
SQLAlchemy too would double the start-up time), SQLAlchemy for other databases: a lookup must
answer in a blink, so nothing here imports TensorFlow, Prefect, pandas or pyarrow.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from recsys.errors import StoreError
from recsys.store.diagnosis import describe, safe_url

_LIST_SQL = (
    "SELECT rank, item, score, reason, run_id, generated_at FROM recommendations WHERE user_id = :user ORDER BY rank"
)
# The cold-start list has no time of its own: its run's start is the list's ``generated_at``.
_POPULAR_SQL = (
    "SELECT rank, item, score, reason, run_id, (SELECT started_at FROM runs WHERE runs.run_id = popular_items.run_id) "
    "FROM popular_items ORDER BY rank"
)
# Other databases: the list, else the cold-start list, in one statement, so both come from the
# same published run even without a transaction snapshot over the two tables (PostgreSQL resolves
# a renamed table anew at each statement).
_ANSWER_SQL = (
    "SELECT 0 AS cold, rank, item, score, reason, run_id, generated_at FROM recommendations WHERE user_id = :user "
    "UNION ALL "
    "SELECT 1 AS cold, rank, item, score, reason, run_id, "
    "(SELECT started_at FROM runs WHERE runs.run_id = popular_items.run_id) FROM popular_items "
    "WHERE NOT EXISTS (SELECT 1 FROM recommendations WHERE user_id = :user) "
    "ORDER BY cold, rank"
)


@dataclass(frozen=True)
class Answer:
    """A customer's list: ``cold_start`` is true when the customer is unknown to the last run."""

    user: str
    cold_start: bool
    rows: tuple[tuple[int, str, float, str], ...]  # rank, item, score, reason
    run_id: str | None
    generated_at: str | None

    def as_dict(self) -> dict:
        """JSON-ready form: ``generated_at`` in ISO 8601 with its offset (UTC), scores to the
        4 decimals the table shows (they order one run's lists; more digits are noise)."""
        return {
            "user_id": self.user,
            "cold_start": self.cold_start,
            "run_id": self.run_id,
            "generated_at": iso_utc(self.generated_at),
            "recommendations": [
                {"rank": r, "item": i, "score": round(s, SCORE_DECIMALS), "reason": why} for r, i, s, why in self.rows
            ],
        }


SCORE_DECIMALS = 4


def iso_utc(text: str | None) -> str | None:
    """A UTC time as the store keeps it (``YYYY-MM-DD HH:MM:SS.ffffff``, with or without an
    offset) in ISO 8601 with its offset: ``2026-11-27T02:00:00.123456+00:00``."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(str(text))
    except ValueError:
        return str(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat()


def format_answer(answer: Answer) -> str:
    """A customer's list as an aligned text table, titled as the cold-start list when it is one.

    Plain text on purpose: it is the whole output of the fast ``recsys lookup`` path, which must
    not pay for importing a terminal-rendering library.
    """
    if not answer.rows:
        return f"customer {answer.user!r}: no list and no cold-start list in the store"
    if answer.cold_start:
        # A customer of the export who already took every item has no list either.
        title = (
            f"customer {answer.user!r} has no list in the last run (not in its export, or nothing left to offer): "
            "cold-start list (popular recently)"
        )
    else:
        title = f"recommendations for customer {answer.user!r} (run {answer.run_id})"
    width = max(len("item"), *(len(item) for _, item, _, _ in answer.rows))
    lines = [title, f"{'rank':>4}  {'item':<{width}}  {'score':>10}  reason", f"{'-' * 4}  {'-' * width}  {'-' * 10}  {'-' * 6}"]
    lines += [f"{rank:>4}  {item:<{width}}  {score:>10.{SCORE_DECIMALS}f}  {reason}" for rank, item, score, reason in answer.rows]
    return "\n".join(lines)


def lookup(user: str, db_url: str) -> Answer:
    """The customer's published list, or the cold-start list when the customer is not in it."""
    # A command-line argument that is not valid UTF-8 arrives with lone surrogates, which no
    # database can store: read it as the bytes it was, with unreadable ones replaced.
    user = str(user).encode("utf-8", "surrogateescape").decode("utf-8", "replace").strip()
    def query(legacy: bool = False):
        if db_url.startswith("sqlite:///"):
            return _query_sqlite(_sqlite_path(db_url), user, legacy)
        return _query_sqlalchemy(db_url, user, legacy)

    try:
        rows, popular = query()
    except StoreError as exc:
        if not _no_reason_column(exc):
            raise
        rows, popular = query(legacy=True)
    if rows:
        return Answer(
            user=user,
            cold_start=False,
            rows=tuple((int(r), str(i), float(s), str(why or "")) for r, i, s, why, _, _ in rows),
            run_id=rows[0][4],
            generated_at=str(rows[0][5]),
        )
    return Answer(
        user=user,
        cold_start=True,
        rows=tuple((int(r), str(i), float(s), str(why or "")) for r, i, s, why, _, _ in popular),
        run_id=popular[0][4] if popular else None,
        generated_at=str(popular[0][5]) if popular and popular[0][5] is not None else None,
    )


def _sqlite_path(db_url: str) -> Path:
    return Path(unquote(db_url[len("sqlite:///") :].split("?", 1)[0]))


def require_store(db_url: str) -> None:
    """Raise ``StoreError`` when the SQLite store does not exist (other databases are checked on use)."""
    if db_url.startswith("sqlite:///"):
        path = _sqlite_path(db_url)
        if not path.is_file():
            raise StoreError(f"no store at {path}: run `recsys run` first (or pass --output / --db-url)")


def _sql(text: str, legacy: bool) -> str:
    """``text`` as it reads a store published before lists had a ``reason`` column (a run
    rolled back to from before the upgrade): an empty reason instead."""
    return text.replace("score, reason,", "score, '' AS reason,") if legacy else text


def _no_reason_column(exc: StoreError) -> bool:
    text = str(exc).lower()
    return "reason" in text and ("no such column" in text or "does not exist" in text or "unknown column" in text)


def _query_sqlite(path: Path, user: str, legacy: bool = False) -> tuple[list, list]:
    require_store(f"sqlite:///{path}")
    try:
        # Read-only, so a lookup can never create or change the store.
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open the store ({exc})") from None
    try:
        connection.execute("PRAGMA busy_timeout=30000")
        # Both reads in one transaction: the list and the cold-start list come from the same run.
        connection.execute("BEGIN")
        rows = connection.execute(_sql(_LIST_SQL, legacy), {"user": user}).fetchall()
        popular = [] if rows else connection.execute(_sql(_POPULAR_SQL, legacy)).fetchall()
        connection.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: the store cannot be read ({exc}); run `recsys run` to rebuild it") from None
    finally:
        connection.close()
    return rows, popular


def _query_sqlalchemy(db_url: str, user: str, legacy: bool = False) -> tuple[list, list]:
    """Any database but SQLite: one statement (``_ANSWER_SQL``); PostgreSQL through psycopg directly."""
    if _is_postgres(db_url):
        answer = _postgres_rows(db_url, _sql(_ANSWER_SQL, legacy).replace(":user", "%(user)s"), {"user": user})
    else:
        import sqlalchemy as sa

        try:
            engine = sa.create_engine(db_url)
            with engine.connect() as conn:
                answer = [tuple(r) for r in conn.execute(sa.text(_sql(_ANSWER_SQL, legacy)), {"user": user}).fetchall()]
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(describe(db_url, "cannot read the store", str(getattr(exc, "orig", None) or exc))) from None
    rows = [(r, i, s, why, run, _utc_text(at)) for cold, r, i, s, why, run, at in answer if not cold]
    popular = [(r, i, s, why, run, _utc_text(at)) for cold, r, i, s, why, run, at in answer if cold]
    return rows, popular


def _is_postgres(db_url: str) -> bool:
    scheme = db_url.split("://", 1)[0].lower()
    return scheme in ("postgresql", "postgres", "postgresql+psycopg")


def _postgres_params(db_url: str) -> dict:
    """psycopg.connect keywords from a SQLAlchemy-style URL (query parameters are libpq's)."""
    parts = urlsplit(db_url)
    params = {key: value for key, value in parse_qsl(parts.query)}
    if parts.hostname:
        params["host"] = unquote(parts.hostname)
    if parts.port:
        params["port"] = parts.port
    if parts.username:
        params["user"] = unquote(parts.username)
    if parts.password:
        params["password"] = unquote(parts.password)
    if parts.path.strip("/"):
        params["dbname"] = unquote(parts.path.strip("/"))
    return params


def _connect_postgres(db_url: str):
    import psycopg

    try:
        params = _postgres_params(db_url)
    except ValueError as exc:
        raise StoreError(f"--db-url {safe_url(db_url)}: is not a database URL ({exc}); check it") from None
    try:
        return psycopg.connect(**params, connect_timeout=10, autocommit=True)
    except psycopg.Error as exc:
        raise StoreError(describe(db_url, "cannot open the store", str(exc))) from None


def _postgres_rows(db_url: str, sql: str, params: dict) -> list[tuple]:
    """Rows of one query on the PostgreSQL store; a missing store or a driver error is a ``StoreError``."""
    import psycopg

    connection = _connect_postgres(db_url)
    try:
        return connection.execute(sql, params).fetchall()
    except psycopg.errors.UndefinedTable:
        raise StoreError(f"no store in {safe_url(db_url)}: run `recsys run` first (or pass --db-url)") from None
    except psycopg.Error as exc:
        raise StoreError(describe(db_url, "cannot read the store", str(exc))) from None
    finally:
        connection.close()


def _utc_text(value) -> str | None:
    """A time as the SQLite store prints it (UTC, ``YYYY-MM-DD HH:MM:SS.ffffff``) whatever the driver returns."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


_RUNS_SQL = (
    "SELECT run_id, started_at, finished_at, status, is_current, users, metrics, message "
    "FROM runs ORDER BY started_at DESC LIMIT :limit"
)


def recent_runs(db_url: str, limit: int = 20) -> list[dict]:
    """The newest runs, as dicts (metrics decoded from JSON)."""
    import json

    if db_url.startswith("sqlite:///"):
        require_store(db_url)
        path = _sqlite_path(db_url)
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as connection:
                rows = connection.execute(_RUNS_SQL, {"limit": limit}).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: the store cannot be read ({exc})") from None
    elif _is_postgres(db_url):
        rows = _postgres_rows(db_url, _RUNS_SQL.replace(":limit", "%(limit)s"), {"limit": limit})
        rows = [(r[0], _utc_text(r[1]), _utc_text(r[2]), *r[3:]) for r in rows]
    else:
        import sqlalchemy as sa

        try:
            with sa.create_engine(db_url).connect() as conn:
                rows = conn.execute(sa.text(_RUNS_SQL), {"limit": limit}).fetchall()
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(describe(db_url, "cannot read the runs", str(getattr(exc, "orig", None) or exc))) from None
    names = ("run_id", "started_at", "finished_at", "status", "is_current", "users", "metrics", "message")
    out = []
    for row in rows:
        record = dict(zip(names, row))
        record["metrics"] = json.loads(record["metrics"]) if record["metrics"] else {}
        out.append(record)
    return out
