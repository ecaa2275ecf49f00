"""Every GPU-heavy asset (pool "gpu") carries the k8s/celery routing tags, and no other asset does."""

import json

import pytest
import yaml

from ecom_pipeline.config import REPO_ROOT
from ecom_pipeline.routing import GPU_OP_TAGS, GPU_POOL, POOL_TAG, WAREHOUSE_POOL

# the tags that route a step to GPU workers; every pooled step also carries its pool as POOL_TAG
GPU_TAG_KEYS = set(GPU_OP_TAGS) - {POOL_TAG}


def _tag_value(value):
    return json.loads(value) if isinstance(value, str) and value.startswith("{") else value


@pytest.fixture(scope="module")
def executable_assets():
    from ecom_pipeline.definitions import defs

    repo = defs.get_repository_def()
    seen, out = set(), []
    for ad in repo.assets_defs_by_key.values():
        if ad.is_executable and id(ad) not in seen:
            seen.add(id(ad))
            out.append(ad)
    return out


def test_gpu_pool_and_gpu_op_tags_go_together(executable_assets):
    gpu = []
    for ad in executable_assets:
        name = ", ".join(k.to_user_string() for k in ad.keys)
        op = ad.node_def
        tags = {k: _tag_value(v) for k, v in op.tags.items()}
        routed = GPU_TAG_KEYS & set(tags)
        if op.pool == GPU_POOL:
            gpu.append(name)
            for key, expected in GPU_OP_TAGS.items():
                assert tags.get(key) == expected, f"GPU asset {name} lacks or alters op tag {key}"
        else:
            assert not routed, f"{name} is not in pool {GPU_POOL!r} but carries GPU routing tags {routed}"
    # the project has GPU-heavy assets (embeddings, LSTM, fine-tuning): the test is not vacuous
    assert gpu, "no asset in pool 'gpu' found"


def test_k8s_config_requests_one_gpu():
    limits = GPU_OP_TAGS["dagster-k8s/config"]["container_config"]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": 1} and GPU_OP_TAGS["dagster-celery/queue"] == "gpu"
    assert WAREHOUSE_POOL == "duckdb"


@pytest.mark.parametrize("path", [".dagster_home/dagster.yaml", "docker/dagster.yaml"])
def test_instance_configs_limit_every_pool_to_one_step(path):
    from dagster._config import validate_config
    from dagster._core.instance.config import dagster_instance_config_schema

    config = yaml.safe_load((REPO_ROOT / path).read_text())
    assert config["concurrency"]["pools"]["default_limit"] == 1
    result = validate_config(dagster_instance_config_schema(), config)
    assert result.success, [e.message for e in result.errors]


def test_writers_hold_the_duckdb_pool_and_their_checks_run_in_the_writers_step():
    """raw/staging assets write the warehouse (pool duckdb, one slot); each staging table's checks are
    declared on its asset (check_specs) and run in its step, on the writer's connection, so they add no
    step of their own (and no step that could queue for the pool)."""
    from ecom_pipeline.definitions import defs

    repo = defs.get_repository_def()
    ingest = {k: ad for k, ad in repo.assets_defs_by_key.items() if k.path[0] in ("raw", "staging")}
    assert len(ingest) >= 16
    for key, ad in ingest.items():
        assert ad.node_def.pool == WAREHOUSE_POOL, key
        checks = {c.name for c in ad.check_specs}
        if key.path[0] == "staging":
            assert {"row_invariant", "quarantine_share", "row_count_anomaly"} <= checks, key
        else:
            assert not checks, key
    # no separate check definitions, and the ingest job has one step (node) per table and layer, no more
    assert not [k for k in repo.asset_checks_defs_by_key if k.asset_key.path[0] in ("raw", "staging")]
    assert len(defs.resolve_job_def("ingest").nodes) == len(ingest)


def _hold(path, *, read_only: bool, seconds: float):
    import subprocess
    import sys

    code = (
        f"import duckdb,time; c=duckdb.connect({str(path)!r}, read_only={read_only}); "
        "print('held', flush=True); "
        + ("c.execute('INSERT INTO t VALUES (2)'); " if not read_only else "")
        + f"time.sleep({seconds}); c.close()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_read_only_check_and_a_writer_wait_for_each_other_instead_of_failing(tmp_path):
    """What makes the checks safe outside the pool: a read-only open that meets another process's write lock
    waits (and then sees the committed write), and a writer that meets a reader's lock waits too."""
    import time

    import duckdb

    from ecom_pipeline.resources.warehouse import connect_with_retry

    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1)")
    con.close()
    writer = _hold(path, read_only=False, seconds=1.5)
    started = time.monotonic()
    reader = connect_with_retry(path, read_only=True, timeout_s=60)
    assert time.monotonic() - started > 0.5  # it really waited for the writer process
    assert reader.execute("SELECT sum(x) FROM t").fetchone()[0] == 3
    reader.close()
    writer.wait(30)
    check = _hold(path, read_only=True, seconds=1.5)
    started = time.monotonic()
    con = connect_with_retry(path, timeout_s=60)
    assert time.monotonic() - started > 0.5
    con.close()
    check.wait(30)
