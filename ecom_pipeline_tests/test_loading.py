import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from ecom_pipeline.loading import PARSE_ERROR_COLUMN, load_raw_table, raw_columns
from ecom_pipeline.sources.base import SourceError
from ecom_pipeline_tests.framesource import FrameSource
from ecom_pipeline_tests.reliability.fault_points import FAULT_PAUSE_ENV, pause_point

ORDERS = pd.DataFrame(
    {
        "order_id": [f"o{i}" for i in range(25)],
        "customer_id": ["c1"] * 25,
        "purchased_at": ["2024-01-01 10:00:00"] * 25,
        "status": ["delivered"] * 25,
    }
)


def test_raw_load_keeps_every_row_as_text_with_lineage(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    res = load_raw_table(con, FrameSource({"orders": ORDERS}), "orders", load_id="L1", chunk_rows=10)
    assert (res.rows, res.chunks, res.delivered) == (25, 3, True)
    cols = [r[0] for r in con.execute("DESCRIBE raw.orders").fetchall()]
    assert cols == raw_columns("orders")
    rows = con.execute(
        "SELECT _source_row, _load_id, approved_at, status FROM raw.orders ORDER BY 1"
    ).fetchall()
    assert [r[0] for r in rows] == list(range(1, 26))
    assert {r[1] for r in rows} == {"L1"} and rows[0][2] is None and rows[0][3] == "delivered"
    types = dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name='orders'"
        ).fetchall()
    )
    assert types["purchased_at"] == "VARCHAR" and types[PARSE_ERROR_COLUMN] == "VARCHAR"


def test_table_the_source_lacks_is_loaded_empty(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    res = load_raw_table(con, FrameSource({"orders": ORDERS}), "events", load_id="L1")
    assert res.rows == 0 and res.delivered is False
    assert con.execute("SELECT count(*) FROM raw.events").fetchone()[0] == 0


def test_failed_load_leaves_previous_complete_table(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    load_raw_table(con, FrameSource({"orders": ORDERS}), "orders", load_id="L1", chunk_rows=10)
    with pytest.raises(RuntimeError, match="mid-load"):
        load_raw_table(
            con, FrameSource({"orders": ORDERS}, fail_after_chunks=1), "orders", load_id="L2", chunk_rows=10
        )
    assert con.execute("SELECT count(*), min(_load_id), max(_load_id) FROM raw.orders").fetchone() == (
        25,
        "L1",
        "L1",
    )


def test_unknown_column_is_a_clear_error(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    bad = ORDERS.assign(coupon="X")
    with pytest.raises(SourceError, match="coupon"):
        load_raw_table(con, FrameSource({"orders": bad}), "orders", load_id="L1")


KILLED_LOAD = """
import sys, duckdb, pandas as pd
from ecom_pipeline.loading import load_raw_table
from ecom_pipeline_tests.framesource import FrameSource
from ecom_pipeline_tests.reliability.fault_points import pausing_progress
orders = pd.read_json(sys.argv[2])
con = duckdb.connect(sys.argv[1])
load_raw_table(con, FrameSource({"orders": orders}), "orders", load_id="L2", chunk_rows=10,
               progress=pausing_progress("orders"))
"""


def test_process_killed_mid_load_leaves_previous_table_and_next_load_cleans_up(tmp_path, monkeypatch):
    """SIGKILL (no exception handler runs) after the first chunk of a reload: the previous load survives
    whole."""
    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    load_raw_table(con, FrameSource({"orders": ORDERS}), "orders", load_id="L1", chunk_rows=10)
    con.close()
    marker = tmp_path / "paused"
    (tmp_path / "orders.json").write_text(ORDERS.to_json())
    monkeypatch.setenv(FAULT_PAUSE_ENV, f"raw_load.orders={marker}")
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_LOAD, str(path), str(tmp_path / "orders.json")],
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        deadline = time.monotonic() + 120
        while (
            not (marker.exists() and marker.read_text())
            and child.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert marker.exists(), f"the loader never reached the pause point (exit code {child.poll()})"
        os.kill(int(marker.read_text()), signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    con = duckdb.connect(str(path))
    assert con.execute("SELECT count(*), min(_load_id), max(_load_id) FROM raw.orders").fetchone() == (
        25,
        "L1",
        "L1",
    )
    assert con.execute('SELECT count(*) FROM raw."orders__loading"').fetchone() == (
        10,
    )  # the half-written load
    monkeypatch.delenv(FAULT_PAUSE_ENV)
    load_raw_table(con, FrameSource({"orders": ORDERS}), "orders", load_id="L3", chunk_rows=10)
    assert con.execute("SELECT count(*), min(_load_id) FROM raw.orders").fetchone() == (25, "L3")
    assert con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE '%__loading'"
    ).fetchone() == (0,)


def test_pause_point_is_a_no_op_unless_named(tmp_path, monkeypatch):
    marker = tmp_path / "m"
    monkeypatch.setenv(FAULT_PAUSE_ENV, f"raw_load.other={marker}")
    pause_point("raw_load.orders")
    assert not marker.exists()
    marker.write_text("1")  # already taken: a second arrival goes straight on
    monkeypatch.setenv(FAULT_PAUSE_ENV, f"raw_load.orders={marker}")
    t0 = time.monotonic()
    pause_point("raw_load.orders")
    assert time.monotonic() - t0 < 5


def _string_compression(con, table: str, column: str) -> set[str]:
    con.execute("CHECKPOINT")
    return {
        r[0]
        for r in con.execute(
            f"SELECT DISTINCT compression FROM pragma_storage_info('{table}') "
            "WHERE column_name = ? AND segment_type = 'VARCHAR'",
            [column],
        ).fetchall()
    }


def test_raw_compression_light_stores_text_without_dictionary_or_fsst(tmp_path):
    # Enough rows that DuckDB writes row groups during the insert (not through the WAL).
    n = 150_000
    frame = pd.DataFrame(
        {
            "order_id": [f"order-{i:08d}" for i in range(n)],
            "customer_id": [f"c{i % 7}" for i in range(n)],
            "purchased_at": ["2024-01-01 10:00:00"] * n,
            "status": [("delivered", "shipped", "canceled")[i % 3] for i in range(n)],
        }
    )
    found = {}
    for compression in ("full", "light"):
        con = duckdb.connect(str(tmp_path / f"{compression}.duckdb"))
        load_raw_table(
            con, FrameSource({"orders": frame}), "orders", load_id="L", chunk_rows=n, compression=compression
        )
        assert con.execute("SELECT current_setting('disabled_compression_methods')").fetchone()[0] == ""
        found[compression] = _string_compression(con, "raw.orders", "status") | _string_compression(
            con, "raw.orders", "order_id"
        )
        assert con.execute("SELECT count(*), count(DISTINCT order_id) FROM raw.orders").fetchone() == (n, n)
        con.close()
    assert found["full"] & {"Dictionary", "FSST", "DictFSST"}, found
    assert not found["light"] & {"Dictionary", "FSST", "DictFSST"}, found


def test_raw_compression_rejects_an_unknown_value(tmp_path, monkeypatch):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    monkeypatch.setenv("ECOM_RAW_COMPRESSION", "zstd")
    with pytest.raises(ValueError, match="ECOM_RAW_COMPRESSION must be one of"):
        load_raw_table(con, FrameSource({"orders": ORDERS}), "orders", load_id="L1")
