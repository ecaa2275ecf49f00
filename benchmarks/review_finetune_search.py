"""Configuration search for the CPU review fine-tune, on the VALIDATION window only (the test reviews are
never read): every configuration tried, with its validation macro-F1, goes to benchmarks/results/.

    nice python benchmarks/review_finetune_search.py [--configs base,query,...] [--out review_finetune_search]

The split is the one of ``finetune.compare_with_baselines``: the 3-class labelled Olist reviews, the last 20 %
of review time held out as test (not loaded past the split), the last 15 % of the remaining training time as
the validation window.  The frozen bottom layers' states are cached once per input prefix and shared by the
configurations (``finetune_classifier(state_cache=...)``); each configuration's budget is 900 s minus the time
that cache took, so every one fits the 900 s budget as the asset would run it.  For each configuration the
validation macro-F1 is reported for the fine-tune alone and for its average with TF-IDF (trained on the fit
reviews) at the TF-IDF weight chosen on validation.  Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results"

CONFIGS = {  # name -> FinetuneSettings overrides (the defaults are the asset's: top 2 layers, lr 1e-4, ...)
    "base": {},
    "query": {"prefix": "query"},
    "linear_avg": {"lr_schedule": "linear", "epochs": 4, "average_best": 2},
    "smooth_linear_avg": {"label_smoothing": 0.1, "lr_schedule": "linear", "epochs": 4, "average_best": 2},
    "lr5e-5_avg": {"lr": 5e-5, "epochs": 5, "average_best": 2},
    "query_linear_avg": {"prefix": "query", "lr_schedule": "linear", "epochs": 4, "average_best": 2},
    "wd0.1_linear_avg": {"weight_decay": 0.1, "lr_schedule": "linear", "epochs": 4, "average_best": 2},
}
TFIDF_WEIGHTS = tuple(np.round(np.arange(0.0, 0.71, 0.1), 2))


def fit_val_split(frame, test_fraction: float = 0.2, val_fraction: float = 0.15):
    from ecom_pipeline.ml.splits import temporal_split
    from ecom_pipeline.ml.text.sentiment import sentiment_labels

    y3 = sentiment_labels(frame["score"], "3class")
    labelled = frame.reset_index(drop=True).assign(_row=np.arange(len(frame)), _y=y3)[y3 >= 0]
    split = temporal_split(labelled, "created_at", test_fraction=test_fraction)
    inner = temporal_split(split.train, "created_at", test_fraction=val_fraction)
    return split.cutoff, inner


def ensemble_choice(ft_log_probs: np.ndarray, tfidf_log_probs: np.ndarray, y: np.ndarray) -> dict:
    """Per TF-IDF weight w: macro-F1 of (1-w)·log p_finetune + w·log p_tfidf with per-class offsets tuned on
    the same validation rows; the best w (ties: the smaller)."""
    from ecom_pipeline.ml.text.finetune import _macro_f1, tune_class_bias

    by_weight = {}
    for w in TFIDF_WEIGHTS:
        mix = (1 - w) * ft_log_probs + w * tfidf_log_probs
        bias = tune_class_bias(mix, y)
        by_weight[float(w)] = _macro_f1(y, (mix + bias).argmax(1), 3)
    best = max(by_weight, key=lambda w: (by_weight[w], -w))
    return {"by_weight": by_weight, "best_weight": best, "best_val_macro_f1": by_weight[best]}


def main(argv=None) -> int:
    import torch

    from benchmarks.review_finetune import OLIST, olist_review_frame
    from ecom_pipeline.ml.encoders import load_text_encoder
    from ecom_pipeline.ml.text.finetune import FinetuneSettings, finetune_classifier, predict_proba
    from ecom_pipeline.ml.text.sentiment import tfidf_baseline

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--budget", type=float, default=900.0)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--models-dir", default=str(REPO / "data" / "models"))
    ap.add_argument("--out", default="review_finetune_search")
    args = ap.parse_args(argv)
    if not OLIST.exists():
        print(f"no Olist sample at {OLIST}: nothing to measure", file=sys.stderr)
        return 1
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    frame = olist_review_frame()
    cutoff, inner = fit_val_split(frame)
    fit, val = inner.train, inner.test
    enc = load_text_encoder("multilingual-e5-small", models_dir=args.models_dir, max_length=args.max_length)
    fit_y, val_y = fit["_y"].to_numpy(), val["_y"].to_numpy()
    tfidf = tfidf_baseline().fit(fit["doc"], fit_y)
    tfidf_val = np.log(np.clip(tfidf.predict_proba(val["doc"]), 1e-9, 1))
    from ecom_pipeline.ml.text.finetune import _macro_f1

    out = {
        "commit": commit,
        "cutoff": str(cutoff),
        "val_cutoff": str(inner.cutoff),
        "n_fit": len(fit),
        "n_val": len(val),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "tfidf_fit_val_macro_f1": _macro_f1(val_y, tfidf_val.argmax(1), 3),
        "configs": {},
    }
    path = RESULTS / f"{args.out}.json"
    if path.exists():  # resume: keep the configurations already tried
        out["configs"] = json.loads(path.read_text()).get("configs", {})
    state_cache: dict = {}
    cache_seconds: dict[str, float] = {}
    for name in args.configs.split(","):
        overrides = CONFIGS[name]
        prefix = overrides.get("prefix", "passage")
        load0 = os.getloadavg()[0]
        if prefix not in cache_seconds:  # time the cache once per prefix (a 1-epoch run that builds it)
            t0 = time.monotonic()
            probe = FinetuneSettings(prefix=prefix, epochs=0, budget_s=args.budget)
            try:
                finetune_classifier(
                    enc,
                    fit["doc"].tolist(),
                    fit_y,
                    3,
                    val_texts=val["doc"].tolist(),
                    val_y=val_y,
                    settings=probe,
                    state_cache=state_cache,
                    progress=print,
                )
            except TimeoutError:
                pass  # epochs=0 trains nothing: only the cache was wanted
            cache_seconds[prefix] = round(time.monotonic() - t0, 1)
        settings = FinetuneSettings(**{**overrides, "budget_s": args.budget - cache_seconds[prefix]})
        t0, cpu0 = time.monotonic(), time.process_time()
        res = finetune_classifier(
            enc,
            fit["doc"].tolist(),
            fit_y,
            3,
            val_texts=val["doc"].tolist(),
            val_y=val_y,
            settings=settings,
            state_cache=state_cache,
            progress=print,
        )
        seconds = time.monotonic() - t0
        ft_val = np.log(np.clip(predict_proba(res.model, enc, val["doc"].tolist()), 1e-9, 1))
        row = {
            "overrides": overrides,
            "settings": {k: v for k, v in vars(settings).items()},
            "cache_seconds": cache_seconds[prefix],
            "train_seconds": round(seconds, 1),
            "train_cpu_seconds": round(time.process_time() - cpu0, 1),
            "within_budget_s": round(cache_seconds[prefix] + seconds, 1),
            "load_average_start": load0,
            "load_average_end": os.getloadavg()[0],
            "history": res.history,
            "best_epoch": res.best_epoch,
            "stopped": res.stopped,
            "averaged_epochs": res.averaged_epochs,
            "class_bias": res.class_bias,
            "val_macro_f1_weights": res.val_macro_f1,
            "val_macro_f1": _macro_f1(val_y, ft_val.argmax(1), 3),
            "ensemble_with_tfidf": ensemble_choice(ft_val, tfidf_val, val_y),
        }
        out["configs"][name] = row
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1, default=str))
        print(
            f"== {name}: validation macro-F1 {row['val_macro_f1']:.4f} (with offsets), with TF-IDF "
            f"{row['ensemble_with_tfidf']['best_val_macro_f1']:.4f} at w="
            f"{row['ensemble_with_tfidf']['best_weight']}; {row['within_budget_s']:.0f} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
