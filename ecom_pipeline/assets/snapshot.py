"""Publishes the read-only snapshot (:mod:`ecom_pipeline.snapshot`) that notebooks, BI tools and the serving
app read instead of the warehouse.

The asset carries the ``scoring`` stage tag, so the ``scoring`` job and ``full_pipeline`` publish after the
serving and reporting assets they depend on; ``publish_snapshot`` publishes on demand, and the
``snapshot_after_training`` sensor publishes after a training run (new champions, new gate decisions in
``ml``).
"""

import dagster as dg

from ecom_pipeline.resources import PathsResource, WarehouseResource
from ecom_pipeline.routing import WAREHOUSE_OP_TAGS, WAREHOUSE_POOL

SNAPSHOT_KEY = dg.AssetKey(["snapshot", "read_only_warehouse"])
# every asset that writes a table the snapshot copies (a test checks no serving/reports asset is missing)
SNAPSHOT_DEPS = [
    dg.AssetKey(k.split("/"))
    for k in (
        "serving/recommendations",
        "serving/related_items",
        "serving/similar_products",
        "serving/user_profiles",
        "serving/repurchase_scores",
        "serving/forecasts",
        "serving/anomalies",
        "reports/sentiment_aggregates",
        "reports/model_registry_report",
        "reports/regional_demand_dp",
        "reports/run_failures",
        "features/product_embeddings",
    )
]


class SnapshotConfig(dg.Config):
    path: str = ""  # "" = the paths resource's snapshot ($ECOM_SNAPSHOT, default <data_root>/snapshot.duckdb)


@dg.asset(
    key=SNAPSHOT_KEY,
    group_name="snapshot",
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
    kinds={"duckdb"},
    deps=SNAPSHOT_DEPS,
    tags={"ecom/stage": "scoring"},
    owners=["team:data-engineering"],
    description="Read-only copy of the serving, reports and ml tables (plus product embeddings and products) "
    "in a separate DuckDB file swapped atomically; readers open it instead of the warehouse, so they never "
    "hold the warehouse lock.",
)
def read_only_warehouse(
    context: dg.AssetExecutionContext,
    config: SnapshotConfig,
    paths: PathsResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    from ecom_pipeline.snapshot import publish_snapshot

    target = config.path or str(paths.snapshot)
    with warehouse.connect(read_only=True) as con:
        result = publish_snapshot(con, target)
    context.log.info(
        f"snapshot {target}: {len(result.tables)} tables, {result.bytes:,} bytes, {result.seconds:.2f} s"
    )
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(target),
            "tables": len(result.tables),
            "bytes": result.bytes,
            "seconds": round(result.seconds, 2),
            "rows": dg.MetadataValue.json(result.tables),
        }
    )


publish_snapshot_job = dg.define_asset_job(
    "publish_snapshot",
    selection=dg.AssetSelection.keys(SNAPSHOT_KEY),
    description="Publish the read-only snapshot now (the scoring job and full_pipeline also publish it).",
)


@dg.run_status_sensor(
    name="snapshot_after_training",
    run_status=dg.DagsterRunStatus.SUCCESS,
    request_job=publish_snapshot_job,
    monitor_all_code_locations=False,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="After a successful training or features run, publish the read-only snapshot (new champions "
    "and gate decisions reach the serving app without waiting for the next scoring run).",
)
def snapshot_after_training(context: dg.RunStatusSensorContext):
    run = context.dagster_run
    if run.job_name not in ("training", "features", "daily_refresh"):
        return dg.SkipReason(f"{run.job_name} does not change what the snapshot holds")
    return dg.RunRequest(run_key=f"snapshot-after:{run.run_id}", tags={"ecom/trigger": run.job_name})


def build() -> dg.Definitions:
    return dg.Definitions(
        assets=[read_only_warehouse], jobs=[publish_snapshot_job], sensors=[snapshot_after_training]
    )
