"""Forecast metrics — the one implementation every forecaster in the project is scored with.

* MASE: mean absolute error over the in-sample MAE of the seasonal-naive forecast with period ``m`` (on the
  training series); < 1 beats seasonal naive in-sample.
* sMAPE: 100 · mean(2|y−ŷ| / (|y|+|ŷ|)), with 0/0 counted as 0 (exact forecast of a zero day).
* RMSE.
* coverage: share of actuals inside [lo, hi].
"""

from __future__ import annotations

import numpy as np


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=float)


def mae(y, yhat) -> float:
    return float(np.mean(np.abs(_arr(y) - _arr(yhat))))


def rmse(y, yhat) -> float:
    return float(np.sqrt(np.mean((_arr(y) - _arr(yhat)) ** 2)))


def smape(y, yhat) -> float:
    y, yhat = _arr(y), _arr(yhat)
    den = np.abs(y) + np.abs(yhat)
    ratio = np.divide(2 * np.abs(y - yhat), den, out=np.zeros_like(den), where=den > 0)
    return float(100 * np.mean(ratio))


def mase_scale(train, m: int = 7) -> float:
    """In-sample MAE of the seasonal-naive forecast; falls back to lag 1, then to 1.0 for a flat series."""
    train = _arr(train)
    for lag in (m, 1):
        if len(train) > lag:
            scale = float(np.mean(np.abs(train[lag:] - train[:-lag])))
            if scale > 0:
                return scale
    return 1.0


def mase(y, yhat, train, m: int = 7) -> float:
    return mae(y, yhat) / mase_scale(train, m)


def coverage(y, lo, hi) -> float:
    y, lo, hi = _arr(y), _arr(lo), _arr(hi)
    return float(np.mean((y >= lo) & (y <= hi)))


def all_metrics(y, yhat, lo, hi, train, m: int = 7) -> dict[str, float]:
    return {
        "mase": mase(y, yhat, train, m),
        "smape": smape(y, yhat),
        "rmse": rmse(y, yhat),
        "mae": mae(y, yhat),
        "coverage": coverage(y, lo, hi),
    }
