"""Reports on the MLOps side: the model registry and recorded run failures.

``reports/model_registry_report`` lists every registered model with its champion version, metric, baseline
and age (an empty registry gives an empty table, not an error); ``reports/run_failures`` turns the
failures recorded by the ``record_run_failures`` sensor into a table.
"""

from datetime import datetime, timezone

import dagster as dg
import pandas as pd

from ecom_pipeline.failure_log import read_failures
from ecom_pipeline.resources import MLflowResource, PathsResource, WarehouseResource
from ecom_pipeline.routing import WAREHOUSE_OP_TAGS, WAREHOUSE_POOL


def _write(warehouse: WarehouseResource, table: str, frame: pd.DataFrame) -> None:
    """Replace ``reports.<table>``; unlike the IO manager this also creates the table when ``frame`` is
    empty, so readers always find it (an empty registry is a valid state)."""
    with warehouse.connect() as con:
        con.register("_report", frame)
        try:
            con.execute(f"CREATE OR REPLACE TABLE reports.{table} AS SELECT * FROM _report")
        finally:
            con.unregister("_report")


# The assets that train and register models: the report runs after them, so a first
# run reports what it trained.
TRAINING_ASSETS = [
    dg.AssetKey(k)
    for k in (
        ["models", "sarima_backtest"],
        ["models", "lstm_backtest"],
        ["models", "stgcn_backtest"],
        ["models", "sentiment_model"],
        ["models", "image_text_projection"],
        ["models", "delivery_delay"],
        ["features", "region_embeddings"],
        ["models", "recommender_evaluation"],
        ["models", "two_tower_recommender"],
        ["serving", "repurchase_scores"],
    )
]


def _markdown(frame: pd.DataFrame, limit: int = 50) -> str:
    if frame.empty:
        return "none"
    return frame.head(limit).to_markdown(index=False)


@dg.asset(
    key_prefix=["reports"],
    group_name="operations",
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
    kinds={"mlflow", "duckdb"},
    owners=["team:mlops"],
    tags={"ecom/stage": "scoring"},
    deps=TRAINING_ASSETS,
    description="Every registered model: champion version, its metric beside its baseline, whether it beats "
    "the baseline, its age, and whether the newest version was promoted (and why).",
)
def model_registry_report(
    context: dg.AssetExecutionContext, mlflow: MLflowResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    from ecom_pipeline.ml.registry import REPORT_COLUMNS, registry_summary

    rows = registry_summary(mlflow.client())
    frame = pd.DataFrame(rows, columns=REPORT_COLUMNS)
    for col in ("champion_value", "baseline_value", "champion_age_days"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    frame["versions"] = frame["versions"].astype("int64")
    frame["champion_created_at"] = pd.to_datetime(frame["champion_created_at"]).astype("datetime64[us]")
    for col in ("beats_baseline", "latest_promoted"):
        frame[col] = frame[col].astype("boolean")
    for col in (
        "model",
        "latest_version",
        "champion_version",
        "metric",
        "baseline",
        "latest_reason",
        "champion_run_id",
        "champion_uri",
    ):
        frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    if frame.empty:
        context.log.info("the model registry is empty: no model has been trained yet")
    losing = frame[frame["beats_baseline"].eq(False).fillna(False)]["model"].tolist()
    if losing:
        context.log.warning(f"champions losing to their baseline: {', '.join(losing)}")
    _write(warehouse, "model_registry_report", frame)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(frame),
            "models": len(frame),
            "without_champion": int(frame["champion_version"].isna().sum()),
            "losing_to_baseline": ", ".join(losing) or "none",
            "tracking_uri": mlflow.tracking_uri,
            "registry": dg.MetadataValue.md(
                _markdown(
                    frame[
                        [
                            "model",
                            "champion_version",
                            "metric",
                            "champion_value",
                            "baseline",
                            "baseline_value",
                            "beats_baseline",
                            "champion_age_days",
                            "latest_version",
                            "latest_promoted",
                        ]
                    ]
                )
            ),
            "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    )


FAILURE_COLUMNS = ["run_id", "job_name", "failed_at", "message", "failed_steps", "trigger", "partition"]


@dg.asset(
    key_prefix=["reports"],
    group_name="operations",
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
    kinds={"duckdb"},
    owners=["team:mlops"],
    tags={"ecom/stage": "scoring"},
    description="Failed runs recorded by the `record_run_failures` sensor "
    "(<data_root>/ops/run_failures.jsonl): job, time, error, failed steps and what triggered the run.",
)
def run_failures(
    context: dg.AssetExecutionContext, paths: PathsResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    records = read_failures(paths.root)
    frame = pd.DataFrame(
        [
            {
                "run_id": r.get("run_id"),
                "job_name": r.get("job_name"),
                "failed_at": r.get("failed_at"),
                "message": (r.get("message") or "")[:2000],
                "failed_steps": ",".join(r.get("failed_steps") or []),
                "trigger": (r.get("tags") or {}).get("ecom/trigger"),
                "partition": (r.get("tags") or {}).get("dagster/partition"),
            }
            for r in records
        ],
        columns=FAILURE_COLUMNS,
    ).astype(object)
    frame["failed_at"] = pd.to_datetime(frame["failed_at"]).astype("datetime64[us]")
    by_job = frame.groupby("job_name").size().to_dict() if len(frame) else {}
    _write(warehouse, "run_failures", frame)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(frame),
            "failures_by_job": {str(k): int(v) for k, v in by_job.items()},
            "latest": dg.MetadataValue.md(
                _markdown(
                    frame.sort_values("failed_at", ascending=False)[
                        ["failed_at", "job_name", "failed_steps", "trigger", "run_id"]
                    ],
                    20,
                )
            ),
        }
    )


def build() -> dg.Definitions:
    return dg.Definitions(assets=[model_registry_report, run_failures])
