"""Loading exports: the good file, the accepted quirks, and one clear DataError per bad input."""

from __future__ import annotations

import re
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import HEADER, REAL_DATA, needs_real_data
from recsys.data.export import load_interactions
from recsys.errors import DataError
from recsys.settings import ColumnMap, RunOptions

GOOD = [
    ("1", "1/30/2021 13:30", "Bono virtual Crepes&Waffles 10", "5"),
    ("1", "1/30/2021 13:30", "Bono virtual Crepes&Waffles 10", "5"),  # duplicate unit
    ("1", "2/3/2021 9:05", "Entrada Teatro Nacional ", "4"),  # trailing space
    ("2", "12/31/2022 23:40", " Curso de cocina italiana", "1"),  # leading space
    ("3", "7/4/2021 0:00", "Entrada Cinépolis 2D", "3"),
]


def rows_with(line: int, column: str, value: str) -> list[tuple[str, str, str, str]]:
    """GOOD with one field replaced; ``line`` counts the header as line 1."""
    rows = [list(r) for r in GOOD]
    rows[line - 2][HEADER.index(column)] = value
    return [tuple(r) for r in rows]


def load_frame(path, **kwargs):
    """The export loaded, its rows with their names as a frame (and the load report)."""
    interactions, report = load_interactions(path, **kwargs)
    return interactions.to_frame(), report


def load_error(path, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_interactions(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message, "errors are one line"
    assert str(path) in message, "the message names the file"
    return message


# --- the good file ------------------------------------------------------------------------------


def test_good_file_gives_the_canonical_frame(write_csv):
    path = write_csv(GOOD)
    frame, report = load_frame(path)

    assert list(frame.columns) == ["user_id", "item", "timestamp", "rating"]
    # Strings (object or pandas' string dtype, whichever this pandas makes by default).
    assert pd.api.types.is_string_dtype(frame["user_id"]) and all(isinstance(v, str) for v in frame["user_id"])
    assert pd.api.types.is_string_dtype(frame["item"]) and all(isinstance(v, str) for v in frame["item"])
    assert frame["timestamp"].dtype == np.dtype("datetime64[ns]")
    assert frame["rating"].dtype == np.int8

    assert frame["user_id"].tolist() == ["1", "1", "1", "2", "3"]
    assert frame["item"].tolist() == [
        "Bono virtual Crepes&Waffles 10",
        "Bono virtual Crepes&Waffles 10",
        "Entrada Teatro Nacional",
        "Curso de cocina italiana",
        "Entrada Cinépolis 2D",
    ]
    assert frame["timestamp"].tolist() == [
        pd.Timestamp("2021-01-30 13:30"),
        pd.Timestamp("2021-01-30 13:30"),
        pd.Timestamp("2021-02-03 09:05"),
        pd.Timestamp("2022-12-31 23:40"),
        pd.Timestamp("2021-07-04 00:00"),
    ]
    assert frame["rating"].tolist() == [5, 5, 4, 1, 3]

    # Duplicates are kept (one row per redeemed unit) and counted.
    assert len(frame) == 5
    assert report.rows == 5
    assert report.duplicate_rows == 1
    assert report.users == 3
    assert report.items == 4
    assert report.path == str(path)
    assert len(report.sha256) == 64
    assert report.first == "2021-01-30 13:30:00"
    assert report.last == "2022-12-31 23:40:00"
    assert any("duplicate" in note for note in report.notes)
    assert any("spaces stripped from 2" in note for note in report.notes)


def test_good_file_is_encoded_against_sorted_vocabularies(write_csv):
    interactions, _ = load_interactions(write_csv(GOOD))
    assert interactions.users.tolist() == ["1", "2", "3"]
    assert interactions.items.tolist() == [
        "Bono virtual Crepes&Waffles 10", "Curso de cocina italiana", "Entrada Cinépolis 2D", "Entrada Teatro Nacional"
    ]
    assert interactions.user.tolist() == [0, 0, 0, 1, 2] and interactions.user.dtype == np.int32
    assert interactions.item.tolist() == [0, 0, 3, 1, 2] and interactions.item.dtype == np.int32
    assert interactions.time.dtype == np.int64
    assert interactions.time[3] == int(pd.Timestamp("2022-12-31 23:40").timestamp())
    assert interactions.rating.tolist() == [5, 5, 4, 1, 3] and interactions.rating.dtype == np.int8


def test_synthetic_export_loads_as_its_canonical_frame(synthetic, synthetic_csv):
    frame, report = load_frame(synthetic_csv)
    pd.testing.assert_frame_equal(frame, synthetic.frame)
    assert report.duplicate_rows == synthetic.duplicates
    assert report.users == 120 and report.items == 40


def test_parquet_with_the_same_columns(tmp_path):
    path = tmp_path / "export.parquet"
    table = pa.table({name: pa.array([row[i] for row in GOOD], pa.string()) for i, name in enumerate(HEADER)})
    pq.write_table(table, path)
    frame, report = load_frame(path)
    csv_frame = pd.DataFrame(
        {
            "user_id": ["1", "1", "1", "2", "3"],
            "item": [r[2].strip() for r in GOOD],
            "timestamp": pd.to_datetime([r[1] for r in GOOD], format="%m/%d/%Y %H:%M").astype("datetime64[ns]"),
            "rating": np.array([5, 5, 4, 1, 3], dtype=np.int8),
        }
    )
    pd.testing.assert_frame_equal(frame, csv_frame)
    assert report.duplicate_rows == 1


def test_parquet_with_native_types(tmp_path):
    """Integer ids, real timestamps and integer ratings are accepted and canonicalised."""
    path = tmp_path / "typed.parquet"
    pq.write_table(
        pa.table(
            {
                "ID_CLIENTE": pa.array([10, 11], pa.int64()),
                "FECHA_INTERACCION": pa.array(
                    [pd.Timestamp("2021-01-30 13:30"), pd.Timestamp("2022-05-01 08:00")], pa.timestamp("us")
                ),
                "NOMBRE_CORTO_DE_EXPERIENCIA": pa.array(["A", " B "], pa.string()),
                "CALIFICACION": pa.array([5, 2], pa.int32()),
            }
        ),
        path,
    )
    frame, _ = load_frame(path)
    assert frame["user_id"].tolist() == ["10", "11"]
    assert frame["item"].tolist() == ["A", "B"]
    assert frame["timestamp"].dtype == np.dtype("datetime64[ns]")
    assert frame["timestamp"].tolist() == [pd.Timestamp("2021-01-30 13:30"), pd.Timestamp("2022-05-01 08:00")]
    assert frame["rating"].dtype == np.int8 and frame["rating"].tolist() == [5, 2]


def test_column_map_and_other_date_format(write_csv):
    header = ("customer", "when", "experience", "stars")
    rows = [("a", "2021-01-30 13:30", "Spa", "5"), ("b", "2022-12-31 23:40", "Cine", "2")]
    path = write_csv(rows, header=header)
    frame, _ = load_frame(
        path, columns=ColumnMap(user="customer", timestamp="when", item="experience", rating="stars"),
        date_format="%Y-%m-%d %H:%M",
    )
    assert frame["user_id"].tolist() == ["a", "b"]
    assert frame["item"].tolist() == ["Spa", "Cine"]
    assert frame["timestamp"].tolist() == [pd.Timestamp("2021-01-30 13:30"), pd.Timestamp("2022-12-31 23:40")]
    assert frame["rating"].tolist() == [5, 2]


# --- a public ratings dataset as it comes (MovieLens's ratings.csv: seconds since 1970, half stars) ---

ML_HEADER = ("userId", "movieId", "rating", "timestamp")
ML_COLUMNS = ColumnMap(user="userId", timestamp="timestamp", item="movieId", rating="rating")


def test_unix_times_and_half_star_ratings_read_with_two_options(write_csv):
    rows = [("1", "31", "2.5", "1260759144"), ("1", "1029", "0.5", "1260759179.9"), ("7", "31", "5.0", " 1260759205 "),
            ("7", "10", "3.5", "0"), ("8", "10", "1.5", "1260759144")]
    path = write_csv(rows, header=ML_HEADER)
    frame, _ = load_frame(path, columns=ML_COLUMNS, date_format="unix", rating_scale=(0.5, 5.0))
    assert frame["user_id"].tolist() == ["1", "1", "7", "7", "8"]
    assert frame["item"].tolist() == ["31", "1029", "31", "10", "10"]
    assert frame["timestamp"].tolist() == [
        pd.Timestamp("2009-12-14 02:52:24"), pd.Timestamp("2009-12-14 02:52:59"),  # the fraction dropped
        pd.Timestamp("2009-12-14 02:53:25"), pd.Timestamp("1970-01-01"), pd.Timestamp("2009-12-14 02:52:24"),
    ]
    # 1 + 4 (r - 0.5) / 4.5, rounded half up: 2.5 -> 2.78, 0.5 -> 1, 5 -> 5, 3.5 -> 3.67, 1.5 -> 1.89
    assert frame["rating"].dtype == np.int8 and frame["rating"].tolist() == [3, 1, 5, 4, 2]


def test_milliseconds_read_with_unix_ms_and_are_told_so_under_unix(write_csv):
    rows = [("1", "31", "2.5", "1260759144000"), ("7", "10", "3.5", "1260759205999.5")]
    path = write_csv(rows, header=ML_HEADER)
    frame, _ = load_frame(path, columns=ML_COLUMNS, date_format="unix-ms", rating_scale=(0.5, 5.0))
    assert sorted(frame["timestamp"].tolist()) == [pd.Timestamp("2009-12-14 02:52:24"), pd.Timestamp("2009-12-14 02:53:25")]
    message = load_error(path, columns=ML_COLUMNS, date_format="unix", rating_scale=(0.5, 5.0))
    assert "time '1260759144000' is not a number of seconds since 1970" in message and "pass --date-format unix-ms" in message


def test_twelve_hour_times_are_told_their_format(write_csv):
    path = write_csv([("1", "1/30/2021 1:30 PM", "Spa", "5"), ("2", "2/13/2021 12:05 AM", "Cine", "4")])
    assert "(pass --date-format '%m/%d/%Y %I:%M %p' to read it)" in load_error(path)
    frame, _ = load_frame(path, date_format="%m/%d/%Y %I:%M %p")
    assert sorted(frame["timestamp"].tolist()) == [pd.Timestamp("2021-01-30 13:30"), pd.Timestamp("2021-02-13 00:05")]


def test_a_ten_point_scale_maps_onto_five_stars(write_csv):
    rows = [(str(k), "01/05/2021 10:00", "Spa", str(k)) for k in range(1, 11)]
    frame, _ = load_frame(write_csv(rows), rating_scale=(1.0, 10.0))
    assert frame.sort_values("user_id", key=lambda u: u.astype(int))["rating"].tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_a_public_dataset_without_the_options_is_told_which_options_read_it(write_csv):
    path = write_csv([("1", "31", "2.5", "1260759144")], header=ML_HEADER)
    message = load_error(path)
    assert (
        "missing column 'ID_CLIENTE' (found: userId, movieId, rating, timestamp; pass --user-column userId "
        "--time-column timestamp --item-column movieId --rating-column rating to read it)"
    ) in message
    message = load_error(path, columns=ML_COLUMNS)
    assert "line 2, column timestamp: date '1260759144' does not match" in message and "--date-format unix" in message
    message = load_error(path, columns=ML_COLUMNS, date_format="unix")
    assert "line 2, column rating: rating '2.5' is not a whole number from 1 to 5" in message
    assert "--rating-scale" in message


@pytest.mark.parametrize(
    ("column", "value", "expect"),
    [
        ("timestamp", "2009-12-14", "time '2009-12-14' is not a number of seconds since 1970"),
        ("timestamp", "1260759144000", "time '1260759144000' is not a number of seconds"),  # milliseconds
        ("timestamp", "", "time ''"),
        ("rating", "5.5", "rating '5.5' is not a number from 0.5 to 5 (--rating-scale)"),
        ("rating", "0", "rating '0' is not a number from 0.5 to 5"),
        ("rating", "good", "rating 'good'"),
    ],
)
def test_bad_unix_times_and_ratings_outside_the_scale_are_refused(write_csv, column, value, expect):
    rows = [["1", "31", "2.5", "1260759144"], ["2", "32", "4", "1260759145"]]
    rows[1][ML_HEADER.index(column)] = value
    message = load_error(write_csv([tuple(r) for r in rows], header=ML_HEADER), columns=ML_COLUMNS, date_format="unix",
                         rating_scale=(0.5, 5.0))
    assert f"line 3, column {column}: {expect}" in message, message


def test_a_parquet_export_with_integer_ids_and_unix_times(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"userId": pa.array([1, 1, 2], pa.int64()), "movieId": pa.array([31, 1029, 31], pa.int32()),
                      "rating": pa.array([4.0, 0.5, 5.0]), "timestamp": pa.array([1260759144, 1260759179, 1260759205])})
    pq.write_table(table, tmp_path / "ratings.parquet")
    frame, _ = load_frame(tmp_path / "ratings.parquet", columns=ML_COLUMNS, date_format="unix", rating_scale=(0.5, 5.0))
    assert frame["item"].tolist() == ["31", "1029", "31"] and frame["rating"].tolist() == [4, 1, 5]
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2009-12-14 02:52:24")
    message = load_error(tmp_path / "ratings.parquet", columns=ML_COLUMNS, rating_scale=(0.5, 5.0))
    assert "column 'timestamp' holds numbers, not dates: pass --date-format unix" in message


# MovieLens-1M's ratings.dat and MovieLens-100k's u.data: no header row, customer, item, rating, time.
ML_1M_LINES = ["1::1193::5::978300760", "1::661::3::978302109", "2::1193::4::978298413", "3::3408::4::978300275"]


def headerless(tmp_path, delimiter: str, name: str = "ratings.dat", lines=ML_1M_LINES):
    path = tmp_path / name
    path.write_text("\n".join(line.replace("::", delimiter) for line in lines) + "\n")
    return path


@pytest.mark.parametrize("delimiter", ["::", "\t"])
def test_a_file_without_a_header_reads_its_columns_by_position(tmp_path, delimiter):
    from recsys.settings import RunOptions

    path = headerless(tmp_path, delimiter)
    options = RunOptions(data=path, delimiter="tab" if delimiter == "\t" else delimiter, header=False, date_format="unix")
    interactions, report = load_interactions(path, *options.export_format)
    frame = interactions.to_frame()
    assert report.rows == 4 and report.notes == ()  # the first line is a row, not a header
    assert frame["user_id"].tolist() == ["1", "1", "2", "3"]
    assert frame["item"].tolist() == ["1193", "661", "1193", "3408"]
    assert frame["rating"].tolist() == [5, 3, 4, 4]
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2000-12-31 22:12:40")


def test_a_headerless_file_s_positions_come_from_the_column_options(tmp_path):
    from recsys.settings import RunOptions

    # time, customer, item, rating; a fifth column ignored.
    path = headerless(tmp_path, ",", "shuffled.csv", ["978300760,1,1193,5,x", "978302109,2,661,3,y"])
    options = RunOptions(data=path, header=False, date_format="unix", time_column="1", user_column="2", item_column="3",
                         rating_column="4")
    interactions, report = load_interactions(path, *options.export_format)
    assert interactions.to_frame()["item"].tolist() == ["1193", "661"] and report.notes == ("extra columns ignored: 5",)


def test_a_delimiter_of_several_characters_is_not_split_across_blocks(tmp_path, monkeypatch):
    import recsys.data.files as files
    from recsys.settings import RunOptions

    lines = [f"{u}::{u % 97}::{1 + u % 5}::{978300000 + u}" for u in range(3000)]
    path = headerless(tmp_path, "::", lines=lines)
    monkeypatch.setattr(files, "_REPLACING_BLOCK_BYTES", 7)  # "::" straddles many of the reads
    options = RunOptions(data=path, delimiter="::", header=False, date_format="unix")
    frame = load_interactions(path, *options.export_format)[0].to_frame().sort_values("timestamp")
    assert frame["user_id"].tolist() == [str(u) for u in range(3000)]
    assert frame["item"].tolist() == [str(u % 97) for u in range(3000)]
    assert frame["rating"].tolist() == [1 + u % 5 for u in range(3000)]


def test_a_headerless_file_read_with_a_header_or_the_wrong_delimiter_is_told_the_options(tmp_path):
    path = headerless(tmp_path, "::")
    message = load_error(path, delimiter="::")
    assert "missing column 'ID_CLIENTE' (found: 1, 1193, 5, 978300760; the first line looks like data: pass --no-header" in message
    message = load_error(path)
    assert "columns are separated by '::', not ','" in message and "--delimiter '::'" in message
    message = load_error(path, delimiter="::", header=False, columns=ColumnMap(user="7", timestamp="4", item="2", rating="3"))
    assert "line 1 has 4 columns, so no column 7 for the customer" in message
    # Without a header the first data line is line 1.
    message = load_error(path, delimiter="::", header=False, columns=ColumnMap(user="1", timestamp="4", item="2", rating="3"))
    assert "line 1, column 4: date '978300760' does not match" in message and "--date-format unix" in message


@pytest.mark.parametrize("delimiter", ["", "\n", '"'])
def test_a_delimiter_that_cannot_separate_columns_is_refused(delimiter):
    from recsys.errors import OptionError
    from recsys.settings import RunOptions

    with pytest.raises(OptionError, match="--delimiter must be"):
        RunOptions(delimiter=delimiter)


def test_semicolon_file_reads_with_the_delimiter_option(write_csv):
    path = write_csv(GOOD, delimiter=";")
    frame, _ = load_frame(path, delimiter=";")
    assert len(frame) == 5 and frame["item"].iloc[2] == "Entrada Teatro Nacional"


def _spread_rows(n: int = 400) -> list[tuple[str, str, str, str]]:
    """Rows whose ids and names repeat across the file, sometimes with spaces, sometimes duplicated."""
    rows = []
    for k in range(n):
        user = str(k % 23)
        user = {0: f" {user}", 1: f"{user} "}.get(k % 7, user)
        item = f"Curso {k % 11}" + ("  " if k % 5 == 0 else "")
        rating = {0: "5.0", 1: " 4"}.get(k % 9, str(1 + k % 5))
        rows.append((user, f"{1 + k % 12}/{1 + k % 28}/2021 {k % 24}:{k % 60:02d}", item, rating))
        if k % 4 == 0:
            rows.append(rows[-1])  # several units of one redemption
    return rows


def test_many_reader_blocks_load_as_one(write_csv, monkeypatch):
    """Each CSV reader block encodes its own dictionaries; the frame and counts do not depend on them."""
    import recsys.data.export as data

    rows = _spread_rows()
    path = write_csv(rows)
    one_frame, one_report = load_frame(path)
    monkeypatch.setattr(data, "_BLOCK_BYTES", 512)  # a few rows per block
    frame, report = load_frame(path)

    pd.testing.assert_frame_equal(frame, one_frame)
    assert report == one_report
    stripped = pd.DataFrame(
        {
            "user_id": [r[0].strip() for r in rows],
            "item": [r[2].strip() for r in rows],
            "timestamp": pd.to_datetime([r[1] for r in rows], format="%m/%d/%Y %H:%M").astype("datetime64[ns]"),
            "rating": np.array([int(float(r[3])) for r in rows], dtype=np.int8),
        }
    )
    pd.testing.assert_frame_equal(frame, stripped, check_dtype=False)
    assert frame["user_id"].dtype == one_frame["user_id"].dtype and frame["rating"].dtype == np.int8
    assert report.rows == len(rows)
    assert report.duplicate_rows == int(stripped.duplicated().sum()) > 0
    assert report.users == 23 and report.items == 11


def test_bad_row_in_a_later_reader_block_is_found(write_csv, monkeypatch):
    import recsys.data.export as data

    rows = _spread_rows()
    rows[300] = rows[300][:3] + ("7",)
    rows[350] = rows[350][:3] + ("0",)
    monkeypatch.setattr(data, "_BLOCK_BYTES", 512)
    message = load_error(write_csv(rows))
    assert "line 302, column CALIFICACION: rating '7'" in message
    assert "(1 more row like it)" in message


# --- accepted quirks ------------------------------------------------------------------------------


def test_utf8_bom_is_skipped(write_csv):
    frame, report = load_frame(write_csv(GOOD, bom=True))
    assert frame["user_id"].tolist() == ["1", "1", "1", "2", "3"]
    assert frame["item"].iloc[4] == "Entrada Cinépolis 2D"
    assert any("byte-order mark" in note for note in report.notes)


def test_windows_line_endings(write_csv):
    frame, _ = load_frame(write_csv(GOOD, newline="\r\n"))
    assert frame["rating"].tolist() == [5, 5, 4, 1, 3]
    assert not any("\r" in v for v in frame["item"])


def test_windows_line_endings_with_item_as_last_column(write_csv):
    header = ("ID_CLIENTE", "FECHA_INTERACCION", "CALIFICACION", "NOMBRE_CORTO_DE_EXPERIENCIA")
    rows = [(u, t, r, i) for u, t, i, r in GOOD]
    frame, _ = load_frame(write_csv(rows, header=header, newline="\r\n"))
    assert frame["item"].tolist()[2:] == ["Entrada Teatro Nacional", "Curso de cocina italiana", "Entrada Cinépolis 2D"]


def test_latin1_file_with_accented_names(write_csv):
    rows = [
        ("1", "1/30/2021 13:30", "Café Juan Valdez 20", "5"),
        ("2", "2/1/2021 10:00", "Señor Pollo", "4"),
    ]
    path = write_csv(rows, encoding="latin-1")
    with pytest.raises(UnicodeDecodeError):
        path.read_bytes().decode("utf-8")  # really not UTF-8
    frame, report = load_frame(path)
    assert frame["item"].tolist() == ["Café Juan Valdez 20", "Señor Pollo"]
    # Latin-1 is Windows-1252 wherever it has a printable character (0xA0-0xFF): read as that.
    assert "file is not UTF-8: read as Windows-1252 (8-bit)" in report.notes


# Names with accents, and the punctuation Windows-1252 puts in 0x80-0x9F (Latin-1 has control
# characters there): € ‚ „ … † ‰ Š ‹ ‘ ’ “ ” • – — ™ š œ Ÿ.
ACCENTED = [
    ("1", "1/30/2021 13:30", "Bono “Café Niño” 20 €", "5"),
    ("2", "2/1/2021 10:00", "Curso d’arte… – nivel 1", "4"),
    ("3", "2/2/2021 11:00", "Señor Pollo — 2x1™ ‚„†‰Š‹•šœŸ", "3"),
]


def test_utf8_file_reads_as_utf8(write_csv):
    frame, report = load_frame(write_csv(ACCENTED))
    assert frame["item"].tolist() == [row[2] for row in ACCENTED]
    assert not any("UTF-8" in note for note in report.notes)


def test_windows_1252_file_reads_its_punctuation(write_csv):
    """An 8-bit export as Excel on Windows saves it: its quotes, euro sign and dashes, not C1 controls."""
    path = write_csv(ACCENTED, encoding="cp1252")
    assert b"\x93" in path.read_bytes() and b"\x80" in path.read_bytes()  # “ and € as single bytes
    frame, report = load_frame(path)
    assert frame["item"].tolist() == [row[2] for row in ACCENTED]
    assert "file is not UTF-8: read as Windows-1252 (8-bit)" in report.notes


def test_bytes_windows_1252_leaves_undefined_read_as_latin1(write_csv):
    path = write_csv(GOOD[:4])  # no UTF-8 name: an 8-bit file
    path.write_bytes(path.read_bytes() + b'"4","1/30/2021 13:30","Caf\xe9 \x81\x8d\x8f\x90\x9d \x80","5"\n')
    frame, _ = load_frame(path)
    assert frame["item"].iloc[-1] == "Café \x81\x8d\x8f\x90\x9d €"


def _utf8_with_one_latin1_line(write_csv, at: int) -> tuple:
    """A UTF-8 export of 200 rows whose row ``at`` (0-based) is written in Latin-1; (path, its line)."""
    rows = [(str(n), "1/30/2021 13:30", ("Café", "Niño", "Bono 10")[n % 3], "5") for n in range(200)]
    path = write_csv(rows)
    lines = path.read_bytes().split(b"\n")
    lines[at + 1] = b'"%d","1/30/2021 13:30","Caf\xe9 mal","5"' % at
    path.write_bytes(b"\n".join(lines))
    return path, at + 2  # the header is line 1


@pytest.mark.parametrize("at", [0, 1, 150, 199], ids=["first-row", "before-any-utf8-name", "middle", "last-row"])
def test_utf8_file_with_a_latin1_line_is_refused_naming_the_line(write_csv, at):
    """Read as Latin-1, every UTF-8 name would be garbled ("Café" as "CafÃ©"); as UTF-8, that line's."""
    path, line = _utf8_with_one_latin1_line(write_csv, at)
    message = load_error(path)
    assert f"{path}: line {line}: not valid UTF-8 (byte 0xE9)" in message
    assert "re-save the file as UTF-8" in message


@pytest.mark.parametrize("scan_bytes", [1, 2, 3, 7, 64])
def test_mixed_file_line_is_right_whatever_the_scan_blocks(write_csv, monkeypatch, scan_bytes):
    """Blocks cutting lines and UTF-8 sequences anywhere: still refused, still the right line."""
    import recsys.data.files as files

    monkeypatch.setattr(files, "_SCAN_BYTES", scan_bytes, raising=False)
    path, line = _utf8_with_one_latin1_line(write_csv, 7)
    assert f"line {line}: not valid UTF-8" in load_error(path)
    frame, _ = load_frame(write_csv(ACCENTED, name="utf8.csv"))  # and the whole files still read
    assert frame["item"].tolist() == [row[2] for row in ACCENTED]
    frame, _ = load_frame(write_csv(ACCENTED, name="cp1252.csv", encoding="cp1252"))
    assert frame["item"].tolist() == [row[2] for row in ACCENTED]


def test_utf8_file_cut_within_a_character_at_its_end_is_refused(write_csv):
    path = write_csv(ACCENTED)
    path.write_bytes(path.read_bytes() + b'"4","1/30/2021 13:30","Caf\xc3')
    assert "line 5: not valid UTF-8 (byte 0xC3)" in load_error(path)


def test_compressed_mixed_file_is_refused_naming_the_line(write_csv, tmp_path):
    import gzip

    path, line = _utf8_with_one_latin1_line(write_csv, 150)
    zipped = tmp_path / "export.csv.gz"
    zipped.write_bytes(gzip.compress(path.read_bytes()))
    assert f"line {line}: not valid UTF-8" in load_error(zipped)


def test_extra_columns_are_ignored(write_csv):
    header = ("CANAL",) + HEADER + ("OBSERVACIONES",)
    rows = [("web",) + r + ("nada",) for r in GOOD]
    frame, report = load_frame(write_csv(rows, header=header))
    assert list(frame.columns) == ["user_id", "item", "timestamp", "rating"]
    assert frame["rating"].tolist() == [5, 5, 4, 1, 3]
    assert any("CANAL" in note and "OBSERVACIONES" in note for note in report.notes)


# --- bad inputs: DataError naming the file (and line, column) -----------------------------------


def test_missing_path(tmp_path):
    assert "no such file" in load_error(tmp_path / "nope.csv")


def test_directory(tmp_path):
    assert "directory" in load_error(tmp_path)


def test_empty_file(write_csv, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    assert "empty" in load_error(path)


def test_header_only(write_csv):
    assert "no rows" in load_error(write_csv([]))


def test_missing_column(write_csv):
    header = HEADER[:3]
    message = load_error(write_csv([r[:3] for r in GOOD], header=header))
    assert "line 1" in message
    assert "CALIFICACION" in message


def _given(options: str) -> dict:
    """The keyword arguments of ``load_interactions`` that a hint's options stand for."""
    values = dict(re.findall(r"--([a-z-]+) ('[^']*'|\S+)", options))
    values = {key: value.strip("'") for key, value in values.items()}
    columns = ColumnMap(
        user=values.pop("user-column"), timestamp=values.pop("time-column"),
        item=values.pop("item-column"), rating=values.pop("rating-column"),
    )
    return {"columns": columns, **({"date_format": values.pop("date-format")} if "date-format" in values else {})}


def test_a_header_of_other_names_is_told_the_column_options_that_read_it(write_csv, tmp_path):
    """userId/movieId/rating/timestamp (MovieLens) or user_id/item/... : the error gives the four
    options, and those options read the file (the same hint for Parquet)."""
    rows = [("7", "1/30/2021 13:30", "Spa", "5"), ("8", "2/3/2021 9:05", "Cine", "4")]
    path = write_csv([(u, i, r, t) for u, t, i, r in rows], header=("User_ID", "Product", "Stars", "Date"))
    message = load_error(path)
    hint = re.search(r"; pass (.*) to read it\)$", message)
    assert hint and hint.group(1) == "--user-column User_ID --time-column Date --item-column Product --rating-column Stars"
    frame, _ = load_frame(path, **_given(hint.group(1)))
    assert frame["user_id"].tolist() == ["7", "8"] and frame["item"].tolist() == ["Spa", "Cine"]
    parquet = tmp_path / "other.parquet"
    pq.write_table(pa.table({"customer_id": ["7"], "time": ["1/30/2021 13:30"], "title": ["Spa"], "score": ["5"]}), parquet)
    assert "pass --user-column customer_id --time-column time --item-column title --rating-column score" in load_error(parquet)
    # Two columns that could be the customer: no guess, the option to name it.
    path = write_csv([(u, u, t, i, r) for u, t, i, r in rows], name="two.csv", header=("user", "customer", "time", "item", "rating"))
    message = load_error(path)
    assert "pass --user-column NAME if it has another name" in message and "--time-column" not in message


@pytest.mark.parametrize(
    ("dates", "formats"),
    [
        (("2021-01-30T13:30:00Z", "2021-02-03T09:05:00Z"), ["%Y-%m-%dT%H:%M:%SZ"]),
        (("2021-01-30 13:30:00+02:00", "2021-02-03 09:05:00+02:00"), ["%Y-%m-%d %H:%M:%S%z"]),
        (("2021-01-30 13:30:00.125", "2021-02-03 09:05:07.5"), ["%Y-%m-%d %H:%M:%S"]),  # fractions
        (("30.01.2021", "03.02.2021"), ["%d.%m.%Y"]),
        (("13/01/2021 10:00", "03/02/2021 09:05"), ["%d/%m/%Y %H:%M"]),  # day 13: day first
        (("01/02/2021", "03/02/2021"), ["%m/%d/%Y", "%d/%m/%Y"]),  # either: both offered
        (("yesterday", "today"), []),
    ],
)
def test_dates_in_another_format_are_told_the_date_format_that_reads_them(write_csv, dates, formats):
    path = write_csv([("1", dates[0], "Spa", "5"), ("2", dates[1], "Cine", "4")])
    message = load_error(path)
    offered = re.findall(r"'(%[^']*)'", message.split("(pass --date-format ", 1)[-1]) if formats else []
    assert offered == formats, message
    if not formats:
        assert "--date-format" not in message
    for date_format in formats:  # each offered format reads the file
        frame, _ = load_frame(path, date_format=date_format)
        assert len(frame) == 2


def test_fractions_of_a_second_are_dropped_with_or_without_f_in_the_format(write_csv):
    """Text times with a fraction of a second read as their whole second (as a Parquet timestamp's
    or a unix time's fraction does), whether the format names the fraction or not."""
    rows = [("1", "2021-01-30T13:30:00.999Z", "Spa", "5"), ("2", "2021-02-03T09:05:07,5Z", "Cine", "4"),
            ("3", "2021-02-04T10:00:01Z", "Spa", "3")]
    path = write_csv(rows)
    expected = [pd.Timestamp("2021-01-30 13:30:00"), pd.Timestamp("2021-02-03 09:05:07"), pd.Timestamp("2021-02-04 10:00:01")]
    for date_format in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
        frame, _ = load_frame(path, date_format=date_format)
        assert frame.sort_values("user_id")["timestamp"].tolist() == expected, date_format
    # Only a fraction right after the seconds goes: digits after a comma that start a date stay.
    dated = write_csv([("1", "13:30:00,30.01.2021", "Spa", "5")], name="time_first.csv")
    assert load_frame(dated, date_format="%H:%M:%S,%d.%m.%Y")[0]["timestamp"].tolist() == [pd.Timestamp("2021-01-30 13:30")]


@pytest.mark.parametrize(
    ("date", "date_format"),
    [("2/30/2022 10:00", "%m/%d/%Y %H:%M"), ("4/31/2022 0:00", "%m/%d/%Y %H:%M"), ("2/29/2021 9:05", "%m/%d/%Y %H:%M"),
     ("2022-02-30T10:00:00.5Z", "%Y-%m-%dT%H:%M:%SZ"), ("20220431", "%Y%m%d")],
)
def test_a_day_past_the_end_of_its_month_is_refused_not_moved_to_the_next(write_csv, date, date_format):
    """Arrow's parser reads 2/30/2022 as March 2: the export must be refused at that line instead,
    since a redemption on a day that does not exist is a broken row, not a later one."""
    good = datetime(2022, 3, 2, 10, 0).strftime(date_format)  # the day it would have been moved to
    rows = [("1", good, "Spa", "5"), ("2", good, "Cine", "4"), ("3", date, "Spa", "3")]
    message = load_error(write_csv(rows), date_format=date_format)
    assert f"line 4, column FECHA_INTERACCION: date {date!r} names no such day of the calendar" in message


def test_leap_days_and_month_ends_still_read(write_csv):
    rows = [("1", "2/29/2024 10:00", "Spa", "5"), ("2", "4/30/2022 0:00", "Cine", "4"), ("3", "12/31/2022 23:59", "Spa", "3"),
            ("4", "3/1/2022 8:00", "Cine", "2"), ("5", "1/3/2022 8:00", "Spa", "1")]
    frame, _ = load_frame(write_csv(rows))
    assert sorted(frame["timestamp"].dt.strftime("%Y-%m-%d %H:%M")) == [
        "2022-01-03 08:00", "2022-03-01 08:00", "2022-04-30 00:00", "2022-12-31 23:59", "2024-02-29 10:00"]


def test_two_digit_years_are_refused_under_percent_y_and_told_the_format_that_reads_them(write_csv):
    """Excel's short dates (1/30/21) under %Y would be the year 21: refused, with %y offered."""
    path = write_csv([("1", "1/30/21 13:30", "Spa", "5"), ("2", "2/13/22 10:00", "Cine", "4")])
    message = load_error(path)
    assert "line 2, column FECHA_INTERACCION: date '1/30/21 13:30' has a two-digit year" in message
    assert "(pass --date-format '%m/%d/%y %H:%M' to read it)" in message
    frame, _ = load_frame(path, date_format="%m/%d/%y %H:%M")
    assert sorted(frame["timestamp"].tolist()) == [pd.Timestamp("2021-01-30 13:30"), pd.Timestamp("2022-02-13 10:00")]
    # One short date among four-digit years is a broken row too, not a row to set aside.
    assert "line 3, column FECHA_INTERACCION: date '2/3/21 9:05' has a two-digit year" in load_error(
        write_csv(rows_with(3, "FECHA_INTERACCION", "2/3/21 9:05"), name="one_short.csv"))


def test_an_empty_date_is_said_to_be_empty_and_a_compact_day_gets_its_format(write_csv):
    """An empty date is named as such (no format would read it, and the one in use must not be
    offered); 20210130 is a day, not seconds since 1970."""
    message = load_error(write_csv(rows_with(3, "FECHA_INTERACCION", "")))
    assert "line 3, column FECHA_INTERACCION: empty date" in message and "--date-format" not in message
    iso = [("1", "2021-01-30 13:30:00", "Spa", "5"), ("2", "", "Cine", "4"), ("3", "2021-02-01 10:00:00", "Spa", "3")]
    message = load_error(write_csv(iso, name="iso.csv"), date_format="%Y-%m-%d %H:%M:%S")
    assert "line 3, column FECHA_INTERACCION: empty date" in message and "pass --date-format" not in message
    compact = write_csv([("1", "20210130", "Spa", "5"), ("2", "20210203", "Cine", "4")], name="compact.csv")
    assert "(pass --date-format '%Y%m%d' to read it)" in load_error(compact)
    assert load_frame(compact, date_format="%Y%m%d")[0]["timestamp"].tolist() == [pd.Timestamp("2021-01-30"), pd.Timestamp("2021-02-03")]


def test_padded_header_names_read_by_the_names_the_hint_gives(tmp_path):
    """"userId, movieId, rating, timestamp": the hint's stripped names read the file."""
    path = tmp_path / "padded.csv"
    path.write_text("userId, movieId, rating, timestamp\n1, 31, 2.5, 1260759144\n2, 10, 4, 1260759200\n")
    message = load_error(path)
    hint = re.search(r"; pass (.*) to read it\)$", message)
    assert hint, message
    frame, _ = load_frame(path, **_given(hint.group(1)), date_format="unix", rating_scale=(0.5, 5.0))
    assert frame["item"].tolist() == ["31", "10"] and frame["rating"].tolist() == [3, 4]


def test_a_column_named_twice_in_the_header_is_refused_in_one_line(write_csv):
    message = load_error(write_csv([r + ("9",) for r in GOOD], header=HEADER + ("ID_CLIENTE",)))
    assert "line 1: column 'ID_CLIENTE' appears 2 times in the header" in message


def test_one_bad_date_among_good_ones_gets_no_format_hint(write_csv):
    """The hint must read the good rows too: a typo among dates of the right format is no reason
    to offer another format."""
    message = load_error(write_csv(rows_with(4, "FECHA_INTERACCION", "2021-02-03")))
    assert "does not match the format '%m/%d/%Y %H:%M'" in message and "pass --date-format" not in message


def test_an_export_without_ratings_reads_with_rating_column_none(write_csv, tmp_path):
    """Clicks or purchases without a rating: refused with the option to type, then read with
    every row as a rating of 5, from a CSV, a Parquet file and a headerless file."""
    from recsys.settings import NO_RATING, RunOptions

    path = write_csv([row[:3] for row in GOOD], header=HEADER[:3])
    message = load_error(path)
    assert "missing column 'CALIFICACION'" in message and "pass --rating-column none to read it without ratings" in message
    columns = ColumnMap(rating=NO_RATING)
    frame, report = load_frame(path, columns=columns)
    expected, _ = load_frame(write_csv(GOOD, name="rated.csv"))
    pd.testing.assert_frame_equal(frame.drop(columns="rating"), expected.drop(columns="rating"))
    assert frame["rating"].tolist() == [5] * len(GOOD) and "no rating column: every row counts as a rating of 5" in report.notes
    parquet = tmp_path / "clicks.parquet"
    pq.write_table(pa.table({name: [row[i] for row in GOOD] for i, name in enumerate(HEADER[:3])}), parquet)
    pd.testing.assert_frame_equal(load_frame(parquet, columns=columns)[0], frame)
    headerless_clicks = tmp_path / "clicks.txt"
    headerless_clicks.write_text("u1\tSpa\t1609495200\nu2\tCine\t1609498800\n")
    options = RunOptions(data=headerless_clicks, header=False, delimiter="tab", date_format="unix", time_column="3", rating_column="none")
    frame, _ = load_frame(headerless_clicks, **dict(zip(("columns", "date_format", "delimiter", "rating_scale", "header"), options.export_format)))
    assert frame["item"].tolist() == ["Spa", "Cine"] and frame["rating"].tolist() == [5, 5]


def test_ratings_with_a_decimal_comma_read_as_numbers(write_csv):
    """A semicolon-separated export from a Spanish spreadsheet writes 4,5 for 4.5."""
    rows = [("1", "1/30/2021 13:30", "Spa", "4,5"), ("2", "1/31/2021 10:00", "Cine", "3,0"), ("3", "2/1/2021 9:00", "Spa", "0,5")]
    path = write_csv(rows, delimiter=";")
    frame, _ = load_frame(path, delimiter=";", rating_scale=(0.5, 5.0))
    assert frame.sort_values("user_id")["rating"].tolist() == [5, 3, 1]
    message = load_error(path, delimiter=";")
    assert "rating '4,5' is not a whole number from 1 to 5 (pass --rating-scale LOW-HIGH" in message


def test_semicolon_delimiter(write_csv):
    message = load_error(write_csv(GOOD, delimiter=";"))
    assert "line 1" in message
    assert "';'" in message and "--delimiter" in message


@pytest.mark.parametrize(
    ("line", "column", "value", "expect"),
    [
        (4, "FECHA_INTERACCION", "2021-02-03", "does not match the format"),
        (3, "FECHA_INTERACCION", "13/1/2021 10:00", "does not match the format"),
        (5, "CALIFICACION", "0", "rating '0'"),
        (2, "CALIFICACION", "6", "rating '6'"),
        (6, "CALIFICACION", "cinco", "rating 'cinco'"),
        (3, "CALIFICACION", "4.5", "rating '4.5'"),
        (4, "CALIFICACION", "", "rating ''"),
        (5, "ID_CLIENTE", "", "empty customer id"),
        (3, "ID_CLIENTE", "   ", "empty customer id"),
        (6, "NOMBRE_CORTO_DE_EXPERIENCIA", "", "empty item name"),
    ],
)
def test_bad_field_names_file_line_and_column(write_csv, line, column, value, expect):
    message = load_error(write_csv(rows_with(line, column, value)))
    assert re.search(rf": line {line}, column {column}: ", message), message
    assert expect in message


def test_several_bad_rows_report_the_first_and_the_count(write_csv):
    rows = rows_with(3, "CALIFICACION", "0")
    rows[3] = rows[3][:3] + ("9",)  # line 5 too
    message = load_error(write_csv(rows))
    assert "line 3, column CALIFICACION" in message
    assert "1 more row like it" in message


@pytest.mark.parametrize(
    ("row", "reason"),
    [("7,2/3/2022 10:00,Cafe, grande,5", "Expected 4 columns, got 5: 7,2/3/2022 10:00,Cafe, grande,5 (a value holding the delimiter must be in quotes)"),
     ("7,2/3/2022 10:00,5", "Expected 4 columns, got 3: 7,2/3/2022 10:00,5"),
     ('7,2/3/2022 10:00,"Cafe grande,5', "Expected 4 columns, got 3")],
)
def test_a_malformed_row_far_into_the_file_is_named_by_its_line(tmp_path, row, reason):
    """The parallel CSV reader cannot tell where a row of too many or too few fields is: the error
    reads the file again to name the line (7,002 here, past the first block of the reader)."""
    lines = [",".join(HEADER)] + [f"{k},1/30/2021 13:30,Spa,5" for k in range(7000)] + [row, "8,1/30/2021 13:30,Spa,5"]
    path = tmp_path / "export.csv"
    path.write_text("\n".join(lines) + "\n")
    assert f"line 7002: not a well-formed CSV row: {reason}" in load_error(path)
    dat = tmp_path / "ratings.dat"  # a separator of two characters is shown as it is in the file
    dat.write_text("".join(f"{u}::{i}::5::1260759144\n" for u in range(50) for i in range(3)) + "7::8::5\n")
    options = RunOptions(data=dat, delimiter="::", header=False, date_format="unix")
    with pytest.raises(DataError, match="line 151: not a well-formed CSV row: Expected 4 columns, got 3: 7::8::5"):
        load_interactions(dat, *options.export_format)


def test_binary_file(tmp_path):
    path = tmp_path / "export.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    assert "binary" in load_error(path)


def test_a_utf16_file_is_told_to_be_saved_as_utf8(tmp_path, write_csv):
    path = tmp_path / "unicode.txt"
    path.write_bytes(write_csv(GOOD).read_text(encoding="utf-8").encode("utf-16"))  # with its byte-order mark
    assert "UTF-16 text, not UTF-8: save it again as CSV UTF-8" in load_error(path)


@pytest.mark.parametrize(
    ("column", "array", "expect"),
    [
        ("NOMBRE_CORTO_DE_EXPERIENCIA", pa.array([1.5, 2.5], pa.float64()), "NOMBRE_CORTO_DE_EXPERIENCIA"),
        ("CALIFICACION", pa.array([[5], [4]], pa.list_(pa.int64())), "CALIFICACION"),
        ("FECHA_INTERACCION", pa.array([True, False]), "FECHA_INTERACCION"),
    ],
)
def test_parquet_with_wrong_column_types(tmp_path, column, array, expect):
    columns = {
        "ID_CLIENTE": pa.array(["1", "2"]),
        "FECHA_INTERACCION": pa.array(["1/30/2021 13:30", "1/31/2021 13:30"]),
        "NOMBRE_CORTO_DE_EXPERIENCIA": pa.array(["A", "B"]),
        "CALIFICACION": pa.array(["5", "4"]),
    }
    columns[column] = array
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table(columns), path)
    message = load_error(path)
    assert expect in message and "type" in message


def test_parquet_with_category_columns_reads_as_the_plain_one(tmp_path, write_csv):
    """pandas' category dtype is a dictionary-encoded column: still text, read as such."""
    plain = write_csv(GOOD)
    frame = pd.read_csv(plain, dtype=str)
    for column in ("ID_CLIENTE", "FECHA_INTERACCION", "NOMBRE_CORTO_DE_EXPERIENCIA"):
        frame[column] = frame[column].astype("category")
    frame.to_parquet(tmp_path / "category.parquet")
    assert pa.types.is_dictionary(pq.read_schema(tmp_path / "category.parquet").field("ID_CLIENTE").type)
    expected, _ = load_frame(plain)
    got, _ = load_frame(tmp_path / "category.parquet")
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected.reset_index(drop=True))


def test_a_parquet_file_names_its_bad_row_counted_from_one_and_float_ids_are_told_why(tmp_path):
    items = [f"item {k}" for k in range(50)]
    items[40] = None  # the 41st row
    columns = {"ID_CLIENTE": [str(k) for k in range(50)], "FECHA_INTERACCION": ["1/30/2021 13:30"] * 50,
               "NOMBRE_CORTO_DE_EXPERIENCIA": items, "CALIFICACION": [5] * 50}
    pq.write_table(pa.table(columns), tmp_path / "null.parquet")
    assert "row 41, column NOMBRE_CORTO_DE_EXPERIENCIA: empty item name" in load_error(tmp_path / "null.parquet")
    columns.update(NOMBRE_CORTO_DE_EXPERIENCIA=["a"] * 50, ID_CLIENTE=[float(k) for k in range(50)])
    pq.write_table(pa.table(columns), tmp_path / "float.parquet")
    assert "column 'ID_CLIENTE' has type double: ids must be text or whole numbers" in load_error(tmp_path / "float.parquet")


def test_parquet_missing_column(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"ID_CLIENTE": ["1"], "FECHA_INTERACCION": ["1/30/2021 13:30"], "CALIFICACION": ["5"]}), path)
    assert "NOMBRE_CORTO_DE_EXPERIENCIA" in load_error(path)


@pytest.mark.parametrize("module", ["gzip", "bz2", "lzma"])
def test_a_compressed_csv_reads_as_the_plain_file(write_csv, tmp_path, module):
    """gzip, bzip2 and xz exports are known by their first bytes, whatever their name; MovieLens's
    ratings.dat compressed, with its two-character separator, too."""
    import importlib

    compress = importlib.import_module(module).compress
    plain = write_csv(GOOD)
    packed = tmp_path / "export.csv.packed"
    packed.write_bytes(compress(plain.read_bytes()))
    expected, report = load_frame(plain)
    frame, packed_report = load_frame(packed)
    pd.testing.assert_frame_equal(frame, expected)
    assert packed_report.rows == report.rows
    dat = headerless(tmp_path, "::")
    packed_dat = tmp_path / "ratings.dat.gz"
    packed_dat.write_bytes(importlib.import_module(module).compress(dat.read_bytes()))
    from recsys.settings import HEADERLESS_COLUMNS

    read = {"columns": HEADERLESS_COLUMNS, "header": False, "delimiter": "::", "date_format": "unix"}
    frame, _ = load_frame(packed_dat, **read)
    assert len(frame) == 4
    pd.testing.assert_frame_equal(frame, load_frame(dat, **read)[0])


def test_a_zip_of_one_export_reads_it_and_other_archives_are_told_what_to_do(write_csv, tmp_path):
    import zipfile

    plain = write_csv(GOOD)
    one = tmp_path / "export.zip"
    with zipfile.ZipFile(one, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(plain, "exports/2022-12.csv")
        archive.writestr("__MACOSX/exports/._2022-12.csv", b"\0\1")  # what macOS adds
    pd.testing.assert_frame_equal(load_frame(one)[0], load_frame(plain)[0])
    several = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(several, "w") as archive:
        for name in ("ml-1m/ratings.dat", "ml-1m/movies.dat", "ml-1m/users.dat"):
            archive.writestr(name, "1::2::3::4\n")
    assert "a zip archive of 3 files (ml-1m/ratings.dat, ml-1m/movies.dat, ml-1m/users.dat): unzip it" in load_error(several)
    workbook = tmp_path / "export.xlsx"
    with zipfile.ZipFile(workbook, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
    assert "an Excel workbook, not a CSV file: save its sheet as CSV" in load_error(workbook)
    cut = tmp_path / "cut.zip"
    cut.write_bytes(one.read_bytes()[:60])
    assert "a zip archive that cannot be read" in load_error(cut)


def test_a_truncated_compressed_csv_is_refused_in_one_line(write_csv, tmp_path):
    import gzip

    rows = [(str(n), "1/30/2021 13:30", f"Experiencia {n % 97}", "5") for n in range(20000)]
    whole = gzip.compress(write_csv(rows).read_bytes())
    for cut in (20, len(whole) // 2):  # within the head the reader sniffs, and past it
        path = tmp_path / f"cut{cut}.csv.gz"
        path.write_bytes(whole[:cut])
        assert "a compressed file that cannot be read" in load_error(path)


def test_a_compressed_latin1_csv_corrupt_past_its_head_is_refused_in_one_line(tmp_path):
    """An 8-bit file is scanned to its end for UTF-8 sequences, so the corruption is met there."""
    import gzip

    lines = ["ID_CLIENTE,FECHA_INTERACCION,NOMBRE_CORTO_DE_EXPERIENCIA,CALIFICACION", "1,1/30/2021 13:30,Café,5"]
    lines += [f"{n},1/30/2021 13:30,Experiencia {n * 7919 % 100003},5" for n in range(60000)]
    whole = gzip.compress("\n".join(lines).encode("latin-1"))
    for name, data in (("cut.csv.gz", whole[: len(whole) * 2 // 3]), ("crc.csv.gz", whole[:-8] + b"\0" * 8)):
        path = tmp_path / name
        path.write_bytes(data)
        assert "a compressed file that cannot be read" in load_error(path)


@pytest.mark.parametrize("name", ["export.csv.gz", "export.csv.bz2"])
def test_a_plain_csv_named_as_compressed_reads_as_plain(write_csv, name):
    frame, _ = load_frame(write_csv(GOOD, name=name))
    pd.testing.assert_frame_equal(frame, load_frame(write_csv(GOOD))[0])


def test_truncated_parquet(tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({name: pa.array([row[i] for row in GOOD]) for i, name in enumerate(HEADER)}), good)
    path = tmp_path / "truncated.parquet"
    path.write_bytes(good.read_bytes()[:40])
    assert "Parquet" in load_error(path)


# --- the real export ------------------------------------------------------------------------------


@pytest.mark.real_data
@needs_real_data
def test_real_export_counts_match_its_readme():
    frame, report = load_frame(REAL_DATA)
    assert report.rows == len(frame) == 10_389
    assert report.duplicate_rows == 5_442
    assert report.users == 2_164
    assert report.items == 204
    assert report.first == "2021-01-04 09:47:00"
    assert report.last == "2022-12-31 23:40:00"
    assert frame["rating"].value_counts().sort_index().tolist() == [349, 48, 135, 1_210, 8_647]


def test_lex_order_matches_numpy_lexsort_packed_or_not():
    import numpy as np

    from recsys.data.interactions import lex_order

    rng = np.random.default_rng(5)
    small = [rng.integers(-50, 50, 5000), rng.integers(0, 3, 5000), rng.integers(0, 10**6, 5000)]
    np.testing.assert_array_equal(lex_order(*small), np.lexsort(small[::-1]))
    # Ranges too wide to pack into one int64: the plain lexsort path, same answer.
    wide = [rng.integers(0, 2**40, 5000), rng.integers(0, 2**40, 5000)]
    np.testing.assert_array_equal(lex_order(*wide), np.lexsort(wide[::-1]))
    assert lex_order(np.zeros(0, dtype=np.int64)).shape == (0,)


# --- dates far outside the export's span, or in the future -----------------------------------------

NOW = pd.Timestamp("2023-03-01 12:00", tz="UTC").to_pydatetime()


def two_years(n: int = 400) -> list[tuple[str, str, str, str]]:
    """``n`` good rows spread evenly over 2021-2022 (customers and items cycling)."""
    start = pd.Timestamp("2021-01-01 10:00")
    step = (pd.Timestamp("2022-12-31 10:00") - start) / (n - 1)
    return [
        (str(i % 37), export_date(start + i * step), f"Item {i % 23}", str(1 + i % 5)) for i in range(n)
    ]


def export_date(ts: pd.Timestamp) -> str:
    return f"{ts.month}/{ts.day}/{ts.year} {ts.hour}:{ts.minute:02d}"


@pytest.mark.parametrize(
    ("date", "why"),
    [
        ("1/1/1900 0:00", "a default date of 1900"),
        ("6/15/2012 10:00", "years before everything else"),
        ("3/5/2023 10:00", "after the run (the future)"),
        ("1/1/2099 0:00", "far in the future"),
    ],
)
def test_a_row_far_outside_the_span_is_set_aside_and_reported(write_csv, date, why):
    rows = two_years()
    rows.insert(150, ("odd", date, "Item 1", "5"))
    interactions, report = load_interactions(write_csv(rows), now=NOW)
    assert len(interactions) == 400, why
    assert "odd" not in interactions.users.tolist()  # a customer known only from that row is no customer
    assert report.rows == 400  # the rows used; the one set aside is counted in set_aside
    assert report.set_aside["rows"] == 1 and report.set_aside["first_line"] == 152
    assert report.first.startswith("2021-01-01") and report.last.startswith("2022-12-31")
    [note] = [note for note in report.notes if "set aside" in note]
    assert "1 row " in note and "line 152" in note, note


def test_rows_inside_a_long_but_continuous_history_are_kept(write_csv):
    """Old rows that are part of the history (a tenth of them, years back) stay: the span is theirs."""
    rows = two_years()
    start = pd.Timestamp("2015-01-01 10:00")
    rows += [(f"old {i}", export_date(start + pd.Timedelta(days=50 * i)), "Item 2", "4") for i in range(44)]
    interactions, report = load_interactions(write_csv(rows), now=NOW)
    assert len(interactions) == len(rows) and report.set_aside is None
    assert not [note for note in report.notes if "set aside" in note]


def test_a_small_export_keeps_its_sparse_last_rows(write_csv):
    """A few rows months apart are an export's own span, not outliers."""
    rows = [("1", "1/5/2021 10:00", "a", "5"), ("2", "3/9/2021 10:00", "b", "4"), ("3", "11/30/2022 10:00", "a", "3")]
    interactions, report = load_interactions(write_csv(rows), now=NOW)
    assert len(interactions) == 3 and report.set_aside is None


def test_several_rows_set_aside_are_counted_and_the_first_is_named(write_csv):
    rows = two_years()
    rows[10] = ("1", "1/1/1900 0:00", "Item 3", "5")
    rows[20] = ("2", "12/31/2199 23:59", "Item 4", "5")
    rows[30] = ("3", "1/1/1900 0:00", "Item 5", "5")
    interactions, report = load_interactions(write_csv(rows), now=NOW)
    assert len(interactions) == 397
    assert report.set_aside["rows"] == 3 and report.set_aside["first_line"] == 12
    assert report.set_aside["first_date"] == "1900-01-01 00:00:00"


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_customers_and_items_only_in_rows_set_aside_are_not_counted(write_csv, tmp_path, kind):
    """The report counts what the run uses: a customer or an item seen only in a row set aside is
    neither in the vocabularies nor in the report's counts, and the rows are the rows kept (the
    CSV reader's dictionaries keep every value of the filtered rows: they must not be counted)."""
    rows = two_years()
    kept_users, kept_items = len({row[0] for row in rows}), len({row[2] for row in rows})
    rows += [
        ("1", "1/1/1900 10:00", "Only in 1900", "5"),  # a known customer, a new item
        ("2", "6/1/2099 10:00", "Only in 2099", "4"),
        ("777777", "6/1/2099 10:00", "Item 1", "5"),  # a new customer, a known item
    ]
    if kind == "csv":
        path = write_csv(rows)
    else:
        path = tmp_path / "export.parquet"
        columns = list(zip(*rows))
        names = ["ID_CLIENTE", "FECHA_INTERACCION", "NOMBRE_CORTO_DE_EXPERIENCIA", "CALIFICACION"]
        pq.write_table(pa.table({name: list(values) for name, values in zip(names, columns)}), path)
    interactions, report = load_interactions(path, now=NOW)
    assert report.set_aside["rows"] == 3
    assert (interactions.n_users, interactions.n_items, len(interactions)) == (kept_users, kept_items, 400)
    assert (report.users, report.items, report.rows) == (kept_users, kept_items, 400)
    assert "777777" not in interactions.users.tolist()
    assert not {"Only in 1900", "Only in 2099"} & set(interactions.items.tolist())


def test_an_export_dated_entirely_in_the_future_is_refused_with_the_line(write_csv):
    rows = [("1", "1/5/2031 10:00", "a", "5"), ("2", "1/6/2031 10:00", "b", "4")]
    with pytest.raises(DataError, match=r"line 2, column FECHA_INTERACCION: every row is dated after"):
        load_interactions(write_csv(rows), now=NOW)


def test_the_date_check_keeps_memory_small_on_many_rows(tmp_path):
    """The check works on whole days (bincount), so a million rows with one 1900 row is quick."""
    n = 1_000_000
    rng = np.random.default_rng(0)
    seconds = pd.Timestamp("2021-01-01").value // 10**9 + rng.integers(0, 730 * 86400, n)
    seconds[123_456] = pd.Timestamp("1900-01-01").value // 10**9
    table = pa.table(
        {
            "ID_CLIENTE": pa.array((np.arange(n) % 5000).astype(str)),
            "FECHA_INTERACCION": pa.array(seconds * 10**9, pa.timestamp("ns")),
            "NOMBRE_CORTO_DE_EXPERIENCIA": pa.array(np.char.add("item ", (np.arange(n) % 300).astype(str))),
            "CALIFICACION": pa.array(np.full(n, 4, dtype=np.int64)),
        }
    )
    pq.write_table(table, tmp_path / "big.parquet")
    interactions, report = load_interactions(tmp_path / "big.parquet", now=NOW)
    assert len(interactions) == n - 1 and report.set_aside["first_line"] == 123_457  # a Parquet row counted from 1


def test_a_no_date_sentinel_of_year_9999_is_set_aside_not_a_crash(write_csv):
    rows = two_years()
    rows.append(("1", "12/31/9999 23:59", "Item 1", "5"))
    interactions, report = load_interactions(write_csv(rows), now=NOW)
    assert len(interactions) == 400 and report.set_aside["first_date"] == "9999-12-31 23:59:00"
