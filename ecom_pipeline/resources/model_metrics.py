"""``ml.model_metrics``: every evaluation of every model beside its baseline, in one table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import duckdb
import pandas as pd

MODEL_METRICS_TABLE = "ml.model_metrics"

# Conventional lower-case names (DESIGN.md); anything else is refused so the table stays comparable.
KNOWN_METRICS = {
    "accuracy", "macro_f1", "auc", "pr_auc", "mase", "smape", "rmse", "mae", "coverage", "recall@10",
    "ndcg@10", "hit_rate@10", "map@10", "catalog_coverage", "novelty", "ece", "brier", "f1", "log_loss",
}


@dataclass
class MetricRecord:
    model: str
    task: str
    dataset: str
    split: str
    metric: str
    value: float
    baseline: str
    baseline_value: float | None
    mlflow_run_id: str | None = None
    run_ts: datetime = field(default_factory=lambda: datetime.now(timezone.utc).replace(tzinfo=None))


def ensure_model_metrics(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS ml")
    con.execute(
        f"""CREATE TABLE IF NOT EXISTS {MODEL_METRICS_TABLE} (
            run_ts TIMESTAMP, model VARCHAR, task VARCHAR, dataset VARCHAR, split VARCHAR, metric VARCHAR,
            value DOUBLE, baseline VARCHAR, baseline_value DOUBLE, mlflow_run_id VARCHAR)"""
    )


def record_model_metrics(con: duckdb.DuckDBPyConnection, records: list[MetricRecord]) -> int:
    """Append evaluation rows; metric names must be conventional (``recall@k``-style names for any k)."""
    for r in records:
        base = r.metric.split("@")[0] + "@10" if "@" in r.metric else r.metric
        if r.metric not in KNOWN_METRICS and base not in KNOWN_METRICS and not r.metric.startswith("f1_"):
            raise ValueError(f"unconventional metric name {r.metric!r}; use one of {sorted(KNOWN_METRICS)}")
    ensure_model_metrics(con)
    if not records:
        return 0
    frame = pd.DataFrame([asdict(r) for r in records])[
        ["run_ts", "model", "task", "dataset", "split", "metric", "value", "baseline", "baseline_value",
         "mlflow_run_id"]
    ]
    con.register("_metrics", frame)
    try:
        con.execute(f"INSERT INTO {MODEL_METRICS_TABLE} SELECT * FROM _metrics")
    finally:
        con.unregister("_metrics")
    return len(records)
