"""A small typed shop written straight into ``staging.*`` (canonical columns), with known structure:
weekly seasonality, a slow trend, one injected spike day, states with real-ish centroids and zip3 regions."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from ecom_pipeline.canonical import TABLES

STATES = {
    "SP": (-23.5, -46.6, 0.45),
    "RJ": (-22.9, -43.2, 0.2),
    "MG": (-19.9, -43.9, 0.15),
    "RS": (-30.0, -51.2, 0.1),
    "BA": (-12.97, -38.5, 0.06),
    "PR": (-25.4, -49.3, 0.04),
}
CATEGORIES = ["toys", "bed_bath", "health_beauty", "sports", "computers", "garden"]
SPIKE_DAY = pd.Timestamp("2017-10-11")


def make_shop(
    days: int = 400, base_per_day: float = 12.0, seed: int = 0, spike: int = 80, start: str = "2017-02-01"
) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    dates = pd.date_range(start, periods=days, freq="D")
    weekly = np.array([1.25, 1.2, 1.1, 1.0, 0.95, 0.7, 0.6])
    lam = base_per_day * weekly[dates.weekday] * (1 + 0.3 * np.arange(days) / days)
    counts = rng.poisson(lam)
    if SPIKE_DAY in dates:
        counts[dates.get_loc(SPIKE_DAY)] += spike
    st_names = list(STATES)
    st_p = np.array([STATES[s][2] for s in st_names])
    st_p /= st_p.sum()
    customers = []
    n_cust = int(counts.sum() * 0.8) + 10
    cstate = rng.choice(st_names, n_cust, p=st_p)
    zips = {s: [f"{i}{j}{k}" for i, j, k in rng.integers(0, 10, (4, 3))] for s in st_names}
    crows = []
    for i, s in enumerate(cstate):
        lat, lng, _ = STATES[s]
        z = zips[s][rng.integers(0, 4)]
        crows.append(
            {
                "customer_id": f"c{i}",
                "zip_prefix": z + "00",
                "city": f"city_{s}",
                "state": s,
                "lat": lat + rng.normal(0, 0.3),
                "lng": lng + rng.normal(0, 0.3),
                "name": None,
                "email": None,
                "phone": None,
            }
        )
    customers = pd.DataFrame(crows)
    sellers = pd.DataFrame(
        [
            {
                "seller_id": f"s{i}",
                "zip_prefix": zips[s][0] + "10",
                "city": f"city_{s}",
                "state": s,
                "lat": STATES[s][0] + rng.normal(0, 0.2),
                "lng": STATES[s][1] + rng.normal(0, 0.2),
            }
            for i, s in enumerate(rng.choice(st_names[:4], 12, p=[0.6, 0.2, 0.1, 0.1]))
        ]
    )
    products = pd.DataFrame(
        [
            {
                "product_id": f"p{i}",
                "category": CATEGORIES[i % len(CATEGORIES)],
                "title": f"t{i}",
                "description": "",
                "price": float(rng.uniform(10, 200)),
                "image_uri": None,
                "attributes": "{}",
            }
            for i in range(60)
        ]
    )
    orows, irows = [], []
    oid = 0
    cat_w = np.array([0.35, 0.25, 0.15, 0.12, 0.08, 0.05])
    for d, n in zip(dates, counts):
        for _ in range(n):
            c = rng.integers(0, n_cust)
            ts = d + pd.Timedelta(seconds=int(rng.integers(0, 86400)))
            seller = sellers.iloc[rng.integers(0, len(sellers))]
            cust = customers.iloc[c]
            dist = np.hypot(seller.lat - cust.lat, seller.lng - cust.lng)
            days_deliver = max(1.0, rng.gamma(2.0, 2.0) + 0.8 * dist)
            est = 10 + 0.5 * dist
            orows.append(
                {
                    "order_id": f"o{oid}",
                    "customer_id": f"c{c}",
                    "status": "delivered",
                    "purchased_at": ts,
                    "approved_at": ts + pd.Timedelta(hours=1),
                    "delivered_at": ts + pd.Timedelta(days=float(days_deliver)),
                    "estimated_delivery_at": (ts + pd.Timedelta(days=float(est))).normalize(),
                }
            )
            cat = rng.choice(len(CATEGORIES), p=cat_w)
            pid = f"p{cat + len(CATEGORIES) * rng.integers(0, 10)}"
            irows.append(
                {
                    "order_id": f"o{oid}",
                    "item_seq": 1,
                    "product_id": pid,
                    "seller_id": seller.seller_id,
                    "price": float(rng.uniform(10, 200)),
                    "freight": float(rng.uniform(5, 30)),
                    "quantity": 1,
                }
            )
            oid += 1
    orders = pd.DataFrame(orows)
    items = pd.DataFrame(irows)
    regions = [
        {"region_id": f"state:{s}", "level": "state", "name": s, "state": s, "lat": v[0], "lng": v[1]}
        for s, v in STATES.items()
    ]
    for s in st_names:
        for z in zips[s]:
            regions.append(
                {
                    "region_id": f"zip3:{z}",
                    "level": "zip3",
                    "name": z,
                    "state": s,
                    "lat": STATES[s][0] + rng.normal(0, 0.3),
                    "lng": STATES[s][1] + rng.normal(0, 0.3),
                }
            )
    regions = pd.DataFrame(regions).drop_duplicates("region_id")
    return {
        "customers": customers,
        "sellers": sellers,
        "products": products,
        "orders": orders,
        "order_items": items,
        "regions": regions,
    }


def write_staging(path: Path, tables: dict[str, pd.DataFrame]) -> Path:
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA IF NOT EXISTS staging")
    for name, spec in TABLES.items():
        df = tables.get(name, pd.DataFrame(columns=spec.column_names))
        cols = ", ".join(f'"{c.name}" {c.dtype}' for c in spec.columns)
        con.execute(f"CREATE OR REPLACE TABLE staging.{name} ({cols})")
        if len(df):
            # canonical columns the shop does not model (e.g. the ship-to address) are NULL, as for a source
            # that maps none
            missing = {
                c: pd.Series([None] * len(df), index=df.index, dtype=object)
                for c in spec.column_names
                if c not in df
            }
            con.register("_df", df.assign(**missing)[spec.column_names])
            con.execute(f"INSERT INTO staging.{name} SELECT * FROM _df")
            con.unregister("_df")
    con.close()
    return path
