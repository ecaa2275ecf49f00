"""Hybrid two-tower recommender: learns the planted preferences (beats popularity) on CPU, deterministically,
uses side inputs when given, and runs as the GPU-pool asset on a tmp warehouse."""

import time

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from ecom_pipeline.assets import recommender
from ecom_pipeline.ml.recsys.data import build_data
from ecom_pipeline.ml.recsys.evaluation import evaluate_model, top_k, user_temporal_split
from ecom_pipeline.ml.recsys.interactions import build_interactions
from ecom_pipeline.ml.recsys.models import make_model
from ecom_pipeline.ml.recsys.planted import planted_world
from ecom_pipeline.resources import ComputeResource, MLflowResource, SourceResource, WarehouseResource
from ecom_pipeline.resources.io_manager import WarehouseIOManager
from ecom_pipeline.resources.paths import PathsResource
from ecom_pipeline_tests.recsys.test_assets import write_staging


@pytest.fixture(scope="module")
def world():
    w = planted_world(n_users=500, n_items=250, seed=1)
    inter = build_interactions(w["orders"], w["order_items"], w["events"], w["products"])
    regions = w["customers"].set_index("customer_id")["state"]
    split = user_temporal_split(inter, item_col="product_id")
    data = build_data(
        split.train,
        "product_id",
        user_regions=regions,
        item_names=w["products"].set_index("product_id")["title"].to_dict(),
    )
    return w, split, data


@pytest.fixture(scope="module")
def fitted(world):
    w, split, data = world
    t0 = time.perf_counter()
    model = make_model("two_tower").fit(data, products=w["products"], device="cpu")
    return model, time.perf_counter() - t0


def test_two_tower_beats_global_popularity_on_planted_items_on_cpu(world, fitted):
    w, split, data = world
    model, seconds = fitted
    pop = evaluate_model(make_model("popularity").fit(data), data, split, 10)
    got = evaluate_model(model, data, split, 10)
    assert model.device == "cpu"
    assert got["ndcg@10"] > pop["ndcg@10"] * 1.2, (got, pop)
    assert got["recall@10"] > pop["recall@10"]
    assert model.loss_history[-1] < model.loss_history[0]
    assert seconds < 60, seconds
    assert model.inputs_used["category"].startswith("10 categories")
    assert (
        model.inputs_used["product_embeddings"] == "absent" and "learned state" in model.inputs_used["region"]
    )


def test_two_tower_is_deterministic_and_explains_from_history(world, fitted):
    w, split, data = world
    model, _ = fitted
    again = make_model("two_tower", epochs=2).fit(data, products=w["products"])
    twice = make_model("two_tower", epochs=2).fit(data, products=w["products"])
    np.testing.assert_array_equal(again.score(np.arange(20)), twice.score(np.arange(20)))
    u = 0
    history = {data.name(j) for j in data.matrix[u].indices}
    recs = top_k(model, data, [data.users[u]], 5)[data.users[u]]
    bought = {data.items[j] for j in data.purchased[u].indices}
    assert len(recs) == 5 and not bought & set(recs)
    for item in recs:
        text = model.explain(data, u, data.items.get_loc(item))
        assert any(n in text for n in history), text


def test_two_tower_uses_product_and_region_embeddings_when_given(world):
    w, split, data = world
    rng = np.random.default_rng(0)
    cats = w["products"]["category"].astype("category").cat.codes.to_numpy()
    emb = pd.DataFrame(
        {
            "product_id": w["products"]["product_id"],
            "embedding": [list(np.eye(10)[c] + 0.01 * rng.normal(size=10)) for c in cats],
        }
    )
    states = sorted(w["customers"]["state"].unique())
    reg = pd.DataFrame(
        {"region_id": [f"state:{s}" for s in states], "embedding": [list(rng.normal(size=8)) for _ in states]}
    )
    segs = pd.Series(np.arange(data.n_users) % 3, index=data.users)
    m = make_model("two_tower", epochs=3).fit(
        data, products=w["products"], product_embeddings=emb, region_embeddings=reg, user_segments=segs
    )
    assert m.inputs_used["product_embeddings"] == f"{data.n_items}/{data.n_items} items"
    assert m.inputs_used["region"].startswith("GCN region embeddings")
    assert m.inputs_used["segment"] == "3 segments"
    pop = evaluate_model(make_model("popularity").fit(data), data, split, 10)
    assert evaluate_model(m, data, split, 10)["ndcg@10"] > pop["ndcg@10"]


def test_two_tower_time_cap_stops_inside_an_epoch(world):
    """max_seconds bounds training even when one epoch is longer than the cap (the 1M-order case)."""
    w, split, data = world
    capped = make_model("two_tower", epochs=50, batch_size=8, max_seconds=0.5).fit(
        data, products=w["products"]
    )
    assert "stopped in epoch 1 of 50" in capped.stopped_early
    assert capped.fit_seconds < 5, capped.fit_seconds
    assert capped.user_vectors.shape == (data.n_users, 32)  # still a usable model
    full = make_model("two_tower", epochs=1).fit(data, products=w["products"])
    assert full.stopped_early == ""


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow_tt')}/mlflow.db"


def test_two_tower_asset_on_planted_world(tmp_path, mlflow_uri):
    w = planted_world(n_users=300, n_items=150, seed=3)
    db = tmp_path / "wh.duckdb"
    write_staging(db, {k: v for k, v in w.items() if k != "taste"})
    resources = {
        "warehouse": WarehouseResource(path=str(db)),
        "io_manager": WarehouseIOManager(database=str(db)),
        "mlflow": MLflowResource(tracking_uri=mlflow_uri),
        "compute": ComputeResource(device="cpu"),
        "source": SourceResource(kind="synthetic", data_root=str(tmp_path)),
        "paths": PathsResource(data_root=str(tmp_path)),
    }
    result = dg.materialize(
        [recommender.interactions, recommender.two_tower_recommender], resources=resources
    )
    assert result.success
    spec = recommender.two_tower_recommender
    assert spec.op.pool == "gpu" and spec.op.tags["dagster-celery/queue"] == "gpu"
    md = {
        e.asset_key.path[-1]: e.event_specific_data.materialization.metadata
        for e in result.get_asset_materialization_events()
    }["two_tower_recommender"]
    assert md["device"].value == "cpu" and md["training_path"].value.startswith("cpu")
    assert "features.product_embeddings" in md["missing_optional_inputs"].value
    con = duckdb.connect(str(db), read_only=True)
    ev = (
        con.execute("SELECT * FROM ml.two_tower_evaluation WHERE metric = 'ndcg@10'")
        .fetchdf()
        .set_index("model")
    )
    assert ev.loc["two_tower", "value"] > ev.loc["popularity", "value"]
    mm = con.execute("SELECT * FROM ml.model_metrics WHERE model = 'two_tower'").fetchdf()
    con.close()
    assert {"ndcg@10", "recall@10", "hit_rate@10", "map@10"} <= set(mm.metric)
    assert (
        (mm.baseline == "popularity").all()
        and mm.baseline_value.notna().all()
        and mm.mlflow_run_id.notna().all()
    )
    import mlflow

    mlflow.set_tracking_uri(mlflow_uri)
    assert mlflow.MlflowClient().get_model_version_by_alias("ecom.recsys.two_tower_item", "champion").version
