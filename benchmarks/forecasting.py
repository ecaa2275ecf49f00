"""Forecasting benchmark: SARIMA fit time (ours vs plain statsmodels, same run) and the accuracy of every
forecaster on the per-state daily orders of the synthetic default (5k orders) and the Olist sample, each
against the best baseline (seasonal naive or a statsforecast peer) with a paired-bootstrap interval, and the
serving gate's choice per series.  Backtests end at the last complete day (the export's incomplete tail is
cut first, as in the assets).

Each dataset goes through the real pipeline (ingest job, then the daily series, calendar, regions, flows and
kNN graph assets) into a temporary warehouse; the models then run as the assets run them, on the same
rolling-origin folds (3 folds of 28 days).  Writes benchmarks/results/forecasting.{json,md}.  Measures only.

    python benchmarks/forecasting.py [--states 10] [--timing-series 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

OLIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "olist"
RESULTS = Path(__file__).parent / "results"
FEATURES = ["daily_series", "calendar", "regions", "region_flows", "region_knn_graph"]
MODELS = [
    "seasonal_naive",
    "auto_ets",
    "auto_theta",
    "auto_arima",
    "mstl",
    "sarima",
    "lstm",
    "ensemble",
    "stgcn",
    "stgcn_no_graph",
]


def warehouse_features(kind: str, root: Path) -> dict[str, pd.DataFrame]:
    """Ingest ``kind`` into a fresh data root and build the feature tables the forecasters read."""
    import dagster as dg

    os.environ.update({"ECOM_DATA_ROOT": str(root), "ECOM_DATA_SOURCE": kind})
    for var in ("ECOM_WAREHOUSE", "MLFLOW_TRACKING_URI", "ECOM_DATA_DIR"):
        os.environ.pop(var, None)
    if kind == "olist":
        os.environ["ECOM_DATA_DIR"] = str(OLIST.resolve())
    from ecom_pipeline.config import Settings
    from ecom_pipeline.definitions import build_definitions
    from ecom_pipeline.warehouse.tables import read_table

    settings = Settings.from_env()
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("ingest").execute_in_process(instance=instance).success
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey(["features", f]) for f in FEATURES]
    ).success
    import duckdb

    con = duckdb.connect(str(settings.warehouse), read_only=True)
    try:
        return {f: read_table(con, f"features.{f}") for f in FEATURES}
    finally:
        con.close()


def sarima_timing(ids, Y, n_series: int, max_train_days: int = 365) -> dict:
    """Per series, sequentially, on the training part of the first fold (what order selection sees):
    our order selection (6-candidate AIC grid), our fixed-order fit, and statsmodels' SARIMAX and ARIMA
    with the chosen order and their default settings."""
    from statsmodels.tsa.arima.model import ARIMA
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    from ecom_pipeline.ml.forecasting import models as fm

    rows = []
    for sid, y in list(zip(ids, Y))[:n_series]:
        train = y[: len(y) - 3 * 28][-max_train_days:]
        t0 = time.perf_counter()
        order, sorder, _, _ = fm.select_order(train)
        t_select = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours = fm._sarimax(train, order, sorder)
        t_fixed = time.perf_counter() - t0
        trend = "c" if order[1] == 0 and sorder[1] == 0 else "n"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            ref = SARIMAX(train, order=order, seasonal_order=sorder, trend=trend).fit(disp=False)
            t_ref = time.perf_counter() - t0
            t0 = time.perf_counter()
            ref_arima = ARIMA(train, order=order, seasonal_order=sorder, trend=trend).fit()
            t_arima = time.perf_counter() - t0
        rows.append(
            {
                "series_id": sid,
                "order": str(order),
                "seasonal_order": str(sorder),
                "train_days": len(train),
                "ours_select_s": t_select,
                "ours_fixed_s": t_fixed,
                "ref_sarimax_s": t_ref,
                "ref_arima_s": t_arima,
                "aic_ours": float(ours.aic),
                "aic_ref_sarimax": float(ref.aic),
                "aic_ref_arima": float(ref_arima.aic),
            }
        )
    df = pd.DataFrame(rows)
    mean = df[["ours_select_s", "ours_fixed_s", "ref_sarimax_s", "ref_arima_s"]].mean()
    return {
        "series": rows,
        "mean_s_per_series": mean.to_dict(),
        "ratio_fixed_vs_ref_sarimax": float(mean["ours_fixed_s"] / mean["ref_sarimax_s"]),
        "ratio_fixed_vs_ref_arima": float(mean["ours_fixed_s"] / mean["ref_arima_s"]),
        "ratio_select_vs_ref_sarimax": float(mean["ours_select_s"] / mean["ref_sarimax_s"]),
    }


def run_dataset(name: str, kind: str, n_states: int, timing_series: int) -> dict:
    from ecom_pipeline.ml.forecasting import models as fm
    from ecom_pipeline.ml.forecasting.lstm import LSTMConfig, lstm_backtest
    from ecom_pipeline.ml.forecasting.selection import GATE_METRIC, gate_series
    from ecom_pipeline.ml.forecasting.series import (
        complete_part,
        covariates_for,
        panel,
        shop_tail,
        top_states,
    )
    from ecom_pipeline.ml.forecasting.stgcn import GraphConfig, compare_graph, skip_reason, state_graph

    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        f = warehouse_features(kind, Path(tmp))
        ingest_s = time.perf_counter() - t0
    daily, cal = f["daily_series"], f["calendar"]
    tail = shop_tail(daily, "orders")
    daily = complete_part(daily, "orders")
    first_origin = pd.to_datetime(daily["date"]).max() - pd.Timedelta(days=3 * 28 - 1)
    ids = top_states(daily[pd.to_datetime(daily["date"]) < first_origin], n_states)  # chosen before the folds
    dates, Y, ids = panel(daily, ids, "orders")
    knn, flows = f["region_knn_graph"], f["region_flows"]
    A = state_graph(
        ids, knn[knn.level == "state"], flows[flows.level == "state"], GraphConfig().min_flow_orders
    )
    cfg = LSTMConfig()  # the assets' defaults (window 56, horizon 28, 8 epochs, 3000 samples, seed 0)
    out = {
        "dataset": name,
        "days": len(dates),
        "first_day": str(dates[0].date()),
        "last_day": str(dates[-1].date()),
        "states": ids,
        "orders_per_day": {s: round(float(Y[i].mean()), 2) for i, s in enumerate(ids)},
        "edges": int((A > 0).sum() // 2),
        "ingest_and_features_s": ingest_s,
        "complete_data": tail.as_metadata(),
    }
    reason = skip_reason(ids, len(dates), A, cfg, 3)
    if reason:
        out["skipped"] = reason
        return out
    cov = covariates_for(cal, dates, cfg.horizon)
    seconds = {}
    # SARIMA (+ seasonal naive) exactly as the sarima_backtest asset runs it: order by AIC, 2-process pool
    t0 = time.perf_counter()
    sar = fm.run_many({s: (dates, Y[i]) for i, s in enumerate(ids)}, fm.SeriesConfig(), workers=2)
    seconds["sarima_asset_path_2_workers"] = time.perf_counter() - t0
    out["sarima_asset_path_s_per_series_2_workers"] = seconds["sarima_asset_path_2_workers"] / len(ids)
    preds = [r.predictions for r in sar if len(r.predictions)]
    t0 = time.perf_counter()
    p_lstm, _, _ = lstm_backtest(ids, dates, Y, cov, cfg, folds=3)
    seconds["lstm"] = time.perf_counter() - t0
    cmp = compare_graph(ids, dates, Y, cov, A, cfg, folds=3)
    seconds |= {k: v for k, v in cmp.seconds.items() if k != "seasonal_naive"}
    allp = pd.concat(preds + [p_lstm, cmp.predictions], ignore_index=True)
    allp = pd.concat([allp, fm.ensemble(allp, ("sarima", "lstm"))], ignore_index=True)
    summary = fm.summarise(fm.backtest_metrics(allp, daily))
    gate = gate_series(allp, daily, task="forecast_daily_orders")
    peer_seconds = pd.DataFrame([r.model_seconds for r in sar if r.model_seconds]).mean()
    seconds |= {f"{k}_per_series": float(v) for k, v in peer_seconds.items()}
    head = gate.comparisons[
        (gate.comparisons.scope == "mean_over_series") & (gate.comparisons.loss == GATE_METRIC)
    ]
    out["vs_best_peer"] = [
        {"model": r.model, "best_peer": r.baseline} | r.comparison.as_dict() for r in head.itertuples()
    ]
    out["served"] = [
        {
            "series_id": d.scope,
            "served": d.served,
            "candidate": d.candidate,
            "baseline": d.baseline,
            "reason": d.reason,
        }
        for d in gate.decisions
    ]
    mean = summary.groupby(["model", "metric"])["value"].mean().unstack()
    mase = summary[summary.metric == "mase"].pivot(index="series_id", columns="model", values="value")
    out |= {
        "seconds": seconds,
        "mean_over_states": {
            m: {k: float(v) for k, v in mean.loc[m].items()} for m in MODELS if m in mean.index
        },
        "mase_by_state": mase.round(4).to_dict(orient="index"),
        "stgcn_beats_no_graph_states": int((mase["stgcn"] < mase["stgcn_no_graph"]).sum()),
        "stgcn_beats_seasonal_naive_states": int((mase["stgcn"] < mase["seasonal_naive"]).sum()),
        "best_model_by_state": fm.choose_best(summary).set_index("series_id")["best_model"].to_dict(),
    }
    if timing_series:
        out["sarima_fit_timing"] = sarima_timing(ids, Y, timing_series)
    out["total_s"] = time.perf_counter() - t_all
    return out


def machine() -> dict:
    import subprocess

    import torch

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    return {
        "commit": commit,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),
    }


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        "# Forecasting benchmark",
        "",
        f"{res['date']} at commit {m.get('commit')} on {m['platform']}, {m['cpus']} CPUs, torch {m['torch']} "
        f"({m['torch_threads']} thread), load average at start "
        f"{', '.join(f'{x:.1f}' for x in m['load_average_at_start'])}. The machine is shared with other "
        "engineers' test runs: every time is an upper bound; ratios are measured "
        "side by side in the same run.",
        "",
        f"Settings: per-state daily orders of the top {res['settings']['states']} states; rolling-origin "
        "backtest, 3 folds x 28 days (step 28) ending at the last complete day, the same origins for every "
        "model; baselines seasonal naive + statsforecast AutoETS/AutoTheta/AutoARIMA/MSTL (refit per fold); "
        "metrics from the one metrics module (MASE scale = in-sample seasonal-naive MAE, m=7), mean over "
        "states and folds. SARIMA: order by AIC over the 6-candidate weekly grid on the first fold's "
        "training data (<= 365 days); LSTM / ST-GCN: the assets' defaults (window 56, hidden 32, 8 epochs, "
        "3000 series-windows, seed 0, CPU); ST-GCN: 2 GCN layers (8 features) over kNN (k=5) + flow (>= 3 "
        "orders) state edges; no-graph twin = same network and seeds with identity adjacency; ensemble "
        "= mean of SARIMA and LSTM.",
        "",
    ]
    for d in res["datasets"]:
        lines.append(
            f"## {d['dataset']}: {len(d['states'])} states, {d['days']} days "
            f"({d['first_day']} .. {d['last_day']}), {d['edges']} graph edges"
        )
        if "skipped" in d:
            lines += ["", f"skipped: {d['skipped']}", ""]
            continue
        lines += [
            "",
            "orders/day: " + ", ".join(f"{k.split(':')[1]} {v}" for k, v in d["orders_per_day"].items()),
            "",
            "| model | MASE | sMAPE | RMSE | coverage (80 %) |",
            "|---|---|---|---|---|",
        ]
        for model, v in d["mean_over_states"].items():
            lines.append(
                f"| {model} | {v['mase']:.3f} | {v['smape']:.1f} | {v['rmse']:.3f} | {v['coverage']:.3f} |"
            )
        c = d["complete_data"]
        lines += [
            "",
            f"Complete data: last day {c['last_day']}, last complete day {c['last_complete_day']} "
            f"({c['trimmed_days']} days cut: {c['reason']}).",
            "",
            "Every forecaster against the baseline with the lowest mean MASE over the same states (units = "
            "states; 95 % paired-bootstrap interval of the difference):",
            "",
            "| model | mean MASE | best peer | peer MASE | difference [95 % interval] "
            "| states | significant |",
            "|---|---|---|---|---|---|---|",
        ]
        for v in d["vs_best_peer"]:
            lines.append(
                f"| {v['model']} | {v['candidate_value']:.3f} | {v['best_peer']} | {v['baseline_value']:.3f} "
                f"| {v['diff']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}] | {v['n_units']} "
                f"| {'yes' if v['significant'] else 'no'} |"
            )
        lines += [
            "",
            "Served per state (serving gate: the best candidate serves only if it beats the state's best "
            "baseline significantly, 95 % block bootstrap over backtest days, and its forecast is not "
            "degenerate):",
            "",
            "| state | served | why |",
            "|---|---|---|",
        ]
        for v in d["served"]:
            lines.append(f"| {v['series_id']} | {v['served']} | {v['reason']} |")
        n = len(d["states"])
        lines += [
            "",
            f"ST-GCN beats its no-graph twin (MASE) on {d['stgcn_beats_no_graph_states']}/{n} states and "
            f"seasonal naive on {d['stgcn_beats_seasonal_naive_states']}/{n}. Best model per state: "
            + ", ".join(f"{k.split(':')[1]} {v}" for k, v in d["best_model_by_state"].items())
            + ".",
            "",
            "Training/backtest seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in d["seconds"].items()),
            "",
        ]
        if "sarima_fit_timing" not in d:
            continue
        t = d["sarima_fit_timing"]
        ms = t["mean_s_per_series"]
        lines += [
            f"SARIMA fit time, seconds per series (sequential, first {len(t['series'])} states, first-fold "
            "training data):",
            "",
            "| ours: order selection (6 fits) | ours: fixed-order fit | statsmodels SARIMAX.fit(disp=False) "
            "| statsmodels ARIMA.fit() | ours fixed / SARIMAX | ours fixed / ARIMA |",
            "|---|---|---|---|---|---|",
            f"| {ms['ours_select_s']:.3f} | {ms['ours_fixed_s']:.3f} | {ms['ref_sarimax_s']:.3f} | "
            f"{ms['ref_arima_s']:.3f} | {t['ratio_fixed_vs_ref_sarimax']:.2f} | "
            f"{t['ratio_fixed_vs_ref_arima']:.2f} |",
            "",
            f"Whole SARIMA asset path (selection + 4 forecasts with refits, 2 processes): "
            f"{d['sarima_asset_path_s_per_series_2_workers']:.2f} s per series wall-clock.",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--states", type=int, default=10)
    ap.add_argument("--timing-series", type=int, default=5)
    ap.add_argument("--datasets", default="synthetic,olist")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # the shared 2-core machine: a second torch thread only fights other processes
    res = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "states": args.states,
            "timing_series": args.timing_series,
            "synthetic_orders": int(os.environ.get("ECOM_SYNTHETIC_ORDERS", "5000")),
        },
        "datasets": [],
    }
    for name in args.datasets.split(","):
        if name == "olist" and not OLIST.exists():
            res["datasets"].append(
                {
                    "dataset": "olist_sample",
                    "skipped": f"Olist sample not found at {OLIST}",
                    "states": [],
                    "days": 0,
                    "first_day": "",
                    "last_day": "",
                    "edges": 0,
                }
            )
            continue
        kind = "olist" if name == "olist" else "synthetic"
        res["datasets"].append(
            run_dataset(
                "olist_sample" if kind == "olist" else "synthetic_default",
                kind,
                args.states,
                args.timing_series,
            )
        )
        print(
            json.dumps(
                {k: v for k, v in res["datasets"][-1].items() if k in ("dataset", "mean_over_states")},
                default=str,
            ),
            flush=True,
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "forecasting.json").write_text(json.dumps(res, indent=1, default=str))
    (RESULTS / "forecasting.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
