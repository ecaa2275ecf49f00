"""The local distributed setup in one piece: a throwaway PostgreSQL (Dagster storage in db ``dagster``, the
MLflow store in db ``mlflow``), a redis-server (Celery broker and results), the compose instance file as
DAGSTER_HOME, and one Celery worker per queue.  Used by ``python -m ecom_pipeline.distributed up`` and by the
distributed tests, so what a user starts is what the tests exercise.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from ecom_pipeline.automation.executors import CELERY_QUEUES
from ecom_pipeline.config import REPO_ROOT
from ecom_pipeline.distributed.instance import service_env, write_dagster_home
from ecom_pipeline.distributed.services import POSTGRES_USER, PostgresServer, RedisServer, Service
from ecom_pipeline.distributed.workers import Worker, start_worker
from ecom_pipeline.resources.warehouse import LAYER_SCHEMAS
from ecom_pipeline.warehouse.lake import connect_lake

LAKE_DATABASE = "ducklake"  # the lake's catalog database on the setup's Postgres


def create_lake(catalog: str, data_path: str) -> None:
    """Create the lake's catalog tables and the layer schemas once, so the first writers do not race to."""
    with connect_lake(catalog, data_path) as con:
        for schema in LAYER_SCHEMAS:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")


class LocalCluster(Service):
    """Context manager; ``env`` is the environment every process of the setup shares (workers, the process
    that launches runs, ``dagster dev``).

    ``queues``: one worker per entry; a queue named twice gets a second worker (``default-2@host``).
    ``warehouse``: ``duckdb`` (one file under ``data/``) or ``ducklake`` (catalog in the Postgres db
    ``ducklake``, Parquet files under ``lake/``; created once here, before any worker writes)."""

    def __init__(
        self,
        root: Path,
        extra_env: dict[str, str] | None = None,
        queues: tuple[str, ...] = CELERY_QUEUES,
        warehouse: str = "duckdb",
    ):
        self.root = Path(root).resolve()
        self.extra_env = dict(extra_env or {})
        self.queues = queues
        self.warehouse = warehouse
        databases = ("dagster", "mlflow", LAKE_DATABASE) if warehouse == "ducklake" else ("dagster", "mlflow")
        self.postgres = PostgresServer(databases=databases)
        self.redis = RedisServer()
        self.workers: dict[str, Worker] = {}
        self.env: dict[str, str] = {}

    def start(self) -> LocalCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        self.postgres.start()
        self.redis.start()
        home = write_dagster_home(self.root / "dagster_home")
        data = self.root / "data"
        data.mkdir(exist_ok=True)
        self.env = {
            **service_env(
                postgres_host="127.0.0.1",
                postgres_port=self.postgres.port,
                postgres_user=POSTGRES_USER,
                broker_url=self.redis.url(0),
                result_backend=self.redis.url(1),
                mlflow_tracking_uri=self.postgres.sqlalchemy_url("mlflow"),
            ),
            "DAGSTER_HOME": str(home),
            "ECOM_DATA_ROOT": str(data),
            "ECOM_MLFLOW_ARTIFACT_ROOT": str(self.root / "mlartifacts"),
            # env exception: workers must import this checkout; the parent's path is passed on, not a setting
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p),
            **self.lake_env(),
            **self.extra_env,
        }
        if self.warehouse == "ducklake":
            create_lake(self.env["ECOM_DUCKLAKE_CATALOG"], self.env["ECOM_DUCKLAKE_DATA_PATH"])
        process_env = {**os.environ, **self.env}  # env exception: workers inherit the caller's environment
        # dagster-celery starts `celery` by name: this interpreter's scripts first, also when the venv is not
        # activated (make test runs .venv/bin/python directly)
        process_env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), process_env.get("PATH", "")])
        # one at a time: each worker creates Dagster's storage tables in Postgres on start, and two doing
        # it at once race on CREATE TABLE (seen as a worker exiting with a duplicate-table error)
        self.workers = {}
        for q in self.queues:
            name = (
                q if q not in self.workers else f"{q}-{sum(n.split('-')[0] == q for n in self.workers) + 1}"
            )
            self.workers[name] = start_worker(q, process_env, self.root / "logs", cwd=self.root, name=name)
            self.workers[name].wait_ready()
        return self

    def lake_env(self) -> dict[str, str]:
        """The DuckLake settings when ``warehouse="ducklake"`` (nothing for the single file)."""
        if self.warehouse == "duckdb":
            return {}
        if self.warehouse != "ducklake":
            raise ValueError(f"warehouse={self.warehouse!r}: duckdb | ducklake")
        return {
            "ECOM_WAREHOUSE_BACKEND": "ducklake",
            "ECOM_DUCKLAKE_CATALOG": self.postgres.url(LAKE_DATABASE),
            "ECOM_DUCKLAKE_DATA_PATH": str(self.root / "lake"),
        }

    def write_workspace(self) -> Path:
        path = self.root / "workspace.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "load_from": [
                        {
                            "python_module": {
                                "module_name": "ecom_pipeline.distributed.location",
                                "working_directory": str(REPO_ROOT),
                                "location_name": "ecom_pipeline_distributed",
                            }
                        }
                    ]
                }
            )
        )
        return path

    def start_daemon(self) -> Worker:
        """``dagster-daemon run`` on this instance: dequeues submitted runs (run queue limits) and launches
        each in a run-worker process; stopped with the workers."""
        workspace = self.write_workspace()
        log = self.root / "logs" / "daemon.log"
        daemon = Path(sys.executable).parent / "dagster-daemon"
        with log.open("w") as out:
            process = subprocess.Popen(
                [str(daemon) if daemon.exists() else "dagster-daemon", "run", "-w", str(workspace)],
                env={**os.environ, **self.env},  # env exception: as workers
                cwd=self.root,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.workers["daemon"] = Worker("daemon", process, log)
        return self.workers["daemon"]

    def stop(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        self.redis.stop()
        self.postgres.stop()

    def write_env_file(self, path: Path) -> Path:
        path.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(self.env.items())))
        return path
