"""Safe model artifacts: write + sign, and verify + rebuild, for the model types the pipeline registers
(issue #20). Writes benchmarks/results/model_artifacts.{json,md}. Measures only (well under a minute).

    python benchmarks/model_artifacts.py
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from ecom_pipeline.ml.safe_artifacts import load_model_dir, save_model, sign_directory, verify_directory

REPO = Path(__file__).resolve().parents[1]
KEY = b"benchmark-key-0123456789abcdef0123456789"


def models():
    import torch
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    from ecom_pipeline.ml.forecasting.lstm import GlobalLSTM
    from ecom_pipeline.ml.forecasting.models import _sarimax
    from ecom_pipeline.ml.recsys.export import factor_module
    from ecom_pipeline.ml.text.sentiment import embedding_head, tfidf_baseline

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(5000, 12)), rng.integers(0, 2, 5000)
    words = [f"w{i}" for i in range(30000)]
    docs = [" ".join(rng.choice(words, 30)) for _ in range(5000)]
    yield "tfidf_logreg (29k terms)", "sklearn", tfidf_baseline().fit(docs, rng.integers(0, 3, 5000))
    yield (
        "calibrated HGB classifier",
        "sklearn",
        CalibratedClassifierCV(HistGradientBoostingClassifier(max_iter=100), cv=3).fit(X, y),
    )
    yield "HGB regressor (200 iter)", "sklearn", HistGradientBoostingRegressor(max_iter=200).fit(X, X[:, 0])
    yield (
        "embedding head (384-d)",
        "sklearn",
        embedding_head().fit(rng.normal(size=(3000, 384)), rng.integers(0, 3, 3000)),
    )
    yield "global LSTM", "pytorch", GlobalLSTM(30, 8, 32, 4, 28)
    yield (
        "factor recommender (20k users x 3k items)",
        "pytorch",
        factor_module(
            [f"u{i}" for i in range(20000)],
            [f"i{i}" for i in range(3000)],
            rng.normal(size=(20000, 32)),
            rng.normal(size=(3000, 32)),
            {f"u{i}": [i % 3000] for i in range(20000)},
        ),
    )
    yield (
        "SARIMAX (1,0,1)(1,0,0,7), 365 days",
        "statsmodels",
        _sarimax(
            10 + np.sin(np.arange(365) * 2 * np.pi / 7) + rng.normal(size=365) * 0.1, (1, 0, 1), (1, 0, 0, 7)
        ),
    )
    del torch


def main():
    rows = []
    for label, flavor, model in models():
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp) / "m"
            t0 = time.perf_counter()
            save_model(model, flavor, d)
            signature = sign_directory(d, KEY)
            t1 = time.perf_counter()
            verify_directory(d, signature, KEY, label)
            load_model_dir(d)
            t2 = time.perf_counter()
            size = sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
        rows.append(
            {
                "model": label,
                "flavor": flavor,
                "write_sign_s": round(t1 - t0, 3),
                "verify_load_s": round(t2 - t1, 3),
                "bytes": size,
            }
        )
        print(rows[-1])
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    meta = {"commit": commit, "load_average": os.getloadavg()[0], "cpus": os.cpu_count()}
    out = REPO / "benchmarks" / "results"
    (out / "model_artifacts.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        f"# Safe model artifacts (commit {commit}, load average {meta['load_average']:.1f} on "
        f"{meta['cpus']} CPUs)",
        "",
        "| model | flavor | write + sign (s) | verify + rebuild (s) | size (bytes) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['flavor']} | {r['write_sign_s']} | {r['verify_load_s']} | {r['bytes']:,} |"
        for r in rows
    ]
    (out / "model_artifacts.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
