"""Graph features of the delivery models: built from training-period orders only (a test fails if test-period
orders move any feature), graceful degradation without a region graph, and the gate's nested choice."""

import numpy as np
import pandas as pd
import pytest

from ecom_pipeline.ml.evaluation import Comparison
from ecom_pipeline.ml.serving_gate import decide_chain
from ecom_pipeline.ml.spatial.delivery import (
    DAYS_CANDIDATE,
    GRAPH_DAYS_CANDIDATE,
    delivery_frame,
    train_delivery_model,
)
from ecom_pipeline.ml.spatial.delivery_graph import graph_features, known_at, snapshot_times
from ecom_pipeline.ml.splits import temporal_split

ALL = "latlon+neighbour+gcn"


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    from ecom_pipeline.ml.spatial.geo import locate
    from ecom_pipeline_tests.forecasting.shop import make_shop

    s = make_shop(days=150, base_per_day=8)
    return delivery_frame(
        s["orders"], s["order_items"], locate(s["customers"], ("BR",)), locate(s["sellers"], ("BR",))
    )


def _features(frame, cutoff):
    return graph_features(frame, cutoff, ALL, gcn_epochs=40)


def test_test_period_orders_do_not_move_any_feature(frame):
    cutoff = temporal_split(frame, "purchased_at", test_fraction=0.25).cutoff
    before = _features(frame, cutoff)
    assert before.reason is None and set(before.details["graph_levels"]) >= {"zip3", "state"}
    assert any(c.startswith("gcn_zip3_") for c in before.columns) and "state_route_days" in before.columns
    # every order not known at the cutoff (test period, or still in transit then): other delivery times,
    # other lateness, other delivery dates (still after the cutoff)
    unknown = ~known_at(frame, cutoff)
    assert unknown.sum() > 50
    changed = frame.copy()
    changed.loc[unknown, "delivery_days"] = changed.loc[unknown, "delivery_days"] * 3 + 10
    changed.loc[unknown, "is_late"] = 1.0 - changed.loc[unknown, "is_late"]
    changed.loc[unknown, "delivered_at"] = changed.loc[unknown, "delivered_at"] + pd.Timedelta(days=10)
    after = _features(changed, cutoff)
    pd.testing.assert_frame_equal(before.frame, after.frame, atol=1e-5)
    # the check can fail: a known training order's delivery time does move the features
    known_idx = frame.index[known_at(frame, cutoff)][:40]
    planted = frame.copy()
    planted.loc[known_idx, "delivery_days"] += 30
    moved = _features(planted, cutoff).frame
    assert not np.allclose(
        before.frame[before.columns].to_numpy(), moved[before.columns].to_numpy(), equal_nan=True
    )


def test_training_orders_see_only_orders_delivered_before_their_month(frame):
    cutoff = temporal_split(frame, "purchased_at", test_fraction=0.25).cutoff
    snap = snapshot_times(frame, cutoff)
    train = frame["purchased_at"] < cutoff
    assert (snap[train] <= frame.loc[train, "purchased_at"]).all() and (snap[~train] == cutoff).all()
    base = _features(frame, cutoff).frame
    # a training order's own delivery time never reaches its own features
    i = frame.index[train][len(frame.index[train]) // 2]
    planted = frame.copy()
    planted.loc[i, "delivery_days"] += 100
    assert np.allclose(
        base.loc[i].drop("order_id").to_numpy(dtype=float),
        _features(planted, cutoff).frame.loc[i].drop("order_id").to_numpy(dtype=float),
        equal_nan=True,
    )


@pytest.mark.slow  # one delivery-model fit, about 20 s of CPU
def test_shop_without_region_graph_runs_without_graph_features_and_says_why(frame):
    """Like the UK shop: customers and sellers known by their country only, all in one country."""
    f = frame.copy()
    f[["c_state", "c_zip3", "s_state", "s_zip3", "s_lat", "s_lng", "s_country", "s_level"]] = None
    f[["c_lat", "c_lng", "c_level", "c_country"]] = (
        53.0,
        -2.0,
        "country",
        "GB",
    )  # placed at the country centroid
    res = train_delivery_model(f, 0.25, graph_variant="neighbour+gcn")
    assert res.graph.columns == [] and res.graph_regressor is None and res.graph_comparisons == []
    assert "no region graph" in res.graph.reason and "country: 1" in res.graph.reason
    assert graph_features(f, res.cutoff, "latlon").columns == [
        "customer_lat",
        "customer_lng",
        "seller_lat",
        "seller_lng",
    ]  # coordinates still usable
    assert {d.candidate for d in res.decisions} >= {DAYS_CANDIDATE} and GRAPH_DAYS_CANDIDATE not in {
        d.candidate for d in res.decisions
    }
    assert res.predictions["days_model"].isin({d.served for d in res.decisions}).all()


@pytest.mark.slow  # the delivery models with and without graph features, about 40 s of CPU
def test_delivery_model_with_graph_features_is_compared_and_gated(frame):
    res = train_delivery_model(frame, 0.25, graph_variant="neighbour+gcn")
    assert res.graph.columns and "graph_mae" in res.metrics
    rows = {(t, c, b): cmp for t, c, b, cmp in res.comparison_rows()}
    assert ("delivery_delay", GRAPH_DAYS_CANDIDATE, DAYS_CANDIDATE) in rows
    assert rows[("delivery_delay", GRAPH_DAYS_CANDIDATE, DAYS_CANDIDATE)].n_units == res.n_test
    days = [d for d in res.decisions if d.task == "delivery_delay"]
    assert [d.candidate for d in days] == [DAYS_CANDIDATE, GRAPH_DAYS_CANDIDATE]
    assert len({d.served for d in days}) == 1 and (res.predictions["days_model"] == days[0].served).all()


def _cmp(diff, lo, hi):
    return Comparison("mae", 1.0 + diff, 1.0, diff, lo, hi, 500, False)


def test_decide_chain_richer_model_must_beat_what_serves_without_it():
    table = {
        ("plain", "base"): _cmp(-0.2, -0.3, -0.1),
        ("graph", "plain"): _cmp(-0.01, -0.05, 0.03),
        ("graph", "base"): _cmp(-0.21, -0.3, -0.1),
    }
    steps = decide_chain("t", "all", "base", ["plain", "graph"], lambda c, r: table[(c, r)])
    assert [d.served for d in steps] == ["plain", "plain"]  # graph beats the baseline but not its twin
    assert steps[1].baseline == "plain" and "serves: plain" in steps[1].reason
    table[("plain", "base")] = _cmp(0.0, -0.1, 0.1)  # plain does not beat the baseline: graph must beat it
    steps = decide_chain("t", "all", "base", ["plain", "graph"], lambda c, r: table[(c, r)])
    assert steps[1].baseline == "base" and {d.served for d in steps} == {"graph"}
