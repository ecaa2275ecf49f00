"""OlistSource on the real Olist sample (../shared/datasets/olist) and on small edited copies of it."""

from __future__ import annotations

import csv
import gzip
import json
import statistics
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest

from ecom_pipeline.canonical import BRAZIL_BOUNDS, TABLES
from ecom_pipeline.sources import make_source
from ecom_pipeline.sources.base import SourceError
from ecom_pipeline.sources.olist import OlistSource
from ecom_pipeline_tests.datasets import OLIST_DIR, requires_olist

CHUNK = 3000


def _raw_rows(name: str) -> list[dict]:
    """A sample file read independently of the adapter (csv module)."""
    with gzip.open(OLIST_DIR / f"{name}.csv.gz", "rt", encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def olist():
    if not OLIST_DIR.is_dir():
        pytest.skip(f"real Olist sample not found at {OLIST_DIR}")
    src = OlistSource(OLIST_DIR)
    tables, chunk_sizes = {}, {}
    for t in sorted(src.tables()):
        chunks = list(src.read(t, chunk_rows=CHUNK))
        chunk_sizes[t] = [len(c) for c in chunks]
        tables[t] = pd.concat(chunks, ignore_index=True)
    return src, tables, chunk_sizes


@requires_olist
def test_tables_and_counts_from_the_readme(olist):
    src, t, _ = olist
    assert src.tables() == {
        "customers",
        "sellers",
        "products",
        "orders",
        "order_items",
        "payments",
        "reviews",
        "regions",
    }
    assert "events" not in src.tables()
    counts = {name: len(df) for name, df in t.items()}
    assert counts["orders"] == 8135
    assert counts["order_items"] == 8365
    assert counts["payments"] == 8924
    assert counts["reviews"] == 8225
    assert counts["products"] == 32951
    assert counts["sellers"] == 3095
    # the customers file has a row per order: one raw row per person remains
    people = {r["customer_unique_id"] for r in _raw_rows("olist_customers_dataset")}
    assert counts["customers"] == len(people) < 8135
    assert src.describe()["customers_repeat_rows"] == 8135 - len(people)
    with pytest.raises(SourceError, match="no events"):
        list(src.read("events"))


@requires_olist
def test_chunks_are_bounded_and_columns_canonical(olist):
    _, t, sizes = olist
    for name, df in t.items():
        assert max(sizes[name]) <= CHUNK, name
        assert set(df.columns) <= set(TABLES[name].column_names) | {
            "_source_file",
            "_source_row",
            "_parse_error",
        }
        assert df["_parse_error"].isna().all(), name
        assert df["_source_row"].is_unique and df["_source_row"].min() == 1, name
        # raw is text: every value a str or None
        for col in TABLES[name].column_names:
            if col in df.columns:
                assert df[col].map(lambda v: v is None or isinstance(v, str)).all(), (name, col)
    assert (t["orders"]["_source_file"] == "olist_orders_dataset.csv.gz").all()


@requires_olist
def test_customer_ids_are_the_person(olist):
    _, t, _ = olist
    raw = _raw_rows("olist_customers_dataset")
    per_order_ids = {r["customer_id"] for r in raw}
    unique_ids = {r["customer_unique_id"] for r in raw}
    customers = t["customers"]
    assert customers["customer_id"].is_unique
    assert set(customers["customer_id"]) == unique_ids
    orders = t["orders"]
    assert orders["customer_id"].notna().all()
    assert set(orders["customer_id"]) <= set(customers["customer_id"])
    assert not set(orders["customer_id"]) & per_order_ids
    # the order's Olist customer resolves to that person
    person = {r["customer_id"]: r["customer_unique_id"] for r in raw}
    first = _raw_rows("olist_orders_dataset")[0]
    row = orders.set_index("order_id").loc[first["order_id"]]
    assert row["customer_id"] == person[first["customer_id"]]
    assert row["purchased_at"] == first["order_purchase_timestamp"]
    assert row["delivered_at"] == (first["order_delivered_customer_date"] or None)
    assert row["estimated_delivery_at"] == first["order_estimated_delivery_date"]


@requires_olist
def test_every_review_points_to_an_order_and_its_customer(olist):
    _, t, _ = olist
    orders = t["orders"].set_index("order_id")
    reviews = t["reviews"]
    assert reviews["order_id"].isin(orders.index).all()
    assert (reviews["customer_id"].values == orders.loc[reviews["order_id"], "customer_id"].values).all()
    assert reviews["score"].isin(["1", "2", "3", "4", "5"]).all()
    assert reviews["text"].notna().sum() == 4113  # README: reviews with a Portuguese comment
    # product = the product of the order's first item
    items = t["order_items"]
    first = items.assign(seq=items["item_seq"].astype(int)).sort_values("seq").drop_duplicates("order_id")
    first = first.set_index("order_id")["product_id"]
    with_items = reviews[reviews["order_id"].isin(first.index)]
    assert len(with_items) > 7000
    assert (with_items["product_id"].values == first.loc[with_items["order_id"]].values).all()
    assert reviews.loc[~reviews["order_id"].isin(first.index), "product_id"].isna().all()


@requires_olist
def test_category_translation_and_fallbacks(olist):
    _, t, _ = olist
    p = t["products"].set_index("product_id")
    raw = {r["product_id"]: r for r in _raw_rows("olist_products_dataset")}
    tr = {
        r["product_category_name"]: r["product_category_name_english"]
        for r in _raw_rows("product_category_name_translation")
    }
    beauty = [pid for pid, r in raw.items() if r["product_category_name"] == "beleza_saude"]
    assert beauty and (p.loc[beauty, "category"] == "health_beauty").all()
    assert not set(p["category"].dropna()) & (set(tr) - set(tr.values()))  # no translatable Portuguese left
    untranslated = {r["product_category_name"] for r in raw.values()} - set(tr) - {""}
    assert untranslated == {"pc_gamer", "portateis_cozinha_e_preparadores_de_alimentos"}
    for cat in untranslated:  # fallback: the Portuguese name
        ids = [pid for pid, r in raw.items() if r["product_category_name"] == cat]
        assert (p.loc[ids, "category"] == cat).all()
    assert p["category"].isna().sum() == 610  # README: products without a category
    assert p["title"].isna().all() and p["description"].isna().all() and p["image_uri"].isna().all()


@requires_olist
def test_product_price_is_the_median_item_price_and_attributes_keep_source_names(olist):
    _, t, _ = olist
    p = t["products"].set_index("product_id")
    prices = defaultdict(list)
    for r in _raw_rows("olist_order_items_dataset"):
        prices[r["product_id"]].append(float(r["price"]))
    multi = next(pid for pid, v in prices.items() if len(set(v)) > 1)
    assert float(p.loc[multi, "price"]) == pytest.approx(statistics.median(prices[multi]))
    assert p["price"].notna().sum() == len(prices)
    attrs = json.loads(p.iloc[0]["attributes"])
    assert {"product_name_lenght", "product_description_lenght", "product_weight_g"} <= set(attrs)
    assert attrs == {
        "product_name_lenght": 40,
        "product_description_lenght": 287,
        "product_photos_qty": 1,
        "product_weight_g": 225,
        "product_length_cm": 16,
        "product_height_cm": 10,
        "product_width_cm": 14,
    }


@requires_olist
def test_customer_coordinates_are_in_brazil(olist):
    _, t, _ = olist
    c = t["customers"]
    lat = pd.to_numeric(c["lat"])
    lng = pd.to_numeric(c["lng"])
    inside = lat.between(*BRAZIL_BOUNDS["lat"]) & lng.between(*BRAZIL_BOUNDS["lng"])
    assert inside.mean() >= 0.99
    assert (c["zip_prefix"].str.len() == 5).all()  # zero-padded text, e.g. 01012
    s = t["sellers"]
    assert pd.to_numeric(s["lat"]).dropna().between(*BRAZIL_BOUNDS["lat"]).all()


@requires_olist
def test_regions_are_states_and_zip_prefixes(olist):
    _, t, _ = olist
    r = t["regions"]
    assert r["region_id"].is_unique
    states = r[r["level"] == "state"]
    zips = r[r["level"] == "zip5"]
    assert len(states) == 27 and len(states) + len(zips) == len(r)
    assert set(states["region_id"]) == {f"state:{s}" for s in states["state"]}
    assert states.set_index("state").loc["SP", "name"] == "São Paulo"
    assert zips["region_id"].str.fullmatch(r"zip5:\d{5}").all()
    assert (r["_source_file"] == "olist_geolocation_dataset.csv.gz").all()
    assert r["_source_row"].tolist() == list(range(1, len(r) + 1))
    geo = _raw_rows("olist_geolocation_dataset")
    assert len(zips) == len({g["geolocation_zip_code_prefix"] for g in geo})
    sp = [float(g["geolocation_lat"]) for g in geo if g["geolocation_zip_code_prefix"] == "01012"]
    assert float(zips.set_index("region_id").loc["zip5:01012", "lat"]) == pytest.approx(sum(sp) / len(sp))
    assert pd.to_numeric(r["lat"]).between(*BRAZIL_BOUNDS["lat"]).all()


@requires_olist
def test_parse_hints_say_local_brazilian_time():
    src = make_source("olist", data_dir=OLIST_DIR)
    hints = src.parse_hints("orders")
    assert hints.timezone == "America/Sao_Paulo" and hints.geo_bounds == "brazil"


# ---------------------------------------------------------------- edited copies (tmp_path)


def _copy(tmp_path: Path, names: list[str], edit=None, limit: int = 200) -> Path:
    """Copy the first ``limit`` data rows of some sample files as plain .csv, optionally editing lines."""
    d = tmp_path / "olist"
    d.mkdir(exist_ok=True)
    for name in names:
        with gzip.open(OLIST_DIR / f"{name}.csv.gz", "rb") as fh:
            lines = fh.read().splitlines(keepends=True)[: limit + 1]
        if edit and name in edit:
            lines = edit[name](lines)
        (d / f"{name}.csv").write_bytes(b"".join(lines))
    return d


@requires_olist
def test_plain_csv_files_and_a_broken_line(tmp_path):
    def break_line(lines):
        lines[3] = b"this line,has too few fields\n"
        return lines

    d = _copy(
        tmp_path,
        ["olist_orders_dataset", "olist_customers_dataset"],
        {"olist_orders_dataset": break_line},
        limit=8135,
    )
    src = OlistSource(d)
    assert src.tables() == {"orders", "customers"}
    orders = pd.concat(src.read("orders", chunk_rows=1000), ignore_index=True)
    assert len(orders) == 8135  # the broken line is not dropped
    bad = orders[orders["_parse_error"].notna()]
    assert bad["_parse_error"].tolist() == ["wrong_field_count"]
    assert bad["_source_row"].tolist() == [3]
    assert bad["order_id"].tolist() == ["this line,has too few fields"]  # the line, in the first column
    assert bad[["customer_id", "status", "purchased_at"]].isna().all(axis=None)
    assert src.describe()["read_reports"]["orders"]["parse_errors"] == {"wrong_field_count": 1}


@requires_olist
def test_missing_lookup_files(tmp_path):
    d = _copy(tmp_path, ["olist_products_dataset", "olist_orders_dataset", "olist_order_reviews_dataset"])
    src = OlistSource(d)
    # products without translation or items: Portuguese category, no price
    assert src.tables() == {"products"}
    p = pd.concat(src.read("products"), ignore_index=True)
    assert p.loc[0, "category"] == "perfumaria" and p["price"].isna().all()
    # reviews and orders need the customers file to resolve the person
    with pytest.raises(SourceError, match="olist_customers_dataset"):
        list(src.read("reviews"))


def test_folder_without_olist_files(tmp_path):
    with pytest.raises(SourceError, match="no Olist files"):
        OlistSource(tmp_path)
    with pytest.raises(SourceError, match="not found"):
        OlistSource(tmp_path / "nope")
