import duckdb
import pytest

from ecom_pipeline.warehouse.tables import atomic


def test_atomic_replace_interrupted_keeps_the_previous_table(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("CREATE TABLE t AS SELECT range AS x FROM range(5)")
    with pytest.raises(RuntimeError), atomic(con):
        con.execute("DROP TABLE t")
        con.execute("CREATE TABLE t (x BIGINT)")
        raise RuntimeError("killed between drop and refill")
    assert con.execute("SELECT count(*) FROM t").fetchall() == [(5,)]
    with atomic(con):
        con.execute("DROP TABLE t")
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
    assert con.execute("SELECT count(*) FROM t").fetchall() == [(1,)]


def test_embedding_replace_is_one_transaction(tmp_path):
    """upsert_embeddings(replace=True), what product_text_embeddings writes with: a failed insert (here a
    duplicated key) leaves the previous table whole; a good one leaves exactly the new rows."""
    import numpy as np
    import pandas as pd

    from ecom_pipeline.ml.encoders.store import upsert_embeddings

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    old = pd.DataFrame({"product_id": ["a", "b", "c"], "input_hash": ["1", "2", "3"], "sources": "text"})
    kw = dict(model="m", model_version="1", extra_columns="sources VARCHAR", replace=True)
    assert upsert_embeddings(con, "features.t", "product_id", old, np.ones((3, 4), np.float32), **kw) == 3
    bad = pd.DataFrame({"product_id": ["x", "x"], "input_hash": ["9", "9"], "sources": "text"})
    with pytest.raises(duckdb.ConstraintException):
        upsert_embeddings(con, "features.t", "product_id", bad, np.zeros((2, 4), np.float32), **kw)
    assert con.execute("SELECT list(product_id ORDER BY product_id) FROM features.t").fetchall()[0][0] == [
        "a",
        "b",
        "c",
    ]
    new = pd.DataFrame({"product_id": ["d"], "input_hash": ["4"], "sources": "text"})
    upsert_embeddings(con, "features.t", "product_id", new, np.zeros((1, 4), np.float32), **kw)
    assert con.execute("SELECT list(product_id) FROM features.t").fetchall()[0][0] == ["d"]
    upsert_embeddings(con, "features.t", "product_id", new.iloc[:0], np.zeros((0, 4), np.float32), **kw)
    assert con.execute("SELECT count(*) FROM features.t").fetchall()[0][0] == 0


def test_shared_strings_read_is_the_same_frame_with_one_object_per_distinct_string():
    import pandas as pd

    from ecom_pipeline.warehouse.tables import fetch_frame_shared_strings

    con = duckdb.connect()
    con.execute(
        "CREATE TABLE i AS SELECT 'customer_' || (range % 50) AS customer_id, "
        "CASE WHEN range % 7 = 0 THEN NULL ELSE 'p' || (range % 13) END AS product_id, "
        "range::DOUBLE / 3 AS weight, TIMESTAMP '2024-01-01' + INTERVAL (range) MINUTE AS ts, "
        "CASE WHEN range % 5 = 0 THEN NULL ELSE range END AS n, "
        "CASE WHEN range % 3 = 0 THEN NULL ELSE range % 2 = 0 END AS flag, range::INTEGER AS small "
        "FROM range(2000)"
    )
    sql = "SELECT * FROM i WHERE weight > ? ORDER BY ts"
    expected = con.execute(sql, [1.0]).fetchdf()
    shared = fetch_frame_shared_strings(con, sql, [1.0])
    pd.testing.assert_frame_equal(shared, expected)
    assert shared["customer_id"].map(id).nunique() == 50  # one object per distinct id
    assert expected["customer_id"].map(id).nunique() > 50


def test_memory_limit_at_most_lowers_and_restores_and_never_raises_a_lower_limit():
    from ecom_pipeline.warehouse.tables import memory_limit_at_most

    con = duckdb.connect()
    setting = "SELECT current_setting('memory_limit')"
    con.execute("SET memory_limit = '2GiB'")
    with memory_limit_at_most(con, "1GiB"):
        assert con.execute(setting).fetchall()[0][0] == "1.0 GiB"
        # queries still run under the cap
        n = con.execute(
            "SELECT count(*) FROM (SELECT range AS x FROM range(3000000) ORDER BY x DESC)"
        ).fetchall()
        assert n[0][0] == 3_000_000
    assert con.execute(setting).fetchall()[0][0] == "2.0 GiB"
    con.execute("SET memory_limit = '500MiB'")
    with memory_limit_at_most(con, "1GiB"):
        assert con.execute(setting).fetchall()[0][0] == "500.0 MiB"
    assert con.execute(setting).fetchall()[0][0] == "500.0 MiB"
