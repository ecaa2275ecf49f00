"""Raw layer: copy a source's chunks into ``raw.<table>`` as text, with load metadata.

Memory stays bounded by the chunk size: chunks go straight into DuckDB.  A load is written to a
``__loading`` table and swapped in inside one transaction, so a run killed half way leaves the previous
complete table in place and never a half-written one (a leftover ``__loading`` table is dropped by the next
load of that table).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb
import pandas as pd

from ecom_pipeline.canonical import LOAD_COLUMNS, TABLES
from ecom_pipeline.config import env
from ecom_pipeline.sources.base import DEFAULT_CHUNK_ROWS, Source, SourceError
from ecom_pipeline.warehouse.lake import is_lake, run_transaction
from ecom_pipeline.warehouse.tables import quote_ident, table_exists

RAW_SCHEMA = "raw"
# Raw-only column: a reader that could not split a line into fields puts the reason here (and the
# line itself in the first text column); staging quarantines such rows as `malformed_line`.
PARSE_ERROR_COLUMN = "_parse_error"


# ECOM_RAW_COMPRESSION=light: raw text is written without DuckDB's dictionary and FSST string compression.
# Compressing the text is most of the raw load's cost (at 100k orders, events+orders+reviews: 17.5 s with
# them, 6.3 s without, bare read_csv into a compressed table 7.8 s; benchmarks/results/ingest.md), while raw
# is a landing copy that staging reads once; the price is a raw layer about 4x bigger on disk.
RAW_COMPRESSION = {"light": "dictionary,fsst", "full": ""}


@contextmanager
def raw_storage(con: duckdb.DuckDBPyConnection, compression: str | None = None) -> Iterator[None]:
    """Writes inside the block store raw text as ``compression`` (default ``ECOM_RAW_COMPRESSION``) says.

    ``disabled_compression_methods`` is a database-wide setting (as ``threads`` in sources.fast_csv): it is
    set for the raw writes only and put back after them.  Row groups written inside the block keep their
    storage; a load too small to be written before its commit stays in the WAL and is compressed by
    whichever checkpoint writes it (small loads cost little either way)."""
    compression = (compression or env("ECOM_RAW_COMPRESSION")).strip().lower()
    if compression not in RAW_COMPRESSION:
        raise ValueError(
            f"ECOM_RAW_COMPRESSION must be one of {sorted(RAW_COMPRESSION)}, got {compression!r}"
        )
    if is_lake(con):  # DuckLake writes Parquet files: DuckDB's table compression does not apply
        yield
        return
    before = con.execute("SELECT current_setting('disabled_compression_methods')").fetchall()[0][0]
    wanted = RAW_COMPRESSION[compression]
    if wanted == before:
        yield
        return
    con.execute("SET disabled_compression_methods = $m", {"m": wanted})
    try:
        yield
    finally:
        con.execute("SET disabled_compression_methods = $m", {"m": before})


def raw_columns(table: str) -> list[str]:
    return TABLES[table].column_names + [PARSE_ERROR_COLUMN, *LOAD_COLUMNS]


def new_load_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


@dataclass
class RawLoadResult:
    table: str
    load_id: str
    rows: int
    chunks: int
    seconds: float
    delivered: bool  # False when the source has no such table (an empty table was written)
    files: list[str] = field(default_factory=list)
    # DuckDB fast path (sources.fast_csv): rows DuckDB inserted, rejected lines the Python reader read, and
    # per file that went wholly through the Python reader, why.
    fast_rows: int = 0
    python_rows: int = 0
    fast_fallbacks: dict[str, str] = field(default_factory=dict)


def _create_raw_table_sql(qualified: str, table: str) -> str:
    cols = []
    for c in raw_columns(table):
        dtype = {"_source_row": "BIGINT", "_loaded_at": "TIMESTAMP"}.get(c, "VARCHAR")
        cols.append(f"{quote_ident(c)} {dtype}")
    if qualified.startswith("temp."):  # DuckDB: a table in the temp catalog is created as TEMP
        return f"CREATE TEMP TABLE {qualified.removeprefix('temp.')} ({', '.join(cols)})"
    return f"CREATE TABLE {qualified} ({', '.join(cols)})"


def _check_chunk(chunk: pd.DataFrame, table: str) -> None:
    spec = TABLES[table]
    unknown = (
        set(chunk.columns) - set(spec.column_names) - {"_source_file", "_source_row", PARSE_ERROR_COLUMN}
    )
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
    fast_path: bool = True,
    schema: str = RAW_SCHEMA,
    compression: str | None = None,
) -> RawLoadResult:
    """Replace ``raw.<table>`` with a full load from ``source``; returns counts and timings.

    ``fast_path``: let DuckDB read the files of a source that offers a ``fast_scan`` (the rows in raw are
    the same either way; ``False`` forces the Python reader, e.g. to compare the two).  ``schema``: where the
    table goes (the partitioned ingest loads a day into a scratch schema first, see
    ``load_raw_partition``).  ``compression``: how the text is stored (:func:`raw_storage`)."""
    start = time.perf_counter()
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
    final = f"{quote_ident(schema)}.{quote_ident(table)}"
    staging_name = f"{table}__loading"
    # DuckLake: other writers share the schema, so the loading table is this connection's own (temp), and it
    # is copied in at the swap (one Parquet write, not one per chunk)
    lake = is_lake(con)
    loading = (
        f"temp.{quote_ident(staging_name)}" if lake else f"{quote_ident(schema)}.{quote_ident(staging_name)}"
    )
    con.execute(f"DROP TABLE IF EXISTS {loading}")
    con.execute(_create_raw_table_sql(loading, table))
    loaded_at = datetime.now(UTC)
    rows = chunks = 0
    files: set[str] = set()
    delivered = table in source.tables()
    fast = {"fast_rows": 0, "python_rows": 0, "fast_fallbacks": {}}
    if delivered:
        insert_cols = ", ".join(quote_ident(c) for c in raw_columns(table))
        params = {"load_id": load_id, "loaded_at": loaded_at.replace(tzinfo=None)}

        def insert_chunk(chunk: pd.DataFrame) -> None:
            _check_chunk(chunk, table)
            select = _insert_select_sql(set(chunk.columns), table)
            con.register("_raw_chunk", chunk)
            try:
                con.execute(f"INSERT INTO {loading} ({insert_cols}) SELECT {select} FROM _raw_chunk", params)
            finally:
                con.unregister("_raw_chunk")

        scan = source.fast_scan(table) if fast_path else None
        chunk_source = (
            _fast_chunks(con, source, table, scan, loading, params, insert_chunk, chunk_rows, fast)
            if scan is not None
            else source.read(table, chunk_rows=chunk_rows)
        )
        with raw_storage(con, compression):
            for chunk in chunk_source:
                if chunk.empty:
                    continue
                if "_fast_rows" not in chunk.attrs:
                    insert_chunk(chunk)
                rows += len(chunk) if "_fast_rows" not in chunk.attrs else chunk.attrs["_fast_rows"]
                chunks += 1
                files.update(chunk["_source_file"].unique().tolist())
                if progress:
                    progress(chunks, rows)

    def swap(c) -> None:
        c.execute(f"DROP TABLE IF EXISTS {final}")
        if lake:
            c.execute(f"CREATE TABLE {final} AS SELECT * FROM {loading}")
        else:
            c.execute(f"ALTER TABLE {loading} RENAME TO {quote_ident(table)}")

    with raw_storage(con, compression):  # a checkpoint at the swap's commit writes raw rows too
        run_transaction(con, swap)  # re-run on a DuckLake conflict (another writer replaced the table first)
    if lake:
        con.execute(f"DROP TABLE IF EXISTS {loading}")
    return RawLoadResult(
        table, load_id, rows, chunks, time.perf_counter() - start, delivered, sorted(files), **fast
    )


def _fast_chunks(
    con,
    source: Source,
    table: str,
    scan,
    loading: str,
    params: dict,
    insert_chunk,
    chunk_rows: int,
    fast: dict,
):
    """Per file: DuckDB inserts it (yielding a one-row marker frame carrying the row count), or, when it
    must be read by the Python reader, its chunks are yielded like ``source.read`` would."""
    from ecom_pipeline.sources.fast_csv import FastFallback, load_csv_fast, python_file_chunks
    from ecom_pipeline.sources.files import ReadReport

    reports = []
    for f in scan.files:
        try:
            r = load_csv_fast(
                con,
                loading,
                raw_columns(table),
                scan,
                f,
                load_id=params["load_id"],
                loaded_at=params["loaded_at"],
                insert_chunk=insert_chunk,
                table_columns=raw_columns(table),
            )
        except FastFallback as why:
            fast["fast_fallbacks"][f.label] = str(why)
            report = ReadReport(f.label)
            reports.append(report)
            yield from python_file_chunks(scan, f, chunk_rows, report)
            continue
        reports.append(r.report)
        fast["fast_rows"] += r.fast_rows
        fast["python_rows"] += r.python_rows
        if r.rows:
            marker = pd.DataFrame({"_source_file": [f.label]})
            marker.attrs["_fast_rows"] = r.rows
            yield marker
    if hasattr(source, "record_fast_reports"):
        source.record_fast_reports(table, reports)


# ------------------------------------------------------------------------------ partitioned (daily) ingest
# A daily run loads one partition (a delivery day, or a source's time window) of each table: its rows go to a
# scratch table first, then replace that partition's rows in raw.<table> in one transaction, so raw is
# append-only across partitions and a re-delivered partition replaces itself.  meta.partition_loads keeps
# every load of every partition (the current one flagged), which staging uses to update by key
# (cleaning/staging_upsert.py).
PARTITION_SCHEMA = "raw_partition"
PARTITION_LOADS = "meta.partition_loads"


def ensure_partition_loads(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS meta")
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {PARTITION_LOADS} (table_name VARCHAR, partition_key VARCHAR, "
        "load_id VARCHAR, is_current BOOLEAN, raw_rows BIGINT, loaded_at TIMESTAMP, staged_at TIMESTAMP, "
        "accepted_rows BIGINT, inserted_rows BIGINT, updated_rows BIGINT, unchanged_rows BIGINT, "
        "stale_rows BIGINT, quarantined_rows BIGINT)"
    )


def load_raw_partition(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    table: str,
    partition: str,
    *,
    load_id: str,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    fast_path: bool = True,
    compression: str | None = None,
) -> RawLoadResult:
    """Append partition ``partition`` of ``table`` from ``source`` (which delivers just that partition's rows)
    to ``raw.<table>``, replacing the rows of an earlier load of the same partition, in one transaction."""
    ensure_partition_loads(con)
    scratch = f"{PARTITION_SCHEMA}.{quote_ident(table)}"
    final = f"{RAW_SCHEMA}.{quote_ident(table)}"
    if table_exists(con, f"{RAW_SCHEMA}.{table}"):
        # The full `ingest` job replaces raw with a snapshot of the landing folder; appending days to that
        # would count its rows twice.  One warehouse holds one kind of raw.
        foreign = con.execute(
            f"SELECT count(*), any_value(_load_id) FROM {final} WHERE _load_id NOT IN "
            f"(SELECT load_id FROM {PARTITION_LOADS} WHERE table_name = ?)",
            [table],
        ).fetchall()[0]
        if foreign[0]:
            raise SourceError(
                f"raw.{table} holds {foreign[0]:,} rows of a full (unpartitioned) load ({foreign[1]}): the "
                "daily partitioned ingest appends days to a raw layer built from days only; use the full "
                "`ingest` job on this warehouse, or start the partitioned ingest on a new warehouse"
            )
    result = load_raw_table(
        con,
        source,
        table,
        load_id=load_id,
        chunk_rows=chunk_rows,
        fast_path=fast_path,
        schema=PARTITION_SCHEMA,
        compression=compression,
    )
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {RAW_SCHEMA}")
    with raw_storage(con, compression):
        _append_partition(con, table, partition, load_id, scratch, final, result.rows)
    con.execute(f"DROP TABLE IF EXISTS {scratch}")
    return result


def _append_partition(con, table: str, partition: str, load_id: str, scratch: str, final: str, rows: int):
    """Replace the rows of earlier loads of ``partition`` in ``final`` by the scratch table's, in one
    transaction, and record the load."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"CREATE TABLE IF NOT EXISTS {final} AS SELECT * FROM {scratch} LIMIT 0")
        con.execute(
            f"DELETE FROM {final} WHERE _load_id IN (SELECT load_id FROM {PARTITION_LOADS} "
            "WHERE table_name = ? AND partition_key = ?)",
            [table, partition],
        )
        con.execute(f"INSERT INTO {final} SELECT * FROM {scratch}")
        con.execute(
            f"UPDATE {PARTITION_LOADS} SET is_current = false WHERE table_name = ? AND partition_key = ?",
            [table, partition],
        )
        con.execute(
            f"INSERT INTO {PARTITION_LOADS} (table_name, partition_key, load_id, is_current, raw_rows, "
            "loaded_at) VALUES (?, ?, ?, true, ?, ?)",
            [table, partition, load_id, rows, datetime.now(UTC).replace(tzinfo=None)],
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
