import duckdb
import pytest

from ecom_pipeline.resources.tables import atomic


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
