"""The Dagster code location: assets, checks, jobs, schedules, sensors, resources and the executor.

Every module in ``ecom_pipeline.assets`` contributes through a ``build(settings)`` function returning a
:class:`dagster.Definitions` (assets, checks and whatever else that group owns); ``ecom_pipeline.automation``
contributes jobs, schedules and sensors the same way.  They are merged here once, with the resources
of the environment.
"""

from __future__ import annotations

import importlib
import os
import pkgutil

import dagster as dg

import ecom_pipeline.assets
import ecom_pipeline.automation
from ecom_pipeline.config import Settings
from ecom_pipeline.resources import build_resources

# Two cores on the reference machine: at most two steps at once.  Pools (set in the instance's
# dagster.yaml, `concurrency.pools.default_limit: 1`) keep `duckdb` to one writer and `gpu` to one step.
EXECUTOR = dg.multiprocess_executor.configured({"max_concurrent": int(os.environ.get("ECOM_MAX_CONCURRENT", "2"))})


def _contributions(package, settings: Settings) -> list[dg.Definitions]:
    found = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        build = getattr(module, "build", None)
        if callable(build):
            found.append(build(settings))
    return found


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or Settings.from_env()
    parts = _contributions(ecom_pipeline.assets, settings) + _contributions(ecom_pipeline.automation, settings)
    return dg.Definitions.merge(
        *parts,
        dg.Definitions(resources=build_resources(settings), executor=EXECUTOR),
    )


defs = build_definitions()
