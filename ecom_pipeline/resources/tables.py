"""Reading and writing whole warehouse tables that may not exist yet (a source without reviews, a first run).

The one implementation of "does this table exist / give me it or an empty frame / replace it" for every asset."""

from __future__ import annotations

import duckdb
import pandas as pd


def table_exists(con: duckdb.DuckDBPyConnection, qualified: str) -> bool:
    schema, name = qualified.split(".", 1)
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [schema, name]).fetchall()[0][0])


def read_table(con: duckdb.DuckDBPyConnection, qualified: str, columns: list[str] | None = None) -> pd.DataFrame:
    """The table as a DataFrame, or an empty frame (with ``columns``) when the table does not exist."""
    if not table_exists(con, qualified):
        return pd.DataFrame(columns=columns or [])
    if columns:
        have = {r[0] for r in con.execute(f"DESCRIBE {qualified}").fetchall()}
        sel = ", ".join(c if c in have else f"NULL AS {c}" for c in columns)
    else:
        sel = "*"
    return con.execute(f"SELECT {sel} FROM {qualified}").fetchdf()


def write_table(con: duckdb.DuckDBPyConnection, qualified: str, df: pd.DataFrame) -> int:
    """Replace ``qualified`` with ``df`` (an empty frame still creates the table, with typed columns)."""
    schema = qualified.split(".", 1)[0]
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    frame = df.copy()
    for c in frame.columns:
        if frame[c].dtype == object and frame[c].isna().all():
            frame[c] = frame[c].astype("string")
    con.register("_write_df", frame)
    try:
        con.execute(f"CREATE OR REPLACE TABLE {qualified} AS SELECT * FROM _write_df")
    finally:
        con.unregister("_write_df")
    return len(frame)


def read_or_empty(warehouse, qualified: str, columns: list[str] | None = None) -> pd.DataFrame:
    with warehouse.connect(read_only=True) as con:
        return read_table(con, qualified, columns)
