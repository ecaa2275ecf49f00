"""The one time-based split every model uses: train strictly before a cutoff, test from the cutoff on.

Random splits leak the future into training for every model in this project (forecasts, sentiment drift,
repurchase, recommendations), so there is deliberately no random splitter here.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class TemporalSplit:
    cutoff: pd.Timestamp
    train: pd.DataFrame
    test: pd.DataFrame


def cutoff_at_fraction(times: pd.Series, test_fraction: float) -> pd.Timestamp:
    """The timestamp that leaves roughly ``test_fraction`` of the rows at or after it."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    t = pd.to_datetime(times.dropna())
    if t.empty:
        raise ValueError("cannot split: no timestamps")
    ordered = t.sort_values().reset_index(drop=True)
    position = min(len(ordered) - 1, int(round(len(ordered) * (1 - test_fraction))))
    return pd.Timestamp(ordered.iloc[position])


def temporal_split(
    df: pd.DataFrame, time_col: str, *, cutoff: pd.Timestamp | str | None = None, test_fraction: float = 0.2
) -> TemporalSplit:
    """Rows with ``time_col < cutoff`` train, the rest test; rows without a time are refused, not guessed."""
    if time_col not in df.columns:
        raise KeyError(f"temporal_split: no column {time_col!r}")
    times = pd.to_datetime(df[time_col])
    if times.isna().any():
        raise ValueError(f"temporal_split: {int(times.isna().sum())} rows have no {time_col}")
    cut = pd.Timestamp(cutoff) if cutoff is not None else cutoff_at_fraction(times, test_fraction)
    is_train = times < cut
    return TemporalSplit(cut, df.loc[is_train], df.loc[~is_train])


def rolling_origin_splits(
    df: pd.DataFrame, time_col: str, *, n_folds: int, window_fraction: float
) -> list[TemporalSplit]:
    """``n_folds`` consecutive validation windows at the end of ``df``'s time, each ``window_fraction`` of its
    rows, oldest first; each fold trains strictly before its window (so earlier folds train on less).  The
    last fold is ``temporal_split(df, test_fraction=window_fraction)``.  For choosing settings on more than
    one window without reading a test set."""
    if n_folds < 1 or not 0 < n_folds * window_fraction < 1:
        raise ValueError(
            f"rolling_origin_splits: need n_folds >= 1 and n_folds x window_fraction in (0, 1), got "
            f"{n_folds} x {window_fraction}"
        )
    times = pd.to_datetime(df[time_col])
    cutoffs = [cutoff_at_fraction(times, k * window_fraction) for k in range(n_folds, 0, -1)]
    folds = []
    for start, end in zip(cutoffs, cutoffs[1:] + [None]):
        split = temporal_split(df, time_col, cutoff=start)
        window = split.test if end is None else split.test[times.loc[split.test.index] < end]
        folds.append(TemporalSplit(start, split.train, window))
    return folds
