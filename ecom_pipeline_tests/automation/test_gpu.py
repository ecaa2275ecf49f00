"""Runs a GPU-routed asset on CUDA (skipped without CUDA; CPU suite: ``-m "not gpu"``)."""

import dagster as dg
import pytest

from ecom_pipeline.resources import ComputeResource
from ecom_pipeline.routing import GPU_OP_TAGS, GPU_POOL

torch = pytest.importorskip("torch")


@dg.asset(pool=GPU_POOL, op_tags=GPU_OP_TAGS)
def tiny_gpu_training(compute: ComputeResource) -> dg.MaterializeResult:
    device = compute.torch_device()  # CUDA initialised inside the body, never at import
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.randn(512, 16, device=device)
    y = x[:, :1] * 2.0
    first = None
    for _ in range(200):
        loss = torch.nn.functional.mse_loss(net(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return dg.MaterializeResult(
        metadata={
            "device": str(next(net.parameters()).device),
            "first_loss": first,
            "last_loss": loss.item(),
            **compute.describe(),
        }
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_asset_materialises_on_cuda():
    result = dg.materialize([tiny_gpu_training], resources={"compute": ComputeResource(device="auto")})
    assert result.success
    meta = result.asset_materializations_for_node("tiny_gpu_training")[0].metadata
    assert meta["device"].value.startswith("cuda")
    assert meta["last_loss"].value < meta["first_loss"].value
    assert "gpu" in meta


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_project_gpu_assets_are_defined_with_cuda_available():
    from ecom_pipeline.definitions import defs

    gpu_assets = [
        ad
        for ad in defs.get_repository_def().assets_defs_by_key.values()
        if ad.is_executable and ad.node_def.pool == GPU_POOL
    ]
    assert gpu_assets
    assert ComputeResource(device="auto").torch_device() == "cuda"
