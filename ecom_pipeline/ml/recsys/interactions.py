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


def aggregate_interactions(interactions: pd.DataFrame, item_col: str = "product_id") -> pd.DataFrame:
    """Per (customer, item): summed weight, counts per event type, first and last time."""
    cols = [
        "customer_id",
        item_col,
        "weight",
        "n_interactions",
        "n_purchases",
        "n_carts",
        "n_views",
        "first_ts",
        "last_ts",
    ]
    if interactions.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    df = interactions.assign(
        _p=(interactions["event_type"] == "purchase").astype(int),
        _c=(interactions["event_type"] == "cart").astype(int),
        _v=(interactions["event_type"] == "view").astype(int),
    )
    g = df.groupby(["customer_id", item_col], as_index=False).agg(
        weight=("weight", "sum"),
        n_interactions=("weight", "size"),
        n_purchases=("_p", "sum"),
        n_carts=("_c", "sum"),
        n_views=("_v", "sum"),
        first_ts=("ts", "min"),
        last_ts=("ts", "max"),
    )
    return g[cols]
