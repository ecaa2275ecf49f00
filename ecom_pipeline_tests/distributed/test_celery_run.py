"""The pipeline on a real distributed engine: Postgres instance storage + MLflow store, Redis broker, two
Celery workers (queues ``default`` and ``gpu``), the ``distributed_smoke`` job (ingest, features, SARIMA on
CPU, the ``gpu``-pool LSTM), compared with the same job in one process; then a worker process killed in
the middle of a raw load, and the re-execution from failure."""

import os
import signal
import threading
import time
from pathlib import Path

import dagster as dg
import duckdb
import psycopg2
import pytest

from ecom_pipeline.canonical import TABLE_ORDER
from ecom_pipeline.config import REPO_ROOT
from ecom_pipeline.distributed.instance import service_env, write_dagster_home
from ecom_pipeline.distributed.services import POSTGRES_USER
from ecom_pipeline.distributed.smoke import JOB_NAME, RUN_CONFIG, in_process_smoke_job, smoke_job
from ecom_pipeline.distributed.workers import start_worker
from ecom_pipeline.routing import GPU_OP_TAGS
from ecom_pipeline.warehouse.tables import PER_RUN_COLUMNS, load_counts, warehouse_fingerprints

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ORDERS = 400
COMPARED_SCHEMAS = ("raw", "staging", "features")
INGEST_TABLES = [t for t in TABLE_ORDER if t in ("customers", "orders", "order_items", "products", "sellers",
                                                  "regions")]
KILL_POINT = "raw_load.orders"
CLEARED_VARS = ("ECOM_WAREHOUSE", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "ECOM_PSEUDONYM_KEY",
                "ECOM_DATA_DIR", "ECOM_MAPPING", "ECOM_ENV", "ECOM_DATA_SOURCE", "ECOM_EXECUTOR",
                "ECOM_FAULT_PAUSE", "ECOM_SHORT_JOBS_EXECUTOR", "DAGSTER_HOME")


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


class Cluster:
    def __init__(self, root: Path, env: dict[str, str], postgres, marker: Path):
        self.root, self.env, self.postgres, self.marker = root, env, postgres, marker
        self.warehouse = Path(env["ECOM_WAREHOUSE"])
        self.workers: dict[str, object] = {}

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.get()

    def query(self, database: str, sql: str) -> list[tuple]:
        with psycopg2.connect(self.postgres.url(database)) as con, con.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, postgres_server, redis_server):
    root = tmp_path_factory.mktemp("distributed")
    home = write_dagster_home(root / "dagster_home")
    marker = root / "kill.marker"
    marker.write_text("disarmed")  # the pause point fires only once the marker is deleted
    saved = dict(os.environ)
    for var in CLEARED_VARS:
        os.environ.pop(var, None)
    os.environ.update({
        **service_env(postgres_host="127.0.0.1", postgres_port=postgres_server.port, postgres_user=POSTGRES_USER,
                      broker_url=redis_server.url(0), result_backend=redis_server.url(1),
                      mlflow_tracking_uri=postgres_server.sqlalchemy_url("mlflow")),
        "DAGSTER_HOME": str(home),
        "ECOM_DATA_ROOT": str(root / "data"),
        "ECOM_WAREHOUSE": str(root / "data" / "warehouse.duckdb"),
        "ECOM_DATA_SOURCE": "synthetic",
        "ECOM_SYNTHETIC_ORDERS": str(ORDERS),
        "ECOM_MLFLOW_ARTIFACT_ROOT": str(root / "mlartifacts"),
        "ECOM_FAULT_PAUSE": f"{KILL_POINT}={marker}",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), saved.get("PYTHONPATH")) if p),
    })
    (root / "data").mkdir()
    env = dict(os.environ)
    c = Cluster(root, env, postgres_server, marker)
    try:
        c.workers = {q: start_worker(q, env, root / "logs", cwd=root) for q in ("default", "gpu")}
        for w in c.workers.values():
            w.wait_ready()
        yield c
    finally:
        for w in c.workers.values():
            w.stop()
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def reference(cluster):
    """The same job in one process (in-process executor, ephemeral instance, its own warehouse and MLflow;
    the same data root, so the same local pseudonym key and generated files)."""
    ref_root = cluster.root / "reference"
    ref_root.mkdir()
    overrides = {"ECOM_WAREHOUSE": str(ref_root / "warehouse.duckdb"),
                 "MLFLOW_TRACKING_URI": f"sqlite:///{ref_root / 'mlflow.db'}", "ECOM_FAULT_PAUSE": ""}
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    try:
        started = time.perf_counter()
        with dg.DagsterInstance.ephemeral() as instance:
            result = dg.execute_job(dg.reconstructable(in_process_smoke_job), instance=instance,
                                    run_config=RUN_CONFIG)
        wall = time.perf_counter() - started
        assert result.success
        return {"wall_s": wall, "fingerprints": _fingerprints(ref_root / "warehouse.duckdb")}
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _step_workers(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """step key -> the Celery worker that executed it (the engine event each task reports when it starts)."""
    placed = {}
    for record in instance.get_records_for_run(run_id).records:
        event = record.event_log_entry.dagster_event
        if event and event.event_type_value == "ENGINE_EVENT" and "in celery worker" in (event.message or ""):
            placed[event.step_key] = event.engine_event_data.metadata["Celery worker"].value
    return placed


def test_smoke_job_runs_on_its_queues_workers_with_postgres_storage(cluster, reference):
    job = dg.reconstructable(smoke_job)
    with cluster.instance() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        started = time.perf_counter()
        result = dg.execute_job(job, instance=instance, run_config=RUN_CONFIG)
        wall = time.perf_counter() - started
        assert result.success
        run_id = result.run_id

        placed = _step_workers(instance, run_id)
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
    assert cluster.query("dagster", f"SELECT status FROM runs WHERE run_id = '{run_id}'") == [("SUCCESS",)]
    assert cluster.query("dagster", f"SELECT count(*) FROM event_logs WHERE run_id = '{run_id}'")[0][0] > 100
    mlflow_runs = dict(cluster.query("mlflow", "SELECT name, status FROM runs"))
    assert mlflow_runs == {"sarima_backtest": "FINISHED", "lstm_backtest": "FINISHED"}
    models = {r[0] for r in cluster.query("mlflow", "SELECT name FROM registered_models")}
    assert {"ecom.forecast.sarima", "ecom.forecast.lstm"} <= models
    assert any((cluster.root / "mlartifacts").rglob("*")), "model artifacts in the shared artifact root"

    _invariant_holds(cluster.warehouse)
    assert _fingerprints(cluster.warehouse) == reference["fingerprints"]
    print(f"\n{JOB_NAME}: celery {wall:.1f} s vs in-process {reference['wall_s']:.1f} s; steps per queue "
          f"{per_queue}")


def _executions(instance: dg.DagsterInstance, run_id: str, step_key: str) -> list[str]:
    """The workers that started ``step_key`` in this run, in order (one entry per delivery of its task)."""
    return [r.event_log_entry.dagster_event.engine_event_data.metadata["Celery worker"].value
            for r in instance.get_records_for_run(run_id).records
            if r.event_log_entry.dagster_event and r.event_log_entry.dagster_event.step_key == step_key
            and "in celery worker" in (r.event_log_entry.dagster_event.message or "")]


def test_a_worker_process_killed_mid_write_is_redelivered_and_loses_nothing(cluster, reference):
    """SIGKILL the default worker's process while it loads raw.orders (inside the load's transaction): the
    task goes back to the `default` queue (acks late, rejected on worker loss), runs again, the run
    succeeds, and raw + staging equal the clean run's (no lost or duplicated rows)."""
    job = dg.reconstructable(smoke_job)
    ingest = [dg.AssetKey([layer, t]) for layer in ("raw", "staging") for t in INGEST_TABLES]
    cluster.marker.unlink()  # arm the pause point
    outcome = {}
    with cluster.instance() as instance:
        thread = threading.Thread(daemon=True, target=lambda: outcome.update(result=dg.execute_job(
            job, instance=instance, run_config=RUN_CONFIG, asset_selection=ingest, raise_on_error=False)))
        thread.start()
        deadline = time.monotonic() + 180
        while not (cluster.marker.exists() and cluster.marker.read_text().strip()):
            assert time.monotonic() < deadline and thread.is_alive(), "the raw load never reached the pause"
            time.sleep(0.2)
        os.kill(int(cluster.marker.read_text()), signal.SIGKILL)
        thread.join(timeout=240)
        assert not thread.is_alive(), "the run did not finish after its worker process was killed"
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
