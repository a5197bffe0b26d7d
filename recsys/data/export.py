"""Read an interactions export, validate it and encode it.

This is the only module that knows the export's column names. It returns the one representation
everything downstream takes, :class:`recsys.data.interactions.Interactions`: one row per
redemption (exact duplicate rows are kept: several units redeemed at once) as customer and item
codes against sorted vocabularies, a time in whole seconds and a 1-5 rating.

Public ratings datasets read as they come with two options: ``date_format="unix"`` for times in
seconds since 1970 (MovieLens, Amazon reviews) and ``rating_scale=(low, high)`` for ratings on
another scale (half stars 0.5-5, 1-10), mapped linearly onto 1-5 and rounded to whole stars.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recsys.data.dates import calendar_problem, date_text, dates_outside, text_seconds
from recsys.data.files import (
    EIGHT_BIT_NAME, UNIT_SEPARATOR, UNREADABLE, check_text_head, csv_source, read_head, text_encoding, unreadable,
)
from recsys.data.hints import OPTIONS, column_options, date_format_hint
from recsys.data.interactions import Interactions, sorted_codes
from recsys.errors import DataError, ExportChanged
from recsys.settings import NO_RATING, UNRATED, ColumnMap

if TYPE_CHECKING:
    import pyarrow as pa

# The line of the file the table's first row comes from: 2 below a header, else 1 (errors name
# lines as an editor shows them; set for the length of one read by ``load_interactions``).
_LINE_OF_FIRST_ROW: ContextVar[int] = ContextVar("recsys_line_of_first_row", default=2)
# What a position in the file is called: a CSV's lines (as an editor shows them), a Parquet
# file's rows (counted from 1, as a data viewer shows them).
_POSITION: ContextVar[str] = ContextVar("recsys_position", default="line")
_BLOCK_BYTES = 1 << 24  # CSV reader block: each block's columns get their own dictionaries


@dataclass(frozen=True)
class LoadReport:
    """What loading found: counts for the run record and plain notes for the operator.

    ``rows``, ``users`` and ``items`` count what the run uses: the rows kept and the customers and
    items they hold (``Interactions``' length, ``n_users`` and ``n_items``); rows set aside for
    their date are counted in ``set_aside`` only.
    """

    path: str
    sha256: str
    rows: int
    duplicate_rows: int
    users: int
    items: int
    first: str
    last: str
    notes: tuple[str, ...] = ()
    # Rows dated far outside the export's span or in the future, left out of the interactions:
    # rows, first_line, first_date, kept_from, kept_to (see ``dates_outside``); None when none were.
    set_aside: dict | None = None


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
    rating_scale: tuple[float, float] | None = None,
    header: bool = True,
    now: datetime | None = None,
) -> tuple[Interactions, LoadReport]:
    """Read a CSV or Parquet export into :class:`Interactions`, or raise ``DataError`` saying why not.

    ``delimiter`` may be ``"tab"`` or several characters (``"::"``); ``header=False`` reads a CSV
    whose first line is data, its columns named by position ("1" is the first, see
    ``HEADERLESS_COLUMNS``); ``date_format`` may be ``"unix"`` (seconds since 1970, UTC);
    ``rating_scale`` (lowest, highest) reads any rating in it and maps it onto 1-5 (None: whole
    numbers 1-5, the company's export). A file replaced or rewritten while it is read (a new night's
    export landing) raises ``ExportChanged``, which is worth reading again. Rows dated far
    outside the export's own span, or after ``now`` (default: the current time) plus a day, are
    set aside and reported (:func:`dates_outside`).
    """
    path = Path(path)
    delimiter = "\t" if delimiter == "tab" else delimiter
    _check_readable(path)
    before = _identity(path)
    try:
        head = read_head(path)
        parquet = _is_parquet(path, head)
        line_of_first_row = _LINE_OF_FIRST_ROW.set(1 if parquet or not header else 2)
        position = _POSITION.set("row" if parquet else "line")
        try:
            loaded = _read_export(
                path, head, columns, date_format, delimiter, rating_scale, header, now or datetime.now(timezone.utc)
            )
        finally:
            _LINE_OF_FIRST_ROW.reset(line_of_first_row)
            _POSITION.reset(position)
    except DataError:
        _check_unchanged(path, before)  # a half-written file reads as bad input: say what happened
        raise
    _check_unchanged(path, before)
    return loaded


# An export read before the run started (``recsys run`` reads it before starting Prefect, so bad
# input is reported in the time the read takes), with what it was read as: the run's load takes
# it instead of reading the file a second time, as long as the file has not changed since.
_already_read: ContextVar[tuple | None] = ContextVar("recsys_export_already_read", default=None)


@contextmanager
def read_once(path: Path | str, export_format: tuple, loaded) -> Iterator[None]:
    """For the block, :func:`read_before` returns ``loaded`` ((interactions, report), what
    :func:`load_interactions` returned for ``path`` read as ``export_format``, the arguments after
    the path) instead of nothing."""
    key = (str(Path(path)), export_format, _identity(Path(path)))
    token = _already_read.set((key, loaded))
    try:
        yield
    finally:
        _already_read.reset(token)


def read_before(path: Path | str, export_format: tuple):
    """What :func:`read_once` holds for these arguments, if the file is still the one read; else None."""
    held = _already_read.get()
    if held is None:
        return None
    key, loaded = held
    return loaded if key == (str(Path(path)), export_format, _identity(Path(path))) else None


def _identity(path: Path) -> tuple[int, ...] | None:
    """What tells one version of a file from another: device, inode, size, modification time."""
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _check_unchanged(path: Path, before: tuple[int, ...] | None) -> None:
    if _identity(path) != before:
        raise ExportChanged(
            f"{path}: the file changed while it was being read (replaced or still being written); "
            "read it again once it is complete"
        )


def _is_parquet(path: Path, head: bytes) -> bool:
    return head.startswith(b"PAR1") or path.suffix.lower() == ".parquet"


def _read_export(
    path: Path, head: bytes, columns: ColumnMap, date_format: str, delimiter: str, rating_scale, header: bool, now: datetime
) -> tuple[Interactions, LoadReport]:
    notes: list[str] = []
    if _is_parquet(path, head):
        raw = _read_parquet(path, columns)
    else:
        check_text_head(path, head)
        raw = _read_csv(path, head, columns, delimiter, header, notes)
    table = _validate(raw, path, columns, date_format, rating_scale, notes)
    del raw
    seconds = np.asarray(table.column("timestamp").cast(_pa().int64()).to_numpy())
    table, seconds, set_aside = _set_aside_dates(table, seconds, path, columns.timestamp, now, notes)
    users = _encoded(table.column("user_id"))
    items = _encoded(table.column("item"))
    duplicates = _duplicates(users, items, table.column("timestamp"), table.column("rating"))
    if duplicates:
        notes.append(f"{duplicates:,} exact duplicate rows kept as extra units of the same redemption")
    # The vocabularies hold the values the kept rows use. Filtering a dictionary-encoded column
    # (the CSV reader's) keeps its whole dictionary, so a customer or item seen only in a row
    # set aside is still in ``users.dictionary``: the report counts the vocabularies, the same
    # customers and items as the Interactions, never the dictionaries.
    user_vocabulary, user = sorted_codes(users)
    item_vocabulary, item = sorted_codes(items)
    del users, items
    report = LoadReport(
        path=str(path),
        sha256=file_sha256(path),
        rows=len(seconds),
        duplicate_rows=duplicates,
        users=len(user_vocabulary),
        items=len(item_vocabulary),
        first=str(_pc().min(table.column("timestamp")).as_py()),
        last=str(_pc().max(table.column("timestamp")).as_py()),
        notes=tuple(notes),
        set_aside=set_aside,
    )
    ratings = np.asarray(table.column("rating").to_numpy(), dtype=np.int8)
    del table
    _release_arrow_memory()
    interactions = Interactions(
        users=user_vocabulary, items=item_vocabulary, user=user, item=item, time=seconds, rating=ratings
    )
    return interactions, report


def _set_aside_dates(table: "pa.Table", seconds: np.ndarray, path: Path, column: str, now: datetime, notes: list[str]):
    """``table`` and ``seconds`` without the rows :func:`dates_outside` sets aside; what was set aside."""
    import pyarrow as pa

    outside, earliest, latest = dates_outside(seconds, now)
    if outside is None:
        return table, seconds, None
    count = int(np.count_nonzero(outside))
    first = int(np.argmax(outside))
    first_date = date_text(int(seconds[first]))
    if count == len(seconds):
        _fail(path, first, column, f"every row is dated after {date_text(latest)} UTC, in the future (first {first_date})", count)
    keep = ~outside
    table = table.filter(pa.array(keep))
    seconds = seconds[keep]
    kept_from, kept_to = date_text(int(seconds.min())), date_text(int(seconds.max()))
    notes.append(
        f"{count:,} row{'s' if count > 1 else ''} dated far outside the export's span or in the future set aside "
        f"(first at {_POSITION.get()} {first + _LINE_OF_FIRST_ROW.get()}: {first_date}); kept {kept_from} to {kept_to}"
    )
    return table, seconds, {
        "rows": count, "first_line": first + _LINE_OF_FIRST_ROW.get(), "first_date": first_date, "kept_from": kept_from, "kept_to": kept_to,
    }


def _release_arrow_memory() -> None:
    """Hand freed Arrow buffers back to the operating system.

    Arrow's allocator keeps them for reuse otherwise, and NumPy and TensorFlow cannot use them:
    about 3 GB once a million-customer export's columns are encoded.
    """
    import gc

    gc.collect()
    _pa().default_memory_pool().release_unused()


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


def _read_csv(path: Path, head: bytes, columns: ColumnMap, delimiter: str, header: bool, notes: list[str]) -> "pa.Table":
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if head.startswith(b"\xef\xbb\xbf"):
        notes.append("UTF-8 byte-order mark skipped")
    encoding = text_encoding(path)  # a file mixing UTF-8 and 8-bit lines is refused here
    if encoding != "utf8":
        notes.append(f"file is not UTF-8: read as {EIGHT_BIT_NAME} (8-bit)")
    if b"\r\n" in head:
        notes.append("Windows line endings accepted")
    first_line = head.split(b"\n", 1)[0].lstrip(b"\xef\xbb\xbf").rstrip(b"\r").decode(encoding, errors="replace")
    fields = _split_line(first_line, delimiter)
    names = fields if header else [str(position) for position in range(1, len(fields) + 1)]
    _check_columns(path, names, columns, delimiter, first_line, header)
    try:
        with csv_source(path, delimiter) as source:
            table = _read_csv_table(source, names, columns, encoding, delimiter, header)
    except pa.ArrowInvalid as exc:
        raise _malformed(path, names, columns, encoding, delimiter, header, exc) from None
    except UNREADABLE as exc:  # a compressed file corrupt past the part read before
        raise unreadable(path, exc) from None
    if table.num_rows == 0:
        raise DataError(f"{path}: has a header but no rows")
    extra = [name for name in table.column_names if name not in columns.required()]
    if extra:
        notes.append("extra columns ignored: " + ", ".join(extra))
    return table.select(list(columns.required()))


def _read_csv_table(
    source, names: list[str], columns: ColumnMap, encoding: str, delimiter: str, header: bool, threads: bool = True
):
    import pyarrow.csv as pacsv

    # The columns are named as the header check read them (surrounding spaces stripped), so the
    # names a hint or an option gives are the names the table has; the header line is skipped.
    return pacsv.read_csv(
        source,
        read_options=pacsv.ReadOptions(
            encoding=encoding, block_size=_BLOCK_BYTES, column_names=names, skip_rows=1 if header else 0,
            use_threads=threads,
        ),
        parse_options=pacsv.ParseOptions(
            delimiter=delimiter if len(delimiter) == 1 else UNIT_SEPARATOR, newlines_in_values=False
        ),
        convert_options=pacsv.ConvertOptions(
            column_types={name: _csv_type(name, columns) for name in names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def _malformed(path: Path, names, columns: ColumnMap, encoding: str, delimiter: str, header: bool, exc) -> DataError:
    """The error for a CSV the reader refused (a row of too many or too few fields, a quote left
    open), naming the line: the parallel reader cannot tell it, so the file is read again on one
    thread, which can (this costs a second read, on the error path only)."""
    import pyarrow as pa

    message = str(exc)
    try:
        with csv_source(path, delimiter) as source:
            _read_csv_table(source, names, columns, encoding, delimiter, header, threads=False)
    except pa.ArrowInvalid as again:
        message = str(again)
    except UNREADABLE:
        pass
    message = _first_line(message).replace(UNIT_SEPARATOR, delimiter)
    found = re.match(r"CSV parse error: Row #(\d+): (.*)$", message)
    if found:
        fields = re.match(r"Expected (\d+) columns, got (\d+)", found.group(2))
        hint = " (a value holding the delimiter must be in quotes)" if fields and int(fields[2]) > int(fields[1]) else ""
        return DataError(f"{path}: line {found.group(1)}: not a well-formed CSV row: {found.group(2)}{hint}")
    return DataError(f"{path}: not a well-formed CSV file: {message}")


def _csv_type(name: str, columns: ColumnMap) -> "pa.DataType":
    """How the reader keeps a column: the four export columns dictionary-encoded.

    Each of them repeats a few values (a million customers, thousands of items, a few ratings, one
    time per purchase across its units), so the reader stores every distinct value once per block
    plus an int32 code per row, instead of tens of millions of separate strings. Validation then
    runs once per distinct value (see ``_per_row``).
    """
    import pyarrow as pa

    if name in columns.required():
        return pa.dictionary(pa.int32(), pa.string())
    return pa.string()


def _split_line(line: str, delimiter: str) -> list[str]:
    """The first line's fields, as the CSV reader will split them."""
    import csv

    if len(delimiter) > 1:
        line, delimiter = line.replace(delimiter, UNIT_SEPARATOR), UNIT_SEPARATOR
    return [name.strip() for name in next(csv.reader([line], delimiter=delimiter), [])]


def _check_columns(path: Path, names: list[str], columns: ColumnMap, delimiter: str, line: str, header: bool) -> None:
    twice = next((name for name in columns.required() if names.count(name) > 1), None)
    if twice is not None:
        raise DataError(f"{path}: line 1: column {twice!r} appears {names.count(twice)} times in the header")
    missing = [name for name in columns.required() if name not in names]
    if not missing:
        return
    if len(names) == 1:
        for other in ("::", ";", "\t", "|"):
            if other != delimiter and other in line:
                shown = "tab" if other == "\t" else repr(other)
                raise DataError(
                    f"{path}: line 1: columns are separated by {shown}, not {delimiter!r} "
                    f"(pass --delimiter {shown!s} to read it)"
                )
    if not header:
        role = dict(zip(columns.required(), ("customer", "time", "item", "rating")))[missing[0]]
        raise DataError(
            f"{path}: line 1 has {len(names)} columns, so no column {missing[0]} for the {role} "
            f"(without a header, the column options are positions from 1 to {len(names)})"
        )
    found = ", ".join(names) if names else "none"
    hint = _missing_hint(names, columns, missing)
    if any(re.fullmatch(_NUMBER, name) for name in names):  # a header's names are seldom plain numbers
        hint = "; the first line looks like data: pass --no-header if the file has no header row"
    raise DataError(f"{path}: line 1: missing column {missing[0]!r} (found: {found}{hint})")


def _missing_hint(names: list[str], columns: ColumnMap, missing: list[str]) -> str:
    """"; pass --user-column userId ..." when the header names a column for every missing one,
    else how to name the first."""
    roles = dict(zip(columns.required(), ("user", "timestamp", "item", "rating")))
    options = column_options([name for name in names if name not in columns.required()], [roles[m] for m in missing])
    if options and options.endswith("--rating-column none"):
        return f"; pass {options} to read it without ratings, or name its rating column with --rating-column NAME"
    if options:
        return f"; pass {options} to read it"
    return f"; pass {OPTIONS[roles[missing[0]]]} NAME if it has another name"


def _read_parquet(path: Path, columns: ColumnMap) -> "pa.Table":
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file: {_first_line(str(exc))}") from None
    missing = [name for name in columns.required() if name not in table.column_names]
    if missing:
        hint = _missing_hint(table.column_names, columns, missing)
        raise DataError(f"{path}: missing column {missing[0]!r} (found: {', '.join(table.column_names)}{hint})")
    if table.num_rows == 0:
        raise DataError(f"{path}: has no rows")
    allowed = {
        columns.user: (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer),
        columns.item: (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer),
        columns.timestamp: (
            pa.types.is_string, pa.types.is_large_string, pa.types.is_timestamp, pa.types.is_date,
            pa.types.is_integer, pa.types.is_floating,  # seconds since 1970, with date_format="unix"
        ),
        columns.rating: (pa.types.is_integer, pa.types.is_floating, pa.types.is_string, pa.types.is_large_string),
    }
    for name, checks in allowed.items():
        if name not in columns.required():
            continue
        column = table.column(name)
        # A dictionary-encoded column (pandas' category) holds the values of its dictionary.
        kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
        if not any(check(kind) for check in checks):
            if name in (columns.user, columns.item):
                raise DataError(f"{path}: column {name!r} has type {column.type}: ids must be text or whole numbers")
            raise DataError(f"{path}: column {name!r} has type {column.type}, which cannot hold this field")
    return table.select(list(columns.required()))


def _validate(raw: "pa.Table", path: Path, columns: ColumnMap, date_format: str, rating_scale, notes: list[str]) -> "pa.Table":
    """Turn the raw columns into the canonical frame; the first bad row stops the load.

    Everything runs in Arrow compute kernels, so tens of millions of rows never become Python
    objects. Dictionary-encoded columns (the CSV reader's) are checked and converted once per
    distinct value, and the customer and item columns stay dictionary-encoded.
    """
    import pyarrow as pa

    pc = _pc()
    users = _clean_text(raw.column(columns.user), path, columns.user, "empty customer id")
    raw_items = raw.column(columns.item)
    items = _clean_text(raw_items, path, columns.item, "empty item name")
    if pa.types.is_dictionary(raw_items.type):
        changed = pa.chunked_array(
            [
                pc.not_equal(before.dictionary.cast(pa.string()), after.dictionary).take(before.indices)
                for before, after in zip(raw_items.chunks, items.chunks)
            ],
            pa.bool_(),
        )
    else:
        changed = pc.not_equal(raw_items.cast(pa.string()), items)
    stripped = _count(changed)
    del changed
    if stripped:
        notes.append(f"surrounding spaces stripped from {stripped:,} item names")
    timestamps = _parse_times(raw.column(columns.timestamp), path, columns.timestamp, date_format)
    if columns.rating == NO_RATING:
        ratings = pa.repeat(pa.scalar(UNRATED, pa.int8()), raw.num_rows)
        notes.append(f"no rating column: every row counts as a rating of {UNRATED}")
    else:
        ratings = _parse_ratings(raw.column(columns.rating), path, columns.rating, rating_scale)
    return pa.table({"user_id": users, "item": items, "timestamp": timestamps, "rating": ratings})


def _encoded(column) -> "pa.DictionaryArray":
    """A (clean) text column as one dictionary array: each distinct value once, an int32 code per row."""
    import pyarrow as pa

    pc = _pc()
    if not pa.types.is_dictionary(column.type):
        return pc.dictionary_encode(column).combine_chunks()
    # The reader's blocks each have their own dictionary: one shared dictionary for all rows.
    encoded = column.unify_dictionaries().combine_chunks()
    if pc.count_distinct(encoded.dictionary).as_py() < len(encoded.dictionary):
        # Trimming made two entries equal ("a" and "a "): one entry each, codes follow.
        merged = pc.dictionary_encode(encoded.dictionary)
        encoded = pa.DictionaryArray.from_arrays(merged.indices.take(encoded.indices), merged.dictionary)
    return encoded


def _duplicates(users: "pa.DictionaryArray", items: "pa.DictionaryArray", timestamps, ratings) -> int:
    """Exact duplicate rows, counted on integer codes.

    Hashing the string columns row by row (``DataFrame.duplicated``) would turn tens of millions
    of Arrow strings into Python objects; here every row becomes one int64 (customer, item, time
    and rating codes in mixed radix), and sorting those finds the repeats.
    """
    times = _pc().dictionary_encode(timestamps).combine_chunks()
    user = users.indices.to_numpy()
    item = items.indices.to_numpy()
    time = times.indices.to_numpy()
    rating = ratings.to_numpy()  # 1 to 5 (validated)
    n_users, n_items, n_times = len(users.dictionary), len(items.dictionary), len(times.dictionary)
    del times
    if n_users * n_items * n_times * 5 > np.iinfo(np.int64).max:
        import pandas as pd

        codes = pd.DataFrame({"user": user, "item": item, "time": time, "rating": rating})
        return int(codes.duplicated().sum())
    key = user.astype(np.int64)
    key *= n_items
    key += item
    key *= n_times
    key += time
    key *= 5
    key += rating
    key -= 1
    key.sort()
    return len(key) - 1 - int(np.count_nonzero(key[1:] != key[:-1]))


def _pc():
    import pyarrow.compute as pc

    return pc


def _pa():
    import pyarrow as pa

    return pa


def _count(mask) -> int:
    return int(_pc().sum(mask).as_py() or 0)


def _first(mask) -> int:
    """Index of the first true value of a boolean (chunked) array."""
    return int(_pc().index(mask, True).as_py())


def _per_value(values, function):
    """``values`` with ``function`` applied to its values: to each dictionary if dictionary-encoded (same codes)."""
    import pyarrow as pa

    if not pa.types.is_dictionary(values.type):
        return function(values)
    return pa.chunked_array(
        [pa.DictionaryArray.from_arrays(chunk.indices, function(chunk.dictionary)) for chunk in values.chunks]
    )


def _per_row(values, function):
    """``function`` of every row's value, computed once per distinct value if ``values`` is dictionary-encoded."""
    import pyarrow as pa

    if not pa.types.is_dictionary(values.type):
        return function(values)
    return pa.chunked_array([function(chunk.dictionary).take(chunk.indices) for chunk in values.chunks])


def _clean_text(values, path: Path, column: str, problem: str):
    import pyarrow as pa

    pc = _pc()
    if values.null_count:
        _fail(path, _first(pc.is_null(values)), column, problem, values.null_count)
    # Integer-typed ids from Parquet come through as "123": same as the CSV's quoted "123".
    cleaned = _per_value(values, lambda v: pc.utf8_trim_whitespace(v.cast(pa.string())))
    empty = _per_row(cleaned, lambda v: pc.equal(pc.utf8_length(v), 0))
    count = _count(empty)
    if count:
        _fail(path, _first(empty), column, problem, count)
    return cleaned


UNIX = "unix"  # the date format of times in seconds since 1970-01-01 00:00 UTC
UNIX_MS = "unix-ms"  # the same in milliseconds (JavaScript's and many event logs' times)
_NUMBER = r"^[+-]?(\d+(\.\d*)?|\.\d+)$"


def _number(values, decimal_comma: bool = False):
    """Numbers as float64: numeric columns cast, text parsed where it is a plain number (else null);
    with ``decimal_comma``, "4,5" reads as 4.5 too."""
    import pyarrow as pa

    pc = _pc()
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        return values.cast(pa.float64())
    text = pc.utf8_trim_whitespace(values.cast(pa.string()))
    if decimal_comma:
        text = pc.replace_substring_regex(text, r"^([+-]?\d+),(\d+)$", r"\1.\2")
    return pc.if_else(pc.match_substring_regex(text, _NUMBER), text, pa.scalar(None, pa.string())).cast(pa.float64())


def _parse_times(values, path: Path, column: str, date_format: str):
    import pyarrow as pa

    pc = _pc()
    if date_format in (UNIX, UNIX_MS):
        return _parse_seconds(values, path, column, 1000 if date_format == UNIX_MS else 1)
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        raise DataError(
            f"{path}: column {column!r} holds numbers, not dates: pass --date-format unix if they count "
            "seconds since 1970"
        )
    if pa.types.is_timestamp(values.type) or pa.types.is_date(values.type):
        if pa.types.is_timestamp(values.type) and values.type.tz is not None:
            values = values.cast(pa.timestamp(values.type.unit))  # UTC wall time, zone dropped
        # Whole seconds (a Parquet export's fractions of a second are dropped): a timestamp in
        # seconds holds any year a date can name (nanoseconds end in 2262; 12/31/9999 is a
        # common "no date" value).
        parsed = values.cast(pa.timestamp("s"), safe=False)
    else:

        def parse(text):
            text = pc.utf8_trim_whitespace(text.cast(pa.string()))
            return text_seconds(text, date_format)

        parsed = _per_row(values, parse)
    bad = pc.is_null(parsed)
    count = _count(bad)
    if count:
        row = _first(bad)
        text = _text(values, row)
        if not text.strip():
            _fail(path, row, column, "empty date", count)
        hint = date_format_hint(values, bad, exclude=date_format)  # 20210130 reads as %Y%m%d
        if not hint and re.match(_NUMBER, text.strip()):
            hint = " (pass --date-format unix if it counts seconds since 1970)"
        problem = calendar_problem(text, date_format)  # 2/30/2022; 1/4/21 under %Y
        if problem:
            _fail(path, row, column, f"date {text!r} {problem} (format {date_format!r}){hint}", count)
        _fail(path, row, column, f"date {text!r} does not match the format {date_format!r}{hint}", count)
    return parsed


def _parse_seconds(values, path: Path, column: str, per_second: int = 1):
    """Times in seconds since 1970 (UTC), or in milliseconds with ``per_second`` 1000: integers,
    or numbers with a fraction (dropped)."""
    import pyarrow as pa

    pc = _pc()

    def seconds(v):
        number = _number(v)
        if per_second != 1:
            number = pc.divide(number, float(per_second))
        # Beyond +-10^11 s (years -1200 to 5100) a number is no time a redemption can have
        # (milliseconds, most likely): refused rather than misread.
        sane = pc.less_equal(pc.abs(number), 1e11)
        return pc.if_else(sane, pc.floor(number), pa.scalar(None, pa.float64())).cast(pa.int64()).cast(pa.timestamp("s"))

    parsed = _per_row(values, seconds)
    bad = pc.is_null(parsed)
    count = _count(bad)
    if count:
        row = _first(bad)
        text = _text(values, row)
        if per_second != 1:
            _fail(path, row, column, f"time {text!r} is not a number of milliseconds since 1970 (--date-format unix-ms)", count)
        try:
            milliseconds = 1e11 < abs(float(text)) <= 1e14  # 2001-09-09 to 5138 in milliseconds
        except ValueError:
            milliseconds = False
        why = "; it looks like milliseconds: pass --date-format unix-ms" if milliseconds else ""
        _fail(path, row, column, f"time {text!r} is not a number of seconds since 1970 (--date-format unix{why})", count)
    return parsed


def _parse_ratings(values, path: Path, column: str, scale: tuple[float, float] | None = None):
    """The ratings as int8 1-5: whole numbers 1-5, or with ``scale`` (low, high) any number in it,
    mapped linearly onto 1-5 and rounded half up (half stars 0.5-5: 3.5 -> 3.67 -> 4)."""
    import pyarrow as pa

    pc = _pc()

    def is_bad(numbers):
        return pc.invert(
            pc.fill_null(
                pc.and_(
                    pc.and_(pc.greater_equal(numbers, 1.0), pc.less_equal(numbers, 5.0)),
                    pc.equal(numbers, pc.floor(numbers)),
                ),
                False,
            )
        )

    def is_outside(numbers):
        low, high = scale
        return pc.invert(pc.fill_null(pc.and_(pc.greater_equal(numbers, low), pc.less_equal(numbers, high)), False))

    def stars(numbers):
        low, high = scale
        return pc.floor(pc.add(pc.multiply(pc.subtract(numbers, low), 4.0 / (high - low)), 1.5))

    # A decimal comma too ("4,5", as spreadsheets in Spanish or German write it): a rating has no thousands.
    numbers = _per_value(values, lambda v: _number(v, decimal_comma=True))
    bad = _per_row(numbers, is_bad if scale is None else is_outside)
    count = _count(bad)
    if count:
        row = _first(bad)
        text = _text(values, row)
        if scale is not None:
            problem = f"rating {text!r} is not a number from {scale[0]:g} to {scale[1]:g} (--rating-scale)"
        else:
            is_number = _number(_pa().array([text]), decimal_comma=True)[0].is_valid
            hint = " (pass --rating-scale LOW-HIGH for another scale, e.g. 0.5-5)" if is_number else ""
            problem = f"rating {text!r} is not a whole number from 1 to 5{hint}"
        _fail(path, row, column, problem, count)
    if scale is not None:
        numbers = _per_value(numbers, stars)
    # Every row holds a whole number from 1 to 5 now (a dictionary entry no row uses may not).
    return _per_row(numbers, lambda v: v.cast(pa.int8(), safe=False))


def _text(values, row: int) -> str:
    value = values[row].as_py()
    return "" if value is None else str(value)


def _fail(path: Path, row: int, column: str, problem: str, count: int = 1) -> None:
    more = f" ({count - 1:,} more {'row' if count == 2 else 'rows'} like it)" if count > 1 else ""
    # Line numbers are those an editor or spreadsheet shows (a header is line 1); a Parquet
    # file's rows count from 1.
    raise DataError(f"{path}: {_POSITION.get()} {row + _LINE_OF_FIRST_ROW.get()}, column {column}: {problem}{more}")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"
