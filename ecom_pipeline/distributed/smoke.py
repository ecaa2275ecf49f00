"""A small job that crosses every part of the distributed setup: ingest (raw + staging of the tables the
daily series needs), the feature steps, a CPU model (SARIMA backtest, pool ``duckdb``, queue ``default``)
and a ``gpu``-pool step (the LSTM backtest, queue ``gpu``).  Asset checks are left out to keep it to 16
steps; the caller checks the row invariant itself (warehouse.tables.load_counts).

``smoke_job`` is module-level so every Celery worker reconstructs the same job from this module.
"""

from __future__ import annotations

import dagster as dg

from ecom_pipeline.automation.executors import executor_from_env
from ecom_pipeline.automation.jobs import RELOAD_TAG

JOB_NAME = "distributed_smoke"
MODEL_KEYS = (dg.AssetKey(["models", "sarima_backtest"]), dg.AssetKey(["models", "lstm_backtest"]))
# The staging checks are declared on their assets (check_specs) and run in those steps, so they come with
# them; the models' separate promotion-gate checks (MLflow registry reads) are left out.
SELECTION = dg.AssetSelection.assets(*MODEL_KEYS).upstream() - dg.AssetSelection.checks_for_assets(
    *MODEL_KEYS
)
# Small models: the point is where the steps run, not the forecasts (docs/models.md has the real settings).
RUN_CONFIG = {
    "ops": {
        "models__sarima_backtest": {
            "config": {
                "n_states": 0,
                "n_categories": 0,
                "horizon": 7,
                "folds": 1,
                "max_train_days": 120,
                "workers": 1,
            }
        },
        "models__lstm_backtest": {
            "config": {
                "n_states": 0,
                "n_categories": 0,
                "horizon": 7,
                "folds": 1,
                "window": 14,
                "hidden": 8,
                "epochs_cpu": 2,
                "max_samples_cpu": 200,
            }
        },
    }
}


def smoke_definitions(executor: str | None = None) -> dg.Definitions:
    """The project's definitions plus ``distributed_smoke`` on ``executor`` (default ``ECOM_EXECUTOR``;
    ``in_process`` for the single-process reference run)."""
    from ecom_pipeline.definitions import build_definitions

    executor_def = dg.in_process_executor if executor == "in_process" else executor_from_env(executor)
    job = dg.define_asset_job(
        JOB_NAME,
        selection=SELECTION,
        executor_def=executor_def,
        # it reloads raw + staging: one such run at a time through the run queue
        tags={"ecom/stage": "distributed_smoke", **RELOAD_TAG},
    )
    return dg.Definitions.merge(build_definitions(), dg.Definitions(jobs=[job]))


def smoke_job() -> dg.JobDefinition:
    return smoke_definitions().resolve_job_def(JOB_NAME)


def in_process_smoke_job() -> dg.JobDefinition:
    return smoke_definitions("in_process").resolve_job_def(JOB_NAME)


def steps_per_worker(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """step key -> the Celery worker that last started it (from the engine event each task reports)."""
    placed = {}
    for record in instance.get_records_for_run(run_id).records:
        event = record.event_log_entry.dagster_event
        if event and event.event_type_value == "ENGINE_EVENT" and "in celery worker" in (event.message or ""):
            placed[event.step_key] = event.engine_event_data.metadata["Celery worker"].value
    return placed


def main(argv: list[str] | None = None) -> None:
    """Run the job on the instance of $DAGSTER_HOME (``source env.sh`` of ``python -m
    ecom_pipeline.distributed up``) and print where each step ran; ``--steps a,b`` runs only those steps (e.g.
    the ingest ones).  The last line is the outcome as JSON (for scripts: benchmarks/ducklake.py)."""
    import argparse
    import json
    import time

    parser = argparse.ArgumentParser(prog="python -m ecom_pipeline.distributed.smoke")
    parser.add_argument("--steps", default="", help="comma-separated step keys (default: all 16)")
    steps = [s for s in parser.parse_args(argv).steps.split(",") if s]
    with dg.DagsterInstance.get() as instance:
        started = time.perf_counter()
        result = dg.execute_job(
            dg.reconstructable(smoke_job),
            instance=instance,
            raise_on_error=False,
            **({"op_selection": steps} if steps else {"run_config": RUN_CONFIG}),
        )
        wall = time.perf_counter() - started
        placed = steps_per_worker(instance, result.run_id)
    queues: dict[str, int] = {}
    for worker in placed.values():
        queues[worker.split("@")[0]] = queues.get(worker.split("@")[0], 0) + 1
    print(
        f"{JOB_NAME} run {result.run_id}: {'success' if result.success else 'FAILURE'} in "
        f"{wall:.1f} s; steps per worker {queues}"
    )
    print(
        json.dumps(
            {
                "run_id": result.run_id,
                "success": result.success,
                "wall_s": round(wall, 1),
                "steps_per_worker": queues,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
