import importlib.util

import pytest

from ecom_pipeline.automation.executors import executor_from_env, gpu_k8s_config


def test_default_is_the_code_locations_executor(monkeypatch):
    monkeypatch.delenv("ECOM_EXECUTOR", raising=False)
    assert executor_from_env() is None
    with pytest.raises(ValueError, match="not one of"):
        executor_from_env("spark")


def test_gpu_k8s_config_has_limits_node_selector_and_toleration():
    cfg = gpu_k8s_config("cloud.google.com/gke-accelerator=nvidia-l4")
    assert cfg["container_config"]["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert cfg["pod_spec_config"]["node_selector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert cfg["pod_spec_config"]["tolerations"][0]["key"] == "nvidia.com/gpu"


@pytest.mark.skipif(importlib.util.find_spec("dagster_celery") is not None, reason="dagster-celery installed")
def test_celery_needs_its_package_only_when_selected():
    with pytest.raises(ImportError):
        executor_from_env("celery")
