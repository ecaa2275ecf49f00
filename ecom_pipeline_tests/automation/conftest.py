from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest


def write_orders(
    path,
    *,
    days: int = 200,
    per_day: int = 20,
    drift_last_days: int = 0,
    seed: int = 0,
    end: datetime = datetime(2024, 6, 30),
):
    """staging.orders / order_items / products with canonical columns; optionally a shifted tail."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    ts = [
        end - timedelta(days=days) + timedelta(days=int(i // per_day), minutes=int(rng.integers(0, 1440)))
        for i in range(n)
    ]
    cats = np.array(["toys", "books", "garden", "health", "sports"])
    category = cats[rng.integers(0, len(cats), n)].astype(object)
    price = rng.lognormal(3.5, 0.5, n)
    freight = rng.gamma(2.0, 8.0, n)
    if drift_last_days:
        tail = np.array([t > end - timedelta(days=drift_last_days) for t in ts])
        price[tail] *= 3.0
        category[tail & (rng.random(n) < 0.5)] = "drones"
    orders = pd.DataFrame(
        {
            "order_id": [f"o{i}" for i in range(n)],
            "customer_id": [f"c{i % 300}" for i in range(n)],
            "status": "delivered",
            "purchased_at": ts,
        }
    )
    items = pd.DataFrame(
        {
            "order_id": orders.order_id,
            "item_seq": 1,
            "product_id": [f"p{i}" for i in range(n)],
            "seller_id": "s1",
            "price": price,
            "freight": freight,
        }
    )
    products = pd.DataFrame({"product_id": items.product_id, "category": category, "price": price})
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA IF NOT EXISTS staging")
    for name, frame in (("orders", orders), ("order_items", items), ("products", products)):
        con.register("_f", frame)
        con.execute(f"CREATE OR REPLACE TABLE staging.{name} AS SELECT * FROM _f")
        con.unregister("_f")
    con.close()
    return path


@pytest.fixture
def stable_warehouse(tmp_path):
    return write_orders(tmp_path / "stable.duckdb")


@pytest.fixture
def drifted_warehouse(tmp_path):
    return write_orders(tmp_path / "drifted.duckdb", drift_last_days=30)
