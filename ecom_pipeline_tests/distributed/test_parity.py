"""One source of truth for the tested local setup and the compose stack: the same instance file, the same
Celery settings, the same environment names."""

import yaml

from ecom_pipeline.automation.executors import CELERY_CONFIG_SOURCE, CELERY_QUEUES
from ecom_pipeline.config import REPO_ROOT
from ecom_pipeline.distributed.instance import (
    CELERY_WORKER_YAML,
    COMPOSE_INSTANCE_YAML,
    local_instance_config,
    service_env,
)

COMPOSE = yaml.safe_load((REPO_ROOT / "docker" / "docker-compose.yaml").read_text())


def test_local_instance_is_the_compose_instance_without_its_docker_launcher():
    compose = yaml.safe_load(COMPOSE_INSTANCE_YAML.read_text())
    local = local_instance_config()
    assert "run_launcher" in compose and "run_launcher" not in local
    assert {k: v for k, v in compose.items() if k != "run_launcher"} == local
    db = local["storage"]["postgres"]["postgres_db"]
    assert db["scheme"] == "postgresql+psycopg2"
    assert {db[k]["env"] for k in ("hostname", "port", "username", "password", "db_name")} <= set(
        service_env(
            postgres_host="h",
            postgres_port=1,
            postgres_user="u",
            broker_url="b",
            result_backend="r",
            mlflow_tracking_uri="m",
        )
    )


def test_workers_and_executor_share_celery_settings_and_queues():
    worker = yaml.safe_load(CELERY_WORKER_YAML.read_text())["execution"]["config"]
    assert worker["config_source"] == CELERY_CONFIG_SOURCE
    assert worker["broker"] == {"env": "CELERY_BROKER_URL"} and worker["backend"] == {
        "env": "CELERY_RESULT_BACKEND"
    }
    services = COMPOSE["services"]
    queues = {
        svc["command"][svc["command"].index("-q") + 1] for svc in (services["worker"], services["gpu_worker"])
    }
    assert queues == set(CELERY_QUEUES)


def test_compose_sets_every_variable_the_local_setup_sets():
    names = set(
        service_env(
            postgres_host="h",
            postgres_port=1,
            postgres_user="u",
            broker_url="b",
            result_backend="r",
            mlflow_tracking_uri="m",
        )
    )
    for service in ("worker", "gpu_worker", "daemon", "user_code"):
        assert names <= set(COMPOSE["services"][service]["environment"]), service


def test_compose_sets_the_ducklake_settings_the_local_lake_setup_sets(tmp_path):
    from ecom_pipeline.distributed.local import LocalCluster

    names = set(LocalCluster(tmp_path, warehouse="ducklake").lake_env())  # nothing started
    assert names == {"ECOM_WAREHOUSE_BACKEND", "ECOM_DUCKLAKE_CATALOG", "ECOM_DUCKLAKE_DATA_PATH"}
    env = COMPOSE["x-pipeline-env"]
    assert names <= set(env) and env["ECOM_WAREHOUSE_BACKEND"] == "${ECOM_WAREHOUSE_BACKEND:-duckdb}"
    assert "dbname=ducklake" in env["ECOM_DUCKLAKE_CATALOG"]
    init = (REPO_ROOT / "docker" / "postgres" / "init-databases.sh").read_text()
    assert "CREATE DATABASE ducklake" in init
