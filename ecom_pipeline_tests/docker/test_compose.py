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
    assert {"postgres", "mlflow", "user_code", "webserver", "daemon", "gpu_worker", "rabbitmq"} <= set(services)
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
    assert "--backend-store-uri=postgresql://" in mlflow_cmd and "--artifacts-destination=/mlartifacts" in mlflow_cmd
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
    for var in ("DAGSTER_POSTGRES_HOST", "MLFLOW_TRACKING_URI", "ECOM_PSEUDONYM_KEY", "ECOM_MODEL_SIGNING_KEY"):
        assert var in instance["run_launcher"]["config"]["env_vars"]
    workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text())
    (entry,) = workspace["load_from"]
    assert entry["grpc_server"]["host"] == "user_code"
    assert str(entry["grpc_server"]["port"]) in " ".join(compose["services"]["user_code"]["healthcheck"]["test"])


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
    env = {**os.environ, "ECOM_PSEUDONYM_KEY": "test-only", "ECOM_MODEL_SIGNING_KEY": "test-only",
           "POSTGRES_PASSWORD": "test-only",
           "RABBITMQ_PASSWORD": "test-only"}
    for profile in ([], ["--profile", "gpu"]):
        proc = subprocess.run([*client, "-f", str(DOCKER / "docker-compose.yaml"), *profile, "config", "-q"],
                              capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
