"""The catalogue, the config file, the rules at the final cut of every list, and the reasons."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import options_app
from recsys.config import read_config
from recsys.data.catalogue import read_catalogue
from recsys.data.export import load_interactions
from recsys.errors import DataError, OptionError
from recsys.scoring.reasons import BECAUSE, FIXED
from recsys.scoring.rules import item_rules
from recsys.settings import RunOptions

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "interactions_sample.csv"
CATALOGUE = ROOT / "data" / "catalogue_sample.csv"
CONFIG = ROOT / "data" / "config_sample.toml"
REAL = ROOT.parent / "shared" / "data" / "valoraciones_usuarios_2021_2022.csv"
DAY = "2022-12-31"  # the day the sample catalogue's dates are read against (the sample's last day)


@pytest.fixture(autouse=True)
def no_db_url_env(monkeypatch):
    monkeypatch.delenv("RECSYS_DB_URL", raising=False)


# --- the config file ------------------------------------------------------------------------------


def test_sample_config_reads_every_rule():
    config = read_config(CONFIG)
    assert config.run["data"] == "data/interactions_sample.csv" and config.run["top_k"] == 12
    assert config.rules.blocklist == ("Bono Jumbo 100",) and config.rules.max_per_family == 2
    assert config.rules.exclude_seen_families is True
    assert [(pin.item, pin.rank) for pin in config.rules.pins] == [("Cena show para dos", 3)]
    assert len(config.sha256) == 64


@pytest.mark.parametrize(
    "text, message",
    [
        ("[run]\ntop_kk = 3\n", "[run] top_kk: unknown option"),
        ("[run]\ntop-k = 'twelve'\n", '[run] top-k: must be a whole number, not "twelve"'),
        ("[run]\nevaluate = 1\n", "[run] evaluate: must be true or false, not 1"),
        ("[run]\ntop-k = 0\n", "[run] top-k: must be at least 1, not 0"),
        ("[run]\ndata = 2022-12-31\n", '[run] data: must be a path in quotes, not 2022-12-31: write it as a string, "2022-12-31"'),
        ("[run]\nrun-date = '2022-13-01'\n", "[run] run-date: must be a day as YYYY-MM-DD, not '2022-13-01'"),
        ("[rules]\nblock = ['a']\n", "[rules] block: unknown key"),
        ("[rules]\nmax_per_family = 0\n", "[rules] max_per_family: must be a whole number"),
        ("[rules]\nexclude_seen_families = 'yes'\n", "[rules] exclude_seen_families: must be true or false"),
        ("[[rules.pin]]\nitem = 'a'\n", "[[rules.pin]] #1 rank: must be a whole number"),
        ("[[rules.pin]]\nitem = 'a'\nrank = 1\nwhen = 2\n", "[[rules.pin]] #1 when: unknown key"),
        ("[other]\n", "unknown section [other]"),
        ("[run\n", "not valid TOML"),
    ],
)
def test_config_mistakes_are_one_line_naming_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(OptionError) as raised:
        read_config(path)
    assert str(raised.value).startswith(f"{path}: ") and message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_command_line_options_override_the_config_file(tmp_path, monkeypatch):
    config = tmp_path / "run.toml"
    config.write_text('[run]\ntop-k = 5\ncandidates = 30\noutput = "from-file"\n')
    app, seen = options_app()
    result = CliRunner().invoke(app, ["show", "--config", str(config), "--top-k", "7"])
    assert result.exit_code == 0, result.output
    options = seen["options"]
    assert options.top_k == 7  # the command line wins
    assert options.candidates == 30 and options.output == Path("from-file")  # the file fills the rest
    assert options.config == config
    monkeypatch.setenv("RECSYS_DB_URL", "sqlite:////tmp/from-env.db")
    bad = tmp_path / "bad.toml"
    bad.write_text("[run]\nnope = 1\n")
    result = CliRunner().invoke(app, ["show", "--config", str(bad)])
    assert result.exit_code == 1 and f"{bad}: [run] nope: unknown option" in result.output


# --- the catalogue ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, where",
    [
        ("name,boost\na,1\n", "line 1: missing column 'item'"),
        ("item,valid_to\na,2024-13-01\n", "line 2, column valid_to: '2024-13-01' is not a date"),
        ("item,boost\na,1\nb,-0.5\n", "line 3, column boost: '-0.5' is not a number of at least 0"),
        ("item,family\na,x\n b ,y\n a,z\n", "line 4, column item: duplicate item 'a' (first on line 2)"),
        ("item,active\na,maybe\n", "line 2, column active: 'maybe' is not true or false"),
        ("item,valid_from,valid_to\na,2024-02-01,2024-01-01\n", "line 2, column valid_to"),
        ("item,colour\na,red\n", "line 1, column colour: unknown column"),
        ("item,item\nA,B\n", "line 1, column item: named 2 times in the header"),
        ("item,Family,family\nA,x,y\n", "line 1, column family: named 2 times in the header"),
        # date.fromisoformat reads these too, but the format is YYYY-MM-DD.
        ("item,valid_from\na,2022-W01-1\n", "line 2, column valid_from: '2022-W01-1' is not a date YYYY-MM-DD"),
        ("item,valid_to\na,2022-005\n", "line 2, column valid_to: '2022-005' is not a date YYYY-MM-DD"),
        ("item,valid_to\na,20220105\n", "line 2, column valid_to: '20220105' is not a date YYYY-MM-DD"),
        # Lines the rules would both match to the same export item.
        (
            "item,boost\nPlanetario de Bogotá,1\nplanetario de bogotá,2\n",
            "line 3, column item: duplicate item 'planetario de bogotá': the same item as 'Planetario de Bogotá' "
            "on line 2, but for letter case or Unicode form",
        ),
        (
            "item\nCurso de repostería\nCurso de reposteri\u0301a\n",
            "line 3, column item: duplicate item 'Curso de reposteri\\u0301a': the same item as "
            "'Curso de repostería' on line 2",
        ),
        ("name;boost\na;1\n", "line 1: missing column 'item' (found: name;boost; the columns look separated by semicolons"),
    ],
)
def test_catalogue_mistakes_name_file_line_and_column(tmp_path, text, where):
    path = tmp_path / "catalogue.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as raised:
        read_catalogue(path)
    assert str(raised.value).startswith(f"{path}: {where}")
    assert "\n" not in str(raised.value)


def test_catalogue_reads_8_bit_text_and_excel_separators_as_the_export_is_read(tmp_path):
    """An 8-bit catalogue (Excel on Windows) reads as Windows-1252 like an 8-bit export; a catalogue
    saved by Excel in a Spanish locale (semicolons), or as tab-separated text, reads by its header's
    separator; each is noted."""
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("item,active\nPlanetario de Bogotá,false\nCafé “30”,true\n".encode("cp1252"))
    catalogue = read_catalogue(latin)
    assert catalogue.items == ("Planetario de Bogotá", "Café “30”") and catalogue.active == (False, True)
    assert catalogue.notes == (f"catalogue {latin} is not UTF-8: read as Windows-1252 (8-bit)",)
    semicolons = tmp_path / "semicolons.csv"
    semicolons.write_bytes("\ufeffitem;family;active\r\nPlanetario de Bogotá, norte;;false\r\n".encode("utf-8"))
    catalogue = read_catalogue(semicolons)
    assert catalogue.items == ("Planetario de Bogotá, norte",) and catalogue.active == (False,)
    assert catalogue.notes == (f"catalogue {semicolons}: columns separated by semicolons, not commas: read so",)
    tabs = tmp_path / "tabs.csv"
    tabs.write_text("item\tboost\nClase de buceo\t2\n", encoding="utf-8")
    assert read_catalogue(tabs).boost == (2.0,)
    assert read_catalogue(CATALOGUE).notes == ()


def test_catalogue_reads_defaults_and_parquet_alike(tmp_path):
    csv_catalogue = read_catalogue(CATALOGUE)
    frame = pd.read_csv(CATALOGUE, dtype=str, keep_default_na=False)
    frame.to_parquet(tmp_path / "catalogue.parquet")
    assert read_catalogue(tmp_path / "catalogue.parquet").items == csv_catalogue.items
    path = tmp_path / "small.csv"
    path.write_text("item\n  Planetario de Bogotá  \n")
    small = read_catalogue(path)
    assert small.items == ("Planetario de Bogotá",) and small.active == (True,) and small.boost == (1.0,)
    assert small.family == (None,) and small.valid_from == (None,)


def test_names_differing_only_by_case_or_unicode_form_are_applied_and_noted():
    """A catalogue, blocklist or pin name that matches no export item exactly applies to every item
    whose name is the same but for letter case and Unicode form (never accents: "Café" is not
    "Cafe"), and a note says so; an exact match applies to itself alone; a pin that would match
    several items is not placed; a name matching nothing shows its combining marks escaped."""
    import unicodedata
    from datetime import date

    from conftest import interactions_of
    from recsys.config import Pin, Rules
    from recsys.data.catalogue import Catalogue

    names = [
        "Cena show para dos", "Curso de repostería", "Bono Jumbo 100", "Cafe 30 ifood", "Cafe 30 IFood",
        "Café 30 ifood", "Metro 50", "metro 50", "Tour nuevo Guatavita",
    ]
    frame = pd.DataFrame({
        "user_id": [str(user) for user in range(len(names))], "item": names,
        "timestamp": pd.to_datetime(["2022-01-01"] * len(names)), "rating": [5] * len(names),
    })
    data = interactions_of(frame)
    nfd = unicodedata.normalize("NFD", "Curso de repostería")
    absent = unicodedata.normalize("NFD", "Clase de equitación")
    rows = ["cena show para dos", nfd, absent]
    catalogue = Catalogue(
        path="catalogue.csv", items=tuple(rows), family=(None,) * 3, active=(False,) * 3,
        valid_from=(None,) * 3, valid_to=(None,) * 3, boost=(1.0,) * 3,
    )
    rules = Rules(
        blocklist=("bono jumbo 100", "cafe 30 ifood", "Metro 50"),
        pins=(Pin("tour nuevo guatavita", 1), Pin("CAFE 30 IFOOD", 2)),
    )
    setup = item_rules(data, catalogue, rules, date(2022, 12, 31), 12)
    removed = {str(name): int(setup.rules.removed[code]) for code, name in enumerate(data.items)}
    assert removed == {
        "Cena show para dos": 2, "Curso de repostería": 2, "Bono Jumbo 100": 1, "Cafe 30 ifood": 1, "Cafe 30 IFood": 1,
        "Café 30 ifood": 0, "Metro 50": 1, "metro 50": 0, "Tour nuevo Guatavita": 0,
    }
    assert [str(data.items[code]) for code in setup.rules.pins] == ["Tour nuevo Guatavita"]
    assert setup.unseen == (absent,)
    notes = set(setup.notes)
    assert "catalogue 'cena show para dos' applied to 'Cena show para dos' (case)" in notes
    assert "catalogue 'Curso de reposteri\\u0301a' applied to 'Curso de repostería' (Unicode form)" in notes
    assert "1 catalogue items never seen in the export: 'Clase de equitacio\\u0301n'" in notes
    assert "blocklist 'bono jumbo 100' applied to 'Bono Jumbo 100' (case)" in notes
    assert "blocklist 'cafe 30 ifood' applied to 'Cafe 30 IFood' (case), 'Cafe 30 ifood' (case)" in notes
    assert "blocklist 'Metro 50' applied to that item only; the export also has 'metro 50' (case)" in notes
    assert "pin 'tour nuevo guatavita' applied to 'Tour nuevo Guatavita' (case)" in notes
    assert (
        "pinned item 'CAFE 30 IFOOD' matches 2 export items that differ from it only in case or Unicode form "
        "('Cafe 30 IFood', 'Cafe 30 ifood'): not placed (a pin places one item: write its name exactly as the export does)"
    ) in notes


@pytest.mark.slow
def test_a_run_applies_names_written_in_another_case_and_bad_catalogues_leave_its_store_unchanged(
    prefect_test_harness, tmp_path
):
    """The business-user probe's catalogue and blocklist, on the sample: "cena show para dos",
    a decomposed "Curso de repostería" and "bono jumbo 100" are in no published list, and the
    summary says what each was applied to. Then each bad catalogue fails the next run with one line
    naming file, line and column, and the published store is as it was."""
    import unicodedata

    from flows.nightly import nightly

    catalogue = tmp_path / "catalogue.csv"
    nfd = unicodedata.normalize("NFD", "Curso de repostería")
    catalogue.write_text(f"item,family,active\ncena show para dos,,false\n{nfd},,false\n", encoding="utf-8")
    config = tmp_path / "rules.toml"
    config.write_text('[rules]\nblocklist = ["bono jumbo 100"]\n', encoding="utf-8")
    output = tmp_path / "out"
    options = dict(data=SAMPLE, output=output, config=config, run_date=DAY, evaluate=False, epochs=1, ranking_epochs=1)
    summary = nightly(RunOptions(catalogue=catalogue, **options))
    table = pq.read_table(output / "recommendations.parquet").to_pandas()
    assert not table["item"].isin(["Cena show para dos", "Curso de repostería", "Bono Jumbo 100"]).any()
    assert len(table) == 12 * table["user_id"].nunique()
    assert "catalogue 'cena show para dos' applied to 'Cena show para dos' (case)" in summary["notes"]
    assert "catalogue 'Curso de reposteri\\u0301a' applied to 'Curso de repostería' (Unicode form)" in summary["notes"]
    assert "blocklist 'bono jumbo 100' applied to 'Bono Jumbo 100' (case)" in summary["notes"]
    assert summary["unseen_catalogue_items"] == []
    published = (output / "recommendations.parquet").read_bytes()
    with sqlite3.connect(output / "recsys.db") as conn:
        runs = conn.execute("SELECT run_id, status FROM runs ORDER BY run_id").fetchall()
    bad = {
        "dupcase.csv": ("item,active\nPlanetario de Bogotá,true\nplanetario de bogotá,false\n", "line 3, column item"),
        "dupcol.csv": ("item,item\nA,B\n", "line 1, column item"),
        "weekdate.csv": ("item,valid_from\nPlanetario de Bogotá,2022-W01-1\n", "line 2, column valid_from"),
    }
    for name, (text, where) in bad.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        with pytest.raises(DataError) as raised:
            nightly(RunOptions(catalogue=path, **options))
        assert str(raised.value).startswith(f"{path}: {where}: ") and "\n" not in str(raised.value)
    assert (output / "recommendations.parquet").read_bytes() == published
    with sqlite3.connect(output / "recsys.db") as conn:
        assert conn.execute("SELECT run_id, status FROM runs ORDER BY run_id").fetchall() == runs


def test_a_bad_catalogue_fails_the_run_and_leaves_the_store_untouched(prefect_test_harness, tmp_path):
    from flows.nightly import nightly

    bad = tmp_path / "catalogue.csv"
    bad.write_text("item,boost\nPlanetario de Bogotá,-1\n")
    output = tmp_path / "out"
    with pytest.raises(DataError, match=r"catalogue.csv: line 2, column boost"):
        nightly(RunOptions(data=SAMPLE, output=output, catalogue=bad, evaluate=False))
    assert not (output / "recsys.db").exists() and not (output / "recommendations.parquet").exists()


# --- the rules on lists (every path) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sample():
    data, _ = load_interactions(SAMPLE)
    config = read_config(CONFIG)
    setup = item_rules(data, read_catalogue(CATALOGUE), config.rules, pd.Timestamp(DAY).date(), 12)
    return data, setup


def check_obeys(data, rules_setup, items: np.ndarray, reasons: np.ndarray | None, rows=None, k: int = 12) -> None:
    """Every rule holds on the lists ``items`` (customer codes ``rows``, default all)."""
    from recsys.scoring.reasons import CAMPAIGN

    rules = rules_setup.rules
    rows = np.arange(data.n_users) if rows is None else rows
    filled = items >= 0
    assert filled.all(), "every list is k long"
    assert items.shape[1] == k
    assert rules.allowed[items].all(), "no blocklisted, inactive or expired item"
    seen = data.seen()[rows]
    assert not (np.asarray(seen[np.arange(len(rows))[:, None], items].todense()) > 0).any(), "nothing already had"
    family = rules.family[items]
    ordered = np.sort(family, axis=1)
    runs = (ordered[:, rules.max_per_family :] == ordered[:, : -rules.max_per_family]).any(axis=1)
    assert not runs.any(), f"at most {rules.max_per_family} of one family"
    user_families = seen @ np.eye(len(rules.families))[rules.family]
    assert not (np.take_along_axis(user_families, family, axis=1) > 0).any(), "no family the customer had"
    for pin, rank in zip(rules.pins, rules.pin_ranks):
        had = np.asarray(seen[:, pin].todense()).ravel() > 0
        assert (items[~had, rank] == pin).all(), "the pin at its rank for everyone who has not had it"
        if reasons is not None:
            assert (reasons[~had, rank] == CAMPAIGN).all()
    if reasons is not None:
        assert ((reasons >= 0) & (reasons < len(FIXED) + data.n_items)).all()


@pytest.mark.parametrize("baseline", ["popularity", "rp3beta"])
def test_the_degraded_path_obeys_the_rules(sample, baseline):
    from flows.nightly import baseline_lists

    data, setup = sample
    removed = {}
    options = RunOptions(data=SAMPLE, run_date=DAY)
    lists = baseline_lists.fn(data, baseline, options, None, None, setup.rules, removed)
    check_obeys(data, setup, lists.items, lists.reasons)
    assert removed["blocklist"] > 0 and removed["inactive"] > 0 and removed["expired"] > 0
    assert removed["seen_family"] > 0
    if baseline == "popularity":  # a non-personal list owes nothing to anyone's history
        assert not (lists.reasons >= len(FIXED)).any()
    else:
        assert (lists.reasons >= len(FIXED)).any()


def test_the_cold_start_list_obeys_the_rules(sample):
    from flows.nightly import cold_start
    from recsys.scoring.reasons import CAMPAIGN, POPULAR

    data, setup = sample
    codes, scores, reasons = cold_start(data, RunOptions(run_date=DAY), setup.rules)
    assert len(codes) == 12 and setup.rules.allowed[codes].all()
    assert codes[2] == setup.rules.pins[0] and reasons[2] == CAMPAIGN
    assert np.bincount(setup.rules.family[codes]).max() <= 2
    assert set(reasons) <= {POPULAR, CAMPAIGN, 1}
    assert (np.diff(scores) <= 0).all()


@pytest.mark.parametrize("cells", [None, 50])
def test_reasons_name_the_past_item_most_similar_to_each_recommended_one(sample, monkeypatch, cells):
    """The rule, checked one customer at a time; ``cells``: a budget small enough that the
    customers are taken a few at a time (a block of a million lists is, at the default budget)."""
    import recsys.scoring.reasons
    from recsys.models.context import cooccurrence_similarity
    from recsys.scoring.reasons import HISTORY, POPULAR, reason_codes

    if cells:
        monkeypatch.setattr(recsys.scoring.reasons, "SIMILARITY_CELLS", cells)
    data, _ = sample
    similarity = cooccurrence_similarity(data.seen())
    rows = np.arange(300)
    rng = np.random.default_rng(0)
    items = rng.integers(0, data.n_items, size=(len(rows), 12))
    seen = data.seen()[rows]
    codes = reason_codes(items, seen, similarity)
    dense = similarity.toarray()
    for row in range(len(rows)):  # the slow, obvious rule, one customer at a time
        history = seen[row].indices
        for slot, item in enumerate(items[row]):
            values = dense[history, item] if len(history) else np.zeros(0)
            if len(values) and values.max() > 0:
                assert codes[row, slot] == HISTORY + np.sort(history)[np.argmax(values[np.argsort(history)])]
            else:
                assert codes[row, slot] == POPULAR


def test_a_catalogue_item_new_in_the_last_30_days_says_so(sample):
    from recsys.scoring.reasons import NEW

    data, setup = sample
    assert setup.rules.new[data.item_codes(["Meditación guiada"])[0]]
    assert setup.unseen == ("Experiencia de temporada 2019",)
    assert NEW == FIXED.index("new in the catalogue")


# --- the whole run on the sample, with the sample catalogue and config ------------------------------


@pytest.fixture(scope="module")
def ruled_run(prefect_test_harness, tmp_path_factory):
    from flows.nightly import nightly

    output = tmp_path_factory.mktemp("rules") / "out"
    config = read_config(CONFIG)
    options = RunOptions(
        data=SAMPLE, output=output, catalogue=CATALOGUE, config=CONFIG, run_date=DAY, epochs=1, ranking_epochs=1,
        **{name: value for name, value in config.run.items() if name not in ("data", "output", "catalogue")},
    )
    return nightly(options), output


@pytest.mark.slow
def test_the_published_lists_obey_every_rule_and_carry_reasons(ruled_run, sample):
    summary, output = ruled_run
    data, setup = sample
    table = pq.read_table(output / "recommendations.parquet").to_pandas()
    assert (table["reason"].str.len() > 0).all()
    assert set(table["reason"]) <= set(FIXED) | {BECAUSE + str(item) for item in data.items}
    table = table.sort_values(["user_id", "rank"])
    codes = data.user_codes(table["user_id"].unique())
    items = data.item_codes(table["item"].to_numpy()).reshape(-1, 12)
    reasons = table["reason"].map({text: code for code, text in enumerate(FIXED)}).fillna(99).to_numpy().reshape(-1, 12)
    check_obeys(data, setup, items, reasons, rows=codes)
    assert len(codes) == data.n_users
    with sqlite3.connect(output / "recsys.db") as conn:
        assert conn.execute("SELECT count(*) FROM recommendations WHERE reason = ''").fetchone() == (0,)
        popular = conn.execute("SELECT item, reason FROM popular_items ORDER BY rank").fetchall()
        metrics = json.loads(conn.execute("SELECT metrics FROM runs WHERE is_current").fetchone()[0])
    assert len(popular) == 12 and popular[2] == ("Cena show para dos", "campaign")
    rules = metrics["rules"]
    assert set(rules) == {"config", "config_sha256", "removed", "pins_placed", "ndcg_with_rules", "ndcg_without_rules", "notes"}
    assert rules["notes"] == []  # one pin: within max_per_family
    assert rules["config"] == CONFIG.read_text() and rules["config_sha256"] == read_config(CONFIG).sha256
    assert set(rules["removed"]) == {"blocklist", "inactive", "expired", "family_cap", "seen_family"}
    assert rules["removed"]["blocklist"] > 0 and rules["pins_placed"] == int((reasons == 2).sum()) > 0
    for key in ("ndcg_with_rules", "ndcg_without_rules"):
        mean, low, high = rules[key]
        assert 0 <= low <= mean <= high <= 1
    assert metrics["catalogue"]["unseen"] == ["Experiencia de temporada 2019"]
    assert summary["unseen_catalogue_items"] == ["Experiencia de temporada 2019"]


@pytest.mark.slow
def test_lookup_shows_the_reason(ruled_run):
    from recsys.cli.app import app

    _, output = ruled_run
    table = pq.read_table(output / "recommendations.parquet").to_pandas()
    user = str(table["user_id"].iloc[0])
    expected = table[table["user_id"] == user].sort_values("rank")["reason"].tolist()
    result = CliRunner().invoke(app, ["lookup", user, "--output", str(output), "--json"])
    assert result.exit_code == 0, result.output
    assert [row["reason"] for row in json.loads(result.output)["recommendations"]] == expected
    result = CliRunner().invoke(app, ["lookup", user, "--output", str(output)])
    assert "reason" in result.output.splitlines()[1] and expected[0] in result.output
    cold = json.loads(CliRunner().invoke(app, ["lookup", "nobody at all", "--output", str(output), "--json"]).output)
    assert cold["cold_start"] and cold["recommendations"][2]["reason"] == "campaign"


def test_families_prints_the_name_rule_families():
    from recsys.cli.app import app

    result = CliRunner().invoke(app, ["families", "--data", str(SAMPLE), "--json"])
    assert result.exit_code == 0, result.output
    families = {row["family"]: row["names"] for row in json.loads(result.output)}
    oma = families["bono restaurante oma"]
    assert len(oma) >= 2 and all(name.startswith("Bono restaurante Oma ") for name in oma)


def test_families_reads_the_export_format_from_the_nightly_config(tmp_path):
    """An export of another format, described once in the nightly job's config file: `recsys
    families` (like `recsys evaluate`) reads it by --config alone, and ignores the [rules]."""
    from recsys.cli.app import app

    export = tmp_path / "export.txt"
    export.write_text(
        "shopper|when|what|stars\n"
        "a|2024-01-02|Bono Oma 10|5\nb|2024-01-03|Bono Oma 20|4\nb|2024-01-04|Cine 2D|3\n"
    )
    config = tmp_path / "nightly.toml"
    config.write_text(
        f'[run]\ndata = "{export}"\ndelimiter = "|"\nuser-column = "shopper"\ntime-column = "when"\n'
        'item-column = "what"\nrating-column = "stars"\ndate-format = "%Y-%m-%d"\noutput = "elsewhere"\n'
        '[rules]\nblocklist = ["Cine 2D"]\n'
    )
    result = CliRunner().invoke(app, ["families", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    families = {row["family"]: sorted(row["names"]) for row in json.loads(result.output)}
    assert families == {"bono oma": ["Bono Oma 10", "Bono Oma 20"], "cine 2d": ["Cine 2D"]}
    # The config's catalogue is read too: its family column overrides the name rule.
    catalogue = tmp_path / "catalogue.csv"
    catalogue.write_text("item,family\nCine 2D,bono oma\n")
    config.write_text(config.read_text().replace("[rules]", f'catalogue = "{catalogue}"\n[rules]'))
    result = CliRunner().invoke(app, ["families", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    families = {row["family"]: sorted(row["names"]) for row in json.loads(result.output)}
    assert families == {"bono oma": ["Bono Oma 10", "Bono Oma 20", "Cine 2D"]}
    # Without the file the same export is refused, saying which option reads it.
    result = CliRunner().invoke(app, ["families", "--data", str(export)])
    assert result.exit_code == 1 and "--delimiter '|'" in result.output


# --- the rules at their edges -----------------------------------------------------------------------


def hand_rules(n: int, boost=None, family=None, pins=(), max_per_family=None):
    """Rules over ``n`` item codes built by hand: every item recommendable; ``pins``: (item, rank)."""
    from recsys.scoring.rules import ItemRules

    family = np.arange(n) if family is None else np.asarray(family)
    return ItemRules(
        removed=np.zeros(n, dtype=np.int8), boost=np.ones(n) if boost is None else np.asarray(boost, dtype=np.float64),
        family=family.astype(np.int32), families=np.array([f"f{f}" for f in range(int(family.max()) + 1)], dtype=object),
        max_per_family=max_per_family, exclude_seen_families=False,
        pins=np.array([item for item, _ in pins], dtype=np.int64), pin_ranks=np.array([rank - 1 for _, rank in pins], dtype=np.int64),
        new=np.zeros(n, dtype=bool),
    )


def test_a_boost_of_0_sends_an_item_below_every_other_even_negative_scores_and_the_fill():
    """The listwise ranker gives negative scores: an item boosted to 0 still comes after all of
    them, and after the fill; boosts above and below 1 keep their meaning; the scores stay plain
    numbers, non-increasing."""
    import scipy.sparse as sp

    from recsys.scoring.rules import apply_rules

    rules = hand_rules(8, boost=[1, 1, 0, 1, 1, 2, 0.5, 1])
    items = np.array([[2, 0, 1, 3, 4, 5, 6]])
    scores = np.array([[3.0, 1.0, 0.5, -0.2, -0.4, -0.6, -0.1]])
    fill, fill_scores = np.array([2, 7, 0, 1]), np.array([9.0, 5.0, 4.0, 3.0])  # the fill holds it too
    cut = apply_rules(rules, items, scores, 8, sp.csr_matrix((1, 8)), fill, fill_scores)
    # 5 (-0.6, boost 2) -> -0.3 rises above 4 (-0.4); 6 (-0.1, boost 0.5) -> -0.2 falls to 3's level.
    assert cut.items[0].tolist() == [0, 1, 3, 6, 5, 4, 7, 2]
    assert np.isfinite(cut.scores).all() and (np.diff(cut.scores[0]) <= 0).all()
    assert cut.scores[0].tolist() == pytest.approx([1.0, 0.5, -0.2, -0.2, -0.3, -0.4, -0.4, -0.4])
    # With room for only the others, the item boosted to 0 is not shown at all.
    cut = apply_rules(rules, items, scores, 7, sp.csr_matrix((1, 8)), fill, fill_scores)
    assert 2 not in cut.items[0]
    # Above positive scores it scores 0 (times its boost), after every other item.
    cut = apply_rules(rules, np.array([[2, 0, 1]]), np.array([[3.0, 1.0, 0.5]]), 3, sp.csr_matrix((1, 8)), fill[:0], fill_scores[:0])
    assert cut.items[0].tolist() == [0, 1, 2] and cut.scores[0].tolist() == [1.0, 0.5, 0.0]


def test_a_boost_of_0_puts_the_item_last_in_the_cold_start_list(tmp_path):
    """The cold-start list (and the fill order): the most popular item, boosted to 0, comes after
    the items nobody took lately."""
    from conftest import interactions_of
    from flows.nightly import cold_start
    from recsys.scoring.rules import fill_order

    end = pd.Timestamp("2022-12-31")
    rows = [(f"u{u}", "a", end - pd.Timedelta(days=u), 5) for u in range(6)]
    rows += [(f"v{u}", "b", end - pd.Timedelta(days=u), 5) for u in range(3)]
    rows += [(f"w{u}", name, end - pd.Timedelta(days=400), 5) for u, name in enumerate("cde")]  # not lately
    data = interactions_of(pd.DataFrame(rows, columns=["user_id", "item", "timestamp", "rating"]))
    catalogue = tmp_path / "catalogue.csv"
    catalogue.write_text("item,boost\na,0\n")
    rules = item_rules(data, read_catalogue(catalogue), None, end.date(), 5).rules
    options = RunOptions(run_date="2022-12-31", top_k=5)
    codes, scores, _ = cold_start(data, options, rules)
    assert [str(data.items[code]) for code in codes] == ["b", "c", "d", "e", "a"]
    assert np.isfinite(scores).all() and (np.diff(scores) <= 0).all() and scores[-1] == 0.0
    fill, _ = fill_order(rules, data, options.cold_start_days)
    assert str(data.items[fill[-1]]) == "a"


def test_pins_win_over_max_per_family_and_the_notes_say_in_how_many_lists(sample):
    """Two pins of one family under max_per_family = 1: both are placed (a campaign is explicit),
    the family gets no other item, every other family keeps the cap, and one note counts the
    lists over it."""
    from flows.nightly import baseline_lists
    from recsys.config import Pin, Rules
    from recsys.scoring.reasons import CAMPAIGN
    from recsys.scoring.rules import pin_cap_notes

    data, _ = sample
    pinned = ("Bono mercado Colsubsidio 30", "Bono mercado Makro 30")  # one family in the sample catalogue
    rules = Rules(max_per_family=1, pins=(Pin(pinned[0], 1), Pin(pinned[1], 2)))
    setup = item_rules(data, read_catalogue(CATALOGUE), rules, pd.Timestamp(DAY).date(), 12)
    lists = baseline_lists.fn(data, "popularity", RunOptions(data=SAMPLE, run_date=DAY), None, None, setup.rules, {})
    codes = data.item_codes(list(pinned))
    both = (lists.items[:, 0] == codes[0]) & (lists.items[:, 1] == codes[1])
    assert both.sum() > data.n_users // 2 and (lists.reasons[both, :2] == CAMPAIGN).all()
    family = setup.rules.family[lists.items]
    mercado = setup.rules.family[codes[0]]
    assert not (family[both, 2:] == mercado).any(), "the pins' family gets no other item"
    others = np.where(family == mercado, -1 - np.arange(12), family)  # every other family at most once
    assert (np.sort(others, axis=1)[:, 1:] != np.sort(others, axis=1)[:, :-1]).all()
    notes = pin_cap_notes(setup.rules, lists, data.items)
    assert notes == [
        f"2 pins of family 'Bono mercado' ('{pinned[0]}', '{pinned[1]}') exceed max_per_family = 1 in "
        f"{int(both.sum()):,} lists: pins win over the cap"
    ]
    # One pin per family is within the cap: no note.
    one = item_rules(data, read_catalogue(CATALOGUE), Rules(max_per_family=1, pins=(Pin(pinned[0], 1),)), pd.Timestamp(DAY).date(), 12)
    assert pin_cap_notes(one.rules, lists, data.items) == []


def test_a_pin_beyond_a_shorter_list_moves_up_to_its_end():
    """A list the rules keep shorter than a pin's rank has no empty ranks: the pin at rank 8 of a
    list of 6 is its 6th item (the README says so)."""
    import scipy.sparse as sp

    from recsys.scoring.rules import apply_rules

    rules = hand_rules(6, pins=[(5, 8)])
    cut = apply_rules(rules, np.array([[0, 1, 2, 3, 4]]), np.array([[5.0, 4.0, 3.0, 2.0, 1.0]]), 8, sp.csr_matrix((1, 6)), np.zeros(0, np.int64), np.zeros(0))
    assert cut.items[0].tolist() == [0, 1, 2, 3, 4, 5, -1, -1]
    assert cut.pinned[0].tolist() == [False] * 5 + [True, False, False]
    assert cut.scores[0, 5] == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("case", ["8 active items", "3 families, 1 each, 2 pins of one"])
def test_a_catalogue_or_rules_leaving_fewer_items_than_top_k_still_publish(prefect_test_harness, synthetic, tmp_path, case):
    """Fewer recommendable items than --top-k (or a strict max_per_family over few families) is
    not a failed health check: the run publishes lists as long as the rules allow."""
    from conftest import GROUP_A_NAMES, GROUP_B_NAMES, run_flow

    names = GROUP_A_NAMES + GROUP_B_NAMES
    catalogue, config = tmp_path / "catalogue.csv", None
    if case == "8 active items":
        catalogue.write_text("item,active\n" + "".join(f"{name},false\n" for name in names[8:]))
        room = 8
    else:
        catalogue.write_text("item,family\n" + "".join(f"{name},f{i % 3}\n" for i, name in enumerate(names)))
        config = tmp_path / "rules.toml"
        config.write_text(
            f'[rules]\nmax_per_family = 1\n[[rules.pin]]\nitem = "{names[0]}"\nrank = 1\n'
            f'[[rules.pin]]\nitem = "{names[3]}"\nrank = 2\n'
        )
        room = 4  # the 2 pins of f0, then one item of f1 and one of f2
    summary, _, output = run_flow(
        synthetic, tmp_path, catalogue=catalogue, config=config, evaluate=False, epochs=1, ranking_epochs=1, run_date="2022-12-31"
    )
    assert summary["status"] == "succeeded"
    with sqlite3.connect(output / "recsys.db") as conn:
        popular = conn.execute("SELECT item FROM popular_items ORDER BY rank").fetchall()
        longest = conn.execute("SELECT max(n) FROM (SELECT count(*) AS n FROM recommendations GROUP BY user_id)").fetchone()[0]
        metrics = json.loads(conn.execute("SELECT metrics FROM runs WHERE is_current").fetchone()[0])
    assert len(popular) == room and longest == room
    if config is not None:
        assert popular[:2] == [(names[0],), (names[3],)]
        note = [note for note in summary["notes"] if "exceed max_per_family = 1" in note]
        assert len(note) == 1 and note[0].startswith("2 pins of family 'f0'")
        assert metrics["rules"]["notes"] == note
    else:
        assert metrics["rules"]["notes"] == []


# --- the real export, when it is here ---------------------------------------------------------------


@pytest.mark.skipif(not REAL.exists(), reason="the real export is not in ../shared/data")
def test_the_rules_hold_on_the_real_export(tmp_path):
    """On the real export with a catalogue and a config using every rule: the degraded path's
    lists (the best baseline, RP3beta) obey every rule and each row has a reason."""
    from flows.nightly import baseline_lists, cold_start
    from recsys.config import Pin, Rules

    data, _ = load_interactions(REAL)
    popular = np.argsort(-np.bincount(data.item, minlength=data.n_items))
    names = [str(data.items[code]) for code in popular[:8]]
    catalogue = tmp_path / "catalogue.csv"
    catalogue.write_text(
        "item,family,active,valid_from,valid_to,boost\n"
        f"{names[1]},,false,,,1\n{names[2]},,true,2021-01-01,2021-06-30,1\n{names[3]},,true,,,2\n"
    )
    rules = Rules(blocklist=(names[0],), max_per_family=1, exclude_seen_families=True, pins=(Pin(names[4], 1),))
    setup = item_rules(data, read_catalogue(catalogue), rules, pd.Timestamp("2022-12-31").date(), 12)
    options = RunOptions(data=REAL, run_date="2022-12-31")
    lists = baseline_lists.fn(data, "rp3beta", options, None, None, setup.rules, {})
    check_obeys(data, setup, lists.items, lists.reasons)
    codes, _, _ = cold_start(data, options, setup.rules)
    assert len(codes) == 12 and codes[0] == setup.rules.pins[0]
