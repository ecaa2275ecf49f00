"""Which forecast serves each series: every forecaster against the *best baseline* (seasonal naive or a
``statsforecast`` peer) on the same backtest days, with a paired block-bootstrap interval, through the one
serving gate (:mod:`ecom_pipeline.ml.serving_gate`).

Per backtest day the losses are the terms of the shared metrics (:mod:`.metrics`): the absolute error scaled
by the fold's MASE scale (in-sample seasonal-naive MAE of the history before the fold's origin), the absolute
error, and the sMAPE term; their mean over a series' backtest days is its MASE / MAE / sMAPE (folds have equal
length).  Days are resampled in weekly blocks (autocorrelation); the mean over series resamples series.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ecom_pipeline.ml.evaluation import Comparison, paired_bootstrap
from ecom_pipeline.ml.forecasting.metrics import mase_scale
from ecom_pipeline.ml.forecasting.models import BASELINES
from ecom_pipeline.ml.serving_gate import Decision, decide, degenerate_forecast

LOSSES = ("mase", "mae", "smape")  # per-day decomposable metrics: each gets a paired interval
GATE_METRIC = "mase"


def daily_losses(
    predictions: pd.DataFrame, daily: pd.DataFrame, value: str = "orders", season: int = 7
) -> pd.DataFrame:
    """(series_id, model, origin, date, mase, mae, smape) per backtest day of every model."""
    bt = predictions[predictions["kind"] == "backtest"].copy()
    if bt.empty:
        return pd.DataFrame(columns=["series_id", "model", "origin", "date", *LOSSES])
    bt["origin"] = pd.to_datetime(bt["origin"])
    bt["date"] = pd.to_datetime(bt["date"])
    hist = daily[daily["series_id"].isin(set(bt["series_id"]))].assign(
        date=lambda d: pd.to_datetime(d["date"])
    )
    scales = {}
    for sid, g in hist.sort_values("date").groupby("series_id"):
        for origin in bt.loc[bt["series_id"] == sid, "origin"].unique():
            scales[(sid, pd.Timestamp(origin))] = mase_scale(
                g.loc[g["date"] < origin, value].to_numpy(), season
            )
    y, yhat = bt["actual"].astype(float).to_numpy(), bt["yhat"].astype(float).to_numpy()
    err = np.abs(y - yhat)
    den = np.abs(y) + np.abs(yhat)
    scale = np.array([scales[(s, pd.Timestamp(o))] for s, o in zip(bt["series_id"], bt["origin"])])
    bt["mase"] = err / scale
    bt["mae"] = err
    bt["smape"] = 100 * np.divide(2 * err, den, out=np.zeros_like(den), where=den > 0)
    return bt[["series_id", "model", "origin", "date", *LOSSES]].reset_index(drop=True)


@dataclass
class SeriesGate:
    comparisons: pd.DataFrame  # scope (series id or "mean_over_series"), model, baseline, Comparison per loss
    decisions: list[Decision]
    best_baseline: dict[str, str]  # series -> its best baseline
    skipped: dict[str, str] | None = None  # series -> why no decision (and so no serving rows)


def _paired(losses: pd.DataFrame, model: str, baseline: str, loss: str, block: int) -> Comparison:
    w = losses[losses["model"].isin([model, baseline])].pivot_table(
        index=["origin", "date"], columns="model", values=loss
    )
    w = w.dropna()
    return paired_bootstrap(
        w[model].to_numpy(), w[baseline].to_numpy(), metric=loss, higher_is_better=False, block=block
    )


def gate_series(
    predictions: pd.DataFrame,
    daily: pd.DataFrame,
    *,
    task: str,
    value: str = "orders",
    baselines: tuple[str, ...] = BASELINES,
    season: int = 7,
    block: int = 7,
    recent_days: int = 28,
    min_recent_mean: float = 0.5,
) -> SeriesGate:
    """Per series: the best baseline (lowest backtest MASE among ``baselines``), every other model compared
    with it (intervals for each loss), and the gate decision between the best candidate and that baseline.
    The candidate's future forecast is refused when degenerate against the last ``recent_days`` actuals."""
    losses = daily_losses(predictions, daily, value, season)
    fut = predictions[predictions["kind"] == "future"]
    hist = daily.assign(date=pd.to_datetime(daily["date"])).sort_values("date")
    rows, decisions, best_base, skipped = [], [], {}, {}
    per_series_mase = losses.groupby(["series_id", "model"])["mase"].mean()
    for sid, g in losses.groupby("series_id"):
        means = per_series_mase.loc[sid]
        has_future = set(fut.loc[fut["series_id"] == sid, "model"])
        base_means = means[
            means.index.isin(baselines) & means.index.isin(has_future)
        ]  # it must be able to serve
        if base_means.empty:
            skipped[sid] = "no baseline with both a backtest and a future forecast: nothing served"
            continue
        base = str(base_means.idxmin())
        best_base[sid] = base
        candidates = [m for m in means.index if m not in baselines]
        comps = {}
        for model in candidates:
            for loss in LOSSES:
                c = _paired(g, model, base, loss, block)
                rows.append({"scope": sid, "model": model, "baseline": base, "loss": loss, "comparison": c})
                if loss == GATE_METRIC:
                    comps[model] = c
        if not comps:
            decisions.append(decide(task, sid, "none", base, None, metric=GATE_METRIC))
            continue
        cand = min(comps, key=lambda m: comps[m].candidate_value)
        yhat = fut[(fut["series_id"] == sid) & (fut["model"] == cand)]["yhat"]
        recent = hist[hist["series_id"] == sid][value].to_numpy()[-recent_days:]
        refusal = (
            degenerate_forecast(yhat, recent, min_recent_mean=min_recent_mean)
            if len(yhat)
            else "no future forecast"
        )
        decisions.append(decide(task, sid, cand, base, comps[cand], refusal=refusal))
    # mean over series: each model against the baseline with the lowest mean MASE over the same series
    if len(per_series_mase):
        wide = per_series_mase.unstack("model")
        for loss in LOSSES:
            per = losses.groupby(["series_id", "model"])[loss].mean().unstack("model")
            for model in [m for m in wide.columns if m not in baselines]:
                both = per[[model, *[b for b in baselines if b in per.columns]]].dropna()
                if both.empty or both.shape[1] < 2:
                    continue
                peer = str(wide.loc[both.index, [b for b in baselines if b in both.columns]].mean().idxmin())
                c = paired_bootstrap(
                    both[model].to_numpy(), both[peer].to_numpy(), metric=loss, higher_is_better=False
                )
                rows.append(
                    {
                        "scope": "mean_over_series",
                        "model": model,
                        "baseline": peer,
                        "loss": loss,
                        "comparison": c,
                    }
                )
    return SeriesGate(
        pd.DataFrame(rows, columns=["scope", "model", "baseline", "loss", "comparison"]),
        decisions,
        best_base,
        skipped,
    )


def served_forecasts(future: pd.DataFrame, decisions: list[Decision]) -> pd.DataFrame:
    """The future rows of the model each series' decision serves (and nothing else)."""
    served = pd.DataFrame([(d.scope, d.served) for d in decisions], columns=["series_id", "model"])
    return future.merge(served, on=["series_id", "model"], how="inner")
