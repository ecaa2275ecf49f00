"""Tables meant to leave the company: ``reports/regional_demand_dp``, monthly orders and revenue per region
with differential privacy (Laplace noise on clipped per-customer contributions, :mod:`ecom_pipeline.dp`).

The asset writes ``reports.regional_demand_dp`` and ``<data_root>/reports/regional_demand_dp.csv`` (the file
to hand over).  Only the noisy table is published; the clipped true counts never leave the step."""

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from ecom_pipeline.resources import PathsResource, SourceResource, WarehouseResource
from ecom_pipeline.routing import WAREHOUSE_POOL

STAGING_DEPS = [dg.AssetKey(["staging", t]) for t in ("orders", "order_items", "customers")]
COLUMNS = {
    "orders": ["order_id", "customer_id", "purchased_at"],
    "order_items": ["order_id", "price", "freight"],
    "customers": None,  # every location column the source has (state, city, postal code, lat/lng, country)
}


class RegionalDemandDPConfig(dg.Config):
    epsilon: float = 1.0  # per month and customer, split between order counts and revenue
    orders_share: float = 0.5
    # auto: the finest of state / country whose cells have enough contributors (dp.choose_level);
    # or country | state | zip3
    level: str = "auto"
    max_orders_per_customer: int = 3
    max_revenue_per_customer: float = 1000.0
    suppress_below_noise_scales: float = 2.0  # suppress cells with a noisy count < this x noise scale
    seed: int | None = None  # None: fresh noise every run (a fixed seed only for reproducible tests)


def _dp_config(config: RegionalDemandDPConfig):
    """The framework-free :class:`ecom_pipeline.dp.DPConfig` for the asset's run config (level and seed
    are the asset's own)."""
    from ecom_pipeline.dp import DPConfig

    return DPConfig(
        epsilon=config.epsilon,
        orders_share=config.orders_share,
        max_orders_per_customer=config.max_orders_per_customer,
        max_revenue_per_customer=config.max_revenue_per_customer,
        suppress_below_noise_scales=config.suppress_below_noise_scales,
    )


def _write_report_csv(paths: PathsResource, report: pd.DataFrame) -> Path:
    """The file to hand over: ``<data_root>/reports/regional_demand_dp.csv``."""
    csv = paths.report("regional_demand_dp.csv")
    csv.parent.mkdir(parents=True, exist_ok=True)
    report.to_csv(csv, index=False)
    return csv


@dg.asset(
    key=dg.AssetKey(["reports", "regional_demand_dp"]),
    group_name="sharing",
    pool=WAREHOUSE_POOL,
    deps=STAGING_DEPS,
    kinds={"duckdb", "csv"},
    tags={"ecom/stage": "scoring"},
    description="Monthly order counts and revenue (shop currency) per region of the shop's own countries "
    "(country, first-level division or postal prefix; level=auto picks the finest with enough contributors) "
    "with differential privacy, safe to share outside the company: each customer's monthly contribution is "
    "clipped, Laplace noise scaled to the clip / epsilon is added to every cell of the public region x month "
    "grid, negatives are clamped and low-count cells suppressed. See docs/privacy.md.",
)
def regional_demand_dp(
    context: dg.AssetExecutionContext,
    config: RegionalDemandDPConfig,
    warehouse: WarehouseResource,
    source: SourceResource,
    paths: PathsResource,
) -> dg.MaterializeResult:
    from ecom_pipeline.dp import (
        AUTO_LEVELS,
        choose_level,
        dp_regional_report,
        noise_scales,
        orders_by_regions,
        public_regions,
    )
    from ecom_pipeline.warehouse.tables import read_table, write_table

    cfg = _dp_config(config)
    with warehouse.connect(read_only=True) as con:
        frames = {t: read_table(con, f"staging.{t}", cols) for t, cols in COLUMNS.items()}
    cust = frames["customers"]
    countries = source.shop_countries(cust["country"] if "country" in cust.columns else None)
    levels = AUTO_LEVELS if config.level == "auto" else (config.level,)
    by_level = orders_by_regions(frames["orders"], cust, frames["order_items"], levels, countries)
    level, shares = choose_level(by_level, cfg) if config.level == "auto" else (config.level, {})
    orders = by_level[level]
    if orders.empty:
        context.log.warning(f"no orders with a known customer {level}: the report has only noise cells")
    grid = public_regions(level, countries)
    report = dp_regional_report(orders, cfg, level, regions=grid, rng=np.random.default_rng(config.seed))
    with warehouse.connect() as con:
        write_table(con, "reports.regional_demand_dp", report)
    csv = _write_report_csv(paths, report)
    b_orders, b_revenue = noise_scales(cfg)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(report),
            "epsilon": cfg.epsilon,
            "epsilon_orders": cfg.epsilon_orders,
            "epsilon_revenue": cfg.epsilon_revenue,
            "noise_scale_orders": b_orders,
            "noise_scale_revenue": b_revenue,
            "level": level,
            "level_choice": config.level,
            "share_of_orders_in_populated_cells": shares,
            "countries": ", ".join(countries),
            "grid_regions": len(grid),
            "orders_placed": len(orders),
            "orders_not_placed_at_level": int(len(frames["orders"]) - len(orders)),
            "orders_outside_grid": int((~orders["region"].isin(grid)).sum()) if len(orders) else 0,
            "revenue_unit": "the shop's own currency, as staged (no conversion)",
            "months": int(report["month"].nunique()),
            "suppressed_fraction": float(report["suppressed"].mean()) if len(report) else 0.0,
            "csv": dg.MetadataValue.path(str(csv)),
            "guarantee": f"epsilon={cfg.epsilon} per month and customer (k months of activity: k*epsilon)",
        }
    )


def build() -> dg.Definitions:
    return dg.Definitions(assets=[regional_demand_dp])
