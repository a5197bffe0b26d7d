"""Read an interactions export, validate it and clean it.

This is the only module that knows the export's column names. Everything downstream receives the
canonical frame: ``user_id`` (str), ``item`` (str), ``timestamp`` (datetime64), ``rating`` (int8),
one row per redemption (exact duplicate rows are kept: several units redeemed at once).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.errors import DataError
from recsys.settings import ColumnMap

CANONICAL = ("user_id", "item", "timestamp", "rating")
_SNIFF_BYTES = 64 * 1024


@dataclass(frozen=True)
class LoadReport:
    """What loading found: counts for the run record and plain notes for the operator."""

    path: str
    sha256: str
    rows: int
    duplicate_rows: int
    users: int
    items: int
    first: str
    last: str
    notes: tuple[str, ...] = ()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, streamed so large exports do not sit in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_interactions(
    path: Path | str,
    columns: ColumnMap = ColumnMap(),
    date_format: str = "%m/%d/%Y %H:%M",
    delimiter: str = ",",
) -> tuple[pd.DataFrame, LoadReport]:
    """Read a CSV or Parquet export into the canonical frame, or raise ``DataError`` saying why not."""
    path = Path(path)
    _check_readable(path)
    head = _read_head(path)
    notes: list[str] = []
    if head.startswith(b"PAR1") or path.suffix.lower() == ".parquet":
        raw = _read_parquet(path, columns)
    else:
        if b"\x00" in head:
            raise DataError(f"{path}: not a CSV file (it holds binary data)")
        raw = _read_csv(path, head, columns, delimiter, notes)
    frame = _validate(raw, path, columns, date_format, notes)
    duplicates = int(frame.duplicated().sum())
    if duplicates:
        notes.append(f"{duplicates:,} exact duplicate rows kept as extra units of the same redemption")
    report = LoadReport(
        path=str(path),
        sha256=file_sha256(path),
        rows=len(frame),
        duplicate_rows=duplicates,
        users=int(frame["user_id"].nunique()),
        items=int(frame["item"].nunique()),
        first=str(frame["timestamp"].min()),
        last=str(frame["timestamp"].max()),
        notes=tuple(notes),
    )
    return frame, report


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not an export file")
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise DataError(f"{path}: permission denied (cannot read the file)") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from None
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(_SNIFF_BYTES)


def _read_csv(path: Path, head: bytes, columns: ColumnMap, delimiter: str, notes: list[str]) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    encoding = "utf8"
    if head.startswith(b"\xef\xbb\xbf"):
        notes.append("UTF-8 byte-order mark skipped")
    if not _is_utf8(path):
        encoding = "latin-1"
        notes.append("file is not UTF-8: read as Latin-1")
    if b"\r\n" in head:
        notes.append("Windows line endings accepted")
    header_line = head.split(b"\n", 1)[0].lstrip(b"\xef\xbb\xbf").rstrip(b"\r")
    header = _split_header(header_line.decode(encoding, errors="replace"), delimiter)
    _check_columns(path, header, columns, delimiter, header_line.decode(encoding, errors="replace"))
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(encoding=encoding, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise DataError(f"{path}: not a well-formed CSV file: {_first_line(str(exc))}") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: has a header but no rows")
    extra = [name for name in table.column_names if name not in columns.required()]
    if extra:
        notes.append("extra columns ignored: " + ", ".join(extra))
    return pd.DataFrame(
        {name: np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=object) for name in columns.required()}
    )


def _is_utf8(path: Path) -> bool:
    """Whether the whole file decodes as UTF-8 (streamed; a Latin-1 export fails somewhere)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as handle:
        try:
            for block in iter(lambda: handle.read(1 << 22), b""):
                decoder.decode(block)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
    return True


def _split_header(line: str, delimiter: str) -> list[str]:
    import csv

    return [name.strip() for name in next(csv.reader([line], delimiter=delimiter))]


def _check_columns(path: Path, header: list[str], columns: ColumnMap, delimiter: str, raw_header: str) -> None:
    missing = [name for name in columns.required() if name not in header]
    if not missing:
        return
    if len(header) == 1:
        for other in (";", "\t", "|"):
            if other != delimiter and other in raw_header:
                shown = "tab" if other == "\t" else repr(other)
                raise DataError(
                    f"{path}: line 1: columns are separated by {shown}, not {delimiter!r} "
                    f"(pass --delimiter {shown!s} to read it)"
                )
    found = ", ".join(header) if header else "none"
    raise DataError(f"{path}: line 1: missing column {missing[0]!r} (found: {found})")


def _read_parquet(path: Path, columns: ColumnMap) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file: {_first_line(str(exc))}") from None
    missing = [name for name in columns.required() if name not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing column {missing[0]!r} (found: {', '.join(table.column_names)})")
    if table.num_rows == 0:
        raise DataError(f"{path}: has no rows")
    allowed = {
        columns.user: (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer),
        columns.item: (pa.types.is_string, pa.types.is_large_string),
        columns.timestamp: (pa.types.is_string, pa.types.is_large_string, pa.types.is_timestamp, pa.types.is_date),
        columns.rating: (pa.types.is_integer, pa.types.is_floating, pa.types.is_string, pa.types.is_large_string),
    }
    out = {}
    for name, checks in allowed.items():
        column = table.column(name)
        if not any(check(column.type) for check in checks):
            raise DataError(f"{path}: column {name!r} has type {column.type}, which cannot hold this field")
        if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
            out[name] = column.to_pandas()
        else:
            values = column.to_numpy(zero_copy_only=False)
            out[name] = np.asarray(values, dtype=object)
    return pd.DataFrame(out)


def _validate(raw: pd.DataFrame, path: Path, columns: ColumnMap, date_format: str, notes: list[str]) -> pd.DataFrame:
    """Turn raw string columns into the canonical frame; the first bad row stops the load."""
    users = _clean_text(raw[columns.user], path, columns.user, "empty customer id")
    items = _clean_text(raw[columns.item], path, columns.item, "empty item name")
    stripped = int((pd.Series(raw[columns.item], dtype=object).astype(str) != items).sum())
    if stripped:
        notes.append(f"surrounding spaces stripped from {stripped:,} item names")
    timestamps = _parse_times(raw[columns.timestamp], path, columns.timestamp, date_format)
    ratings = _parse_ratings(raw[columns.rating], path, columns.rating)
    return pd.DataFrame({"user_id": users, "item": items, "timestamp": timestamps, "rating": ratings})


def _clean_text(values: pd.Series, path: Path, column: str, problem: str) -> np.ndarray:
    text = pd.Series(values, dtype=object)
    if text.isna().any():
        _fail(path, int(np.flatnonzero(text.isna().to_numpy())[0]), column, problem)
    text = text.astype(str)
    # Integer-typed ids from Parquet come through as "123": same as the CSV's quoted "123".
    cleaned = text.str.strip()
    empty = (cleaned == "").to_numpy()
    if empty.any():
        _fail(path, int(np.flatnonzero(empty)[0]), column, problem, int(empty.sum()))
    return np.asarray(cleaned, dtype=object)


def _parse_times(values: pd.Series, path: Path, column: str, date_format: str) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = pd.to_datetime(values).dt.tz_localize(None) if getattr(values.dt, "tz", None) else pd.to_datetime(values)
    else:
        text = pd.Series(values, dtype=object).astype(str).str.strip()
        parsed = pd.to_datetime(text, format=date_format, errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        _fail(path, row, column, f"date {str(values.iloc[row])!r} does not match the format {date_format!r}", int(bad.sum()))
    return parsed.to_numpy(dtype="datetime64[ns]")


def _parse_ratings(values: pd.Series, path: Path, column: str) -> np.ndarray:
    text = pd.Series(values, dtype=object)
    numbers = pd.to_numeric(text.astype(str).str.strip(), errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(numbers) | (numbers != np.round(numbers)) | (numbers < 1) | (numbers > 5)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        _fail(path, row, column, f"rating {str(text.iloc[row])!r} is not a whole number from 1 to 5", int(bad.sum()))
    return numbers.astype(np.int8)


def _fail(path: Path, row: int, column: str, problem: str, count: int = 1) -> None:
    more = f" ({count - 1:,} more rows like it)" if count > 1 else ""
    # Line numbers count the header as line 1, as an editor or spreadsheet shows them.
    raise DataError(f"{path}: line {row + 2}, column {column}: {problem}{more}")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"
