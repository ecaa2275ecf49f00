"""The docker/ deployment: compose structure, instance config, workspace (no Docker engine needed).

Where a compose client is installed (`docker compose` v2 or `docker-compose` v1.29) the file is also
validated by it.
"""

import os
import shutil
import subprocess

import pytest
import yaml

from ecom_pipeline.config import REPO_ROOT

DOCKER = REPO_ROOT / "docker"


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((DOCKER / "docker-compose.yaml").read_text())


def test_services_images_and_dependencies(compose):
    services = compose["services"]
    assert {"postgres", "mlflow", "user_code", "webserver", "daemon", "gpu_worker", "redis"} <= set(services)
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for df in [svc.get("build", {}).get("dockerfile")] if isinstance(svc.get("build"), dict) else []:
            assert (REPO_ROOT / df).exists(), f"{name}: {df} missing"
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (DOCKER / src).exists(), f"{name}: bind mount {src} missing"
            elif not src.startswith("/"):
                assert src in compose["volumes"], f"{name}: undeclared volume {src}"


def test_storage_mlflow_and_gpu_profile(compose):
    services = compose["services"]
    mlflow_cmd = " ".join(services["mlflow"]["command"])
    assert (
        "--backend-store-uri=postgresql+psycopg2://" in mlflow_cmd
        and "--artifacts-destination=/mlartifacts" in mlflow_cmd
    )
    assert "mlartifacts:/mlartifacts" in services["mlflow"]["volumes"]
    assert services["user_code"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert services["webserver"]["entrypoint"][0] == "dagster-webserver"
    assert services["daemon"]["entrypoint"][:2] == ["dagster-daemon", "run"]
    gpu = services["gpu_worker"]
    assert gpu["profiles"] == ["gpu"] and "-q" in gpu["command"] and "gpu" in gpu["command"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "profiles" not in services["user_code"]  # the CPU stack starts without a profile


def test_instance_and_workspace(compose):
    instance = yaml.safe_load((DOCKER / "dagster.yaml").read_text())
    assert "postgres" in instance["storage"]
    assert instance["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert instance["run_launcher"]["class"] in ("DockerRunLauncher", "DefaultRunLauncher")
    assert instance["concurrency"]["pools"]["default_limit"] == 1
    assert instance["run_launcher"]["config"]["network"] == compose["networks"]["default"]["name"]
    for var in (
        "DAGSTER_POSTGRES_HOST",
        "MLFLOW_TRACKING_URI",
        "ECOM_PSEUDONYM_KEY",
        "ECOM_MODEL_SIGNING_KEY",
    ):
        assert var in instance["run_launcher"]["config"]["env_vars"]
    workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text())
    (entry,) = workspace["load_from"]
    assert entry["grpc_server"]["host"] == "user_code"
    assert str(entry["grpc_server"]["port"]) in " ".join(
        compose["services"]["user_code"]["healthcheck"]["test"]
    )


def _compose_client():
    if shutil.which("docker"):
        ok = subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
        if ok:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_client_validates_the_file():
    client = _compose_client()
    if client is None:
        pytest.skip("no docker compose client installed")
    env = {
        **os.environ,
        "ECOM_PSEUDONYM_KEY": "test-only",
        "ECOM_MODEL_SIGNING_KEY": "test-only",
        "POSTGRES_PASSWORD": "test-only",
        "REDIS_PASSWORD": "test-only",
    }
    for profile in ([], ["--profile", "celery"], ["--profile", "gpu"]):
        proc = subprocess.run(
            [*client, "-f", str(DOCKER / "docker-compose.yaml"), *profile, "config", "-q"],
            capture_output=True,
            text=True,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr


def test_celery_has_a_default_queue_worker_beside_the_gpu_one(compose):
    services = compose["services"]
    worker, gpu = services["worker"], services["gpu_worker"]
    queue = worker["command"][worker["command"].index("-q") + 1]
    celery = yaml.safe_load((DOCKER / "celery.yaml").read_text())
    assert queue == celery["execution"]["config"]["config_source"]["task_default_queue"]
    assert "--concurrency=1" in worker["command"] and "data:/data" in worker["volumes"]
    assert {"celery", "gpu"} == set(worker["profiles"]) and "gpu" in gpu["profiles"]
    assert set(worker["profiles"]) <= set(services["redis"]["profiles"])  # the broker starts with it


def test_one_writer_by_run_queue_tag_where_pools_do_not_apply(monkeypatch):
    from ecom_pipeline.automation.executors import WRITER_TAG_KEY, writer_tag

    assert writer_tag("multiprocess") == {} and writer_tag("celery") == writer_tag("k8s") == {
        WRITER_TAG_KEY: "warehouse"
    }
    instance = yaml.safe_load((DOCKER / "dagster.yaml").read_text())
    limits = instance["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": WRITER_TAG_KEY, "limit": 1} in limits
    values = yaml.safe_load((DOCKER / "k8s" / "values.yaml").read_text())
    queue = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    k8s_limits = queue["tagConcurrencyLimits"]
    assert {"key": WRITER_TAG_KEY, "limit": 1} in k8s_limits
    assert {"key": "ecom/reload", "limit": 1} in k8s_limits


def test_k8s_shares_one_data_volume_between_code_server_runs_and_steps():
    from ecom_pipeline.automation.executors import k8s_data_volume

    values = yaml.safe_load((DOCKER / "k8s" / "values.yaml").read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    steps = k8s_data_volume()
    for volumes, mounts in (
        (deployment["volumes"], deployment["volumeMounts"]),
        (launcher["volumes"], launcher["volumeMounts"]),
        (steps["volumes"], steps["volume_mounts"]),
    ):
        claim = {"claimName": "ecom-pipeline-data"}
        assert volumes == [{"name": "ecom-data", "persistentVolumeClaim": claim}]
        assert mounts == [{"name": "ecom-data", "mountPath": "/data"}]


def test_env_example_points_a_file_source_at_the_inbox_landing_folder(compose):
    env = dict(
        line.split("=", 1)
        for line in (DOCKER / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    from ecom_pipeline.automation.inbox import FILE_SOURCES

    pipeline_env = compose["services"]["user_code"]["environment"]
    assert env["ECOM_DATA_SOURCE"] in FILE_SOURCES
    assert env["ECOM_DATA_DIR"] == pipeline_env["ECOM_DATA_ROOT"] + "/landing"  # where the inbox publishes
    instance = yaml.safe_load((DOCKER / "dagster.yaml").read_text())
    # they reach the code server and the run containers
    for var in ("ECOM_DATA_SOURCE", "ECOM_DATA_DIR", "ECOM_MAPPING"):
        assert var in pipeline_env and var in instance["run_launcher"]["config"]["env_vars"]
