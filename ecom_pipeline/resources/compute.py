"""Compute routing: which torch device and how many threads a step uses, and how big its work is there.

CUDA is initialised only when a step asks (inside asset bodies), never at import time.  CPU/GPU sizing has
one spelling: an asset config declares ``<name>_cpu`` and ``<name>_cuda`` (epochs, batch size, samples,
items per run) and asks :meth:`ComputeResource.sized` which applies on its device.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg


class ComputeResource(dg.ConfigurableResource):
    """``device``: auto (CUDA when available, else CPU), cpu, cuda or cuda:N.  ``threads``: 0 = all cores."""

    device: str = "auto"
    threads: int = 0

    def torch_device(self) -> str:
        import torch

        wanted = self.device.lower()
        if wanted == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if wanted.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(
                f"compute device {self.device!r} requested but CUDA is not available on this machine"
            )
        return wanted

    def configure_threads(self, small_model: bool = False) -> int:
        """Set torch's intra-op threads for this step: ``threads`` when set; else one for a ``small_model``
        (the LSTM, the ST-GCN, the region GCN: tensors too small to split), all cores for the rest.  One
        thread is faster for those even alone, and a launched run puts a sibling step beside them, where
        threads spin-waiting for a taken core made the LSTM + ST-GCN backtests 3.9-17.8x slower beside a busy
        DuckDB step (2 cores: benchmarks/results/step_threads.md, docs/performance.md)."""
        import torch

        n = self.threads or (1 if small_model else os.cpu_count() or 1)
        torch.set_num_threads(n)
        return n

    @staticmethod
    def is_cuda(device: str) -> bool:
        return device.startswith("cuda")

    def sized(self, config: object, name: str, device: str) -> Any:
        """``config.<name>_cuda`` on a CUDA device, else ``config.<name>_cpu``: the one spelling of CPU/GPU
        sizing (epochs, batch size, max samples, items per run)."""
        return getattr(config, f"{name}_{'cuda' if self.is_cuda(device) else 'cpu'}")

    def describe(self) -> dict[str, str]:
        device = self.torch_device()
        info = {"device": device, "threads": str(self.threads or os.cpu_count())}
        if device.startswith("cuda"):
            import torch

            info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        return info
