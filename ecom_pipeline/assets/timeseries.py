"""Time-series group: daily/weekly series and calendar (features), SARIMA + seasonal naive and the global LSTM
backtests (models), the 28-day forecasts and the anomalies (serving), with a forecast plot (reports).

Thin assets over :mod:`ecom_pipeline.ml.forecasting`.
"""

import base64
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from ecom_pipeline.resources import (
    ComputeResource,
    MLflowResource,
    PathsResource,
    SourceResource,
    WarehouseResource,
)
from ecom_pipeline.routing import GPU_OP_TAGS, GPU_POOL, WAREHOUSE_OP_TAGS, WAREHOUSE_POOL
from ecom_pipeline.warehouse.tables import read_table

TASK = "forecast_daily_orders"
BASELINE = "seasonal_naive"
FORECAST_METRICS = ("mase", "smape", "rmse", "mae", "coverage")


# ---------------------------------------------------------------- helpers shared with spatial.py
def staging_frames(warehouse: WarehouseResource, *tables: str) -> dict[str, pd.DataFrame]:
    """The staging tables without their load lineage columns (``_load_id``, ``_source_file``, ...: one
    long string per row that no feature reads; at 1M orders 40 % of the read time)."""
    from ecom_pipeline.canonical import LOAD_COLUMNS, TABLES
    from ecom_pipeline.warehouse.tables import table_columns

    with warehouse.connect(read_only=True) as con:
        out = {}
        for t in tables:
            have = table_columns(con, f"staging.{t}")
            df = read_table(con, f"staging.{t}", [c for c in have if c not in LOAD_COLUMNS])
            out[t] = df if len(df.columns) else pd.DataFrame(columns=TABLES[t].column_names)
    return out


def png_metadata(path: Path, title: str) -> dict:
    data = path.read_bytes()
    md = f"**{title}** — `{path}`\n\n"
    if len(data) < 400_000:
        md += f"![{title}](data:image/png;base64,{base64.b64encode(data).decode()})"
    return {"plot": dg.MetadataValue.md(md), "plot_path": dg.MetadataValue.path(str(path))}


def dataset_name(source: SourceResource) -> str:
    return source.kind


def metric_records(
    summary: pd.DataFrame,
    *,
    model: str,
    dataset: str,
    run_id: str | None,
    task: str = TASK,
    baseline: str = BASELINE,
    mean_label: str = "mean_over_series",
):
    """``ml.model_metrics`` rows for ``model`` beside ``baseline`` per series (fold means: no interval) plus
    the mean over series (dataset ``<dataset>:<mean_label>``, with a paired-bootstrap interval over the
    series)."""
    from ecom_pipeline.resources.model_metrics import MetricRecord

    piv = summary.pivot_table(index=["series_id", "metric"], columns="model", values="value").reset_index()
    if model not in piv or baseline not in piv:
        return []
    piv = piv.dropna(subset=[model, baseline])
    recs = [
        MetricRecord(
            model,
            task,
            f"{dataset}:{r.series_id}",
            "rolling_origin_backtest",
            r.metric,
            float(r[model]),
            baseline,
            float(r[baseline]),
            run_id,
        )
        for _, r in piv.iterrows()
    ]
    from ecom_pipeline.ml.evaluation import paired_bootstrap

    for m, g in piv.groupby("metric"):  # the mean over series, with a paired bootstrap over the series
        c = paired_bootstrap(
            g[model].to_numpy(), g[baseline].to_numpy(), metric=m, higher_is_better=m == "coverage"
        )
        recs.append(
            MetricRecord.from_comparison(
                c,
                model=model,
                task=task,
                dataset=f"{dataset}:{mean_label}",
                split="rolling_origin_backtest",
                baseline=baseline,
                mlflow_run_id=run_id,
            )
        )
    return recs


def _md_table(df: pd.DataFrame, n: int = 20) -> dg.MetadataValue:
    return dg.MetadataValue.md(df.head(n).to_markdown(index=False) if len(df) else "empty")


# ---------------------------------------------------------------- configs
class SeriesBuildConfig(dg.Config):
    top_categories: int = 5  # categories crossed with states
    top_states_in_cross: int = 10  # states in the state x category cross (0 = all)


class CalendarConfig(dg.Config):
    # ISO code(s) of the shop's countries, comma-separated; "" = ECOM_COUNTRY, else the data's customer
    # countries, else the source's own (synthetic profile, Olist = BR): see docs/geography.md
    country: str = ""
    horizon_days: int = 28  # calendar extends this far past the last order day (forecast covariates)


class SarimaConfig(dg.Config):
    value: str = "orders"
    n_states: int = 5  # per-series models on total + top states + top categories by volume
    n_categories: int = 5
    horizon: int = 28
    folds: int = 3
    max_train_days: int = 365
    alpha: float = 0.2  # 80 % prediction intervals
    workers: int = 2  # process pool, capped at 2


class LSTMAssetConfig(dg.Config):
    value: str = "orders"
    n_states: int = 5
    n_categories: int = 5
    horizon: int = 28
    folds: int = 3
    window: int = 56
    hidden: int = 32
    epochs_cpu: int = 8  # CPU/GPU sizing: ComputeResource.sized picks one by device
    epochs_cuda: int = 8
    max_samples_cpu: int = 3000
    max_samples_cuda: int = 50000
    seed: int = 0


class AnomalyConfig(dg.Config):
    value: str = "orders"
    threshold: float = 3.5
    min_mean_per_day: float = 1.0  # sparser series are not scored (counts of 0/1 are not anomalies)
    levels: list[str] = ["total", "state", "category"]


def _selected(
    daily: pd.DataFrame, n_states: int, n_categories: int, value: str, horizon: int = 28, folds: int = 3
):
    """Top series by volume before the first backtest origin (no statistic over any test window)."""
    from ecom_pipeline.ml.forecasting.series import complete_part, top_series

    d = complete_part(daily, value)
    if len(d):
        dates = pd.to_datetime(d["date"])
        first_origin = dates.max() - pd.Timedelta(days=horizon * folds - 1)
        before = d[dates < first_origin]
        d = before if len(before) else d
    return top_series(d, n_states=n_states, n_categories=n_categories, metric=value)


def _tail_metadata(daily: pd.DataFrame, value: str) -> dict:
    from ecom_pipeline.ml.forecasting.series import shop_tail

    return {"complete_data": shop_tail(daily, value).as_metadata()} if len(daily) else {}


def _panel(daily: pd.DataFrame, series_ids: list[str], value: str):
    from ecom_pipeline.ml.forecasting.series import panel

    return panel(daily, series_ids, value)


# ---------------------------------------------------------------- assets
# features/daily_series is materialized by assets.spatial.located_features with regions and flows: the three
# read and place the same staging rows, once instead of three times
DAILY_SERIES_DEPS = [
    dg.AssetKey(["staging", t])
    for t in ("orders", "order_items", "products", "customers", "sellers", "regions")
]
DAILY_SERIES_DESCRIPTION = (
    "Daily orders, revenue and distinct customers: total, per state, per category and per "
    "(state, top category). Every day between the first and last order day is present (0 = no orders). "
    "A state series id is its region id in features.regions (state:SP, or state:US-CA in a shop with "
    "several countries)."
)


def daily_series_output(
    log, located: dict, qualify: bool, products: pd.DataFrame, config: SeriesBuildConfig
) -> tuple[pd.DataFrame, dict]:
    """features.daily_series and its metadata from the located staging frames (not modified)."""
    from ecom_pipeline.ml.forecasting.series import SERIES_COLUMNS
    from ecom_pipeline.ml.forecasting.series import daily_series as build_daily
    from ecom_pipeline.ml.spatial.geo import region_id

    if located["orders"].empty:
        log.warning("staging.orders is empty: no daily series")
        return pd.DataFrame(columns=SERIES_COLUMNS), {
            "dagster/row_count": 0,
            "message": "no orders in staging",
        }
    # the customer's state as the spatial assets place it, so state series ids are region ids (the ST-GCN's
    # graph and the forecasts join on them); a customer not placed at state level counts as unknown
    customers = located["customers"]
    customers = customers.assign(state=region_id(customers, "state", qualify).str.removeprefix("state:"))
    out = build_daily(
        located["orders"],
        located["order_items"],
        products,
        customers,
        top_categories=config.top_categories,
        top_states=config.top_states_in_cross,
    )
    meta = {
        "dagster/row_count": len(out),
        "series_by_level": out.groupby("level")["series_id"].nunique().to_dict(),
        "days": int(out["date"].nunique()),
        "first_day": str(out["date"].min().date()),
        "last_day": str(out["date"].max().date()),
        "zero_days_total": int((out[out.series_id == "total"]["orders"] == 0).sum()),
    }
    return out, meta | _tail_metadata(out, "orders")


@dg.asset(
    key=["features", "weekly_series"],
    group_name="forecasting",
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
    kinds={"duckdb", "pandas"},
    ins={"daily": dg.AssetIn(key=["features", "daily_series"])},
    description="Weekly (Monday-start) sums of the daily series.",
)
def weekly_series(context: dg.AssetExecutionContext, daily: pd.DataFrame) -> pd.DataFrame:
    from ecom_pipeline.ml.forecasting.series import weekly_series as build_weekly

    out = build_weekly(daily)
    context.add_output_metadata({"dagster/row_count": len(out)})
    return out


@dg.asset(
    key=["features", "calendar"],
    group_name="forecasting",
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
    kinds={"duckdb", "pandas"},
    ins={"daily": dg.AssetIn(key=["features", "daily_series"])},
    description="Calendar features per day: weekday, month, national holidays (holidays package, offline), "
    "Black Friday and its week, Christmas run-up, yearly Fourier terms; extends "
    "past the data by the horizon.",
)
def calendar(
    context: dg.AssetExecutionContext,
    config: CalendarConfig,
    daily: pd.DataFrame,
    warehouse: WarehouseResource,
    source: SourceResource,
) -> pd.DataFrame:
    import holidays

    from ecom_pipeline.geography import country_code
    from ecom_pipeline.ml.forecasting.series import calendar_features

    data_countries = _customer_countries(warehouse)
    countries = tuple(
        c.strip().upper() for c in config.country.split(",") if c.strip()
    ) or source.shop_countries(data_countries)
    supported = set(holidays.list_supported_countries())
    without = [c for c in countries if c not in supported]
    countries = tuple(c for c in countries if c in supported)
    meta = {"countries": ", ".join(countries) or "none"}
    if without:
        meta["countries_without_holiday_calendar"] = ", ".join(without)
    if not countries:
        msg = (
            "no shop country known: set ECOM_COUNTRY (ISO code, e.g. GB or US,CA) or map customers.country; "
            "the calendar has weekdays and seasons but no holidays or shopping events"
        )
        context.log.warning(msg)
        meta["message"] = msg
    weights = None
    if data_countries is not None and len(countries) > 1:
        weights = data_countries.dropna().map(country_code).value_counts().to_dict()
        meta["customer_weights"] = {c: int(weights.get(c, 0)) for c in countries}
    fn = (
        (lambda a, b: calendar_features(a, b, list(countries), weights))
        if countries
        else _no_country_calendar
    )
    if daily.empty:
        context.add_output_metadata(meta | {"dagster/row_count": 0, "message": "no daily series"})
        return fn("2000-01-01", "2000-01-01").iloc[0:0]
    start = pd.to_datetime(daily["date"]).min()
    end = pd.to_datetime(daily["date"]).max() + pd.Timedelta(days=config.horizon_days)
    out = fn(start, end)
    context.add_output_metadata(
        meta
        | {
            "dagster/row_count": len(out),
            "holidays": int(out["is_holiday"].sum()),
            "holiday_names": ", ".join(sorted(set(out[out["is_holiday"]]["holiday_name"].dropna())))[:2000],
            "black_fridays": ", ".join(str(d.date()) for d in out[out.is_black_friday]["date"]),
            "shopping_event_days": {
                c: int(out[c].sum()) for c in ("is_cyber_monday", "is_boxing_day", "is_singles_day")
            },
        }
    )
    return out


def _customer_countries(warehouse: WarehouseResource) -> pd.Series | None:
    """``staging.customers.country`` when the source maps one (one value per customer), else None."""
    with warehouse.connect(read_only=True) as con:
        cols = (
            con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'staging' "
                "AND table_name = 'customers'"
            )
            .fetchdf()["column_name"]
            .tolist()
        )
        if "country" not in cols:
            return None
        return con.execute("SELECT country FROM staging.customers").fetchdf()["country"]


def _no_country_calendar(start, end) -> pd.DataFrame:
    """A calendar without any country: the Brazilian layout with every holiday and event flag off."""
    from ecom_pipeline.ml.forecasting.series import EVENT_COLUMNS, calendar_features

    out = calendar_features(start, end, "BR")
    out["holiday_name"] = None
    out["holiday_share"] = 0.0
    out["is_holiday"] = False
    out[EVENT_COLUMNS] = False
    out["days_to_black_friday"] = 999
    out["country"] = ""
    return out


def _sarima_run(config: SarimaConfig, summary: pd.DataFrame, results, ids: list, Y, dataset: str):
    """The MLflow record of the SARIMA backtest: mean and per-series metrics; SARIMA of the total series
    (refit on its last ``max_train_days``) as the candidate, scored by its backtest MASE."""
    from ecom_pipeline.ml.forecasting import models as fm
    from ecom_pipeline.ml.registry import Candidate, ModelRun

    mean = summary.groupby(["model", "metric"])["value"].mean().unstack()
    metrics = {f"{model}_{metric}": float(v) for (model, metric), v in mean.stack().items()}
    piv = summary.pivot_table(index="series_id", columns=["model", "metric"], values="value")
    for sid, row in piv.iterrows():
        for (model, metric), v in row.items():
            if np.isfinite(v):
                metrics[f"{model}_{metric}__{sid.replace(':', '_').replace('|', '_')}"[:250]] = float(v)
    candidates = []
    total = next((r for r in results if r.series_id == ids[0] and r.order is not None), None)
    if total is not None:
        res = fm._sarimax(Y[0][-config.max_train_days :], total.order, total.seasonal_order)
        tm = summary[
            (summary.series_id == total.series_id) & (summary.model == "sarima") & (summary.metric == "mase")
        ]
        candidates.append(
            Candidate(
                "ecom.forecast.sarima",
                "statsmodels",
                res,
                None,
                "mase",
                float(tm["value"].iloc[0]) if len(tm) else float("nan"),
                higher_is_better=False,
            )
        )
    return ModelRun(
        "sarima_backtest",
        tags={"task": TASK, "dataset": dataset},
        params={
            "n_series": len(ids),
            "horizon": config.horizon,
            "folds": config.folds,
            "max_train_days": config.max_train_days,
            "alpha": config.alpha,
            "grid": str(fm.DEFAULT_GRID),
        },
        metrics=metrics,
        candidates=candidates,
    )


def _sarima_orders_table(results) -> pd.DataFrame:
    """The SARIMA order chosen per fitted series, with its AIC and fit time (skipped series left out)."""
    return pd.DataFrame(
        [
            {
                "series_id": r.series_id,
                "order": str(r.order),
                "seasonal_order": str(r.seasonal_order),
                "aic": r.aic,
                "fit_seconds": round(r.fit_seconds, 2),
            }
            for r in results
            if not r.skip_reason
        ]
    )


def _record_sarima(
    config: SarimaConfig, summary: pd.DataFrame, results, ids: list, Y, dataset: str, mlflow: MLflowResource
) -> dict:
    """Records the SARIMA run in MLflow (candidate registered) and returns the backtest's metadata: mean
    metrics, the registration outcome and how many series SARIMA beats the best baseline on."""
    from ecom_pipeline.ml.forecasting import models as fm

    meta = {}
    mean = summary.groupby(["model", "metric"])["value"].mean().unstack()
    meta["backtest_mean"] = _md_table(mean.reset_index().round(3))
    run = _sarima_run(config, summary, results, ids, Y, dataset)
    outcome = mlflow.record_model(run).outcome("ecom.forecast.sarima")
    if outcome is not None:
        meta["registered"] = (
            f"{outcome.name} v{outcome.version} (champion: {outcome.promoted}; {outcome.reason})"
        )
    wins = (
        summary[summary.metric == "mase"].pivot(index="series_id", columns="model", values="value").dropna()
    )
    if "sarima" in wins:
        best_base = wins[[b for b in fm.BASELINES if b in wins]].min(axis=1)
        meta["sarima_below_best_baseline_mase"] = (
            f"{int((wins['sarima'] < best_base).sum())}/{len(wins)} series"
        )
    meta["model_metrics"] = (
        "written with intervals by serving/forecasts (every forecaster vs its best baseline)"
    )
    return meta


@dg.asset(
    key=["models", "sarima_backtest"],
    group_name="forecasting",
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
    kinds={"statsmodels", "mlflow"},
    ins={"daily": dg.AssetIn(key=["features", "daily_series"])},
    description="Seasonal-naive baseline and SARIMA (order by AIC over a small weekly-seasonal grid) on the "
    "top series: rolling-origin backtest predictions (kind=backtest) and the 28-day forecast (kind=future). "
    "Metrics to MLflow and ml.model_metrics; SARIMA of the total series registered as ecom.forecast.sarima.",
)
def sarima_backtest(
    context: dg.AssetExecutionContext,
    config: SarimaConfig,
    daily: pd.DataFrame,
    warehouse: WarehouseResource,
    mlflow: MLflowResource,
    source: SourceResource,
) -> pd.DataFrame:
    from ecom_pipeline.ml.forecasting import models as fm

    chosen = _selected(
        daily, config.n_states, config.n_categories, config.value, config.horizon, config.folds
    )
    if not chosen:
        context.log.warning("no series to forecast (no orders)")
        context.add_output_metadata({"dagster/row_count": 0, "message": "no series"})
        return pd.DataFrame(columns=fm.PRED_COLUMNS)
    dates, Y, ids = _panel(daily, chosen, config.value)
    cfg = fm.SeriesConfig(
        horizon=config.horizon,
        folds=config.folds,
        step=config.horizon,
        max_train_days=config.max_train_days,
        alpha=config.alpha,
    )
    t0 = time.perf_counter()
    results = fm.run_many(
        {sid: (dates, Y[i]) for i, sid in enumerate(ids)},
        cfg,
        workers=config.workers,
        progress=lambda i, n, r: context.log.info(
            f"SARIMA {i}/{n}: {r.series_id} order={r.order}x{r.seasonal_order} "
            f"({r.fit_seconds:.1f}s){' skipped: ' + r.skip_reason if r.skip_reason else ''}"
        ),
    )
    elapsed = time.perf_counter() - t0
    skipped = {r.series_id: r.skip_reason for r in results if r.skip_reason}
    preds = pd.concat(
        [r.predictions for r in results if len(r.predictions)] or [pd.DataFrame(columns=fm.PRED_COLUMNS)],
        ignore_index=True,
    )
    summary = fm.summarise(pd.concat([r.metrics for r in results], ignore_index=True))
    meta = {
        "series": len(ids),
        "skipped": skipped or "none",
        "seconds": round(elapsed, 1),
        "orders": _md_table(_sarima_orders_table(results)),
    }
    if not summary.empty:
        meta |= _record_sarima(config, summary, results, ids, Y, dataset_name(source), mlflow)
    peer_seconds = pd.DataFrame([r.model_seconds for r in results if r.model_seconds])
    if len(peer_seconds):
        meta["fit_seconds_per_series"] = {k: round(float(v), 2) for k, v in peer_seconds.mean().items()}
    meta |= _tail_metadata(daily, config.value)
    meta["dagster/row_count"] = len(preds)
    context.add_output_metadata(meta)
    return preds


def _lstm_config(config: LSTMAssetConfig, compute: ComputeResource, device: str):
    """The LSTM's training config, epochs and samples sized for ``device``."""
    from ecom_pipeline.ml.forecasting.lstm import LSTMConfig

    return LSTMConfig(
        window=config.window,
        horizon=config.horizon,
        hidden=config.hidden,
        epochs=compute.sized(config, "epochs", device),
        seed=config.seed,
        max_samples=compute.sized(config, "max_samples", device),
    )


def _summary_beside_baseline(
    mets: pd.DataFrame, config: LSTMAssetConfig, dates, Y, ids: list
) -> pd.DataFrame:
    """The LSTM's backtest metrics summarised beside seasonal naive's, run on exactly the same folds."""
    from ecom_pipeline.ml.forecasting import models as fm

    # baseline on exactly the same folds
    base = fm.run_many(
        {sid: (dates, Y[i]) for i, sid in enumerate(ids)},
        fm.SeriesConfig(horizon=config.horizon, folds=config.folds, models=(BASELINE,)),
        workers=1,
    )
    return fm.summarise(pd.concat([mets] + [b.metrics for b in base], ignore_index=True))


def _record_lstm(
    summary: pd.DataFrame, cfg, ids: list, final, device: str, dataset: str, mlflow: MLflowResource
) -> dict:
    """Records the LSTM run in MLflow (candidate scored by its mean backtest MASE) and returns the backtest's
    metadata: mean metrics, the registration outcome and how many series the LSTM beats seasonal naive on."""
    from ecom_pipeline.ml.registry import Candidate, ModelRun

    meta = {}
    mean = summary.groupby(["model", "metric"])["value"].mean().unstack()
    meta["backtest_mean"] = _md_table(mean.reset_index().round(3))
    lm = summary[(summary.model == "lstm") & (summary.metric == "mase")]["value"].mean()
    outcome = mlflow.record_model(
        ModelRun(
            "lstm_backtest",
            tags={"task": TASK, "dataset": dataset, "device": device},
            params=dict(vars(cfg)) | {"n_series": len(ids), "device": device},
            metrics={f"{model}_{metric}": float(v) for (model, metric), v in mean.stack().items()},
            candidates=[
                Candidate(
                    "ecom.forecast.lstm",
                    "pytorch",
                    final.net.cpu(),
                    None,
                    "mase",
                    float(lm),
                    higher_is_better=False,
                )
            ],
        )
    ).outcomes[0]
    meta["registered"] = f"{outcome.name} v{outcome.version} (champion: {outcome.promoted})"
    wins = (
        summary[summary.metric == "mase"].pivot(index="series_id", columns="model", values="value").dropna()
    )
    meta["lstm_beats_baseline_mase"] = f"{int((wins['lstm'] < wins[BASELINE]).sum())}/{len(wins)} series"
    meta["model_metrics"] = "written with intervals by serving/forecasts (vs the best baseline)"
    return meta


@dg.asset(
    key=["models", "lstm_backtest"],
    group_name="forecasting",
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    kinds={"pytorch", "mlflow"},
    deps=[dg.AssetKey(["features", "daily_series"]), dg.AssetKey(["features", "calendar"])],
    description="Global LSTM over the top series (calendar covariates, series embeddings, quantile "
    "outputs): backtest on the same rolling origins as SARIMA plus the 28-day forecast, written to "
    "models.lstm_backtest. Registered as ecom.forecast.lstm; metrics beside seasonal naive.",
)
def lstm_backtest(
    context: dg.AssetExecutionContext,
    config: LSTMAssetConfig,
    warehouse: WarehouseResource,
    mlflow: MLflowResource,
    compute: ComputeResource,
    source: SourceResource,
) -> dg.MaterializeResult:
    from ecom_pipeline.ml.forecasting import models as fm
    from ecom_pipeline.ml.forecasting.lstm import lstm_backtest as run_lstm
    from ecom_pipeline.ml.forecasting.series import covariates_for

    device = compute.torch_device()
    threads = compute.configure_threads(small_model=True)
    gpu = compute.is_cuda(device)
    with warehouse.connect(read_only=True) as con:
        daily = read_table(con, "features.daily_series")
        cal = read_table(con, "features.calendar")
    meta = {
        "device": device,
        "threads": threads,
        "training_path": "gpu: full epochs/samples" if gpu else "cpu-small: capped samples and epochs",
    }
    chosen = (
        _selected(daily, config.n_states, config.n_categories, config.value, config.horizon, config.folds)
        if len(daily)
        else []
    )
    preds = pd.DataFrame(columns=fm.PRED_COLUMNS)
    if not chosen or cal.empty:
        meta["message"] = "no series or no calendar: nothing to train"
        context.log.warning(meta["message"])
    else:
        dates, Y, ids = _panel(daily, chosen, config.value)
        cov = covariates_for(cal, dates, config.horizon)
        cfg = _lstm_config(config, compute, device)
        need = cfg.window + cfg.horizon * (config.folds + 1)
        if len(dates) < need:
            meta["message"] = f"too short: {len(dates)} days, the LSTM backtest needs {need}"
            context.log.warning(meta["message"])
        else:
            t0 = time.perf_counter()
            preds, mets, final = run_lstm(
                ids, dates, Y, cov, cfg, folds=config.folds, device=device, log=context.log.info
            )
            meta["train_seconds"] = round(time.perf_counter() - t0, 1)
            summary = _summary_beside_baseline(mets, config, dates, Y, ids)
            meta |= _record_lstm(summary, cfg, ids, final, device, dataset_name(source), mlflow)
            meta |= _tail_metadata(daily, config.value)
    with warehouse.connect() as con:
        con.register("_p", preds.astype({"actual": float, "yhat": float, "lo": float, "hi": float}))
        con.execute("CREATE OR REPLACE TABLE models.lstm_backtest AS SELECT * FROM _p")
        con.unregister("_p")
    meta["dagster/row_count"] = len(preds)
    return dg.MaterializeResult(metadata=meta)


class ForecastGateConfig(dg.Config):
    value: str = "orders"
    recent_days: int = 28  # a candidate's future forecast is compared with this many last complete days
    min_recent_mean: float = 0.5  # below this level/day an about-zero forecast is not called degenerate


def _gate_metadata(gate) -> dict:
    """The forecast gate's decision per series and every forecaster's mean MASE beside its best peer."""
    from ecom_pipeline.ml.forecasting.selection import GATE_METRIC

    decisions = pd.DataFrame(
        [
            {
                "series_id": d.scope,
                "served": d.served,
                "candidate": d.candidate,
                "baseline": d.baseline,
                "reason": d.reason,
            }
            for d in gate.decisions
        ]
    )
    head = gate.comparisons[
        (gate.comparisons.scope == "mean_over_series") & (gate.comparisons.loss == GATE_METRIC)
    ]
    headline = pd.DataFrame(
        [
            {
                "model": r.model,
                "mean_mase": r.comparison.candidate_value,
                "best_peer": r.baseline,
                "peer_mase": r.comparison.baseline_value,
                "diff": r.comparison.diff,
                "ci_low": r.comparison.ci_low,
                "ci_high": r.comparison.ci_high,
                "n_series": r.comparison.n_units,
                "significant": r.comparison.significant,
            }
            for r in head.itertuples()
        ]
    )
    return {
        "decisions": _md_table(decisions, 40),
        "vs_best_peer": _md_table(headline.round(3) if len(headline) else headline),
    }


def _gate_metric_records(gate, dataset: str) -> list:
    """``ml.model_metrics`` rows for every forecaster beside its best baseline, per series and over series."""
    from ecom_pipeline.resources.model_metrics import MetricRecord

    return [
        MetricRecord.from_comparison(
            r.comparison,
            model=r.model,
            task=TASK,
            dataset=f"{dataset}:{r.scope}",
            split="rolling_origin_backtest",
            baseline=r.baseline,
        )
        for r in gate.comparisons.itertuples()
    ]


@dg.asset(
    key=["serving", "forecasts"],
    group_name="forecasting",
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
    kinds={"duckdb", "pandas"},
    ins={"sarima": dg.AssetIn(key=["models", "sarima_backtest"])},
    deps=[dg.AssetKey(["models", "lstm_backtest"]), dg.AssetKey(["models", "stgcn_backtest"])],
    description="28-day forecasts with 80 % intervals, one model per series chosen by the serving gate: the "
    "best candidate (SARIMA, LSTM, their ensemble, ST-GCN) serves only if it beats the series' best baseline "
    "(seasonal naive or a statsforecast peer) significantly on the backtest and its forecast is not "
    "degenerate; otherwise that baseline serves. `model` names the model of every row; decisions in "
    "ml.serving_decisions, every forecaster vs its best baseline with intervals in ml.model_metrics.",
)
def forecasts(
    context: dg.AssetExecutionContext,
    config: ForecastGateConfig,
    sarima: pd.DataFrame,
    warehouse: WarehouseResource,
    mlflow: MLflowResource,
    source: SourceResource,
) -> pd.DataFrame:
    from ecom_pipeline.ml.forecasting.served import SERVED_COLUMNS, gate_and_serve
    from ecom_pipeline.ml.registry import ModelRun
    from ecom_pipeline.ml.serving_gate import record_decisions, served_against_decision

    with warehouse.connect(read_only=True) as con:
        lstm = read_table(con, "models.lstm_backtest")
        stgcn = read_table(con, "models.stgcn_backtest")
        daily = read_table(con, "features.daily_series")
    # the ST-GCN competes on the state series it covers; its no-graph twin is an ablation without future rows
    stgcn = stgcn[stgcn["model"] == "stgcn"] if len(stgcn) else stgcn
    served = gate_and_serve(
        [sarima, lstm, stgcn],
        daily,
        task=TASK,
        value=config.value,
        recent_days=config.recent_days,
        min_recent_mean=config.min_recent_mean,
    )
    if served is None:
        with warehouse.connect() as con:
            record_decisions(con, TASK, [])
        context.add_output_metadata({"dagster/row_count": 0, "message": "no model predictions"})
        return pd.DataFrame(columns=SERVED_COLUMNS)
    out, gate = served
    wrong = served_against_decision(out, gate.decisions, scope_col="series_id")
    if len(wrong):  # cannot happen by construction; refuse to publish rather than serve a loser
        raise RuntimeError(f"{len(wrong)} forecast rows from a model its decision did not serve")
    dataset = dataset_name(source)
    recs = _gate_metric_records(gate, dataset)
    metrics = {f"{r.model}_{r.metric}": r.value for r in recs if r.dataset.endswith(":mean_over_series")}
    metrics["candidates_served"] = sum(d.candidate_serves for d in gate.decisions)
    mlflow.record_model(
        ModelRun("forecast_gate", tags={"task": TASK, "dataset": dataset}, metrics=metrics),
        warehouse=warehouse,
        metric_records=recs,
    )
    with warehouse.connect() as con:
        record_decisions(con, TASK, gate.decisions)
    context.add_output_metadata(
        {
            "dagster/row_count": len(out),
            "served_models": out.drop_duplicates("series_id")["model"].value_counts().to_dict(),
            **_gate_metadata(gate),
            "model_metrics_rows": len(recs),
            "not_served": gate.skipped or "none",
        }
        | _tail_metadata(daily, config.value)
    )
    return out


def _anomaly_gate_records(gate, dataset: str) -> list:
    """``ml.model_metrics`` rows for the anomaly gate's candidate beside its baseline per series (one-step MAE
    comparisons; series without a comparison have no row)."""
    from ecom_pipeline.ml.forecasting.anomalies import GATE_TASK
    from ecom_pipeline.resources.model_metrics import MetricRecord

    return [
        MetricRecord.from_comparison(
            c,
            model=d.candidate,
            task=GATE_TASK,
            dataset=f"{dataset}:{d.scope}",
            split="one_step_causal",
            baseline=d.baseline,
        )
        for d, c in gate
        if c is not None
    ]


def _anomaly_metadata(found: pd.DataFrame, summary: pd.DataFrame, decisions: list, n_scored: int) -> dict:
    """The anomalies' metadata: gate decisions, flag rates overall and per series, the largest anomalies."""
    days = int(summary["days_scored"].sum()) if len(summary) else 0
    return {
        "dagster/row_count": len(found),
        "series_scored": n_scored,
        "expected_model_by_series": {d.scope: d.served for d in decisions},
        "gate": _md_table(
            pd.DataFrame([{"series_id": d.scope, "served": d.served, "reason": d.reason} for d in decisions]),
            20,
        ),
        "flag_rate": round(len(found) / days, 4) if days else 0.0,
        "by_direction": found["direction"].value_counts().to_dict() if len(found) else {},
        "flag_rate_by_series": (
            _md_table(summary.sort_values("flag_rate", ascending=False).round(4), 15)
            if len(summary)
            else "no series long or busy enough to score"
        ),
        "largest": _md_table(
            found.reindex(found["robust_z"].abs().sort_values(ascending=False).index)[
                ["series_id", "date", "actual", "expected", "robust_z", "direction", "expected_model"]
            ].round(2),
            10,
        ),
    }


@dg.asset(
    key=["serving", "anomalies"],
    group_name="forecasting",
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
    kinds={"duckdb", "pandas"},
    ins={
        "daily": dg.AssetIn(key=["features", "daily_series"]),
        "fc": dg.AssetIn(key=["serving", "forecasts"]),
    },
    description="Days whose actual orders fall outside robust bounds of the residuals of a causal seasonal "
    "forecast, per series, with size and direction. The expected values come from the model the serving "
    "gate serves for the series (4-week seasonal median only if it beats seasonal naive significantly on "
    "one-step MAE), named in `expected_model`; decisions in ml.serving_decisions (task anomaly_expected); "
    "the flag rate per series is in the metadata. Also draws the forecast-vs-actual plot (intervals, anomaly "
    "markers) to <data_root>/reports/forecasts.png.",
)
def anomalies(
    context: dg.AssetExecutionContext,
    config: AnomalyConfig,
    daily: pd.DataFrame,
    fc: pd.DataFrame,
    warehouse: WarehouseResource,
    source: SourceResource,
    paths: PathsResource,
) -> pd.DataFrame:
    from ecom_pipeline.ml.forecasting.anomalies import ANOMALY_COLUMNS, GATE_TASK, detect_many
    from ecom_pipeline.ml.forecasting.plots import forecast_plot
    from ecom_pipeline.ml.serving_gate import record_decisions, served_against_decision
    from ecom_pipeline.resources.model_metrics import record_model_metrics

    if daily.empty:
        with warehouse.connect() as con:
            record_decisions(con, GATE_TASK, [])
        context.add_output_metadata({"dagster/row_count": 0, "message": "no daily series"})
        return pd.DataFrame(columns=ANOMALY_COLUMNS)
    daily = daily.assign(date=pd.to_datetime(daily["date"]))
    mean = daily.groupby(["series_id", "level"])[config.value].mean().reset_index()
    ids = mean[(mean.level.isin(config.levels)) & (mean[config.value] >= config.min_mean_per_day)][
        "series_id"
    ].tolist()
    found, summary, gate = detect_many(daily, ids, value=config.value, threshold=config.threshold)
    decisions = [d for d, _ in gate]
    wrong = served_against_decision(found, decisions, model_col="expected_model", scope_col="series_id")
    if len(
        wrong
    ):  # cannot happen by construction; refuse to publish rather than serve a loser's expectations
        raise RuntimeError(
            f"{len(wrong)} anomaly rows with expected values from a model the gate did not serve"
        )
    recs = _anomaly_gate_records(gate, dataset_name(source))
    with warehouse.connect() as con:
        record_model_metrics(con, recs)
        record_decisions(con, GATE_TASK, decisions)
    meta = _anomaly_metadata(found, summary, decisions, len(ids))
    plot_ids = (
        list(dict.fromkeys(["total"] + fc["series_id"].drop_duplicates().tolist()))[:4]
        if len(fc)
        else ["total"]
    )
    path = forecast_plot(paths.report("forecasts.png"), daily, fc, found, plot_ids)
    meta |= png_metadata(path, "forecast vs actual")
    context.add_output_metadata(meta)
    return found


def build() -> dg.Definitions:
    from ecom_pipeline.assets.gates import promotion_gate_check

    # blocking, skip-aware: a model asset that trained nothing passes with its reason; one that trained but
    # left no usable champion blocks serving/forecasts in the same run
    checks = [
        promotion_gate_check(sarima_backtest.key, "ecom.forecast.sarima"),
        promotion_gate_check(lstm_backtest.key, "ecom.forecast.lstm"),
    ]
    return dg.Definitions(
        assets=[weekly_series, calendar, sarima_backtest, lstm_backtest, forecasts, anomalies],
        asset_checks=checks,
    )
