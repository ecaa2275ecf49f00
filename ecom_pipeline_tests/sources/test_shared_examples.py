"""The two shipped example mappings staged through the mapped source on the real shared datasets.

docs/examples/online_retail_uk.yaml: a real UK shop (Parquet, 531,282 lines, guests as CustomerID 0):
fewer than 1 % of order lines quarantined, every reason one the mapping documents.
docs/examples/sales_sample_multicountry.yaml: statuses, 19 countries, personal data in several columns
that must appear nowhere outside ``raw``.  Both skip when the dataset is absent.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import duckdb
import pytest

from ecom_pipeline import pii_scan, quality
from ecom_pipeline.canonical import TABLE_ORDER
from ecom_pipeline.cleaning.staging import stage_table
from ecom_pipeline.loading import load_raw_table
from ecom_pipeline.sources.mapped import MappedSource
from ecom_pipeline_tests.datasets import shared_dataset

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples"
UK_DIR = shared_dataset("online_retail_uk")
SALES_DIR = shared_dataset("sales_sample_multicountry")
KEY = b"k" * 32

requires_uk = pytest.mark.skipif(
    not (UK_DIR / "online_retail_2010_2011.parquet").is_file(),
    reason=f"UK online retail dataset not found at {UK_DIR}",
)
requires_sales = pytest.mark.skipif(
    not (SALES_DIR / "sales_data_sample.csv").is_file(),
    reason=f"multi-country sales sample not found at {SALES_DIR}",
)


def ingest(mapping: Path, data_dir: Path, warehouse: Path) -> tuple[duckdb.DuckDBPyConnection, dict, dict]:
    """raw + staging of every canonical table; returns (connection, counts per table, seconds per step)."""
    src = MappedSource.from_yaml(mapping, data_dir=data_dir)
    con = duckdb.connect(str(warehouse))
    counts, seconds = {}, {"raw": 0.0, "staging": 0.0}
    for table in TABLE_ORDER:
        t0 = time.perf_counter()
        load_raw_table(con, src, table, load_id="L1")
        seconds["raw"] += time.perf_counter() - t0
        res = stage_table(con, table, hints=src.parse_hints(table), pseudonym_key=KEY)
        seconds["staging"] += res.seconds
        counts[table] = {
            "raw": res.raw_rows,
            "staged": res.staged_rows,
            "quarantined": res.quarantined_rows,
            "reasons": res.reasons,
            **src.table_facts(table),
        }
    print(json.dumps({"mapping": mapping.name, "seconds": seconds, "counts": counts}, indent=1))
    return con, counts, seconds


@pytest.mark.slow
@requires_uk
def test_uk_shop_stages_with_under_one_percent_of_lines_quarantined(tmp_path):
    con, counts, _ = ingest(EXAMPLES / "online_retail_uk.yaml", UK_DIR, tmp_path / "w.duckdb")
    items = counts["order_items"]
    # 531,282 lines - 2,359 non-product lines filtered out (postage, fees, vouchers: reported, not lost)
    assert items["raw"] + items["rows_filtered_out"] == 531_282 and items["rows_filtered_out"] == 2_359
    assert items["quarantined"] < 0.01 * items["raw"]
    assert set(items["reasons"]) <= {"orphan:products"}, items["reasons"]
    # guests: one synthetic customer per guest invoice, never one quarantined row per line
    customers = counts["customers"]
    assert customers["staged"] == 4_339 + 2_189
    # 8 customers bought from two countries: their second country is a conflicting duplicate (first wins)
    assert customers["reasons"] == {"duplicate_key_conflict": 8}
    assert con.execute(
        "SELECT count(DISTINCT country), count(*) FILTER (WHERE country IS NULL) FROM staging.customers"
    ).fetchall() == [(38, 0)]
    assert customers["guest_rows"] == 133_358
    orders = counts["orders"]
    assert orders["staged"] == 20_725  # every invoice
    # the 42 invoices whose lines disagree (customer, time or country): first line wins, each counted
    assert orders["reasons"] == {"duplicate_key_conflict": 42}
    products = counts["products"]
    # a later, other Description of a code (3 differ only in spaces, which staging trims: duplicate_key)
    assert set(products["reasons"]) == {"duplicate_key_conflict", "duplicate_key"}
    for table in TABLE_ORDER:
        assert quality.check_quarantine_share(con, table, 0.05).passed, table
    # the calendar-free facts the issue asks about: country on every order, statuses, times in UTC
    assert con.execute(
        "SELECT count(DISTINCT ship_country), count(*) FILTER (WHERE ship_country IS NULL), "
        "min(status), max(status) FROM staging.orders"
    ).fetchall() == [(38, 0, "delivered", "delivered")]
    first = con.execute("SELECT min(purchased_at) FROM staging.orders").fetchall()[0][0]
    assert str(first) == "2010-12-01 08:26:00"  # GMT in winter: UK time = UTC


@requires_sales
def test_multicountry_sample_statuses_ship_to_and_no_personal_data_outside_raw(tmp_path):
    con, counts, _ = ingest(EXAMPLES / "sales_sample_multicountry.yaml", SALES_DIR, tmp_path / "w.duckdb")
    assert {t: (c["raw"], c["staged"], c["quarantined"]) for t, c in counts.items() if c["raw"]} == {
        "customers": (92, 92, 0),
        "products": (109, 109, 0),
        "orders": (307, 307, 0),
        "order_items": (2823, 2823, 0),
    }
    statuses = dict(con.execute("SELECT status, count(*) FROM staging.orders GROUP BY 1").fetchall())
    assert statuses == {
        "shipped": 286,
        "resolved": 4,
        "disputed": 3,
        "in process": 6,
        "canceled": 4,
        "on hold": 4,
    }
    assert con.execute(
        "SELECT count(DISTINCT ship_country), count(DISTINCT ship_city) FILTER "
        "(WHERE ship_country = 'UK'), max(ship_postal_code) FILTER (WHERE ship_city = 'Liverpool') "
        "FROM staging.orders"
    ).fetchall() == [(19, 4, "WX1 6LT")]
    # the customer's country (the calendar's holidays, the DP report's grid): every company has one
    assert con.execute(
        "SELECT count(DISTINCT country), count(*) FILTER (WHERE country IS NULL) FROM staging.customers"
    ).fetchall() == [(19, 0)]

    with open(SALES_DIR / "sales_data_sample.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    needles = pii_scan.seeded_needles(
        names=[f"{r['CONTACTFIRSTNAME']} {r['CONTACTLASTNAME']}" for r in rows]
        + [r["CONTACTLASTNAME"] for r in rows],
        phones=[r["PHONE"] for r in rows],
        addresses=[r["ADDRESSLINE1"] for r in rows] + [r["ADDRESSLINE2"] for r in rows if r["ADDRESSLINE2"]],
    )
    assert {"address", "phone", "name"} <= set(needles.values())
    # the scan finds them where they are (raw holds names and phones; addresses are never even loaded)
    found_raw, _ = pii_scan.scan_warehouse(con, needles, patterns=False)
    assert {f.kind for f in found_raw if f.where.startswith("raw.")} == {"seeded:name", "seeded:phone"}
    findings, scanned = pii_scan.scan_warehouse(con, needles, patterns=False, exclude_schemas=["raw"])
    assert "staging.customers.name" in scanned and "staging.quarantine.original_row" in scanned
    assert findings == [], [f.as_dict() for f in findings]
