"""``ml.model_metrics``: every evaluation of every model beside its baseline, in one table.

Rows that compare a model with its baseline carry the uncertainty of the difference (value - baseline_value)
from :mod:`ecom_pipeline.ml.evaluation`: the 95 % interval ``ci_low``..``ci_high``, the number of evaluation
units ``n_units``, and ``significant`` (true only when the interval excludes zero).  Rows without an interval
leave the four columns null: no uncertainty measured, so no claim.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import duckdb
import pandas as pd

MODEL_METRICS_TABLE = "ml.model_metrics"

# Conventional lower-case names (DESIGN.md); anything else is refused so the table stays comparable.
KNOWN_METRICS = {
    "accuracy",
    "macro_f1",
    "auc",
    "pr_auc",
    "mase",
    "smape",
    "rmse",
    "mae",
    "coverage",
    "recall@10",
    "ndcg@10",
    "hit_rate@10",
    "map@10",
    "catalog_coverage",
    "novelty",
    "ece",
    "brier",
    "f1",
    "log_loss",
}


INTERVAL_COLUMNS = {"ci_low": "DOUBLE", "ci_high": "DOUBLE", "n_units": "BIGINT", "significant": "BOOLEAN"}
COLUMNS = [
    "run_ts",
    "model",
    "task",
    "dataset",
    "split",
    "metric",
    "value",
    "baseline",
    "baseline_value",
    "mlflow_run_id",
    *INTERVAL_COLUMNS,
]


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
    run_ts: datetime = field(default_factory=lambda: datetime.now(UTC).replace(tzinfo=None))
    ci_low: float | None = None  # 95 % interval of value - baseline_value
    ci_high: float | None = None
    n_units: int | None = None  # evaluation units the interval resampled (series, users, reviews, days)
    significant: bool | None = None

    @classmethod
    def from_comparison(
        cls,
        comparison,
        *,
        model: str,
        task: str,
        dataset: str,
        split: str,
        baseline: str,
        mlflow_run_id: str | None = None,
    ) -> MetricRecord:
        """A row from an :class:`ecom_pipeline.ml.evaluation.Comparison`."""
        c = comparison
        return cls(
            model,
            task,
            dataset,
            split,
            c.metric,
            c.candidate_value,
            baseline,
            c.baseline_value,
            mlflow_run_id,
            ci_low=c.ci_low,
            ci_high=c.ci_high,
            n_units=c.n_units,
            significant=c.significant,
        )


def ensure_model_metrics(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS ml")
    con.execute(
        f"""CREATE TABLE IF NOT EXISTS {MODEL_METRICS_TABLE} (
            run_ts TIMESTAMP, model VARCHAR, task VARCHAR, dataset VARCHAR, split VARCHAR, metric VARCHAR,
            value DOUBLE, baseline VARCHAR, baseline_value DOUBLE, mlflow_run_id VARCHAR)"""
    )
    # added later: warehouses created before the interval columns get them (null for their old rows)
    for column, sql_type in INTERVAL_COLUMNS.items():
        con.execute(f"ALTER TABLE {MODEL_METRICS_TABLE} ADD COLUMN IF NOT EXISTS {column} {sql_type}")


def record_model_metrics(con: duckdb.DuckDBPyConnection, records: list[MetricRecord]) -> int:
    """Append evaluation rows; metric names must be conventional (``recall@k``-style names for any k)."""
    for r in records:
        base = r.metric.split("@")[0] + "@10" if "@" in r.metric else r.metric
        if r.metric not in KNOWN_METRICS and base not in KNOWN_METRICS and not r.metric.startswith("f1_"):
            raise ValueError(f"unconventional metric name {r.metric!r}; use one of {sorted(KNOWN_METRICS)}")
    ensure_model_metrics(con)
    if not records:
        return 0
    frame = pd.DataFrame([asdict(r) for r in records])[COLUMNS]
    frame = frame.astype({"ci_low": float, "ci_high": float, "n_units": "Int64", "significant": "boolean"})
    con.register("_metrics", frame)
    try:
        con.execute(
            f"INSERT INTO {MODEL_METRICS_TABLE} ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} "
            "FROM _metrics"
        )
    finally:
        con.unregister("_metrics")
    return len(records)
