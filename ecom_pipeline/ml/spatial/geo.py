"""Regions (country, state = first-level division, zip3 = 3-character postal prefix), their customer/seller
distribution, flows and the kNN graph.  Locations are placed offline by :mod:`ecom_pipeline.geography`
(:func:`locate`), so a shop whose customers carry only a city, a state or a country still gets regions."""

from __future__ import annotations

import numpy as np
import pandas as pd

EARTH_RADIUS_KM = 6371.0088
LEVELS = ("country", "state", "zip3")  # coarse to fine
SHIP_TO = ("ship_lat", "ship_lng", "ship_postal_code", "ship_city", "ship_state", "ship_country")


def haversine_km(lat1, lng1, lat2, lng2):
    """Great-circle distance in km (vectorised; NaN where a coordinate is missing)."""
    lat1, lng1, lat2, lng2 = (np.radians(np.asarray(v, dtype=float)) for v in (lat1, lng1, lat2, lng2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lng2 - lng1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def locate(frame: pd.DataFrame, countries: tuple[str, ...] = ()) -> pd.DataFrame:
    """``frame`` (customers or sellers) with its location placed: ``lat``/``lng`` filled from the reference
    centroids where the data has none, ``state`` as the division code, ``zip3``, ``country``, ``level``,
    ``resolution_source`` and ``unresolved_reason`` (see
    :func:`ecom_pipeline.geography.resolve_locations`)."""
    from ecom_pipeline.geography import resolve_locations

    r = resolve_locations(frame, countries)
    out = frame.copy()
    for c in (
        "country",
        "state",
        "state_name",
        "zip3",
        "lat",
        "lng",
        "level",
        "resolution_source",
        "unresolved_reason",
    ):
        out[c] = r[c]
    if "zip_prefix" not in out.columns:
        out["zip_prefix"] = None
    return out


def region_id(df: pd.DataFrame, level: str, qualify: bool = False) -> pd.Series:
    """``country:GB``, ``state:SP`` or ``zip3:010`` (None when the row does not reach ``level``); with
    ``qualify`` (a shop in several countries) states and prefixes carry their country: ``state:US-CA``."""
    if level not in LEVELS:
        raise ValueError(f"unknown region level {level!r}; use one of {LEVELS}")
    # the id is built once per distinct (country, value) pair and picked per row: millions of order lines
    # share a few thousand places, and per-row string work was most of the regions and flows steps
    n = len(df)
    cc_codes, cc_values = _distinct(df["country"] if "country" in df.columns else pd.Series([pd.NA] * n))
    if level == "country":
        labels = [f"country:{c}" for c in cc_values]
        return _pick(labels, cc_codes, df.index)
    if level == "state":
        codes, values = _distinct(df["state"])
        values = (
            pd.Series(values, dtype="string").str.upper().str.strip().to_numpy(dtype=object, na_value=None)
        )
    elif "zip3" in df.columns:
        codes, values = _distinct(df["zip3"])
    else:
        codes, values = _distinct(df["zip_prefix"])
        values = (
            pd.Series(values, dtype="string")
            .str.extract(r"^(\d{3})", expand=False)
            .to_numpy(dtype=object, na_value=None)
        )
    width = len(values) + 1
    pair_codes, pairs = pd.factorize((cc_codes + 1) * width + (codes + 1))
    labels = []
    for pair in pairs:
        ci, vi = divmod(int(pair), width)  # 0: missing
        c, v = cc_values[ci - 1] if ci else None, values[vi - 1] if vi else None
        if qualify:
            v = None if c is None or v is None else f"{c}-{v}"
        labels.append(f"{level}:{v}" if v is not None and v != "" else None)
    out = _pick(labels, pair_codes, df.index)
    if "level" in df.columns:
        reached = df["level"].map({lv: i for i, lv in enumerate(LEVELS)}).fillna(-1)
        out = out.where((reached >= LEVELS.index(level)).to_numpy(), None)
    return out


def _distinct(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Per-row codes (-1: missing) and the distinct values as text (object array, None for missing)."""
    codes, distinct = pd.factorize(values.astype("string"))
    return codes, np.asarray(distinct, dtype=object)


def _pick(labels: list, codes: np.ndarray, index: pd.Index) -> pd.Series:
    """``labels[code]`` per row (a missing code -> missing) as a string Series on ``index``."""
    table = np.array([*labels, None], dtype=object)
    return pd.Series(table[codes], index=index, dtype="string")


# id column -> the staging tables that carry it (the located frames and products)
_ID_TABLES = {
    "customer_id": ("customers", "orders"),
    "order_id": ("orders", "order_items"),
    "seller_id": ("sellers", "order_items"),
    "product_id": ("order_items", "products"),
}


def with_integer_ids(frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """``frames`` with every id column replaced by one numeric code per distinct id, shared by the tables
    that carry it (a missing id stays missing: NaN).  Joins, distinct counts and group-bys on the codes
    give what they give on the id strings; hashing millions of id strings again in every merge was most of
    the regions, flows and daily-series work at 1M orders.  Only for computations whose outputs hold no
    ids (the frames passed in are not modified)."""
    coded: dict[str, dict[str, np.ndarray]] = {}  # table -> its coded columns, assigned once per table
    for column, tables in _ID_TABLES.items():
        present = [t for t in tables if t in frames and column in frames[t].columns]
        if not present:
            continue
        sizes = [len(frames[t]) for t in present]
        codes, _ = pd.factorize(np.concatenate([frames[t][column].to_numpy(dtype=object) for t in present]))
        codes = np.where(codes >= 0, codes, np.nan)  # float: missing stays missing, as NaN did
        for t, part in zip(present, np.split(codes, np.cumsum(sizes)[:-1])):
            coded.setdefault(t, {})[column] = part
    return {t: f.assign(**coded[t]) if t in coded else f for t, f in frames.items()}


def delivered_orders(orders: pd.DataFrame) -> pd.DataFrame:
    """Orders with delivery days, promised days and lateness (only delivered orders have them)."""
    o = orders.copy()
    for c in ("purchased_at", "delivered_at", "estimated_delivery_at"):
        o[c] = pd.to_datetime(o[c])
    o["delivery_days"] = (o["delivered_at"] - o["purchased_at"]).dt.total_seconds() / 86400
    o["promised_days"] = (o["estimated_delivery_at"] - o["purchased_at"]).dt.total_seconds() / 86400
    o["is_late"] = (o["delivered_at"] > o["estimated_delivery_at"]).where(o["delivered_at"].notna())
    return o


_ORDER_TIMES = ("purchased_at", "delivered_at", "estimated_delivery_at")


def order_stats(orders: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Per order: ``order_id``, ``customer_id``, ``revenue`` (its lines' price + freight, 0 without lines),
    ``delivery_days`` and ``is_late`` (1.0 / 0.0, NaN when not delivered): what :func:`region_table`
    aggregates, computed once for every level (at 1M orders each level recomputed it from the whole
    orders and items tables)."""
    o = delivered_orders(orders[["order_id", "customer_id", *_ORDER_TIMES]])
    rev = (
        items.assign(revenue=items["price"].astype(float) + items["freight"].astype(float).fillna(0))
        .groupby("order_id")["revenue"]
        .sum()
        if len(items)
        else pd.Series(dtype=float)
    )
    o["revenue"] = o["order_id"].map(rev).fillna(0.0)
    o["is_late"] = o["is_late"].astype(float)
    return o[["order_id", "customer_id", "revenue", "delivery_days", "is_late"]]


def region_table(
    level: str,
    regions: pd.DataFrame,
    customers: pd.DataFrame,
    sellers: pd.DataFrame,
    orders: pd.DataFrame,
    qualify: bool = False,
) -> pd.DataFrame:
    """One row per region of ``level``: centroid (staging.regions where present, else the mean location of
    its located customers and sellers), customers, sellers, orders, revenue, mean delivery days, late rate,
    ``country`` and ``resolution_source`` (how most of its points were placed).  ``customers``/``sellers``
    come from :func:`locate`, ``orders`` from :func:`order_stats`."""
    cust = customers.assign(region_id=region_id(customers, level, qualify)).dropna(subset=["region_id"])
    sell = sellers.assign(region_id=region_id(sellers, level, qualify)).dropna(subset=["region_id"])
    cols = ["region_id", "lat", "lng", "state", "country", "resolution_source"]
    pts = pd.concat([cust.reindex(columns=cols), sell.reindex(columns=cols)])
    cent = pts.groupby("region_id").agg(
        lat=("lat", "mean"),
        lng=("lng", "mean"),
        state=("state", "first"),
        country=("country", "first"),
        resolution_source=("resolution_source", lambda x: x.mode().iat[0] if x.notna().any() else None),
    )
    staged = regions[regions["level"] == level].set_index("region_id") if len(regions) else None
    if staged is not None and len(staged):
        staged = staged.assign(resolution_source="staging.regions")
        keep = ["lat", "lng", "state", "resolution_source"]
        cent = cent.combine_first(staged[keep]) if len(cent) else staged[keep].assign(country=None)
        both = cent.index.intersection(staged.index)
        cent.loc[both, ["lat", "lng"]] = staged.loc[both, ["lat", "lng"]].to_numpy()
        cent.loc[both, "resolution_source"] = "staging.regions"
        cent["name"] = staged["name"].reindex(cent.index)
    else:
        cent["name"] = None
    if level == "state" and len(cust) + len(sell):
        names = pd.concat(
            [
                cust.reindex(columns=["region_id", "state_name"]),
                sell.reindex(columns=["region_id", "state_name"]),
            ]
        ).dropna()
        cent["name"] = cent["name"].fillna(
            names.drop_duplicates("region_id").set_index("region_id")["state_name"]
        )
    cent["name"] = cent["name"].fillna(pd.Series(cent.index.str.split(":").str[1], index=cent.index))
    out = cent.reset_index().rename(columns={"index": "region_id"})
    out["level"] = level
    o = orders.merge(cust[["customer_id", "region_id"]], on="customer_id", how="inner")
    stats = o.groupby("region_id").agg(
        orders=("order_id", "nunique"),
        revenue=("revenue", "sum"),
        mean_delivery_days=("delivery_days", "mean"),
        late_rate=("is_late", "mean"),  # NaN (not delivered) skipped
    )
    stats = stats.reindex(out["region_id"]).reset_index()
    stats["customers"] = (
        cust.groupby("region_id")["customer_id"].nunique().reindex(stats["region_id"]).to_numpy()
    )
    stats["sellers"] = sell.groupby("region_id")["seller_id"].nunique().reindex(stats["region_id"]).to_numpy()
    out = out.merge(stats, on="region_id", how="left")
    for c in ("orders", "customers", "sellers"):
        out[c] = out[c].fillna(0).astype("int64")
    out["revenue"] = out["revenue"].fillna(0.0)
    out = out.dropna(subset=["lat", "lng"])
    return out[REGION_COLUMNS].sort_values("region_id").reset_index(drop=True)


REGION_COLUMNS = [
    "region_id",
    "level",
    "name",
    "state",
    "country",
    "lat",
    "lng",
    "customers",
    "sellers",
    "orders",
    "revenue",
    "mean_delivery_days",
    "late_rate",
    "resolution_source",
]


def order_geo(
    orders: pd.DataFrame,
    items: pd.DataFrame,
    customers: pd.DataFrame,
    sellers: pd.DataFrame,
    countries: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Order item lines with seller and customer coordinates, regions and the haversine distance.  An order's
    own ship-to location (``ship_*`` columns, when the source maps them) replaces its customer's address."""
    it = items[["order_id", "seller_id", "price", "freight"]]
    loc_cols = ["lat", "lng", "state", "zip_prefix", "zip3", "country", "level"]
    o = orders[["order_id", "customer_id", "purchased_at"]].merge(it, on="order_id", how="inner")
    c = customers[["customer_id"] + [k for k in loc_cols if k in customers.columns]].rename(
        columns={k: "c_" + k for k in loc_cols}
    )
    s = sellers[["seller_id"] + [k for k in loc_cols if k in sellers.columns]].rename(
        columns={k: "s_" + k for k in loc_cols}
    )
    g = o.merge(c, on="customer_id", how="left").merge(s, on="seller_id", how="left")
    ship = [k for k in SHIP_TO if k in orders.columns]
    if ship and orders[ship].notna().any(axis=None):
        located = locate(
            orders[["order_id"] + ship]
            .rename(columns=lambda k: k.removeprefix("ship_"))
            .rename(columns={"postal_code": "zip_prefix"}),
            countries,
        )
        has = (
            located["lat"].notna() & orders[ship].notna().any(axis=1).to_numpy()
        )  # only orders with a ship-to
        repl = located[has].set_index("order_id")
        m = g["order_id"].isin(repl.index)
        for k in loc_cols:
            if k in repl.columns and "c_" + k in g.columns:
                g.loc[m, "c_" + k] = g.loc[m, "order_id"].map(repl[k]).to_numpy()
    g["distance_km"] = haversine_km(g["s_lat"], g["s_lng"], g["c_lat"], g["c_lng"])
    return g


_REGION_INPUTS = ("country", "state", "zip3", "zip_prefix", "level")  # what region_id reads


def _side(geo: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """The seller (``s_``) or customer (``c_``) location columns region_id needs, without the prefix."""
    cols = {prefix + k: k for k in _REGION_INPUTS if prefix + k in geo.columns}
    return geo[list(cols)].rename(columns=cols)


def flows(geo: pd.DataFrame, level: str, qualify: bool = False) -> pd.DataFrame:
    """Seller-region → customer-region edges: orders, items, revenue, mean and median distance (km)."""
    order = pd.Series(pd.factorize(geo["order_id"])[0], index=geo.index)  # int codes count faster than ids
    g = pd.DataFrame(
        {
            "src": region_id(_side(geo, "s_"), level, qualify),
            "dst": region_id(_side(geo, "c_"), level, qualify),
            "order": order.where(order >= 0),
            "revenue": geo["price"].astype(float) + geo["freight"].astype(float).fillna(0),
            "distance_km": geo["distance_km"],
        }
    ).dropna(subset=["src", "dst"])
    out = (
        g.groupby(["src", "dst"])
        .agg(
            orders=("order", "nunique"),
            items=("order", "size"),
            revenue=("revenue", "sum"),
            mean_distance_km=("distance_km", "mean"),
            median_distance_km=("distance_km", "median"),
        )
        .reset_index()
    )
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
        d = haversine_km(
            r["lat"].to_numpy()[:, None],
            r["lng"].to_numpy()[:, None],
            r["lat"].to_numpy()[None, :],
            r["lng"].to_numpy()[None, :],
        )
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
        return pd.DataFrame(
            columns=[
                "region_id",
                "level",
                "orders",
                "neighbour_orders",
                "neighbour_revenue",
                "neighbour_delivery_days",
                "neighbour_late_rate",
                "mean_neighbour_km",
            ]
        )
    g = graph.merge(
        regions[["region_id", "orders", "revenue", "mean_delivery_days", "late_rate"]],
        left_on="dst",
        right_on="region_id",
        how="left",
    )
    g["w"] = 1.0 / (1.0 + g["distance_km"])

    def wmean(df, col):
        m = df[col].notna()
        return float(np.average(df.loc[m, col], weights=df.loc[m, "w"])) if m.any() else np.nan

    rows = []
    for src, df in g.groupby("src"):
        rows.append(
            {
                "region_id": src,
                "neighbour_orders": wmean(df, "orders"),
                "neighbour_revenue": wmean(df, "revenue"),
                "neighbour_delivery_days": wmean(df, "mean_delivery_days"),
                "neighbour_late_rate": wmean(df, "late_rate"),
                "mean_neighbour_km": float(df["distance_km"].mean()),
            }
        )
    f = pd.DataFrame(rows)
    return regions[["region_id", "level", "orders", "mean_delivery_days"]].merge(
        f, on="region_id", how="left"
    )
