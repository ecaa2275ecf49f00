"""features.interactions, refreshed for the customers with staging changes.

Every interaction row belongs to one customer and is computed from that customer's own orders, items and
events (plus the product's category), so deleting the changed customers' rows and inserting the same query's
rows for them gives the table a full rebuild would.  A full rebuild runs instead when the plan says so
(:func:`plan_refresh`) or when a product row changed since the last run (its category labels every customer's
interactions with it).  Readers take the rows in the query's order (``ORDER BY`` in the reader), so the
physical order an incremental run leaves does not change what the models see.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import duckdb
import pandas as pd

from ecom_pipeline.incremental.changes import (
    FULL_REFRESH_DAYS,
    RefreshPlan,
    plan_refresh,
    read_state,
    record_state,
)
from ecom_pipeline.incremental.serving import MergeCounts
from ecom_pipeline.loading import PARTITION_LOADS
from ecom_pipeline.ml.recsys.interactions import STAGING_TABLES, interactions_query
from ecom_pipeline.warehouse.tables import (
    atomic,
    fetch_frame_shared_strings,
    memory_limit_at_most,
    table_exists,
)

TARGET = "features.interactions"
CATEGORY_TARGET = "features.category_interactions"
ORDER = "ts, customer_id, product_id, event_type"  # the query's order: what every reader sorts by
# DuckDB's memory for sorting the whole table on read (warehouse.tables.memory_limit_at_most)
WHOLE_READ_SORT_MEMORY = "1GiB"


@dataclass
class InteractionsRefresh:
    plan: RefreshPlan
    counts: MergeCounts
    source_rows: dict  # staging rows per input table (0: absent or empty)


def _products_changed(con: duckdb.DuckDBPyConnection, since: datetime | None) -> int:
    if not table_exists(con, "staging.products") or not table_exists(con, PARTITION_LOADS):
        return 0
    return con.execute(
        f"SELECT count(*) FROM staging.products WHERE _load_id IN (SELECT load_id FROM "
        f"{PARTITION_LOADS} WHERE staged_at > coalesce(?, TIMESTAMP '1900-01-01'))",
        [since],
    ).fetchall()[0][0]


def refresh_interactions(
    con: duckdb.DuckDBPyConnection,
    weights: dict[str, float],
    *,
    mode: str = "auto",
    full_refresh_days: float = FULL_REFRESH_DAYS,
    now: datetime | None = None,
) -> InteractionsRefresh:
    """Plan, then rebuild features.interactions in DuckDB (in full, or for the changed customers) with its
    refresh state, in one transaction."""
    signature = "interactions:" + json.dumps(weights, sort_keys=True)
    plan = plan_refresh(
        con, TARGET, signature=signature, mode=mode, full_refresh_days=full_refresh_days, now=now
    )
    state = read_state(con, TARGET)
    if not plan.full and (n := _products_changed(con, state["watermark"] if state else None)):
        plan = RefreshPlan(
            TARGET,
            True,
            f"{n:,} product rows changed: categories label every customer's interactions",
            plan.watermark,
        )
    counts = {
        k: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] if table_exists(con, t) else 0
        for k, t in STAGING_TABLES.items()
    }
    tables = {k: t for k, t in STAGING_TABLES.items() if counts[k]}
    has_orders = bool(counts["orders"] and counts["order_items"])
    if not plan.full:
        con.register(
            "_changed_customers", pd.DataFrame({"customer_id": pd.Series(plan.customers, dtype="string")})
        )
        for k in ("orders", "events"):  # the customer-level tables, narrowed to the changed customers
            if k in tables:
                tables[k] = (
                    f"(SELECT * FROM {STAGING_TABLES[k]} WHERE customer_id IN "
                    "(SELECT customer_id FROM _changed_customers))"
                )
    sql, params = interactions_query(tables, weights, has_orders=has_orders)
    con.execute("CREATE SCHEMA IF NOT EXISTS features")
    try:
        with atomic(con):
            if plan.full or not table_exists(con, TARGET):
                con.execute(f"CREATE OR REPLACE TABLE {TARGET} AS {sql}", params)
                merged = MergeCounts(con.execute(f"SELECT count(*) FROM {TARGET}").fetchall()[0][0], 0, 0, 0)
            else:
                merged = _merge(con, sql, params)
            record_state(con, plan, signature, now)
    finally:
        if not plan.full:
            con.unregister("_changed_customers")
    return InteractionsRefresh(plan, merged, counts)


def _merge(con: duckdb.DuckDBPyConnection, sql: str, params: list) -> MergeCounts:
    con.execute(f"CREATE OR REPLACE TEMP TABLE _fresh_interactions AS {sql}", params)
    total = con.execute(f"SELECT count(*) FROM {TARGET}").fetchall()[0][0]
    held = con.execute(
        f"SELECT count(*) FROM _fresh_interactions WHERE customer_id IN "
        f"(SELECT DISTINCT customer_id FROM {TARGET} WHERE customer_id IN "
        "(SELECT customer_id FROM _changed_customers))"
    ).fetchall()[0][0]
    replaced = con.execute(
        f"DELETE FROM {TARGET} WHERE customer_id IN (SELECT customer_id FROM _changed_customers)"
    ).fetchall()[0][0]
    fresh = con.execute(f"INSERT INTO {TARGET} BY NAME SELECT * FROM _fresh_interactions").fetchall()[0][0]
    con.execute("DROP TABLE temp._fresh_interactions")
    return MergeCounts(
        new=fresh - held, changed=held, untouched=total - replaced, removed=max(replaced - held, 0)
    )


@contextmanager
def _of_customers(con: duckdb.DuckDBPyConnection, customers: list[str]) -> Iterator[str]:
    """``customers`` registered on ``con`` for the block; yields the SQL condition that keeps their rows."""
    con.register("_read_customers", pd.DataFrame({"customer_id": pd.Series(customers, dtype="string")}))
    try:
        yield "customer_id IN (SELECT customer_id FROM _read_customers)"
    finally:
        con.unregister("_read_customers")


def read_interactions(con: duckdb.DuckDBPyConnection, customers: list[str] | None = None) -> pd.DataFrame:
    """features.interactions (of ``customers`` only, when given) in the build query's order (user and item
    indices follow first appearance, so the order is part of what a model sees), or an empty frame."""
    from ecom_pipeline.ml.recsys.interactions import INTERACTION_COLUMNS

    if not table_exists(con, TARGET):
        return pd.DataFrame(columns=INTERACTION_COLUMNS)
    if customers is None:
        with memory_limit_at_most(con, WHOLE_READ_SORT_MEMORY):
            return fetch_frame_shared_strings(
                con, f"SELECT {', '.join(INTERACTION_COLUMNS)} FROM {TARGET} ORDER BY {ORDER}"
            )
    with _of_customers(con, customers) as theirs:
        return fetch_frame_shared_strings(
            con, f"SELECT {', '.join(INTERACTION_COLUMNS)} FROM {TARGET} WHERE {theirs} ORDER BY {ORDER}"
        )


def count_stored_interactions(con: duckdb.DuckDBPyConnection) -> int:
    """Rows of features.interactions (0 before it exists)."""
    return con.execute(f"SELECT count(*) FROM {TARGET}").fetchall()[0][0] if table_exists(con, TARGET) else 0


def customers_with_interactions(con: duckdb.DuckDBPyConnection, customers: list[str]) -> set[str]:
    """The ``customers`` that have at least one row in features.interactions."""
    if not customers or not table_exists(con, TARGET):
        return set()
    with _of_customers(con, customers) as theirs:
        rows = con.execute(f"SELECT DISTINCT customer_id FROM {TARGET} WHERE {theirs}").fetchall()
    return {str(r[0]) for r in rows}


def read_interaction_data(
    con: duckdb.DuckDBPyConnection,
    *,
    item_col: str = "product_id",
    user_regions: pd.Series | None = None,
    item_names: dict | None = None,
    catalog: list | None = None,
):
    """features.interactions indexed for the recommenders (``InteractionData``; items: ``item_col``), built in
    DuckDB: what ``build_data(read_interactions(con), item_col)`` gives, without a frame of 11.8M id strings
    at 1M orders."""
    return read_interaction_levels(
        con,
        (item_col,),
        user_regions=user_regions,
        item_names={item_col: item_names},
        catalogs={item_col: catalog},
    )[item_col]


def read_interaction_levels(
    con: duckdb.DuckDBPyConnection,
    item_cols: tuple[str, ...],
    *,
    user_regions: pd.Series | None = None,
    item_names: dict[str, dict | None] | None = None,
    catalogs: dict[str, list | None] | None = None,
) -> dict:
    """:func:`read_interaction_data` for each column of ``item_cols`` (e.g. product and category), by column:
    the rows are sorted and numbered once for all of them."""
    from ecom_pipeline.ml.recsys.data import build_data, build_levels_from_duckdb
    from ecom_pipeline.ml.recsys.interactions import INTERACTION_COLUMNS

    if not item_cols:
        return {}
    if not table_exists(con, TARGET):
        empty = pd.DataFrame(columns=INTERACTION_COLUMNS)
        return {col: build_data(empty, col, user_regions=user_regions) for col in item_cols}
    with memory_limit_at_most(con, WHOLE_READ_SORT_MEMORY):
        return build_levels_from_duckdb(
            con,
            TARGET,
            item_cols,
            user_regions=user_regions,
            item_names=item_names,
            catalogs=catalogs,
            order_by=ORDER,
        )


def refresh_category_interactions(
    con: duckdb.DuckDBPyConnection,
    *,
    mode: str = "auto",
    full_refresh_days: float = FULL_REFRESH_DAYS,
    now: datetime | None = None,
) -> tuple[RefreshPlan, MergeCounts, pd.DataFrame]:
    """features.category_interactions (per customer and category) re-aggregated for the customers whose
    interactions changed: the ones features.interactions recomputed since this table's last run (its
    watermark), everyone after a full rebuild of the interactions.  Returns the plan, counts and the rows
    written."""
    from ecom_pipeline.incremental.serving import write_customer_rows
    from ecom_pipeline.ml.recsys.interactions import (
        INTERACTION_COLUMNS,
        aggregate_in_duckdb,
        aggregate_interactions,
    )

    inputs = read_state(con, TARGET) or {}
    signature = f"category_interactions;interactions_full={inputs.get('last_full_at')}"
    plan = plan_refresh(
        con,
        CATEGORY_TARGET,
        signature=signature,
        mode=mode,
        full_refresh_days=full_refresh_days,
        now=now,
        input_target=TARGET,
        input_watermark=inputs.get("watermark"),
    )
    if not table_exists(con, TARGET):
        rows = aggregate_interactions(pd.DataFrame(columns=INTERACTION_COLUMNS), "category")
    elif plan.full:
        with memory_limit_at_most(con, WHOLE_READ_SORT_MEMORY):
            rows = aggregate_in_duckdb(con, TARGET, "category")
    else:
        with _of_customers(con, plan.customers) as theirs:
            rows = aggregate_in_duckdb(con, TARGET, "category", where=theirs)
    return plan, write_customer_rows(con, plan, signature, rows, now=now), rows
