"""Run failures, recorded for the report.

``record_run_failures`` appends one JSON line per failed run to ``<data_root>/ops/run_failures.jsonl``: a
file rather than a warehouse table so that recording never waits for (or fails on) the DuckDB write lock
held by the very run that may have failed.  The ``reports/run_failures`` asset
(:mod:`ecom_pipeline.assets.registry_report`) turns it into a table.  A run is recorded once (keyed by run
id) even when the sensor sees its failure event again.  Dagster keeps the run-status sensor's cursor (the
last event it processed) itself.
"""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg

from ecom_pipeline.failure_log import FAILURE_LOG, failure_log_path, read_failures, record_failure  # noqa: F401
from ecom_pipeline.resources import PathsResource

KEPT_TAGS = (
    "ecom/trigger",
    "ecom/drift_reason",
    "ecom/inbox_day",
    "dagster/partition",
    "dagster/schedule_name",
    "dagster/sensor_name",
    "dagster/backfill",
)


def step_error(event: dg.DagsterEvent) -> str:
    """The cause of one STEP_FAILURE event: a ``Failure``'s description, else the innermost error message
    (Dagster wraps user errors in "Error occurred while executing op ...")."""
    data = event.step_failure_data
    if data is None:
        return event.message or ""
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    error = data.error
    while error is not None and error.cause is not None:
        error = error.cause
    if error is None:
        return event.message or ""
    return error.message.strip()  # already "<ExceptionType>: <message>"


# On by default: a failure is recorded as soon as the daemon runs (`make dev`), nobody has to remember to
# switch it on in the UI; it only appends to a file, so it is safe to leave running.
@dg.run_failure_sensor(
    name="record_run_failures",
    description="Records every failed run (job, time, the failed steps' error messages, trigger tags) in "
    "<data_root>/ops/run_failures.jsonl for the run_failures report.",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def record_run_failures(context: dg.RunFailureSensorContext, paths: PathsResource):
    run = context.dagster_run
    if run.status != dg.DagsterRunStatus.FAILURE:
        return dg.SkipReason(f"run {run.run_id} is {run.status.value}, not FAILURE")
    steps, errors = [], []
    try:
        for event in context.get_step_failure_events():
            if event.step_key:
                steps.append(event.step_key)
                errors.append({"step": event.step_key, "error": step_error(event)[:2000]})
    except Exception:  # event log not available (e.g. a run deleted meanwhile): record what we know
        pass
    # the run's own message is only "Steps failed: [...]": lead with the first step's cause
    message = "; ".join(f"{e['step']}: {e['error']}" for e in errors[:3])
    message = message or context.failure_event.message or ""
    record = {
        "run_id": run.run_id,
        "job_name": run.job_name,
        "failed_at": datetime.now(timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds"),
        "message": message[:2000],
        "failed_steps": steps,
        "step_errors": errors,
        "tags": {k: v for k, v in run.tags.items() if k in KEPT_TAGS},
    }
    if record_failure(paths.root, record):
        context.log.info(f"recorded failure of {run.job_name} run {run.run_id}")
        return None
    return dg.SkipReason(f"failure of run {run.run_id} already recorded")


def build() -> dg.Definitions:
    return dg.Definitions(sensors=[record_run_failures])
