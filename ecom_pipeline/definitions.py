"""The Dagster code location: assets, checks, jobs, schedules, sensors, resources and the executor.

Every module in ``ecom_pipeline.assets`` contributes through a ``build()`` function returning a
:class:`dagster.Definitions` (assets, checks and whatever else that group owns); ``ecom_pipeline.automation``
contributes jobs, schedules and sensors the same way.  One rule: ``build`` takes ``settings`` only when it
uses them (``assets/ingest.py``: freshness and quarantine thresholds), and then it is given them.  They are
merged here once, with the resources of the environment.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import warnings

import dagster as dg

import ecom_pipeline.assets
import ecom_pipeline.automation
from ecom_pipeline.automation.executors import multiprocess_executor
from ecom_pipeline.config import Settings, check_pool_limits
from ecom_pipeline.resources import build_resources

# Two cores on the reference machine: at most two steps at once, forked from a preloaded forkserver.  Pools
# (the instance's dagster.yaml, `concurrency.pools.default_limit: 1`) keep `duckdb` to one writer and `gpu`
# to one step.  Short-step jobs (ingest, inbox_ingest) run in process instead: see automation/executors.py.
EXECUTOR = multiprocess_executor()


def _contributions(package, settings: Settings) -> list[dg.Definitions]:
    found = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        build = getattr(module, "build", None)
        if callable(build):
            found.append(build(settings) if "settings" in inspect.signature(build).parameters else build())
    return found


# Who to ask about an asset (shown in the UI): ingestion layers belong to data engineering, the rest to ML.
DATA_OWNER = "team:data-engineering"
ML_OWNER = "team:ml"


def _with_owner(spec: dg.AssetSpec) -> dg.AssetSpec:
    if spec.owners:
        return spec
    layer = spec.key.path[0]
    return spec.replace_attributes(owners=[DATA_OWNER if layer in ("raw", "staging", "inbox") else ML_OWNER])


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or Settings.from_env()
    parts = _contributions(ecom_pipeline.assets, settings) + _contributions(
        ecom_pipeline.automation, settings
    )
    merged = dg.Definitions.merge(*parts)
    with (
        warnings.catch_warnings()
    ):  # map_asset_specs is marked preview in 1.13; its behaviour is what we need
        warnings.simplefilter("ignore", dg.PreviewWarning)
        merged = merged.map_asset_specs(func=_with_owner)
    return dg.Definitions.merge(
        merged, dg.Definitions(resources=build_resources(settings), executor=EXECUTOR)
    )


# What `dagster dev`, the daemon and `make demo` load: refuse an instance without pool limits (a custom
# DAGSTER_HOME without the repo's dagster.yaml would let two steps write the warehouse at once).
check_pool_limits()
defs = build_definitions()
