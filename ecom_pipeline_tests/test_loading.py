import duckdb
import pandas as pd
import pytest

from ecom_pipeline.loading import PARSE_ERROR_COLUMN, load_raw_table, raw_columns
from ecom_pipeline.sources.base import SourceError
from ecom_pipeline_tests.framesource import FrameSource

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
    rows = con.execute("SELECT _source_row, _load_id, approved_at, status FROM raw.orders ORDER BY 1").fetchall()
    assert [r[0] for r in rows] == list(range(1, 26))
    assert {r[1] for r in rows} == {"L1"} and rows[0][2] is None and rows[0][3] == "delivered"
    types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                             "WHERE table_name='orders'").fetchall())
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
        load_raw_table(con, FrameSource({"orders": ORDERS}, fail_after_chunks=1), "orders", load_id="L2",
                       chunk_rows=10)
    assert con.execute("SELECT count(*), min(_load_id), max(_load_id) FROM raw.orders").fetchone() == (25, "L1", "L1")


def test_unknown_column_is_a_clear_error(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    bad = ORDERS.assign(coupon="X")
    with pytest.raises(SourceError, match="coupon"):
        load_raw_table(con, FrameSource({"orders": bad}), "orders", load_id="L1")
