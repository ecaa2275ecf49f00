"""Region-graph features for the delivery-time and late-delivery models, built from training-period orders
only.

Every feature of an order comes from the orders *known* at its snapshot time (:func:`snapshot_times`):
purchased and delivered before it.  A test order's snapshot is the cutoff; a training order's is the start of
its purchase month, so its own delivery time (and any later one) never reaches its features, and training
orders see features made the way the test orders' are.  Test-period orders contribute nothing: not their
delivery times, not their regions, not their locations (an order's own customer coordinates are its own input,
used only to place it on the graph when its region has no known order).

Three feature families (``VARIANTS``), so the graph can be compared with plain coordinates:

* ``latlon``: customer and seller coordinates (no graph; what a tree model can do with location alone).
* ``neighbour``: per region level (zip3, state, country; every level with at least ``MIN_REGIONS`` customer
  regions with deliveries known at the cutoff): the inverse-distance-weighted mean delivery days and late
  share of the ``k`` nearest *other* regions, the region's own mean shrunk towards that neighbour mean (sparse
  regions borrow from their neighbours), its number of known orders, and, at the coarsest level, the
  seller-region -> customer-region route mean (an edge of the flow graph) shrunk towards the region.
* ``gcn``: two hops of the normalised adjacency (SGC-style graph convolution) over the kNN + flow graph
  applied to the regions' known delivery days and late shares, per snapshot; and the customer region's
  embedding from the GCN graph autoencoder (:mod:`ecom_pipeline.ml.spatial.gcn`) of the finest level at the
  cutoff, whose node features carry no delivery labels (so one embedding can serve training and test orders).

A shop without a region graph (one country, no locations, fewer than ``MIN_REGIONS`` regions with known
deliveries) gets no graph features and a ``reason`` naming why; the models then run without them.

Measured on the Olist sample (benchmarks/results/delivery_graph.md): none of the families lowers the delivery
MAE; neighbour aggregates and the GCN raise it significantly (delivery times drift strongly over time there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ecom_pipeline.ml.spatial.gcn import normalized_adjacency
from ecom_pipeline.ml.spatial.geo import haversine_km, region_id

VARIANTS = ("latlon", "neighbour", "gcn")
DEFAULT_VARIANT = "neighbour+gcn"
GRAPH_LEVELS = ("zip3", "state", "country")  # finest first
MIN_REGIONS = 3
SHRINK_ORDERS = 10.0  # pseudo-orders of the neighbour mean behind a region's own mean
ROUTE_SHRINK_ORDERS = 5.0
ORDER_CHUNK = 20_000
LATLON = {
    "c_lat": "customer_lat",
    "c_lng": "customer_lng",
    "s_lat": "seller_lat",
    "s_lng": "seller_lng",
}  # orders per distance-matrix block (memory: chunk x regions floats)


@dataclass
class GraphFeatures:
    frame: pd.DataFrame  # order_id + one column per feature, every order of the input frame
    columns: list[str]  # the feature columns (empty: no graph features, see reason)
    reason: str | None  # why some or all requested families are missing; None when all were built
    details: dict = field(default_factory=dict)  # levels, regions, edges, known orders (for metadata)


def parse_variant(variant: str) -> list[str]:
    parts = [p.strip() for p in variant.split("+") if p.strip()]
    unknown = [p for p in parts if p not in VARIANTS]
    if unknown or not parts:
        raise ValueError(f"unknown graph feature variant {variant!r}: combine {VARIANTS} with '+'")
    return parts


def known_at(frame: pd.DataFrame, cutoff: pd.Timestamp, window_days: float | None = None) -> pd.Series:
    """Orders whose delivery time is known at ``cutoff``: purchased and delivered before it (and, with
    ``window_days``, delivered in the last ``window_days`` before it)."""
    cut = pd.Timestamp(cutoff)
    known = (frame["purchased_at"] < cut) & (frame["delivered_at"] < cut) & frame["delivery_days"].notna()
    if window_days:
        known &= frame["delivered_at"] >= cut - pd.Timedelta(days=window_days)
    return known


def _side_regions(frame: pd.DataFrame, prefix: str, level: str, qualify: bool) -> pd.Series:
    present = [
        c
        for c in ("level", "country", "state", "zip3")
        if prefix + c in frame.columns and frame[prefix + c].notna().any()
    ]
    side = frame[[prefix + c for c in present]].rename(columns=lambda c: c.removeprefix(prefix))
    for c in ("country", "state", "zip3"):  # region_id reads these; "level" only when the data has it
        if c not in side.columns:
            side[c] = None
    return region_id(side, level, qualify)


def _qualify(frame: pd.DataFrame) -> bool:
    countries = set()
    for c in ("c_country", "s_country"):
        if c in frame.columns:
            countries |= set(frame[c].dropna())
    return len(countries) > 1


def _node_table(known: pd.DataFrame, regions: pd.Series) -> pd.DataFrame:
    """Known orders per customer region: count, sums of delivery days and late flags, centroid."""
    k = known.assign(region=regions.loc[known.index]).dropna(subset=["region"])
    nodes = k.groupby("region").agg(
        n=("delivery_days", "size"),
        sum_days=("delivery_days", "sum"),
        sum_late=("is_late", "sum"),
        lat=("c_lat", "mean"),
        lng=("c_lng", "mean"),
    )
    return nodes.dropna(subset=["lat", "lng"])


def snapshot_times(frame: pd.DataFrame, cutoff: pd.Timestamp) -> pd.Series:
    """The time whose known orders build each order's features: the start of its purchase month for a training
    order (only orders delivered before that month: never itself, never a later one), the cutoff for a test
    order.  Training orders thus see features made the way the test orders' are, from the past only."""
    cut = pd.Timestamp(cutoff)
    month = frame["purchased_at"].dt.to_period("M").dt.start_time
    return month.where(frame["purchased_at"] < cut, cut).clip(upper=cut)


def _anchor(rows: pd.DataFrame, regions: pd.Series, nodes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Where each order sits on the graph: its region's centroid when the region has known orders, else the
    order's own customer coordinates."""
    lat = regions.map(nodes["lat"]).astype(float).fillna(rows["c_lat"].astype(float))
    lng = regions.map(nodes["lng"]).astype(float).fillna(rows["c_lng"].astype(float))
    return lat.to_numpy(), lng.to_numpy()


def _nearest(lat: np.ndarray, lng: np.ndarray, nodes: pd.DataFrame, own: np.ndarray, k: int):
    """Positions and haversine km of the ``k`` nearest nodes other than ``own`` (inf where fewer/no
    anchor)."""
    node_ids = nodes.index.to_numpy()
    kk = max(1, min(k, len(nodes)))
    pos = np.zeros((len(lat), kk), dtype=int)
    dist = np.full((len(lat), kk), np.inf)
    for start in range(0, len(lat), ORDER_CHUNK):
        sl = slice(start, start + ORDER_CHUNK)
        d = haversine_km(
            lat[sl, None], lng[sl, None], nodes["lat"].to_numpy()[None, :], nodes["lng"].to_numpy()[None, :]
        )
        d[own[sl, None] == node_ids[None, :]] = np.inf  # a region is not its own neighbour
        d = np.where(np.isnan(d), np.inf, d)
        nn = (
            np.argpartition(d, kk - 1, axis=1)[:, :kk]
            if kk < len(nodes)
            else np.tile(np.arange(kk), (len(d), 1))
        )
        pos[sl], dist[sl] = nn, np.take_along_axis(d, nn, axis=1)
    return pos, dist


def _weighted(values: np.ndarray, pos: np.ndarray, dist: np.ndarray) -> np.ndarray:
    w = np.where(np.isfinite(dist), 1.0 / (1.0 + dist), 0.0)
    wsum = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(wsum > 0, (w * values[pos]).sum(1) / np.where(wsum > 0, wsum, 1), np.nan)


def _group_sums(keys_rows: pd.Series, keys_known: pd.Series, known: pd.DataFrame):
    """Per row: (count, days sum, late sum) of the known orders with the row's key."""
    g = (
        known.assign(key=keys_known)
        .dropna(subset=["key"])
        .groupby("key")
        .agg(n=("delivery_days", "size"), s=("delivery_days", "sum"), late=("is_late", "sum"))
    )
    return tuple(keys_rows.map(g[c]).fillna(0.0).astype(float).to_numpy() for c in ("n", "s", "late"))


def _snapshot_features(
    rows: pd.DataFrame,
    known: pd.DataFrame,
    regions: pd.Series,
    sellers: pd.Series,
    level: str,
    k: int,
    families: list[str],
    routes: bool,
) -> dict:
    """Features of ``rows`` from the ``known`` orders (one snapshot) at one region level."""
    nodes = _node_table(known, regions)
    if len(nodes) < MIN_REGIONS:
        return {}
    r_rows = regions.loc[rows.index]
    lat, lng = _anchor(rows, r_rows, nodes)
    own = r_rows.to_numpy(dtype=object)
    days = (nodes["sum_days"] / nodes["n"]).to_numpy(dtype=float)
    late = (nodes["sum_late"] / nodes["n"]).to_numpy(dtype=float)
    out = {}
    if "neighbour" in families:
        pos, dist = _nearest(lat, lng, nodes, own, k)
        nb_days, nb_late = _weighted(days, pos, dist), _weighted(late, pos, dist)
        n, s, lt = _group_sums(r_rows, regions.loc[known.index], known)
        own_days = (s + SHRINK_ORDERS * nb_days) / (n + SHRINK_ORDERS)
        own_late = (lt + SHRINK_ORDERS * nb_late) / (n + SHRINK_ORDERS)
        out |= {
            f"{level}_neighbour_days": nb_days,
            f"{level}_neighbour_late": nb_late,
            f"{level}_region_days": own_days,
            f"{level}_region_late": own_late,
            f"{level}_region_known_orders": n,
        }
        if routes:  # seller region -> customer region: an edge of the flow graph

            def route(idx):
                s_r, c_r = sellers.loc[idx], regions.loc[idx]
                return (s_r + ">" + c_r).where(s_r.notna() & c_r.notna())

            rn, rs, rl = _group_sums(route(rows.index), route(known.index), known)
            out |= {
                f"{level}_route_days": (rs + ROUTE_SHRINK_ORDERS * own_days) / (rn + ROUTE_SHRINK_ORDERS),
                f"{level}_route_late": (rl + ROUTE_SHRINK_ORDERS * own_late) / (rn + ROUTE_SHRINK_ORDERS),
                f"{level}_route_known_orders": rn,
            }
    if "gcn" in families:
        # parameter-free graph convolution (two hops of Â, as in SGC) of the regions' known delivery days and
        # late shares over the kNN + flow graph of this snapshot
        a_hat = normalized_adjacency(_region_graph(nodes, known, regions, sellers, k))
        smooth = a_hat @ (a_hat @ np.c_[days, late])
        pos, _ = _nearest(lat, lng, nodes, np.full(len(rows), None, dtype=object), 1)
        at = pd.Series(np.arange(len(nodes)), index=nodes.index)
        node_of_row = r_rows.map(at).fillna(pd.Series(pos[:, 0], index=rows.index)).to_numpy(dtype=int)
        out |= {
            f"gcn_{level}_smoothed_days": smooth[node_of_row, 0],
            f"gcn_{level}_smoothed_late": smooth[node_of_row, 1],
        }
    return out


def _region_graph(
    nodes: pd.DataFrame, known: pd.DataFrame, regions: pd.Series, sellers: pd.Series, k: int
) -> np.ndarray:
    """Adjacency over ``nodes``: k nearest regions plus seller->customer flows with at least 3 known
    orders."""
    from ecom_pipeline.ml.spatial.gcn import adjacency
    from ecom_pipeline.ml.spatial.geo import knn_graph

    table = pd.DataFrame(
        {
            "region_id": nodes.index,
            "level": "x",
            "lat": nodes["lat"].to_numpy(),
            "lng": nodes["lng"].to_numpy(),
        }
    )
    flow = pd.DataFrame({"src": sellers.loc[known.index], "dst": regions.loc[known.index]}).dropna()
    flow = flow.groupby(["src", "dst"]).size()
    flow = flow[flow >= 3].reset_index()[["src", "dst"]]
    return adjacency(list(nodes.index), pd.concat([knn_graph(table, k)[["src", "dst"]], flow]))


def gcn_embeddings(
    frame: pd.DataFrame,
    known: pd.DataFrame,
    regions: pd.Series,
    sellers: pd.Series,
    level: str,
    k: int,
    *,
    dim: int,
    epochs: int,
    seed: int,
) -> tuple[dict, dict]:
    """Customer-region embeddings from the GCN graph autoencoder (:func:`gcn.train_embeddings`) over the
    regions of the orders known at the cutoff.  Node features carry no delivery labels (orders, revenue,
    sellers, location): a region's embedding cannot hold its own training orders' delivery times, so one
    embedding serves training and test orders alike; the labels reach the model through the smoothed
    features."""
    from ecom_pipeline.ml.spatial.gcn import train_embeddings

    nodes = _node_table(known, regions)
    kn = known.assign(region=regions.loc[known.index])
    per = kn.groupby("region")
    raw = pd.DataFrame(
        {
            "log_orders": np.log1p(nodes["n"]),
            "log_revenue": np.log1p((per["price"].sum() + per["freight"].sum()).reindex(nodes.index)),
            "log_sellers": np.log1p(per["seller_id"].nunique().reindex(nodes.index)),
            "lat": nodes["lat"],
            "lng": nodes["lng"],
        }
    ).fillna(0.0)
    X = ((raw - raw.mean()) / raw.std(ddof=0).replace(0, 1.0)).to_numpy(dtype=np.float32)
    A = _region_graph(nodes, known, regions, sellers, k)
    Z, history, _ = train_embeddings(X, A, dim=dim, hidden=2 * dim, epochs=epochs, seed=seed)
    lat, lng = _anchor(frame, regions, nodes)
    pos, _ = _nearest(lat, lng, nodes, np.full(len(frame), None, dtype=object), 1)
    at = pd.Series(np.arange(len(nodes)), index=nodes.index)
    node_of_row = regions.map(at).to_numpy(dtype=float)
    node_of_row = np.where(np.isnan(node_of_row), pos[:, 0], node_of_row).astype(int)
    emb = np.where(
        np.isfinite(lat)[:, None] | ~np.isnan(regions.map(at).to_numpy(dtype=float))[:, None],
        Z[node_of_row],
        np.nan,
    )
    info = {
        f"gcn_{level}_nodes": len(nodes),
        f"gcn_{level}_edges": int((A > 0).sum() // 2),
        f"gcn_{level}_final_loss": round(float(history[-1]), 4) if history else None,
    }
    return {f"gcn_{level}_{i}": emb[:, i] for i in range(dim)}, info


def graph_features(
    frame: pd.DataFrame,
    cutoff: pd.Timestamp,
    variant: str = DEFAULT_VARIANT,
    *,
    k: int = 5,
    gcn_dim: int = 8,
    gcn_epochs: int = 200,
    seed: int = 0,
    window_days: float | None = None,
) -> GraphFeatures:
    """``variant``'s features for every order of ``frame`` (from :func:`delivery.delivery_frame`), each from
    orders known before its snapshot time (:func:`snapshot_times`), so only from the training period."""
    families = parse_variant(variant)
    frame = frame.copy()
    frame["purchased_at"] = pd.to_datetime(frame["purchased_at"])
    frame["delivered_at"] = pd.to_datetime(frame["delivered_at"])
    is_known = known_at(frame, cutoff)
    qualify = _qualify(frame)
    cols: dict[str, np.ndarray] = {}
    details: dict = {
        "variant": variant,
        "known_orders_at_cutoff": int(is_known.sum()),
        "cutoff": str(cutoff),
        "window_days": window_days,
    }
    reasons = []
    if "latlon" in families:
        if frame[["c_lat", "c_lng"]].notna().all(axis=1).any():
            for c, name in LATLON.items():
                cols[name] = frame[c].to_numpy(dtype=float)
        else:
            reasons.append("latlon: no order has customer coordinates")
    levels = {}
    for level in GRAPH_LEVELS:
        regions = _side_regions(frame, "c_", level, qualify)
        n_nodes = len(_node_table(frame[is_known], regions))
        details[f"{level}_regions_with_known_orders"] = n_nodes
        if n_nodes >= MIN_REGIONS:
            levels[level] = (regions, _side_regions(frame, "s_", level, qualify))
    details["graph_levels"] = list(levels)
    graph_families = [f for f in families if f in ("neighbour", "gcn")]
    if graph_families and not levels:
        counts = ", ".join(f"{lv}: {details[f'{lv}_regions_with_known_orders']}" for lv in GRAPH_LEVELS)
        reasons.append(
            f"{'+'.join(graph_families)}: no region graph: fewer than {MIN_REGIONS} customer regions "
            f"with deliveries known before the cutoff at every level ({counts})"
        )
    elif graph_families:
        snap = snapshot_times(frame, cutoff)
        coarsest = list(levels)[-1]  # finer routes (zip3 -> zip3) almost never repeat in training
        parts = []
        for t, rows in frame.groupby(snap):
            known = frame[known_at(frame, t, window_days)]
            part = {}
            for level, (regions, sellers) in levels.items():
                part |= _snapshot_features(
                    rows, known, regions, sellers, level, k, graph_families, level == coarsest
                )
            parts.append(pd.DataFrame(part, index=rows.index))
        snap_cols = pd.concat(parts).reindex(frame.index)  # orders of too-early snapshots: NaN (no graph yet)
        details["snapshots"] = int(snap.nunique())
        cols |= {c: snap_cols[c].to_numpy(dtype=float) for c in snap_cols.columns}
        if "gcn" in families:
            finest = next(iter(levels))
            emb, info = gcn_embeddings(
                frame,
                frame[known_at(frame, cutoff, window_days)],
                *levels[finest],
                finest,
                k,
                dim=gcn_dim,
                epochs=gcn_epochs,
                seed=seed,
            )
            cols |= emb
            details |= info
    out = pd.DataFrame(cols, index=frame.index)
    out.insert(0, "order_id", frame["order_id"].to_numpy())
    return GraphFeatures(out, list(cols), "; ".join(reasons) or None, details)
