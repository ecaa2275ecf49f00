"""Moved to :mod:`ecom_pipeline.warehouse.tables` (framework-free); kept so existing imports keep working."""

from ecom_pipeline.warehouse.tables import (  # noqa: F401
    PER_RUN_COLUMNS,
    quote_ident,
    atomic,
    read_or_empty,
    read_table,
    table_exists,
    table_fingerprint,
    warehouse_fingerprints,
    write_table,
)
