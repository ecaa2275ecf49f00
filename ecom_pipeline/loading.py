"""Raw layer: copy a source's chunks into ``raw.<table>`` as text, with load metadata.

Memory stays bounded by the chunk size: chunks go straight into DuckDB.  A load is written to a
``__loading`` table and swapped in inside one transaction, so a run killed half way leaves the previous
complete table in place and never a half-written one.
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

RAW_SCHEMA = "raw"
# Raw-only column: a reader that could not split a line into fields puts the reason here (and the
# line itself in the first text column); staging quarantines such rows as `malformed_line`.
PARSE_ERROR_COLUMN = "_parse_error"


def raw_columns(table: str) -> list[str]:
    return TABLES[table].column_names + [PARSE_ERROR_COLUMN, *LOAD_COLUMNS]


def quote_ident(name: str) -> str:
    """Quote an SQL identifier (table and column names never come from data, but be safe)."""
    return '"' + name.replace('"', '""') + '"'


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


def _conform_chunk(chunk: pd.DataFrame, table: str, load_id: str, loaded_at: datetime) -> pd.DataFrame:
    spec = TABLES[table]
    unknown = set(chunk.columns) - set(spec.column_names) - {"_source_file", "_source_row", PARSE_ERROR_COLUMN}
    if unknown:
        raise SourceError(f"source produced columns that {table} does not have: {sorted(unknown)}")
    for required in ("_source_file", "_source_row"):
        if required not in chunk.columns:
            raise SourceError(f"source chunk for {table} lacks lineage column {required}")
    out = pd.DataFrame(index=chunk.index)
    for c in spec.column_names + [PARSE_ERROR_COLUMN]:
        out[c] = chunk[c].astype(object) if c in chunk.columns else None
    out["_load_id"] = load_id
    out["_source_file"] = chunk["_source_file"].astype(str)
    out["_source_row"] = chunk["_source_row"].astype("int64")
    out["_loaded_at"] = pd.Timestamp(loaded_at.replace(tzinfo=None))
    return out.reset_index(drop=True)


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
        for chunk in source.read(table, chunk_rows=chunk_rows):
            if chunk.empty:
                continue
            frame = _conform_chunk(chunk, table, load_id, loaded_at)
            con.register("_raw_chunk", frame)
            try:
                con.execute(f"INSERT INTO {loading} ({insert_cols}) SELECT {insert_cols} FROM _raw_chunk")
            finally:
                con.unregister("_raw_chunk")
            rows += len(frame)
            chunks += 1
            files.update(frame["_source_file"].unique().tolist())
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
