"""Which rows of an export are dated where no redemption can be: in the future, or far outside
the export's own span (a 1900 or 9999 placeholder, a mistyped year).

Works on whole seconds and whole days, so it knows nothing of the export's columns; and reads
text times in whole seconds (``text_seconds``), for the export and for its hints alike.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import numpy as np

DAY = 86_400
# A row is far outside the export's span when it lies farther from the export's body (its rows
# between the 1st and 99th percentile of time) than the body's own length, and at least a year.
BODY_QUANTILE = 0.01
MIN_TOLERANCE_DAYS = 365
# Exports carry local wall time: "the future" starts a day after the run's own UTC time.
FUTURE_SLACK_DAYS = 1


def dates_outside(seconds: np.ndarray, now: datetime) -> tuple[np.ndarray | None, int, int]:
    """Which rows to set aside for their date, and the first and last second kept.

    A row is set aside when it is dated after ``now`` plus a day (no redemption happens in the
    future), or farther before the export's 1st percentile of time, or after its 99th, than the
    distance between those two percentiles (at least a year): a 1900 default date, a mistyped
    year. A history that is merely long keeps its old rows, since they move the percentiles too.
    Works on whole days (one ``bincount``), so 41M rows cost two small passes. Returns (mask of
    rows to set aside or ``None``, first kept second, last kept second).
    """
    days = seconds // DAY
    low = int(days.min())
    counts = np.bincount((days - low).astype(np.int64))
    cumulative = np.cumsum(counts)
    n = len(seconds)
    first_body = low + int(np.searchsorted(cumulative, int(BODY_QUANTILE * (n - 1)), side="right"))
    last_body = low + int(np.searchsorted(cumulative, int(np.ceil((1 - BODY_QUANTILE) * (n - 1))), side="right"))
    tolerance = max(MIN_TOLERANCE_DAYS, last_body - first_body)
    earliest = (first_body - tolerance) * DAY
    aware = now if now.tzinfo is not None else now.replace(tzinfo=timezone.utc)
    latest = min((last_body + tolerance + 1) * DAY - 1, int(aware.timestamp()) + FUTURE_SLACK_DAYS * DAY)
    outside = (seconds < earliest) | (seconds > latest)
    return (outside if outside.any() else None), earliest, latest


def date_text(second: int) -> str:
    """A time in whole seconds as text (``1900-01-01 00:00:00``), for any year a date can hold."""
    return (datetime(1970, 1, 1) + timedelta(seconds=second)).isoformat(sep=" ")


# A fraction of a second right after a time's seconds ("13:30:00.123", "13:30:00,5"), and the
# format directives that name one ("%S.%f"): dropped, as a Parquet timestamp's fraction is.
_FRACTION = r"(\d:\d\d)[.,]\d{1,9}([^\d.,]|$)"  # RE2: no look-ahead, so the next character is kept
_FRACTION_DIRECTIVE = re.compile(r"%S[.,]%f")


def text_seconds(text, date_format: str):
    """Arrow text times parsed by ``date_format`` in whole seconds (null where it does not match,
    or where the text names no day of the calendar).

    Arrow's parser knows no fractions of a second: a fraction after the seconds is dropped first,
    whether the format names it (``%S.%f``) or not (``%S``), so ``2021-01-30 13:30:00.123`` reads
    as 13:30:00 under either. It also rolls a day past the end of its month into the next month
    (2/30/2022 would read as March 2) and takes two digits for ``%Y`` (1/4/21 as the year 21):
    both are refused here instead (see ``calendar_checked``).
    """
    text, date_format = _without_fraction(text, date_format)
    return calendar_checked(text, _strptime(text, date_format), date_format)


def _without_fraction(text, date_format: str):
    """The text times with any fraction after their seconds dropped, and the format without ``%f``."""
    import pyarrow.compute as pc

    if "%S" not in date_format:
        return text, date_format
    return pc.replace_substring_regex(text, _FRACTION, r"\1\2"), _FRACTION_DIRECTIVE.sub("%S", date_format)


def _strptime(text, date_format: str):
    import pyarrow.compute as pc

    return pc.strptime(text, format=date_format, unit="s", error_is_null=True)


# Leading zeros of every number, then every run of other characters: "01/30/2021 13:30" and
# "1/30/2021 13:30" both become "1,30,2021,13,30".
_LEADING_ZEROS = r"(^|\D)0+(\d)"
_NOT_DIGITS = r"\D+"


def _numbers(text):
    import pyarrow.compute as pc

    return pc.replace_substring_regex(pc.replace_substring_regex(text, _LEADING_ZEROS, r"\1\2"), _NOT_DIGITS, ",")


def calendar_checked(text, parsed, date_format: str):
    """``parsed`` (the text times as Arrow read them by ``date_format``), null where the text
    named no such day or no such year.

    - A day past its month's end rolls over into the next month's first three days, so only
      those rows are checked: written back with the format, their numbers must be the text's
      (2/30/2022 -> 03/02/2022: refused). Formats with a time-zone offset are not checked: their
      times were moved to UTC, so their numbers differ by design.
    - ``%Y`` with a year below 100 is a two-digit year read as a four-digit one (``%y`` reads it).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    wrong = np.zeros(len(parsed), dtype=bool)
    if "%Y" in date_format:
        wrong |= pc.fill_null(pc.less(pc.year(parsed), 100), False).to_numpy(zero_copy_only=False)
    if "%z" not in date_format and "%Z" not in date_format:
        rows = np.flatnonzero(pc.fill_null(pc.less_equal(pc.day(parsed), 3), False).to_numpy(zero_copy_only=False))
        if len(rows):
            written = pc.strftime(pc.take(parsed, rows), format=date_format)
            wrong[rows] |= pc.not_equal(_numbers(pc.take(text, rows)), _numbers(written)).to_numpy(zero_copy_only=False)
    if not wrong.any():
        return parsed
    return pc.if_else(pa.array(wrong), pa.scalar(None, parsed.type), parsed)


def calendar_problem(text: str, date_format: str) -> str | None:
    """Why ``calendar_checked`` refused one text time that the format itself reads, or ``None``
    when the format does not read it: "names no such day" or "has a two-digit year"."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parsed = _strptime(*_without_fraction(pa.array([text.strip()]), date_format))
    if parsed.null_count:
        return None
    if "%Y" in date_format and pc.year(parsed)[0].as_py() < 100:
        return "has a two-digit year, which %Y does not read"
    return "names no such day of the calendar"
