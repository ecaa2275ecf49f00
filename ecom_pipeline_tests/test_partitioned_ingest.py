"""Daily partitioned ingest: raw append-only per partition, staging updated by key with a change log."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from ecom_pipeline.cleaning.staging import StagingError
from ecom_pipeline.cleaning.staging_upsert import (
    CHANGE_LOG,
    customers_with_new_activity,
    keys_written_by_partition,
    rebuild_staging_from_partitions,
    upsert_staging_partition,
)
from ecom_pipeline.loading import load_raw_partition
from ecom_pipeline.warehouse.tables import PER_RUN_COLUMNS, partition_load_counts, warehouse_fingerprints
from ecom_pipeline_tests.framesource import FrameSource

KEY = b"test-key"
CUSTOMERS_DAY1 = pd.DataFrame({"customer_id": ["c1", "c2", "c3"], "city": ["a", "b", "c"]})
ORDERS_DAY1 = pd.DataFrame(
    {
        "order_id": ["o1", "o2", "o3", "o1"],
        "customer_id": ["c1", "c2", None, "c1"],  # o3 lacks its customer; o1 twice (in-partition duplicate)
        "status": ["delivered", "shipped", "delivered", "delivered"],
        "purchased_at": ["2024-05-01 10:00:00"] * 4,
    }
)
CUSTOMERS_DAY2 = pd.DataFrame({"customer_id": ["c4"], "city": ["d"]})
ORDERS_DAY2 = pd.DataFrame(
    {
        "order_id": ["o4", "o2", "o5"],
        "customer_id": ["c4", "c2", "c9"],  # o2: a late correction; o5: an orphan (no customer c9)
        "status": ["created", "delivered", "created"],
        "purchased_at": ["2024-05-02 09:00:00", "2024-05-01 10:00:00", "2024-05-02 11:00:00"],
    }
)
DAYS = {
    "2024-05-01": {"customers": CUSTOMERS_DAY1, "orders": ORDERS_DAY1},
    "2024-05-02": {"customers": CUSTOMERS_DAY2, "orders": ORDERS_DAY2},
}


def _run_day(con, day: str, n: int = 0) -> dict:
    source = FrameSource(DAYS[day])
    out = {}
    for table in ("customers", "orders"):
        load_raw_partition(con, source, table, day, load_id=f"{day}-{table}-{n}")
        out[table] = upsert_staging_partition(con, table, day, pseudonym_key=KEY)
    return out


def _prints(con) -> dict:
    return warehouse_fingerprints(con, ("raw", "staging"), PER_RUN_COLUMNS | {"changed_at"})


def _status(con, order_id: str) -> str:
    return con.execute("SELECT status FROM staging.orders WHERE order_id = ?", [order_id]).fetchall()[0][0]


def test_late_correction_updates_one_order_by_key_and_is_logged(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    day1 = _run_day(con, "2024-05-01")
    assert (day1["orders"].inserted, day1["orders"].quarantined) == (
        2,
        2,
    )  # o3 missing customer, o1 duplicate
    assert _status(con, "o2") == "shipped"
    day2 = _run_day(con, "2024-05-02")
    o = day2["orders"]
    assert (o.inserted, o.updated, o.unchanged, o.stale, o.quarantined) == (1, 1, 0, 0, 1)
    assert _status(con, "o2") == "delivered"
    assert con.execute("SELECT count(*) FROM staging.orders").fetchall()[0][0] == 3  # o1, o2, o4
    log = con.execute(
        f"SELECT key_value, partition_key, changed_columns, previous_row FROM {CHANGE_LOG}"
    ).fetchall()
    assert len(log) == 1
    key_value, partition, changed, previous = log[0]
    assert '"o2"' in key_value and partition == "2024-05-02" and changed == "status"
    assert '"shipped"' in previous
    # raw = accepted + quarantined, per partition and in total; raw is append-only (both days in it)
    counts = partition_load_counts(con, "orders")
    for p in counts["partitions"].values():
        assert p["raw"] == p["accepted"] + p["quarantined"]
    t = counts["total"]
    assert t["raw"] == t["raw_table_rows"] == 7
    assert (
        t["raw"] == t["accepted"] + t["quarantined"] and t["quarantined"] == t["quarantine_table_rows"] == 3
    )
    assert t["staged_table_rows"] == t["inserted"] == 3


def test_redelivered_partition_changes_nothing(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    _run_day(con, "2024-05-01")
    _run_day(con, "2024-05-02")
    before = _prints(con)
    again = _run_day(con, "2024-05-02", n=1)  # the same day delivered again (new load id)
    assert (again["orders"].inserted, again["orders"].updated, again["orders"].unchanged) == (0, 0, 2)
    assert _prints(con) == before
    # an older day re-delivered after the correction: its old value is stale, the correction stays
    old = _run_day(con, "2024-05-01", n=1)
    assert old["orders"].stale == 1 and _status(con, "o2") == "delivered"
    assert _prints(con) == before
    counts = partition_load_counts(con, "orders")["total"]
    assert counts["raw"] == counts["raw_table_rows"] == 7  # the re-deliveries replaced, not appended


def test_full_rebuild_from_partitions_equals_the_daily_runs(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    _run_day(con, "2024-05-01")
    _run_day(con, "2024-05-02")
    daily = _prints(con)
    rebuilt = rebuild_staging_from_partitions(con, pseudonym_key=KEY, tables=("customers", "orders"))
    assert [(r.partition, r.table) for r in rebuilt] == [
        ("2024-05-01", "customers"),
        ("2024-05-01", "orders"),
        ("2024-05-02", "customers"),
        ("2024-05-02", "orders"),
    ]
    assert _prints(con) == daily


def test_staging_a_partition_that_was_never_loaded_is_a_clear_error(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    _run_day(con, "2024-05-01")
    with pytest.raises(StagingError, match="no raw load of partition 2024-05-09 of orders"):
        upsert_staging_partition(con, "orders", "2024-05-09", pseudonym_key=KEY)


def test_a_day_without_rows_of_a_table_leaves_it_alone(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    _run_day(con, "2024-05-01")
    _run_day(con, "2024-05-02")
    before = _prints(con)["staging.customers"]
    orders = pd.DataFrame(
        {
            "order_id": ["o4"],
            "customer_id": ["c4"],
            "status": ["delivered"],
            "purchased_at": ["2024-05-02 09:00:00"],
        }
    )
    source = FrameSource({"orders": orders})  # no customers delivered that day
    for table in ("customers", "orders"):
        load_raw_partition(con, source, table, "2024-05-03", load_id=f"d3-{table}")
    empty = upsert_staging_partition(con, "customers", "2024-05-03", pseudonym_key=KEY)
    assert (empty.raw_rows, empty.accepted, empty.quarantined) == (0, 0, 0)
    assert upsert_staging_partition(con, "orders", "2024-05-03", pseudonym_key=KEY).updated == 1
    assert _prints(con)["staging.customers"] == before and _status(con, "o4") == "delivered"
    assert partition_load_counts(con, "customers")["partitions"]["2024-05-03"]["raw"] == 0


def test_customers_with_new_activity_are_those_a_day_inserted_or_changed(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    _run_day(con, "2024-05-01")
    _run_day(con, "2024-05-02")
    assert keys_written_by_partition(con, "orders", "2024-05-02") == [("o2",), ("o4",)]  # o5: an orphan
    of_orders = dict(con.execute("SELECT order_id, customer_id FROM staging.orders").fetchall())
    # c2 (o2 corrected) and c4 (new customer, new order); pseudonyms, as staging stores them
    assert customers_with_new_activity(con, "2024-05-02") == sorted({of_orders["o2"], of_orders["o4"]})
    _run_day(con, "2024-05-02", n=1)  # re-delivered: it changed nothing, so nobody is new
    assert customers_with_new_activity(con, "2024-05-02") == []


def test_a_day_is_not_appended_to_a_full_snapshot_load(tmp_path):
    from ecom_pipeline.loading import load_raw_table
    from ecom_pipeline.sources.base import SourceError

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    load_raw_table(con, FrameSource({"orders": ORDERS_DAY1}), "orders", load_id="full-run")
    with pytest.raises(SourceError, match="holds 4 rows of a full .unpartitioned. load .full-run."):
        load_raw_partition(con, FrameSource({"orders": ORDERS_DAY2}), "orders", "2024-05-02", load_id="d2")
    assert con.execute("SELECT count(*) FROM raw.orders").fetchall()[0][0] == 4  # untouched
