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
