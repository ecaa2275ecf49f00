"""Rolling-origin backtest: train on everything strictly before an origin, forecast the next ``horizon``
days, move the origin forward by ``step``; the last fold ends at the last observation it is given, which
should be the last *complete* day (:func:`incomplete_tail` finds where an export's tail collapses).

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


def rolling_origin(
    dates, *, horizon: int = 28, folds: int = 3, step: int | None = None, min_train: int = 56
) -> list[Fold]:
    """Folds for a daily series with positions 0..n-1 (``dates`` sorted, gap-free)."""
    dates = pd.DatetimeIndex(pd.to_datetime(dates))
    step = step or horizon
    n = len(dates)
    need = min_train + horizon + step * (folds - 1)
    if n < need:
        raise TooShort(
            f"series has {n} days; {folds} folds of {horizon} days (step {step}) need at least {need} "
            f"including {min_train} training days"
        )
    frame = pd.DataFrame({"date": dates, "pos": np.arange(n)})
    out = []
    for k in range(folds):
        start = n - horizon - step * (folds - 1 - k)
        split = temporal_split(frame, "date", cutoff=dates[start])
        test = split.test["pos"].to_numpy()[:horizon]
        out.append(Fold(dates[start], split.train["pos"].to_numpy(), test))
    return out


@dataclass(frozen=True)
class TailCheck:
    """Where a daily series stops being complete. ``last_complete`` is the last day the backtest may use."""

    last_day: pd.Timestamp
    last_complete: pd.Timestamp
    trimmed_days: int
    reference_per_day: float  # the level the tail was compared with (mean/day of the weeks before it)
    tail_per_day: float  # mean/day over the trimmed days (nan when none)
    reason: str

    def as_metadata(self) -> dict:
        return {
            "last_day": str(self.last_day.date()),
            "last_complete_day": str(self.last_complete.date()),
            "trimmed_days": self.trimmed_days,
            "reference_per_day": round(self.reference_per_day, 3),
            "tail_per_day": round(self.tail_per_day, 3) if np.isfinite(self.tail_per_day) else None,
            "reason": self.reason,
        }


def _improbably_low(
    count: float, days: int, ref_count: float, ref_days: int, fraction: float, p_value: float
) -> bool:
    """``count`` over ``days`` is below ``fraction`` of the rate of ``ref_count`` over ``ref_days`` *and* the
    split of the two counts is improbable under one common rate (conditional binomial test), so neither a
    sparse shop's chance zeros nor a noisy reference period produce a cut."""
    from scipy.stats import binom

    total = count + ref_count
    if ref_count <= 0 or count / days >= fraction * ref_count / ref_days:
        return False
    return bool(binom.cdf(count, round(total), days / (days + ref_days)) < p_value)


def incomplete_tail(
    dates,
    y,
    *,
    fraction: float = 0.5,
    reference_weeks: int = 8,
    max_tail_days: int = 120,
    p_value: float = 0.001,
) -> TailCheck:
    """Find an incomplete tail of a shop-level daily series (an export that stops mid-stream, a partial last
    day).  A tail starting at day t is incomplete when its total is below ``fraction`` of the rate of the
    ``reference_weeks`` weeks before t *and* improbable against that period (conditional binomial test, so
    chance zeros of a sparse shop are not cut).  Among the starts within the last ``max_tail_days`` that pass,
    the cut is the most likely change point (two Poisson rates against one), moved back over the days that
    slide into the collapse (each itself low against the same weekday of the 4 weeks before it).  Only days
    before t are used to judge t.
    Series too short to judge are left whole."""
    dates = pd.DatetimeIndex(pd.to_datetime(dates))
    y = np.asarray(y, dtype=float)
    n = len(y)
    need = 7 * reference_weeks
    if n == 0:
        raise ValueError("incomplete_tail: empty series")
    if n < need + 1:
        return TailCheck(
            dates[-1],
            dates[-1],
            0,
            float("nan"),
            float("nan"),
            f"not checked: {n} days, the check needs more than {need}",
        )

    def reference(t: int) -> float:  # orders in the reference weeks before position t
        return float(y[t - need : t].sum())

    def change_llr(t: int) -> float:  # Poisson log-likelihood ratio: two rates around t vs one rate
        def ll(count, days):
            return count * np.log(count / days) - count if count > 0 else 0.0

        a, b = y[t:].sum(), reference(t)
        return ll(a, n - t) + ll(b, need) - ll(a + b, n - t + need)

    # every tail start that passes the test is a candidate; the cut goes where the drop is sharpest
    starts = [
        t
        for t in range(max(need, n - max_tail_days), n)
        if _improbably_low(y[t:].sum(), n - t, reference(t), need, fraction, p_value)
    ]
    start = max(starts, key=change_llr) if starts else n
    # the days sliding into the collapse belong to it too: extend back while a day is itself low against the
    # same weekday of the 4 weeks before it
    while n > start > need and _improbably_low(
        y[start - 1], 1, y[[start - 1 - 7 * k for k in range(1, 5)]].sum(), 4, fraction, 0.05
    ):
        start -= 1
    trimmed = n - start
    ref = reference(start) / need if start >= need else float("nan")
    tail = float(y[start:].mean()) if trimmed else float("nan")
    reason = (
        f"{trimmed} trailing days at {tail:.2f}/day against {ref:.2f}/day before them: an incomplete "
        "export tail, excluded from backtests"
        if trimmed
        else "complete to the last day"
    )
    return TailCheck(dates[-1], dates[start - 1], trimmed, ref, tail, reason)
