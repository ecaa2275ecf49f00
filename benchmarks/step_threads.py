"""Threads per step: the small torch models and the gradient-boosted trees on one thread vs all cores, alone
and beside a busy sibling step, side by side in one run.

A launched run (the UI, schedules, sensors) executes two steps at once (``ECOM_MAX_CONCURRENT`` = 2 on the
2-core reference box).  A step that sets torch to every core then shares them with its sibling; OpenMP
threads that spin-wait for each other lose most of their time when a core is taken away.  The LSTM and the
ST-GCN work on small tensors (hidden 32, batches of 64 windows), where a second thread has little to split.

Each case runs the real backtests (:func:`ecom_pipeline.ml.forecasting.lstm.lstm_backtest` and the ST-GCN
with its no-graph twin, :func:`ecom_pipeline.ml.forecasting.stgcn.compare_graph`) on one synthetic panel of
per-state daily orders (weekly season, trend, noise; a ring graph of states) with the assets' default
configs, a HistGradientBoostingRegressor fit as the delivery and repurchase models make it (300k rows, 12
features, 200 iterations; OpenMP threads set by :func:`ecom_pipeline.ml.threads.openmp_threads`), and, for
contrast, the packaged text encoder on 256 review-like texts.  "Busy sibling" = another
process doing what a sibling step does (DuckDB aggregates on all cores).  Forecasts are compared between
thread counts (training is seeded; intra-op threading may change float summation order, so the largest
absolute difference is reported, not asserted).

    python benchmarks/step_threads.py            # results: benchmarks/results/step_threads.{json,md}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO))


def _panel(n_series: int = 10, days: int = 420, seed: int = 0):
    from ecom_pipeline.ml.forecasting.series import calendar_features, covariates_for

    rng = np.random.default_rng(seed)
    dates = pd.date_range("2023-01-01", periods=days, freq="D")
    week = 1 + 0.3 * np.sin(2 * np.pi * np.arange(days) / 7)
    level = rng.uniform(5, 40, n_series)[:, None]
    Y = rng.poisson(level * week[None, :] * np.linspace(1, 1.3, days)[None, :]).astype(float)
    ids = [f"state:S{i:02d}" for i in range(n_series)]
    A = np.zeros((n_series, n_series))
    for i in range(n_series):  # a ring: each state next to two others
        A[i, (i + 1) % n_series] = A[(i + 1) % n_series, i] = 1.0
    cal = calendar_features(dates[0], dates[-1] + pd.Timedelta(days=60), country="GB")
    return ids, dates, Y, A, cal, covariates_for


@contextlib.contextmanager
def beside(case: str):
    """Run the body ``alone`` or beside a ``busy sibling`` process (this script's ``--sibling``)."""
    if case == "alone":
        yield
        return
    stop = Path(f"/tmp/step_threads_stop_{os.getpid()}")
    stop.unlink(missing_ok=True)
    sibling = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--sibling", str(stop)])
    time.sleep(8)  # the sibling's table is built and its aggregates running
    try:
        yield
    finally:
        stop.touch()
        sibling.wait(timeout=120)
        stop.unlink(missing_ok=True)


def run_meta(load_before: list[float]) -> dict:
    """When, on which commit and machine, and the load average before and after a benchmark run."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit,
        "cores": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def review_like_texts(n: int) -> list[str]:
    """``n`` seeded review-like texts in the shops' languages (8-40 words each)."""
    rng = np.random.default_rng(1)
    words = "entrega rápida produto ótimo chegou quebrado delivery late quality price great poor box".split()
    return [" ".join(rng.choice(words, int(rng.integers(8, 40)))) for _ in range(n)]


def _sibling(stop_file: str) -> None:
    """A busy sibling step: DuckDB aggregates over 20M rows on all cores until ``stop_file`` exists."""
    import duckdb

    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT range AS i, hash(range) % 100003 AS k FROM range(20000000)")
    while not os.path.exists(stop_file):
        con.execute("SELECT k, sum(i), count(DISTINCT i % 9973) FROM t GROUP BY k").fetchall()


def _run(threads: int) -> dict:
    import torch

    from ecom_pipeline.ml.forecasting.lstm import LSTMConfig, lstm_backtest
    from ecom_pipeline.ml.forecasting.stgcn import compare_graph

    torch.set_num_threads(threads)
    ids, dates, Y, A, cal, covariates_for = _panel()
    cfg = LSTMConfig()
    cov = covariates_for(cal, dates, cfg.horizon)
    t0 = time.perf_counter()
    p_lstm, _, _ = lstm_backtest(ids, dates, Y, cov, cfg, folds=3)
    lstm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cmp = compare_graph(ids, dates, Y, cov, A, cfg, folds=3)
    graph_s = time.perf_counter() - t0
    preds = pd.concat([p_lstm, cmp.predictions], ignore_index=True)
    return {
        "threads": threads,
        "lstm_s": lstm_s,
        "stgcn_and_twin_s": graph_s,
        "trees_s": _fit_trees(threads),
        "text_encoder_s": _encode_reviews(),
        "preds": preds,
    }


def _fit_trees(threads: int, n: int = 300_000) -> float:
    """Seconds to fit the delivery model's regressor (same estimator and settings) on ``threads`` OpenMP
    threads."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    from ecom_pipeline.ml.threads import openmp_threads

    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 12))
    y = 3 * X[:, 0] + np.sin(X[:, 1]) + rng.normal(size=n)
    with openmp_threads(threads):
        t0 = time.perf_counter()
        HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, random_state=0).fit(X, y)
        return time.perf_counter() - t0


def _encode_reviews(n: int = 256) -> float:
    """Seconds to embed ``n`` review-like texts with the packaged text encoder (the review and product
    embedding steps' model, torch backend, their batch size and length): a big model, for contrast."""
    from ecom_pipeline.ml.encoders import load_text_encoder

    texts = review_like_texts(n)
    models_dir = REPO / "data" / "models"  # where the packaged model is converted once, as in embeddings.py
    enc = load_text_encoder(
        "multilingual-e5-small", models_dir=models_dir, batch_size=32, max_length=128, backend="torch"
    )
    enc.encode(texts[:32])  # load and warm up outside the timing
    t0 = time.perf_counter()
    enc.encode(texts)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="step_threads")
    ap.add_argument("--sibling", help=argparse.SUPPRESS)  # internal: be the busy sibling
    args = ap.parse_args()
    if args.sibling:
        _sibling(args.sibling)
        return 0
    cores = os.cpu_count() or 1
    load_before = [round(x, 2) for x in os.getloadavg()]
    rows, preds = [], {}
    for case in ("alone", "busy sibling"):
        with beside(case):
            for threads in (cores, 1):
                r = _run(threads)
                preds[(case, threads)] = r.pop("preds")
                rows.append({"beside": case, **r})
                print(json.dumps(rows[-1]), flush=True)
    diffs = {}
    for case in ("alone", "busy sibling"):
        a, b = preds[(case, cores)], preds[(case, 1)]
        keys = ["series_id", "model", "kind", "origin", "date", "step"]
        m = a.merge(b, on=keys, suffixes=("_n", "_1"))
        diffs[case] = float((m["yhat_n"] - m["yhat_1"]).abs().max()) if len(m) else None
    meta = run_meta(load_before)
    commit = meta["commit"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "diffs": diffs}, indent=1)
    )
    lines = [
        "# Threads per step: small torch models, gradient-boosted trees, the text encoder",
        "",
        (
            f"{meta['when']}, commit {commit}, {cores} cores, load average before {load_before}, after "
            f"{meta['load_average_after']}. LSTM backtest and ST-GCN + no-graph twin (assets' default "
            "configs, 3 folds) on a synthetic panel of 10 states x 420 days, a HistGradientBoostingRegressor "
            "fit (300k x 12, OpenMP threads), and the text encoder (e5-small, torch) on 256 review-like "
            "texts; 'busy sibling' = a process running DuckDB aggregates on all cores, as a sibling step "
            "of a launched run does."
        ),
        "",
        (
            "| beside | threads | LSTM s | ST-GCN + twin s | small models: speed vs all cores | "
            "trees s (300k rows) | trees: speed vs all cores | text encoder s (256 texts) | "
            "encoder: speed vs all cores |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ref = next(x for x in rows if x["beside"] == r["beside"] and x["threads"] == cores)
        total, ref_total = r["lstm_s"] + r["stgcn_and_twin_s"], ref["lstm_s"] + ref["stgcn_and_twin_s"]
        lines.append(
            f"| {r['beside']} | {r['threads']} | {r['lstm_s']:.1f} | {r['stgcn_and_twin_s']:.1f} | "
            f"{ref_total / total:.2f}x | {r['trees_s']:.1f} | {ref['trees_s'] / r['trees_s']:.2f}x | "
            f"{r['text_encoder_s']:.1f} | "
            f"{ref['text_encoder_s'] / r['text_encoder_s']:.2f}x |"
        )
    lines += [
        "",
        "Largest absolute difference of a forecast between the two thread counts: "
        + ", ".join(f"{k}: {v:.3g}" if v is not None else f"{k}: n/a" for k, v in diffs.items()),
    ]
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
