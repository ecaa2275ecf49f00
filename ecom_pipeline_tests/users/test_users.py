import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from ecom_pipeline.ml.users.profiles import build_profiles
from ecom_pipeline.ml.users.repurchase import (
    expected_calibration_error,
    repurchase_labels,
    snapshot,
    train_and_evaluate,
)
from ecom_pipeline.ml.users.segments import segment_customers


def _orders():
    orders = pd.DataFrame(
        {
            "order_id": ["o1", "o2", "o3", "o4", "o5"],
            "customer_id": ["a", "a", "b", "a", "b"],
            "status": ["delivered", "delivered", "delivered", "delivered", "canceled"],
            "purchased_at": pd.to_datetime(
                ["2024-01-01", "2024-01-11", "2024-01-05", "2024-03-01", "2024-02-01"]
            ),
            "delivered_at": pd.to_datetime(["2024-01-05", "2024-01-20", "2024-01-08", "2024-03-04", None]),
            "estimated_delivery_at": pd.to_datetime(
                ["2024-01-10", "2024-01-15", "2024-01-10", "2024-03-09", None]
            ),
        }
    )
    items = pd.DataFrame(
        {
            "order_id": ["o1", "o2", "o2", "o3", "o4", "o5"],
            "product_id": ["x", "x", "y", "y", "x", "y"],
            "price": [10.0, 20.0, 30.0, 5.0, 100.0, 7.0],
            "freight": [0, 0, 0, 1.0, 0, 0],
        }
    )
    products = pd.DataFrame({"product_id": ["x", "y"], "category": ["toys", "books"]})
    reviews = pd.DataFrame(
        {
            "order_id": ["o1", "o4"],
            "customer_id": ["a", "a"],
            "score": [4, 1],
            "created_at": pd.to_datetime(["2024-01-06", "2024-03-05"]),
        }
    )
    return orders, items, products, reviews


def test_profiles_rfm_and_experience_by_hand():
    orders, items, products, reviews = _orders()
    p = build_profiles(orders, items, products, None, reviews, None, as_of="2024-02-01").set_index(
        "customer_id"
    )
    a = p.loc["a"]
    assert a["frequency"] == 2 and a["monetary"] == 60.0 and a["recency_days"] == pytest.approx(21.0)
    assert a["tenure_days"] == pytest.approx(31.0) and a["days_between_orders"] == pytest.approx(10.0)
    assert a["avg_review_score"] == 4.0  # the March review is after as_of
    assert a["avg_delivery_delay_days"] == pytest.approx((-5 + 5) / 2) and a["late_share"] == 0.5
    assert a["n_categories"] == 2
    assert p.loc["b", "monetary"] == 6.0  # the cancelled order is not a purchase
    assert p.loc["b", "top_category"] == "books"


def test_churn_labels_and_features_do_not_peek_past_the_cutoff():
    orders, items, products, reviews = _orders()
    tables = dict(orders=orders, order_items=items, products=products, reviews=reviews)
    cutoff, horizon = pd.Timestamp("2024-02-01"), 40
    base = snapshot(tables, cutoff, horizon).set_index("customer_id")
    assert (
        base.loc["a", "label"] == 1 and base.loc["b", "label"] == 0
    )  # o4 is inside [cutoff, +40d); o5 cancelled
    # anything after cutoff + horizon changes neither features nor labels
    late = orders.copy()
    late.loc[len(late)] = ["o9", "b", "delivered", pd.Timestamp("2024-03-20"), pd.NaT, pd.NaT]
    changed = snapshot(dict(tables, orders=late), cutoff, horizon).set_index("customer_id")
    pd.testing.assert_frame_equal(base, changed)
    # anything after the cutoff changes no feature (only the label may move)
    shifted = orders.copy()
    shifted.loc[shifted.order_id == "o4", "purchased_at"] = pd.Timestamp("2024-02-02")
    s2 = snapshot(dict(tables, orders=shifted), cutoff, horizon).set_index("customer_id")
    feats = [c for c in base.columns if c != "label"]
    pd.testing.assert_frame_equal(base[feats], s2[feats])
    assert repurchase_labels(orders, ["a", "b"], "2024-03-02", 30).tolist() == [0, 0]


def test_expected_calibration_error_by_hand():
    assert expected_calibration_error(np.array([1, 0, 1, 0]), np.array([0.5, 0.5, 0.5, 0.5])) == 0.0
    # one bin at 0.9 holding [1, 0]: |0.5 - 0.9| = 0.4
    assert expected_calibration_error(np.array([1, 0]), np.array([0.9, 0.9])) == pytest.approx(0.4)


def loyal_world(n=1200, days=540, seed=0):
    """Half of the customers are loyal (order every ~30 days), half order rarely: repurchase is learnable."""
    rng = np.random.default_rng(seed)
    rows, items = [], []
    start = pd.Timestamp("2023-01-01")
    for c in range(n):
        loyal = c % 2 == 0
        t = rng.uniform(0, 60)
        while t < days:
            oid = f"o{len(rows)}"
            ts = start + pd.Timedelta(days=float(t))
            rows.append((oid, f"c{c}", "delivered", ts, ts + pd.Timedelta(days=3), ts + pd.Timedelta(days=5)))
            items.append((oid, 1, f"p{rng.integers(20)}", "s", float(rng.uniform(5, 50)), 1.0, 1))
            t += rng.exponential(30 if loyal else 400)
    orders = pd.DataFrame(
        rows,
        columns=[
            "order_id",
            "customer_id",
            "status",
            "purchased_at",
            "delivered_at",
            "estimated_delivery_at",
        ],
    )
    order_items = pd.DataFrame(
        items, columns=["order_id", "item_seq", "product_id", "seller_id", "price", "freight", "quantity"]
    )
    products = pd.DataFrame(
        {"product_id": [f"p{i}" for i in range(20)], "category": [f"k{i % 4}" for i in range(20)]}
    )
    customers = pd.DataFrame(
        {
            "customer_id": [f"c{c}" for c in range(n)],
            "state": ["SP", "RJ"] * (n // 2),
            "city": "x",
            "zip_prefix": "0",
            "lat": 0.0,
            "lng": 0.0,
        }
    )
    return dict(orders=orders, order_items=order_items, products=products, customers=customers)


def test_repurchase_model_learns_planted_loyalty_and_is_time_based():
    w = loyal_world()
    res = train_and_evaluate(w, horizon_days=60)
    assert res.train_cutoff + pd.Timedelta(days=60) == res.test_cutoff
    g, b = res.metrics["gbm_calibrated"], res.metrics["base_rate"]
    assert g["auc"] > 0.75 and g["pr_auc"] > b["pr_auc"] + 0.1
    assert g["ece"] < 0.1
    assert "rfm_logistic" in res.metrics


def test_segments_have_readable_descriptions():
    w = loyal_world(n=400)
    prof = build_profiles(w["orders"], w["order_items"], w["products"], w["customers"])
    seg, summary = segment_customers(prof, 3)
    assert summary["customers"].sum() == len(prof) and len(summary) == 3
    assert summary["segment_name"].is_unique
    assert all("customers" in d and "order" in d for d in summary["description"])
    # loyal customers (even ids) concentrate in the segment with the most orders
    top = summary.sort_values("median_frequency").iloc[-1]["segment"]
    members = seg[seg.segment == top]["customer_id"].str[1:].astype(int)
    assert (members % 2 == 0).mean() > 0.8


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


def test_user_assets_on_orders_only_world(tmp_path, mlflow_uri):
    from ecom_pipeline.assets import users
    from ecom_pipeline.resources import MLflowResource, SourceResource, WarehouseResource
    from ecom_pipeline.resources.paths import PathsResource
    from ecom_pipeline_tests.recsys.test_assets import write_staging

    w = loyal_world(n=400)
    db = tmp_path / "wh.duckdb"
    write_staging(
        db,
        {
            **w,
            "reviews": pd.DataFrame(
                {
                    "order_id": pd.Series(dtype=str),
                    "customer_id": pd.Series(dtype=str),
                    "score": pd.Series(dtype=int),
                    "created_at": pd.Series(dtype="datetime64[ns]"),
                }
            ),
            "events": pd.DataFrame(
                {
                    "customer_id": pd.Series(dtype=str),
                    "event_type": pd.Series(dtype=str),
                    "ts": pd.Series(dtype="datetime64[ns]"),
                }
            ),
        },
    )
    res = dg.materialize(
        [users.user_profiles, users.repurchase_model, users.repurchase_scores],
        resources={
            "warehouse": WarehouseResource(path=str(db)),
            "mlflow": MLflowResource(tracking_uri=mlflow_uri),
            "source": SourceResource(kind="mapped", data_root=str(tmp_path)),
            "paths": PathsResource(data_root=str(tmp_path)),
        },
    )
    assert res.success
    con = duckdb.connect(str(db), read_only=True)
    prof = con.execute("SELECT * FROM serving.user_profiles").fetchdf()
    assert len(prof) == 400 and prof["segment_name"].notna().all()
    scores = con.execute("SELECT * FROM serving.repurchase_scores").fetchdf()
    assert len(scores) == 400 and scores["probability"].between(0, 1).all()
    even = scores["customer_id"].str[1:].astype(int) % 2 == 0
    assert scores.loc[even, "probability"].mean() > scores.loc[~even, "probability"].mean() + 0.2
    mm = con.execute("SELECT * FROM ml.model_metrics WHERE task = 'repurchase'").fetchdf()
    assert {"auc", "pr_auc", "ece", "brier"} <= set(mm.metric) and (mm.baseline == "rfm_logistic").all()
    auc = mm[(mm.model == "gbm_calibrated") & (mm.metric == "auc")].iloc[0]
    assert auc["n_units"] > 0 and auc["ci_low"] <= auc["ci_high"]
    # the serving gate: one decision, and every score comes from the model it serves
    dec = con.execute("SELECT * FROM ml.serving_decisions WHERE task = 'repurchase'").fetchdf()
    assert len(dec) == 1 and set(scores["model"]) == {dec["served"].iloc[0]}
    assert dec["served"].iloc[0] in {"gbm_calibrated", "rfm_logistic"} and dec["reason"].iloc[0]
    md = {
        e.asset_key.path[-1]: e.event_specific_data.materialization.metadata
        for e in res.get_asset_materialization_events()
    }
    assert "no reviews" in md["user_profiles"]["notes"].value
