"""User-item interactions from orders (purchases) and behaviour events (view / cart / purchase), weighted.

Orders are the source of truth for purchases: when a source has both orders and purchase events, the
purchase events are dropped so a purchase is not counted twice.  Cancelled / unavailable orders are not
purchases.  Category-level interactions aggregate the same rows by product category (the honest unit on
very sparse data such as Olist, where almost every customer buys once).
"""

from __future__ import annotations

import pandas as pd

from ecom_pipeline.canonical import NON_PURCHASE_STATUSES  # one list for every consumer

DEFAULT_WEIGHTS: dict[str, float] = {"view": 1.0, "cart": 3.0, "purchase": 5.0}
INTERACTION_COLUMNS = ["customer_id", "product_id", "category", "event_type", "ts", "weight", "source"]
UNKNOWN_CATEGORY = "unknown"


# Table names the SQL reads; ``build_interactions`` registers DataFrames under these names, the asset
# points them at the staging tables, so both run the one query below.
STAGING_TABLES = {
    "orders": "staging.orders",
    "order_items": "staging.order_items",
    "events": "staging.events",
    "products": "staging.products",
}


def interactions_query(
    tables: dict[str, str], weights: dict[str, float] | None = None, has_orders: bool = True
) -> tuple[str, list]:
    """(SQL, parameters) for the interactions of ``tables`` (keys as in STAGING_TABLES; a missing key is a
    source without that table).  DuckDB SQL, so 13M events at 1M orders never become a pandas frame.

    ``has_orders``: orders and order items both non-empty; then purchase events are dropped (orders are the
    source of truth for purchases)."""
    weights = {**DEFAULT_WEIGHTS, **(weights or {})}
    parts, params = [], []
    if has_orders and "orders" in tables and "order_items" in tables:
        excluded = ", ".join("?" for _ in NON_PURCHASE_STATUSES)
        parts.append(f"""
            SELECT CAST(o.customer_id AS VARCHAR) AS customer_id, CAST(i.product_id AS VARCHAR) AS product_id,
                   'purchase' AS event_type, CAST(o.purchased_at AS TIMESTAMP) AS ts,
                   CAST(? AS DOUBLE) AS weight, 'orders' AS source
            FROM (SELECT DISTINCT order_id, product_id FROM {tables["order_items"]}) i
            JOIN {tables["orders"]} o ON o.order_id = i.order_id
            WHERE lower(coalesce(CAST(o.status AS VARCHAR), '')) NOT IN ({excluded})""")
        params += [float(weights["purchase"]), *NON_PURCHASE_STATUSES]
    if "events" in tables:
        kinds = [k for k in weights if not (has_orders and k == "purchase")]
        if kinds:
            values = ", ".join("(?, CAST(? AS DOUBLE))" for _ in kinds)
            parts.append(f"""
                SELECT CAST(e.customer_id AS VARCHAR), CAST(e.product_id AS VARCHAR), w.event_type,
                       CAST(e.ts AS TIMESTAMP), w.weight, 'events'
                FROM {tables["events"]} e
                JOIN (VALUES {values}) w(event_type, weight)
                  ON lower(CAST(e.event_type AS VARCHAR)) = w.event_type""")
            params += [x for k in kinds for x in (k, float(weights[k]))]
    if not parts:
        parts.append(
            "SELECT NULL::VARCHAR AS customer_id, NULL::VARCHAR AS product_id, NULL::VARCHAR AS event_type, "
            "NULL::TIMESTAMP AS ts, NULL::DOUBLE AS weight, NULL::VARCHAR AS source WHERE false"
        )
    category = (
        "(SELECT CAST(product_id AS VARCHAR) AS product_id, any_value(CAST(category AS VARCHAR)) AS category "
        f"FROM {tables['products']} GROUP BY 1)"
        if "products" in tables
        else "(SELECT NULL::VARCHAR AS product_id, NULL::VARCHAR AS category WHERE false)"
    )
    sql = f"""
        WITH x AS ({" UNION ALL ".join(parts)})
        SELECT x.customer_id, x.product_id, coalesce(c.category, ?) AS category, x.event_type, x.ts, x.weight,
               x.source
        FROM x LEFT JOIN {category} c ON c.product_id = x.product_id
        WHERE x.customer_id IS NOT NULL AND x.product_id IS NOT NULL AND x.ts IS NOT NULL
        ORDER BY x.ts, x.customer_id, x.product_id, x.event_type"""
    return sql, [*params, UNKNOWN_CATEGORY]


def build_interactions(
    orders: pd.DataFrame,
    order_items: pd.DataFrame,
    events: pd.DataFrame | None = None,
    products: pd.DataFrame | None = None,
    weights: dict[str, float] | None = None,
) -> pd.DataFrame:
    """One row per interaction: customer_id, product_id, category, event_type, ts, weight, source
    (``interactions_query`` run on DataFrames)."""
    import duckdb

    frames = {"orders": orders, "order_items": order_items, "events": events, "products": products}
    frames = {k: v for k, v in frames.items() if v is not None and len(v)}
    has_orders = "orders" in frames and "order_items" in frames
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        for name, frame in frames.items():
            con.register(f"frame_{name}", frame)
        sql, params = interactions_query({k: f"frame_{k}" for k in frames}, weights, has_orders)
        out = con.execute(sql, params).df()
    finally:
        con.close()
    out["ts"] = pd.to_datetime(out["ts"]).astype("datetime64[ns]")
    return out[INTERACTION_COLUMNS].reset_index(drop=True)


AGGREGATE_COLUMNS = [
    "customer_id",
    "weight",
    "n_interactions",
    "n_purchases",
    "n_carts",
    "n_views",
    "first_ts",
    "last_ts",
]  # with the item column second


def aggregate_in_duckdb(con, relation: str, item_col: str = "product_id", where: str = "") -> pd.DataFrame:
    """Per (customer, item) of the interactions in ``relation`` (a table or a registered frame): summed
    weight, counts per event type, first and last time; rows without a customer or item are not counted, rows
    come sorted by customer and item.  ``where``: an extra SQL condition on ``relation``'s rows.

    Computed by DuckDB: a full refresh at 1M orders aggregates 11.8M interactions (a pandas group-by of their
    id strings held 3 GB).  The weights are summed as exact decimals, so the result does not depend on the
    order DuckDB's threads add them in (a full rebuild and an incremental run give the same table)."""
    item = '"' + item_col.replace('"', '""') + '"'
    extra = f" AND ({where})" if where else ""
    out = con.execute(
        f"SELECT CAST(customer_id AS VARCHAR) AS customer_id, CAST({item} AS VARCHAR) AS {item}, "
        "CAST(sum(CAST(weight AS DECIMAL(38, 12))) AS DOUBLE) AS weight, count(*) AS n_interactions, "
        "count(*) FILTER (WHERE event_type = 'purchase') AS n_purchases, "
        "count(*) FILTER (WHERE event_type = 'cart') AS n_carts, "
        "count(*) FILTER (WHERE event_type = 'view') AS n_views, "
        f"min(ts) AS first_ts, max(ts) AS last_ts FROM {relation} "
        f"WHERE customer_id IS NOT NULL AND {item} IS NOT NULL{extra} GROUP BY ALL ORDER BY 1, 2"
    ).df()
    return out  # times in the relation's own type, as a group-by of its rows gives them


def aggregate_interactions(interactions: pd.DataFrame, item_col: str = "product_id") -> pd.DataFrame:
    """:func:`aggregate_in_duckdb` of an interactions frame."""
    import duckdb

    if interactions.empty:
        cols = [AGGREGATE_COLUMNS[0], item_col, *AGGREGATE_COLUMNS[1:]]
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    con = duckdb.connect()
    try:
        con.register("frame_interactions", interactions)
        return aggregate_in_duckdb(con, "frame_interactions", item_col)
    finally:
        con.close()
