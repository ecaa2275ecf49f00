"""The Dagster instance of the local distributed setup: the compose deployment's ``docker/dagster.yaml``
(Postgres run / event-log / schedule storage, the run queue with its tag limits, pools, run retries) with
``run_launcher`` left out, so runs start as local processes instead of Docker containers.

One source of truth: the compose stack and the tested local setup read the same storage, queue and pool
settings and the same environment names (``DAGSTER_POSTGRES_*``, ``CELERY_*``, ``MLFLOW_TRACKING_URI``).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ecom_pipeline.config import REPO_ROOT

COMPOSE_INSTANCE_YAML = REPO_ROOT / "docker" / "dagster.yaml"
CELERY_WORKER_YAML = REPO_ROOT / "docker" / "celery.yaml"
# Sections that only make sense inside the compose network (runs launched as Docker containers).
COMPOSE_ONLY_SECTIONS = ("run_launcher",)
# The placeholder password of a throwaway trust-auth cluster (dagster-postgres wants a non-empty one).
TRUST_AUTH_PASSWORD = "unused-trust-auth"


def local_instance_config(compose_yaml: Path = COMPOSE_INSTANCE_YAML) -> dict:
    config = yaml.safe_load(compose_yaml.read_text(encoding="utf-8"))
    for section in COMPOSE_ONLY_SECTIONS:
        config.pop(section, None)
    return config


def write_dagster_home(home: Path) -> Path:
    """Write the local instance's dagster.yaml into ``home`` (the DAGSTER_HOME of every process)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(
        yaml.safe_dump(local_instance_config(), sort_keys=False), encoding="utf-8"
    )
    return home


def service_env(
    *,
    postgres_host: str,
    postgres_port: int,
    postgres_user: str,
    broker_url: str,
    result_backend: str,
    mlflow_tracking_uri: str,
    postgres_password: str = TRUST_AUTH_PASSWORD,
    dagster_db: str = "dagster",
) -> dict[str, str]:
    """The environment names the compose file sets, with the local servers' values."""
    return {
        "DAGSTER_POSTGRES_HOST": postgres_host,
        "DAGSTER_POSTGRES_PORT": str(postgres_port),
        "DAGSTER_POSTGRES_USER": postgres_user,
        "DAGSTER_POSTGRES_PASSWORD": postgres_password,
        "DAGSTER_POSTGRES_DB": dagster_db,
        "CELERY_BROKER_URL": broker_url,
        "CELERY_RESULT_BACKEND": result_backend,
        "MLFLOW_TRACKING_URI": mlflow_tracking_uri,
        "ECOM_EXECUTOR": "celery",
    }
