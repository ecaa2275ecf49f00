"""Where a step runs: the Dagster pools and the op tags that route GPU-heavy steps on real clusters.

``GPU_POOL`` (limit 1 per instance) serialises CUDA steps; ``WAREHOUSE_POOL`` (limit 1) keeps DuckDB to one
writer process.  ``GPU_OP_TAGS`` are read by the k8s job executor (container resource limits) and the
celery executor (queue).

Every pooled step also carries its pool as the op tag ``ecom/pool`` (``WAREHOUSE_OP_TAGS``, and inside
``GPU_OP_TAGS``): the local multiprocess executor limits each one-slot pool to one step *in flight* per run
from that tag (``automation/executors.py``), so it launches the next pooled step when the slot is free instead
of letting waiting steps re-claim the slot with Dagster's back-off (1 s, x1.1 per try, up to 15 s): 11 s
of idle gaps in the 54 s daily ``daily_refresh`` at 1M orders.  The instance pools still hold across runs.

Steps whose own process peaks at several GB at 1M orders carry ``ecom/memory: large`` (:func:`large_memory`);
the multiprocess executor runs ``ECOM_LARGE_STEPS_AT_ONCE`` of them at a time (default 1), so a run's peak is
its largest step plus a small one, not two large ones side by side (``sequence_recommender`` beside
``repurchase_model`` made the 11.2 GB peak of the 1M training run: benchmarks/results/load_daily_1m.md).
"""

from ecom_pipeline.config import env

GPU_POOL = "gpu"
WAREHOUSE_POOL = "duckdb"
POOL_TAG = "ecom/pool"
WAREHOUSE_OP_TAGS = {POOL_TAG: WAREHOUSE_POOL}
MEMORY_TAG, LARGE_MEMORY = "ecom/memory", "large"


def large_memory(op_tags: dict) -> dict:
    """``op_tags`` of a step whose own process peaks at several GB at 1M orders (see the module's note)."""
    return {**op_tags, MEMORY_TAG: LARGE_MEMORY}


def gpu_k8s_config(node_selector: str | None = None) -> dict:
    """``dagster-k8s/config`` of a GPU step: one ``nvidia.com/gpu``, the GPU node selector
    (``ECOM_K8S_GPU_NODE_SELECTOR``, ``key=value``) and the NVIDIA taint's toleration."""
    selector = node_selector or env("ECOM_K8S_GPU_NODE_SELECTOR")
    key, _, value = selector.partition("=")
    return {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": 1}}},
        "pod_spec_config": {
            "node_selector": {key: value or "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }


# The k8s step executor reads `dagster-k8s/config` from each step's tags, so the GPU node placement travels
# with the asset; the celery executor reads the queue.
GPU_OP_TAGS = {
    "dagster-k8s/config": gpu_k8s_config(),
    "dagster-celery/queue": "gpu",
    POOL_TAG: GPU_POOL,
}
