"""Spatio-temporal forecasting: a GCN over the state graph + the global LSTM's temporal model, compared on the
same rolling-origin backtest with its no-graph twin, SARIMA and seasonal naive.

Thin asset over :mod:`ecom_pipeline.ml.forecasting.stgcn`.
"""

import time

import dagster as dg
import pandas as pd

from ecom_pipeline.assets.timeseries import BASELINE, TASK, _md_table, dataset_name, metric_records
from ecom_pipeline.resources import ComputeResource, MLflowResource, SourceResource, WarehouseResource
from ecom_pipeline.routing import GPU_OP_TAGS, GPU_POOL
from ecom_pipeline.warehouse.tables import read_table, write_table

MEAN_LABEL = "mean_over_states"


class STGCNAssetConfig(dg.Config):
    value: str = "orders"
    n_states: int = 10  # top states by volume (0 = every state with orders)
    horizon: int = 28
    folds: int = 3
    # temporal model: the global LSTM's defaults (models/lstm_backtest), so the two are comparable
    window: int = 56
    hidden: int = 32
    epochs_cpu: int = 8  # CPU/GPU sizing: ComputeResource.sized picks one by device
    epochs_cuda: int = 8
    max_samples_cpu: int = 3000  # state-windows per fit (CPU-small)
    max_samples_cuda: int = 50000
    gcn_dim: int = 8
    gcn_layers: int = 2
    min_flow_orders: int = 3  # seller->customer state flows with fewer orders add no edge
    seed: int = 0


@dg.asset(
    key=["models", "stgcn_backtest"],
    group_name="forecasting",
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    kinds={"pytorch", "mlflow"},
    deps=[
        dg.AssetKey(["features", k])
        for k in ("daily_series", "calendar", "regions", "region_knn_graph", "region_flows")
    ]
    + [dg.AssetKey(["models", "sarima_backtest"])],
    description="Spatio-temporal GCN for per-state daily orders: graph convolutions over the state graph "
    "(kNN + seller→customer flow edges, normalised adjacency) feed the global LSTM's temporal model. "
    "Backtested on the same rolling origins as SARIMA beside its no-graph twin (identity adjacency, same "
    "hyper-parameters and seeds), SARIMA (models.sarima_backtest, where it covers the state) and seasonal "
    "naive. Predictions in models.stgcn_backtest; registered as ecom.forecast.stgcn.",
)
def stgcn_backtest(
    context: dg.AssetExecutionContext,
    config: STGCNAssetConfig,
    warehouse: WarehouseResource,
    mlflow: MLflowResource,
    compute: ComputeResource,
    source: SourceResource,
) -> dg.MaterializeResult:
    from ecom_pipeline.ml.forecasting import models as fm
    from ecom_pipeline.ml.forecasting.state_panel import state_panel

    device = compute.torch_device()
    threads = compute.configure_threads(small_model=True)
    gpu = compute.is_cuda(device)
    daily, cal, knn, flows, sarima, regions = _read_inputs(warehouse)
    meta = {
        "device": device,
        "threads": threads,
        "training_path": "gpu: full epochs/samples" if gpu else "cpu-small: capped samples and epochs",
    }
    cfg, gcfg = _configs(config, compute, device)
    sp = state_panel(
        daily,
        cal,
        knn,
        flows,
        regions,
        n_states=config.n_states,
        value=config.value,
        cfg=cfg,
        folds=config.folds,
        min_flow_orders=config.min_flow_orders,
    )
    preds = pd.DataFrame(columns=fm.PRED_COLUMNS)
    if sp.skip_reason:
        meta["skipped"] = sp.skip_reason
        context.log.warning(f"stgcn_backtest skipped: {sp.skip_reason}")
    else:
        ids = sp.ids
        meta |= _graph_metadata(ids, sp.A)
        t0 = time.perf_counter()
        cmp = _compare(context, config, sp, cal, cfg, gcfg, device)
        meta["train_seconds"] = round(time.perf_counter() - t0, 1)
        preds = cmp.predictions
        summary = _with_sarima(fm.summarise(cmp.metrics), sarima, daily, ids, config.value)
        meta |= _comparison_metadata(summary)
        run, recs = _stgcn_run(summary, cmp, cfg, gcfg, ids, meta["edges"], device, dataset_name(source))
        outcome = mlflow.record_model(run, warehouse=warehouse, metric_records=recs).outcomes[0]
        meta["registered"] = f"{outcome.name} v{outcome.version} (champion: {outcome.promoted})"
        meta["model_metrics_rows"] = len(recs)
    with warehouse.connect() as con:
        write_table(
            con,
            "models.stgcn_backtest",
            preds.astype({"actual": float, "yhat": float, "lo": float, "hi": float}),
        )
    meta["dagster/row_count"] = len(preds)
    return dg.MaterializeResult(metadata=meta)


def _graph_metadata(ids: list, A) -> dict:
    return {
        "states": len(ids),
        "edges": int((A > 0).sum() // 2),
        "graph_density": round(float((A > 0).sum() / (len(ids) * (len(ids) - 1))), 3),
    }


def _read_inputs(warehouse: WarehouseResource) -> tuple[pd.DataFrame, ...]:
    """daily series, calendar, kNN graph, flows, SARIMA backtest, regions"""
    with warehouse.connect(read_only=True) as con:
        return tuple(
            read_table(con, name)
            for name in (
                "features.daily_series",
                "features.calendar",
                "features.region_knn_graph",
                "features.region_flows",
                "models.sarima_backtest",
                "features.regions",
            )
        )


def _configs(config: STGCNAssetConfig, compute: ComputeResource, device: str):
    """The temporal model's LSTMConfig (sized for the device) and the GraphConfig."""
    from ecom_pipeline.ml.forecasting.lstm import LSTMConfig
    from ecom_pipeline.ml.forecasting.stgcn import GraphConfig

    cfg = LSTMConfig(
        window=config.window,
        horizon=config.horizon,
        hidden=config.hidden,
        epochs=compute.sized(config, "epochs", device),
        seed=config.seed,
        max_samples=compute.sized(config, "max_samples", device),
    )
    gcfg = GraphConfig(
        gcn_dim=config.gcn_dim, gcn_layers=config.gcn_layers, min_flow_orders=config.min_flow_orders
    )
    return cfg, gcfg


def _compare(context, config: STGCNAssetConfig, sp, cal: pd.DataFrame, cfg, gcfg, device: str):
    """The ST-GCN and its no-graph twin on the rolling origins of the state panel ``sp``."""
    from ecom_pipeline.ml.forecasting.series import covariates_for
    from ecom_pipeline.ml.forecasting.stgcn import compare_graph

    cov = covariates_for(cal, sp.dates, cfg.horizon)
    return compare_graph(
        sp.ids,
        sp.dates,
        sp.Y,
        cov,
        sp.A,
        cfg,
        gcfg=gcfg,
        folds=config.folds,
        device=device,
        log=context.log.info,
    )


def _with_sarima(summary: pd.DataFrame, sarima: pd.DataFrame, daily: pd.DataFrame, ids, value: str):
    """``summary`` plus SARIMA on the same origins, for the states its asset covers."""
    from ecom_pipeline.ml.forecasting import models as fm

    sar = sarima[(sarima["model"] == "sarima") & sarima["series_id"].isin(ids)] if len(sarima) else sarima
    if len(sar):
        summary = pd.concat(
            [summary, fm.summarise(fm.backtest_metrics(sar, daily, value))], ignore_index=True
        )
    return summary


def _stgcn_run(summary: pd.DataFrame, cmp, cfg, gcfg, ids: list, edges: int, device: str, dataset: str):
    """The MLflow record (mean metrics, the ST-GCN as candidate beside seasonal naive) and the
    ``ml.model_metrics`` rows: ST-GCN and its no-graph twin vs the baseline, and the ST-GCN vs its twin."""
    from ecom_pipeline.ml.registry import Candidate, ModelRun

    mean = summary.groupby(["model", "metric"])["value"].mean()
    kw = {"dataset": dataset, "run_id": None, "mean_label": MEAN_LABEL}
    recs = (
        metric_records(summary, model="stgcn", **kw)
        + metric_records(summary, model="stgcn_no_graph", **kw)
        + metric_records(summary, model="stgcn", baseline="stgcn_no_graph", **kw)
    )
    run = ModelRun(
        "stgcn_backtest",
        tags={"task": TASK, "dataset": dataset, "device": device},
        params=vars(cfg) | vars(gcfg) | {"n_states": len(ids), "edges": edges, "device": device},
        metrics={f"{model}_{metric}": float(v) for (model, metric), v in mean.items()},
        candidates=[
            Candidate(
                "ecom.forecast.stgcn",
                "pytorch",
                cmp.final.net.cpu(),
                None,
                "mase",
                float(mean[("stgcn", "mase")]),
                higher_is_better=False,
                baseline=BASELINE,
                baseline_value=float(mean[(BASELINE, "mase")]),
            )
        ],
    )
    return run, recs


def _comparison_metadata(summary: pd.DataFrame) -> dict:
    """Mean metrics per model over every state, the four-way table on the states SARIMA also covers, and how
    many states the graph helps (lower backtest MASE than the no-graph twin)."""
    mase = summary[summary.metric == "mase"].pivot(index="series_id", columns="model", values="value")
    mean = summary.groupby(["model", "metric"])["value"].mean().unstack()
    out = {
        "backtest_mean_all_states": _md_table(mean.reset_index().round(3)),
        "graph_helps_mase": f"{int((mase['stgcn'] < mase['stgcn_no_graph']).sum())}/{len(mase)} states",
        "stgcn_beats_baseline_mase": f"{int((mase['stgcn'] < mase[BASELINE]).sum())}/{len(mase)} states",
        "mean_mase": {m: round(float(v), 4) for m, v in mase.mean().items()},
    }
    if "sarima" in mase:
        common = mase.dropna()
        out["mean_mase_on_sarima_states"] = {m: round(float(v), 4) for m, v in common.mean().items()}
        out["sarima_states"] = len(common)
    return out


def build() -> dg.Definitions:
    return dg.Definitions(assets=[stgcn_backtest])
