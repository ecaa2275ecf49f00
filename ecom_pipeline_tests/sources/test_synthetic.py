"""Tests of the synthetic source: contract, determinism, chunking, consistency, realism, dirty rows, scale."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecom_pipeline.canonical import BRAZIL_BOUNDS, TABLE_ORDER, TABLES
from ecom_pipeline.paths import DataPaths
from ecom_pipeline.sources import make_source
from ecom_pipeline.sources import synthetic_geo as geo
from ecom_pipeline.sources.base import SourceError, text_frame
from ecom_pipeline.sources.synthetic import SyntheticSource, black_friday

TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


def read_all(src: SyntheticSource, table: str, chunk_rows: int = 100_000) -> pd.DataFrame:
    chunks = list(src.read(table, chunk_rows=chunk_rows))
    return pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame()


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[SyntheticSource, dict[str, pd.DataFrame]]:
    """3,000 clean orders, every table."""
    src = SyntheticSource(n_orders=3000, seed=11, image_dir=tmp_path_factory.mktemp("img"), dirty_rate=0.0)
    return src, {t: read_all(src, t) for t in TABLE_ORDER}


@pytest.fixture(scope="module")
def medium() -> tuple[SyntheticSource, dict[str, pd.DataFrame]]:
    """30,000 clean orders (about 41 a day) for the statistical checks."""
    src = SyntheticSource(n_orders=30_000, seed=5, image_dir=None, dirty_rate=0.0)
    tables = ("customers", "sellers", "orders", "order_items", "reviews", "events")
    return src, {t: read_all(src, t) for t in tables}


# ------------------------------------------------------------------------------------------------ contract
def test_every_table_follows_the_raw_contract(small):
    src, t = small
    assert src.tables() == set(TABLES)
    for table, df in t.items():
        assert len(df) > 0, table
        data_cols = [c for c in df.columns if not c.startswith("_")]
        assert data_cols == [c for c in TABLES[table].column_names if c in data_cols], table
        assert set(TABLES[table].column_names) <= set(df.columns), f"{table} misses canonical columns"
        assert (df["_source_file"] == f"synthetic://{table}?seed=11&n=3000").all()
        assert df["_source_row"].tolist() == list(range(1, len(df) + 1))
        for col in data_cols:
            bad = df[col].map(lambda v: not (v is None or type(v) is str))
            assert not bad.any(), f"{table}.{col} has non-text values"
        pd.testing.assert_frame_equal(text_frame(df), df)


def test_timestamps_are_utc_text_inside_the_period(small):
    src, t = small
    end = f"{src.end_date.isoformat()} 23:59:59"
    start = f"{src.start_date.isoformat()} 00:00:00"
    for table, cols in {
        "orders": ["purchased_at", "approved_at", "delivered_at"],
        "reviews": ["created_at"],
        "events": ["ts"],
    }.items():
        for col in cols:
            v = t[table][col].dropna()
            assert v.map(lambda s: bool(TS_RE.match(s))).all(), f"{table}.{col}"
            assert v.min() >= start and v.max() <= end, f"{table}.{col} outside {start}..{end}"
    assert t["orders"]["estimated_delivery_at"].map(lambda s: bool(TS_RE.match(s))).all()


def test_make_source_hints_describe_and_unknown_table(tmp_path):
    src = make_source(
        "synthetic", image_dir=DataPaths(tmp_path).synthetic_images, synthetic_orders=1234, synthetic_seed=3
    )
    assert isinstance(src, SyntheticSource)
    assert src.image_dir == tmp_path / "synthetic_images"
    assert src.parse_hints("orders").geo_bounds == "brazil"
    d = src.describe()
    assert d["seed"] == 3 and d["n_orders"] == 1234
    assert (d["start_date"], d["end_date"]) == ("2023-01-01", "2024-12-31")
    assert d["customers"] == src.n_customers and d["products"] == 200 + 1234 // 25
    with pytest.raises(SourceError):
        next(src.read("not_a_table"))


# ------------------------------------------------------------------------------------------------ determinism
def test_same_seed_gives_identical_frames_and_other_seed_differs(tmp_path):
    a = SyntheticSource(n_orders=1500, seed=99, image_dir=tmp_path / "a")
    b = SyntheticSource(n_orders=1500, seed=99, image_dir=tmp_path / "a")
    for table in TABLE_ORDER:
        pd.testing.assert_frame_equal(read_all(a, table), read_all(b, table))
    c = SyntheticSource(n_orders=1500, seed=100, image_dir=tmp_path / "c")
    assert not read_all(a, "orders")["order_id"].equals(read_all(c, "orders")["order_id"])
    assert read_all(a, "regions").iloc[:27, :-2].equals(read_all(c, "regions").iloc[:27, :-2])  # states fixed


@pytest.mark.parametrize("table", ["orders", "events", "customers", "reviews", "products"])
def test_chunking_respects_size_and_gives_the_same_rows(table):
    src = SyntheticSource(n_orders=2500, seed=4, dirty_rate=0.01, write_images=False)
    reference = None
    for chunk_rows in (7, 1000, 1_000_000) if table != "events" else (313, 5000, 1_000_000):
        chunks = list(src.read(table, chunk_rows=chunk_rows))
        sizes = [len(c) for c in chunks]
        assert all(s == chunk_rows for s in sizes[:-1]) and 0 < sizes[-1] <= chunk_rows
        df = pd.concat(chunks, ignore_index=True)
        assert df["_source_row"].tolist() == list(range(1, len(df) + 1))
        if reference is None:
            reference = df
        else:
            pd.testing.assert_frame_equal(df, reference)


# ------------------------------------------------------------------------------------------------ consistency
def test_keys_unique_and_references_resolve(small):
    _, t = small
    for table in TABLE_ORDER:
        key = list(TABLES[table].key)
        assert not t[table].duplicated(key).any(), f"duplicate key in {table}"
    orders, items, customers = t["orders"], t["order_items"], t["customers"]
    assert set(items["order_id"]) == set(orders["order_id"])  # every order has items
    assert set(orders["customer_id"]) <= set(customers["customer_id"])
    assert set(items["product_id"]) <= set(t["products"]["product_id"])
    assert set(items["seller_id"]) <= set(t["sellers"]["seller_id"])
    assert set(t["payments"]["order_id"]) == set(orders["order_id"])
    rv = t["reviews"].merge(orders[["order_id", "customer_id"]], on="order_id", suffixes=("", "_order"))
    assert len(rv) == len(t["reviews"]) and (rv["customer_id"] == rv["customer_id_order"]).all()
    ev = t["events"]
    assert set(ev["customer_id"]) <= set(customers["customer_id"])
    assert set(ev["product_id"]) <= set(t["products"]["product_id"])
    assert ev["event_id"].is_unique


def test_payments_sum_to_items_plus_freight(small):
    _, t = small
    it = t["order_items"]

    def cents(s: pd.Series) -> pd.Series:
        return (s.astype(float) * 100).round().astype(np.int64)

    due = (
        (cents(it["price"]) * it["quantity"].astype(int) + cents(it["freight"])).groupby(it["order_id"]).sum()
    )
    paid = cents(t["payments"]["value"]).groupby(t["payments"]["order_id"]).sum()
    assert (due.sort_index() == paid.sort_index()).all()
    p = t["payments"]
    assert set(p["payment_type"]) == {"credit_card", "boleto", "voucher", "debit_card"}
    cc = p.loc[p["payment_type"] == "credit_card", "installments"].astype(int)
    assert cc.max() > 1 and (p.loc[p["payment_type"] != "credit_card", "installments"] == "1").all()


def test_purchase_events_match_order_items(small):
    _, t = small
    o = t["orders"][["order_id", "customer_id", "purchased_at"]]
    items = t["order_items"].merge(o, on="order_id")
    expected = items.groupby(["customer_id", "product_id", "purchased_at"]).size().sort_index()
    ev = t["events"]
    purchases = ev[ev["event_type"] == "purchase"]
    got = purchases.groupby(["customer_id", "product_id", "ts"]).size().sort_index()
    got.index.names = expected.index.names
    pd.testing.assert_series_equal(got, expected)
    # Inside a converting session, the purchase is the last event and was preceded by views and a cart.
    conv = ev[ev["session_id"].isin(purchases["session_id"])]
    last = conv.groupby("session_id")["ts"].max()
    purchase_ts = purchases.groupby("session_id")["ts"].max()
    assert (purchase_ts == last.loc[purchase_ts.index]).all()
    kinds = conv.groupby("session_id")["event_type"].agg(set)
    assert all({"view", "cart", "purchase"} <= k for k in kinds)


def test_order_lifecycle(small):
    _, t = small
    o = t["orders"]
    assert (o["approved_at"].dropna() >= o.loc[o["approved_at"].notna(), "purchased_at"]).all()
    d = o[o["delivered_at"].notna()]
    assert (d["delivered_at"] > d["approved_at"]).all()
    assert (d["status"] == "delivered").all()
    assert (o.loc[o["status"] == "delivered", "delivered_at"].notna()).all()
    share = o["status"].value_counts(normalize=True)
    assert share["delivered"] > 0.9 and share.get("canceled", 0) > 0 and share.get("shipped", 0) > 0
    r = t["reviews"].merge(o, on="order_id", suffixes=("", "_o"))
    delivered = r[r["delivered_at"].notna()]
    assert (delivered["created_at"] > delivered["delivered_at"]).all()
    assert len(t["reviews"]) / len(o) > 0.75


# ------------------------------------------------------------------------------------------------ geography
def test_geography_is_brazilian_and_consistent(small, medium):
    _, t = small
    g = pd.DataFrame(geo.CITIES, columns=["state", "city", "lat", "lng", "lo", "hi", "ddd", "w"])
    for table in ("customers", "sellers"):
        df = t[table].merge(g, on=["state", "city"], how="left")
        assert df["lo"].notna().all(), f"{table}: city not in its state"
        z = df["zip_prefix"].astype(int)
        assert ((z >= df["lo"]) & (z <= df["hi"])).all()
        assert all(any(a <= zz <= b for a, b in geo.STATE_CEP_RANGES[s]) for zz, s in zip(z, df["state"]))
        lat, lng = df["lat_x"].astype(float), df["lng_x"].astype(float)
        assert lat.between(*BRAZIL_BOUNDS["lat"]).all() and lng.between(*BRAZIL_BOUNDS["lng"]).all()
        assert ((lat - df["lat_y"]).abs() < 0.6).all() and ((lng - df["lng_y"]).abs() < 0.6).all()
    states = medium[1]["customers"]["state"].value_counts(normalize=True)
    assert states.index[0] == "SP" and states["SP"] > 1.5 * states.iloc[1]
    assert states.size >= 25
    assert medium[1]["sellers"]["state"].value_counts().index[0] == "SP"
    regions = t["regions"]
    st = regions[regions["level"] == "state"]
    assert len(st) == 27 and set(st["state"]) == {s[0] for s in geo.STATES}
    zip3 = set(regions.loc[regions["level"] == "zip3", "region_id"].str[5:])
    used = set(t["customers"]["zip_prefix"].str[:3]) | set(t["sellers"]["zip_prefix"].str[:3])
    assert zip3 == used


# ------------------------------------------------------------------------------------------------ realism
def _daily(orders: pd.DataFrame) -> pd.Series:
    d = pd.to_datetime(orders["purchased_at"]).dt.normalize().value_counts().sort_index()
    return d.reindex(pd.date_range(d.index.min(), d.index.max()), fill_value=0)


def test_weekly_yearly_seasonality_black_friday_and_trend(medium):
    _, t = medium
    daily = _daily(t["orders"])
    weekend = daily[daily.index.weekday >= 5].mean()
    weekday = daily[daily.index.weekday < 5].mean()
    assert weekend < 0.9 * weekday
    median = daily.median()
    for year in (2023, 2024):
        bf = pd.Timestamp(black_friday(year))
        assert bf.weekday() == 4 and bf.month == 11
        assert daily[bf] > 2.5 * median, f"Black Friday {year} not visible"
        assert daily[bf] == daily[daily.index.year == year].max()
    assert black_friday(2024).day == 29 and black_friday(2023).day == 24
    december = daily[(daily.index.month == 12) & (daily.index.day <= 20)].mean()
    spring = daily[daily.index.month.isin([2, 3, 4])].mean()
    assert december > 1.3 * spring and december > 1.2 * median
    per_year = daily.groupby(daily.index.year).sum()
    assert per_year[2024] > 1.15 * per_year[2023]


def test_repeat_customers_are_heavy_tailed(medium):
    _, t = medium
    per_customer = t["orders"]["customer_id"].value_counts()
    assert 0.45 < len(t["customers"]) / len(t["orders"]) < 0.75
    assert (per_customer == 1).mean() > 0.6  # most buy once
    assert per_customer.max() >= 10  # ... a few buy often
    assert (per_customer >= 2).sum() > 0.1 * len(per_customer)


def test_late_deliveries_get_worse_reviews_and_distance_slows_delivery(medium):
    _, t = medium
    o = t["orders"]
    d = o[o["status"] == "delivered"].copy()
    d["late"] = d["delivered_at"] > d["estimated_delivery_at"]
    assert 0.02 < d["late"].mean() < 0.2
    r = t["reviews"].merge(d[["order_id", "late"]], on="order_id")
    score = r["score"].astype(int)
    assert score[r["late"]].mean() < score[~r["late"]].mean() - 0.8
    assert (score[~r["late"]] == 5).mean() > 0.45
    # delivery time grows with seller -> customer distance
    it = t["order_items"].drop_duplicates("order_id")[["order_id", "seller_id"]]
    x = (
        d.merge(it, on="order_id")
        .merge(t["customers"][["customer_id", "lat", "lng"]], on="customer_id")
        .merge(t["sellers"][["seller_id", "lat", "lng"]], on="seller_id", suffixes=("_c", "_s"))
    )
    la1, lo1, la2, lo2 = (np.radians(x[c].astype(float)) for c in ("lat_c", "lng_c", "lat_s", "lng_s"))
    km = (
        2
        * 6371
        * np.arcsin(
            np.sqrt(np.sin((la2 - la1) / 2) ** 2 + np.cos(la1) * np.cos(la2) * np.sin((lo2 - lo1) / 2) ** 2)
        )
    )
    days = (pd.to_datetime(x["delivered_at"]) - pd.to_datetime(x["purchased_at"])).dt.total_seconds() / 86400
    assert days[km > 1500].mean() > days[km < 300].mean() + 3
    assert np.corrcoef(km, days)[0, 1] > 0.3


PT_WORDS = {
    "o",
    "a",
    "é",
    "não",
    "de",
    "do",
    "da",
    "muito",
    "chegou",
    "produto",
    "recomendo",
    "prazo",
    "entrega",
}
EN_WORDS = {"the", "is", "it", "not", "to", "arrived", "product", "very", "recommend", "delivery", "with"}
POSITIVE = (
    "excelente",
    "ótim",
    "perfeit",
    "adorei",
    "amei",
    "recomendo!",
    "super recomendo",
    "nota 10",
    "excellent",
    "love",
    "perfect",
    "amazing",
    "highly recommend",
    "great",
    "would buy again",
)
NEGATIVE = (
    "péssim",
    "horrível",
    "defeito",
    "decepç",
    "não recomendo",
    "reembolso",
    "não chegou",
    "ruim",
    "terrible",
    "awful",
    "refund",
    "damaged",
    "never",
    "worst",
    "disappoint",
    "not recommend",
    "poor",
)


def _language(text: str) -> str:
    words = set(re.findall(r"[a-zà-ú]+", text.lower()))
    return "pt" if len(words & PT_WORDS) > len(words & EN_WORDS) else "en"


def _polarity(text: str) -> int:
    s = text.lower()
    return sum(w in s for w in POSITIVE) - sum(w in s for w in NEGATIVE)


def test_review_texts_bilingual_varied_and_sentiment_follows_score(medium):
    _, t = medium
    r = t["reviews"]
    texts = r["text"].dropna()
    assert 0.25 < len(texts) / len(r) < 0.8  # many reviews have no text
    lang = texts.map(_language)
    assert 0.2 < (lang == "en").mean() < 0.4
    score = r.loc[texts.index, "score"].astype(int)
    pol = texts.map(_polarity)
    assert pol[score == 5].mean() > 0.5 and pol[score == 1].mean() < -0.5
    assert (pol[score == 5] < 0).mean() < 0.1 and (pol[score == 1] > 0).mean() < 0.1
    for s in (1, 5):  # varied phrasing, not one template
        assert texts[score == s].nunique() > 0.5 * (score == s).sum()
    assert r["title"].notna().mean() > 0.1


PII_RE = re.compile(r"[\w.]+@[\w.]+|\d{3}\.\d{3}\.\d{3}-\d{2}|https?://\S+|\(?\d{2}\)? ?9\d{4}-\d{4}")


def test_personal_data_present_in_raw(medium):
    _, t = medium
    c = t["customers"]
    assert c["name"].str.match(r"^\S+ .+\S$").all()
    assert c["email"].str.match(r"^[a-z0-9._]+@[a-z.]+$").all()
    assert c["phone"].dropna().str.match(r"^\+55 \d{2} 9\d{4}-\d{4}$").all()
    assert c["name"].nunique() > 0.3 * len(c)
    texts = t["reviews"]["text"].dropna()
    share = texts.str.contains(PII_RE).mean()
    assert 0.01 < share < 0.06


def test_clickstream_funnel(medium):
    _, t = medium
    ev = t["events"]
    counts = ev["event_type"].value_counts()
    assert counts["view"] > 2.5 * counts["cart"] and counts["cart"] > 1.3 * counts["purchase"]
    assert counts["purchase"] == len(t["order_items"])
    converting = ev.loc[ev["event_type"] == "purchase", "session_id"].nunique()
    assert 0.15 < converting / ev["session_id"].nunique() < 0.5  # most sessions do not convert
    assert ev.groupby("session_id")["customer_id"].nunique().max() == 1


# ------------------------------------------------------------------------------------------------ products
def test_products_and_images(small, tmp_path):
    from PIL import Image

    src, t = small
    p = t["products"]
    assert p["price"].astype(float).gt(0).all()
    assert p["category"].nunique() == 20 and p["category"].str.match(r"^[a-z_]+$").all()
    attrs = p["attributes"].map(json.loads)
    assert all({"weight_g", "length_cm", "height_cm", "width_cm", "color"} <= set(a) for a in attrs)
    assert p["title"].str.contains(" - ").all() and p["description"].str.len().gt(40).all()
    paths = [Path(u) for u in p["image_uri"]]
    assert all(path.parent == src.image_dir and path.exists() for path in paths)
    img = Image.open(paths[0])
    assert img.size == (96, 96) and img.format == "PNG"
    # deterministic bytes in another directory, and existing files are not rewritten
    other = SyntheticSource(n_orders=3000, seed=11, image_dir=tmp_path / "again", dirty_rate=0.0)
    read_all(other, "products")
    assert (tmp_path / "again" / paths[0].name).read_bytes() == paths[0].read_bytes()
    mtime = paths[0].stat().st_mtime_ns
    read_all(src, "products")
    assert paths[0].stat().st_mtime_ns == mtime
    # category-dependent look: mean colours of two categories differ
    by_cat = {}
    for cat, path in zip(p["category"], paths):
        by_cat.setdefault(cat, []).append(np.asarray(Image.open(path), dtype=float).mean(axis=(0, 1)))
    means = {k: np.mean(v, axis=0) for k, v in by_cat.items()}
    assert np.abs(means["bed_bath_table"] - means["toys"]).max() > 10


# ------------------------------------------------------------------------------------------------ dirty rows
def test_dirty_rows_are_exact_and_controllable():
    clean = SyntheticSource(n_orders=4000, seed=8, dirty_rate=0.0, write_images=False)
    dirty = SyntheticSource(n_orders=4000, seed=8, dirty_rate=0.03, write_images=False)
    co, do = read_all(clean, "orders"), read_all(dirty, "orders")
    dup = do.duplicated([c for c in do.columns if not c.startswith("_")])
    assert len(do) == len(co) + dup.sum() and dup.sum() > 0
    base = do[~dup].drop(columns=["_source_row"]).reset_index(drop=True)
    ref = co.drop(columns=["_source_row"]).reset_index(drop=True)
    changed = base.fillna("<NA>") != ref.fillna("<NA>")
    assert changed.sum(axis=1).max() == 1  # one defect per dirty row
    n_changed = int(changed.any(axis=1).sum())
    assert 0.3 * 0.03 * len(co) < n_changed + dup.sum() < 2 * 0.03 * len(co)
    assert base["customer_id"].isna().sum() > 0
    assert pd.to_datetime(base["purchased_at"], format="%Y-%m-%d %H:%M:%S", errors="coerce").isna().sum() > 0
    assert (base["approved_at"] < base["purchased_at"]).sum() > 0
    rv = read_all(dirty, "reviews")["score"]
    assert rv.isin(["0", "6"]).any() and not read_all(clean, "reviews")["score"].isin(["0", "6"]).any()
    assert read_all(dirty, "order_items")["price"].str.startswith("-").any()
    assert (read_all(dirty, "events")["event_type"] == "click").any()
    assert (read_all(dirty, "customers")["lat"] == "0.000000").any()
    assert read_all(clean, "orders")["customer_id"].notna().all()


# ------------------------------------------------------------------------------------------------ scale
@pytest.mark.slow
def test_200k_orders_stream_with_bounded_memory():
    """Stream orders, items and events for 200k orders (about 2.8M rows) in a fresh process.

    RSS is sampled every 2 ms by a thread (``ru_maxrss`` is useless here: Linux keeps it across exec, so a
    child of a big pytest process inherits the parent's peak).  Bound: the peak may grow by at most 300 MB
    over the warmed-up start, *and* by at most a fifth of what the streamed rows occupy as pandas frames
    (~1.4 GB here).  A generator that materialised a table (or kept every block) would exceed both; what
    is live at once is one block (~4,000 orders, ~50k events) plus one 100k-row chunk as object arrays and
    as a DataFrame (~60 MB each), which measures at ~100-150 MB whatever ``n_orders`` is.
    """
    code = textwrap.dedent("""
        import json, threading, time
        import psutil
        from ecom_pipeline.sources.synthetic import SyntheticSource
        proc = psutil.Process()
        src = SyntheticSource(n_orders=200_000, seed=1, write_images=False)
        next(src.read("orders", chunk_rows=10))  # warm caches (calendar, catalogue, lookup tables)
        start = proc.memory_info().rss
        peak, done = [start], threading.Event()
        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss)
                time.sleep(0.002)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rows, frame_bytes, t0 = {}, 0, time.process_time()
        for table in ("orders", "order_items", "events"):
            rows[table] = 0
            for i, chunk in enumerate(src.read(table)):
                rows[table] += len(chunk)
                if i == 0:
                    per_row = chunk.memory_usage(deep=True).sum() / len(chunk)
            frame_bytes += per_row * rows[table]
        done.set()
        sampler.join()
        print(json.dumps({"rows": rows, "growth_mb": (peak[0] - start) / 2**20,
                          "frames_mb": frame_bytes / 2**20, "start_mb": start / 2**20,
                          "cpu_s": time.process_time() - t0}))
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    print(stats)
    assert stats["rows"]["orders"] >= 200_000 and stats["rows"]["events"] > 2_000_000
    assert 0 < stats["growth_mb"] < 300
    assert stats["growth_mb"] < stats["frames_mb"] / 5
