"""The Kubernetes Job that dagster-k8s's step executor would create for a GPU step and for a CPU step of the
project's ``training`` job, rendered (no cluster) the way ``K8sStepHandler.launch_step`` builds it: the
executor's config, merged with the step's ``dagster-k8s/config`` tag, through
``construct_dagster_k8s_job``."""

from types import SimpleNamespace

import dagster as dg
import pytest

dagster_k8s = pytest.importorskip("dagster_k8s")

from dagster._core.execution.api import create_execution_plan
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    UserDefinedDagsterK8sConfig,
    construct_dagster_k8s_job,
    get_user_defined_k8s_config,
)
from kubernetes.client import ApiClient

from ecom_pipeline.automation.executors import k8s_executor_config

IMAGE = "ecom_pipeline/user_code:latest"
# What the Helm chart's K8sRunLauncher hands to every step job (the instance config map and its secret).
RUN_LAUNCHER = SimpleNamespace(
    dagster_home="/opt/dagster/dagster_home",
    instance_config_map="dagster-instance",
    postgres_password_secret="dagster-postgresql-secret",
)


def _rendered_pod_spec(step) -> dict:
    cfg = k8s_executor_config()
    executor_context = K8sContainerContext(
        env_config_maps=cfg["env_config_maps"],
        env_secrets=cfg["env_secrets"],
        volumes=cfg["volumes"],
        volume_mounts=cfg["volume_mounts"],
        namespace=cfg["job_namespace"],
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict({}),
    )
    context = executor_context.merge(
        K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(step.tags))
    )
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(IMAGE, RUN_LAUNCHER),
        args=["dagster", "api", "execute_step"],
        job_name=f"dagster-step-{step.key[:40]}",
        user_defined_k8s_config=context.run_k8s_config,
        component="step_worker",
    )
    return ApiClient().sanitize_for_serialization(job)["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def training_plan():
    from ecom_pipeline.definitions import defs

    return create_execution_plan(defs.resolve_job_def("training"))


def test_gpu_step_pod_gets_the_gpu_limit_node_selector_and_toleration(training_plan):
    pod = _rendered_pod_spec(training_plan.get_step_by_key("models__lstm_backtest"))
    (container,) = pod["containers"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    # the executor's own settings survive the merge: the shared data volume and the env config map
    assert {"name": "ecom-data", "mountPath": "/data"} in container["volumeMounts"]
    assert any(src.get("configMapRef", {}).get("name") == "ecom-pipeline-env" for src in container["envFrom"])
    assert container["image"] == IMAGE


def test_cpu_step_pod_asks_for_no_gpu(training_plan):
    pod = _rendered_pod_spec(training_plan.get_step_by_key("models__sarima_backtest"))
    (container,) = pod["containers"]
    assert "nvidia.com/gpu" not in (container.get("resources") or {}).get("limits", {})
    assert not pod.get("nodeSelector") and not pod.get("tolerations")
    assert {"name": "ecom-data", "mountPath": "/data"} in container["volumeMounts"]


def test_every_gpu_pool_step_renders_with_the_gpu_placement(training_plan):
    from ecom_pipeline.routing import GPU_POOL

    gpu_steps = [s for s in training_plan.steps if s.pool == GPU_POOL]
    assert gpu_steps
    for step in gpu_steps:
        pod = _rendered_pod_spec(step)
        assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}, step.key
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}, step.key


def test_the_executor_definition_accepts_this_config():
    from ecom_pipeline.automation.executors import executor_from_env

    executor = executor_from_env("k8s")
    assert isinstance(executor, dg.ExecutorDefinition) and executor.name == "k8s"
