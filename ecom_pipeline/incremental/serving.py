"""Write a table keyed by customer: in full, or merged for the recomputed customers, in one transaction with
the table's refresh state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb
import pandas as pd

from ecom_pipeline.incremental.changes import RefreshPlan, record_state
from ecom_pipeline.warehouse.tables import atomic, table_exists


@dataclass
class MergeCounts:
    """Rows after the write: ``new`` (customers the table did not hold), ``changed`` (recomputed customers
    it held), ``untouched`` (kept as they were); ``removed``: how many fewer rows the recomputed customers
    hold."""

    new: int
    changed: int
    untouched: int
    removed: int

    def metadata(self) -> dict:
        return {
            "new_rows": self.new,
            "changed_rows": self.changed,
            "untouched_rows": self.untouched,
            "removed_rows": self.removed,
        }


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """All-null object columns as strings (DuckDB cannot type a column of Python Nones)."""
    out = frame.copy()
    for c in out.columns:
        if out[c].dtype == object and out[c].isna().all():
            out[c] = out[c].astype("string")
    return out


@dataclass
class Part:
    """What an incremental write replaces: the rows within ``scope`` (an SQL condition; "" = the whole table)
    of ``customers`` (None: every customer, e.g. a recommendation level served by global counts)."""

    scope: str = ""
    customers: list[str] | None = None


def write_customer_rows(
    con: duckdb.DuckDBPyConnection,
    plan: RefreshPlan,
    signature: str,
    rows: pd.DataFrame,
    *,
    parts: list[Part] | None = None,
    replace_table: bool = False,
    also: dict[str, pd.DataFrame] | None = None,
    now: datetime | None = None,
) -> MergeCounts:
    """Full plan: replace ``plan.target`` with ``rows``.  Incremental: per part, delete the rows of its
    customers within its scope, then insert ``rows`` (the recomputed rows only); or, with ``replace_table``
    (a table with population-wide columns, ``rows`` being all of it), replace the table and count rows by
    whether their customer was in ``plan.customers``.  ``also``: tables replaced in the same transaction (a
    summary of the rows).  Rows and the recorded state commit together or not at all."""
    table = plan.target
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {table.split('.', 1)[0]}")
    parts = parts if parts is not None else [Part("", plan.customers)]
    con.register("_rows", _typed(rows))
    for i, frame in enumerate((also or {}).values()):
        con.register(f"_also_{i}", _typed(frame))
    try:
        with atomic(con):
            for i, name in enumerate(also or {}):
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {name.split('.', 1)[0]}")
                con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM _also_{i}")
            if replace_table and not plan.full and table_exists(con, table):
                counts = _replace_counts(con, table, rows, plan.customers)
                con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM _rows")
            elif plan.full or not table_exists(con, table):
                con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM _rows")
                counts = MergeCounts(len(rows), 0, 0, 0)
            else:
                counts = _merge(con, table, rows, parts)
            record_state(con, plan, signature, now)
    finally:
        con.unregister("_rows")
        for i in range(len(also or {})):
            con.unregister(f"_also_{i}")
    return counts


def _merge(con: duckdb.DuckDBPyConnection, table: str, rows: pd.DataFrame, parts: list[Part]) -> MergeCounts:
    total = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
    replaced, held_customers = 0, set()
    for i, part in enumerate(parts):
        cond = f"({part.scope})" if part.scope else "true"
        if part.customers is not None:
            name = f"_recomputed_{i}"
            con.register(name, pd.DataFrame({"customer_id": pd.Series(part.customers, dtype="string")}))
            cond += f" AND customer_id IN (SELECT customer_id FROM {name})"
        held_customers |= {
            r[0] for r in con.execute(f"SELECT DISTINCT customer_id FROM {table} WHERE {cond}").fetchall()
        }
        replaced += con.execute(f"DELETE FROM {table} WHERE {cond}").fetchall()[0][0]
        if part.customers is not None:
            con.unregister(name)
    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _rows")
    changed = int(rows["customer_id"].astype(str).isin(held_customers).sum()) if len(rows) else 0
    return MergeCounts(
        new=len(rows) - changed,
        changed=changed,
        untouched=total - replaced,
        removed=max(replaced - changed, 0),
    )


def _replace_counts(
    con: duckdb.DuckDBPyConnection, table: str, rows: pd.DataFrame, recomputed: list[str]
) -> MergeCounts:
    held = {r[0] for r in con.execute(f"SELECT DISTINCT customer_id FROM {table}").fetchall()}
    total = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
    ids = rows["customer_id"].astype(str) if len(rows) else pd.Series(dtype=str)
    is_new, is_recomputed = ~ids.isin(held), ids.isin(set(recomputed))
    changed = int((is_recomputed & ~is_new).sum())
    untouched = int((~is_recomputed & ~is_new).sum())
    return MergeCounts(
        new=int(is_new.sum()),
        changed=changed,
        untouched=untouched,
        removed=max(total - changed - untouched, 0),
    )
