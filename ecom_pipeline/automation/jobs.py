"""Jobs over the asset graph."""

from __future__ import annotations

import dagster as dg

ingest_job = dg.define_asset_job(
    "ingest",
    selection=dg.AssetSelection.groups("raw", "staging"),
    description="Load the configured source into raw and build the validated, pseudonymised staging tables.",
)

full_pipeline_job = dg.define_asset_job(
    "full_pipeline",
    selection=dg.AssetSelection.all(),
    description="Materialise every asset (what `make demo` runs).",
)

JOBS = [ingest_job, full_pipeline_job]


def build(settings=None) -> dg.Definitions:
    return dg.Definitions(jobs=JOBS)
