"""A small synthetic world with planted preferences, for tests and benchmarks.

Each user has one favourite category and lives in a state; each state has a few favourite items.
Purchases: ``p_taste`` from the favourite category, ``p_region`` from the state's favourites, the rest
from a global popularity (Zipf) distribution.  Popularity alone can only explain the last part, so a
model that learns the user's taste (or region) must beat it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def planted_world(
    n_users: int = 600,
    n_items: int = 300,
    n_categories: int = 10,
    n_states: int = 5,
    purchases_per_user: tuple[int, int] = (3, 9),
    views_per_purchase: int = 2,
    p_taste: float = 0.6,
    p_region: float = 0.2,
    days: int = 365,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """Canonical-shaped frames: customers, products, orders, order_items, events (+ ``truth`` taste)."""
    rng = np.random.default_rng(seed)
    items = [f"p{i:04d}" for i in range(n_items)]
    cats = [f"cat_{c}" for c in range(n_categories)]
    item_cat = rng.integers(0, n_categories, n_items)
    states = [f"S{s}" for s in range(n_states)]
    user_state = rng.integers(0, n_states, n_users)
    user_taste = rng.integers(0, n_categories, n_users)
    zipf = 1.0 / np.arange(1, n_items + 1) ** 1.1
    zipf = zipf[rng.permutation(n_items)]
    zipf /= zipf.sum()
    region_fav = {s: rng.choice(n_items, 5, replace=False) for s in range(n_states)}
    by_cat = {c: np.flatnonzero(item_cat == c) for c in range(n_categories)}
    start = pd.Timestamp("2023-01-01")

    orders, order_items, events = [], [], []
    oid = eid = 0
    for u in range(n_users):
        cust = f"c{u:05d}"
        n = int(rng.integers(purchases_per_user[0], purchases_per_user[1] + 1))
        times = np.sort(rng.uniform(0, days, n))
        pool = by_cat[user_taste[u]]
        for t in times:
            r = rng.random()
            if r < p_taste and len(pool):
                w = zipf[pool] / zipf[pool].sum()
                item = int(rng.choice(pool, p=w))
            elif r < p_taste + p_region:
                item = int(rng.choice(region_fav[user_state[u]]))
            else:
                item = int(rng.choice(n_items, p=zipf))
            ts = start + pd.Timedelta(days=float(t))
            orders.append(
                (
                    f"o{oid:06d}",
                    cust,
                    "delivered",
                    ts,
                    ts + pd.Timedelta(days=1),
                    ts + pd.Timedelta(days=float(rng.integers(3, 15))),
                    ts + pd.Timedelta(days=10),
                )
            )
            order_items.append((f"o{oid:06d}", 1, items[item], "s1", float(10 + item % 50), 5.0, 1))
            sess = f"sess{oid}"
            for v in range(views_per_purchase):
                # views: sometimes the item bought later, sometimes another item of the same category
                vi = item if v == 0 else int(rng.choice(pool)) if len(pool) else item
                events.append(
                    (f"e{eid:07d}", ts - pd.Timedelta(minutes=5 * (v + 1)), cust, sess, "view", items[vi])
                )
                eid += 1
            events.append((f"e{eid:07d}", ts - pd.Timedelta(minutes=1), cust, sess, "cart", items[item]))
            eid += 1
            oid += 1
    customers = pd.DataFrame(
        {
            "customer_id": [f"c{u:05d}" for u in range(n_users)],
            "zip_prefix": "00000",
            "city": "x",
            "state": [states[s] for s in user_state],
            "lat": 0.0,
            "lng": 0.0,
        }
    )
    products = pd.DataFrame(
        {
            "product_id": items,
            "category": [cats[c] for c in item_cat],
            "title": [f"item {i}" for i in items],
            "description": "",
            "price": [float(10 + i % 50) for i in range(n_items)],
            "image_uri": None,
            "attributes": None,
        }
    )
    return {
        "customers": customers,
        "products": products,
        "orders": pd.DataFrame(
            orders,
            columns=[
                "order_id",
                "customer_id",
                "status",
                "purchased_at",
                "approved_at",
                "delivered_at",
                "estimated_delivery_at",
            ],
        ),
        "order_items": pd.DataFrame(
            order_items,
            columns=["order_id", "item_seq", "product_id", "seller_id", "price", "freight", "quantity"],
        ),
        "events": pd.DataFrame(
            events, columns=["event_id", "ts", "customer_id", "session_id", "event_type", "product_id"]
        ),
        "taste": pd.DataFrame(
            {"customer_id": [f"c{u:05d}" for u in range(n_users)], "category": [cats[c] for c in user_taste]}
        ),
    }


def planted_sequences(
    n_users: int = 400,
    n_items: int = 200,
    purchases_per_user: tuple[int, int] = (6, 14),
    p_next: float = 0.7,
    days: int = 365,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """A planted *order* pattern: the items form one hidden cycle, and a customer's next purchase is the
    successor of their previous one with probability ``p_next`` (else a Zipf-popular item).  Every item is
    as popular as its neighbours along the cycle, so popularity cannot learn it, and co-occurrence (item-kNN)
    cannot tell the successor from the predecessor; a model of the order can.  Canonical-shaped frames:
    customers, products, orders, order_items (no events)."""
    rng = np.random.default_rng(seed)
    items = [f"q{i:04d}" for i in range(n_items)]
    cycle = rng.permutation(n_items)
    successor = np.empty(n_items, dtype=np.int64)
    successor[cycle] = np.roll(cycle, -1)
    zipf = 1.0 / np.arange(1, n_items + 1) ** 1.1
    zipf = zipf[rng.permutation(n_items)]
    zipf /= zipf.sum()
    start = pd.Timestamp("2023-01-01")
    orders, order_items = [], []
    oid = 0
    for u in range(n_users):
        cust = f"c{u:05d}"
        n = int(rng.integers(purchases_per_user[0], purchases_per_user[1] + 1))
        times = np.sort(rng.uniform(0, days, n))
        item = int(rng.integers(n_items))
        for t in times:
            ts = start + pd.Timedelta(days=float(t))
            orders.append(
                (
                    f"o{oid:06d}",
                    cust,
                    "delivered",
                    ts,
                    ts,
                    ts + pd.Timedelta(days=5),
                    ts + pd.Timedelta(days=10),
                )
            )
            order_items.append((f"o{oid:06d}", 1, items[item], "s1", 10.0, 5.0, 1))
            oid += 1
            item = int(successor[item]) if rng.random() < p_next else int(rng.choice(n_items, p=zipf))
    customers = pd.DataFrame(
        {
            "customer_id": [f"c{u:05d}" for u in range(n_users)],
            "zip_prefix": "00000",
            "city": "x",
            "state": "S0",
            "lat": 0.0,
            "lng": 0.0,
        }
    )
    products = pd.DataFrame(
        {
            "product_id": items,
            "category": "all",
            "title": [f"item {i}" for i in items],
            "description": "",
            "price": 10.0,
            "image_uri": None,
            "attributes": None,
        }
    )
    return {
        "customers": customers,
        "products": products,
        "orders": pd.DataFrame(
            orders,
            columns=[
                "order_id",
                "customer_id",
                "status",
                "purchased_at",
                "approved_at",
                "delivered_at",
                "estimated_delivery_at",
            ],
        ),
        "order_items": pd.DataFrame(
            order_items,
            columns=["order_id", "item_seq", "product_id", "seller_id", "price", "freight", "quantity"],
        ),
        "successor": pd.DataFrame({"product_id": items, "next_product_id": [items[j] for j in successor]}),
    }
