"""Read and validate a catalogue: one row per item, what the business says of it.

Columns (CSV with a header row, or Parquet): ``item`` (required; the name as in the export,
surrounding spaces stripped), ``family`` (the brand or group), ``active`` (``true``/``false``,
default true), ``valid_from`` and ``valid_to`` (``YYYY-MM-DD``, inclusive, optional) and ``boost``
(a multiplier >= 0 of the item's ranking score, default 1). An empty cell takes the default.

Read like the export: UTF-8 (a byte-order mark skipped) or 8-bit Windows-1252
(``recsys.data.files.text_encoding``), compressed or not. A header separated by semicolons or tabs
instead of commas (Excel in a Spanish, French or German locale saves "CSV" with semicolons) is
read with that separator: the header's names are the catalogue's own, so that is no guess.

Validated like the export: the first problem is one ``DataError`` naming the file, line and
column (line 1 is the header), and nothing is published. Two lines for the same item, also when
their names differ only by case or Unicode form (``recsys.data.names.fold``: the rules would match
both to the same export item), are refused.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from recsys.data.files import (
    EIGHT_BIT, EIGHT_BIT_NAME, UNREADABLE, check_text_head, open_bytes, read_head, text_encoding, unreadable,
)
from recsys.data.names import fold, shown
from recsys.errors import DataError

COLUMNS = ("item", "family", "active", "valid_from", "valid_to", "boost")
TRUE = ("true", "yes", "1")
FALSE = ("false", "no", "0")
DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # date.fromisoformat also reads 20220105 and 2022-W01-1
# Separators a header may use instead of the comma (how the run notes it).
OTHER_SEPARATORS = {";": "semicolons", "\t": "tabs"}


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
    notes: tuple[str, ...] = ()  # how the file was read, when not as plain UTF-8 CSV

    def __len__(self) -> int:
        return len(self.items)


def read_catalogue(path) -> Catalogue:
    """Read and validate the catalogue at ``path`` (``DataError`` naming file, line and column)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such catalogue file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a catalogue file")
    notes: list[str] = []
    header, rows = _parquet_rows(path) if _is_parquet(path) else _csv_rows(path, notes)
    for name in header:
        if name and header.count(name) > 1:  # an empty name is an unknown column
            raise DataError(f"{path}: line 1, column {name}: named {header.count(name)} times in the header")
    if "item" not in header:
        raise DataError(f"{path}: line 1: missing column 'item' (found: {', '.join(header) or 'no columns'})")
    for name in header:
        if name not in COLUMNS:
            raise DataError(f"{path}: line 1, column {name}: unknown column (use {', '.join(COLUMNS)})")
    out: dict[str, list] = {name: [] for name in COLUMNS}
    lines: dict[str, tuple[int, str]] = {}  # by folded name: the first line and name
    for line, row in rows:
        values = dict(zip(header, row))

        def fail(column: str, problem: str):
            raise DataError(f"{path}: line {line}, column {column}: {problem}")

        item = _cell(values.get("item"))
        if not item:
            fail("item", "empty item name")
        first = lines.get(fold(item))
        if first is not None and first[1] == item:
            fail("item", f"duplicate item {shown(item)} (first on line {first[0]})")
        if first is not None:
            fail(
                "item",
                f"duplicate item {shown(item)}: the same item as {shown(first[1])} on line {first[0]}, but for "
                "letter case or Unicode form (both would apply to the same export item: keep one line)",
            )
        lines[fold(item)] = (line, item)
        active = _cell(values.get("active")).lower()
        if active and active not in TRUE + FALSE:
            fail("active", f"{values.get('active')!r} is not true or false")
        days = {}
        for column in ("valid_from", "valid_to"):
            text = _cell(values.get(column))
            try:
                # fromisoformat alone also reads 20220105, 2022-W01-1 and 2022-005.
                days[column] = date.fromisoformat(text) if text and DATE.fullmatch(text) else None
            except ValueError:
                days[column] = None
            if text and days[column] is None:
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
        notes=tuple(notes),
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


def _csv_rows(path: Path, notes: list[str]):
    """The header (names stripped, lowercased) and the (line, fields) of the rows of a CSV catalogue,
    read as the export is (UTF-8 or 8-bit, compressed or not), its separator told by its header."""
    try:
        check_text_head(path, read_head(path), "the catalogue")
        encoding = text_encoding(path)  # a file mixing UTF-8 and 8-bit lines is refused here
        with open_bytes(path) as handle:
            text = handle.read().decode(encoding)
    except UNREADABLE as exc:
        raise unreadable(path, exc) from None
    if encoding == EIGHT_BIT:
        notes.append(f"catalogue {path} is not UTF-8: read as {EIGHT_BIT_NAME} (8-bit)")
    text = text.removeprefix("\ufeff")
    lines = text.splitlines()
    delimiter = ","
    if lines and len(next(csv.reader(lines[:1]), [])) == 1:
        for other, called in OTHER_SEPARATORS.items():
            names = [name.strip().lower() for name in lines[0].split(other)]
            if len(names) > 1 and "item" in names:
                delimiter = other
                notes.append(f"catalogue {path}: columns separated by {called}, not commas: read so")
                break
    try:
        records = list(csv.reader(lines, delimiter=delimiter))
    except csv.Error as exc:
        raise DataError(f"{path}: not a well-formed CSV file ({exc})") from None
    if not records:
        raise DataError(f"{path}: the file is empty")
    header = [name.strip().lower() for name in records[0]]
    if "item" not in header and len(header) == 1:
        for other, called in OTHER_SEPARATORS.items():
            if other in records[0][0]:
                raise DataError(
                    f"{path}: line 1: missing column 'item' (found: {records[0][0].strip()}; the columns look "
                    f"separated by {called}, and none is named item)"
                )
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
