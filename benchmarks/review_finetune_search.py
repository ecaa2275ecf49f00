"""Configuration search for the CPU review fine-tune on ROLLING VALIDATION WINDOWS of training time only (the
test reviews are never used): every configuration tried, with its validation scores, goes to
benchmarks/results/review_finetune_folds.{json,md}.

    nice python benchmarks/review_finetune_search.py [--configs query,top4_llrd,...] [--folds 3]

The split is the one of ``finetune.compare_with_baselines``: the 3-class labelled Olist reviews, the last 20 %
of review time held out as test (dropped before anything is trained).  The training reviews' last
``--folds`` x ``--window`` of time are cut into consecutive validation windows
(``splits.rolling_origin_splits``); per window the configuration is fine-tuned on everything before it and
chooses its epoch and class offsets on it, as the asset does on its one window.  A configuration's score
is the macro-F1 of its predictions pooled over the windows (three windows hold about three times the ~40
neutral reviews one window has), with a paired-bootstrap interval against the first configuration on the
same pooled reviews.  Each window's training has ``--fold-budget`` CPU seconds; the frozen bottom layers'
states are cached once per (prefix, depth) before any fold and shared (``state_cache``), so that time is in
no configuration's budget.  Nothing is asserted; results are written after every configuration.
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

# name -> FinetuneSettings overrides of the asset's defaults (top 2 layers, lr 1e-4, "query" prefix, ...),
# in the order they are tried: the first is the reference every other one is compared with
CONFIGS = {
    "query": {},
    "top4_llrd0.8": {"trainable_layers": 4, "layer_lr_decay": 0.8},
    "smooth0.1": {"label_smoothing": 0.1},
    "rdrop1": {"rdrop_alpha": 1.0},
    "lora_all_r8": {"trainable_layers": 0, "lora_rank": 8, "lr": 5e-4},
    "passage": {"prefix": "passage"},
    "top2_lora_r16": {"lora_rank": 16, "lr": 1e-3},
}


def training_reviews(frame, test_fraction: float = 0.2):
    """The 3-class labelled reviews before the test cutoff (``_y``: label; the test reviews dropped here)."""
    from ecom_pipeline.ml.splits import temporal_split
    from ecom_pipeline.ml.text.sentiment import sentiment_labels

    y3 = sentiment_labels(frame["score"], "3class")
    labelled = frame.reset_index(drop=True).assign(_y=y3)[y3 >= 0]
    split = temporal_split(labelled, "created_at", test_fraction=test_fraction)
    return split.cutoff, split.train


def main(argv=None) -> int:
    import torch

    from benchmarks.review_finetune import OLIST, olist_review_frame
    from ecom_pipeline.ml.encoders import load_text_encoder
    from ecom_pipeline.ml.text.finetune import FinetuneSettings, finetune_classifier, validate_on_folds
    from ecom_pipeline.ml.text.sentiment import macro_f1_comparison

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--window", type=float, default=0.15, help="each validation window's share of training")
    ap.add_argument("--fold-budget", type=float, default=200.0, help="CPU seconds of training per window")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--models-dir", default=str(REPO / "data" / "models"))
    ap.add_argument("--out", default="review_finetune_folds")
    args = ap.parse_args(argv)
    if not OLIST.exists():
        print(f"no Olist sample at {OLIST}: nothing to measure", file=sys.stderr)
        return 1
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    cutoff, train = training_reviews(olist_review_frame())
    enc = load_text_encoder("multilingual-e5-small", models_dir=args.models_dir, max_length=args.max_length)
    path = RESULTS / f"{args.out}.json"
    out = json.loads(path.read_text()) if path.exists() else {}  # resume: keep configurations already run
    out.update(
        {
            "commit": commit,
            "test_cutoff": str(cutoff),
            "n_training_reviews": len(train),
            "folds": args.folds,
            "window_fraction": args.window,
            "fold_budget_cpu_s": args.fold_budget,
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        }
    )
    out.setdefault("configs", {})
    state_cache: dict = {}
    reference = None
    for name in args.configs.split(","):
        overrides = CONFIGS[name]
        load0, t0, cpu0 = os.getloadavg()[0], time.monotonic(), time.process_time()
        settings = FinetuneSettings(
            **{"epochs": args.epochs, **overrides, "budget_s": args.fold_budget, "budget_clock": "cpu"}
        )
        cache_cpu = 0.0
        if settings.trainable_layers > 0:  # the frozen bottom layers' states, once per (prefix, depth)
            c0 = time.process_time()
            probe = FinetuneSettings(**{**overrides, "epochs": 0, "budget_s": 1e9})
            try:
                finetune_classifier(
                    enc,
                    train["doc"].tolist(),
                    train["_y"].to_numpy(),
                    3,
                    settings=probe,
                    state_cache=state_cache,
                )
            except TimeoutError:
                pass  # epochs=0 trains nothing: only the cache was wanted
            cache_cpu = time.process_time() - c0
        res = validate_on_folds(
            enc,
            train,
            3,
            settings=settings,
            n_folds=args.folds,
            window_fraction=args.window,
            state_cache=state_cache,
            progress=print,
        )
        pred = res.log_probs.argmax(1)
        row = {
            "overrides": overrides,
            "pooled_val_macro_f1": res.pooled_macro_f1,
            "mean_fold_val_macro_f1": res.mean_fold_macro_f1,
            "n_pooled": len(res.y),
            "n_pooled_per_class": np.bincount(res.y, minlength=3).tolist(),
            "folds": res.folds,
            "cache_cpu_seconds": round(cache_cpu, 1),
            "train_cpu_seconds": round(sum(f["cpu_seconds"] for f in res.folds), 1),
            "seconds": round(time.monotonic() - t0, 1),
            "cpu_seconds": round(time.process_time() - cpu0, 1),
            "load_average_start": load0,
            "load_average_end": os.getloadavg()[0],
        }
        reference = reference or (name, res.y, pred)
        if reference[0] != name:
            c = macro_f1_comparison(res.y, pred, reference[2])
            row[f"vs_{reference[0]}"] = c.as_dict()
        out["configs"][name] = row
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1, default=str))
        write_markdown(out, RESULTS / f"{args.out}.md")
        print(
            f"== {name}: pooled validation macro-F1 {row['pooled_val_macro_f1']:.4f} over {len(res.y)} "
            f"reviews (folds {[round(f['val_macro_f1'], 3) for f in res.folds]}); {row['cpu_seconds']:.0f} "
            f"CPU s, {row['seconds']:.0f} s",
            flush=True,
        )
    return 0


def write_markdown(out: dict, path: Path) -> None:
    rows = out["configs"]
    first = next(iter(rows.values()), None)
    lines = [
        "# Review fine-tune: configurations on rolling validation windows (Olist sample, no test reviews)",
        "",
        (
            f"Commit {out['commit']}; {out['cpus']} CPUs, torch threads {out['torch_threads']} (a shared "
            f"machine: load averages per row). {out['n_training_reviews']:,} 3-class training reviews before "
            f"the test cutoff {out['test_cutoff'][:10]}; {out['folds']} consecutive validation windows of "
            f"{out['window_fraction']:.0%} of them each at the end of training time"
            + (
                f" ({first['n_pooled']} reviews pooled, per class negative/neutral/positive "
                f"{first['n_pooled_per_class']})"
                if first
                else ""
            )
            + f"; each window's training budget {out['fold_budget_cpu_s']:.0f} CPU seconds."
        ),
        "",
        "| configuration | overrides | pooled validation macro-F1 | per window | vs first [95 %] | epochs "
        "(best) per window | training CPU s | load |",
        "|---|---|---:|---|---|---|---:|---|",
    ]
    for name, r in rows.items():
        vs = next((v for k, v in r.items() if k.startswith("vs_")), None)
        ci = f"{vs['diff']:+.3f} [{vs['ci_low']:+.3f}, {vs['ci_high']:+.3f}]" if vs else "reference"
        per_window = ", ".join(f"{f['val_macro_f1']:.3f}" for f in r["folds"])
        epochs = ", ".join(f"{f['epochs_run']} ({f['best_epoch']})" for f in r["folds"])
        lines.append(
            f"| {name} | `{json.dumps(r['overrides'])}` | {r['pooled_val_macro_f1']:.3f} | {per_window} | "
            f"{ci} | {epochs} | {r['train_cpu_seconds']:.0f} | "
            f"{r['load_average_start']:.1f} → {r['load_average_end']:.1f} |"
        )
    lines += [
        "",
        "Intervals: paired bootstrap over the pooled validation reviews (1,000 resamples); an interval "
        "containing 0 is no difference.  Each window's epoch and class offsets are chosen on that window "
        "(as the asset does), so every score is optimistic by the same mechanism for every configuration.",
    ]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
