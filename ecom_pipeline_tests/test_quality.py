from datetime import datetime

import duckdb
import pytest

from ecom_pipeline import quality


@pytest.fixture
def con(tmp_path):
    c = duckdb.connect(str(tmp_path / "w.duckdb"))
    for s in ("raw", "staging", "meta"):
        c.execute(f"CREATE SCHEMA {s}")
    c.execute("CREATE TABLE staging.customers AS SELECT * FROM (VALUES ('c1'), ('c2')) t(customer_id)")
    c.execute("""CREATE TABLE staging.orders AS SELECT * FROM (VALUES
        ('o1', 'c1', TIMESTAMP '2024-01-01 10:00:00'),
        ('o2', 'c2', TIMESTAMP '2024-01-03 10:00:00')) t(order_id, customer_id, purchased_at)""")
    c.execute("CREATE TABLE staging.quarantine (table_name VARCHAR, load_id VARCHAR, reason VARCHAR)")
    c.execute("CREATE TABLE raw.orders AS SELECT 'L1' AS _load_id FROM range(3)")
    c.execute(
        "INSERT INTO staging.quarantine VALUES ('orders', 'L1', 'duplicate_key'), ('orders', 'L0', 'x')"
    )
    return c


def test_unique_and_non_null_keys(con):
    assert quality.check_unique_key(con, "orders").passed
    assert quality.check_non_null_key(con, "orders").passed
    con.execute("INSERT INTO staging.orders VALUES ('o1', 'c1', NULL), (NULL, 'c1', NULL)")
    out = quality.check_unique_key(con, "orders")
    assert not out.passed and out.metadata["duplicated_keys"] == 1
    assert quality.check_non_null_key(con, "orders").metadata["null_keys"] == 1


def test_foreign_keys_count_orphans(con):
    assert quality.check_foreign_keys(con, "orders").passed
    con.execute("INSERT INTO staging.orders VALUES ('o3', 'ghost', NULL)")
    out = quality.check_foreign_keys(con, "orders")
    assert not out.passed and out.metadata["orphans"] == {"customer_id->customers": 1}


def test_ranges(con):
    con.execute(
        "CREATE TABLE staging.reviews AS SELECT * FROM (VALUES ('r1', 5), ('r2', 6)) t(review_id, score)"
    )
    # only columns present in the spec and the table are checked: build the full review table shape
    con.execute("DROP TABLE staging.reviews")
    con.execute("""CREATE TABLE staging.reviews (review_id VARCHAR, order_id VARCHAR, customer_id VARCHAR,
        product_id VARCHAR, score INTEGER, title VARCHAR, text VARCHAR, created_at TIMESTAMP)""")
    con.execute(
        "INSERT INTO staging.reviews (review_id, order_id, score) VALUES ('r1','o1',5), ('r2','o1',6)"
    )
    out = quality.check_ranges(con, "reviews")
    assert not out.passed and out.metadata["violations"]["score"] == 1


def test_row_invariant_counts_only_the_current_load(con):
    out = quality.check_row_invariant(con, "orders")
    assert out.passed, out.metadata  # 3 raw = 2 staged + 1 quarantined in load L1 (the L0 row is ignored)
    con.execute("INSERT INTO raw.orders VALUES ('L1')")
    assert not quality.check_row_invariant(con, "orders").passed


def test_freshness(con):
    assert quality.check_freshness(con, "orders", 2, now=datetime(2024, 1, 4)).passed
    out = quality.check_freshness(con, "orders", 2, now=datetime(2024, 2, 1))
    assert not out.passed and out.metadata["lag_days"] == pytest.approx(28.58, abs=0.01)


def test_row_count_anomaly(con):
    assert not quality.check_row_count_anomaly(con, "orders").passed  # nothing logged yet
    for i, rows in enumerate([100, 110, 90]):
        quality.log_load(
            con, load_id=f"L{i}", layer="raw", table="orders", source="s", rows=rows, quarantined=0, seconds=1
        )
    assert quality.check_row_count_anomaly(con, "orders").passed
    quality.log_load(
        con, load_id="L9", layer="raw", table="orders", source="s", rows=20, quarantined=0, seconds=1
    )
    out = quality.check_row_count_anomaly(con, "orders")
    assert not out.passed and out.metadata["median_previous"] == 100


def test_log_load_is_idempotent(con):
    for _ in range(2):
        quality.log_load(
            con, load_id="L1", layer="raw", table="orders", source="s", rows=5, quarantined=0, seconds=1
        )
    assert con.execute("SELECT count(*) FROM meta.load_log").fetchone()[0] == 1
