"""Which executor the pipeline's jobs use, chosen by ``ECOM_EXECUTOR`` at load time.

``multiprocess`` (default)  the code location's executor (``definitions.EXECUTOR``): one process per step,
                            pools ``duckdb`` / ``gpu`` limited to one step each by the instance (dagster.yaml).
``celery``                  dagster-celery: each step is a celery task; GPU-heavy steps carry
                            ``dagster-celery/queue: gpu`` and run on the CUDA worker (compose profile ``gpu``),
                            the rest on the default ``dagster`` queue.  Broker from ``CELERY_BROKER_URL``.
``k8s``                     dagster-k8s ``k8s_job_executor``: one Kubernetes Job per step; GPU-heavy steps
                            carry ``dagster-k8s/config`` limits ``nvidia.com/gpu: 1`` and get the GPU node
                            selector / toleration below (``ECOM_K8S_GPU_NODE_SELECTOR``, default
                            ``nvidia.com/gpu.present=true``).

dagster-celery and dagster-k8s are installed in the docker images, not in the local venv: they are
imported only when selected.
"""

from __future__ import annotations

import os

EXECUTORS = ("multiprocess", "celery", "k8s")


def gpu_k8s_config(node_selector: str | None = None) -> dict:
    """k8s_job_executor ``per_step``-style config for GPU steps: node selector and the NVIDIA toleration."""
    selector = node_selector or os.environ.get("ECOM_K8S_GPU_NODE_SELECTOR", "nvidia.com/gpu.present=true")
    key, _, value = selector.partition("=")
    return {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": 1}}},
        "pod_spec_config": {
            "node_selector": {key: value or "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }


def executor_from_env(kind: str | None = None):
    """The executor definition for ``kind`` (default ``ECOM_EXECUTOR``); None = the location's default."""
    kind = (kind or os.environ.get("ECOM_EXECUTOR", "multiprocess")).strip().lower() or "multiprocess"
    if kind not in EXECUTORS:
        raise ValueError(f"ECOM_EXECUTOR={kind!r} is not one of {EXECUTORS}")
    if kind == "multiprocess":
        return None
    if kind == "celery":
        from dagster_celery import celery_executor

        broker = os.environ.get("CELERY_BROKER_URL")
        if not broker:  # no default: the only one that would work out of the box is RabbitMQ's guest account
            raise ValueError("ECOM_EXECUTOR=celery needs CELERY_BROKER_URL (an amqp URL with user and password); "
                             "docker/docker-compose.yaml builds it from RABBITMQ_USER / RABBITMQ_PASSWORD")
        return celery_executor.configured({
            "broker": broker,
            "backend": os.environ.get("CELERY_RESULT_BACKEND", "rpc://"),
        })
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured({
        "max_concurrent": int(os.environ.get("ECOM_K8S_MAX_CONCURRENT", "8")),
        "job_namespace": os.environ.get("ECOM_K8S_NAMESPACE", "ecom-pipeline"),
        "env_config_maps": ["ecom-pipeline-env"],
        "env_secrets": ["ecom-pipeline-secrets"],
    })
