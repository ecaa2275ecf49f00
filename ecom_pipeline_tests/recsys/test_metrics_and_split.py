import math

import numpy as np
import pandas as pd
import pytest

from ecom_pipeline.ml.recsys.evaluation import sample_users, user_temporal_split
from ecom_pipeline.ml.recsys.interactions import aggregate_interactions, build_interactions
from ecom_pipeline.ml.recsys.metrics import (
    average_precision_at_k,
    catalog_coverage,
    evaluate_rankings,
    hit_rate_at_k,
    ndcg_at_k,
    novelty,
    recall_at_k,
)


def test_metrics_match_hand_computed_values():
    recs = ["a", "b", "c", "d"]
    truth = {"b", "d", "z"}
    assert recall_at_k(recs, truth, 2) == pytest.approx(1 / 3)
    assert recall_at_k(recs, truth, 4) == pytest.approx(2 / 3)
    assert hit_rate_at_k(recs, truth, 1) == 0.0 and hit_rate_at_k(recs, truth, 2) == 1.0
    # DCG@4 = 1/log2(3) + 1/log2(5); IDCG@4 over 3 relevant = 1 + 1/log2(3) + 1/log2(4)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 0.5
    assert ndcg_at_k(recs, truth, 4) == pytest.approx(dcg / idcg)
    # AP@4 = (1/2 + 2/4) / min(4, 3)
    assert average_precision_at_k(recs, truth, 4) == pytest.approx((0.5 + 0.5) / 3)
    assert ndcg_at_k(["b", "d", "z"], truth, 3) == pytest.approx(1.0)
    assert catalog_coverage({"u1": ["a", "b"], "u2": ["b", "c"]}, 10, 2) == pytest.approx(0.3)
    # p(a) = 4/8 -> 1 bit, p(b) = 1/8 -> 3 bits; unseen item counts as one user
    assert novelty({"u": ["a", "b"]}, {"a": 4, "b": 1}, 8, 2) == pytest.approx(2.0)
    assert novelty({"u": ["new"]}, {}, 8, 1) == pytest.approx(3.0)


def test_evaluate_rankings_averages_over_users_and_counts_missing_as_zero():
    out = evaluate_rankings(
        {"u1": ["a", "b"]},
        {"u1": {"a"}, "u2": {"c"}},
        k=2,
        catalog_size=4,
        item_user_counts={"a": 1, "b": 1},
        n_train_users=2,
    )
    assert out["hit_rate@2"] == pytest.approx(0.5)
    assert out["recall@2"] == pytest.approx(0.5)
    assert out["ndcg@2"] == pytest.approx(0.5)


def _frames():
    orders = pd.DataFrame(
        {
            "order_id": ["o1", "o2", "o3", "o4", "o5"],
            "customer_id": ["u1", "u1", "u2", "u3", "u2"],
            "status": ["delivered", "delivered", "canceled", "delivered", "delivered"],
            "purchased_at": pd.to_datetime(
                ["2024-01-01", "2024-03-01", "2024-01-05", "2024-03-02", "2024-03-05"]
            ),
        }
    )
    items = pd.DataFrame(
        {"order_id": ["o1", "o2", "o3", "o4", "o5"], "product_id": ["a", "b", "c", "a", "a"]}
    )
    events = pd.DataFrame(
        {
            "customer_id": ["u1", "u1", "u2"],
            "product_id": ["c", "a", "b"],
            "event_type": ["view", "purchase", "cart"],
            "ts": pd.to_datetime(["2024-01-02", "2024-01-01", "2024-02-01"]),
        }
    )
    products = pd.DataFrame({"product_id": ["a", "b", "c"], "category": ["toys", "toys", None]})
    return orders, items, events, products


def test_interactions_weight_events_drop_cancelled_and_duplicate_purchases():
    inter = build_interactions(*_frames())
    # o3 is cancelled; the purchase event duplicates an order and is dropped
    assert set(inter["source"] + ":" + inter["event_type"]) == {
        "orders:purchase",
        "events:view",
        "events:cart",
    }
    assert len(inter[inter.event_type == "purchase"]) == 4
    assert inter.loc[inter.event_type == "view", "weight"].iloc[0] == 1.0
    assert inter.loc[inter.event_type == "cart", "weight"].iloc[0] == 3.0
    assert inter.loc[inter.product_id == "c", "category"].iloc[0] == "unknown"
    cat = aggregate_interactions(inter, "category")
    u1_toys = cat[(cat.customer_id == "u1") & (cat.category == "toys")].iloc[0]
    assert u1_toys["n_purchases"] == 2 and u1_toys["weight"] == 10.0


def test_interactions_from_orders_only_and_from_nothing():
    orders, items, _, products = _frames()
    assert set(build_interactions(orders, items, None, products)["event_type"]) == {"purchase"}
    empty = build_interactions(orders.iloc[:0], items.iloc[:0], None, None)
    assert empty.empty and list(empty.columns)[:2] == ["customer_id", "product_id"]


def test_user_temporal_split_has_no_leakage():
    inter = build_interactions(*_frames())
    s = user_temporal_split(inter, cutoff="2024-02-15")
    assert (s.train["ts"] < s.cutoff).all()
    assert (s.test["ts"] >= s.cutoff).all()
    # u3 has no history before the cutoff: not evaluated; u1 bought b after the cutoff
    assert s.truth == {"u1": {"b"}, "u2": {"a"}}
    # nothing the test window contains is visible to training
    later = inter[inter["ts"] >= s.cutoff]
    assert not later.index.isin(s.train.index).any()


def test_user_temporal_split_excludes_already_bought_items_when_asked():
    orders, items, events, products = _frames()
    orders = pd.concat(
        [
            orders,
            pd.DataFrame(
                {
                    "order_id": ["o6"],
                    "customer_id": ["u1"],
                    "status": ["delivered"],
                    "purchased_at": pd.to_datetime(["2024-03-10"]),
                }
            ),
        ]
    )
    items = pd.concat([items, pd.DataFrame({"order_id": ["o6"], "product_id": ["a"]})])
    inter = build_interactions(orders, items, events, products)
    assert user_temporal_split(inter, cutoff="2024-02-15").truth["u1"] == {"b"}
    assert user_temporal_split(inter, cutoff="2024-02-15", exclude_seen=False).truth["u1"] == {"a", "b"}


def test_evaluation_sample_is_seeded_capped_and_keeps_the_training_data():
    rng = np.random.default_rng(0)
    n = 400
    inter = pd.DataFrame(
        {
            "customer_id": [f"u{i % 100}" for i in range(n)],
            "product_id": [f"p{j}" for j in rng.integers(0, 50, n)],
            "event_type": "purchase",
            "weight": 1.0,
            "ts": pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(n), unit="h"),
        }
    )
    full = user_temporal_split(inter, cutoff="2024-01-14")
    capped = user_temporal_split(inter, cutoff="2024-01-14", max_eval_users=30, seed=1)
    again = user_temporal_split(inter, cutoff="2024-01-14", max_eval_users=30, seed=1)
    other = user_temporal_split(inter, cutoff="2024-01-14", max_eval_users=30, seed=2)
    assert full.eligible_users == capped.eligible_users == len(full.truth) > 30
    assert len(capped.truth) == 30 and capped.truth == again.truth and capped.truth != other.truth
    assert all(full.truth[u] == t for u, t in capped.truth.items())  # a sample of users, truths intact
    assert capped.train.equals(full.train)  # training is never sampled
    assert sample_users(full.truth, 0) is full.truth and sample_users(full.truth, 10_000) is full.truth


def test_default_cutoff_comes_from_the_shared_splitter():
    from ecom_pipeline.ml.splits import temporal_split

    inter = build_interactions(*_frames())
    s = user_temporal_split(inter, test_fraction=0.4)
    purchases = inter[inter.event_type == "purchase"]
    assert s.cutoff == temporal_split(purchases, "ts", test_fraction=0.4).cutoff
    assert np.all(s.train["ts"] < s.cutoff)


def test_interactions_query_on_warehouse_tables_matches_the_frame_path(tmp_path):
    """The asset runs interactions_query inside DuckDB on staging tables; same rows as build_interactions."""
    import duckdb

    from ecom_pipeline.ml.recsys.interactions import STAGING_TABLES, interactions_query

    orders, items, events, products = _frames()
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    con.execute("CREATE SCHEMA staging")
    for name, frame in zip(
        ["orders", "order_items", "events", "products"], [orders, items, events, products]
    ):
        con.register("f", frame)
        con.execute(f"CREATE TABLE {STAGING_TABLES[name]} AS SELECT * FROM f")
        con.unregister("f")
    sql, params = interactions_query(STAGING_TABLES, {"view": 2.0})
    got = con.execute(sql, params).df()
    want = build_interactions(orders, items, events, products, {"view": 2.0})
    assert len(got) == len(want) > 0
    assert (got["weight"][got["event_type"] == "view"] == 2.0).all()
    pd.testing.assert_frame_equal(got.drop(columns="ts"), want.drop(columns="ts"))
    assert (pd.to_datetime(got["ts"]) == want["ts"]).all()
