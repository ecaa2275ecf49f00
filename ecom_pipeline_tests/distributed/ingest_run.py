"""One ingest run (raw + staging of customers and orders, the kill tests' smoke job) on the instance of
``$DAGSTER_HOME``, in a process of its own; prints the run id and outcome as JSON.

Concurrent runs are separate processes, as on separate machines: ``execute_job`` sets up logging per run and
two calls in one process deadlock on the logging locks (seen here)."""

import json

import dagster as dg

from ecom_pipeline_tests.distributed.fault_jobs import smoke_job_with_fault_points

TABLES = ("customers", "orders")  # orders' staging checks its customers
STEPS = [f"{layer}__{t}" for layer in ("raw", "staging") for t in TABLES]


def main() -> None:
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(
            dg.reconstructable(smoke_job_with_fault_points),
            instance=instance,
            op_selection=STEPS,
            raise_on_error=False,
        )
        # a failed run says why, so a flaky failure in CI can be read from the test's assertion message
        errors = [
            f"{e.step_key}: {e.event_specific_data.error.to_string()[-1500:]}"
            for e in result.all_events
            if e.event_type in (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE)
            and getattr(e.event_specific_data, "error", None) is not None
        ]
    print(json.dumps({"run_id": result.run_id, "success": result.success, "errors": errors}), flush=True)


if __name__ == "__main__":
    main()
