"""raw and staging asset groups: one raw and one staging asset per canonical table; the staging asset
carries its table's checks (``check_specs``).

Assets are thin: the work is in :mod:`ecom_pipeline.loading` (raw), :mod:`ecom_pipeline.cleaning`
(staging) and :mod:`ecom_pipeline.quality` (checks).
"""

from collections.abc import Iterator

import dagster as dg

from ecom_pipeline import quality
from ecom_pipeline.canonical import TABLE_ORDER, TABLES
from ecom_pipeline.config import Settings, env
from ecom_pipeline.loading import load_raw_table
from ecom_pipeline.resources import PrivacyResource, SourceResource, WarehouseResource
from ecom_pipeline.routing import WAREHOUSE_OP_TAGS, WAREHOUSE_POOL


def raw_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["raw", table])


def staging_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["staging", table])


def column_schema(table: str, *, staged: bool) -> dg.TableSchema:
    spec = TABLES[table]
    cols = []
    for c in spec.columns:
        desc = c.description
        if c.privacy == "pseudonym":
            desc = (desc + "; " if desc else "") + (
                "keyed pseudonym (HMAC-SHA256)" if staged else "PII: raw value"
            )
        elif c.privacy == "mask":
            desc = (desc + "; " if desc else "") + ("PII-masked text" if staged else "PII: raw text")
        cols.append(
            dg.TableColumn(
                c.name,
                c.dtype if staged else "VARCHAR",
                description=desc or None,
                constraints=dg.TableColumnConstraints(nullable=not c.required),
            )
        )
    return dg.TableSchema(columns=cols)


def _raw_metadata(result, src, table: str, load_id: str) -> dict:
    """A raw load's metadata: rows, speed, files and how the DuckDB fast path read them."""
    return {
        "dagster/row_count": result.rows,
        "source": src.name,
        "delivered": result.delivered,
        "load_id": load_id,
        "chunks": result.chunks,
        "seconds": round(result.seconds, 2),
        "rows_per_second": round(result.rows / result.seconds) if result.seconds else 0,
        "files": ", ".join(result.files[:10]),
        # DuckDB fast path (sources/fast_csv.py): rows DuckDB read, rejected lines the Python reader read, and
        # files that went wholly through the Python reader, with why
        "fast_path_rows": result.fast_rows,
        "python_reader_rows_of_rejected_lines": result.python_rows,
        "files_read_by_python_reader": "; ".join(f"{f}: {why}" for f, why in result.fast_fallbacks.items())
        or "none",
        **src.table_facts(table),  # mapped source: rows filtered out, duplicates, guests
    }


def _raw_asset(table: str) -> dg.AssetsDefinition:
    spec = TABLES[table]

    @dg.asset(
        key=raw_key(table),
        group_name="ingest",
        pool=WAREHOUSE_POOL,
        op_tags=WAREHOUSE_OP_TAGS,
        kinds={"duckdb"},
        description=f"`{table}` rows exactly as delivered (all text) with load metadata. Restricted: may "
        "contain personal data; never exported. " + spec.description,
        metadata={"dagster/column_schema": column_schema(table, staged=False), "restricted": True},
        retry_policy=dg.RetryPolicy(max_retries=2, delay=5),
    )
    def _raw(context: dg.AssetExecutionContext, source: SourceResource, warehouse: WarehouseResource):
        src = source.build()
        load_id = context.run.run_id

        def progress(chunks: int, rows: int) -> None:
            if chunks % 10 == 0:
                context.log.info(f"raw.{table}: {rows:,} rows loaded ({chunks} chunks)")

        with warehouse.connect() as con:
            result = load_raw_table(
                con, src, table, load_id=load_id, chunk_rows=source.chunk_rows, progress=progress
            )
            quality.log_load(
                con,
                load_id=load_id,
                layer="raw",
                table=table,
                source=src.name,
                rows=result.rows,
                quarantined=0,
                seconds=result.seconds,
            )
        if not result.delivered:
            context.log.warning(f"source '{src.name}' has no {table} table: raw.{table} is empty")
        return dg.MaterializeResult(metadata=_raw_metadata(result, src, table, load_id))

    return _raw


def _staging_asset(
    table: str, freshness_max_lag_days: float, max_quarantine_share: float
) -> dg.AssetsDefinition:
    spec = TABLES[table]
    deps = [raw_key(table)] + [staging_key(fk.parent) for fk in spec.foreign_keys]

    @dg.asset(
        key=staging_key(table),
        group_name="ingest",
        pool=WAREHOUSE_POOL,
        op_tags=WAREHOUSE_OP_TAGS,
        kinds={"duckdb"},
        deps=deps,
        description=f"`{table}`: typed, normalised, validated, deduplicated and pseudonymised. Rejected rows "
        "are in `staging.quarantine` with a reason. " + spec.description,
        metadata={"dagster/column_schema": column_schema(table, staged=True)},
        retry_policy=dg.RetryPolicy(max_retries=2, delay=5),
        check_specs=staging_check_specs(table, freshness_max_lag_days, max_quarantine_share),
    )
    def _staging(
        context: dg.AssetExecutionContext,
        source: SourceResource,
        privacy: PrivacyResource,
        warehouse: WarehouseResource,
    ):
        from ecom_pipeline.cleaning.staging import stage_table

        src = source.build()
        key, warning = privacy.key()
        if warning:
            context.log.warning(warning)
        hints = src.parse_hints(table)
        with warehouse.connect() as con:
            result = stage_table(con, table, hints=hints, pseudonym_key=key)
            quality.log_load(
                con,
                load_id=result.load_id or "",
                layer="staging",
                table=table,
                source=src.name,
                rows=result.staged_rows,
                quarantined=result.quarantined_rows,
                seconds=result.seconds,
            )
            preview = con.execute(
                "SELECT reason, detail, source_file, source_row FROM staging.quarantine "
                "WHERE table_name = ? ORDER BY source_file, source_row LIMIT 10",
                [table],
            ).fetchdf()
            if result.raw_rows == 0:
                context.log.warning(f"staging.{table} is empty: the source delivered no {table} rows")
            # materialised first, then checked in this step on this connection; a failed blocking check
            # fails the step (Dagster raises after yielding the results), so nothing downstream runs
            yield dg.MaterializeResult(metadata=_staging_metadata(result, preview))
            yield from staging_check_results(con, table, hints, freshness_max_lag_days, max_quarantine_share)

    return _staging


def _staging_metadata(result, preview) -> dict:
    reasons = dict(sorted(result.reasons.items(), key=lambda kv: -kv[1]))
    return {
        "dagster/row_count": result.staged_rows,
        "raw_rows": result.raw_rows,
        "quarantined_rows": result.quarantined_rows,
        "quarantine_reasons": reasons,
        # later rows of a staged key that disagree with the kept one (the first value won)
        "duplicate_key_conflict": int(result.reasons.get("duplicate_key_conflict", 0)),
        "quarantine_preview": dg.MetadataValue.md(
            preview.to_markdown(index=False) if len(preview) else "none"
        ),
        "load_id": result.load_id or "",
        "seconds": round(result.seconds, 2),
        "notes": "; ".join(getattr(result, "notes", []) or []) or "none",
    }


# Blocking checks of every staging table: a bad table would poison every model.
BLOCKING_CHECKS = {
    "row_invariant": quality.check_row_invariant,
    "unique_key": quality.check_unique_key,
    "non_null_key": quality.check_non_null_key,
    "referential_integrity": quality.check_foreign_keys,
    "value_ranges": quality.check_ranges,
}


def staging_check_specs(
    table: str, freshness_max_lag_days: float, max_quarantine_share: float
) -> list[dg.AssetCheckSpec]:
    """The checks of ``staging.<table>``: the blocking ones plus warn-only freshness and volume.

    Declared on the staging asset (``check_specs``) and evaluated in its step, right after the write and on
    the writer's connection: one step per table instead of one per check.  Launched with one process per step,
    the 66 separate check steps of ``ingest`` cost ~0.6 s of process start each and made it 4.7x the
    in-process run (benchmarks/results/launched.md).  A check cannot be run without restaging its table
    (``@asset`` is not subsettable); staging a table takes seconds."""
    key = staging_key(table)
    specs = [
        dg.AssetCheckSpec(
            name, asset=key, blocking=True, description=(fn.__doc__ or name).strip().splitlines()[0]
        )
        for name, fn in BLOCKING_CHECKS.items()
    ]
    specs.append(
        dg.AssetCheckSpec(
            "quarantine_share",
            asset=key,
            blocking=True,
            description=f"at most {max_quarantine_share:.1%} of raw rows quarantined (duplicates of a staged "
            "key not counted); a failure names the top reasons and an example row",
        )
    )
    if TABLES[table].time_column:
        specs.append(
            dg.AssetCheckSpec(
                "freshness",
                asset=key,
                description=f"newest event at most {freshness_max_lag_days} days old (warn)",
            )
        )
    specs.append(
        dg.AssetCheckSpec(
            "row_count_anomaly",
            asset=key,
            description="raw row count within 0.5x..2x of the median of recent loads (warn)",
        )
    )
    return specs


def staging_check_results(
    con, table: str, hints, freshness_max_lag_days: float, max_quarantine_share: float
) -> Iterator[dg.AssetCheckResult]:
    """One result per spec of :func:`staging_check_specs`, in the same order."""
    for name, fn in BLOCKING_CHECKS.items():
        yield _outcome(name, fn(con, table))
    share = quality.check_quarantine_share(con, table, max_quarantine_share, hints)
    yield _outcome("quarantine_share", share)
    if TABLES[table].time_column:
        yield _outcome(
            "freshness",
            quality.check_freshness(con, table, freshness_max_lag_days),
            dg.AssetCheckSeverity.WARN,
        )
    yield _outcome(
        "row_count_anomaly", quality.check_row_count_anomaly(con, table), dg.AssetCheckSeverity.WARN
    )


def _outcome(
    name: str, outcome: quality.CheckOutcome, severity=dg.AssetCheckSeverity.ERROR
) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        passed=bool(outcome.passed),
        metadata=outcome.metadata,
        severity=severity,
        description=outcome.description or None,
    )


def build(settings: Settings | None = None) -> dg.Definitions:
    """raw + staging assets and their checks (freshness lag from ``ECOM_FRESHNESS_MAX_DAYS``, default 2;
    quarantine share from ``Settings.max_quarantine_share``)."""
    settings = settings or Settings.from_env()
    lag = float(env("ECOM_FRESHNESS_MAX_DAYS"))
    share = settings.max_quarantine_share
    assets = [_raw_asset(t) for t in TABLE_ORDER] + [_staging_asset(t, lag, share) for t in TABLE_ORDER]
    return dg.Definitions(assets=assets)
