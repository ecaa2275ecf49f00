"""A small synthetic shop staged the way the daily ingest stages it: a history partition, then one new day
(that day's orders, items, payments, reviews, first-time customers and events, plus a late correction of an
older order), each through ``load_raw_partition`` + ``upsert_staging_partition``."""

from __future__ import annotations

import duckdb
import pandas as pd

from ecom_pipeline.canonical import TABLE_ORDER, TABLES
from ecom_pipeline.cleaning.staging_upsert import upsert_staging_partition
from ecom_pipeline.loading import load_raw_partition, load_raw_table
from ecom_pipeline.sources.synthetic import SyntheticSource
from ecom_pipeline_tests.framesource import FrameSource

KEY = b"incremental-test-key"
HISTORY, DAY = "p1-history", "p2-day"  # partition keys order like dates
DAY_ORDERS = (
    "order_id IN (SELECT order_id FROM raw.orders WHERE TRY_CAST(purchased_at AS TIMESTAMP)::DATE = $day)"
)
IS_DAY = {
    "orders": "TRY_CAST(purchased_at AS TIMESTAMP)::DATE = $day",
    "order_items": DAY_ORDERS,
    "payments": DAY_ORDERS,
    "reviews": DAY_ORDERS,
    "customers": "customer_id IN (SELECT customer_id FROM _first WHERE d = $day)",
    "events": "TRY_CAST(ts AS TIMESTAMP)::DATE = $day",
}


def day_partitions(n_orders: int = 2000, days: int = 60, seed: int = 3) -> tuple[dict, dict, SyntheticSource]:
    """(history tables, new-day tables) as text frames of the canonical columns, and the source (hints)."""
    source = SyntheticSource(n_orders=n_orders, seed=seed, days=days, image_dir=None, write_images=False)
    gen = duckdb.connect()
    for t in TABLE_ORDER:
        load_raw_table(gen, source, t, load_id="gen")
    day = gen.execute("SELECT max(TRY_CAST(purchased_at AS TIMESTAMP))::DATE FROM raw.orders").fetchall()[0][
        0
    ]
    gen.execute(
        "CREATE TEMP TABLE _first AS SELECT customer_id, min(TRY_CAST(purchased_at AS TIMESTAMP))::DATE "
        "AS d FROM raw.orders GROUP BY ALL"
    )
    history, new_day = {}, {}
    for t in TABLE_ORDER:
        cols = ", ".join(f'"{c}"' for c in TABLES[t].column_names)
        pred = f"coalesce({IS_DAY.get(t, 'false')}, false)"
        params = {"day": day} if "$day" in pred else None
        new_day[t] = gen.execute(
            f"SELECT {cols} FROM raw.{t} WHERE {pred} ORDER BY _source_row", params
        ).fetchdf()
        history[t] = gen.execute(
            f"SELECT {cols} FROM raw.{t} WHERE NOT {pred} ORDER BY _source_row", params
        ).fetchdf()
    # a late correction: an older delivered order of a customer without activity that day is cancelled
    o = history["orders"]
    late = (
        o[
            (o["status"] == "delivered")
            & o["customer_id"].notna()
            & ~o["customer_id"].isin(new_day["orders"]["customer_id"])
        ]
        .iloc[[0]]
        .copy()
    )
    late["status"] = "canceled"
    new_day["orders"] = pd.concat([new_day["orders"], late], ignore_index=True)
    gen.close()
    return history, new_day, source


def stage_partition(
    con: duckdb.DuckDBPyConnection, tables: dict, partition: str, source: SyntheticSource
) -> None:
    frames = FrameSource(tables)
    for t in TABLE_ORDER:
        load_raw_partition(con, frames, t, partition, load_id=f"{partition}-{t}")
        upsert_staging_partition(con, t, partition, pseudonym_key=KEY, hints=source.parse_hints(t))
