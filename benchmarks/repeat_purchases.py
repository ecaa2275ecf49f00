"""Repurchase and item-level recommendation evaluation on real repeat purchases: the UCI Online Retail UK shop
(2010-12 .. 2011-12, 4,339 known customers) and, for contrast, the Olist sample (97 % single-order customers).

Each shop's orders become the canonical orders / order_items / products / customers frames; then the project's
own framework-free functions run exactly as the assets call them: ``train_and_evaluate`` (repurchase,
temporal: train at T-2h, test at T-h) and ``evaluate_level`` (recommenders, user-level temporal split), with
the serving gate's paired-bootstrap intervals.  Claims are made only above the documented minimums
(``MIN_TEST_POSITIVES`` for repurchase, ``MIN_EVAL_USERS`` below for recommendations).  Writes
benchmarks/results/repeat_purchases.{json,md}.  Measures only.

    python benchmarks/repeat_purchases.py [--datasets uk,olist] [--horizon 90]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

DATASETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
RESULTS = Path(__file__).parent / "results"
MIN_EVAL_USERS = 1000  # below this many evaluable users a recommender comparison is reported, not claimed


def uk_tables() -> dict[str, pd.DataFrame]:
    """Known customers only (CustomerID 0 = guest); product lines only (non-product stock codes and zero
    prices left out, counted in the notes); one category per product: its first description word (no
    taxonomy)."""
    df = pd.read_parquet(DATASETS / "online_retail_uk" / "online_retail_2010_2011.parquet")
    known = df[(df["CustomerID"] > 0) & (df["UnitPrice"] > 0) & df["StockCode"].astype(str).str.match(r"^\d")]
    known = known.assign(
        customer_id="c" + known["CustomerID"].astype(int).astype(str),
        order_id="o" + known["InvoiceNo"].astype(str),
        product_id=known["StockCode"].astype(str),
        ts=pd.to_datetime(known["InvoiceDate"]),
    )
    orders = known.groupby("order_id", as_index=False).agg(
        customer_id=("customer_id", "first"), purchased_at=("ts", "min")
    )
    orders = orders.assign(status="delivered", delivered_at=pd.NaT, estimated_delivery_at=pd.NaT)
    items = known.assign(price=known["UnitPrice"] * known["Quantity"], freight=0.0)[
        ["order_id", "product_id", "price", "freight"]
    ]
    products = known.drop_duplicates("product_id").assign(
        category=lambda d: d["Description"].fillna("unknown").str.split().str[0].str.lower()
    )[["product_id", "category"]]
    customers = known.drop_duplicates("customer_id").assign(
        state=lambda d: d["Country"], city=None, zip_prefix=None, lat=np.nan, lng=np.nan
    )[["customer_id", "state", "city", "zip_prefix", "lat", "lng"]]
    notes = {"lines": len(df), "lines_used": len(known), "guest_lines": int((df["CustomerID"] <= 0).sum())}
    return {
        "orders": orders,
        "order_items": items,
        "products": products,
        "customers": customers,
        "notes": notes,
    }


def olist_tables() -> dict[str, pd.DataFrame]:
    d = DATASETS / "olist"
    o = pd.read_csv(d / "olist_orders_dataset.csv.gz")
    c = pd.read_csv(d / "olist_customers_dataset.csv.gz")
    it = pd.read_csv(d / "olist_order_items_dataset.csv.gz")
    p = pd.read_csv(d / "olist_products_dataset.csv.gz")
    # a person is customer_unique_id (customer_id is per order in Olist)
    o = o.merge(c[["customer_id", "customer_unique_id", "customer_state"]], on="customer_id")
    orders = pd.DataFrame(
        {
            "order_id": o["order_id"],
            "customer_id": o["customer_unique_id"],
            "status": o["order_status"],
            "purchased_at": pd.to_datetime(o["order_purchase_timestamp"]),
            "delivered_at": pd.to_datetime(o["order_delivered_customer_date"]),
            "estimated_delivery_at": pd.to_datetime(o["order_estimated_delivery_date"]),
        }
    )
    items = pd.DataFrame(
        {
            "order_id": it["order_id"],
            "product_id": it["product_id"],
            "price": it["price"],
            "freight": it["freight_value"],
        }
    )
    products = pd.DataFrame(
        {"product_id": p["product_id"], "category": p["product_category_name"].fillna("unknown")}
    )
    customers = (
        o.drop_duplicates("customer_unique_id")
        .rename(columns={"customer_unique_id": "cid"})[["cid", "customer_state"]]
        .rename(columns={"cid": "customer_id", "customer_state": "state"})
        .assign(city=None, zip_prefix=None, lat=np.nan, lng=np.nan)
    )
    return {
        "orders": orders,
        "order_items": items,
        "products": products,
        "customers": customers,
        "notes": {"orders": len(orders)},
    }


def repurchase(tables: dict, horizon: int) -> dict:
    from ecom_pipeline.ml.users.repurchase import MIN_TEST_POSITIVES, train_and_evaluate

    t0 = time.perf_counter()
    res = train_and_evaluate({k: v for k, v in tables.items() if k != "notes"}, horizon_days=horizon)
    out = {
        "seconds": time.perf_counter() - t0,
        "train_cutoff": str(res.train_cutoff),
        "test_cutoff": str(res.test_cutoff),
        "evaluable_customers": res.n_test,
        "test_positives": res.test_positives,
        "min_test_positives": MIN_TEST_POSITIVES,
        "served": res.served,
        "reason": res.serve_reason or res.message,
        "metrics": res.metrics,
        "comparisons": [c.as_dict() for c in res.comparisons],
    }
    out["claim"] = res.test_positives >= MIN_TEST_POSITIVES
    return out


def recommendations(tables: dict, k: int = 10) -> dict:
    from ecom_pipeline.assets.recommender import RecommenderConfig, _gate_levels, _params
    from ecom_pipeline.ml.recsys.interactions import build_interactions
    from ecom_pipeline.ml.recsys.pipeline import evaluate_level

    cfg = RecommenderConfig()
    inter = build_interactions(tables["orders"], tables["order_items"], None, tables["products"])
    regions = tables["customers"].set_index("customer_id")["state"]
    t0 = time.perf_counter()
    r = evaluate_level(
        inter,
        level="item",
        k=k,
        models=["popularity", "recent_popularity", "regional_popularity", "item_knn", "als"],
        params=_params(cfg),
        user_regions=regions,
        log=lambda *_: None,
    )
    decisions, records = _gate_levels([r], cfg, "bench", None)
    d = decisions[0]
    return {
        "seconds": time.perf_counter() - t0,
        "cutoff": str(r.cutoff),
        "evaluable_users": r.n_eval_users,
        "items": r.n_items,
        "min_eval_users": MIN_EVAL_USERS,
        "claim": r.n_eval_users >= MIN_EVAL_USERS,
        "message": r.message,
        "ndcg": {m: v.get(f"ndcg@{k}") for m, v in r.metrics.items()},
        "recall": {m: v.get(f"recall@{k}") for m, v in r.metrics.items()},
        "vs_best_baseline": [
            {
                "model": x.model,
                "baseline": x.baseline,
                "value": x.value,
                "baseline_value": x.baseline_value,
                "ci_low": x.ci_low,
                "ci_high": x.ci_high,
                "n_units": x.n_units,
                "significant": x.significant,
            }
            for x in records
        ],
        "served": d.served,
        "reason": d.reason,
    }


def markdown(res: dict) -> str:
    lines = [
        "# Repurchase and recommendations on real repeat purchases",
        "",
        (
            f"{res['date']} at commit {res['commit']}, load average at start "
            f"{', '.join(f'{x:.1f}' for x in res['load_average_at_start'])} (shared 2-core machine: times "
            "are upper bounds). Intervals: 95 % paired bootstrap (customers / users resampled) of candidate "
            "minus baseline."
        ),
        "",
    ]
    for d in res["datasets"]:
        lines += [f"## {d['dataset']}", ""]
        if "skipped" in d:
            lines += [f"skipped: {d['skipped']}", ""]
            continue
        r = d["repurchase"]
        lines += [
            (
                f"**Repurchase within {res['horizon']} days** (train at {r['train_cutoff'][:10]}, test at "
                f"{r['test_cutoff'][:10]}): {r['evaluable_customers']} evaluable customers, "
                f"{r['test_positives']} positives (claim needs >= {r['min_test_positives']}: "
                f"{'yes' if r['claim'] else 'NO: too sparse'})."
            ),
            "",
            "| metric | gbm_calibrated | rfm_logistic | difference [95 % interval] | significant |",
            "|---|---|---|---|---|",
        ]
        for c in r["comparisons"]:
            lines.append(
                f"| {c['metric']} | {c['candidate_value']:.4f} | {c['baseline_value']:.4f} | "
                f"{c['diff']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] | "
                f"{'yes' if c['significant'] else 'no'} |"
            )
        lines += ["", f"Served: **{r['served']}** ({r['reason']}).", ""]
        e = d["recommendations"]
        lines += [
            (
                f"**Item-level recommendations** (NDCG@10, user-level temporal split at {e['cutoff'][:10]}): "
                f"{e['evaluable_users']} evaluable users, {e['items']} items (claim needs >= "
                f"{e['min_eval_users']}: {'yes' if e['claim'] else 'NO: too sparse'})."
            ),
            "",
            "| model | NDCG@10 | best baseline | baseline NDCG@10 | difference [95 % interval] | users |",
            "|---|---|---|---|---|---|",
        ]
        for v in e["vs_best_baseline"]:
            lines.append(
                f"| {v['model']} | {v['value']:.4f} | {v['baseline']} | {v['baseline_value']:.4f} | "
                f"{v['value'] - v['baseline_value']:+.4f} [{v['ci_low']:+.4f}, {v['ci_high']:+.4f}] | "
                f"{v['n_units']} |"
            )
        lines += [
            "",
            "All models' NDCG@10: "
            + ", ".join(f"{m} {v:.4f}" for m, v in e["ndcg"].items() if v is not None),
            "",
            f"Served: **{e['served']}** ({e['reason']}).",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="uk,olist")
    ap.add_argument("--horizon", type=int, default=90)
    args = ap.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parent,
    ).stdout.strip()
    res = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "load_average_at_start": os.getloadavg(),
        "horizon": args.horizon,
        "datasets": [],
    }
    loaders = {"uk": ("online_retail_uk", uk_tables), "olist": ("olist", olist_tables)}
    for name in args.datasets.split(","):
        folder, load = loaders[name]
        if not (DATASETS / folder).exists():
            res["datasets"].append({"dataset": folder, "skipped": f"not found at {DATASETS / folder}"})
            continue
        t = load()
        entry = {
            "dataset": folder,
            "notes": t["notes"],
            "repurchase": repurchase(t, args.horizon),
            "recommendations": recommendations(t),
        }
        res["datasets"].append(entry)
        print(
            json.dumps(
                {
                    "dataset": folder,
                    "repurchase_served": entry["repurchase"]["served"],
                    "recs_served": entry["recommendations"]["served"],
                }
            ),
            flush=True,
        )
    res["load_average_at_end"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "repeat_purchases.json").write_text(json.dumps(res, indent=1, default=str))
    (RESULTS / "repeat_purchases.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
