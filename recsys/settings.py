"""Settings of a run: one frozen dataclass passed down from the command line to every step.

Standard library only, so the lookup path can read defaults without importing anything heavy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_DATA = Path("data/interactions_sample.csv")
DEFAULT_OUTPUT = Path("output")
DB_FILENAME = "recsys.db"
PARQUET_FILENAME = "recommendations.parquet"
DB_URL_ENV = "RECSYS_DB_URL"


@dataclass(frozen=True)
class ColumnMap:
    """Names of the export's columns; options override them for other exports."""

    user: str = "ID_CLIENTE"
    timestamp: str = "FECHA_INTERACCION"
    item: str = "NOMBRE_CORTO_DE_EXPERIENCIA"
    rating: str = "CALIFICACION"

    def required(self) -> tuple[str, str, str, str]:
        """The four column names in the order errors report them."""
        return (self.user, self.timestamp, self.item, self.rating)


@dataclass(frozen=True)
class ModelSettings:
    """Hyperparameters of the two stages. ``None`` means "derive from the data size"."""

    embedding_dim: int = 32
    retrieval_epochs: int | None = None
    ranking_epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float = 0.02
    history_length: int = 20
    popularity_correction: bool = True
    user_id_min_items: int = 5
    ranking_ids: bool = False
    ranking_learning_rate: float = 3e-3
    ranking_models: int = 1
    ranking_features: tuple[str, ...] | None = None
    seed: int = 42


@dataclass(frozen=True)
class Settings:
    """Everything one run needs to know; built once by the CLI (or a test) and passed down."""

    data: Path = DEFAULT_DATA
    output: Path = DEFAULT_OUTPUT
    db_url: str | None = None
    top_k: int = 12
    candidates: int = 100
    include_seen: bool = False
    cold_start_days: int = 90
    columns: ColumnMap = field(default_factory=ColumnMap)
    date_format: str = "%m/%d/%Y %H:%M"
    delimiter: str = ","
    evaluate: bool = True
    shard_users: int = 100_000  # customers per scoring task (one Prefect task, or one Dask task)
    model: ModelSettings = field(default_factory=ModelSettings)

    def resolved_db_url(self) -> str:
        """The store's database: ``--db-url``, else ``RECSYS_DB_URL``, else SQLite in the output dir."""
        return resolve_db_url(self.output, self.db_url)

    @property
    def parquet_path(self) -> Path:
        """Where the published Parquet file lives."""
        return Path(self.output) / PARQUET_FILENAME

    def with_(self, **changes) -> "Settings":
        """A copy with some fields changed."""
        return replace(self, **changes)


def resolve_db_url(output: Path | str, db_url: str | None = None) -> str:
    """``db_url``, else ``$RECSYS_DB_URL``, else ``sqlite:///<output>/recsys.db``."""
    if db_url:
        return db_url
    env = os.environ.get(DB_URL_ENV)
    if env:
        return env
    return f"sqlite:///{Path(output).resolve() / DB_FILENAME}"
