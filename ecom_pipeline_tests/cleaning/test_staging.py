"""Staging rules, one test per rule, on tiny raw tables in a tmp DuckDB, with exact outcomes."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from ecom_pipeline.canonical import TABLE_ORDER, TABLES, ParseHints
from ecom_pipeline.cleaning import staging as staging_mod
from ecom_pipeline.cleaning.privacy import mask_text, pseudonym
from ecom_pipeline.cleaning.rules import canonical_category
from ecom_pipeline.cleaning.staging import StagingError, column_schema, stage_table
from ecom_pipeline.loading import load_raw_table
from ecom_pipeline.sources.base import Source, text_frame

KEY = b"unit-test-pseudonym-key-0123456789"
NOW = datetime(2024, 6, 1, 12, 0, 0)


class ListSource(Source):
    """Rows given as dicts of text; row n of a table is `_source_row` n of file `<table>.csv`."""

    name = "list"

    def __init__(self, data: dict[str, list[dict]]):
        self.data = data

    def tables(self) -> set[str]:
        return set(self.data)

    def read(self, table: str, chunk_rows: int = 100_000):
        df = pd.DataFrame(self.data[table], dtype=object)
        if df.empty:
            return
        df["_source_file"] = f"{table}.csv"
        df["_source_row"] = range(1, len(df) + 1)
        yield text_frame(df)


@pytest.fixture
def con(tmp_path: Path):
    c = duckdb.connect(str(tmp_path / "w.duckdb"))
    yield c
    c.close()


def load(con, table: str, rows: list[dict], load_id: str = "L1") -> None:
    load_raw_table(con, ListSource({table: rows}), table, load_id=load_id)


def stage(con, table: str, rows: list[dict] | None = None, hints: ParseHints | None = None, **kw):
    if rows is not None:
        load(con, table, rows)
    return stage_table(con, table, hints=hints or ParseHints(), pseudonym_key=KEY, now=NOW, **kw)


def quarantine(con, table: str) -> list[tuple]:
    return con.execute(
        "SELECT source_row, reason, detail FROM staging.quarantine WHERE table_name = ? ORDER BY source_row",
        [table],
    ).fetchall()


def staged(con, table: str, cols: str) -> list[tuple]:
    return con.execute(f"SELECT {cols} FROM staging.{table} ORDER BY _source_row").fetchall()


def order(oid: str, cid: str = "c1", purchased: str = "2024-01-01 10:00:00", **kw) -> dict:
    return {"order_id": oid, "customer_id": cid, "purchased_at": purchased, "status": "delivered", **kw}


# ------------------------------------------------------------------------------------------ typing
def test_types_trimming_and_normalisation(con):
    res = stage(
        con,
        "products",
        [
            {"product_id": "  p1 ", "category": " Cama, Mesa & Banho ", "price": " 10.50 ", "title": ""},
            {"product_id": "p2", "category": "Eletrônicos—Informática", "price": "1e2", "title": "  T  "},
            {"product_id": "p3", "category": "___", "price": "NaN"},
        ],
    )
    assert (res.raw_rows, res.staged_rows, res.quarantined_rows) == (3, 3, 0)
    assert staged(con, "products", "product_id, category, price, title") == [
        ("p1", "cama_mesa_banho", 10.5, None),
        ("p2", "eletronicos_informatica", 100.0, "T"),
        ("p3", None, None, None),  # 'NaN' in a numeric column is a missing value, not a bad one
    ]
    types = dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'staging' AND table_name = 'products'"
        ).fetchall()
    )
    assert (
        types["price"] == "DOUBLE" and types["product_id"] == "VARCHAR" and types["_source_row"] == "BIGINT"
    )
    # the Python twin of the category rule agrees
    assert canonical_category(" Cama, Mesa & Banho ") == "cama_mesa_banho"
    assert canonical_category("Eletrônicos—Informática") == "eletronicos_informatica"


def test_state_upper_zip_digits_status_lower(con):
    stage(
        con, "sellers", [{"seller_id": "s1", "state": " sp ", "zip_prefix": "01310-100", "city": "São Paulo"}]
    )
    assert staged(con, "sellers", "state, zip_prefix, city") == [("SP", "01310100", "São Paulo")]
    stage(con, "orders", [order("o1", status=" Delivered ")])
    assert staged(con, "orders", "status") == [("delivered",)]


def test_wrong_types_are_bad_type(con):
    res = stage(
        con,
        "order_items",
        [
            {"order_id": "o1", "item_seq": "1", "product_id": "p", "price": "abc"},
            {"order_id": "o1", "item_seq": "1.5", "product_id": "p", "price": "1"},
            {"order_id": "o1", "item_seq": "3.0", "product_id": "p", "price": "1", "quantity": "two"},
            {"order_id": "o1", "item_seq": "4", "product_id": "p", "price": "inf"},
            {"order_id": "o1", "item_seq": "5", "product_id": "p", "price": "2", "freight": "9999999999e999"},
            {"order_id": "o1", "item_seq": "6", "product_id": "p", "price": "2", "quantity": "3000000000"},
            {"order_id": "o1", "item_seq": "7", "product_id": "p", "price": "2.5", "quantity": " 2 "},
        ],
    )
    assert quarantine(con, "order_items") == [
        (1, "bad_type:price", "bad_type:price"),
        (2, "bad_type:item_seq", "bad_type:item_seq"),
        (3, "bad_type:quantity", "bad_type:quantity"),
        (4, "bad_type:price", "bad_type:price"),
        (5, "bad_type:freight", "bad_type:freight"),
        (6, "bad_type:quantity", "bad_type:quantity"),
    ]
    assert staged(con, "order_items", "item_seq, price, quantity") == [(7, 2.5, 2)]
    assert res.reasons == {
        "bad_type:price": 2,
        "bad_type:item_seq": 1,
        "bad_type:quantity": 2,
        "bad_type:freight": 1,
    }


def test_decimal_comma_hint(con):
    stage(
        con,
        "products",
        [{"product_id": "p1", "price": "1.234,56"}, {"product_id": "p2", "price": "0,5"}],
        hints=ParseHints(decimal=","),
    )
    assert staged(con, "products", "price") == [(1234.56,), (0.5,)]


def test_null_key_is_missing_required(con):
    res = stage(con, "products", [{"product_id": "  "}, {"product_id": None}, {"product_id": "p"}])
    assert quarantine(con, "products") == [
        (1, "missing_required:product_id", "missing_required:product_id"),
        (2, "missing_required:product_id", "missing_required:product_id"),
    ]
    assert res.staged_rows == 1


def test_duplicate_keys_keep_the_first_passing_row(con):
    res = stage(
        con,
        "products",
        [
            {"product_id": "p1", "title": "first"},
            {"product_id": "p2", "title": "bad first", "price": "-1"},
            {"product_id": "p1", "title": "second"},
            {"product_id": "p2", "title": "good second"},
            {"product_id": "p1", "title": "third"},
            {"product_id": "p2", "title": "good third"},
            {"product_id": "p1", "title": " first "},  # equal to the kept row once trimmed
        ],
    )
    assert staged(con, "products", "product_id, title, _source_row") == [
        ("p1", "first", 1),
        ("p2", "good second", 4),
    ]
    # a later row that disagrees with the kept one has its own reason: the first value won
    assert quarantine(con, "products") == [
        (2, "out_of_range:price", "out_of_range:price"),
        (3, "duplicate_key_conflict", "duplicate_key_conflict (kept products.csv:1)"),
        (5, "duplicate_key_conflict", "duplicate_key_conflict (kept products.csv:1)"),
        (6, "duplicate_key_conflict", "duplicate_key_conflict (kept products.csv:4)"),
        (7, "duplicate_key", "duplicate_key (kept products.csv:1)"),
    ]
    assert res.reasons == {"duplicate_key_conflict": 3, "duplicate_key": 1, "out_of_range:price": 1}


def test_composite_key_duplicates(con):
    stage(
        con,
        "payments",
        [
            {"order_id": "o1", "seq": "1", "value": "10"},
            {"order_id": "o1", "seq": "2", "value": "10"},
            {"order_id": "o1", "seq": "1", "value": "11"},
            {"order_id": "o2", "seq": "1", "value": "10"},
        ],
    )
    assert staged(con, "payments", "order_id, seq, value") == [
        ("o1", 1, 10.0),
        ("o1", 2, 10.0),
        ("o2", 1, 10.0),
    ]
    assert [q[:2] for q in quarantine(con, "payments")] == [(3, "duplicate_key_conflict")]


# ------------------------------------------------------------------------------------------ timestamps
def test_future_timestamp(con):
    # now = 2024-06-01 12:00; a day of slack; estimated delivery may lie up to a year ahead
    stage(
        con,
        "orders",
        [
            order("o1", purchased="2024-06-02 11:59:59"),
            order("o2", purchased="2024-06-02 12:00:01"),
            order("o3", purchased="2024-05-01", estimated_delivery_at="2024-07-01"),
            order("o4", purchased="2024-05-01", delivered_at="2024-06-30"),
        ],
    )
    assert quarantine(con, "orders") == [
        (2, "future_timestamp:purchased_at", "future_timestamp:purchased_at"),
        (4, "future_timestamp:delivered_at", "future_timestamp:delivered_at"),
    ]
    assert staged(con, "orders", "order_id") == [("o1",), ("o3",)]


def test_nat_and_unparseable_dates(con):
    stage(
        con,
        "orders",
        [
            order("o1", purchased="NaT"),
            order("o2", purchased="31/12/2023"),
            order("o3", approved_at="NaT"),
            order("o4", approved_at="2024-02-30"),
            order("o5", purchased="2024-01-01"),
            order("o6", purchased="2024-01-01T08:30:00"),
        ],
    )
    assert quarantine(con, "orders") == [
        (1, "missing_required:purchased_at", "missing_required:purchased_at"),
        (2, "bad_type:purchased_at", "bad_type:purchased_at"),
        (4, "bad_type:approved_at", "bad_type:approved_at"),
    ]
    assert staged(con, "orders", "order_id, purchased_at, approved_at") == [
        ("o3", datetime(2024, 1, 1, 10), None),
        ("o5", datetime(2024, 1, 1), None),
        ("o6", datetime(2024, 1, 1, 8, 30), None),
    ]


def test_timezone_conversion_to_utc(con):
    stage(
        con,
        "orders",
        [order("o1", purchased="2024-01-01 10:00:00", approved_at="2024-05-31 23:30:00")],
        hints=ParseHints(timezone="America/Sao_Paulo"),
    )
    assert staged(con, "orders", "purchased_at, approved_at") == [
        (datetime(2024, 1, 1, 13, 0), datetime(2024, 6, 1, 2, 30))
    ]
    stage(con, "orders", hints=ParseHints(timezone="Europe/Berlin"))  # CET in January, CEST in May
    assert staged(con, "orders", "purchased_at, approved_at") == [
        (datetime(2024, 1, 1, 9, 0), datetime(2024, 5, 31, 21, 30))
    ]
    with pytest.raises(ValueError, match="Mars/Olympus"):
        stage(con, "orders", hints=ParseHints(timezone="Mars/Olympus"))


@pytest.mark.parametrize(
    "tz,days",
    [
        ("America/Sao_Paulo", ["2018-11-03", "2018-11-04", "2019-02-16", "2019-02-17"]),  # DST at midnight
        ("America/New_York", ["2024-03-10", "2024-11-03"]),  # gap 02:00-03:00, repeated 01:00-02:00
        ("Asia/Kathmandu", ["2024-01-01"]),  # +05:45
        ("Australia/Lord_Howe", ["2024-04-07", "2024-10-06"]),  # 30-minute DST shift: not hour-aligned
    ],
)
def test_timezone_conversion_matches_icu_across_dst(con, tz, days):
    """The per-hour offset map gives exactly DuckDB's per-value ICU conversion, transitions included."""
    stamps = [f"{d} {h:02d}:{m:02d}:17" for d in days for h in range(24) for m in (0, 7, 29, 30, 44, 59)]
    rows = [order(f"o{i}", purchased=s) for i, s in enumerate(stamps)]
    res = stage_table_at(con, rows, ParseHints(timezone=tz))
    assert res.staged_rows == len(stamps)
    got = [v for (v,) in staged(con, "orders", "purchased_at")]
    expected = [
        v
        for (v,) in con.execute(
            "SELECT timezone('UTC', timezone(?, strptime(s, '%Y-%m-%d %H:%M:%S'))) FROM unnest(?) WITH "
            "ORDINALITY AS u(s, i) ORDER BY i",
            [tz, stamps],
        ).fetchall()
    ]
    assert got == expected


def stage_table_at(con, rows, hints):
    load(con, "orders", rows)
    return stage_table(con, "orders", hints=hints, pseudonym_key=KEY, now=datetime(2030, 1, 1))


def test_timestamp_formats_with_offsets(con):
    hints = ParseHints(
        timestamp_formats=("%d/%m/%Y %H:%M", "%Y-%m-%dT%H:%M:%S%z"), timezone="America/Sao_Paulo"
    )
    stage(
        con,
        "orders",
        [order("o1", purchased="01/01/2024 10:00"), order("o2", purchased="2024-01-01T10:00:00+01:00")],
        hints=hints,
    )
    assert staged(con, "orders", "purchased_at") == [(datetime(2024, 1, 1, 13),), (datetime(2024, 1, 1, 9),)]


def test_lifecycle_violation(con):
    stage(
        con,
        "orders",
        [
            order("o1", delivered_at="2023-12-31 10:00:00"),
            order("o2", approved_at="2024-01-01 09:00:00", estimated_delivery_at="2023-12-01"),
            order("o3", approved_at="2024-01-01 10:00:00", delivered_at="2024-01-05"),
        ],
    )
    assert quarantine(con, "orders") == [
        (1, "lifecycle:purchased_at_after_delivered_at", "lifecycle:purchased_at_after_delivered_at"),
        (
            2,
            "lifecycle:purchased_at_after_approved_at",
            "lifecycle:purchased_at_after_approved_at; lifecycle:purchased_at_after_estimated_delivery_at",
        ),
    ]


# ---------------------------------------------------------------------------------- ranges, vocabularies, geo
def test_negative_price_out_of_range(con):
    stage(con, "products", [{"product_id": "p1", "price": "-0.01"}, {"product_id": "p2", "price": "0"}])
    assert quarantine(con, "products") == [(1, "out_of_range:price", "out_of_range:price")]
    assert staged(con, "products", "price") == [(0.0,)]


def test_review_score_0_and_6(con):
    rows = [
        {"review_id": f"r{s}", "order_id": "o1", "score": str(s), "created_at": "2024-01-02"}
        for s in range(7)
    ]
    res = stage(con, "reviews", rows)
    assert quarantine(con, "reviews") == [
        (1, "out_of_range:score", "out_of_range:score"),
        (7, "out_of_range:score", "out_of_range:score"),
    ]
    assert staged(con, "reviews", "score") == [(1,), (2,), (3,), (4,), (5,)]
    assert any("orders does not exist" in n for n in res.notes)


def test_not_allowed_event_type(con):
    stage(
        con,
        "events",
        [
            {
                "event_id": "e1",
                "ts": "2024-01-01",
                "customer_id": "c",
                "event_type": "click",
                "product_id": "p",
            },
            {
                "event_id": "e2",
                "ts": "2024-01-01",
                "customer_id": "c",
                "event_type": " VIEW ",
                "product_id": "p",
            },
            {
                "event_id": "e3",
                "ts": "2024-01-01",
                "customer_id": "c",
                "event_type": "Purchase",
                "product_id": "p",
            },
        ],
    )
    assert quarantine(con, "events") == [(1, "not_allowed:event_type", "not_allowed:event_type")]
    assert staged(con, "events", "event_type") == [("view",), ("purchase",)]


def test_coordinates_outside_world_and_outside_brazil(con):
    rows = [
        {"customer_id": "c1", "lat": "91", "lng": "-46"},
        {"customer_id": "c2", "lat": "-23.5", "lng": "-181"},
        {"customer_id": "c3", "lat": "40.7", "lng": "-74.0"},  # New York
        {"customer_id": "c4", "lat": "-23.55", "lng": "-46.63"},  # São Paulo
        {"customer_id": "c5", "lat": None, "lng": None},
        {"customer_id": "c6", "lat": "-23.55", "lng": None},
    ]
    res = stage(con, "customers", rows)
    assert quarantine(con, "customers") == [
        (1, "out_of_range:lat", "out_of_range:lat; outside_bounds:lat"),
        (2, "out_of_range:lng", "out_of_range:lng; outside_bounds:lat"),
    ]
    assert res.staged_rows == 4
    res = stage(con, "customers", hints=ParseHints(geo_bounds="brazil"))
    assert quarantine(con, "customers") == [
        (1, "out_of_range:lat", "out_of_range:lat; outside_bounds:lat"),
        (2, "out_of_range:lng", "out_of_range:lng; outside_bounds:lat"),
        (3, "outside_bounds:lat", "outside_bounds:lat"),
    ]
    assert res.staged_rows == 3  # c4, and the rows without (complete) coordinates


def test_required_coordinates_in_regions(con):
    stage(
        con,
        "regions",
        [
            {"region_id": "state:SP", "level": "state", "lat": "-23.5", "lng": "-46.6"},
            {"region_id": "state:XX", "level": "State", "lat": None, "lng": "-46.6"},
            {"region_id": "zip9:1", "level": "zip9", "lat": "1", "lng": "1"},
        ],
    )
    assert quarantine(con, "regions") == [
        (2, "missing_required:lat", "missing_required:lat"),
        (3, "not_allowed:level", "not_allowed:level"),
    ]


# ------------------------------------------------------------------------------------------ foreign keys
def test_orphan_items(con):
    stage(con, "products", [{"product_id": "p1"}])
    stage(con, "orders", [order("o1")])
    res = stage(
        con,
        "order_items",
        [
            {"order_id": "o1", "item_seq": "1", "product_id": "p1", "price": "1"},
            {"order_id": "o9", "item_seq": "1", "product_id": "p1", "price": "1"},
            {"order_id": "o1", "item_seq": "2", "product_id": "p9", "price": "1"},
            {"order_id": "o9", "item_seq": "2", "product_id": "p9", "price": "-1"},
        ],
    )
    assert quarantine(con, "order_items") == [
        (2, "orphan:orders", "orphan:orders"),
        (3, "orphan:products", "orphan:products"),
        (4, "out_of_range:price", "out_of_range:price; orphan:orders; orphan:products"),
    ]
    # sellers are not staged: that check is skipped, and said so; a NULL seller is fine anyway
    assert [n for n in res.notes if "sellers" in n] and not [n for n in res.notes if "->orders" in n]
    assert res.staged_rows == 1


def test_pseudonymised_foreign_keys_still_join(con):
    stage(con, "customers", [{"customer_id": "cust-A"}, {"customer_id": "cust-B"}])
    stage(con, "orders", [order("o1", cid=" cust-A"), order("o2", cid="cust-Z")])
    assert quarantine(con, "orders") == [(2, "orphan:customers", "orphan:customers")]
    assert staged(con, "orders", "customer_id") == [(pseudonym("cust-A", KEY),)]
    joined = con.execute("SELECT count(*) FROM staging.orders o JOIN staging.customers c USING (customer_id)")
    assert joined.fetchall() == [(1,)]


def test_pseudonyms_computed_once_per_distinct_value_equal_value_by_value(con):
    """Staging maps each distinct id to its pseudonym once and joins it back: the same values, NULLs and
    trimmed variants included, as the HMAC applied to every row (the maps are dropped afterwards)."""
    ids = [" c1", "c1", "c1 ", "", "c2", "N/A", "c2", "cé", "\tc3"] * 3
    rows = [
        {
            "event_id": f"e{i}",
            "ts": "2024-01-01 10:00:00",
            "customer_id": cid,
            "event_type": "view",
            "product_id": "p1",
        }
        for i, cid in enumerate(ids)
    ]
    stage(con, "events", rows)
    mapped = staged(con, "events", "event_id, customer_id")
    spec = TABLES["events"]
    raw_cols = set(staging_mod._table_columns(con, "raw", "events"))
    assert staging_mod._pseudonym_columns(spec, raw_cols) == [spec.column_names.index("customer_id")]
    work = staging_mod._build_work_sql(spec, raw_cols, "raw.events", ParseHints(), NOW, {})
    per_value = con.execute(
        f"SELECT event_id, customer_id FROM ({work}) WHERE _reason IS NULL ORDER BY _source_row"
    ).fetchall()
    assert mapped == per_value and len(mapped) == 24
    assert mapped[0][1] == mapped[1][1] == mapped[2][1] == pseudonym("c1", KEY)
    assert mapped[4][1] == pseudonym("N/A", KEY) and mapped[6][1] == pseudonym("cé", KEY)
    assert not con.execute(
        "SELECT * FROM duckdb_tables() WHERE table_name LIKE '_stage_pseudonyms%'"
    ).fetchall()


# -------------------------------------------------------------------------------------- malformed, quarantine
def test_malformed_line(con):
    stage(
        con,
        "orders",
        [
            {"order_id": "o1,c1,delivered,2024-01-01,extra", "_parse_error": "wrong_field_count"},
            {
                "order_id": "o2",
                "customer_id": "c1",
                "purchased_at": "2024-01-01",
                "_parse_error": "invalid_utf8",
            },
            order("o3"),
        ],
    )
    assert quarantine(con, "orders") == [
        (1, "malformed_line", "wrong_field_count"),
        (2, "malformed_line", "invalid_utf8"),
    ]
    assert staged(con, "orders", "order_id") == [("o3",)]
    row = con.execute(
        "SELECT load_id, source_file, original_row FROM staging.quarantine WHERE source_row = 1"
    )
    load_id, source_file, original = row.fetchall()[0]
    assert (load_id, source_file) == ("L1", "orders.csv")
    # the line may hold a customer id in any field: every field of a malformed orders line is pseudonymised
    assert json.loads(original)["order_id"] == pseudonym("o1,c1,delivered,2024-01-01,extra", KEY)


def test_quarantine_row_shape(con):
    stage(con, "products", [{"product_id": "p1", "price": "x", "title": "T"}])
    rows = con.execute("SELECT * FROM staging.quarantine").fetchdf()
    assert list(rows.columns) == [c for c, _, _ in column_schema("quarantine")]
    r = rows.iloc[0]
    assert (r.table_name, r.load_id, r.source_file, r.source_row, r.reason) == (
        "products",
        "L1",
        "products.csv",
        1,
        "bad_type:price",
    )
    assert json.loads(r.original_row) == {
        "product_id": "p1",
        "category": None,
        "title": "T",
        "description": None,
        "price": "x",
        "image_uri": None,
        "attributes": None,
    }
    assert r.quarantined_at == pd.Timestamp(NOW)


def test_large_review_text_is_staged_intact_and_masked(con):
    words = "produto ótimo entrega rápida recomendo " * 27_000  # ~1 MB
    text = "contato: maria@example.com " + words + " ligue (11) 91234-5678"
    assert len(text.encode()) > 1_000_000
    stage(
        con,
        "reviews",
        [
            {
                "review_id": "r1",
                "order_id": "o1",
                "score": "5",
                "created_at": "2024-01-01",
                "title": "Visite https://loja.example/x",
                "text": text,
            }
        ],
    )
    ((title, got),) = staged(con, "reviews", "title, text")
    assert got == mask_text(text)
    assert got.startswith("contato: [EMAIL] produto") and got.endswith(" ligue [PHONE]")
    assert len(got) == len(text) - len("maria@example.com") + len("[EMAIL]") - len("(11) 91234-5678") + len(
        "[PHONE]"
    )
    assert title == "Visite [URL]"


# -------------------------------------------------------------------------- invariant, idempotence, atomicity
def _mixed_orders() -> list[dict]:
    return [
        order("o1"),
        order("o1"),
        order("o2", purchased="bad"),
        order(""),
        order("o3", purchased="2030-01-01"),
        {"order_id": "x", "_parse_error": "wrong_field_count"},
        order("o4", delivered_at="2020-01-01"),
        order("o5"),
    ]


def test_invariant_and_idempotent_restaging(con):
    stage(con, "products", [{"product_id": "p1", "price": "-1"}])
    first = stage(con, "orders", _mixed_orders())
    assert first.raw_rows == first.staged_rows + first.quarantined_rows == 8
    assert (first.staged_rows, first.quarantined_rows) == (2, 6)
    assert first.load_id == "L1"
    before = con.execute("SELECT * FROM staging.quarantine ORDER BY table_name, source_row").fetchall()
    second = stage(con, "orders")
    assert (second.raw_rows, second.staged_rows, second.quarantined_rows, second.reasons) == (
        first.raw_rows,
        first.staged_rows,
        first.quarantined_rows,
        first.reasons,
    )
    assert (
        con.execute("SELECT * FROM staging.quarantine ORDER BY table_name, source_row").fetchall() == before
    )
    # the products row is untouched by re-staging orders
    assert con.execute(
        "SELECT count(*) FROM staging.quarantine WHERE table_name = 'products'"
    ).fetchall() == [(1,)]
    # a new raw load replaces the quarantine rows of the table (with the new load id)
    load(con, "orders", [order("o1"), order("o1")], load_id="L2")
    third = stage(con, "orders")
    assert (third.load_id, third.staged_rows, third.quarantined_rows) == ("L2", 1, 1)
    assert con.execute(
        "SELECT load_id, count(*) FROM staging.quarantine WHERE table_name = 'orders' GROUP BY ALL"
    ).fetchall() == [("L2", 1)]
    leftovers = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_name LIKE '%building%' "
        "OR starts_with(table_name, '_stage_')"
    ).fetchall()
    assert leftovers == []


def test_invariant_violation_rolls_back(con, monkeypatch):
    stage(con, "orders", _mixed_orders())
    before_staged = con.execute("SELECT * FROM staging.orders ORDER BY order_id").fetchall()
    before_q = con.execute("SELECT * FROM staging.quarantine ORDER BY source_row").fetchall()
    load(con, "orders", [order("n1"), order("n2")], load_id="L2")
    real = staging_mod._scalar

    def lying(c, sql, params=None):  # pretend raw has one row more than it has
        value = real(c, sql, params)
        return value + 1 if sql.startswith('SELECT count(*) FROM "raw"') else value

    monkeypatch.setattr(staging_mod, "_scalar", lying)
    with pytest.raises(StagingError, match="invariant"):
        stage(con, "orders")
    assert con.execute("SELECT * FROM staging.orders ORDER BY order_id").fetchall() == before_staged
    assert con.execute("SELECT * FROM staging.quarantine ORDER BY source_row").fetchall() == before_q
    assert con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE '%building%'"
    ).fetchall() == [(0,)]


def test_empty_and_missing_raw_tables(con):
    res = stage(con, "events", [])
    assert (res.raw_rows, res.staged_rows, res.quarantined_rows, res.load_id) == (0, 0, 0, None)
    assert [c for c, _, _ in column_schema("events")] == [
        r[0]
        for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "'staging' AND table_name = 'events' ORDER BY ordinal_position"
        ).fetchall()
    ]
    with pytest.raises(StagingError, match="raw.sellers does not exist"):
        stage_table(con, "sellers", hints=ParseHints(), pseudonym_key=KEY)


# ----------------------------------------------------------------------------------------- privacy end to end
def _all_text(con) -> list[tuple[str, str]]:
    cols = con.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'staging' AND data_type = 'VARCHAR'"
    ).fetchall()
    out = []
    for table, column in cols:
        for (v,) in con.execute(
            f'SELECT "{column}" FROM staging."{table}" WHERE "{column}" IS NOT NULL'
        ).fetchall():
            out.append((f"{table}.{column}", v))
    return out


def test_no_raw_identifier_reaches_staging_or_quarantine(con):
    secrets_ = {
        "customer_ids": ["CUST-7f3a9", "CUST-b81c2", "CUST-00d4e", "CUST-e5e5e"],
        "names": ["Josefina Albuquerque", "Thiago Nascimento"],
        "emails": ["josefina.alb@example.com", "thiago_n@mail.example.org"],
        "phones": ["+55 11 98765-4321", "(21) 3344-5566"],
    }
    data = {
        "customers": [
            {
                "customer_id": "CUST-7f3a9",
                "name": "Josefina Albuquerque",
                "email": "josefina.alb@example.com",
                "phone": "+55 11 98765-4321",
                "lat": "-23.5",
                "lng": "-46.6",
                "state": "sp",
            },
            {
                "customer_id": "CUST-b81c2",
                "name": "Thiago Nascimento",
                "email": "thiago_n@mail.example.org",
                "phone": "(21) 3344-5566",
                "lat": "95",
                "lng": "0",
            },  # quarantined: out of range
            {"customer_id": "CUST-7f3a9", "name": "Josefina Albuquerque"},  # quarantined: duplicate
        ],
        "orders": [
            order("o1", cid="CUST-7f3a9"),
            order("o2", cid="CUST-00d4e"),  # orphan
            {"order_id": "o3;CUST-e5e5e;x", "_parse_error": "wrong_field_count"},  # id in the wrong field
            order("o4", cid="CUST-7f3a9", purchased="not a date"),
        ],
        "reviews": [
            {
                "review_id": "r1",
                "order_id": "o1",
                "customer_id": "CUST-7f3a9",
                "score": "9",
                "created_at": "2024-01-02",
                "text": "me liga +55 11 98765-4321 ou escreva para josefina.alb@example.com",
            },
            {
                "review_id": "r2",
                "order_id": "o1",
                "customer_id": "CUST-7f3a9",
                "score": "5",
                "created_at": "2024-01-02",
                "title": "ok",
                "text": "email thiago_n@mail.example.org tel (21) 3344-5566",
            },
        ],
        "events": [
            {
                "event_id": "e1",
                "ts": "2024-01-01",
                "customer_id": "CUST-7f3a9",
                "event_type": "view",
                "product_id": "p",
            },
            {
                "event_id": "e2",
                "ts": "2024-01-01",
                "customer_id": "CUST-e5e5e",
                "event_type": "zoom",
                "product_id": "p",
            },
        ],
    }
    src = ListSource(data)
    for table in TABLE_ORDER:
        load_raw_table(con, src, table, load_id="L1")
    results = {t: stage_table(con, t, hints=ParseHints(), pseudonym_key=KEY, now=NOW) for t in TABLE_ORDER}
    assert sum(r.quarantined_rows for r in results.values()) >= 7
    assert all(r.raw_rows == r.staged_rows + r.quarantined_rows for r in results.values())
    texts = _all_text(con)
    assert any(where.startswith("quarantine.original_row") for where, _ in texts)
    needles = [s for group in secrets_.values() for s in group]
    hits = [(where, n) for where, v in texts for n in needles if n.lower() in v.lower()]
    assert hits == []
    # yet the pseudonyms are consistent across tables, and the raw layer still has the truth
    assert con.execute(
        "SELECT count(*) FROM staging.reviews r JOIN staging.customers c USING (customer_id)"
    ).fetchall() == [(1,)]
    assert con.execute("SELECT count(*) FROM raw.customers WHERE customer_id = 'CUST-7f3a9'").fetchall() == [
        (2,)
    ]
    ((name, email, phone),) = con.execute("SELECT name, email, phone FROM staging.customers").fetchall()
    assert (name, email, phone) == (
        pseudonym("Josefina Albuquerque", KEY),
        pseudonym("josefina.alb@example.com", KEY),
        pseudonym("+55 11 98765-4321", KEY),
    )


def test_column_schema_matches_canonical_spec():
    for table, spec in TABLES.items():
        schema = column_schema(table)
        assert [(n, t) for n, t, _ in schema][: len(spec.columns)] == [
            (c.name, c.dtype) for c in spec.columns
        ]
    desc = {n: d for n, _, d in column_schema("customers")}
    assert "pseudonym" in desc["email"] and "key" in desc["customer_id"]


def test_two_digit_years_in_the_documented_window(con):
    """%y years land in [two_digit_year_start, +99]; full-year formats tried first are not moved."""
    from ecom_pipeline.cleaning.staging import _cast_sql

    col = TABLES["orders"].column("purchased_at")

    def year(text: str, hints: ParseHints):
        value = con.execute(f"SELECT {_cast_sql(col, repr(text), hints)}").fetchall()[0][0]
        return value.year if value else None

    default = ParseHints(timestamp_formats=("%Y-%m-%d", "%d/%m/%y"))
    assert default.two_digit_year_start == 1970
    assert [year(t, default) for t in ("13/02/19", "01/02/69", "01/02/70", "01/02/99", "2019-02-13")] == [
        2019,
        2069,
        1970,
        1999,
        2019,
    ]
    # "13/02/2019" does not fit %d/%m/%y (a 4-digit year): no value, so bad_type -- never 2020 or 0019
    assert year("13/02/2019", default) is None
    window_1950 = ParseHints(timestamp_formats=("%d/%m/%y",), two_digit_year_start=1950)
    assert [year(t, window_1950) for t in ("01/02/49", "01/02/50", "01/02/69", "01/02/19")] == [
        2049,
        1950,
        1969,
        2019,
    ]

    # through staging: 2069 is in the future, 1970 before MIN_TIMESTAMP: both quarantined with the reason
    rows = [
        {"order_id": f"o{i}", "customer_id": "c", "purchased_at": t}
        for i, t in enumerate(["13/02/19", "01/02/69", "01/02/70", "13/02/2019"])
    ]
    stage(con, "customers", [{"customer_id": "c"}])
    stage(con, "orders", rows, hints=default)
    assert staged(con, "orders", "order_id, year(purchased_at)") == [("o0", 2019)]
    assert [q[:2] for q in quarantine(con, "orders")] == [
        (2, "future_timestamp:purchased_at"),
        (3, "ancient_timestamp:purchased_at"),
        (4, "bad_type:purchased_at"),
    ]


def test_trim_sql_equals_python_strip_of_trim_chars():
    """The cheap first/last-character test in front of trim lets through every value that needs it."""
    from ecom_pipeline.cleaning.rules import TRIM_CHARS

    values = ["", "a", "ab", "é", "!a", "a!", "\x01a", "a\x01", "x\xa0y", "\u2003a", "a\u2003", "\x1f", "  "]
    values += [f"{c}a" for c in TRIM_CHARS] + [f"a{c}" for c in TRIM_CHARS] + [f"{c}é{c}" for c in TRIM_CHARS]
    values += [TRIM_CHARS, TRIM_CHARS + "a" + TRIM_CHARS[::-1]]
    con = duckdb.connect()
    got = con.execute(
        f"SELECT {staging_mod._trim_sql('v')} FROM unnest($vals) WITH ORDINALITY t(v, i) ORDER BY i",
        {"vals": values},
    ).fetchall()
    assert [g[0] for g in got] == [v.strip(TRIM_CHARS) or None for v in values]
