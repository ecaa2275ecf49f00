"""Haversine, kNN graph, GCN normalisation/shape, delivery frame without leakage, and the spatial assets."""

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from ecom_pipeline.ml.spatial.gcn import GCNLayer, adjacency, normalized_adjacency
from ecom_pipeline.ml.spatial.geo import haversine_km, knn_graph
from ecom_pipeline.resources.io_manager import WarehouseIOManager


def test_haversine_known_distances():
    assert haversine_km(0, 0, 0, 1) == pytest.approx(111.19, abs=0.05)  # one degree on the equator
    assert haversine_km(-23.5505, -46.6333, -22.9068, -43.1729) == pytest.approx(361, abs=3)  # SP - Rio
    assert haversine_km(10, 20, 10, 20) == 0.0
    assert haversine_km(90, 0, -90, 0) == pytest.approx(np.pi * 6371.0088, rel=1e-6)


def test_knn_graph_nearest_first():
    r = pd.DataFrame(
        {"region_id": ["a", "b", "c", "d"], "level": "state", "lat": [0, 0, 0, 10], "lng": [0, 1, 3, 0]}
    )
    g = knn_graph(r, k=2)
    a = g[g.src == "a"].sort_values("rank")
    assert list(a["dst"]) == ["b", "c"] and (g.src != g.dst).all()
    assert (g.groupby("src").size() == 2).all()


def test_gcn_normalisation_and_shape():
    import torch

    A = adjacency(["a", "b", "c"], pd.DataFrame({"src": ["a"], "dst": ["b"]}))
    assert A[0, 1] == A[1, 0] == 1 and A[2].sum() == 0
    N = normalized_adjacency(A)
    assert np.allclose(N, N.T)
    assert N[2, 2] == pytest.approx(1.0)  # isolated node keeps itself
    assert N[0, 1] == pytest.approx(0.5) and N[0, 0] == pytest.approx(0.5)  # deg 2 each: 1/sqrt(2*2)
    assert np.max(np.abs(np.linalg.eigvalsh(N))) <= 1 + 1e-6
    layer = GCNLayer(4, 8)
    out = layer(torch.randn(3, 4), torch.tensor(N))
    assert out.shape == (3, 8)


def test_delivery_seller_history_uses_only_the_past():
    from ecom_pipeline.ml.spatial.delivery import delivery_frame
    from ecom_pipeline_tests.forecasting.shop import make_shop

    s = make_shop(days=60, base_per_day=5)
    f = delivery_frame(s["orders"], s["order_items"], s["customers"], s["sellers"])
    first = f.sort_values("purchased_at").groupby("seller_id").head(1)
    assert (first["seller_past_orders"] == 0).all() and first["seller_past_mean_days"].isna().all()
    # a seller's count of past deliveries never exceeds its number of earlier purchases
    f = f.sort_values("purchased_at")
    assert (f["seller_past_orders"] <= f.groupby("seller_id").cumcount()).all()


def test_seller_history_equals_the_per_order_definition():
    """The as-of running sums give, for every order, exactly the seller's deliveries completed strictly
    before its purchase: delivery-time ties, deliveries at the purchase instant, orders without a seller."""
    from ecom_pipeline.ml.spatial.delivery import seller_history

    rng = np.random.default_rng(3)
    n = 400
    start = pd.Timestamp("2024-01-01")
    purchased = start + pd.to_timedelta(rng.integers(0, 60, n), unit="D")
    days = rng.integers(0, 12, n)  # whole days: many deliveries share an instant, some equal a purchase
    f = (
        pd.DataFrame(
            {
                "seller_id": rng.choice(["a", "b", "c", None], n, p=[0.4, 0.3, 0.25, 0.05]),
                "purchased_at": purchased,
                "delivered_at": purchased + pd.to_timedelta(days, unit="D"),
                "delivery_days": days.astype(float) + rng.random(n),
                "is_late": rng.random(n) < 0.3,
            }
        )
        .sort_values("purchased_at", kind="stable")
        .reset_index(drop=True)
    )
    mean_days, late_rate, past_n = seller_history(f)
    for i, row in f.iterrows():
        past = f[(f["seller_id"] == row["seller_id"]) & (f["delivered_at"] < row["purchased_at"])]
        if row["seller_id"] is None or past.empty:
            assert past_n[i] == 0 and np.isnan(mean_days[i]) and np.isnan(late_rate[i])
        else:
            assert past_n[i] == len(past)
            assert mean_days[i] == pytest.approx(past["delivery_days"].mean(), rel=1e-12)
            assert late_rate[i] == pytest.approx(past["is_late"].mean(), rel=1e-12)
    assert (past_n > 0).sum() > n / 2  # the check above saw sellers with history, not only empty ones


@pytest.mark.slow
def test_spatial_assets(tmp_path):
    from ecom_pipeline.assets import spatial
    from ecom_pipeline.resources import ComputeResource, MLflowResource, SourceResource, WarehouseResource
    from ecom_pipeline.resources.paths import PathsResource
    from ecom_pipeline_tests.forecasting.shop import make_shop, write_staging

    wh = write_staging(tmp_path / "wh.duckdb", make_shop(days=150, base_per_day=8))
    res = {
        "warehouse": WarehouseResource(path=str(wh)),
        "io_manager": WarehouseIOManager(database=str(wh)),
        "mlflow": MLflowResource(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"),
        "compute": ComputeResource(device="cpu", threads=2),
        "source": SourceResource(data_root=str(tmp_path)),
        "paths": PathsResource(data_root=str(tmp_path)),
    }
    result = dg.materialize(
        list(spatial.build().assets),
        resources=res,
        run_config={"ops": {"features__region_embeddings": {"config": {"epochs_cpu": 60}}}},
    )
    assert result.success
    con = duckdb.connect(str(wh), read_only=True)
    regs = con.execute("SELECT * FROM features.regions").fetchdf()
    assert set(regs.level) == {"country", "state", "zip3"} and regs[regs.level == "state"]["orders"].sum() > 0
    assert list(regs[regs.level == "country"]["region_id"]) == [
        "country:BR"
    ]  # the synthetic shop is Brazilian
    assert set(regs[regs.level != "country"]["resolution_source"]) <= {"coordinates", "staging.regions"}
    emb = con.execute("SELECT region_id, len(embedding) d FROM features.region_embeddings").fetchdf()
    assert len(emb) == (regs.level != "country").sum() and (emb["d"] == 16).all()  # 1 country: no graph
    assert (
        con.execute("SELECT typeof(embedding) FROM features.region_embeddings LIMIT 1").fetchone()[0]
        == "FLOAT[]"
    )
    flows = con.execute("SELECT * FROM features.region_flows WHERE level='state'").fetchdf()
    assert (flows["mean_distance_km"] >= 0).all() and len(flows) > 0
    m = con.execute("SELECT * FROM ml.model_metrics").fetchdf()
    d = m[m.model == "hgb_delivery_days"].iloc[0]
    assert (
        d["baseline"] in {"platform_estimate", "state_median"}
        and d["n_units"] > 0
        and d["ci_low"] <= d["ci_high"]
    )
    dec = con.execute("SELECT * FROM ml.serving_decisions WHERE task = 'delivery_delay'").fetchdf()
    served = (
        con.execute("SELECT DISTINCT days_model FROM models.delivery_delay").fetchdf()["days_model"].tolist()
    )
    # one decision per step of the nested gate (no-graph model, then its graph-feature twin), one served model
    assert (
        set(dec["candidate"]) == {"hgb_delivery_days", "hgb_delivery_days_graph"}
        and dec["served"].nunique() == 1
    )
    assert served == [dec["served"].iloc[0]]  # predictions come from the gate's choice
    assert {"hgb_delivery_days_graph"} <= set(m.model)  # its comparisons have their rows too
    e = m[m.task == "region_embedding"]
    assert len(e) >= 1 and (e["value"] > 0.5).all()  # the 6-state kNN graph is complete: AUC undefined
    con.close()
    assert (tmp_path / "reports" / "regions.png").exists()

    # the GCN is not retrained while the region graph is unchanged (the daily path); refresh=full retrains
    from ecom_pipeline.warehouse.tables import table_fingerprint

    def embed(refresh: str) -> tuple[dict, tuple]:
        asset = next(
            a for a in spatial.build().assets if dg.AssetKey(["features", "region_embeddings"]) in a.keys
        )
        config = {"config": {"epochs_cpu": 60, "refresh": refresh}}
        run = dg.materialize(
            [asset], resources=res, run_config={"ops": {"features__region_embeddings": config}}
        )
        (mat,) = run.asset_materializations_for_node("features__region_embeddings")
        c = duckdb.connect(str(wh), read_only=True)
        try:
            return {k: v.value for k, v in mat.metadata.items()}, table_fingerprint(
                c, "features.region_embeddings"
            )
        finally:
            c.close()

    trained = duckdb.connect(str(wh), read_only=True)
    before = table_fingerprint(trained, "features.region_embeddings")
    trained.close()
    kept, after = embed("auto")
    assert kept["refresh"] == "untouched" and "kept" in kept["refresh_reason"] and after == before
    retrained, again = embed("full")
    assert retrained["refresh"] == "recomputed" and "dagster/row_count" in retrained
    assert again == before  # seeded training on the same graph: the kept table is what a retrain gives


def test_region_order_statistics_and_flow_region_ids():
    """order_stats once for every level: revenue over an order's lines (0 without lines), lateness only for
    delivered orders (a missing promise is not late), a float late rate even where nothing was delivered;
    flow edges carry the region ids region_id gives each seller and customer."""
    from ecom_pipeline.ml.spatial.geo import flows, order_stats, region_id, region_table

    t = pd.Timestamp("2024-03-01")
    orders = pd.DataFrame(
        {
            "order_id": ["o1", "o2", "o3", "o4"],
            "customer_id": ["c1", "c1", "c2", "c3"],
            "purchased_at": [t] * 4,
            "delivered_at": [
                t + pd.Timedelta(days=2),
                t + pd.Timedelta(days=9),
                None,
                t + pd.Timedelta(days=4),
            ],
            "estimated_delivery_at": [t + pd.Timedelta(days=5), t + pd.Timedelta(days=5), t, None],
        }
    )
    items = pd.DataFrame(
        {"order_id": ["o1", "o1", "o2"], "price": [10.0, 5.0, 7.0], "freight": [1.0, None, 2.0]}
    )
    stats = order_stats(orders, items).set_index("order_id")
    assert stats["revenue"].to_dict() == {"o1": 16.0, "o2": 9.0, "o3": 0.0, "o4": 0.0}
    assert stats["is_late"].tolist()[:2] == [0.0, 1.0] and pd.isna(stats.loc["o3", "is_late"])
    assert stats.loc["o4", "is_late"] == 0.0  # delivered, no promise: not late
    place = {"lat": -23.5, "lng": -46.6, "country": "BR", "level": "zip3", "resolution_source": "data"}
    customers = pd.DataFrame(
        [
            {"customer_id": "c1", "state": "SP", "zip3": "010", **place},
            {"customer_id": "c2", "state": "RJ", "zip3": "200", **place},
            {"customer_id": "c3", "state": "RJ", "zip3": "201", **place},
        ]
    )
    sellers = pd.DataFrame([{"seller_id": "s1", "state": "SP", "zip3": "011", **place}])
    table = region_table("state", pd.DataFrame(), customers, sellers, stats.reset_index()).set_index(
        "region_id"
    )
    assert table.loc["state:SP", ["orders", "revenue", "late_rate"]].tolist() == [2, 25.0, 0.5]
    assert table.loc["state:RJ", "orders"] == 2 and table.loc["state:RJ", "late_rate"] == 0.0
    nothing_delivered = stats.assign(is_late=float("nan"), delivery_days=float("nan")).reset_index()
    quiet = region_table("state", pd.DataFrame(), customers, sellers, nothing_delivered)
    assert quiet["late_rate"].dtype == float and quiet["late_rate"].isna().all()
    geo = pd.DataFrame(
        {
            "order_id": ["o1", "o2", "o3"],
            "price": [1.0, 2.0, 3.0],
            "freight": [0.0, 0.0, None],
            "distance_km": [5.0, 7.0, 9.0],
            **{f"s_{k}": [v] * 3 for k, v in place.items() if k != "resolution_source"},
            "s_state": ["SP"] * 3,
            "s_zip3": ["011"] * 3,
            "c_state": ["SP", "RJ", None],
            "c_zip3": ["010", "200", None],
            "c_country": ["BR", "BR", "BR"],
            "c_level": ["zip3", "zip3", "country"],
        }
    )
    edges = flows(geo, "state")
    expected = region_id(pd.DataFrame({"state": ["RJ", "SP"], "country": "BR", "level": "zip3"}), "state")
    assert sorted(edges["dst"]) == sorted(expected) and set(edges["src"]) == {"state:SP"}
    assert edges.set_index("dst").loc["state:SP", "revenue"] == 1.0  # o3's customer never reaches a state


def test_integer_ids_give_the_same_regions_flows_and_series():
    """located_features codes the ids as numbers shared across tables (with_integer_ids): the three outputs
    are equal to those computed on the id strings, with missing ids (an order without customer, a line
    without seller or product, a line of an order not in staging) still counted as missing."""
    from ecom_pipeline.ml.forecasting.series import daily_series
    from ecom_pipeline.ml.spatial.geo import (
        LEVELS,
        flows,
        locate,
        order_geo,
        order_stats,
        region_table,
        with_integer_ids,
    )
    from ecom_pipeline_tests.forecasting.shop import make_shop

    f = make_shop(days=60)
    f["customers"] = locate(f["customers"], ("BR",))
    f["sellers"] = locate(f["sellers"], ("BR",))
    f["orders"].loc[3, "customer_id"] = None
    f["order_items"].loc[5, "seller_id"] = None
    f["order_items"].loc[7, "product_id"] = None
    f["order_items"].loc[9, "order_id"] = "not-staged"
    coded = with_integer_ids(f)
    assert coded["order_items"]["order_id"].dtype == float and f["order_items"]["order_id"].dtype == object
    assert coded["orders"]["customer_id"].isna().sum() == 1
    shared = set(coded["orders"]["customer_id"].dropna()) <= set(coded["customers"]["customer_id"])
    assert shared, "one code per id across the tables that carry it"

    def outputs(g: dict) -> list[pd.DataFrame]:
        stats = order_stats(g["orders"], g["order_items"])
        geo = order_geo(g["orders"], g["order_items"], g["customers"], g["sellers"], ("BR",))
        return [
            *(region_table(lv, g["regions"], g["customers"], g["sellers"], stats) for lv in LEVELS),
            *(flows(geo, lv) for lv in LEVELS),
            daily_series(g["orders"], g["order_items"], g["products"], g["customers"]),
        ]

    for on_strings, on_codes in zip(outputs(f), outputs(coded), strict=True):
        assert len(on_strings)
        pd.testing.assert_frame_equal(on_strings, on_codes)
