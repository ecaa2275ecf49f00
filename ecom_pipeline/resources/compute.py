"""Compute routing: which torch device and how many threads a step uses.

CUDA is initialised only when a step asks (inside asset bodies), never at import time.
"""

from __future__ import annotations

import os

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
            raise RuntimeError(f"compute device {self.device!r} requested but CUDA is not available on this machine")
        return wanted

    def configure_threads(self) -> int:
        import torch

        n = self.threads or os.cpu_count() or 1
        torch.set_num_threads(n)
        return n

    def describe(self) -> dict[str, str]:
        device = self.torch_device()
        info = {"device": device, "threads": str(self.threads or os.cpu_count())}
        if device.startswith("cuda"):
            import torch

            info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        return info
