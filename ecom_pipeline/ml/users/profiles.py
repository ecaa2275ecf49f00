"""Per-customer profiles as of a cutoff: RFM, behaviour, experience (reviews, delivery delay) and region.

Everything is computed from rows strictly before ``as_of``: a profile at a cutoff never sees the future,
which is what makes it usable as features for repurchase prediction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ecom_pipeline.canonical import NON_PURCHASE_STATUSES  # one list for every consumer

RFM_FEATURES = ["recency_days", "frequency", "monetary"]
BEHAVIOUR_FEATURES = [
    "avg_order_value",
    "tenure_days",
    "n_items",
    "n_categories",
    "avg_item_price",
    "avg_review_score",
    "n_reviews",
    "avg_delivery_delay_days",
    "late_share",
    "n_views",
    "n_carts",
    "view_to_purchase",
    "days_between_orders",
]
NUMERIC_FEATURES = RFM_FEATURES + BEHAVIOUR_FEATURES
PROFILE_COLUMNS = (
    ["customer_id"] + NUMERIC_FEATURES + ["top_category", "price_band", "state", "city", "as_of"]
)
# The staging columns a profile is built from (the assets and the incremental refresh read exactly these).
STAGING_COLUMNS = {
    "orders": ["order_id", "customer_id", "status", "purchased_at", "delivered_at", "estimated_delivery_at"],
    "order_items": ["order_id", "product_id", "price", "freight", "quantity"],
    "products": ["product_id", "category"],
    "customers": ["customer_id", "state", "city"],
    "reviews": ["order_id", "customer_id", "score", "created_at"],
    "events": ["customer_id", "event_type", "ts"],
}


def _empty_tables(tables: dict) -> dict:
    return {k: (v if v is not None else pd.DataFrame()) for k, v in tables.items()}


def build_profiles(
    orders: pd.DataFrame,
    order_items: pd.DataFrame,
    products: pd.DataFrame | None = None,
    customers: pd.DataFrame | None = None,
    reviews: pd.DataFrame | None = None,
    events: pd.DataFrame | None = None,
    *,
    as_of: pd.Timestamp | str | None = None,
) -> pd.DataFrame:
    """One row per customer with at least one purchase before ``as_of`` (default: after the last order)."""
    t = _empty_tables({"products": products, "customers": customers, "reviews": reviews, "events": events})
    cols = PROFILE_COLUMNS
    if orders is None or orders.empty:
        return pd.DataFrame(columns=cols)
    o = orders.copy()
    o["purchased_at"] = pd.to_datetime(o["purchased_at"])
    as_of = pd.Timestamp(as_of) if as_of is not None else o["purchased_at"].max() + pd.Timedelta(seconds=1)
    o = o[
        (o["purchased_at"] < as_of)
        & ~o["status"].fillna("").astype(str).str.lower().isin(NON_PURCHASE_STATUSES)
    ]
    if o.empty:
        return pd.DataFrame(columns=cols)
    o["customer_id"] = o["customer_id"].astype(str)
    items = order_items.merge(o[["order_id", "customer_id", "purchased_at"]], on="order_id", how="inner")
    qty = items["quantity"].fillna(1) if "quantity" in items else 1
    items = items.assign(
        value=items["price"].astype(float) * qty + items.get("freight", 0).fillna(0).astype(float)
    )
    order_value = items.groupby("order_id")["value"].sum()
    o["value"] = o["order_id"].map(order_value).fillna(0.0)

    g = o.groupby("customer_id")
    prof = pd.DataFrame(
        {
            "recency_days": (as_of - g["purchased_at"].max()).dt.total_seconds() / 86400,
            "frequency": g["order_id"].nunique().astype(float),
            "monetary": g["value"].sum(),
            "tenure_days": (as_of - g["purchased_at"].min()).dt.total_seconds() / 86400,
        }
    )
    prof["avg_order_value"] = prof["monetary"] / prof["frequency"]
    span = (g["purchased_at"].max() - g["purchased_at"].min()).dt.total_seconds() / 86400
    prof["days_between_orders"] = np.where(
        prof["frequency"] > 1, span / (prof["frequency"] - 1).clip(lower=1), np.nan
    )

    ig = items.groupby("customer_id")
    prof["n_items"] = ig.size().reindex(prof.index).fillna(0).astype(float)
    prof["avg_item_price"] = ig["price"].mean().reindex(prof.index)
    if len(t["products"]) and "category" in t["products"]:
        cat = items.merge(
            t["products"][["product_id", "category"]].drop_duplicates("product_id"),
            on="product_id",
            how="left",
        )
        cat["category"] = cat["category"].fillna("unknown")
        prof["n_categories"] = cat.groupby("customer_id")["category"].nunique().reindex(prof.index).fillna(0)
        top = cat.groupby(["customer_id", "category"]).size().rename("n").reset_index()
        top = top.sort_values(["customer_id", "n", "category"], ascending=[True, False, True])
        prof["top_category"] = top.drop_duplicates("customer_id").set_index("customer_id")["category"]
    else:
        prof["n_categories"] = np.nan
        prof["top_category"] = None

    # experience: reviews given before as_of, delivery delay experienced (delivered before as_of)
    r = t["reviews"]
    if len(r):
        r = r.copy()
        r["created_at"] = pd.to_datetime(r["created_at"])
        r = r[r["created_at"] < as_of]
        if "customer_id" not in r or r["customer_id"].isna().all():
            r = r.drop(columns=["customer_id"], errors="ignore").merge(
                o[["order_id", "customer_id"]], on="order_id"
            )
        r["customer_id"] = r["customer_id"].astype(str)
        rg = r.groupby("customer_id")["score"]
        prof["avg_review_score"] = rg.mean().reindex(prof.index)
        prof["n_reviews"] = rg.size().reindex(prof.index).fillna(0).astype(float)
    else:
        prof["avg_review_score"] = np.nan
        prof["n_reviews"] = 0.0
    if "delivered_at" in o and "estimated_delivery_at" in o:
        d = o.copy()
        d["delivered_at"] = pd.to_datetime(d["delivered_at"])
        d["estimated_delivery_at"] = pd.to_datetime(d["estimated_delivery_at"])
        d = d[d["delivered_at"].notna() & d["estimated_delivery_at"].notna() & (d["delivered_at"] < as_of)]
        delay = (d["delivered_at"] - d["estimated_delivery_at"]).dt.total_seconds() / 86400
        d = d.assign(delay=delay, late=(delay > 0).astype(float))
        dg_ = d.groupby("customer_id")
        prof["avg_delivery_delay_days"] = dg_["delay"].mean().reindex(prof.index)
        prof["late_share"] = dg_["late"].mean().reindex(prof.index)
    else:
        prof["avg_delivery_delay_days"] = np.nan
        prof["late_share"] = np.nan

    e = t["events"]
    if len(e):
        e = e[pd.to_datetime(e["ts"]) < as_of]
        e = e.assign(customer_id=e["customer_id"].astype(str))
        counts = e.groupby(["customer_id", "event_type"]).size().unstack(fill_value=0)
        prof["n_views"] = (
            counts.get("view", pd.Series(dtype=float)).reindex(prof.index).fillna(0).astype(float)
        )
        prof["n_carts"] = (
            counts.get("cart", pd.Series(dtype=float)).reindex(prof.index).fillna(0).astype(float)
        )
        prof["view_to_purchase"] = np.where(
            prof["n_views"] > 0, prof["n_items"] / prof["n_views"].clip(lower=1), np.nan
        )
    else:
        prof["n_views"] = 0.0
        prof["n_carts"] = 0.0
        prof["view_to_purchase"] = np.nan

    c = t["customers"]
    if len(c):
        c = (
            c.assign(customer_id=c["customer_id"].astype(str))
            .drop_duplicates("customer_id")
            .set_index("customer_id")
        )
        prof["state"] = c["state"].reindex(prof.index) if "state" in c else None
        prof["city"] = c["city"].reindex(prof.index) if "city" in c else None
    else:
        prof["state"] = None
        prof["city"] = None
    prof["price_band"] = price_bands(prof["avg_item_price"])
    prof["as_of"] = as_of
    prof = prof.reset_index().rename(columns={"index": "customer_id"})
    return prof[cols]


def price_bands(price: pd.Series) -> pd.Series:
    """Terciles of the average item price over every profiled customer (ties in customer order): a column
    that depends on the whole population, which the incremental refresh recomputes for everyone."""
    if price.notna().sum() >= 3 and price.nunique() >= 3:
        return pd.qcut(price.rank(method="first"), 3, labels=["low", "mid", "high"]).astype(str)
    return pd.Series("mid", index=price.index)
