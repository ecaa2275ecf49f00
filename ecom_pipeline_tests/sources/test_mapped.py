"""MappedSource: the shipped retail example, the mapping validation errors, and file-level options."""

from __future__ import annotations

import csv
import json
import shutil
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ecom_pipeline.sources import make_source
from ecom_pipeline.sources.base import SourceError
from ecom_pipeline.sources.mapped import MappedSource, MappingError

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples"
RETAIL_YAML = EXAMPLES / "retail_orders.yaml"
RETAIL_CSV = EXAMPLES / "retail_orders.csv"


def _lines() -> list[dict]:
    with open(RETAIL_CSV, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _all(src, table, chunk_rows=7) -> pd.DataFrame:
    chunks = list(src.read(table, chunk_rows=chunk_rows))
    assert all(len(c) <= chunk_rows for c in chunks)
    return pd.concat(chunks, ignore_index=True)


@pytest.fixture(scope="module")
def retail():
    src = MappedSource.from_yaml(RETAIL_YAML)
    return src, {t: _all(src, t) for t in sorted(src.tables())}


# ---------------------------------------------------------------- the shipped example


def test_example_has_forty_lines():
    lines = _lines()
    assert len(lines) == 40 and list(lines[0])[:3] == ["Row ID", "Order ID", "Order Date"]


def test_retail_example_counts(retail):
    src, t = retail
    assert src.tables() == {"orders", "order_items", "customers", "products"}
    # 16 products + the one later line that names a product differently: it goes on to raw, where staging
    # quarantines it as duplicate_key_conflict (the first name wins); identical repeats are dropped here
    assert {k: len(v) for k, v in t.items()} == {
        "orders": 15,
        "order_items": 40,
        "customers": 10,
        "products": 17,
    }
    d = src.describe()
    assert d["duplicates_dropped"] == {"orders": 25, "order_items": 0, "customers": 30, "products": 23}
    assert d["conflicting_duplicates"] == {"orders": 0, "order_items": 0, "customers": 0, "products": 1}
    assert src.table_facts("products") == {
        "rows_filtered_out": 0,
        "identical_duplicates_dropped": 23,
        "conflicting_duplicate_rows": 1,
        "conflicting_variants_passed_to_staging": 1,
        "guest_rows": 0,
    }
    for name, df in t.items():
        assert df["_parse_error"].isna().all(), name
        assert (df["_source_file"] == "retail_orders.csv").all()


def test_dimension_rows_are_the_first_occurrence(retail):
    _, t = retail
    lines = _lines()
    first_row = {}
    for i, line in enumerate(lines, start=1):
        first_row.setdefault(("orders", line["Order ID"]), i)
        first_row.setdefault(("customers", line["Customer ID"]), i)
        first_row.setdefault(("products", line["Product ID"]), i)
    for table, key in (("orders", "order_id"), ("customers", "customer_id"), ("products", "product_id")):
        df = t[table]
        first = df.drop_duplicates(key)
        assert [first_row[(table, k)] for k in first[key]] == first["_source_row"].tolist(), table
    # the one repeated key is the conflicting product line, later than the kept one and named differently
    again = t["products"][t["products"]["product_id"].duplicated()]
    assert again["product_id"].tolist() == ["OFF-PA-1006"]
    assert again["title"].tolist() != [t["products"].iloc[0]["title"]]
    paper = t["products"].drop_duplicates("product_id").set_index("product_id").loc["OFF-PA-1006"]
    assert paper["title"] == "Premium Copy Paper, 500 Sheets"
    assert json.loads(paper["attributes"]) == {"Category": "Office Supplies", "Sub-Category": "Paper"}
    assert paper["category"] == "Paper"


def test_orders_and_items_values(retail):
    src, t = retail
    lines = _lines()
    orders, items = t["orders"], t["order_items"]
    assert set(orders["customer_id"]) <= set(t["customers"]["customer_id"])
    assert set(items["order_id"]) == set(orders["order_id"])
    assert set(items["product_id"]) == set(t["products"]["product_id"])
    # item_seq numbers the lines of each order 1..n in file order
    for _, g in items.groupby("order_id"):
        assert g["item_seq"].tolist() == [str(i) for i in range(1, len(g) + 1)]
        assert g["_source_row"].is_monotonic_increasing
    # unit price = Sales / Quantity; quantity as delivered
    for line, (_, item) in zip(lines, items.iterrows()):
        assert float(item["price"]) == pytest.approx(float(line["Sales"]) / int(line["Quantity"]), abs=1e-6)
        assert item["quantity"] == line["Quantity"]
    # dates parse with the mapping's formats (staging does the parsing, with these hints)
    hints = src.parse_hints("orders")
    assert hints.timezone == "America/New_York" and hints.timestamp_formats == ("%m/%d/%Y",)
    parsed = [datetime.strptime(v, hints.timestamp_formats[0]) for v in orders["purchased_at"]]
    assert parsed[0] == datetime.strptime(lines[0]["Order Date"], "%m/%d/%Y")
    assert min(parsed).year == 2016 and max(parsed).year == 2017


def test_customers_keep_leading_zeros_and_accents(retail):
    _, t = retail
    c = t["customers"].set_index("customer_id")
    assert c.loc["CU-10045", "zip_prefix"] == "02138"
    assert c.loc["CU-10045", ["city", "state"]].tolist() == ["Cambridge", "Massachusetts"]
    assert c.loc["CU-10307", "name"] == "Tomás Rivera"
    assert c["zip_prefix"].str.len().eq(5).all()


def test_make_source_with_a_data_dir(tmp_path):
    shutil.copy(RETAIL_CSV, tmp_path / "retail_orders.csv")
    src = make_source("mapped", mapping=RETAIL_YAML, data_dir=tmp_path)
    assert src.tables_["orders"].paths == [tmp_path / "retail_orders.csv"]  # data_dir wins
    assert len(_all(src, "orders")) == 15


def test_parquet_file_and_same_result(tmp_path):
    pd.read_csv(RETAIL_CSV, dtype=str, keep_default_na=False).to_parquet(tmp_path / "retail_orders.parquet")
    m = yaml.safe_load(RETAIL_YAML.read_text())
    for spec in m["tables"].values():
        spec["file"] = "retail_orders.parquet"
    del m["csv"]
    src = MappedSource(m, data_dir=tmp_path)
    assert src.tables_["orders"].fmt == "parquet"
    assert {t: len(_all(src, t)) for t in src.tables()} == {
        "orders": 15,
        "order_items": 40,
        "customers": 10,
        "products": 17,
    }
    assert _all(src, "customers").set_index("customer_id").loc["CU-10045", "zip_prefix"] == "02138"


def test_a_broken_line_reaches_every_table_fed_by_the_file(tmp_path):
    lines = RETAIL_CSV.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[5] = "garbage line without the right fields\n"  # data row 5
    (tmp_path / "retail_orders.csv").write_text("".join(lines), encoding="utf-8")
    src = MappedSource.from_yaml(RETAIL_YAML, data_dir=tmp_path)
    items = _all(src, "order_items")
    assert len(items) == 40
    bad = items[items["_parse_error"].notna()]
    assert bad["_source_row"].tolist() == [5] and bad["_parse_error"].tolist() == ["wrong_field_count"]
    assert bad["order_id"].tolist() == ["garbage line without the right fields"]  # first canonical column
    assert bad[["item_seq", "product_id", "price"]].isna().all(axis=None)
    customers = _all(src, "customers")  # deduplicated table: the bad row still comes through
    assert customers["_parse_error"].tolist().count("wrong_field_count") == 1
    assert customers.loc[customers["_parse_error"].notna(), "customer_id"].tolist() == [
        "garbage line without the right fields"
    ]


# ---------------------------------------------------------------- mapping validation


def _write_mapping(tmp_path: Path, mapping: dict) -> Path:
    shutil.copy(RETAIL_CSV, tmp_path / "retail_orders.csv")
    p = tmp_path / "mapping.yaml"
    p.write_text(yaml.safe_dump(mapping, sort_keys=False), encoding="utf-8")
    return p


def _base() -> dict:
    return {
        "tables": {
            "orders": {
                "file": "retail_orders.csv",
                "deduplicate": True,
                "columns": {
                    "order_id": "Order ID",
                    "customer_id": "Customer ID",
                    "purchased_at": "Order Date",
                },
            }
        }
    }


def _error(tmp_path, mapping) -> SourceError:
    p = _write_mapping(tmp_path, mapping)
    with pytest.raises(SourceError) as exc:
        MappedSource.from_yaml(p)
    return exc.value


def test_base_mapping_is_valid(tmp_path):
    src = MappedSource.from_yaml(_write_mapping(tmp_path, _base()))
    assert src.tables() == {"orders"} and len(_all(src, "orders")) == 15
    assert src.parse_hints("orders").timezone == "UTC"


def test_unknown_canonical_table(tmp_path):
    m = _base()
    m["tables"]["ordres"] = m["tables"].pop("orders")
    err = _error(tmp_path, m)
    assert isinstance(err, MappingError)
    assert (
        "mapping.yaml" in str(err) and "tables.ordres" in str(err) and "unknown canonical table" in str(err)
    )


def test_unknown_canonical_column(tmp_path):
    m = _base()
    m["tables"]["orders"]["columns"]["order_date"] = "Order Date"
    err = _error(tmp_path, m)
    assert "tables.orders.columns.order_date" in str(err) and "mapping.yaml" in str(err)
    assert err.column == "order_date"


def test_source_column_not_in_the_file(tmp_path):
    m = _base()
    m["tables"]["orders"]["columns"]["purchased_at"] = "Order Dte"
    err = _error(tmp_path, m)
    assert err.file == str(tmp_path / "retail_orders.csv") and err.column == "Order Dte"
    assert "did you mean 'Order Date'" in str(err) and "tables.orders" in str(err)


def test_derived_source_column_not_in_the_file(tmp_path):
    m = _base()
    m["tables"]["order_items"] = {
        "file": "retail_orders.csv",
        "columns": {"order_id": "Order ID", "product_id": "Product ID"},
        "derive": {"item_seq": {"row_number_within": "order_id"}, "price": {"divide": ["Sales", "Qty"]}},
    }
    err = _error(tmp_path, m)
    assert err.column == "Qty"


@pytest.mark.parametrize(
    "edit, key, message",
    [
        (lambda m: m.update(tabels={}), "tabels", "unknown key"),
        (lambda m: m.update(version=2), "version", "unsupported version"),
        (lambda m: m.update(timezone="Mars/Olympus"), "timezone", "unknown time zone"),
        (lambda m: m.update(timestamp_formats=["MM/DD/YYYY"]), "timestamp_formats", "strptime"),
        (lambda m: m.update(geo_bounds="europe"), "geo_bounds", "world or brazil"),
        (lambda m: m.update(tables={}), "tables", "at least one"),
        (lambda m: m["tables"]["orders"].update(fiel="x.csv"), "tables.orders.fiel", "unknown key"),
        (lambda m: m["tables"]["orders"].pop("file"), "tables.orders.file", "needs the path"),
        (lambda m: m["tables"]["orders"].update(file="nope.csv"), "tables.orders.file", "not found"),
        (
            lambda m: m["tables"]["orders"]["columns"].pop("order_id"),
            "tables.orders",
            "'order_id' is required",
        ),
        (
            lambda m: m["tables"]["orders"]["columns"].pop("purchased_at"),
            "tables.orders",
            "'purchased_at' is required",
        ),
        (
            lambda m: m["tables"]["orders"].update(constants={"customer_id": "x"}),
            "tables.orders.constants.customer_id",
            "already filled",
        ),
        (
            lambda m: m["tables"]["orders"].update(derive={"status": {"uppercase": "x"}}),
            "tables.orders.derive.status",
            "unknown derivation",
        ),
        (
            lambda m: m["tables"]["orders"].update(derive={"status": {"row_number_within": "status2"}}),
            "row_number_within",
            "must be a canonical column",
        ),
        (
            lambda m: m["tables"]["orders"].update(deduplicate="yes please"),
            "tables.orders.deduplicate",
            "true or false",
        ),
        (lambda m: m["tables"]["orders"].update(format="xlsx"), "tables.orders.format", "unknown format"),
        (lambda m: m["tables"]["orders"].update(encoding="utf-16"), "tables.orders", "not ASCII-compatible"),
        (lambda m: m["tables"]["orders"].update(header=0), "tables.orders.header", "1-based"),
        (lambda m: m["tables"]["orders"].update(header=False), "tables.orders.header", "names"),
        (lambda m: m.update(csv={"delimeter": ";"}), "csv.delimeter", "unknown CSV option"),
    ],
)
def test_mapping_errors_name_the_file_and_the_key(tmp_path, edit, key, message):
    m = _base()
    edit(m)
    err = _error(tmp_path, m)
    assert str(tmp_path / "mapping.yaml") in str(err)
    assert key in str(err) and message in str(err)


def test_mapping_file_problems(tmp_path):
    with pytest.raises(MappingError, match="mapping file not found"):
        MappedSource.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tables: [orders: {file: x\n")
    with pytest.raises(MappingError, match="not valid YAML") as exc:
        MappedSource.from_yaml(bad)
    assert exc.value.file == str(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- orders\n")
    with pytest.raises(MappingError, match="top level"):
        MappedSource.from_yaml(listy)


def test_csv_options_on_a_parquet_file(tmp_path):
    pd.DataFrame({"Order ID": ["1"], "Customer ID": ["c"], "Order Date": ["1/2/2017"]}).to_parquet(
        tmp_path / "o.parquet"
    )
    m = _base()
    m["tables"]["orders"].update(file="o.parquet", delimiter=";")
    with pytest.raises(MappingError, match="CSV options do not apply"):
        MappedSource(m, data_dir=tmp_path)


# ---------------------------------------------------------------- file options and derivations


def test_semicolon_latin1_title_line_glob_and_derivations(tmp_path):
    exports = tmp_path / "exports"
    exports.mkdir()
    for month, rows in (("01", ["A1;Zoë;1,5;2", "A1;Zoë;3;1"]), ("02", ["B7;José;n/a;2", "B8;Ana;4;0"])):
        text = f"Export {month}/2024\nOrder;Name;Amount;Qty\n" + "\n".join(rows) + "\n"
        (exports / f"sales_2024-{month}.csv").write_bytes(text.encode("latin-1"))
    mapping = {
        "decimal": ",",
        "timestamp_formats": "%d.%m.%Y",
        "timezone": "Europe/Berlin",
        "csv": {"delimiter": "semicolon", "encoding": "latin-1", "header": 2},
        "tables": {
            "order_items": {
                "file": "exports/sales_2024-*.csv",
                "columns": {"order_id": "Order", "quantity": "Qty"},
                "constants": {"product_id": "unknown"},
                "derive": {
                    "item_seq": {"row_number_within": "order_id"},
                    "price": {"divide": ["Amount", "Qty"]},
                },
            },
            "customers": {
                "file": "exports/sales_2024-*.csv",
                "deduplicate": True,
                "columns": {"name": "Name"},
                "derive": {"customer_id": {"concat": {"columns": ["Name", "Order"], "sep": "|"}}},
            },
            "events": {
                "file": "exports/sales_2024-01.csv",
                "columns": {"customer_id": "Name", "product_id": "Order", "ts": "Qty"},
                "constants": {"event_type": "purchase"},
                "derive": {"event_id": {"row_number": True}},
            },
        },
    }
    src = MappedSource(mapping, data_dir=tmp_path)
    assert src.parse_hints("events").decimal == ","
    items = _all(src, "order_items", chunk_rows=1)
    assert (
        items["_source_file"].tolist()
        == ["exports/sales_2024-01.csv"] * 2 + ["exports/sales_2024-02.csv"] * 2
    )
    assert items["_source_row"].tolist() == [1, 2, 1, 2]
    assert items["item_seq"].tolist() == ["1", "2", "1", "1"]
    # 1,5 / 2 = 0,75 (decimal comma kept); not-a-number and /0 stay visible for staging to quarantine
    assert items["price"].tolist() == ["0,75", "3,0", "n/a/2", "4/0"]
    assert src.describe()["derived_not_a_number"] == {"order_items": 2}
    customers = _all(src, "customers")
    assert customers["customer_id"].tolist() == ["Zoë|A1", "José|B7", "Ana|B8"]
    assert src.describe()["duplicates_dropped"]["customers"] == 1
    events = _all(src, "events")
    assert events["event_id"].tolist() == ["1", "2"] and events["event_type"].tolist() == ["purchase"] * 2


def test_no_header_file_with_names(tmp_path):
    (tmp_path / "orders.tsv").write_text("o1\tc1\t2024-01-02 10:00:00\no2\tc2\t2024-01-03 11:00:00\n")
    mapping = {
        "tables": {
            "orders": {
                "file": "orders.tsv",
                "header": False,
                "names": ["oid", "cid", "ts"],
                "columns": {"order_id": "oid", "customer_id": "cid", "purchased_at": "ts"},
            }
        }
    }
    src = MappedSource(mapping, data_dir=tmp_path)
    df = _all(src, "orders")
    assert df["order_id"].tolist() == ["o1", "o2"] and df["purchased_at"].tolist()[1] == "2024-01-03 11:00:00"
