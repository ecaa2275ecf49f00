"""Raw layer: copy a source's chunks into ``raw.<table>`` as text, with load metadata.

Memory stays bounded by the chunk size: chunks go straight into DuckDB.  A load is written to a
``__loading`` table and swapped in inside one transaction, so a run killed half way leaves the previous
complete table in place and never a half-written one (a leftover ``__loading`` table is dropped by the next
load of that table).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import duckdb
import pandas as pd

from ecom_pipeline.canonical import LOAD_COLUMNS, TABLES
from ecom_pipeline.sources.base import DEFAULT_CHUNK_ROWS, Source, SourceError
from ecom_pipeline.warehouse.tables import quote_ident  # noqa: F401  (re-exported for older imports)

RAW_SCHEMA = "raw"
# Raw-only column: a reader that could not split a line into fields puts the reason here (and the
# line itself in the first text column); staging quarantines such rows as `malformed_line`.
PARSE_ERROR_COLUMN = "_parse_error"


def raw_columns(table: str) -> list[str]:
    return TABLES[table].column_names + [PARSE_ERROR_COLUMN, *LOAD_COLUMNS]


def new_load_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


@dataclass
class RawLoadResult:
    table: str
    load_id: str
    rows: int
    chunks: int
    seconds: float
    delivered: bool  # False when the source has no such table (an empty table was written)
    files: list[str] = field(default_factory=list)


def _create_raw_table_sql(qualified: str, table: str) -> str:
    cols = []
    for c in raw_columns(table):
        dtype = {"_source_row": "BIGINT", "_loaded_at": "TIMESTAMP"}.get(c, "VARCHAR")
        cols.append(f"{quote_ident(c)} {dtype}")
    return f"CREATE TABLE {qualified} ({', '.join(cols)})"


def _check_chunk(chunk: pd.DataFrame, table: str) -> None:
    spec = TABLES[table]
    unknown = set(chunk.columns) - set(spec.column_names) - {"_source_file", "_source_row", PARSE_ERROR_COLUMN}
    if unknown:
        raise SourceError(f"source produced columns that {table} does not have: {sorted(unknown)}")
    for required in ("_source_file", "_source_row"):
        if required not in chunk.columns:
            raise SourceError(f"source chunk for {table} lacks lineage column {required}")


def _insert_select_sql(chunk_columns: set[str], table: str) -> str:
    """SELECT list that conforms a registered chunk to the raw table in DuckDB (no pandas copies):
    missing canonical columns become NULL, load id and time come in as parameters."""
    exprs = []
    for c in raw_columns(table):
        if c == "_load_id":
            exprs.append("$load_id")
        elif c == "_loaded_at":
            exprs.append("$loaded_at::TIMESTAMP")
        elif c == "_source_row":
            exprs.append(f"{quote_ident(c)}::BIGINT")
        elif c in chunk_columns:
            exprs.append(f"{quote_ident(c)}::VARCHAR")
        else:
            exprs.append("NULL::VARCHAR")
    return ", ".join(exprs)


def load_raw_table(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    table: str,
    *,
    load_id: str,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: Callable[[int, int], None] | None = None,
) -> RawLoadResult:
    """Replace ``raw.<table>`` with a full load from ``source``; returns counts and timings."""
    start = time.perf_counter()
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {RAW_SCHEMA}")
    final = f"{RAW_SCHEMA}.{quote_ident(table)}"
    staging_name = f"{table}__loading"
    loading = f"{RAW_SCHEMA}.{quote_ident(staging_name)}"
    con.execute(f"DROP TABLE IF EXISTS {loading}")
    con.execute(_create_raw_table_sql(loading, table))
    loaded_at = datetime.now(timezone.utc)
    rows = chunks = 0
    files: set[str] = set()
    delivered = table in source.tables()
    if delivered:
        insert_cols = ", ".join(quote_ident(c) for c in raw_columns(table))
        params = {"load_id": load_id, "loaded_at": loaded_at.replace(tzinfo=None)}
        for chunk in source.read(table, chunk_rows=chunk_rows):
            if chunk.empty:
                continue
            _check_chunk(chunk, table)
            select = _insert_select_sql(set(chunk.columns), table)
            con.register("_raw_chunk", chunk)
            try:
                con.execute(f"INSERT INTO {loading} ({insert_cols}) SELECT {select} FROM _raw_chunk", params)
            finally:
                con.unregister("_raw_chunk")
            rows += len(chunk)
            chunks += 1
            files.update(chunk["_source_file"].unique().tolist())
            if progress:
                progress(chunks, rows)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"DROP TABLE IF EXISTS {final}")
        con.execute(f"ALTER TABLE {loading} RENAME TO {quote_ident(table)}")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return RawLoadResult(table, load_id, rows, chunks, time.perf_counter() - start, delivered, sorted(files))
