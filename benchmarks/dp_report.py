"""Utility / privacy trade-off of the differentially private regional report on the real Olist sample.

Ingests ../shared/datasets/olist (or $ECOM_DATA_DIR) through the pipeline's ``ingest`` job into a temporary
warehouse, then releases ``ecom_pipeline.dp.dp_regional_report`` for each epsilon (default config otherwise:
clip 3 orders / 1,000 BRL per customer and month, half the budget on counts, suppression below 10) at state
and CEP-3 level, ``REPEATS`` times with different noise, and compares with the unclipped truth:
mean absolute error per cell, relative error on regions with >= 100 orders, Spearman rank correlation of
region totals, fraction of cells suppressed.  Writes benchmarks/results/dp_report.json and .md.

    .venv/bin/python benchmarks/dp_report.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
EPSILONS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)
LEVELS = ("state", "zip3")
REPEATS = 20
RESULTS = REPO / "benchmarks" / "results"


def load_olist_staging(data_dir: Path, root: Path) -> dict[str, pd.DataFrame]:
    import dagster as dg
    import duckdb

    os.environ.update(
        {"ECOM_DATA_ROOT": str(root), "ECOM_DATA_SOURCE": "olist", "ECOM_DATA_DIR": str(data_dir)}
    )
    for var in ("ECOM_WAREHOUSE", "MLFLOW_TRACKING_URI", "ECOM_MAPPING", "ECOM_ENV"):
        os.environ.pop(var, None)
    from ecom_pipeline.config import Settings
    from ecom_pipeline.definitions import build_definitions

    settings = Settings.from_env()
    result = (
        build_definitions(settings)
        .resolve_job_def("ingest")
        .execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=True)
    )
    assert result.success
    con = duckdb.connect(str(settings.warehouse), read_only=True)
    try:
        return {
            "orders": con.execute("SELECT order_id, customer_id, purchased_at FROM staging.orders").fetchdf(),
            "customers": con.execute(
                "SELECT customer_id, state, zip_prefix FROM staging.customers"
            ).fetchdf(),
            "order_items": con.execute("SELECT order_id, price, freight FROM staging.order_items").fetchdf(),
        }
    finally:
        con.close()


def trade_off(staging: dict[str, pd.DataFrame]) -> list[dict]:
    from ecom_pipeline.dp import (
        DPConfig,
        dp_regional_report,
        noise_scales,
        orders_by_region,
        public_regions,
        true_totals,
        utility,
    )

    rows = []
    for level in LEVELS:
        orders = orders_by_region(
            staging["orders"], staging["customers"], staging["order_items"], level, ("BR",)
        )
        grid = public_regions(level, ("BR",))
        truth = true_totals(orders)
        for eps in EPSILONS:
            cfg = DPConfig(epsilon=eps)
            runs = [
                utility(
                    dp_regional_report(orders, cfg, level, regions=grid, rng=np.random.default_rng(seed)),
                    truth,
                )
                for seed in range(REPEATS)
            ]
            mean = {k: float(np.nanmean([r[k] for r in runs])) for k in runs[0]}
            b_orders, b_revenue = noise_scales(cfg)
            rows.append(
                {
                    "level": level,
                    "epsilon": eps,
                    "noise_scale_orders": b_orders,
                    "noise_scale_revenue": b_revenue,
                    "orders": len(orders),
                    "customers": int(orders["customer_id"].nunique()),
                    **mean,
                }
            )
    return rows


def _markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Differentially private regional report: utility vs epsilon (Olist sample)",
        "",
        f"{meta['orders']:,} orders with a known region, {meta['months']} months; default clipping "
        "(3 orders and 1,000 BRL per customer and month), half the budget on counts, cells with a noisy "
        f"count under 2 noise scales suppressed; mean of {REPEATS} releases per row. Errors are against the "
        "unclipped truth; suppressed cells read as 0. epsilon is per month and customer.",
        "",
        "| level | epsilon | noise scale orders / revenue | MAE orders / cell | MAE revenue / cell | "
        "rel. error orders, regions >= 100 orders (n) | rel. error revenue (same) | rank corr. regions | "
        "suppressed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['level']} | {r['epsilon']:g} | {r['noise_scale_orders']:.1f} / "
            f"{r['noise_scale_revenue']:,.0f} | {r['mae_orders']:.2f} | {r['mae_revenue']:,.0f} | "
            f"{r['rel_err_orders_large']:.3f} ({r['large_regions']:.0f}) | {r['rel_err_revenue_large']:.3f} "
            f"| {r['rank_corr_regions']:.3f} | {r['suppressed_fraction']:.1%} |"
        )
    lines += [
        "",
        f"Ingest {meta['ingest_s']:.0f} s, releases {meta['release_s']:.0f} s "
        "(shared 2-core machine: upper bounds).",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    data_dir = Path(os.environ.get("ECOM_DATA_DIR") or REPO.parent / "shared" / "datasets" / "olist")
    if not data_dir.is_dir():
        print(f"Olist sample not found at {data_dir}; set ECOM_DATA_DIR")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        staging = load_olist_staging(data_dir, Path(tmp) / "data")
        t1 = time.perf_counter()
        rows = trade_off(staging)
        t2 = time.perf_counter()
    from ecom_pipeline.dp import orders_by_region

    orders = orders_by_region(
        staging["orders"], staging["customers"], staging["order_items"], "state", ("BR",)
    )
    meta = {
        "dataset": str(data_dir),
        "orders": len(orders),
        "months": int(orders["month"].nunique()),
        "repeats": REPEATS,
        "ingest_s": t1 - t0,
        "release_s": t2 - t1,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dp_report.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (RESULTS / "dp_report.md").write_text(_markdown(rows, meta))
    print(_markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
