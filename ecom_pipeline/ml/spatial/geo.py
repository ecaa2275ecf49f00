"""Regions (state and 3-digit zip prefix), their customer/seller distribution, flows and the kNN graph."""

from __future__ import annotations

import numpy as np
import pandas as pd

EARTH_RADIUS_KM = 6371.0088
LEVELS = ("state", "zip3")


def haversine_km(lat1, lng1, lat2, lng2):
    """Great-circle distance in km (vectorised; NaN where a coordinate is missing)."""
    lat1, lng1, lat2, lng2 = (np.radians(np.asarray(v, dtype=float)) for v in (lat1, lng1, lat2, lng2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lng2 - lng1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def region_id(df: pd.DataFrame, level: str) -> pd.Series:
    """``state:SP`` or ``zip3:010`` for rows with ``state`` / ``zip_prefix`` columns (None when unknown)."""
    if level == "state":
        s = df["state"].astype("string").str.upper().str.strip()
        return ("state:" + s).where(s.notna() & (s != ""), None)
    if level == "zip3":
        z = df["zip_prefix"].astype("string").str.extract(r"^(\d{3})", expand=False)
        return ("zip3:" + z).where(z.notna(), None)
    raise ValueError(f"unknown region level {level!r}; use one of {LEVELS}")


def delivered_orders(orders: pd.DataFrame) -> pd.DataFrame:
    """Orders with delivery days, promised days and lateness (only delivered orders have them)."""
    o = orders.copy()
    for c in ("purchased_at", "delivered_at", "estimated_delivery_at"):
        o[c] = pd.to_datetime(o[c])
    o["delivery_days"] = (o["delivered_at"] - o["purchased_at"]).dt.total_seconds() / 86400
    o["promised_days"] = (o["estimated_delivery_at"] - o["purchased_at"]).dt.total_seconds() / 86400
    o["is_late"] = (o["delivered_at"] > o["estimated_delivery_at"]).where(o["delivered_at"].notna())
    return o


def region_table(level: str, regions: pd.DataFrame, customers: pd.DataFrame, sellers: pd.DataFrame,
                 orders: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """One row per region of ``level``: centroid (staging.regions where present, else the mean location of
    its customers and sellers), customers, sellers, orders, revenue, mean delivery days and late rate."""
    cust = customers.assign(region_id=region_id(customers, level)).dropna(subset=["region_id"])
    sell = sellers.assign(region_id=region_id(sellers, level)).dropna(subset=["region_id"])
    pts = pd.concat([cust[["region_id", "lat", "lng", "state"]], sell[["region_id", "lat", "lng", "state"]]])
    cent = pts.groupby("region_id").agg(lat=("lat", "mean"), lng=("lng", "mean"), state=("state", "first"))
    if len(regions):
        staged = regions[regions["level"] == level].set_index("region_id")[["lat", "lng", "name", "state"]]
        cent = cent.combine_first(staged[["lat", "lng", "state"]]) if len(cent) else staged[["lat", "lng", "state"]]
        cent.loc[cent.index.intersection(staged.index), ["lat", "lng"]] = staged.loc[
            cent.index.intersection(staged.index), ["lat", "lng"]].to_numpy()
        cent["name"] = staged["name"].reindex(cent.index)
    else:
        cent["name"] = None
    cent["name"] = cent["name"].fillna(pd.Series(cent.index.str.split(":").str[1], index=cent.index))
    out = cent.reset_index().rename(columns={"index": "region_id"})
    out["level"] = level
    o = delivered_orders(orders).merge(cust[["customer_id", "region_id"]], on="customer_id", how="inner")
    rev = items.assign(revenue=items["price"].astype(float) + items["freight"].astype(float).fillna(0)) \
        .groupby("order_id")["revenue"].sum() if len(items) else pd.Series(dtype=float)
    o["revenue"] = o["order_id"].map(rev).fillna(0.0)
    stats = o.groupby("region_id").agg(orders=("order_id", "nunique"), revenue=("revenue", "sum"),
                                       mean_delivery_days=("delivery_days", "mean"),
                                       late_rate=("is_late", lambda s: s.dropna().astype(float).mean()))
    stats["customers"] = cust.groupby("region_id")["customer_id"].nunique()
    stats = stats.reindex(out["region_id"]).reset_index()
    stats["customers"] = cust.groupby("region_id")["customer_id"].nunique().reindex(stats["region_id"]).to_numpy()
    stats["sellers"] = sell.groupby("region_id")["seller_id"].nunique().reindex(stats["region_id"]).to_numpy()
    out = out.merge(stats, on="region_id", how="left")
    for c in ("orders", "customers", "sellers"):
        out[c] = out[c].fillna(0).astype("int64")
    out["revenue"] = out["revenue"].fillna(0.0)
    out = out.dropna(subset=["lat", "lng"])
    return out[["region_id", "level", "name", "state", "lat", "lng", "customers", "sellers", "orders", "revenue",
                "mean_delivery_days", "late_rate"]].sort_values("region_id").reset_index(drop=True)


def order_geo(orders: pd.DataFrame, items: pd.DataFrame, customers: pd.DataFrame, sellers: pd.DataFrame) -> pd.DataFrame:
    """Order item lines with seller and customer coordinates, regions and the haversine distance."""
    it = items[["order_id", "seller_id", "price", "freight"]]
    o = orders[["order_id", "customer_id", "purchased_at"]].merge(it, on="order_id", how="inner")
    c = customers[["customer_id", "lat", "lng", "state", "zip_prefix"]].rename(
        columns={"lat": "c_lat", "lng": "c_lng", "state": "c_state", "zip_prefix": "c_zip"})
    s = sellers[["seller_id", "lat", "lng", "state", "zip_prefix"]].rename(
        columns={"lat": "s_lat", "lng": "s_lng", "state": "s_state", "zip_prefix": "s_zip"})
    g = o.merge(c, on="customer_id", how="left").merge(s, on="seller_id", how="left")
    g["distance_km"] = haversine_km(g["s_lat"], g["s_lng"], g["c_lat"], g["c_lng"])
    return g


def flows(geo: pd.DataFrame, level: str) -> pd.DataFrame:
    """Seller-region → customer-region edges: orders, items, revenue, mean and median distance (km)."""
    g = geo.copy()
    g["src"] = region_id(g.rename(columns={"s_state": "state", "s_zip": "zip_prefix"}), level)
    g["dst"] = region_id(g.rename(columns={"c_state": "state", "c_zip": "zip_prefix"}), level)
    g = g.dropna(subset=["src", "dst"])
    g["revenue"] = g["price"].astype(float) + g["freight"].astype(float).fillna(0)
    out = g.groupby(["src", "dst"]).agg(orders=("order_id", "nunique"), items=("order_id", "size"),
                                        revenue=("revenue", "sum"), mean_distance_km=("distance_km", "mean"),
                                        median_distance_km=("distance_km", "median")).reset_index()
    out["level"] = level
    return out.sort_values("orders", ascending=False).reset_index(drop=True)


def knn_graph(regions: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """Directed edges from each region to its ``k`` nearest regions (same level) by haversine distance."""
    rows = []
    for level, r in regions.groupby("level"):
        r = r.reset_index(drop=True)
        n = len(r)
        if n < 2:
            continue
        d = haversine_km(r["lat"].to_numpy()[:, None], r["lng"].to_numpy()[:, None],
                         r["lat"].to_numpy()[None, :], r["lng"].to_numpy()[None, :])
        np.fill_diagonal(d, np.inf)
        kk = min(k, n - 1)
        nn = np.argsort(d, axis=1)[:, :kk]
        for i in range(n):
            for rank, j in enumerate(nn[i], 1):
                rows.append((r.at[i, "region_id"], r.at[j, "region_id"], float(d[i, j]), rank, level))
    return pd.DataFrame(rows, columns=["src", "dst", "distance_km", "rank", "level"])


def knn_features(regions: pd.DataFrame, graph: pd.DataFrame) -> pd.DataFrame:
    """Per region: inverse-distance-weighted neighbour demand (orders, revenue) and neighbour delivery delay
    and late rate, beside the region's own values."""
    if graph.empty:
        return pd.DataFrame(columns=["region_id", "level", "orders", "neighbour_orders", "neighbour_revenue",
                                     "neighbour_delivery_days", "neighbour_late_rate", "mean_neighbour_km"])
    g = graph.merge(regions[["region_id", "orders", "revenue", "mean_delivery_days", "late_rate"]],
                    left_on="dst", right_on="region_id", how="left")
    g["w"] = 1.0 / (1.0 + g["distance_km"])

    def wmean(df, col):
        m = df[col].notna()
        return float(np.average(df.loc[m, col], weights=df.loc[m, "w"])) if m.any() else np.nan

    rows = []
    for src, df in g.groupby("src"):
        rows.append({"region_id": src, "neighbour_orders": wmean(df, "orders"), "neighbour_revenue": wmean(df, "revenue"),
                     "neighbour_delivery_days": wmean(df, "mean_delivery_days"),
                     "neighbour_late_rate": wmean(df, "late_rate"), "mean_neighbour_km": float(df["distance_km"].mean())})
    f = pd.DataFrame(rows)
    return regions[["region_id", "level", "orders", "mean_delivery_days"]].merge(f, on="region_id", how="left")
