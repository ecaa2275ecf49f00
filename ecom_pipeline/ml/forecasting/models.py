"""Per-series forecasters: the baselines (seasonal naive and the ``statsforecast`` peers AutoETS, AutoTheta,
AutoARIMA and MSTL, each refitted on every fold's training window) and SARIMA (statsmodels SARIMAX, order
chosen by AIC over a small grid on data before the first backtest origin), run in parallel across series.

Every forecaster returns ``(yhat, lo, hi)`` for the next ``horizon`` days with a central ``1 - alpha``
prediction interval; counts are clipped at zero.
"""

from __future__ import annotations

import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from ecom_pipeline.ml.forecasting.backtest import TooShort, rolling_origin
from ecom_pipeline.ml.forecasting.metrics import all_metrics

# (p, d, q) x (P, D, Q, s): small, weekly seasonal; trend constant when undifferenced.
DEFAULT_GRID: tuple[tuple[tuple[int, int, int], tuple[int, int, int, int]], ...] = (
    ((1, 0, 0), (1, 0, 0, 7)),
    ((1, 0, 1), (1, 0, 0, 7)),
    ((1, 0, 1), (1, 0, 1, 7)),
    ((0, 1, 1), (0, 1, 1, 7)),
    ((1, 1, 1), (0, 1, 1, 7)),
    ((2, 0, 0), (1, 0, 1, 7)),
)

PRED_COLUMNS = ["series_id", "model", "kind", "origin", "date", "step", "actual", "yhat", "lo", "hi"]


def seasonal_naive(train, horizon: int, m: int = 7, alpha: float = 0.2):
    """Repeat the last season; interval from the empirical quantiles of in-sample seasonal differences,
    widened by sqrt(number of seasons ahead)."""
    train = np.asarray(train, dtype=float)
    if len(train) < m:
        raise TooShort(f"seasonal naive needs at least one season ({m} days), got {len(train)}")
    last = train[-m:]
    yhat = np.array([last[i % m] for i in range(horizon)])
    resid = train[m:] - train[:-m]
    if len(resid) >= 2:
        qlo, qhi = np.quantile(resid, [alpha / 2, 1 - alpha / 2])
    else:
        qlo = qhi = 0.0
    k = np.sqrt(np.arange(horizon) // m + 1)
    return yhat, np.maximum(yhat + qlo * k, 0), np.maximum(yhat + qhi * k, 0)


# The baselines every forecaster is compared with; the best of them per series is "the baseline".
PEERS = ("auto_ets", "auto_theta", "auto_arima", "mstl")
BASELINES = ("seasonal_naive",) + PEERS


def peer_forecast(name: str, train, horizon: int, m: int = 7, alpha: float = 0.2):
    """A ``statsforecast`` model fitted on ``train`` (C++/numpy implementations: nothing is downloaded or
    JIT-compiled); returns (yhat, lo, hi) clipped at zero with the central ``1 - alpha`` interval."""
    from statsforecast.models import MSTL, AutoARIMA, AutoETS, AutoTheta

    train = np.asarray(train, dtype=float)
    if len(train) < 2 * m + 1:
        raise TooShort(f"{name} needs at least {2 * m + 1} days, got {len(train)}")
    model = {
        "auto_ets": lambda: AutoETS(season_length=m),
        "auto_theta": lambda: AutoTheta(season_length=m),
        "auto_arima": lambda: AutoARIMA(season_length=m),
        "mstl": lambda: MSTL(season_length=m),
    }[name]()
    level = round(100 * (1 - alpha))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model.forecast(y=train, h=horizon, level=[level])
    return tuple(
        np.maximum(np.asarray(out[k], dtype=float), 0) for k in ("mean", f"lo-{level}", f"hi-{level}")
    )


def _sarimax(train, order, seasonal_order):
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    trend = "c" if order[1] == 0 and seasonal_order[1] == 0 else "n"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SARIMAX(
            np.asarray(train, dtype=float),
            order=order,
            seasonal_order=seasonal_order,
            trend=trend,
            enforce_stationarity=False,
            enforce_invertibility=False,
        )
        return model.fit(disp=False, maxiter=60)


def select_order(train, grid=DEFAULT_GRID):
    """(order, seasonal_order, aic, table) of the lowest-AIC fit; failing fits are skipped."""
    table = []
    for order, sorder in grid:
        try:
            res = _sarimax(train, order, sorder)
            aic = float(res.aic)
        except Exception as exc:  # noqa: BLE001 - a non-converging candidate is simply not chosen
            aic = float("nan")
            table.append((order, sorder, aic, str(exc)[:80]))
            continue
        table.append((order, sorder, aic, ""))
    ok = [t for t in table if np.isfinite(t[2])]
    if not ok:
        raise RuntimeError("no SARIMA candidate could be fitted")
    best = min(ok, key=lambda t: t[2])
    return best[0], best[1], best[2], table


def sarima_forecast(train, horizon: int, order, seasonal_order, alpha: float = 0.2, result=None):
    res = result if result is not None else _sarimax(train, order, seasonal_order)
    fc = res.get_forecast(horizon)
    mean = np.asarray(fc.predicted_mean, dtype=float)
    ci = np.asarray(fc.conf_int(alpha=alpha), dtype=float)
    return np.maximum(mean, 0), np.maximum(ci[:, 0], 0), np.maximum(ci[:, 1], 0)


@dataclass
class SeriesConfig:
    horizon: int = 28
    folds: int = 3
    step: int = 28
    min_train: int = 56
    max_train_days: int = 365  # SARIMA sees at most the last year before each origin (speed)
    alpha: float = 0.2
    season: int = 7
    grid: tuple = DEFAULT_GRID
    models: tuple[str, ...] = ("seasonal_naive", "sarima") + PEERS


@dataclass
class SeriesResult:
    series_id: str
    predictions: pd.DataFrame
    metrics: pd.DataFrame  # series_id, model, fold, metric, value
    order: tuple | None = None
    seasonal_order: tuple | None = None
    aic: float | None = None
    fit_seconds: float = 0.0
    skip_reason: str | None = None
    notes: list[str] = field(default_factory=list)
    model_seconds: dict = field(default_factory=dict)  # fit+forecast seconds per model over all folds


def _rows(series_id, model, kind, origin, dates, actual, yhat, lo, hi) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "series_id": series_id,
            "model": model,
            "kind": kind,
            "origin": origin,
            "date": dates,
            "step": np.arange(1, len(dates) + 1),
            "actual": actual,
            "yhat": yhat,
            "lo": lo,
            "hi": hi,
        }
    )


def run_series(series_id: str, dates, y, cfg: SeriesConfig) -> SeriesResult:
    """Backtest every configured model on one series and forecast ``horizon`` days past its end."""
    dates = pd.DatetimeIndex(pd.to_datetime(dates))
    y = np.asarray(y, dtype=float)
    empty = SeriesResult(
        series_id,
        pd.DataFrame(columns=PRED_COLUMNS),
        pd.DataFrame(columns=["series_id", "model", "fold", "metric", "value"]),
    )
    if len(y) == 0:
        empty.skip_reason = "empty series"
        return empty
    if np.all(y == 0):
        empty.skip_reason = "series is all zeros"
        return empty
    try:
        folds = rolling_origin(
            dates, horizon=cfg.horizon, folds=cfg.folds, step=cfg.step, min_train=cfg.min_train
        )
    except TooShort as exc:
        empty.skip_reason = str(exc)
        return empty
    t0 = time.perf_counter()
    order = sorder = aic = None
    notes = []
    if "sarima" in cfg.models:
        first = folds[0].train_idx[-cfg.max_train_days :]
        try:
            order, sorder, aic, _ = select_order(y[first], cfg.grid)
        except RuntimeError as exc:
            notes.append(f"sarima skipped: {exc}")
    preds, mets = [], []
    seconds = {"sarima_order_selection": time.perf_counter() - t0} if order is not None else {}
    future_dates = pd.date_range(dates[-1] + pd.Timedelta(days=1), periods=cfg.horizon, freq="D")
    for fi, fold in enumerate(folds + [None]):
        train_idx = fold.train_idx if fold is not None else np.arange(len(y))
        train = y[train_idx]
        kind = "backtest" if fold is not None else "future"
        fdates = dates[fold.test_idx] if fold is not None else future_dates
        origin = fdates[0]
        actual = y[fold.test_idx] if fold is not None else np.full(cfg.horizon, np.nan)
        outputs = {}
        if "seasonal_naive" in cfg.models:
            outputs["seasonal_naive"] = seasonal_naive(train, len(fdates), cfg.season, cfg.alpha)
        if "sarima" in cfg.models and order is not None:
            t1 = time.perf_counter()
            try:
                outputs["sarima"] = sarima_forecast(
                    train[-cfg.max_train_days :], len(fdates), order, sorder, cfg.alpha
                )
            except Exception as exc:  # noqa: BLE001
                notes.append(f"sarima fold {fi} failed: {str(exc)[:80]}")
            seconds["sarima"] = seconds.get("sarima", 0.0) + time.perf_counter() - t1
        for peer in (p for p in PEERS if p in cfg.models):
            t1 = time.perf_counter()
            try:
                outputs[peer] = peer_forecast(
                    peer, train[-cfg.max_train_days :], len(fdates), cfg.season, cfg.alpha
                )
            except Exception as exc:  # noqa: BLE001 - a peer that cannot fit this fold is reported, not fatal
                notes.append(f"{peer} fold {fi} failed: {str(exc)[:80]}")
            seconds[peer] = seconds.get(peer, 0.0) + time.perf_counter() - t1
        for model, (yhat, lo, hi) in outputs.items():
            preds.append(_rows(series_id, model, kind, origin, fdates, actual, yhat, lo, hi))
            if fold is not None:
                for metric, value in all_metrics(actual, yhat, lo, hi, train, cfg.season).items():
                    mets.append((series_id, model, fi, metric, value))
    return SeriesResult(
        series_id,
        pd.concat(preds, ignore_index=True),
        pd.DataFrame(mets, columns=["series_id", "model", "fold", "metric", "value"]),
        order,
        sorder,
        aic,
        time.perf_counter() - t0,
        None,
        notes,
        seconds,
    )


def _init_worker():
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"  # env exception: pins worker threads (a library variable, not a setting)


def _run_packed(args):
    return run_series(*args)


def run_many(
    series: dict[str, tuple], cfg: SeriesConfig, *, workers: int = 2, progress=None
) -> list[SeriesResult]:
    """``series``: id -> (dates, y).  Parallel over series in a process pool of at most ``workers`` (cap 2:
    the reference machine has two cores and each SARIMAX fit holds its state-space matrices in memory)."""
    import multiprocessing as mp

    workers = max(1, min(int(workers), 2, len(series)))
    tasks = [(sid, d, y, cfg) for sid, (d, y) in series.items()]
    results = []
    if workers == 1:
        for i, t in enumerate(tasks, 1):
            results.append(run_series(*t))
            if progress:
                progress(i, len(tasks), results[-1])
        return results
    from concurrent.futures.process import BrokenProcessPool

    try:
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_init_worker
        ) as pool:
            for i, res in enumerate(pool.map(_run_packed, tasks), 1):
                results.append(res)
                if progress:
                    progress(i, len(tasks), res)
    except BrokenProcessPool:
        # e.g. a __main__ script without an import guard cannot be re-imported by spawned workers
        done = {r.series_id for r in results}
        for t in tasks:
            if t[0] not in done:
                results.append(run_series(*t))
                results[-1].notes.append("process pool broke: fitted sequentially")
                if progress:
                    progress(len(results), len(tasks), results[-1])
    return results


def summarise(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean over folds: one row per (series_id, model, metric)."""
    if metrics.empty:
        return pd.DataFrame(columns=["series_id", "model", "metric", "value"])
    return metrics.groupby(["series_id", "model", "metric"], as_index=False)["value"].mean()


def ensemble(predictions: pd.DataFrame, members=("sarima", "lstm"), name: str = "ensemble") -> pd.DataFrame:
    """Mean of the members' point forecasts and interval bounds, on the (series, kind, origin, day) rows
    every member forecast; empty when a member is missing."""
    sub = predictions[predictions["model"].isin(members)]
    if set(members) - set(sub["model"]):
        return pd.DataFrame(columns=PRED_COLUMNS)
    keys = ["series_id", "kind", "origin", "date", "step"]
    w = sub.groupby(keys).agg(
        actual=("actual", "first"),
        yhat=("yhat", "mean"),
        lo=("lo", "mean"),
        hi=("hi", "mean"),
        n=("model", "count"),
    )
    return w[w["n"] == len(members)].drop(columns="n").reset_index().assign(model=name)[PRED_COLUMNS]


def backtest_metrics(
    predictions: pd.DataFrame, daily: pd.DataFrame, value: str = "orders", season: int = 7
) -> pd.DataFrame:
    """Per-fold metrics of stored backtest predictions (any model), each scored against the series' history
    before its origin from the long daily table: (series_id, model, fold, metric, value), fold = origin."""
    bt = predictions[predictions["kind"] == "backtest"]
    history = {
        sid: g.assign(date=pd.to_datetime(g["date"])).sort_values("date")
        for sid, g in daily[daily["series_id"].isin(set(bt["series_id"]))].groupby("series_id")
    }
    rows = []
    for (sid, model, origin), g in bt.groupby(["series_id", "model", "origin"]):
        h = history.get(sid)
        train = h[h["date"] < pd.Timestamp(origin)][value] if h is not None else []
        for metric, v in all_metrics(g["actual"], g["yhat"], g["lo"], g["hi"], train, season).items():
            rows.append((sid, model, str(origin), metric, v))
    return pd.DataFrame(rows, columns=["series_id", "model", "fold", "metric", "value"])


def choose_best(
    summary: pd.DataFrame, metric: str = "mase", baseline: str = "seasonal_naive"
) -> pd.DataFrame:
    """Per series, the model with the lowest backtest ``metric`` (ties go to the baseline)."""
    s = summary[summary["metric"] == metric].copy()
    if s.empty:
        return pd.DataFrame(columns=["series_id", "best_model", "best_value", "baseline_value"])
    s["is_base"] = s["model"] != baseline  # baseline sorts first on ties
    s = s.sort_values(["series_id", "value", "is_base"])
    best = s.groupby("series_id").head(1).rename(columns={"model": "best_model", "value": "best_value"})
    base = s[s["model"] == baseline][["series_id", "value"]].rename(columns={"value": "baseline_value"})
    return best[["series_id", "best_model", "best_value"]].merge(base, on="series_id", how="left")


def normal_interval(yhat, sigma, alpha: float = 0.2):
    z = stats.norm.ppf(1 - alpha / 2)
    return np.maximum(yhat - z * sigma, 0), np.maximum(yhat + z * sigma, 0)
