"""Torch's intra-op thread count for one block of work on small tensors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cpu_threads(n: int | None, device: str = "cpu") -> Iterator[None]:
    """Train with ``n`` torch threads on CPU inside the block, then put the previous count back; ``None`` or a
    CUDA device leaves it alone.  Small models (recommender towers, SASRec, GCNs) use one: their tensors are
    too small to split, and beside a sibling step several spin-waiting threads make them 10-20x slower
    (benchmarks/results/torch_threads.md)."""
    import torch

    previous = torch.get_num_threads()
    if n and not str(device).startswith("cuda"):
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
