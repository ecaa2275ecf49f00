"""Staging layer: typing, validation, quarantine and privacy treatment of the raw tables."""

from ecom_pipeline.cleaning.privacy import (
    mask_sql,
    mask_text,
    pseudonym,
    register_privacy_functions,
    resolve_pseudonym_key,
)
from ecom_pipeline.cleaning.staging import (
    QUARANTINE_TABLE,
    STAGING_SCHEMA,
    StageResult,
    StagingError,
    column_schema,
    ensure_quarantine_table,
    stage_table,
)

__all__ = [
    "QUARANTINE_TABLE",
    "STAGING_SCHEMA",
    "StageResult",
    "StagingError",
    "column_schema",
    "ensure_quarantine_table",
    "mask_sql",
    "mask_text",
    "pseudonym",
    "register_privacy_functions",
    "resolve_pseudonym_key",
    "stage_table",
]
