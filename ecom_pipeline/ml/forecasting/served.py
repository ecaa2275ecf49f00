"""The served 28-day forecasts: every forecaster's predictions gated per series against its best baseline.

Framework-free work behind the ``serving/forecasts`` asset: takes the backtest/future prediction frames and
the daily series, returns the served rows and the gate (decisions and comparisons).
"""

from __future__ import annotations

import pandas as pd

SERVED_COLUMNS = [
    "series_id",
    "model",
    "date",
    "step",
    "yhat",
    "lo",
    "hi",
    "interval",
    "backtest_mase",
    "baseline_mase",
    "is_best",
    "best_model",
    "baseline_model",
]


def gate_and_serve(
    predictions: list[pd.DataFrame],
    daily: pd.DataFrame,
    *,
    task: str,
    value: str,
    recent_days: int,
    min_recent_mean: float,
):
    """``(served rows, gate)``; ``None`` when there are no predictions at all.

    Adds the SARIMA+LSTM ensemble (mean of point forecasts and of interval bounds) as a candidate, gates every
    series on the complete days (:func:`~ecom_pipeline.ml.forecasting.selection.gate_series`) and keeps the
    future rows of the model each series' decision serves, with its backtest MASE and its baseline's.
    """
    from ecom_pipeline.ml.forecasting import models as fm
    from ecom_pipeline.ml.forecasting.selection import gate_series, served_forecasts
    from ecom_pipeline.ml.forecasting.series import complete_part

    allp = pd.concat(
        [p for p in predictions if len(p)] or [pd.DataFrame(columns=fm.PRED_COLUMNS)], ignore_index=True
    )
    if allp.empty:
        return None
    allp["date"] = pd.to_datetime(allp["date"])
    allp["origin"] = pd.to_datetime(allp["origin"])
    w = fm.ensemble(allp, ("sarima", "lstm"))
    if len(w):
        allp = pd.concat([allp, w], ignore_index=True)
    complete = complete_part(daily, value)
    gate = gate_series(
        allp, complete, task=task, value=value, recent_days=recent_days, min_recent_mean=min_recent_mean
    )
    summary = fm.summarise(fm.backtest_metrics(allp, complete))
    mase = summary[summary.metric == "mase"][["series_id", "model", "value"]].rename(
        columns={"value": "backtest_mase"}
    )
    fut = served_forecasts(allp[allp.kind == "future"], gate.decisions).merge(
        mase, on=["series_id", "model"], how="left"
    )
    base = pd.DataFrame(
        [(d.scope, d.baseline, d.baseline_value) for d in gate.decisions],
        columns=["series_id", "baseline_model", "baseline_mase"],
    )
    fut = fut.merge(base, on="series_id", how="left")
    fut["is_best"] = True  # kept for readers of the old schema: every row is the series' served model
    fut["best_model"] = fut["model"]
    fut["interval"] = 0.8
    return fut[SERVED_COLUMNS].sort_values(["series_id", "model", "date"]).reset_index(drop=True), gate
