"""The pipeline on a real distributed engine: Postgres instance storage + MLflow store, Redis broker, two
Celery workers (queues ``default`` and ``gpu``), the ``distributed_smoke`` job (ingest, features, SARIMA on
CPU, the ``gpu``-pool LSTM), compared with the same job in one process; then a worker process killed in
the middle of a raw load, and the re-execution from failure."""

import os
import signal
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import duckdb
import psycopg2
import pytest

from ecom_pipeline.canonical import TABLE_ORDER
from ecom_pipeline.distributed.local import LocalCluster
from ecom_pipeline.distributed.services import POSTGRES_BINARIES, REDIS_BINARIES, missing_binaries
from ecom_pipeline.distributed.smoke import (
    JOB_NAME,
    RUN_CONFIG,
    in_process_smoke_job,
    smoke_job,
    steps_per_worker,
)
from ecom_pipeline.routing import GPU_OP_TAGS
from ecom_pipeline.warehouse.tables import PER_RUN_COLUMNS, load_counts, warehouse_fingerprints
from ecom_pipeline_tests.distributed import CLEARED_VARS
from ecom_pipeline_tests.distributed.fault_jobs import smoke_job_with_fault_points

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ORDERS = 400
COMPARED_SCHEMAS = ("raw", "staging", "features")
INGEST_TABLES = [
    t for t in TABLE_ORDER if t in ("customers", "orders", "order_items", "products", "sellers", "regions")
]
KILL_POINT = "raw_load.orders"


def _fingerprints(warehouse: Path) -> dict:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return warehouse_fingerprints(con, COMPARED_SCHEMAS, exclude_columns=PER_RUN_COLUMNS)
    finally:
        con.close()


def _invariant_holds(warehouse: Path) -> dict:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        counts = load_counts(con, INGEST_TABLES)
    finally:
        con.close()
    for table, c in counts.items():
        assert c["raw"] > 0 and c["raw"] == c["staged"] + c["quarantined"], (table, c)
    return counts


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The local distributed setup (what ``python -m ecom_pipeline.distributed up`` starts), with the test
    process on the same environment."""
    missing = missing_binaries(*POSTGRES_BINARIES, *REDIS_BINARIES)
    if missing:
        pytest.skip(
            f"not on PATH: {missing} (PostgreSQL 15 server binaries; redis-server: .ci/run installs it)"
        )
    root = tmp_path_factory.mktemp("distributed")
    marker = root / "kill.marker"
    marker.write_text("disarmed")  # the pause point fires only once the marker is deleted
    saved = dict(os.environ)
    for var in CLEARED_VARS:
        os.environ.pop(var, None)
    extra = {
        "ECOM_WAREHOUSE": str(root / "data" / "warehouse.duckdb"),
        "ECOM_DATA_SOURCE": "synthetic",
        "ECOM_SYNTHETIC_ORDERS": str(ORDERS),
        "ECOM_FAULT_PAUSE": f"{KILL_POINT}={marker}",
    }
    try:
        with LocalCluster(root, extra_env=extra) as local:
            os.environ.update(local.env)
            local.marker = marker
            local.warehouse = Path(extra["ECOM_WAREHOUSE"])
            yield local
    finally:
        os.environ.clear()
        os.environ.update(saved)
        mlflow = sys.modules.get("mlflow")
        if mlflow is not None:  # the reference run pointed MLflow's process globals at its own store
            mlflow.set_tracking_uri(saved.get("MLFLOW_TRACKING_URI"))
            mlflow.set_registry_uri(saved.get("MLFLOW_REGISTRY_URI"))


def _query(cluster, database: str, sql: str) -> list[tuple]:
    with psycopg2.connect(cluster.postgres.url(database)) as con, con.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


@pytest.fixture(scope="module")
def reference(cluster):
    """The same job in one process (in-process executor, ephemeral instance, its own warehouse and MLflow;
    the same data root, so the same local pseudonym key and generated files)."""
    ref_root = cluster.root / "reference"
    ref_root.mkdir()
    overrides = {
        "ECOM_WAREHOUSE": str(ref_root / "warehouse.duckdb"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{ref_root / 'mlflow.db'}",
        "ECOM_FAULT_PAUSE": "",
    }
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    try:
        started = time.perf_counter()
        with dg.DagsterInstance.ephemeral() as instance:
            result = dg.execute_job(
                dg.reconstructable(in_process_smoke_job), instance=instance, run_config=RUN_CONFIG
            )
        wall = time.perf_counter() - started
        assert result.success
        return {"wall_s": wall, "fingerprints": _fingerprints(ref_root / "warehouse.duckdb")}
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def test_smoke_job_runs_on_its_queues_workers_with_postgres_storage(cluster, reference):
    job = dg.reconstructable(smoke_job)
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        started = time.perf_counter()
        result = dg.execute_job(job, instance=instance, run_config=RUN_CONFIG)
        wall = time.perf_counter() - started
        assert result.success
        run_id = result.run_id

        placed = steps_per_worker(instance, run_id)
        plan_steps = {s.step_key for s in instance.get_run_step_stats(run_id)}
        gpu_steps = {s for s in plan_steps if s == "models__lstm_backtest"}
        assert set(placed) == plan_steps and len(plan_steps) == 16
        for step, worker in placed.items():
            queue = GPU_OP_TAGS["dagster-celery/queue"] if step in gpu_steps else "default"
            assert worker.startswith(f"{queue}@"), (step, worker)
        per_queue = {q: sum(w.startswith(f"{q}@") for w in placed.values()) for q in ("default", "gpu")}
        assert per_queue == {"default": 15, "gpu": 1}
        # pools are claimed from the Postgres instance and all released at the end
        for pool in ("duckdb", "gpu"):
            assert instance.event_log_storage.get_concurrency_info(pool).active_slot_count == 0

    # the run, its events and the MLflow runs / registered models live in Postgres
    assert _query(cluster, "dagster", f"SELECT status FROM runs WHERE run_id = '{run_id}'") == [("SUCCESS",)]
    assert (
        _query(cluster, "dagster", f"SELECT count(*) FROM event_logs WHERE run_id = '{run_id}'")[0][0] > 100
    )
    mlflow_runs = dict(_query(cluster, "mlflow", "SELECT name, status FROM runs"))
    assert mlflow_runs == {"sarima_backtest": "FINISHED", "lstm_backtest": "FINISHED"}
    models = {r[0] for r in _query(cluster, "mlflow", "SELECT name FROM registered_models")}
    assert {"ecom.forecast.sarima", "ecom.forecast.lstm"} <= models
    assert any((cluster.root / "mlartifacts").rglob("*")), "model artifacts in the shared artifact root"

    _invariant_holds(cluster.warehouse)
    assert _fingerprints(cluster.warehouse) == reference["fingerprints"]
    print(
        f"\n{JOB_NAME}: celery {wall:.1f} s vs in-process {reference['wall_s']:.1f} s; steps per queue "
        f"{per_queue}"
    )


def _executions(instance: dg.DagsterInstance, run_id: str, step_key: str) -> list[str]:
    """The workers that started ``step_key`` in this run, in order (one entry per delivery of its task)."""
    return [
        r.event_log_entry.dagster_event.engine_event_data.metadata["Celery worker"].value
        for r in instance.get_records_for_run(run_id).records
        if r.event_log_entry.dagster_event
        and r.event_log_entry.dagster_event.step_key == step_key
        and "in celery worker" in (r.event_log_entry.dagster_event.message or "")
    ]


def test_a_worker_process_killed_mid_write_is_redelivered_and_loses_nothing(cluster, reference):
    """SIGKILL the default worker's process while it loads raw.orders (inside the load's transaction): the
    task goes back to the `default` queue (acks late, rejected on worker loss), runs again, the run
    succeeds, and raw + staging equal the clean run's (no lost or duplicated rows)."""
    job = dg.reconstructable(smoke_job_with_fault_points)
    ingest = [f"{layer}__{t}" for layer in ("raw", "staging") for t in INGEST_TABLES]  # no check steps
    cluster.marker.unlink()  # arm the pause point
    outcome = {}
    with dg.DagsterInstance.get() as instance:

        def run():
            try:  # no run config: the ingest steps take none
                outcome["result"] = dg.execute_job(
                    job, instance=instance, op_selection=ingest, raise_on_error=False
                )
            except BaseException as exc:  # noqa: BLE001  (surfaced below, not lost in the thread)
                outcome["error"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 180
        while not (cluster.marker.exists() and cluster.marker.read_text().strip()):
            assert "error" not in outcome, outcome.get("error")
            assert time.monotonic() < deadline and thread.is_alive(), "the raw load never reached the pause"
            time.sleep(0.2)
        os.kill(int(cluster.marker.read_text()), signal.SIGKILL)
        thread.join(timeout=240)
        assert not thread.is_alive(), "the run did not finish after its worker process was killed"
        assert "error" not in outcome, outcome.get("error")
        result = outcome["result"]
        assert result.success
        deliveries = _executions(instance, result.run_id, "raw__orders")
        assert len(deliveries) == 2 and all(w.startswith("default@") for w in deliveries), deliveries
        for pool in ("duckdb", "gpu"):
            assert instance.event_log_storage.get_concurrency_info(pool).active_slot_count == 0
    assert "WorkerLostError" in cluster.workers["default"].log.read_text(errors="replace")
    assert cluster.workers["default"].process.poll() is None  # the worker itself lives on

    _invariant_holds(cluster.warehouse)
    ingest_tables = {t for t in reference["fingerprints"] if t.split(".")[0] in ("raw", "staging")}
    now = _fingerprints(cluster.warehouse)
    assert {t: now[t] for t in ingest_tables} == {t: reference["fingerprints"][t] for t in ingest_tables}
