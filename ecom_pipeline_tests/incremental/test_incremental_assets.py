"""The incremental refresh as Dagster materialisations: a first run in full, the next day incremental with
new / changed / untouched counts in the metadata, and the ``incremental_full_refresh`` job rebuilding in
full."""

from __future__ import annotations

import shutil

import dagster as dg
import duckdb

from ecom_pipeline.assets.recommender import category_interactions, interactions, recommendations
from ecom_pipeline.assets.users import user_profiles
from ecom_pipeline.automation.jobs import incremental_full_refresh_job
from ecom_pipeline.resources import WarehouseResource
from ecom_pipeline_tests.incremental.test_incremental_refresh import world  # noqa: F401 (module fixture)
from ecom_pipeline_tests.incremental.world import DAY, stage_partition

ASSETS = [interactions, category_interactions, user_profiles, recommendations]
RUN_CONFIG = {
    "ops": {
        "serving__recommendations": {"config": {"serve_model": "item_knn"}},
        "serving__user_profiles": {"config": {"n_segments": 2}},
    }
}


def _meta(result, asset) -> dict:
    (mat,) = result.asset_materializations_for_node(asset.op.name)
    return {k: v.value for k, v in mat.metadata.items()}


def test_daily_materialisations_are_incremental_and_the_job_rebuilds_in_full(world, tmp_path):  # noqa: F811
    path = tmp_path / "warehouse.duckdb"
    shutil.copy(world[0], path)
    resources = {"warehouse": WarehouseResource(path=str(path))}
    first = dg.materialize(ASSETS, resources=resources, run_config=RUN_CONFIG)
    assert {_meta(first, a)["refresh"] for a in ASSETS} == {"full"}
    con = duckdb.connect(str(path))
    stage_partition(con, world[1], DAY, world[2])
    con.close()

    daily = dg.materialize(ASSETS, resources=resources, run_config=RUN_CONFIG)
    for asset in ASSETS:
        meta = _meta(daily, asset)
        assert meta["refresh"] == "incremental", (asset.key, meta["refresh_reason"])
        assert meta["untouched_rows"] > meta["changed_rows"] > 0
    recs = _meta(daily, recommendations)
    assert all(v.endswith("customers with new activity") for v in recs["recomputed"].values())
    assert _meta(first, user_profiles)["segment_model"].startswith("fitted")
    assert _meta(daily, user_profiles)["segment_model"].startswith("assigned with the stored centroids")

    defs = dg.Definitions(assets=ASSETS, jobs=[incremental_full_refresh_job], resources=resources)
    # the job's own run config (refresh=full for the three); a run config given here would replace it
    rebuilt = defs.resolve_job_def("incremental_full_refresh").execute_in_process(
        instance=dg.DagsterInstance.ephemeral()
    )
    assert rebuilt.success
    for asset in ASSETS:
        meta = _meta(rebuilt, asset)
        assert meta["refresh"] == "full" and meta["refresh_reason"] == "full refresh requested (mode=full)"
    assert _meta(rebuilt, user_profiles)["segment_model"].startswith("fitted")
