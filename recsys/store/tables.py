"""The store's tables, in SQL and in Arrow: one definition each, shared by every writer and reader.

``recommendations`` holds the current lists (one row per customer and rank), ``popular_items``
the current cold-start list, ``runs`` one row per run. Staging tables (``*_staging``) take a
run's lists before the swap; the tables being replaced are kept as ``*_previous`` for rollback.
"""

from __future__ import annotations

import pyarrow as pa
import sqlalchemy as sa

RECOMMENDATIONS = "recommendations"
POPULAR = "popular_items"
RUNS = "runs"
STAGING = "_staging"
PREVIOUS = "_previous"
PRIMARY_KEYS = {RECOMMENDATIONS: ("user_id", "rank"), POPULAR: ("rank",)}
CONSTANT_COLUMNS = ("run_id", "generated_at")  # one value per publish

LIST_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("rank", pa.int16()),
        ("item", pa.string()),
        ("score", pa.float64()),
        ("reason", pa.string()),
        ("run_id", pa.string()),
        ("generated_at", pa.timestamp("us", tz="UTC")),
    ]
)


def recommendations_table(
    metadata: sa.MetaData, name: str = RECOMMENDATIONS, pk_name: str | None = None, primary_key: bool = True
) -> sa.Table:
    """The per-customer lists: one row per (customer, rank).

    ``pk_name`` names the primary key (PostgreSQL keeps a constraint's name when its table is
    renamed, so each creation needs its own); ``primary_key=False`` leaves it to be added after a
    bulk load (``recsys.store.bulk.add_primary_key``).
    """
    return sa.Table(
        name,
        metadata,
        sa.Column("user_id", sa.String, nullable=False),
        sa.Column("rank", sa.SmallInteger, nullable=False),
        sa.Column("item", sa.String, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("reason", sa.String, nullable=False),
        sa.Column("run_id", sa.String, nullable=False),
        sa.Column("generated_at", sa.DateTime(timezone=True), nullable=False),
        *([sa.PrimaryKeyConstraint("user_id", "rank", name=pk_name)] if primary_key else []),
    )


def popular_table(
    metadata: sa.MetaData, name: str = POPULAR, pk_name: str | None = None, primary_key: bool = True
) -> sa.Table:
    """The cold-start list shown to customers with no history."""
    return sa.Table(
        name,
        metadata,
        sa.Column("rank", sa.SmallInteger, nullable=False),
        sa.Column("item", sa.String, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("reason", sa.String, nullable=False),
        sa.Column("run_id", sa.String, nullable=False),
        *([sa.PrimaryKeyConstraint("rank", name=pk_name)] if primary_key else []),
    )


def runs_table(metadata: sa.MetaData) -> sa.Table:
    """One row per run: what it read, how it ended, its metrics (JSON)."""
    return sa.Table(
        RUNS,
        metadata,
        sa.Column("run_id", sa.String, primary_key=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("is_current", sa.Boolean, nullable=False, default=False),
        sa.Column("input_path", sa.String),
        sa.Column("input_sha256", sa.String),
        sa.Column("rows", sa.Integer),
        sa.Column("users", sa.Integer),
        sa.Column("items", sa.Integer),
        sa.Column("metrics", sa.Text),
        sa.Column("message", sa.Text),
    )


def primary_key_name(engine: sa.Engine, table: str) -> str | None:
    """A primary-key name no other table's key has (SQLite: the default, unnamed)."""
    import secrets

    if engine.dialect.name == "sqlite":
        return None
    return f"{table}_pk_{secrets.token_hex(6)}"
