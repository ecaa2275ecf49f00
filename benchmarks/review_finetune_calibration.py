"""Decision calibration, ensembles and a fixed epoch count for the CPU review fine-tune, chosen on ROLLING
VALIDATION WINDOWS of training time only (the test reviews are dropped before anything is trained).

    nice python benchmarks/review_finetune_calibration.py [--epochs 8] [--folds 3]

One fine-tune per window (``finetune.validate_on_folds``, the asset's default settings except the budget:
``budget_clock="none"``, a fixed ``--epochs`` with the usual patience, so the run is the same on a busy or a
quiet machine); per window also TF-IDF and the frozen-embedding head trained on the same reviews before it.
The out-of-fold predictions (before any offsets) are saved once (``--oof``); every strategy is then scored
on them CROSS-FITTED: a window's offsets / ensemble weights are fitted on the other windows only, so no
strategy is scored on the rows it was fitted on.  Strategies:

- ``none``: the fine-tune's argmax;
- ``one_window``: offsets fitted on one other window (what the asset does today: offsets from its one
  validation window, applied to reviews it did not see);
- ``pooled``: offsets fitted on all the other windows pooled (the ``offset_folds`` setting);
- ``ens_*``: weighted mean of log-probabilities of the fine-tune with the frozen head / TF-IDF, weight on a
  grid + offsets fitted on the other windows pooled.

Paired-bootstrap intervals against ``one_window`` over the pooled windows' reviews.  Results go to
benchmarks/results/review_finetune_calibration.{json,md} with the commit and load average.
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
WEIGHTS = tuple(np.round(np.arange(0.0, 0.61, 0.1), 2))


def out_of_fold(args) -> dict:
    """Fine-tune, TF-IDF and frozen-head log-probabilities on each rolling window (fitted before it)."""
    from benchmarks.review_finetune import OLIST, frozen_embeddings, olist_review_frame
    from benchmarks.review_finetune_search import training_reviews
    from ecom_pipeline.ml.encoders import load_text_encoder
    from ecom_pipeline.ml.splits import rolling_origin_splits
    from ecom_pipeline.ml.text.finetune import FinetuneSettings, validate_on_folds
    from ecom_pipeline.ml.text.sentiment import embedding_head, tfidf_baseline

    if not OLIST.exists():
        raise SystemExit(f"no Olist sample at {OLIST}: nothing to measure")
    frame = olist_review_frame()
    emb = frozen_embeddings(frame, Path(args.embeddings))
    frame = frame.assign(_row=np.arange(len(frame)))
    cutoff, train = training_reviews(frame)
    enc = load_text_encoder("multilingual-e5-small", models_dir=args.models_dir, max_length=args.max_length)
    settings = FinetuneSettings(epochs=args.epochs, budget_clock="none")
    t0, cpu0 = time.monotonic(), time.process_time()
    res = validate_on_folds(
        enc,
        train,
        3,
        settings=settings,
        n_folds=args.folds,
        window_fraction=args.window,
        progress=lambda m: print(m, flush=True),
        keep_last=True,
    )
    ft_seconds, ft_cpu = time.monotonic() - t0, time.process_time() - cpu0
    seal_test_predictions(frame, cutoff, enc, res.last, Path(args.sealed))
    tfidf, head = [], []
    for split in rolling_origin_splits(train, "created_at", n_folds=args.folds, window_fraction=args.window):
        fit, val = split.train, split.test
        t = tfidf_baseline().fit(fit["doc"], fit["_y"])
        tfidf.append(np.log(np.clip(t.predict_proba(val["doc"]), 1e-9, 1)))
        h = embedding_head().fit(emb[fit["_row"].to_numpy()], fit["_y"])
        head.append(np.log(np.clip(h.predict_proba(emb[val["_row"].to_numpy()]), 1e-9, 1)))
    return {
        "y": res.y,
        "window": res.window,
        "finetune": res.raw_log_probs,
        "finetune_window_offsets": res.log_probs,  # each window's own offsets (in-sample)
        "tfidf": np.concatenate(tfidf),
        "frozen_head": np.concatenate(head),
        "meta": {
            "test_cutoff": str(cutoff),
            "n_training_reviews": len(train),
            "folds": res.folds,
            "finetune_seconds": round(ft_seconds, 1),
            "finetune_cpu_seconds": round(ft_cpu, 1),
        },
    }


def seal_test_predictions(frame, cutoff, enc, last, path: Path) -> None:
    """The newest window's model (the one the asset keeps: trained before the last window, epoch chosen
    there) scored on the test reviews, before any offsets, written to ``path`` UNREAD: only the strategy
    chosen on validation is ever evaluated on them (``evaluate_on_test``)."""
    from ecom_pipeline.ml.text.finetune import predict_proba, remove_offsets
    from ecom_pipeline.ml.text.sentiment import sentiment_labels

    test = frame[(sentiment_labels(frame["score"], "3class") >= 0) & (frame["created_at"] >= cutoff)]
    probs = predict_proba(last.model, enc, test["doc"].tolist())
    raw = remove_offsets(np.log(np.clip(probs, 1e-9, 1)), last.class_bias)
    np.savez(path, rows=test["_row"].to_numpy(), raw=raw, window_offsets=np.asarray(last.class_bias))


def choose_strategy(rows: dict) -> str:
    """The rule fixed before the test reviews are read: the best cross-fitted strategy if it beats the
    current one (``one_window``) by more than its interval, else ``one_window``."""
    winners = [  # served strategies only (offsets fold into the model; an ensemble is not served)
        (r["pooled_val_macro_f1"], name)
        for name, r in rows.items()
        if name in ("none", "pooled") and r["vs_one_window"]["ci_low"] > 0
    ]
    return max(winners)[1] if winners else "one_window"


def evaluate_on_test(choice: str, oof: dict, args) -> dict:
    """The chosen strategy on the test reviews (read once), vs TF-IDF and the frozen head trained on every
    training review (``sentiment.fit_and_evaluate``, as ``finetune.compare_with_baselines``)."""
    from sklearn.metrics import accuracy_score

    from benchmarks.review_finetune import frozen_embeddings, olist_review_frame
    from ecom_pipeline.ml.evaluation import scorer_comparison
    from ecom_pipeline.ml.text.finetune import tune_class_bias
    from ecom_pipeline.ml.text.sentiment import (
        SETTINGS,
        classification_metrics,
        fit_and_evaluate,
        macro_f1_comparison,
        sentiment_labels,
    )

    sealed = np.load(args.sealed)
    frame = olist_review_frame()
    emb = frozen_embeddings(frame, Path(args.embeddings))
    y, ft = oof["y"], oof["finetune"]
    if choice == "one_window":
        offsets = sealed["window_offsets"]
    elif choice == "pooled":
        offsets = tune_class_bias(ft, y)
    elif choice == "none":
        offsets = np.zeros(3)
    else:
        raise ValueError(f"{choice}: only offset strategies are served; ensembles are reported on validation")
    scores = sealed["raw"] + offsets
    rows = sealed["rows"]
    out = {"strategy": choice, "offsets": [float(o) for o in offsets], "settings": {}}
    base3 = fit_and_evaluate(frame, emb, "3class")
    for setting in ("3class", "binary"):
        res = base3 if setting == "3class" else fit_and_evaluate(frame, emb, setting, cutoff=base3.cutoff)
        yy = sentiment_labels(frame["score"].to_numpy()[rows], setting)
        keep = yy >= 0
        yy, r, sc = yy[keep], rows[keep], scores[keep]
        preds = {
            "finetuned": sc.argmax(1) if setting == "3class" else (sc[:, 2] > sc[:, 0]).astype(int),
            "frozen_head": res.model.predict(emb[r]),
            "tfidf": res.baseline.predict(frame["doc"].to_numpy()[r].tolist()),
        }
        entry = {"n_test": int(len(yy))}
        entry["metrics"] = {k: classification_metrics(yy, p, SETTINGS[setting]) for k, p in preds.items()}
        for b in ("tfidf", "frozen_head"):
            entry[f"macro_f1_vs_{b}"] = macro_f1_comparison(yy, preds["finetuned"], preds[b]).as_dict()
            entry[f"accuracy_vs_{b}"] = scorer_comparison(
                yy,
                preds["finetuned"],
                preds[b],
                accuracy_score,
                metric="accuracy",
                higher_is_better=True,
                needs_both_classes=False,
            ).as_dict()
        out["settings"][setting] = entry
    return out


def strategies(oof: dict) -> dict[str, np.ndarray]:
    """Each strategy's cross-fitted predictions on the pooled windows."""
    from ecom_pipeline.ml.text.finetune import cross_fitted_offsets, tune_class_bias

    y, window, ft = oof["y"], oof["window"], oof["finetune"]

    def one_other(k, windows):  # the nearest other window (the newer one where there is one)
        return [k + 1] if k + 1 in windows else [k - 1]

    def all_others(k, windows):
        return [w for w in windows if w != k]

    preds = {
        "none": ft.argmax(1),
        "window_in_sample": oof["finetune_window_offsets"].argmax(1),  # optimistic: fitted on itself
        "one_window": cross_fitted_offsets(ft, y, window, one_other).argmax(1),
        "pooled": cross_fitted_offsets(ft, y, window, all_others).argmax(1),
    }
    for other in ("frozen_head", "tfidf"):  # weight and offsets chosen on the other windows pooled
        out = np.empty(len(y), dtype=int)
        chosen = []
        for k in sorted(set(window.tolist())):
            src = window != k
            best = None
            for w in WEIGHTS:
                mix = (1 - w) * ft[src] + w * oof[other][src]
                off = tune_class_bias(mix, y[src])
                score = _f1(y[src], (mix + off).argmax(1))
                if best is None or score > best[0] + 1e-9:
                    best = (score, w, off)
            _, w, off = best
            chosen.append(float(w))
            out[window == k] = ((1 - w) * ft[window == k] + w * oof[other][window == k] + off).argmax(1)
        preds[f"ens_{other}"] = out
        preds[f"ens_{other}_weights"] = np.array(chosen)
    return preds


def _f1(y, pred) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, pred, labels=[0, 1, 2], average="macro", zero_division=0))


def main(argv=None) -> int:
    import torch

    from ecom_pipeline.ml.text.sentiment import macro_f1_comparison

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--window", type=float, default=0.15)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--embeddings", default=str(REPO / "data" / "review_finetune_embeddings.npz"))
    ap.add_argument("--models-dir", default=str(REPO / "data" / "models"))
    ap.add_argument("--oof", default=str(REPO / "data" / "review_finetune_oof.npz"))
    ap.add_argument("--sealed", default=str(REPO / "data" / "review_finetune_test_sealed.npz"))
    ap.add_argument("--reuse-oof", action="store_true", help="score the saved --oof, train nothing")
    ap.add_argument("--no-test", action="store_true", help="choose on validation, do not read the test")
    ap.add_argument("--out", default="review_finetune_calibration")
    args = ap.parse_args(argv)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    load0 = os.getloadavg()[0]
    oof_path = Path(args.oof)
    if args.reuse_oof:
        data = np.load(oof_path, allow_pickle=False)
        oof = {k: data[k] for k in data.files if k != "meta"} | {"meta": json.loads(str(data["meta"]))}
    else:
        oof = out_of_fold(args)
        oof["meta"] |= {"commit": commit, "load_average_start": load0, "load_average_end": os.getloadavg()[0]}
        oof_path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {k: v for k, v in oof.items() if k != "meta"}
        np.savez(oof_path, meta=json.dumps(oof["meta"], default=str), **arrays)
    y = oof["y"]
    preds = strategies(oof)
    reference = preds["one_window"]
    rows = {}
    for name, pred in preds.items():
        if name.endswith("_weights"):
            continue
        row = {"pooled_val_macro_f1": _f1(y, pred)}
        row["per_window"] = [_f1(y[oof["window"] == k], pred[oof["window"] == k]) for k in range(args.folds)]
        if name != "one_window":
            row["vs_one_window"] = macro_f1_comparison(y, pred, reference).as_dict()
        if f"{name}_weights" in preds:
            row["weights_per_window"] = preds[f"{name}_weights"].tolist()
        rows[name] = row
    choice = choose_strategy(rows)
    test = None if args.no_test else evaluate_on_test(choice, oof, args)
    out = {
        "commit": commit,
        "chosen_on_validation": choice,
        "test": test,
        "oof_commit": oof["meta"].get("commit"),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [oof["meta"].get("load_average_start"), oof["meta"].get("load_average_end")],
        "epochs": args.epochs,
        "n_pooled": len(y),
        "n_pooled_per_class": np.bincount(y, minlength=3).tolist(),
        "meta": oof["meta"],
        "strategies": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(out, indent=1, default=str))
    write_markdown(out, RESULTS / f"{args.out}.md")
    for name, r in rows.items():
        print(f"{name}: {r['pooled_val_macro_f1']:.4f} {r.get('vs_one_window', '')}")
    print(f"chosen on validation: {choice}")
    return 0


def write_markdown(out: dict, path: Path) -> None:
    meta = out["meta"]
    epochs = ", ".join(f"{f['epochs_run']} ({f['best_epoch']})" for f in meta["folds"])
    lines = [
        "# Review fine-tune: decision calibration and ensembles on rolling validation windows "
        "(no test reviews)",
        "",
        (
            f"Out-of-fold predictions: commit {out['oof_commit']}, {out['cpus']} CPUs (torch threads "
            f"{out['torch_threads']}), load average {out['load_average'][0]:.1f} → "
            f"{out['load_average'][1]:.1f}; "
            f"{meta['n_training_reviews']:,} 3-class training reviews before the test cutoff "
            f"{meta['test_cutoff'][:10]}, {len(meta['folds'])} rolling windows ({out['n_pooled']} reviews "
            f"pooled, negative/neutral/positive {out['n_pooled_per_class']}). Fine-tune: the asset's "
            f"defaults (top 2 layers, lr 1e-4, query prefix) with a FIXED {out['epochs']} epochs and "
            f"patience 2 instead of a CPU budget; epochs run (best) per window: {epochs}; "
            f"{meta['finetune_cpu_seconds']:.0f} CPU s, {meta['finetune_seconds']:.0f} s wall."
        ),
        "",
        "| strategy | pooled validation macro-F1 | per window | vs one_window [95 %] "
        "| ensemble weight per window |",
        "|---|---:|---|---|---|",
    ]
    for name, r in out["strategies"].items():
        vs = r.get("vs_one_window")
        ci = f"{vs['diff']:+.3f} [{vs['ci_low']:+.3f}, {vs['ci_high']:+.3f}]" if vs else "reference"
        per = ", ".join(f"{v:.3f}" for v in r["per_window"])
        w = ", ".join(f"{v:.1f}" for v in r.get("weights_per_window", [])) or "–"
        lines.append(f"| {name} | {r['pooled_val_macro_f1']:.3f} | {per} | {ci} | {w} |")
    lines += [
        "",
        "Every strategy except `window_in_sample` is cross-fitted: a window's offsets (and ensemble weight) "
        "are fitted on other windows only. `window_in_sample` (each window's offsets fitted on itself, as "
        "in review_finetune_folds.md) is optimistic and shown for reference only. Intervals: paired "
        "bootstrap over the pooled reviews (1,000 resamples); an interval containing 0 is no difference.",
        "",
        f"**Chosen on validation** (rule fixed before the test was read: the best served strategy, `none` or "
        f"`pooled`, only if its interval vs `one_window` excludes 0): `{out['chosen_on_validation']}`.",
    ]
    test = out.get("test")
    if test:
        lines += [
            "",
            f"## The chosen strategy on the test reviews (read once; offsets {test['offsets']})",
            "",
            "The newest window's fine-tune (trained on the reviews before the last validation window, epoch "
            "chosen there: the model the asset keeps) vs TF-IDF and the frozen head trained on every "
            "training review.",
            "",
            "| setting | metric | fine-tuned | frozen head | TF-IDF | fine-tuned − TF-IDF [95 %] "
            "| fine-tuned − frozen head [95 %] |",
            "|---|---|---:|---:|---:|---|---|",
        ]
        for setting, e in test["settings"].items():
            for metric in ("macro_f1", "accuracy"):
                m = e["metrics"]
                cis = [e[f"{metric}_vs_{b}"] for b in ("tfidf", "frozen_head")]
                ci = [f"{c['diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]" for c in cis]
                lines.append(
                    f"| {setting} ({e['n_test']}) | {metric} | {m['finetuned'][metric]:.3f} | "
                    f"{m['frozen_head'][metric]:.3f} | {m['tfidf'][metric]:.3f} | {ci[0]} | {ci[1]} |"
                )
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
