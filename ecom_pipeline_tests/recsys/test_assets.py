"""Recommender assets on a tmp warehouse filled with a planted-preference world (and an orders-only one)."""

import dagster as dg
import duckdb
import pandas as pd
import pytest

from ecom_pipeline.assets import recommender
from ecom_pipeline.ml.recsys.planted import planted_world
from ecom_pipeline.resources import MLflowResource, SourceResource, WarehouseResource
from ecom_pipeline.resources.io_manager import WarehouseIOManager
from ecom_pipeline.resources.paths import PathsResource


def write_staging(path, tables: dict[str, pd.DataFrame]):
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA IF NOT EXISTS staging")
    for name, df in tables.items():
        con.register("_df", df)
        con.execute(f"CREATE OR REPLACE TABLE staging.{name} AS SELECT * FROM _df")
        con.unregister("_df")
    con.close()


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


def resources(db, mlflow_uri, root):
    return {
        "warehouse": WarehouseResource(path=str(db)),
        "io_manager": WarehouseIOManager(database=str(db)),
        "mlflow": MLflowResource(tracking_uri=mlflow_uri),
        "source": SourceResource(kind="synthetic", data_root=str(root)),
        "paths": PathsResource(data_root=str(root)),
    }


ASSETS = [
    recommender.interactions,
    recommender.category_interactions,
    recommender.recommender_evaluation,
    recommender.recommendations,
    recommender.related_items,
]


def test_recommender_assets_on_planted_world(tmp_path, mlflow_uri):
    w = planted_world(n_users=300, n_items=150, seed=3)
    db = tmp_path / "wh.duckdb"
    write_staging(db, {k: v for k, v in w.items() if k != "taste"})
    result = dg.materialize(ASSETS, resources=resources(db, mlflow_uri, tmp_path))
    assert result.success
    con = duckdb.connect(str(db), read_only=True)
    ev = con.execute("SELECT * FROM ml.recommender_evaluation").fetchdf()
    ndcg = ev[(ev.level == "item") & (ev.metric == "ndcg@10")].set_index("model")["value"]
    assert set(ndcg.index) == set(recommender.ALL_MODELS)
    assert ndcg["als"] > ndcg["popularity"] and ndcg["item_knn"] > ndcg["popularity"]
    mm = con.execute(
        "SELECT model, metric, baseline, baseline_value, mlflow_run_id FROM ml.model_metrics"
    ).fetchdf()
    assert {"als", "item_knn", "regional_popularity"} <= set(mm.model)
    from ecom_pipeline.ml.recsys.models import BASELINES

    assert mm.baseline.isin(BASELINES).all() and mm.mlflow_run_id.notna().all()
    assert {"recall@10", "ndcg@10", "hit_rate@10", "map@10", "catalog_coverage", "novelty"} <= set(mm.metric)
    recs = con.execute("SELECT * FROM serving.recommendations").fetchdf()
    items = recs[recs.level == "item"]
    assert items.groupby("customer_id").size().max() == 10
    winner = ev[(ev.level == "item") & ev.winner].model.iloc[0]
    assert set(items.model) == {winner}
    decisions = con.execute("SELECT * FROM ml.serving_decisions WHERE task = 'recommendation'").fetchdf()
    assert set(decisions.scope) == {"item", "category"}
    assert decisions.set_index("scope").loc["item", "served"] == winner  # served = the gate's decision
    # explanations name a product the user really interacted with, or the user's real state
    inter = con.execute("SELECT customer_id, product_id FROM features.interactions").fetchdf()
    names = w["products"].set_index("product_id")["title"]
    hist = inter.groupby("customer_id")["product_id"].agg(lambda s: {names[p] for p in s})
    state = w["customers"].set_index("customer_id")["state"]
    for row in items.head(200).itertuples():
        assert (
            any(n in row.explanation for n in hist[row.customer_id])
            or f"({state[row.customer_id]})" in row.explanation
            or row.explanation == "popular with all customers"
        ), row
    related = con.execute("SELECT * FROM serving.related_items").fetchdf()
    assert len(related) and (related.product_id != related.related_product_id).all()
    con.close()
    import mlflow

    mlflow.set_tracking_uri(mlflow_uri)
    mv = mlflow.MlflowClient().get_model_version_by_alias("ecom.recsys.als_item", "champion")
    assert mv.version


def test_recommender_assets_with_orders_only_and_empty_events(tmp_path, mlflow_uri):
    """Bring-your-own-data shape: orders, order_items, customers, products; events and reviews empty."""
    w = planted_world(n_users=200, n_items=100, seed=4)
    tables = {k: v for k, v in w.items() if k != "taste"}
    tables["events"] = w["events"].iloc[:0]
    db = tmp_path / "wh.duckdb"
    write_staging(db, tables)
    result = dg.materialize(ASSETS, resources=resources(db, mlflow_uri, tmp_path))
    assert result.success
    mats = {e.asset_key.path[-1]: e for e in result.get_asset_materialization_events()}
    md = mats["interactions"].event_specific_data.materialization.metadata
    assert "no events" in md["notes"].value
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(DISTINCT event_type) FROM features.interactions").fetchone()[0] == 1
    assert con.execute("SELECT count(*) FROM serving.recommendations").fetchone()[0] > 0
    con.close()


def test_recommender_assets_on_empty_staging(tmp_path, mlflow_uri):
    w = planted_world(n_users=5, n_items=5, seed=5)
    db = tmp_path / "wh.duckdb"
    write_staging(db, {k: v.iloc[:0] for k, v in w.items() if k != "taste"})
    result = dg.materialize(ASSETS, resources=resources(db, mlflow_uri, tmp_path))
    assert result.success
