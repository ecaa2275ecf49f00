"""Rolling-origin backtest: train on everything strictly before an origin, forecast the next ``horizon``
days, move the origin forward by ``step``; the last fold ends at the last observation.

Each fold is a :func:`ecom_pipeline.ml.splits.temporal_split` of the series at its origin (the project's one
time-based split), with the test part truncated to the horizon.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ecom_pipeline.ml.splits import temporal_split


@dataclass(frozen=True)
class Fold:
    origin: pd.Timestamp  # first forecast day
    train_idx: np.ndarray  # positions into the series, all < origin
    test_idx: np.ndarray  # positions of origin .. origin + horizon - 1


class TooShort(ValueError):
    """The series cannot hold the requested folds plus a minimal training window."""


def rolling_origin(dates, *, horizon: int = 28, folds: int = 3, step: int | None = None,
                   min_train: int = 56) -> list[Fold]:
    """Folds for a daily series with positions 0..n-1 (``dates`` sorted, gap-free)."""
    dates = pd.DatetimeIndex(pd.to_datetime(dates))
    step = step or horizon
    n = len(dates)
    need = min_train + horizon + step * (folds - 1)
    if n < need:
        raise TooShort(f"series has {n} days; {folds} folds of {horizon} days (step {step}) need at least {need} "
                       f"including {min_train} training days")
    frame = pd.DataFrame({"date": dates, "pos": np.arange(n)})
    out = []
    for k in range(folds):
        start = n - horizon - step * (folds - 1 - k)
        split = temporal_split(frame, "date", cutoff=dates[start])
        test = split.test["pos"].to_numpy()[:horizon]
        out.append(Fold(dates[start], split.train["pos"].to_numpy(), test))
    return out
