"""Where a step runs: the Dagster pools and the op tags that route GPU-heavy steps on real clusters.

``GPU_POOL`` (limit 1 per instance) serialises CUDA steps; ``WAREHOUSE_POOL`` (limit 1) keeps DuckDB to one
writer process.  ``GPU_OP_TAGS`` are read by the k8s job executor (container resource limits) and the
celery executor (queue); the local multiprocess executor ignores them.
"""

GPU_POOL = "gpu"
WAREHOUSE_POOL = "duckdb"
GPU_OP_TAGS = {
    "dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": 1}}}},
    "dagster-celery/queue": "gpu",
}
