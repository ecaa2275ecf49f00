"""Tables meant to leave the company: ``reports/regional_demand_dp``, monthly orders and revenue per region
with differential privacy (Laplace noise on clipped per-customer contributions, :mod:`ecom_pipeline.dp`).

The asset writes ``reports.regional_demand_dp`` and ``<data_root>/reports/regional_demand_dp.csv`` (the file
to hand over).  Only the noisy table is published; the clipped true counts never leave the step."""

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from ecom_pipeline.resources import PathsResource, SourceResource, WarehouseResource
from ecom_pipeline.routing import WAREHOUSE_OP_TAGS, WAREHOUSE_POOL

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
    seed: int | None = None  # None: fresh noise for each release (a fixed seed only for reproducible tests)
    # release every closed month again (after a change of settings): spends the privacy budget again
    rerelease: bool = False


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
    op_tags=WAREHOUSE_OP_TAGS,
    deps=STAGING_DEPS,
    kinds={"duckdb", "csv"},
    tags={"ecom/stage": "scoring"},
    description="Monthly order counts and revenue (shop currency) per region of the shop's own countries "
    "(country, first-level division or postal prefix; level=auto picks the finest with enough contributors) "
    "with differential privacy, safe to share outside the company: each customer's monthly contribution is "
    "clipped, Laplace noise scaled to the clip / epsilon is added to every cell of the public region x month "
    "grid, negatives are clamped and low-count cells suppressed. Each closed month is released once and "
    "published unchanged from then on (reports.regional_demand_dp_releases); the month of the latest order "
    "waits until it closes. See docs/privacy.md.",
)
def regional_demand_dp(
    context: dg.AssetExecutionContext,
    config: RegionalDemandDPConfig,
    warehouse: WarehouseResource,
    source: SourceResource,
    paths: PathsResource,
) -> dg.MaterializeResult:
    from ecom_pipeline.dp import RELEASE_COLUMNS, RELEASES, REPORT_COLUMNS, plan_release, release_signature
    from ecom_pipeline.warehouse.tables import atomic, write_table

    cfg = _dp_config(config)
    span, data_countries, ledger = _release_inputs(warehouse)
    countries = source.shop_countries(data_countries if data_countries.notna().any() else None)
    signature = release_signature(cfg, config.level, countries)
    plan = plan_release(ledger, signature, span[0], span[1], rerelease=config.rerelease)
    (context.log.warning if plan.blocked else context.log.info)(plan.reason)
    released, meta = plan.kept, {}
    if plan.months:
        new, meta = _release(config, cfg, warehouse, countries, plan)
        if not meta["orders_placed"]:
            context.log.warning(
                "no orders with a placed customer in the months released now: their cells are noise only"
            )
        new = new.assign(signature=signature, released_at=pd.Timestamp.now(tz="UTC").tz_localize(None))
        released = (
            pd.concat([x for x in (plan.kept, new) if len(x)], ignore_index=True) if len(new) else released
        )
    report = (
        released[REPORT_COLUMNS].sort_values(["region", "month"]).reset_index(drop=True)
        if len(released)
        else pd.DataFrame({c: pd.Series(dtype=object) for c in REPORT_COLUMNS})
    )
    with warehouse.connect() as con, atomic(con):
        if plan.months or config.rerelease:
            write_table(con, RELEASES, released if len(released) else pd.DataFrame(columns=RELEASE_COLUMNS))
        write_table(con, "reports.regional_demand_dp", report)
    csv = _write_report_csv(paths, report)
    return dg.MaterializeResult(metadata=_report_metadata(config, cfg, plan, report, countries, csv) | meta)


def _release_inputs(warehouse: WarehouseResource) -> tuple[tuple, pd.Series, pd.DataFrame]:
    """The orders' time span, the customers' country column and the ledger of released cells."""
    from ecom_pipeline.dp import RELEASE_COLUMNS, RELEASES
    from ecom_pipeline.warehouse.tables import read_table, table_exists

    with warehouse.connect(read_only=True) as con:
        span = (
            con.execute("SELECT min(purchased_at), max(purchased_at) FROM staging.orders").fetchone()
            if table_exists(con, "staging.orders")
            else (None, None)
        )
        return (
            span,
            read_table(con, "staging.customers", ["country"])["country"],
            read_table(con, RELEASES, RELEASE_COLUMNS),
        )


def _report_metadata(config: RegionalDemandDPConfig, cfg, plan, report: pd.DataFrame, countries, csv) -> dict:
    from ecom_pipeline.dp import noise_scales

    b_orders, b_revenue = noise_scales(cfg)
    return {
        "dagster/row_count": len(report),
        "release": plan.reason,
        "months_released_now": [str(m.date()) for m in plan.months],
        "months_published": int(report["month"].nunique()),
        "open_month_not_released": str(plan.open_month.date()) if plan.open_month is not None else "n/a",
        "epsilon": cfg.epsilon,
        "epsilon_orders": cfg.epsilon_orders,
        "epsilon_revenue": cfg.epsilon_revenue,
        "noise_scale_orders": b_orders,
        "noise_scale_revenue": b_revenue,
        "level": str(report["level"].iloc[0]) if len(report) else (plan.level or "n/a"),
        "level_choice": config.level,
        "countries": ", ".join(countries),
        "revenue_unit": "the shop's own currency, as staged (no conversion)",
        "suppressed_fraction": float(report["suppressed"].mean()) if len(report) else 0.0,
        "csv": dg.MetadataValue.path(str(csv)),
        "guarantee": f"epsilon={cfg.epsilon} per month and customer (k months of activity: k*epsilon); "
        "each month released once",
    }


def _release(config: RegionalDemandDPConfig, cfg, warehouse: WarehouseResource, countries, plan):
    """The noisy cells of ``plan.months`` (the level chosen now when no earlier release fixed it) and what
    the release placed, for the metadata."""
    from ecom_pipeline.dp import (
        AUTO_LEVELS,
        choose_level,
        dp_regional_report,
        orders_by_regions,
        public_regions,
    )
    from ecom_pipeline.warehouse.tables import read_table

    with warehouse.connect(read_only=True) as con:
        frames = {t: read_table(con, f"staging.{t}", cols) for t, cols in COLUMNS.items()}
    level = plan.level or config.level
    levels = AUTO_LEVELS if level == "auto" else (level,)
    by_level = orders_by_regions(
        frames["orders"], frames["customers"], frames["order_items"], levels, countries
    )
    months = set(plan.months)
    by_level = {lv: o[o["month"].isin(months)].reset_index(drop=True) for lv, o in by_level.items()}
    level, shares = choose_level(by_level, cfg) if level == "auto" else (level, {})
    orders = by_level[level]
    order_month = pd.to_datetime(frames["orders"]["purchased_at"]).dt.to_period("M").dt.to_timestamp()
    in_months = int(order_month.isin(months).sum())  # placed or not
    grid = public_regions(level, countries)
    new = dp_regional_report(
        orders, cfg, level, regions=grid, months=plan.months, rng=np.random.default_rng(config.seed)
    )
    return new, {
        "share_of_orders_in_populated_cells": shares,
        "grid_regions": len(grid),
        "orders_placed": len(orders),
        "orders_not_placed_at_level": in_months - len(orders),
        "orders_outside_grid": int((~orders["region"].isin(grid)).sum()) if len(orders) else 0,
    }


def build() -> dg.Definitions:
    return dg.Definitions(assets=[regional_demand_dp])
