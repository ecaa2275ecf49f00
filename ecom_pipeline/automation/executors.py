"""Which executor the pipeline's jobs use, chosen by ``ECOM_EXECUTOR`` at load time.

``multiprocess`` (default)  the code location's executor (``definitions.EXECUTOR``): one process per step,
                            pools ``duckdb`` / ``gpu`` limited to one step each by the instance
                            (dagster.yaml).
``celery``                  dagster-celery: each step is a celery task; GPU-heavy steps carry
                            ``dagster-celery/queue: gpu`` and run on the CUDA worker (compose profile
                            ``gpu``), the rest on the ``default`` queue.  Broker from ``CELERY_BROKER_URL``
                            (Redis), results from ``CELERY_RESULT_BACKEND``.  dagster-celery 0.29 claims pool
                            slots from the instance (``InstanceConcurrencyContext``), so pools hold here too.
``k8s``                     dagster-k8s ``k8s_job_executor``: one Kubernetes Job per step; GPU-heavy steps
                            carry ``dagster-k8s/config`` limits ``nvidia.com/gpu: 1`` and get the GPU node
                            selector / toleration below (``ECOM_K8S_GPU_NODE_SELECTOR``, default
                            ``nvidia.com/gpu.present=true``).

Jobs made of short warehouse steps (``ingest``, ``inbox_ingest``) run with the **in-process** executor in
every mode (:func:`short_steps_executor`): the run worker that the UI, a schedule or a sensor launches
executes all their steps itself.  With one process per step, ``ingest`` (20 assets + 57 checks, each a
few seconds of imports, serialised by the ``duckdb`` pool anyway) took 640 s launched against 8 s in
process; in one process it costs the in-process time plus one start-up (benchmarks/results/launched.md).
Pools still apply (the in-process executor claims ``duckdb`` slots from the instance like the others),
so it keeps the one-writer rule even where the step executor (celery) ignores pools.
``ECOM_SHORT_JOBS_EXECUTOR=multiprocess`` runs each of their steps in its own process forked from the
preloaded forkserver, one at a time (process isolation, at the cost measured in
benchmarks/results/launched.md); ``location`` puts them on the location's executor.

The other jobs (features, training, scoring, daily_refresh, full_pipeline) use the location's executor;
with ``ECOM_EXECUTOR=multiprocess``, ``ECOM_LONG_JOBS_EXECUTOR=in_process`` runs them in the run worker too
(:func:`long_steps_executor`): no step start-up at all, at the price of one step at a time and no process
isolation (a step that crashes the interpreter fails the run).  Not allowed with celery / k8s, whose point
is to route GPU steps to GPU workers.

The location's multiprocess executor starts step processes from a **forkserver** that has imported
``ecom_pipeline.definitions`` and built the repository once (``ecom_pipeline.forkserver_preload``), so a
step pays neither the ~4 s of imports of a fresh interpreter nor the repository build.

dagster-celery and dagster-k8s are project dependencies but imported only when selected.  The Celery path is
exercised end to end by ecom_pipeline_tests/distributed (Postgres, Redis, two workers); the k8s path as far
as rendering its step Jobs.
"""

from __future__ import annotations

import dagster as dg

from ecom_pipeline.config import env
from ecom_pipeline.routing import (
    GPU_POOL,
    LARGE_MEMORY,
    MEMORY_TAG,
    POOL_TAG,
    WAREHOUSE_POOL,
    gpu_k8s_config,  # noqa: F401  (re-exported: it used to live here)
)

EXECUTORS = ("multiprocess", "celery", "k8s")
SHORT_JOBS_EXECUTORS = ("in_process", "multiprocess", "location")
# What the forkserver imports once; step processes fork from it with the definitions imported and the
# repository (asset graph, jobs) already built.
FORKSERVER_PRELOAD = ["ecom_pipeline.forkserver_preload"]


def one_slot_pool_limits(backend: str | None = None) -> list[dict]:
    """One step in flight per run for each one-slot pool, read from the steps' ``ecom/pool`` tag (see
    routing.py: the next pooled step is launched when the slot is free, not after a claim back-off).  The
    warehouse pool has one slot on the single-file warehouse only: a DuckLake takes several writers."""
    from ecom_pipeline.config import Settings

    backend = backend or Settings.from_env().warehouse_backend
    one_slot = [GPU_POOL] + ([WAREHOUSE_POOL] if backend == "duckdb" else [])
    return [{"key": POOL_TAG, "value": pool, "limit": 1} for pool in one_slot]


def step_tag_limits(backend: str | None = None) -> list[dict]:
    """The multiprocess executor's per-run tag limits: one step per one-slot pool in flight, and at most
    ``ECOM_LARGE_STEPS_AT_ONCE`` memory-large steps (``routing.large_memory``; 0: no such limit)."""
    from ecom_pipeline.config import large_steps_at_once

    large = large_steps_at_once()
    memory = [{"key": MEMORY_TAG, "value": LARGE_MEMORY, "limit": large}] if large else []
    return one_slot_pool_limits(backend) + memory


def multiprocess_executor(max_concurrent: int | None = None):
    """The location's default: at most ``ECOM_MAX_CONCURRENT`` (default 2, the reference machine's cores)
    step processes, forked from a preloaded forkserver, one per one-slot pool and ``ECOM_LARGE_STEPS_AT_ONCE``
    memory-large ones at a time."""
    limit = max_concurrent or int(env("ECOM_MAX_CONCURRENT"))
    return dg.multiprocess_executor.configured(
        {
            "max_concurrent": limit,
            "tag_concurrency_limits": step_tag_limits(),
            "start_method": {"forkserver": {"preload_modules": FORKSERVER_PRELOAD}},
        }
    )


def short_steps_executor(kind: str | None = None):
    """Executor of jobs made of short warehouse steps: in-process (default), ``multiprocess`` (one forked
    process per step, one step at a time) or None = the location's (``location``)."""
    kind = (kind or env("ECOM_SHORT_JOBS_EXECUTOR")).strip().lower()
    if kind not in SHORT_JOBS_EXECUTORS:
        raise ValueError(f"ECOM_SHORT_JOBS_EXECUTOR={kind!r} is not one of {SHORT_JOBS_EXECUTORS}")
    if kind == "multiprocess":
        # Every step of these jobs is in the one-slot `duckdb` pool, so a second concurrent step only waits
        # for the slot, re-trying its claim with Dagster's back-off (1 s, x1.1 per try) and so starting up to
        # a second after the slot is free.  With one step at a time the next claim is made when the slot is.
        return multiprocess_executor(max_concurrent=1)
    return dg.in_process_executor if kind == "in_process" else None


def one_pool_executor(kind: str | None = None, executor: str | None = None):
    """Executor of a job whose steps are all in the one-slot ``duckdb`` pool (``scoring``): one step process
    at a time, or None (the location's) outside the local multiprocess mode.  With two at a time the second
    step only waits for the slot, re-claiming with Dagster's back-off (1 s, x1.1 per try, up to 15 s), so
    after a long step it started up to 15 s after the slot was free: 49 s of idle gaps in the 178 s daily
    ``scoring`` run at 1M orders (benchmarks/results/load_daily.md).  One at a time, the next step claims
    the slot when it is free; the order and the work are the same.  ``ECOM_LONG_JOBS_EXECUTOR=in_process``
    keeps its meaning (the caller gives it precedence)."""
    if executor_kind(executor) != "multiprocess":
        return None
    return multiprocess_executor(max_concurrent=1)


LONG_JOBS_EXECUTORS = ("location", "in_process")


def long_steps_executor(kind: str | None = None, executor: str | None = None):
    """Executor of the jobs with long (model, GPU) steps: None = the location's (default) or in-process, which
    only the local multiprocess mode allows."""
    kind = (kind or env("ECOM_LONG_JOBS_EXECUTOR")).strip().lower()
    if kind not in LONG_JOBS_EXECUTORS:
        raise ValueError(f"ECOM_LONG_JOBS_EXECUTOR={kind!r} is not one of {LONG_JOBS_EXECUTORS}")
    if kind == "location":
        return None
    if executor_kind(executor) != "multiprocess":
        raise ValueError(
            f"ECOM_LONG_JOBS_EXECUTOR=in_process needs ECOM_EXECUTOR=multiprocess, not "
            f"{executor_kind(executor)!r}: celery / k8s route GPU steps to GPU workers"
        )
    return dg.in_process_executor


def executor_kind(kind: str | None = None) -> str:
    kind = (kind or env("ECOM_EXECUTOR")).strip().lower()
    if kind not in EXECUTORS:
        raise ValueError(f"ECOM_EXECUTOR={kind!r} is not one of {EXECUTORS}")
    return kind


# Dagster's celery executor ignores pools (and we do not rely on the k8s one honouring them), so there the
# one-writer rule is kept by the run queue instead: every job carries this tag and the instance configs
# (docker/dagster.yaml, docker/k8s/values.yaml) let one run with it in progress at a time.  With the
# multiprocess executor the tag is left off, so runs still overlap and the `duckdb` pool orders their steps.
WRITER_TAG_KEY = "ecom/writer"


def writer_tag(kind: str | None = None) -> dict[str, str]:
    return {WRITER_TAG_KEY: "warehouse"} if executor_kind(kind) in ("celery", "k8s") else {}


# Celery app settings shared by the executor and every worker (docker/celery.yaml repeats them; a test checks
# they agree): steps without a queue tag go to `default`, GPU steps carry `dagster-celery/queue: gpu`
# (routing.GPU_OP_TAGS).  One task at a time per worker process: a step is long, prefetching only hides it.
# A worker process that dies mid-step (OOM kill, SIGKILL) must not lose its step: with Celery's default
# (ack on receipt) the task fails with WorkerLostError and dagster-celery 0.29 then spins forever without
# submitting the remaining steps (measured: the run never ends).  Acked only when done and rejected back to
# the queue when its process is lost, the step is delivered again to a worker of the same queue and
# re-executed; its writes are atomic (warehouse.tables.atomic), so nothing is lost or doubled.
CELERY_DEFAULT_QUEUE = "default"
CELERY_QUEUES = (CELERY_DEFAULT_QUEUE, "gpu")
CELERY_CONFIG_SOURCE = {
    "task_default_queue": CELERY_DEFAULT_QUEUE,
    "worker_prefetch_multiplier": 1,
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
}


def executor_from_env(kind: str | None = None):
    """The executor definition for ``kind`` (default ``ECOM_EXECUTOR``); None = the location's default."""
    kind = executor_kind(kind)
    if kind == "multiprocess":
        return None
    if kind == "celery":
        from dagster_celery import celery_executor

        broker = env("CELERY_BROKER_URL")
        if not broker:  # no default: the broker is a deployment's (compose: redis, password from docker/.env)
            raise ValueError(
                "ECOM_EXECUTOR=celery needs CELERY_BROKER_URL (e.g. redis://127.0.0.1:6379/0); "
                "see docs/deployment.md"
            )
        return celery_executor.configured(
            {
                "broker": broker,
                "backend": env("CELERY_RESULT_BACKEND"),
                "config_source": dict(CELERY_CONFIG_SOURCE),
            }
        )
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(k8s_executor_config())


def k8s_executor_config() -> dict:
    """The k8s_job_executor's config.  GPU placement is not here: it comes with each GPU step's
    ``dagster-k8s/config`` tag (routing.GPU_OP_TAGS), which the executor merges per step."""
    return {
        "max_concurrent": int(env("ECOM_K8S_MAX_CONCURRENT")),
        "job_namespace": env("ECOM_K8S_NAMESPACE"),
        "env_config_maps": ["ecom-pipeline-env"],
        "env_secrets": ["ecom-pipeline-secrets"],
        **k8s_data_volume(),
    }


def k8s_data_volume(claim: str | None = None) -> dict:
    """Every step pod mounts the one warehouse / data volume (a ReadWriteMany claim, ECOM_K8S_DATA_PVC) at
    /data: without it each pod would write its own empty DuckDB file."""
    claim = claim or env("ECOM_K8S_DATA_PVC")
    return {
        "volumes": [{"name": "ecom-data", "persistentVolumeClaim": {"claimName": claim}}],
        "volume_mounts": [{"name": "ecom-data", "mountPath": "/data"}],
    }
