"""Tests for the synthetic export generator (small sizes, each runs in well under a second)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from recsys.synthetic.generate import (
    DATE_FORMAT,
    EXPORT_COLUMNS,
    build_catalogue,
    generate_export,
    main,
    pick_model,
    write_export,
)

SMALL = dict(customers=600, items=120, interactions_per_customer=4.0, groups=6, seed=11)


@pytest.fixture(scope="module")
def small():
    """One small export plus its planted ground truth, shared by the read-only tests."""
    return generate_export(**SMALL, return_groups=True)


def _distinct_pairs(df: pd.DataFrame) -> pd.DataFrame:
    """Distinct (customer, stripped item) pairs."""
    pairs = pd.DataFrame(
        {
            "customer": df["ID_CLIENTE"].to_numpy(),
            "item": df["NOMBRE_CORTO_DE_EXPERIENCIA"].str.strip().to_numpy(),
        }
    )
    return pairs.drop_duplicates()


def test_same_seed_identical_and_different_seed_differs():
    a = generate_export(**SMALL)
    b = generate_export(**SMALL)
    pd.testing.assert_frame_equal(a, b)
    c = generate_export(**{**SMALL, "seed": 12})
    assert not a.equals(c)


def test_schema_and_formats(small):
    df, _ = small
    assert tuple(df.columns) == EXPORT_COLUMNS
    assert all(pd.api.types.is_string_dtype(df[c]) for c in df.columns)
    assert df.notna().all().all()
    assert df["ID_CLIENTE"].str.fullmatch(r"[1-9]\d*").all()
    dates = pd.to_datetime(df["FECHA_INTERACCION"], format=DATE_FORMAT)
    assert dates.min() >= pd.Timestamp("2021-01-01") and dates.max() < pd.Timestamp("2023-01-01")
    # No zero padding in month, day or hour, like the real export ("1/4/2021 9:47").
    assert df["FECHA_INTERACCION"].str.fullmatch(r"[1-9]\d?/[1-9]\d?/\d{4} (1?\d|2[0-3]):[0-5]\d").all()
    datetime.strptime(df["FECHA_INTERACCION"].iloc[0], DATE_FORMAT)
    assert set(df["CALIFICACION"].unique()) <= {"1", "2", "3", "4", "5"}
    assert df["CALIFICACION"].eq("5").mean() > 0.7


def test_rating_shares_close_to_real_export():
    df = generate_export(customers=20_000, items=300, seed=3)
    shares = df["CALIFICACION"].value_counts(normalize=True)
    assert shares["5"] == pytest.approx(0.83, abs=0.03)
    assert shares["4"] == pytest.approx(0.12, abs=0.03)
    assert shares["1"] == pytest.approx(0.034, abs=0.015)
    assert shares.get("2", 0) < shares["1"]


def test_item_names_unique_after_strip_and_some_have_stray_spaces():
    cat = build_catalogue(300, seed=7)
    assert cat["clean_name"].is_unique
    assert (cat["name"].str.strip() == cat["clean_name"]).all()
    stray = cat["name"] != cat["clean_name"]
    assert 0 < stray.sum() < 0.2 * len(cat)
    assert cat["name"].str.contains(r"[áéíóúñÉ]").any()


def test_large_catalogue_stays_unique():
    cat = build_catalogue(5000, seed=1)
    assert cat["clean_name"].is_unique and len(cat) == 5000


def test_stray_spaces_are_consistent_per_item(small):
    df, _ = small
    names = df["NOMBRE_CORTO_DE_EXPERIENCIA"].drop_duplicates()
    assert (names != names.str.strip()).any()
    # One exported spelling per item: stripping never merges two spellings.
    assert names.str.strip().is_unique


def test_duplicates_and_repeat_redemptions(small):
    df, _ = small
    dup_share = df.duplicated().mean()
    assert 0.35 < dup_share < 0.65
    distinct = df.drop_duplicates()
    # The same item redeemed again at a different time by the same customer.
    repeats = distinct.duplicated(["ID_CLIENTE", "NOMBRE_CORTO_DE_EXPERIENCIA"])
    assert repeats.sum() > 0


def test_items_per_customer_is_skewed(small):
    df, _ = small
    per = _distinct_pairs(df).groupby("customer").size()
    assert df["ID_CLIENTE"].nunique() == SMALL["customers"]
    assert per.median() < per.mean()  # right-skewed
    assert (per <= 2).mean() > 0.25
    assert per.max() >= 3 * per.median()


def test_customers_sorted_and_time_ordered(small):
    df, _ = small
    ids = df["ID_CLIENTE"].astype(int).to_numpy()
    assert (np.diff(ids) >= 0).all()
    when = pd.to_datetime(df["FECHA_INTERACCION"], format=DATE_FORMAT).to_numpy()
    same = ids[1:] == ids[:-1]
    assert (when[1:][same] >= when[:-1][same]).all()


def test_planted_groups_are_measurable(small):
    df, truth = small
    pairs = _distinct_pairs(df)
    customers = pd.Index(truth.customer_group.index)
    items = pd.Index(truth.item_group.index)
    m = np.zeros((len(customers), len(items)), dtype=np.float32)
    m[customers.get_indexer(pairs["customer"]), items.get_indexer(pairs["item"])] = 1.0
    shares_item = (m @ m.T) > 0
    group = truth.customer_group.to_numpy()
    same = group[:, None] == group[None, :]
    off_diagonal = ~np.eye(len(group), dtype=bool)
    within = shares_item[same & off_diagonal].mean()
    across = shares_item[~same].mean()
    assert within > 2 * across

    # Most of a customer's items come from their group's home items.
    item_home = pairs["item"].map(truth.item_group)
    cust_home = pairs["customer"].map(truth.customer_group)
    assert (item_home == cust_home).mean() > 0.5


def test_trending_items_gain_share_over_time():
    df, truth = generate_export(customers=5000, items=200, seed=5, return_groups=True)
    when = pd.to_datetime(df["FECHA_INTERACCION"], format=DATE_FORMAT)
    trend = df["NOMBRE_CORTO_DE_EXPERIENCIA"].str.strip().map(truth.item_trend)
    early = trend[when < "2021-07-01"]
    late = trend[when >= "2022-07-01"]
    assert (late == 1).mean() > 1.5 * (early == 1).mean()
    assert (late == -1).mean() < (early == -1).mean()


def test_sequences_stay_in_group(small):
    df, truth = small
    distinct = df.drop_duplicates()
    home = distinct["NOMBRE_CORTO_DE_EXPERIENCIA"].str.strip().map(truth.item_group).to_numpy()
    same_customer = (distinct["ID_CLIENTE"].to_numpy()[1:] == distinct["ID_CLIENTE"].to_numpy()[:-1])
    consecutive_same_group = (home[1:] == home[:-1])[same_customer].mean()
    assert consecutive_same_group > 0.5


def test_pick_model_is_the_planted_structure(small):
    """The probabilities the ceiling study scores with are the generator's: each group's fresh
    picks are its home items, companions share their item's group, and the empirical first picks
    follow the planted distributions."""
    df, truth = small
    model = pick_model(SMALL["items"], SMALL["groups"], SMALL["seed"])
    home = truth.item_group.reindex(model.names).to_numpy()
    assert np.allclose(model.group_p.sum(axis=-1), 1.0) and np.allclose(model.global_p.sum(axis=-1), 1.0)
    for group in range(SMALL["groups"]):
        assert set(np.flatnonzero(model.group_p[group].sum(axis=0) > 0)) <= set(np.flatnonzero(home == group))
    assert (home[model.companions] == home[:, None]).all()
    # Trending items gain probability over the period in the global distribution too.
    trend = truth.item_trend.reindex(model.names).to_numpy()
    up = model.global_p[:, trend == 1].sum(axis=1)
    assert up[-1] > 2 * up[0]
    # Customers' first picks: in their group about IN_GROUP_SHARE of the time plus the global
    # distribution's share of the group's items, as the model says.
    first = df.drop_duplicates("ID_CLIENTE")
    group = first["ID_CLIENTE"].map(truth.customer_group).to_numpy()
    item = pd.Series(np.arange(len(model.names)), index=model.names)[first["NOMBRE_CORTO_DE_EXPERIENCIA"].str.strip()].to_numpy()
    bins = model.time_bin(pd.to_datetime(first["FECHA_INTERACCION"], format=DATE_FORMAT).astype("int64").to_numpy() // 10**9)
    from recsys.synthetic.generate import IN_GROUP_SHARE

    expected = IN_GROUP_SHARE + (1 - IN_GROUP_SHARE) * np.array(
        [model.global_p[b, home == g].sum() for b, g in zip(bins, group)]
    )
    observed = home[item] == group
    assert abs(observed.mean() - expected.mean()) < 3 * np.sqrt(expected.mean() * (1 - expected.mean()) / len(observed))


def test_csv_round_trip_and_exact_format(tmp_path, small):
    df, _ = small
    path = write_export(df, tmp_path / "export.csv")
    raw = path.read_bytes()
    assert raw.startswith(b'"ID_CLIENTE","FECHA_INTERACCION","NOMBRE_CORTO_DE_EXPERIENCIA","CALIFICACION"\n')
    assert b"\r" not in raw
    first = raw.split(b"\n")[1].decode("utf-8")
    assert first.startswith('"') and first.endswith('"') and first.count('","') == 3
    back = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert (back["NOMBRE_CORTO_DE_EXPERIENCIA"] != back["NOMBRE_CORTO_DE_EXPERIENCIA"].str.strip()).any()


def test_parquet_round_trip(tmp_path, small):
    df, _ = small
    path = write_export(df, tmp_path / "export.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(path), df, check_dtype=False)


def test_cli_writes_file_and_summary(tmp_path, capsys):
    out = tmp_path / "sample.csv"
    main(["--customers", "50", "--items", "40", "--per-customer", "2", "--seed", "1", "--out", str(out)])
    assert out.exists()
    assert "50 customers" in capsys.readouterr().out


def test_invalid_arguments():
    with pytest.raises(ValueError):
        generate_export(customers=10, items=5, groups=8)
    with pytest.raises(ValueError):
        generate_export(customers=10, items=50, interactions_per_customer=0.5)
