"""Read and validate a catalogue: one row per item, what the business says of it.

Columns (CSV with a header row, or Parquet): ``item`` (required; the name as in the export,
surrounding spaces stripped), ``family`` (the brand or group), ``active`` (``true``/``false``,
default true), ``valid_from`` and ``valid_to`` (``YYYY-MM-DD``, inclusive, optional) and ``boost``
(a multiplier >= 0 of the item's ranking score, default 1). An empty cell takes the default.

Validated like the export: the first problem is one ``DataError`` naming the file, line and
column (line 1 is the header), and nothing is published.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from recsys.errors import DataError

COLUMNS = ("item", "family", "active", "valid_from", "valid_to", "boost")
TRUE = ("true", "yes", "1")
FALSE = ("false", "no", "0")


@dataclass(frozen=True)
class Catalogue:
    """The catalogue's rows, one tuple entry per item (``family`` None: from the name rule)."""

    path: str
    items: tuple[str, ...]
    family: tuple[str | None, ...]
    active: tuple[bool, ...]
    valid_from: tuple[date | None, ...]
    valid_to: tuple[date | None, ...]
    boost: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.items)


def read_catalogue(path) -> Catalogue:
    """Read and validate the catalogue at ``path`` (``DataError`` naming file, line and column)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such catalogue file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a catalogue file")
    header, rows = _parquet_rows(path) if _is_parquet(path) else _csv_rows(path)
    if "item" not in header:
        raise DataError(f"{path}: line 1: missing column 'item' (found: {', '.join(header) or 'no columns'})")
    for name in header:
        if name not in COLUMNS:
            raise DataError(f"{path}: line 1, column {name}: unknown column (use {', '.join(COLUMNS)})")
    out: dict[str, list] = {name: [] for name in COLUMNS}
    lines: dict[str, int] = {}
    for line, row in rows:
        values = dict(zip(header, row))

        def fail(column: str, problem: str):
            raise DataError(f"{path}: line {line}, column {column}: {problem}")

        item = _cell(values.get("item"))
        if not item:
            fail("item", "empty item name")
        if item in lines:
            fail("item", f"duplicate item {item!r} (first on line {lines[item]})")
        lines[item] = line
        active = _cell(values.get("active")).lower()
        if active and active not in TRUE + FALSE:
            fail("active", f"{values.get('active')!r} is not true or false")
        days = {}
        for column in ("valid_from", "valid_to"):
            text = _cell(values.get(column))
            try:
                days[column] = date.fromisoformat(text) if text else None
            except ValueError:
                fail(column, f"{text!r} is not a date YYYY-MM-DD")
            if text and len(text) != 10:
                fail(column, f"{text!r} is not a date YYYY-MM-DD")
        if days["valid_from"] and days["valid_to"] and days["valid_from"] > days["valid_to"]:
            fail("valid_to", f"{days['valid_to']} is before valid_from {days['valid_from']}")
        boost_text = _cell(values.get("boost"))
        try:
            boost = float(boost_text) if boost_text else 1.0
        except ValueError:
            fail("boost", f"{boost_text!r} is not a number")
        if not math.isfinite(boost) or boost < 0:
            fail("boost", f"{boost_text!r} is not a number of at least 0")
        out["item"].append(item)
        out["family"].append(_cell(values.get("family")) or None)
        out["active"].append(active not in FALSE)
        out["valid_from"].append(days["valid_from"])
        out["valid_to"].append(days["valid_to"])
        out["boost"].append(boost)
    return Catalogue(
        path=str(path), items=tuple(out["item"]), family=tuple(out["family"]), active=tuple(out["active"]),
        valid_from=tuple(out["valid_from"]), valid_to=tuple(out["valid_to"]), boost=tuple(out["boost"]),
    )


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isnan(value):
        return ""
    return str(value).strip()


def _is_parquet(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"PAR1" or path.suffix.lower() == ".parquet"


def _csv_rows(path: Path):
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text (save the catalogue as UTF-8 CSV)") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        records = list(csv.reader(text.splitlines()))
    except csv.Error as exc:
        raise DataError(f"{path}: not a well-formed CSV file ({exc})") from None
    if not records:
        raise DataError(f"{path}: the file is empty")
    header = [name.strip().lower() for name in records[0]]
    rows = []
    for line, record in enumerate(records[1:], start=2):
        if not any(cell.strip() for cell in record):
            continue  # a blank line
        if len(record) != len(header):
            raise DataError(f"{path}: line {line}: {len(record)} fields, the header has {len(header)}")
        rows.append((line, record))
    return header, rows


def _parquet_rows(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    from datetime import datetime

    header = [name.strip().lower() for name in table.column_names]
    columns = []
    for column in table.columns:
        values = column.to_pylist()
        values = [value.date() if isinstance(value, datetime) else value for value in values]
        columns.append([value.isoformat() if isinstance(value, date) else value for value in values])
    # A Parquet file has no lines: rows are counted as a CSV of it would number them.
    return header, [(row + 2, list(values)) for row, values in enumerate(zip(*columns))]
