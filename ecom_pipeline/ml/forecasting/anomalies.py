"""Anomalies: days whose actual falls outside robust bounds of the forecast residuals.

The forecast is causal (uses only earlier days): the median of the same weekday over the previous
``weeks`` weeks, a seasonal forecast that a single spike cannot drag along.  Residuals r = y − ŷ are
scored against a rolling median/MAD of earlier residuals (robust z = (r − med) / (1.4826·MAD)); a day is
flagged when |z| > ``threshold``.  ``size`` is the residual in units of the series, ``direction`` is
``spike`` or ``drop``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ANOMALY_COLUMNS = ["series_id", "date", "actual", "expected", "lower", "upper", "residual", "robust_z",
                   "size", "direction"]


def seasonal_median_forecast(y, m: int = 7, weeks: int = 4) -> np.ndarray:
    """ŷ_t = median(y_{t-m}, y_{t-2m}, …, y_{t-weeks·m}); NaN until one season is available."""
    y = np.asarray(y, dtype=float)
    out = np.full(len(y), np.nan)
    for t in range(m, len(y)):
        lags = y[[t - k * m for k in range(1, weeks + 1) if t - k * m >= 0]]
        out[t] = np.median(lags)
    return out


def detect(dates, y, *, threshold: float = 3.5, m: int = 7, weeks: int = 4, window: int = 56,
           min_history: int = 28, min_scale: float = 1.0):
    """Per-day scores for one series: a DataFrame with every day (``is_anomaly`` marks the flagged ones).

    ``min_scale`` floors the residual scale (in series units) so that a run of identical residuals (MAD 0,
    common in sparse count series) does not make every tiny deviation an anomaly."""
    y = np.asarray(y, dtype=float)
    yhat = seasonal_median_forecast(y, m, weeks)
    r = y - yhat
    s = pd.Series(r)
    prev = s.shift(1)  # bounds from earlier residuals only
    med = prev.rolling(window, min_periods=min_history).median()
    mad = prev.rolling(window, min_periods=min_history).apply(lambda a: np.median(np.abs(a - np.median(a))), raw=True)
    scale = np.maximum(1.4826 * mad.to_numpy(), min_scale)
    z = (r - med.to_numpy()) / scale
    lower = yhat + med.to_numpy() - threshold * scale
    upper = yhat + med.to_numpy() + threshold * scale
    out = pd.DataFrame({"date": pd.to_datetime(dates), "actual": y, "expected": yhat, "lower": lower,
                        "upper": upper, "residual": r, "robust_z": z})
    out["is_anomaly"] = np.abs(np.nan_to_num(z)) > threshold
    out["size"] = out["residual"]
    out["direction"] = np.where(out["residual"] > 0, "spike", "drop")
    return out


def detect_many(daily: pd.DataFrame, series_ids, value: str = "orders", **kw) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(anomalies, summary) for the given series of a long daily frame; summary has the flag rate."""
    found, summary = [], []
    for sid in series_ids:
        g = daily[daily["series_id"] == sid].sort_values("date")
        if g.empty:
            summary.append({"series_id": sid, "days_scored": 0, "anomalies": 0, "flag_rate": 0.0,
                            "note": "no data"})
            continue
        scores = detect(g["date"], g[value], **kw)
        scored = scores["robust_z"].notna()
        flags = scores[scores["is_anomaly"]].assign(series_id=sid)
        found.append(flags[ANOMALY_COLUMNS])
        n = int(scored.sum())
        summary.append({"series_id": sid, "days_scored": n, "anomalies": len(flags),
                        "flag_rate": len(flags) / n if n else 0.0,
                        "note": "" if n else "too short: fewer days than the minimal history"})
    anomalies = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=ANOMALY_COLUMNS)
    return anomalies, pd.DataFrame(summary)
