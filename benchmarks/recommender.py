"""Recommender + repurchase benchmark: every model vs the baselines on the planted synthetic world and on
the Olist sample (read directly from its CSVs). Writes benchmarks/results/recommender.{json,md}. Measures
only.

    python benchmarks/recommender.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from ecom_pipeline.ml.recsys.interactions import build_interactions
from ecom_pipeline.ml.recsys.pipeline import evaluate_level
from ecom_pipeline.ml.recsys.planted import planted_world
from ecom_pipeline.ml.users.repurchase import train_and_evaluate

OLIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "olist"
MODELS = ["popularity", "recent_popularity", "regional_popularity", "item_knn", "als"]


def olist_tables(d: Path) -> dict[str, pd.DataFrame]:
    r = lambda n: pd.read_csv(d / f"olist_{n}_dataset.csv.gz")  # noqa: E731
    cust = r("customers")
    orders = r("orders").merge(cust[["customer_id", "customer_unique_id"]], on="customer_id")
    orders = pd.DataFrame(
        {
            "order_id": orders["order_id"],
            "customer_id": orders["customer_unique_id"],
            "status": orders["order_status"],
            "purchased_at": pd.to_datetime(orders["order_purchase_timestamp"]),
            "delivered_at": pd.to_datetime(orders["order_delivered_customer_date"]),
            "estimated_delivery_at": pd.to_datetime(orders["order_estimated_delivery_date"]),
        }
    )
    items = r("order_items").rename(columns={"order_item_id": "item_seq", "freight_value": "freight"})
    products = r("products").rename(columns={"product_category_name": "category"})[["product_id", "category"]]
    customers = cust.drop_duplicates("customer_unique_id").rename(columns={"customer_unique_id": "cid"})[
        ["cid", "customer_state", "customer_city"]
    ]
    customers.columns = ["customer_id", "state", "city"]
    rev = r("order_reviews").rename(columns={"review_score": "score"})
    reviews = pd.DataFrame(
        {
            "order_id": rev["order_id"],
            "score": rev["score"],
            "created_at": pd.to_datetime(rev["review_creation_date"]),
        }
    )
    return dict(orders=orders, order_items=items, products=products, customers=customers, reviews=reviews)


def run(name: str, tables: dict, horizon: int) -> dict:
    t0 = time.perf_counter()
    inter = build_interactions(
        tables["orders"], tables["order_items"], tables.get("events"), tables["products"]
    )
    regions = tables["customers"].set_index("customer_id")["state"]
    out = {"dataset": name, "interactions": len(inter), "levels": {}}
    for level, k in (("item", 10), ("category", 5)):
        # the two-tower is an item-level model (its item tower needs product features)
        models = MODELS + (["two_tower"] if level == "item" else [])
        r = evaluate_level(
            inter,
            level=level,
            k=k,
            models=models,
            params={},
            user_regions=regions,
            log=lambda *_: None,
            extra_fit_args={"products": tables["products"], "device": "cpu"},
        )
        out["levels"][level] = {
            "k": k,
            "eval_users": r.n_eval_users,
            "items": r.n_items,
            "message": r.message,
            "winner": r.winner(),
            "metrics": r.metrics,
            "fit_seconds": r.fit_seconds,
            "per_100k_fit_seconds": {m: s / max(len(inter), 1) * 1e5 for m, s in r.fit_seconds.items()},
        }
    rp = train_and_evaluate(tables, horizon_days=horizon)
    out["repurchase"] = {
        "horizon_days": horizon,
        "metrics": rp.metrics,
        "message": rp.message,
        "n_test": rp.n_test,
        "test_positive_rate": rp.test_positive_rate,
    }
    out["seconds"] = time.perf_counter() - t0
    return out


def main() -> None:
    results = []
    w = planted_world(n_users=2000, n_items=500, seed=0)
    results.append(run("synthetic_planted", w, 60))
    if OLIST.exists():
        results.append(run("olist_sample", olist_tables(OLIST), 90))
    res_dir = Path(__file__).parent / "results"
    (res_dir / "recommender.json").write_text(json.dumps(results, indent=1, default=str))
    lines = ["# Recommender and repurchase benchmark", ""]
    for r in results:
        lines.append(f"## {r['dataset']} ({r['interactions']:,} interactions, {r['seconds']:.0f}s)")
        for level, lv in r["levels"].items():
            k = lv["k"]
            lines.append(
                f"\n{level} level, k={k}, {lv['eval_users']} evaluated users, winner: {lv['winner']} "
                f"{lv['message']}\n"
            )
            lines.append(
                f"| model | recall@{k} | ndcg@{k} | hit_rate@{k} | map@{k} | coverage | novelty | fit s |"
            )
            lines.append("|---|---|---|---|---|---|---|---|")
            for m, ms in lv["metrics"].items():
                lines.append(
                    f"| {m} | {ms[f'recall@{k}']:.4f} | {ms[f'ndcg@{k}']:.4f} | {ms[f'hit_rate@{k}']:.4f} | "
                    f"{ms[f'map@{k}']:.4f} | {ms['catalog_coverage']:.3f} | {ms['novelty']:.2f} | "
                    f"{lv['fit_seconds'][m]:.2f} |"
                )
        rp = r["repurchase"]
        lines.append(
            f"\nrepurchase within {rp['horizon_days']} days ({rp['n_test']} test customers, positive rate "
            f"{rp['test_positive_rate']:.3f}) {rp['message']}\n"
        )
        lines.append("| model | auc | pr_auc | ece | brier |\n|---|---|---|---|---|")
        for m, ms in rp["metrics"].items():
            lines.append(
                f"| {m} | {ms.get('auc', float('nan')):.4f} | {ms.get('pr_auc', float('nan')):.4f} | "
                f"{ms['ece']:.4f} | {ms['brier']:.4f} |"
            )
        lines.append("")
    (res_dir / "recommender.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
