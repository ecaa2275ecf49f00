"""Whole-catalogue serving tables recomputed only when their model would change: serving.similar_products
(kept exactly while the product embeddings are the same) and serving.related_items (kept between weekly
recomputations unless the interactions grew past the threshold), each saying recomputed or untouched."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import numpy as np
import pandas as pd

from ecom_pipeline.assets.embeddings import similar_products
from ecom_pipeline.assets.recommender import interactions, related_items
from ecom_pipeline.incremental.refit import decide_refit, record_refit
from ecom_pipeline.resources import WarehouseResource
from ecom_pipeline.warehouse.tables import table_fingerprint
from ecom_pipeline_tests.incremental.test_incremental_refresh import world  # noqa: F401 (module fixture)
from ecom_pipeline_tests.incremental.world import DAY, stage_partition


def _meta(result, asset) -> dict:
    (mat,) = result.asset_materializations_for_node(asset.op.name)
    return {k: v.value for k, v in mat.metadata.items()}


def _fingerprint(path, table: str):
    con = duckdb.connect(str(path), read_only=True)
    try:
        return table_fingerprint(con, table)
    finally:
        con.close()


def _write_embeddings(path, vectors: np.ndarray) -> None:
    con = duckdb.connect(str(path))
    frame = pd.DataFrame(
        {"product_id": [f"p{i:03d}" for i in range(len(vectors))], "embedding": [v.tolist() for v in vectors]}
    )
    con.execute("CREATE SCHEMA IF NOT EXISTS features")
    con.register("_frame", frame)
    con.execute("CREATE OR REPLACE TABLE features.product_embeddings AS SELECT * FROM _frame")
    con.close()


def test_similar_products_are_kept_while_the_embeddings_are_the_same(tmp_path):
    path = tmp_path / "w.duckdb"
    vectors = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    _write_embeddings(path, vectors)
    resources = {"warehouse": WarehouseResource(path=str(path))}

    def run(refresh: str = "auto") -> dict:
        config = {"ops": {"serving__similar_products": {"config": {"top_k": 5, "refresh": refresh}}}}
        return _meta(
            dg.materialize([similar_products], resources=resources, run_config=config), similar_products
        )

    first = run()
    assert first["refresh"] == "recomputed" and first["refresh_reason"].startswith("first run")
    computed = _fingerprint(path, "serving.similar_products")
    again = run()
    assert again["refresh"] == "untouched" and again["dagster/row_count"] == computed[0] == 40 * 5
    # the kept table is what a rebuild on the same embeddings gives
    assert run("full")["refresh"] == "recomputed"
    assert _fingerprint(path, "serving.similar_products") == computed

    vectors[3] = -vectors[3]  # one product's embedding changed: recomputed, and the table changes
    _write_embeddings(path, vectors)
    changed = run()
    assert changed["refresh"] == "recomputed" and "inputs or settings changed" in changed["refresh_reason"]
    assert _fingerprint(path, "serving.similar_products") != computed


def test_related_items_are_recomputed_only_past_the_growth_threshold(world, tmp_path):  # noqa: F811
    path = tmp_path / "w.duckdb"
    shutil.copy(world[0], path)
    resources = {"warehouse": WarehouseResource(path=str(path))}

    def run(growth: float, refresh: str = "auto", assets=(interactions, related_items)) -> dict:
        config = {"ops": {"serving__related_items": {"config": {"refit_growth": growth, "refresh": refresh}}}}
        return _meta(dg.materialize(list(assets), resources=resources, run_config=config), related_items)

    assert run(0.05)["refresh"] == "recomputed"
    before = _fingerprint(path, "serving.related_items")
    con = duckdb.connect(str(path))
    stage_partition(con, world[1], DAY, world[2])  # one more day of interactions
    con.close()

    kept = run(0.9)  # the day's growth is within the threshold: last computation kept
    assert kept["refresh"] == "untouched" and "within 90%" in kept["refresh_reason"]
    assert _fingerprint(path, "serving.related_items") == before
    grown = run(0.0, assets=(related_items,))  # any growth: recomputed from today's interactions
    assert grown["refresh"] == "recomputed" and "input rows changed +" in grown["refresh_reason"]
    daily = _fingerprint(path, "serving.related_items")
    assert run(0.0, "full", assets=(related_items,))["refresh"] == "recomputed"
    assert _fingerprint(path, "serving.related_items") == daily


def test_the_gate_recomputes_weekly_and_on_request(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("CREATE SCHEMA serving; CREATE TABLE serving.t AS SELECT 1 AS x")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def decide(days: float, mode: str = "auto", rows: int = 100):
        return decide_refit(
            con,
            "serving.t",
            signature="s",
            input_rows=rows,
            mode=mode,
            growth=0.05,
            now=t0 + timedelta(days=days),
        )

    first = decide(0)
    assert first.recompute
    record_refit(con, first, now=t0)
    assert not decide(6.9).recompute and not decide(1, rows=104).recompute
    assert decide(1, rows=106).recompute and decide(7).recompute and decide(1, "full").recompute
    con.close()
