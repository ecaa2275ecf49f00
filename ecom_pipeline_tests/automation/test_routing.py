"""Every GPU-heavy asset (pool "gpu") carries the k8s/celery routing tags, and no other asset does."""

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml

from ecom_pipeline.routing import GPU_OP_TAGS, GPU_POOL, WAREHOUSE_POOL
from ecom_pipeline.config import REPO_ROOT

GPU_TAG_KEYS = set(GPU_OP_TAGS)


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
