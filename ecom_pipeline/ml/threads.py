"""Thread counts for one block of work: torch's for small models, OpenMP's for the gradient-boosted trees."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cpu_threads(n: int | None, device: str = "cpu") -> Iterator[None]:
    """Train with ``n`` torch threads on CPU inside the block, then put the previous count back; ``None`` or a
    CUDA device leaves it alone.  Small models (recommender towers, SASRec, GCNs) use one: their tensors are
    too small to split, and beside a sibling step two spin-waiting threads made the LSTM + ST-GCN backtests
    3.9-17.8x slower than one (2 cores, benchmarks/results/step_threads.md)."""
    import torch

    previous = torch.get_num_threads()
    if n and not str(device).startswith("cuda"):
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def openmp_threads(n: int) -> Iterator[None]:
    """At most ``n`` OpenMP threads inside the block (scikit-learn's histogram gradient boosting), then the
    previous limit.  A step's share of the cores (``config.step_cpu_threads``), not all of them: beside a busy
    sibling step, a 300k-row HistGradientBoostingRegressor fit took 30.5 s on two threads and 3.0 s on one
    (1.1 s vs 1.8 s alone; 2 cores, benchmarks/results/step_threads.md)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=max(1, int(n)), user_api="openmp"):
        yield
