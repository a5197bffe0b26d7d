"""What to type when an export of another shape is refused: the column options its header
suggests, the date format its times are written in.

Hints only: a refused export is never read by a guess (a day-first date read month-first, or the
wrong id column, would publish wrong lists silently), the error just says which options read it.
"""

from __future__ import annotations

import re

from recsys.data.dates import text_seconds

# Header names (lowercased, letters and digits only) that say which role a column plays, in the
# company's export (Spanish), in public ratings datasets (MovieLens, Amazon, Book-Crossing) and
# in common shop exports.
ROLE_NAMES = {
    "user": (
        "user", "userid", "users", "customer", "customerid", "client", "clientid", "cliente", "idcliente",
        "usuario", "idusuario", "member", "memberid", "buyer", "buyerid", "reviewerid", "visitorid", "uid",
    ),
    "timestamp": (
        "time", "timestamp", "date", "datetime", "ts", "when", "createdat", "eventtime", "fecha",
        "fechainteraccion", "ratingdate", "reviewtime", "unixreviewtime",
    ),
    "item": (
        "item", "itemid", "items", "product", "productid", "movie", "movieid", "title", "asin", "isbn", "sku",
        "experience", "experiencia", "nombrecortodeexperiencia", "article", "articleid", "bookid",
    ),
    "rating": (
        "rating", "ratings", "score", "stars", "star", "overall", "bookrating", "calificacion", "valoracion",
        "puntuacion",
    ),
}
OPTIONS = {"user": "--user-column", "timestamp": "--time-column", "item": "--item-column", "rating": "--rating-column"}

# Date formats tried on a refused column's values, the most common first. Day-first and
# month-first ones are both offered when the values cannot tell them apart.
DATE_FORMATS = (
    "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z",
    "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d",
    "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y", "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d/%m/%Y",
    "%d-%m-%Y %H:%M:%S", "%d-%m-%Y %H:%M", "%d-%m-%Y", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y",
    "%m/%d/%y %H:%M", "%m/%d/%y", "%d/%m/%y %H:%M", "%d/%m/%y",  # two-digit years (Excel's short dates)
    "%m/%d/%Y %I:%M %p", "%m/%d/%Y %I:%M:%S %p", "%Y-%m-%d %I:%M:%S %p",  # 12-hour clocks (1:30 PM)
    "%Y%m%d",
)
SAMPLE = 1000  # values a format must read to be offered


def _key(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def column_options(found: list[str], missing_roles: list[str]) -> str | None:
    """The options that name, among ``found``, a column for each role in ``missing_roles``
    ("--user-column userId --item-column movieId"; "--rating-column none" when no column looks
    like a rating), or None unless every other role has exactly one."""
    taken: set[str] = set()
    parts = []
    for role in missing_roles:
        matches = [name for name in found if _key(name) in ROLE_NAMES[role] and name not in taken]
        if role == "rating" and not matches:
            parts.append(f"{OPTIONS[role]} none")
            continue
        if len(matches) != 1:
            return None
        taken.add(matches[0])
        parts.append(f"{OPTIONS[role]} {_quoted(matches[0])}")
    return " ".join(parts)


def _quoted(name: str) -> str:
    return name if re.fullmatch(r"[\w.-]+", name) else "'" + name.replace("'", "'\\''") + "'"


def _sample(values, refused=None):
    """Up to ``SAMPLE`` of the refused values and as many of all values, as trimmed text."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = [values[:SAMPLE]] + ([values.filter(refused)[:SAMPLE]] if refused is not None else [])
    text = pa.concat_arrays([chunk for part in parts for chunk in pa.chunked_array(part).cast(pa.string()).chunks])
    text = pc.drop_null(pc.utf8_trim_whitespace(text))
    return text.filter(pc.not_equal(text, ""))


def date_format_hint(values, refused=None, exclude: str | None = None) -> str:
    """" (pass --date-format '%Y-%m-%d' to read it)" for a text column of dates in another
    format: the formats of ``DATE_FORMATS`` but ``exclude`` (the one in use) that read the first
    ``SAMPLE`` values and the first ``SAMPLE`` refused ones (mask ``refused``), with pyarrow's own
    parser, the one the export is read with. Each reading is named when the values allow several
    (day-first and month-first); "" when none fits."""
    import pyarrow as pa
    import pyarrow.compute as pc

    sample = _sample(values, refused)
    if len(sample) == 0:
        return ""
    readings: dict[tuple, str] = {}
    for date_format in DATE_FORMATS:
        if date_format == exclude:
            continue
        parsed = text_seconds(sample, date_format)
        if parsed.null_count:
            continue
        if pa.types.is_timestamp(parsed.type) and parsed.type.tz is not None:
            parsed = parsed.cast(pa.timestamp("s"))
        readings.setdefault(tuple(parsed.cast(pa.int64()).to_pylist()), date_format)  # same times: one reading
    shown = [_quoted(date_format) for date_format in readings.values()]
    if not shown:
        return ""
    if len(shown) == 1:
        return f" (pass --date-format {shown[0]} to read it)"
    return (
        f" (pass --date-format {' or '.join(shown)}: the first rows read either way, so check which "
        "one the export uses)"
    )
