"""User-item interactions from orders (purchases) and behaviour events (view / cart / purchase), weighted.

Orders are the source of truth for purchases: when a source has both orders and purchase events, the
purchase events are dropped so a purchase is not counted twice.  Cancelled / unavailable orders are not
purchases.  Category-level interactions aggregate the same rows by product category (the honest unit on
very sparse data such as Olist, where almost every customer buys once).
"""

from __future__ import annotations

import pandas as pd

DEFAULT_WEIGHTS: dict[str, float] = {"view": 1.0, "cart": 3.0, "purchase": 5.0}
NON_PURCHASE_STATUSES = ("canceled", "cancelled", "unavailable")
INTERACTION_COLUMNS = ["customer_id", "product_id", "category", "event_type", "ts", "weight", "source"]
UNKNOWN_CATEGORY = "unknown"


def _empty() -> pd.DataFrame:
    return pd.DataFrame({
        "customer_id": pd.Series(dtype="object"), "product_id": pd.Series(dtype="object"),
        "category": pd.Series(dtype="object"), "event_type": pd.Series(dtype="object"),
        "ts": pd.Series(dtype="datetime64[ns]"), "weight": pd.Series(dtype="float64"),
        "source": pd.Series(dtype="object"),
    })


def build_interactions(
    orders: pd.DataFrame,
    order_items: pd.DataFrame,
    events: pd.DataFrame | None = None,
    products: pd.DataFrame | None = None,
    weights: dict[str, float] | None = None,
) -> pd.DataFrame:
    """One row per interaction: customer_id, product_id, category, event_type, ts, weight, source."""
    weights = {**DEFAULT_WEIGHTS, **(weights or {})}
    parts = []
    has_orders = orders is not None and len(orders) and order_items is not None and len(order_items)
    if has_orders:
        o = orders[["order_id", "customer_id", "status", "purchased_at"]].copy()
        status = o["status"].fillna("").astype(str).str.lower()
        o = o[~status.isin(NON_PURCHASE_STATUSES)]
        items = order_items[["order_id", "product_id"]].drop_duplicates()
        p = items.merge(o, on="order_id", how="inner")
        parts.append(pd.DataFrame({
            "customer_id": p["customer_id"].astype(str), "product_id": p["product_id"].astype(str),
            "event_type": "purchase", "ts": pd.to_datetime(p["purchased_at"]),
            "weight": float(weights["purchase"]), "source": "orders",
        }))
    if events is not None and len(events):
        e = events[["customer_id", "product_id", "event_type", "ts"]].copy()
        e["event_type"] = e["event_type"].astype(str).str.lower()
        if has_orders:
            e = e[e["event_type"] != "purchase"]
        e = e[e["event_type"].isin(list(weights))]
        parts.append(pd.DataFrame({
            "customer_id": e["customer_id"].astype(str), "product_id": e["product_id"].astype(str),
            "event_type": e["event_type"], "ts": pd.to_datetime(e["ts"]),
            "weight": e["event_type"].map(weights).astype(float), "source": "events",
        }))
    if not parts:
        return _empty()
    out = pd.concat(parts, ignore_index=True)
    out = out.dropna(subset=["customer_id", "product_id", "ts"])
    if products is not None and len(products):
        cats = products[["product_id", "category"]].drop_duplicates("product_id")
        cats = cats.assign(product_id=cats["product_id"].astype(str))
        out = out.merge(cats, on="product_id", how="left")
    else:
        out["category"] = None
    out["category"] = out["category"].fillna(UNKNOWN_CATEGORY).astype(str)
    out["ts"] = pd.to_datetime(out["ts"]).astype("datetime64[ns]")
    return out[INTERACTION_COLUMNS].sort_values(["ts", "customer_id", "product_id"]).reset_index(drop=True)


def aggregate_interactions(interactions: pd.DataFrame, item_col: str = "product_id") -> pd.DataFrame:
    """Per (customer, item): summed weight, counts per event type, first and last time."""
    cols = ["customer_id", item_col, "weight", "n_interactions", "n_purchases", "n_carts", "n_views",
            "first_ts", "last_ts"]
    if interactions.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    df = interactions.assign(
        _p=(interactions["event_type"] == "purchase").astype(int),
        _c=(interactions["event_type"] == "cart").astype(int),
        _v=(interactions["event_type"] == "view").astype(int),
    )
    g = df.groupby(["customer_id", item_col], as_index=False).agg(
        weight=("weight", "sum"), n_interactions=("weight", "size"), n_purchases=("_p", "sum"),
        n_carts=("_c", "sum"), n_views=("_v", "sum"), first_ts=("ts", "min"), last_ts=("ts", "max"),
    )
    return g[cols]
