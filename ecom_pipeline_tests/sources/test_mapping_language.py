"""The mapping language for real exports (docs/mapping.md): coalesce, when, abs, guest_per_order, filter,
ship-to columns, Parquet input and two-digit years -- each read through MappedSource and staged."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from ecom_pipeline.canonical import NON_PURCHASE_STATUSES, TABLE_ORDER
from ecom_pipeline.cleaning.staging import stage_table
from ecom_pipeline.loading import load_raw_table
from ecom_pipeline.sources.mapped import MappedSource, MappingError

KEY = b"k" * 32
NOW = datetime(2026, 1, 1)

# A UCI-like line export: a cancellation invoice, a return line, guests (0 and empty), another country.
LINES = pd.DataFrame(
    {
        "Invoice": ["1001", "1001", "C1002", "1003", "1004", "1004", "1005", "1006"],
        "Code": ["A", "POST", "A", "B", "B", "A", "A", "B"],
        "Qty": ["2", "1", "-2", "-1", "3", "1", "4", "1"],
        "Price": ["1.5", "4", "1.5", "2", "2", "1.5", "1.5", "2"],
        "When": [
            "03/12/10 08:26",
            "03/12/10 08:26",
            "04/12/10 09:00",
            "05/12/10 10:00",
            "06/12/10 11:00",
            "06/12/10 11:00",
            "07/12/10 12:00",
            "08/12/69 13:00",
        ],
        "Cust": ["17850", "17850", "17850", "0", None, None, "12583", "13047"],
        "Alt": [None, None, None, None, "ALT-9", "ALT-9", None, None],
        "Country": [
            "United Kingdom",
            "United Kingdom",
            "United Kingdom",
            "France",
            "United Kingdom",
            "United Kingdom",
            "Germany",
            "United Kingdom",
        ],
        "City": ["London", "London", "London", "Paris", " ", " ", "Berlin", "Leeds"],
        "Postcode": ["SW1A 1AA", "SW1A 1AA", "SW1A 1AA", "75001", None, None, "10115", "LS1 4AP"],
    }
)

GUEST = {"guest_per_order": {"column": "Cust", "order": "Invoice", "guest_values": ["0"]}}
NON_PRODUCT = {"drop": [{"column": "Code", "equals": ["POST"]}]}


def mapping(file: str = "lines.csv", **orders_extra) -> dict:
    orders = {
        "file": file,
        "deduplicate": True,
        "columns": {
            "order_id": "Invoice",
            "purchased_at": "When",
            "ship_country": "Country",
            "ship_postal_code": "Postcode",
        },
        "derive": {
            "customer_id": GUEST,
            "status": {
                "when": [
                    {"column": "Invoice", "prefix": "C", "then": "canceled"},
                    {"column": "Qty", "regex": "^-", "then": "returned"},
                ],
                "else": "delivered",
            },
            "ship_city": {"coalesce": {"columns": ["City", "Country"], "default": "unknown"}},
        },
        **orders_extra,
    }
    return {
        "timestamp_formats": ["%d/%m/%y %H:%M"],
        "timezone": "Europe/London",
        "tables": {
            "orders": orders,
            "order_items": {
                "file": file,
                "filter": NON_PRODUCT,
                "columns": {"order_id": "Invoice", "product_id": "Code", "price": "Price"},
                "derive": {"item_seq": {"row_number_within": "order_id"}, "quantity": {"abs": "Qty"}},
            },
            "customers": {"file": file, "deduplicate": True, "derive": {"customer_id": GUEST}},
            "products": {
                "file": file,
                "filter": NON_PRODUCT,
                "deduplicate": True,
                "columns": {"product_id": "Code"},
            },
        },
    }


def write(folder: Path, fmt: str = "csv") -> str:
    if fmt == "csv":
        LINES.to_csv(folder / "lines.csv", index=False)
        return "lines.csv"
    LINES.to_parquet(folder / "lines.parquet")
    return "lines.parquet"


def ingest(src: MappedSource) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for table in TABLE_ORDER:
        load_raw_table(con, src, table, load_id="L1")
        stage_table(con, table, hints=src.parse_hints(table), pseudonym_key=KEY, now=NOW)
    return con


@pytest.fixture(params=["csv", "parquet"])
def staged(request, tmp_path):
    file = write(tmp_path, request.param)
    src = MappedSource(mapping(file), data_dir=tmp_path)
    return src, ingest(src)


def rows(con, sql):
    return con.execute(sql).fetchall()


def test_status_guests_ship_to_and_two_digit_years(staged):
    src, con = staged
    got = rows(
        con,
        "SELECT order_id, status, ship_city, ship_country, ship_postal_code, purchased_at "
        "FROM staging.orders ORDER BY order_id",
    )
    assert got == [
        ("1001", "delivered", "London", "United Kingdom", "SW1A 1AA", datetime(2010, 12, 3, 8, 26)),
        ("1003", "returned", "Paris", "France", "75001", datetime(2010, 12, 5, 10, 0)),
        ("1004", "delivered", "United Kingdom", "United Kingdom", None, datetime(2010, 12, 6, 11, 0)),
        ("1005", "delivered", "Berlin", "Germany", "10115", datetime(2010, 12, 7, 12, 0)),  # GMT = UTC in Dec
        ("C1002", "canceled", "London", "United Kingdom", "SW1A 1AA", datetime(2010, 12, 4, 9, 0)),
    ]
    assert {"canceled", "returned"} <= set(NON_PURCHASE_STATUSES)
    # "69" is 2069 in the default window (1970..2069): a future order, quarantined with its reason
    assert rows(con, "SELECT source_row, reason FROM staging.quarantine WHERE table_name = 'orders'") == [
        (8, "future_timestamp:purchased_at")
    ]
    # guests: "0" on invoice 1003 and empty on 1004 -> one synthetic customer per order, no quarantine
    assert rows(con, "SELECT count(*) FROM staging.customers") == [(5,)]  # 17850, 12583, 13047 + 2 guests
    assert rows(con, "SELECT count(*) FROM staging.quarantine WHERE table_name = 'customers'") == [(0,)]
    assert src.table_facts("customers")["guest_rows"] == 3  # three guest lines (1003, 1004 twice)
    raw_ids = {r[0] for r in rows(con, "SELECT customer_id FROM raw.orders")}
    assert {"guest-1003", "guest-1004"} <= raw_ids
    # the same guest pseudonym on the order and the customer row: no orphan
    assert rows(
        con, "SELECT count(*) FROM staging.orders o ANTI JOIN staging.customers c USING (customer_id)"
    ) == [(0,)]


def test_filter_and_abs_on_items(staged):
    src, con = staged
    assert src.table_facts("order_items")["rows_filtered_out"] == 1  # the POST line
    assert src.table_facts("products")["rows_filtered_out"] == 1
    assert src.describe()["filtered_out"]["order_items"] == 1
    items = rows(
        con,
        "SELECT order_id, item_seq, product_id, quantity FROM staging.order_items "
        "ORDER BY order_id, item_seq",
    )
    # 1001 keeps its one product line (item_seq counts only the rows read), the return keeps 2 and 1 items
    assert [i for i in items if i[0] in ("1001", "C1002", "1003")] == [
        ("1001", 1, "A", 2),
        ("1003", 1, "B", 1),
        ("C1002", 1, "A", 2),
    ]
    assert rows(con, "SELECT product_id FROM staging.products ORDER BY 1") == [("A",), ("B",)]


def test_keep_filter_reads_only_matching_rows(tmp_path):
    write(tmp_path)
    m = mapping()
    for spec in m["tables"].values():
        spec["filter"] = {
            "keep": {"column": "Country", "equals": "United Kingdom"},
            "drop": [{"column": "Code", "equals": "POST"}],
        }
    src = MappedSource(m, data_dir=tmp_path)
    orders = pd.concat(src.read("orders"))
    assert sorted(orders["order_id"]) == ["1001", "1004", "1006", "C1002"]
    assert src.table_facts("orders")["rows_filtered_out"] == 3  # 1003 (France), 1005 (Germany), POST line


def test_when_else_column_and_equals_list(tmp_path):
    pd.DataFrame(
        {
            "id": ["1", "2", "3", "4"],
            "c": ["x", "x", "x", "x"],
            "t": ["2020-01-01"] * 4,
            "STATUS": ["Shipped", "Cancelled", "On Hold", None],
        }
    ).to_csv(tmp_path / "o.csv", index=False)
    m = {
        "tables": {
            "orders": {
                "file": "o.csv",
                "columns": {"order_id": "id", "customer_id": "c", "purchased_at": "t"},
                "derive": {
                    "status": {
                        "when": [
                            {"column": "STATUS", "equals": ["Cancelled", "Canceled"], "then": "canceled"},
                            {"column": "STATUS", "empty": True, "then": "unknown"},
                        ],
                        "else": {"column": "STATUS"},
                    }
                },
            }
        }
    }
    src = MappedSource(m, data_dir=tmp_path)
    assert list(pd.concat(src.read("orders"))["status"]) == ["Shipped", "canceled", "On Hold", "unknown"]


@pytest.mark.parametrize(
    "derive, key, message",
    [
        ({"status": {"when": [{"column": "Country", "equals": "x"}]}}, "derive.status.when[0]", "then"),
        (
            {"status": {"when": [{"column": "Country", "resembles": "x", "then": "y"}]}},
            "derive.status.when[0]",
            "exactly one of",
        ),
        (
            {"status": {"when": [{"column": "Country", "regex": "(", "then": "y"}]}},
            "when[0].regex",
            "not a valid regular expression",
        ),
        (
            {"status": {"when": [{"column": "Nope", "equals": "x", "then": "y"}]}},
            "tables.orders",
            "'Nope' is not in the file",
        ),
        ({"status": {"coalesce": "City"}}, "derive.status.coalesce", "coalesce: [Col A, Col B]"),
        ({"status": {"abs": ["Qty"]}}, "derive.status.abs", "one source column"),
        ({"status": {"coalesce": ["City"], "else": "x"}}, "derive.status.else", "unknown derivation"),
        (
            {"status": {"guest_per_order": {"column": "Cust"}}},
            "derive.status.guest_per_order",
            "order: InvoiceNo",
        ),
    ],
)
def test_mapping_language_errors_name_the_key(tmp_path, derive, key, message):
    write(tmp_path)
    m = mapping()
    m["tables"]["orders"]["derive"].update(derive)
    with pytest.raises(Exception) as err:
        MappedSource(m, data_dir=tmp_path)
    assert key in str(err.value) and message in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "edit, key, message",
    [
        (
            lambda m: m["tables"]["orders"].update(filter={"keep": "United Kingdom"}),
            "tables.orders.filter.keep[0]",
            "a condition names a source column",
        ),
        (lambda m: m["tables"]["orders"].update(filter={"only": {}}), "tables.orders.filter", "keep"),
        (lambda m: m.update(two_digit_year_start="1970"), "two_digit_year_start", "must be a year"),
        (lambda m: m.update(**{"x-anchors": {"a": 1}}), None, None),  # x- keys are free
    ],
)
def test_filter_and_top_level_errors(tmp_path, edit, key, message):
    write(tmp_path)
    m = mapping()
    edit(m)
    if key is None:
        MappedSource(m, data_dir=tmp_path)
        return
    with pytest.raises(MappingError) as err:
        MappedSource(m, data_dir=tmp_path)
    assert key in str(err.value) and message in str(err.value), str(err.value)


def test_two_digit_year_start_from_the_mapping(tmp_path):
    write(tmp_path)
    m = mapping()
    m["two_digit_year_start"] = 1950
    src = MappedSource(m, data_dir=tmp_path)
    assert src.parse_hints("orders").two_digit_year_start == 1950
    con = ingest(src)
    # "69" is now 1969, not 2069: before 1990, so ancient (with the default window it was future_timestamp)
    assert rows(con, "SELECT reason FROM staging.quarantine WHERE table_name = 'orders'") == [
        ("ancient_timestamp:purchased_at",)
    ]


def test_canceled_and_returned_orders_are_not_revenue():
    from ecom_pipeline.ml.forecasting.series import order_lines

    orders = pd.DataFrame(
        {
            "order_id": ["o1", "o2", "o3"],
            "customer_id": ["c", "c", "c"],
            "status": ["delivered", "canceled", "returned"],
            "purchased_at": pd.to_datetime(["2020-01-01"] * 3),
        }
    )
    items = pd.DataFrame(
        {
            "order_id": ["o1", "o2", "o3"],
            "product_id": ["p"] * 3,
            "price": [10.0, 20.0, 30.0],
            "freight": [None] * 3,
            "quantity": [1, 1, 1],
        }
    )
    lines = order_lines(
        orders,
        items,
        pd.DataFrame({"product_id": ["p"], "category": ["toys"]}),
        pd.DataFrame({"customer_id": ["c"], "state": ["SP"]}),
    )
    assert lines["order_id"].tolist() == ["o1"] and lines["revenue"].sum() == 10.0
