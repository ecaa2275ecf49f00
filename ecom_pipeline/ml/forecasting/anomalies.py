"""Anomalies: days whose actual falls outside robust bounds of the forecast residuals.

The forecast is causal (uses only earlier days): the median of the same weekday over the previous
``weeks`` weeks, a seasonal forecast that a single spike cannot drag along.  Residuals r = y − ŷ are
scored against a rolling median/MAD of earlier residuals (robust z = (r − med) / (1.4826·MAD)); a day is
flagged when |z| > ``threshold``.  ``size`` is the residual in units of the series, ``direction`` is
``spike`` or ``drop``.

The expected value goes through the serving gate like every served model (:func:`gate_expected`): the
seasonal median is the candidate, the seasonal naive forecast (same weekday last week) the baseline, compared
by one-step-ahead MAE over the series' days with a moving-block paired bootstrap.  The median serves only when
it is significantly better; otherwise the seasonal naive gives the expected values.  ``expected_model`` names
the model behind each row.  (The 28-day forecasts of ``serving.forecasts`` cannot be used here: they cover
only future days, and the served forecasters have no causal one-step history to compare against.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ANOMALY_COLUMNS = [
    "series_id",
    "date",
    "actual",
    "expected",
    "lower",
    "upper",
    "residual",
    "robust_z",
    "size",
    "direction",
    "expected_model",
]
GATE_TASK = "anomaly_expected"
CANDIDATE = "seasonal_median_4w"
BASELINE = "seasonal_naive"


def seasonal_median_forecast(y, m: int = 7, weeks: int = 4) -> np.ndarray:
    """ŷ_t = median(y_{t-m}, y_{t-2m}, …, y_{t-weeks·m}); NaN until one season is available."""
    y = np.asarray(y, dtype=float)
    out = np.full(len(y), np.nan)
    for t in range(m, len(y)):
        lags = y[[t - k * m for k in range(1, weeks + 1) if t - k * m >= 0]]
        out[t] = np.median(lags)
    return out


def seasonal_naive_forecast(y, m: int = 7) -> np.ndarray:
    """ŷ_t = y_{t-m}; NaN for the first season."""
    y = np.asarray(y, dtype=float)
    out = np.full(len(y), np.nan)
    out[m:] = y[:-m] if len(y) > m else out[m:]
    return out


def expected_values(y, model: str, m: int = 7, weeks: int = 4) -> np.ndarray:
    if model == CANDIDATE:
        return seasonal_median_forecast(y, m, weeks)
    if model == BASELINE:
        return seasonal_naive_forecast(y, m)
    raise ValueError(f"unknown expected-value model {model!r}; expected {CANDIDATE!r} or {BASELINE!r}")


def gate_expected(series_id: str, y, *, m: int = 7, weeks: int = 4, min_history: int = 28):
    """(decision, comparison or None): the serving gate on which model gives the expected values of one
    series: one-step-ahead
    absolute errors of both on the days after ``min_history`` (where the detector scores), paired
    moving-block bootstrap (blocks of one season)."""
    from ecom_pipeline.ml.evaluation import paired_bootstrap
    from ecom_pipeline.ml.serving_gate import decide

    y = np.asarray(y, dtype=float)
    cand, base = expected_values(y, CANDIDATE, m, weeks), expected_values(y, BASELINE, m, weeks)
    days = np.arange(len(y)) >= min_history
    ok = days & np.isfinite(cand) & np.isfinite(base)
    comparison = None
    if ok.sum() >= 2 * m:
        comparison = paired_bootstrap(
            np.abs(y - cand)[ok], np.abs(y - base)[ok], metric="mae", higher_is_better=False, block=m
        )
    return decide(GATE_TASK, series_id, CANDIDATE, BASELINE, comparison, metric="mae"), comparison


def detect(
    dates,
    y,
    *,
    threshold: float = 3.5,
    m: int = 7,
    weeks: int = 4,
    window: int = 56,
    min_history: int = 28,
    min_scale: float = 1.0,
    expected_model: str = CANDIDATE,
):
    """Per-day scores for one series: a DataFrame with every day (``is_anomaly`` marks the flagged ones).

    ``min_scale`` floors the residual scale (in series units) so that a run of identical residuals (MAD 0,
    common in sparse count series) does not make every tiny deviation an anomaly."""
    y = np.asarray(y, dtype=float)
    yhat = expected_values(y, expected_model, m, weeks)
    r = y - yhat
    s = pd.Series(r)
    prev = s.shift(1)  # bounds from earlier residuals only
    med = prev.rolling(window, min_periods=min_history).median()
    mad = prev.rolling(window, min_periods=min_history).apply(
        lambda a: np.median(np.abs(a - np.median(a))), raw=True
    )
    scale = np.maximum(1.4826 * mad.to_numpy(), min_scale)
    z = (r - med.to_numpy()) / scale
    lower = yhat + med.to_numpy() - threshold * scale
    upper = yhat + med.to_numpy() + threshold * scale
    out = pd.DataFrame(
        {
            "date": pd.to_datetime(dates),
            "actual": y,
            "expected": yhat,
            "lower": lower,
            "upper": upper,
            "residual": r,
            "robust_z": z,
        }
    )
    out["is_anomaly"] = np.abs(np.nan_to_num(z)) > threshold
    out["size"] = out["residual"]
    out["direction"] = np.where(out["residual"] > 0, "spike", "drop")
    out["expected_model"] = expected_model
    return out


def detect_many(
    daily: pd.DataFrame, series_ids, value: str = "orders", **kw
) -> tuple[pd.DataFrame, pd.DataFrame, list]:
    """(anomalies, summary, gate) for the given series of a long daily frame: per series the gate picks
    the expected-value model (:func:`gate_expected`), then the days are scored against it; summary has the
    flag rate and the model, gate has a (decision, comparison) per series with data."""
    gate_kw = {k: kw[k] for k in ("m", "weeks", "min_history") if k in kw}
    found, summary, gate = [], [], []
    for sid in series_ids:
        g = daily[daily["series_id"] == sid].sort_values("date")
        if g.empty:
            summary.append(
                {
                    "series_id": sid,
                    "days_scored": 0,
                    "anomalies": 0,
                    "flag_rate": 0.0,
                    "expected_model": "",
                    "note": "no data",
                }
            )
            continue
        decision, comparison = gate_expected(sid, g[value].to_numpy(), **gate_kw)
        gate.append((decision, comparison))
        scores = detect(g["date"], g[value], expected_model=decision.served, **kw)
        scored = scores["robust_z"].notna()
        flags = scores[scores["is_anomaly"]].assign(series_id=sid)
        found.append(flags[ANOMALY_COLUMNS])
        n = int(scored.sum())
        summary.append(
            {
                "series_id": sid,
                "days_scored": n,
                "anomalies": len(flags),
                "flag_rate": len(flags) / n if n else 0.0,
                "expected_model": decision.served,
                "note": "" if n else "too short: fewer days than the minimal history",
            }
        )
    anomalies = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=ANOMALY_COLUMNS)
    return anomalies, pd.DataFrame(summary), gate
