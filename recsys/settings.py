"""The options of a run, defined once: the command line, the flow's parameters and the deployment
all take ``RunOptions``, field for field, under the same names.

Standard library only, so the lookup path can read the defaults without importing anything heavy.
No ``from __future__ import annotations`` here: the command line and Prefect read the field types.
"""

import enum
import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from recsys.errors import OptionError

DEFAULT_DATA = Path("data/interactions_sample.csv")
DEFAULT_OUTPUT = Path("output")
DB_FILENAME = "recsys.db"
PARQUET_FILENAME = "recommendations.parquet"
DB_URL_ENV = "RECSYS_DB_URL"


class TaskRunner(str, enum.Enum):
    """Where the scoring shards run."""

    threads = "threads"
    dask = "dask"


def option(default, help: str, *flags: str, low: int | None = None, high: int | None = None, env: str | None = None):
    """A field of :class:`RunOptions` with what the command line shows for it.

    ``flags`` are the option's names (default: ``--field-name``); ``low``/``high`` bound an integer;
    ``env`` names an environment variable the command line reads it from.
    """
    metadata = {"help": help, "flags": flags, "low": low, "high": high, "env": env}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class ColumnMap:
    """Names of the export's columns; options override them for other exports."""

    user: str = "ID_CLIENTE"
    timestamp: str = "FECHA_INTERACCION"
    item: str = "NOMBRE_CORTO_DE_EXPERIENCIA"
    rating: str = "CALIFICACION"

    def required(self) -> tuple[str, ...]:
        """The column names read, in the order errors report them (customer, time, item, rating;
        no rating with ``rating=NO_RATING``)."""
        names = (self.user, self.timestamp, self.item, self.rating)
        return names[:3] if self.rating == NO_RATING else names


# ``--rating-column none``: an export of interactions without ratings (clicks, purchases); every
# row counts as a rating of ``UNRATED``, so the ratings say nothing and nothing else changes.
NO_RATING = "none"
UNRATED = 5


# A file without a header row: its columns are named by position, in the order of MovieLens's
# ratings files and most public ratings datasets (customer, item, rating, time).
HEADERLESS_COLUMNS = ColumnMap(user="1", timestamp="4", item="2", rating="3")


def rating_range(scale: str | None) -> tuple[float, float] | None:
    """``--rating-scale`` ("0.5-5") as (lowest, highest); None for the export's whole numbers 1-5."""
    if scale is None:
        return None
    low, dash, high = str(scale).strip().partition("-")
    try:
        bounds = (float(low), float(high)) if dash else None
    except ValueError:
        bounds = None
    if bounds is None or not all(map(math.isfinite, bounds)) or bounds[0] >= bounds[1]:
        raise OptionError(f"--rating-scale must be LOW-HIGH with LOW below HIGH (e.g. 0.5-5), not {scale!r}")
    return bounds


def flag_of(name: str) -> str:
    """The command-line flag of the ``RunOptions`` field ``name`` (``top_k`` -> ``--top-k``)."""
    return "--" + name.replace("_", "-")


def field_problem(name: str, value) -> str | None:
    """What is wrong with ``value`` for the ``RunOptions`` field ``name`` on its own, as the end of
    a sentence that starts with where the value came from (``must be at least 1, not 0``); None
    when nothing is. The command line says ``--top-k must be ...``, the config file
    ``FILE: [run] top-k: must be ...``. Checks across fields (``--dask-address`` needs
    ``--task-runner dask``) are not made here."""
    spec = next(spec for spec in fields(RunOptions) if spec.name == name)
    if value is None:
        return None
    if name == "run_date":
        import datetime

        try:
            datetime.date.fromisoformat(str(value))
        except ValueError:
            return f"must be a day as YYYY-MM-DD, not {value!r}"
    if name == "task_runner":
        try:
            TaskRunner(value)
        except ValueError:
            return f"must be 'threads' or 'dask', not {value!r}"
    low, high = spec.metadata.get("low"), spec.metadata.get("high")
    if low is not None and value < low:
        return f"must be at least {low}, not {value}"
    if high is not None and value > high:
        return f"must be at most {high}, not {value}"
    if name == "rating_scale":
        try:
            rating_range(value)
        except OptionError as exc:
            return str(exc).removeprefix(flag_of(name) + " ")
    if name == "delimiter" and (not value or any(mark in value for mark in '\r\n"')):
        return f"must be one or more characters other than line breaks and '\"', not {value!r}"
    return None


@dataclass(frozen=True)
class RunOptions:
    """Everything one nightly run can be told: each field is an option of ``recsys run`` (same name,
    dashes for underscores) and a typed parameter of the ``recsys-nightly`` flow and its deployment."""

    data: Path = option(DEFAULT_DATA, "Interactions export (CSV, plain, gzip/bzip2/xz or zipped alone, or Parquet).", "--data", "-d")
    output: Path = option(DEFAULT_OUTPUT, "Folder of the published store.", "--output", "-o")
    catalogue: Path | None = option(
        None,
        "Catalogue of the items (CSV separated by commas, semicolons or tabs, UTF-8 or 8-bit; or Parquet: "
        "item, family, active, valid_from, valid_to, boost); a name is matched to the export's as written, else "
        "ignoring letter case and Unicode form (each such match noted); items it does not list are active, their "
        "family from their name.",
    )
    config: Path | None = option(
        None,
        "Config file (TOML): [run] options of this command (the command line overrides them) and "
        "[rules] (blocklist, max_per_family, exclude_seen_families, [[rules.pin]]), read at every run.",
    )
    run_date: str | None = option(
        None,
        "Day (YYYY-MM-DD) the catalogue's valid_from/valid_to are checked against [default: today]; "
        "in the config file a TOML date (run-date = 2022-12-31) or a string.",
    )
    db_url: str | None = option(
        None, "SQLAlchemy URL of the SQL store [default: SQLite in --output].", env=DB_URL_ENV
    )
    top_k: int = option(12, "Items per customer (the evaluation's NDCG@k, recall@k and hit rate@k are at this k).", low=1, high=100)
    candidates: int = option(20, "Candidates per customer from each source (two-tower, EASE, RP3beta, next-item).", low=1)
    include_seen: bool = option(False, "Allow items the customer already had.")
    cold_start_days: int = option(90, "Window (days) of the popular list for new customers.", low=1)
    user_column: str = option(ColumnMap.user, "Column holding the customer id.")
    time_column: str = option(ColumnMap.timestamp, "Column holding the interaction time.")
    item_column: str = option(ColumnMap.item, "Column holding the item name.")
    rating_column: str = option(
        ColumnMap.rating, "Column holding the 1-5 rating, or 'none' for an export without ratings (clicks, purchases)."
    )
    rating_scale: str | None = option(
        None,
        "Scale of another export's ratings, LOW-HIGH (e.g. 0.5-5, 1-10): any number in it is read and "
        "mapped onto 1-5 [default: whole numbers 1-5].",
    )
    date_format: str = option(
        "%m/%d/%Y %H:%M",
        "strftime format of the time column, or 'unix' for seconds since 1970 (UTC), 'unix-ms' for milliseconds.",
    )
    delimiter: str = option(",", "CSV field separator ('tab' for a tab; several characters, e.g. '::', work too).")
    header: bool = option(
        True,
        "The CSV's first line names its columns. With --no-header it holds data, and the columns are "
        "customer, item, rating, time in that order (MovieLens, Amazon ratings), unless the column "
        "options give their positions (1 is the first).",
        "--header/--no-header",
    )
    epochs: int | None = option(None, "Retrieval epochs [default: derived from the data size].", low=1)
    ranking_epochs: int | None = option(None, "Ranking epochs [default: derived from the data size].", low=1)
    seed: int = option(42, "Random seed: same data and options give the same lists.")
    evaluate: bool = option(
        True,
        "Score the model and the baselines on held-out items first; publish the best baseline "
        "if the model is significantly below it.",
        "--evaluate/--no-evaluate",
    )
    shard_size: int = option(100_000, "Customers per scoring task.", low=1)
    task_runner: TaskRunner = option(
        TaskRunner.threads,
        "Where the scoring tasks run: 'threads' (this process) or 'dask' (a Dask cluster: a local "
        "one, or --dask-address).",
    )
    dask_address: str | None = option(
        None, "Scheduler of an existing Dask cluster, e.g. tcp://10.0.0.5:8786 (with --task-runner dask)."
    )

    def __post_init__(self):
        # Values arrive as JSON from a deployment and as plain strings from tests: one type each.
        for name in ("data", "output", "catalogue", "config"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        for spec in fields(self):
            # A scale that cannot be read, a bad delimiter... are refused before anything starts.
            problem = field_problem(spec.name, getattr(self, spec.name))
            if problem:
                raise OptionError(f"{flag_of(spec.name)} {problem}")
        object.__setattr__(self, "task_runner", TaskRunner(self.task_runner))
        if self.dask_address and self.task_runner is not TaskRunner.dask:
            raise OptionError("--dask-address needs --task-runner dask")

    @property
    def columns(self) -> ColumnMap:
        """The export's column names; for a file without a header, the positions ("1" is the first),
        customer, item, rating, time in that order unless a column option says otherwise."""
        named = ColumnMap(self.user_column, self.time_column, self.item_column, self.rating_column)
        if self.header:
            return named
        default, positional = ColumnMap(), HEADERLESS_COLUMNS
        return ColumnMap(
            *(
                getattr(positional, name) if getattr(named, name) == getattr(default, name) else getattr(named, name)
                for name in ("user", "timestamp", "item", "rating")
            )
        )

    @property
    def export_format(self) -> tuple:
        """How to read the export: the arguments after ``data`` of ``load_interactions``."""
        return (self.columns, self.date_format, self.delimiter, rating_range(self.rating_scale), self.header)

    def resolved_db_url(self) -> str:
        """The store's database: ``--db-url``, else ``RECSYS_DB_URL``, else SQLite in the output dir."""
        return resolve_db_url(self.output, self.db_url)

    def day(self):
        """The day of the run: ``--run-date``, else today (local time)."""
        import datetime

        return datetime.date.fromisoformat(self.run_date) if self.run_date else datetime.date.today()

    @property
    def parquet_path(self) -> Path:
        """Where the published Parquet file lives."""
        return Path(self.output) / PARQUET_FILENAME

    def with_(self, **changes) -> "RunOptions":
        """A copy with some fields changed."""
        return replace(self, **changes)

    def as_parameters(self) -> dict:
        """The options as JSON-ready values (what a deployment stores and the Prefect UI shows)."""
        values = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            values[spec.name] = str(value) if isinstance(value, Path) else value.value if isinstance(value, enum.Enum) else value
        return values


@dataclass(frozen=True)
class RankerConfig:
    """One shape of ranking model: the features it reads (None: every feature), the units of its
    hidden layer (0: a linear ranker) and the L2 penalty on its weights."""

    features: tuple[str, ...] | None
    hidden: int = 0
    l2: float = 1.0


# The rankers the ranking stage chooses from (on held-out training lists), the most preferred
# first: a strongly regularised linear ranker over four features (best on small exports), a
# lighter linear one over every source's rank and z-score (the same within noise on the sample;
# next-item's pair added in quality_attempts step 10, +2% on a 20,000-customer export), and a small
# network over every feature (best on a 200,000-customer export). Their ensembles (the mean logit
# of two or three) compete too (``recsys.models.ranking.train_ranking``).
RANKERS = (
    RankerConfig(("rp3beta_logrank", "popularity", "recent_popularity", "family_match"), hidden=0, l2=1.0),
    RankerConfig(
        (
            "ease_logrank", "rp3beta_logrank", "two_tower_logrank", "next_item_logrank",
            "ease_z", "rp3beta_z", "two_tower_z", "next_item_z",
            "popularity", "recent_popularity", "family_match",
        ),
        hidden=0,
        l2=0.1,
    ),
    RankerConfig(None, hidden=32, l2=1e-4),
)


@dataclass(frozen=True)
class ModelSettings:
    """Hyperparameters of the two stages that are not run options (tests and benchmarks vary them)."""

    embedding_dim: int = 32
    batch_size: int | None = None  # None: derived from the data size
    learning_rate: float = 0.02
    history_length: int = 20
    popularity_correction: bool = True
    user_id_min_items: int = 5
    # The baselines that propose candidates besides the two-tower, and whose opinions the ranker reads.
    sources: tuple[str, ...] = ("ease", "rp3beta", "next_item")
    rankers: tuple[RankerConfig, ...] = RANKERS
    ranking_learning_rate: float = 0.01
    ranking_steps: int = 1500  # gradient steps of the ranker (twice as many, in larger batches, past 5,000 lists)
    ranking_models: int = 1


def resolve_db_url(output, db_url: str | None = None) -> str:
    """``db_url``, else ``$RECSYS_DB_URL``, else ``sqlite:///<output>/recsys.db``."""
    if db_url:
        return db_url
    env = os.environ.get(DB_URL_ENV)
    if env:
        return env
    return f"sqlite:///{Path(output).resolve() / DB_FILENAME}"
