"""Code location of the local distributed setup for the daemon and ``dagster dev``: the project's definitions
plus ``distributed_smoke`` (workspace: ``python_module: ecom_pipeline.distributed.location``)."""

from ecom_pipeline.distributed.smoke import smoke_definitions

defs = smoke_definitions()
