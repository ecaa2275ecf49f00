"""The Dagster code location: assets, checks, jobs, resources and the executor, assembled once."""

from __future__ import annotations

import os

import dagster as dg

from ecom_pipeline.assets.ingest import build_ingest_assets
from ecom_pipeline.automation.jobs import JOBS
from ecom_pipeline.config import Settings
from ecom_pipeline.resources import build_resources

# Two cores on the reference machine: at most two steps at once.  Pools (set in the instance's
# dagster.yaml, `concurrency.pools.default_limit: 1`) keep `duckdb` to one writer and `gpu` to one step.
EXECUTOR = dg.multiprocess_executor.configured({"max_concurrent": int(os.environ.get("ECOM_MAX_CONCURRENT", "2"))})


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or Settings.from_env()
    ingest_assets, ingest_checks = build_ingest_assets(
        freshness_max_lag_days=float(os.environ.get("ECOM_FRESHNESS_MAX_DAYS", "2"))
    )
    return dg.Definitions(
        assets=[*ingest_assets],
        asset_checks=[*ingest_checks],
        jobs=JOBS,
        resources=build_resources(settings),
        executor=EXECUTOR,
    )


defs = build_definitions()
