"""Drift-triggered retraining: launch the ``training`` job when the newest data no longer looks like the
data the models were trained on.

Windows are in *data time* (``orders.purchased_at``), not wall-clock time, so the sensor works the same on a
historical data set (Olist 2016-2018, the synthetic 730 days) as on live deliveries:

* the cursor keeps ``trained_until``: the newest purchase time seen when training was last launched by this
  sensor.  Without one (first evaluation), the newest ``current_days`` are compared with what precedes them;
* current window   = order items purchased after ``trained_until``;
* reference window = the ``reference_days`` before ``trained_until`` (the training window).

Key features: item ``price`` and ``freight`` (PSI and KS), product ``category`` (share of new categories)
and the volume of new rows (:func:`ecom_pipeline.ml.drift.measure_drift`); and the *forecast error*: once
actuals have arrived for days the served forecasts (``serving.forecasts``) cover, the live MASE of each
series' chosen model is compared with the MASE its backtest promised
(:func:`ecom_pipeline.ml.drift.forecast_error_drift`).  When a threshold is crossed the
sensor requests one ``training`` run whose tags carry the reasons (``ecom/drift_reason``); it then waits
``cooldown_hours`` (wall clock) and never requests a run while another training run is queued or running,
so it cannot flood the queue.  ``trained_until`` and ``last_fired`` only move when a run is requested.

Thresholds: :class:`~ecom_pipeline.ml.drift.DriftThresholds` defaults, overridable with
``ECOM_DRIFT_PSI``, ``ECOM_DRIFT_KS``, ``ECOM_DRIFT_NEW_CATEGORIES``, ``ECOM_DRIFT_VOLUME``;
``ECOM_DRIFT_FORECAST_MASE_RATIO`` (live / backtest MASE, default 1.5); cooldown with
``ECOM_RETRAIN_COOLDOWN_HOURS`` (default 24).
"""

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import dagster as dg
import pandas as pd

from ecom_pipeline.automation.jobs import training_job
from ecom_pipeline.config import env
from ecom_pipeline.ml.drift import (
    DriftThresholds,
    ForecastErrorReport,
    ForecastErrorThresholds,
    forecast_error_drift,
    measure_drift,
)
from ecom_pipeline.resources import WarehouseResource
from ecom_pipeline.resources.warehouse import connect_with_retry
from ecom_pipeline.warehouse.tables import read_table

NUMERIC = ["price", "freight"]
CATEGORICAL = ["category"]
CURRENT_DAYS = 30
REFERENCE_DAYS = 90
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]

_QUERY = """
SELECT o.purchased_at AS ts, i.price, i.freight, p.category
FROM staging.order_items i
JOIN staging.orders o USING (order_id)
LEFT JOIN staging.products p USING (product_id)
WHERE o.purchased_at > ?
"""


def thresholds_from_env() -> DriftThresholds:
    d = DriftThresholds()
    return DriftThresholds(
        psi=float(env("ECOM_DRIFT_PSI") or d.psi),
        ks=float(env("ECOM_DRIFT_KS") or d.ks),
        new_category_share=float(env("ECOM_DRIFT_NEW_CATEGORIES") or d.new_category_share),
        volume_ratio=float(env("ECOM_DRIFT_VOLUME") or d.volume_ratio),
        min_rows=int(env("ECOM_DRIFT_MIN_ROWS") or d.min_rows),
    )


def load_windows(
    warehouse_path: str,
    trained_until: datetime | None,
    *,
    current_days: int = CURRENT_DAYS,
    reference_days: int = REFERENCE_DAYS,
    timeout_s: float = 10.0,
):
    """(reference, current, newest_ts) frames from the warehouse, opened read-only."""
    con = connect_with_retry(warehouse_path, read_only=True, timeout_s=timeout_s)
    try:
        newest = con.execute("SELECT max(purchased_at) FROM staging.orders").fetchone()[0]
        if newest is None:
            return pd.DataFrame(), pd.DataFrame(), None
        newest = pd.Timestamp(newest).to_pydatetime()
        cut = trained_until or (newest - timedelta(days=current_days))
        frame = con.execute(_QUERY, [cut - timedelta(days=reference_days)]).fetchdf()
    finally:
        con.close()
    ts = pd.to_datetime(frame["ts"])
    return frame[ts <= cut], frame[ts > cut], newest


def forecast_error_from_warehouse(warehouse_path: str, *, timeout_s: float = 10.0) -> ForecastErrorReport:
    """Live vs promised error of the served forecasts; an empty report before forecasts or new actuals
    exist."""
    con = connect_with_retry(warehouse_path, read_only=True, timeout_s=timeout_s)
    try:
        fc = read_table(con, "serving.forecasts")
        daily = read_table(con, "features.daily_series")
    finally:
        con.close()
    ratio = float(env("ECOM_DRIFT_FORECAST_MASE_RATIO") or ForecastErrorThresholds.mase_ratio)
    return forecast_error_drift(fc, daily, thresholds=ForecastErrorThresholds(mase_ratio=ratio))


def _cursor(raw: str | None) -> dict:
    try:
        return json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return {}


@dataclass
class DriftVerdict:
    """What one drift check concluded: ``retrain`` with ``reason``, or not with ``message`` saying why."""

    retrain: bool
    message: str
    reason: str = ""
    newest: datetime | None = None
    current_rows: int = 0


def drift_verdict(
    context, warehouse_path: str, trained_until: datetime | None, *, thresholds: DriftThresholds
) -> DriftVerdict:
    """The drift check itself, shared by the ``drift_retraining`` sensor and the ``drift_check`` job so
    that both say the same thing about the same warehouse and training window."""
    try:
        reference, current, newest = load_windows(warehouse_path, trained_until)
    except FileNotFoundError:
        return DriftVerdict(False, "no warehouse yet: run the ingest job first")
    except Exception as exc:  # noqa: BLE001 - a busy or half-built warehouse: try again next tick
        return DriftVerdict(False, f"cannot read the warehouse now: {type(exc).__name__}: {exc}")
    if newest is None:
        return DriftVerdict(False, "staging.orders is empty")
    report = measure_drift(
        reference, current, numeric=NUMERIC, categorical=CATEGORICAL, thresholds=thresholds
    )
    context.log.info(f"drift check: {report.summary()} | {json.dumps(report.features, default=str)[:2000]}")
    fc_report = forecast_error_from_warehouse(warehouse_path)
    context.log.info(f"forecast error check: {fc_report.summary()}")
    data_drift = report.enough_data and report.drifted
    if not data_drift and not fc_report.drifted:
        return DriftVerdict(
            False,
            f"{report.summary()} (reference {report.reference_rows} rows, current "
            f"{report.current_rows} rows, volume ratio {report.volume_ratio:.2f}); "
            f"{fc_report.summary()}",
            newest=newest,
            current_rows=report.current_rows,
        )
    reason = "; ".join(([report.summary()] if data_drift else []) + fc_report.reasons)
    return DriftVerdict(
        True, f"retrain: {reason}", reason=reason, newest=newest, current_rows=report.current_rows
    )


def evaluate_retraining(
    context: dg.SensorEvaluationContext,
    warehouse_path: str,
    *,
    thresholds: DriftThresholds,
    cooldown_hours: float,
    now: float | None = None,
):
    now = time.time() if now is None else now
    state = _cursor(context.cursor)
    last_fired = float(state.get("last_fired", 0) or 0)
    if last_fired and now - last_fired < cooldown_hours * 3600:
        left = (cooldown_hours * 3600 - (now - last_fired)) / 3600
        return dg.SkipReason(
            f"cooldown: last retraining requested {(now - last_fired) / 3600:.1f} h ago; {left:.1f} h left"
        )
    if context.instance is not None:
        active = context.instance.get_runs(
            filters=dg.RunsFilter(job_name=training_job.name, statuses=ACTIVE_STATUSES), limit=1
        )
        if active:
            return dg.SkipReason(f"training run {active[0].run_id} is still queued or running")
    trained_until = datetime.fromisoformat(state["trained_until"]) if state.get("trained_until") else None
    verdict = drift_verdict(context, warehouse_path, trained_until, thresholds=thresholds)
    if not verdict.retrain:
        return dg.SkipReason(verdict.message)
    state.update({"trained_until": verdict.newest.isoformat(), "last_fired": now})
    request = dg.RunRequest(
        run_key=f"drift:{verdict.newest.isoformat()}",
        tags={
            "ecom/trigger": "drift",
            "ecom/drift_reason": verdict.reason[:1000],
            "ecom/trained_until": verdict.newest.isoformat(),
            "ecom/drift_current_rows": str(verdict.current_rows),
        },
    )
    return dg.SensorResult(run_requests=[request], cursor=json.dumps(state))


@dg.sensor(
    name="drift_retraining",
    job=training_job,
    minimum_interval_seconds=3600,
    description="Compares the newest orders with the training window (PSI / KS on price and freight, share "
    "of new categories, new-data volume) and launches `training` with the reasons in its tags; cooldown "
    "and one-at-a-time so it never floods the queue.",
)
def drift_retraining(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
    return evaluate_retraining(
        context,
        warehouse.path,
        thresholds=thresholds_from_env(),
        cooldown_hours=float(env("ECOM_RETRAIN_COOLDOWN_HOURS")),
    )


def sensor_trained_until(instance) -> datetime | None:
    """The training window end the ``drift_retraining`` sensor measures against (from its cursor)."""
    if instance is None or instance.schedule_storage is None:  # an ephemeral instance keeps no cursors
        return None
    from dagster._core.scheduler.instigation import InstigatorType

    states = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
    for state in sorted(states, key=lambda st: not st.is_running):  # the running sensor's window first
        if state.instigator_name == drift_retraining.name and state.instigator_data is not None:
            cursor = _cursor(getattr(state.instigator_data, "cursor", None))
            if cursor.get("trained_until"):
                return datetime.fromisoformat(cursor["trained_until"])
    return None


class DriftCheckConfig(dg.Config):
    trained_until: str = ""  # ISO time; "" = the drift_retraining sensor's current window (or the default)


@dg.op(
    description="The drift_retraining sensor's check, on demand: same windows, thresholds and verdict; "
    "it reports, it does not launch training (the sensor does, with its cooldown)."
)
def drift_check_op(
    context: dg.OpExecutionContext, config: DriftCheckConfig, warehouse: WarehouseResource
) -> dg.Output:
    trained_until = (
        datetime.fromisoformat(config.trained_until)
        if config.trained_until
        else sensor_trained_until(context.instance)
    )
    verdict = drift_verdict(context, warehouse.path, trained_until, thresholds=thresholds_from_env())
    (context.log.warning if verdict.retrain else context.log.info)(f"drift verdict: {verdict.message}")
    return dg.Output(
        {"retrain": verdict.retrain, "message": verdict.message},
        metadata={
            "retrain": verdict.retrain,
            "verdict": verdict.message,
            "trained_until": trained_until.isoformat() if trained_until else "none (newest 30 days)",
            "current_rows": verdict.current_rows,
        },
    )


@dg.job(
    name="drift_check",
    tags={"ecom/stage": "drift_check"},
    executor_def=dg.in_process_executor,
    description="Run the drift check now (what the hourly drift_retraining sensor evaluates) and report "
    "its verdict in the run's logs and metadata.",
)
def drift_check_job():
    drift_check_op()


def build() -> dg.Definitions:
    return dg.Definitions(sensors=[drift_retraining], jobs=[drift_check_job])
