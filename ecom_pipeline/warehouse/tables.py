"""Reading and writing whole warehouse tables that may not exist yet (a source without reviews, a first run).

The one implementation of "does this table exist / give me it or an empty frame / replace it" for every asset,
plus table fingerprints and identifier quoting.  Framework-free: plain DuckDB connections, no Dagster."""

from __future__ import annotations

from contextlib import contextmanager

import duckdb
import pandas as pd


def quote_ident(name: str) -> str:
    """Quote an SQL identifier (table and column names never come from data, but be safe)."""
    return '"' + name.replace('"', '""') + '"'


def table_exists(con: duckdb.DuckDBPyConnection, qualified: str) -> bool:
    schema, name = qualified.split(".", 1)
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        ).fetchall()[0][0]
    )


def table_columns(con: duckdb.DuckDBPyConnection, qualified: str) -> list[str]:
    """The columns of ``qualified`` in table order ([] when it does not exist), in the connection's own
    database (a DuckLake connection also sees its catalog's tables under other databases)."""
    schema, name = qualified.split(".", 1)
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_catalog = current_database() "
        "AND table_schema = ? AND table_name = ? ORDER BY ordinal_position",
        [schema, name],
    ).fetchall()
    return [r[0] for r in rows]


def read_table(
    con: duckdb.DuckDBPyConnection, qualified: str, columns: list[str] | None = None
) -> pd.DataFrame:
    """The table as a DataFrame, or an empty frame (with ``columns``) when the table does not exist."""
    if not table_exists(con, qualified):
        return pd.DataFrame(columns=columns or [])
    if columns:
        have = {r[0] for r in con.execute(f"DESCRIBE {qualified}").fetchall()}
        sel = ", ".join(c if c in have else f"NULL AS {c}" for c in columns)
    else:
        sel = "*"
    return con.execute(f"SELECT {sel} FROM {qualified}").fetchdf()


def fetch_frame_shared_strings(con: duckdb.DuckDBPyConnection, sql: str, params=None) -> pd.DataFrame:
    """``con.execute(sql).fetchdf()``, the same frame, but equal strings share one Python object (through
    Arrow, which deduplicates them): a long table of few distinct ids (11.8M interactions of ~100k customers
    and ~30k products at 1M orders) then costs a fraction of the memory (docs/performance.md)."""
    import pyarrow as pa

    table = con.execute(sql, params or []).to_arrow_table()
    with_nulls = [f for f in table.schema if table.column(f.name).null_count]
    # self_destruct frees each Arrow column once converted: the peak is not the table plus the frame
    frame = table.to_pandas(deduplicate_objects=True, split_blocks=True, self_destruct=True)
    del table
    for field in with_nulls:  # with NULLs Arrow gives float64 / object; DuckDB nullable Int / boolean
        if pa.types.is_integer(field.type):
            unsigned = "U" if pa.types.is_unsigned_integer(field.type) else ""
            frame[field.name] = frame[field.name].astype(f"{unsigned}Int{field.type.bit_width}")
        elif pa.types.is_boolean(field.type):
            frame[field.name] = frame[field.name].astype("boolean")
    return frame


@contextmanager
def memory_limit_at_most(con: duckdb.DuckDBPyConnection, limit: str):
    """DuckDB's ``memory_limit`` lowered to ``limit`` (e.g. ``'1GiB'``) inside the block, restored after.

    For one big sorted read: DuckDB keeps a sort's runs in memory up to its limit and spills the rest, and
    the Arrow result comes on top; capping the sort takes the read's peak down to about the unsorted one's
    (11.8M interactions at 1M orders: 3.6 -> 2.5 GB, ~2 s slower).  The limit is restored from its text
    form, so to DuckDB's display precision (0.1 GiB)."""
    before = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    con.execute("SET memory_limit = ?", [limit])
    lowered = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    if _bytes(lowered) > _bytes(before):  # it was already lower: leave it
        con.execute("SET memory_limit = ?", [before])
    try:
        yield
    finally:
        con.execute("SET memory_limit = ?", [before])


def _bytes(size: str) -> float:
    """DuckDB's displayed size ('18.7 GiB', '953.6 MiB', '1000.0 KiB') in bytes."""
    number, unit = size.split()
    return float(number) * 1024 ** ["bytes", "KiB", "MiB", "GiB", "TiB"].index(unit)


def write_table(con: duckdb.DuckDBPyConnection, qualified: str, df: pd.DataFrame) -> int:
    """Replace ``qualified`` with ``df`` (an empty frame still creates the table, with typed columns)."""
    schema = qualified.split(".", 1)[0]
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    frame = df.copy()
    for c in frame.columns:
        if frame[c].dtype == object and frame[c].isna().all():
            frame[c] = frame[c].astype("string")
    con.register("_write_df", frame)
    try:
        con.execute(f"CREATE OR REPLACE TABLE {qualified} AS SELECT * FROM _write_df")
    finally:
        con.unregister("_write_df")
    return len(frame)


def load_counts(con: duckdb.DuckDBPyConnection, tables) -> dict[str, dict]:
    """Per canonical table: raw rows, staged rows, and quarantined rows by reason (most first), so the
    invariant raw = staged + quarantined can be read off.  Used by the demo summary and the benchmarks."""
    out = {}
    for t in tables:
        raw = con.execute(f"SELECT count(*) FROM raw.{quote_ident(t)}").fetchall()[0][0]
        staged = con.execute(f"SELECT count(*) FROM staging.{quote_ident(t)}").fetchall()[0][0]
        reasons = dict(
            con.execute(
                "SELECT reason, count(*) FROM staging.quarantine WHERE table_name = ? "
                "GROUP BY 1 ORDER BY 2 DESC, 1",
                [t],
            ).fetchall()
        )
        out[t] = {"raw": raw, "staged": staged, "quarantined": sum(reasons.values()), "reasons": reasons}
    return out


def read_or_empty(warehouse, qualified: str, columns: list[str] | None = None) -> pd.DataFrame:
    with warehouse.connect(read_only=True) as con:
        return read_table(con, qualified, columns)


def table_fingerprint(
    con: duckdb.DuckDBPyConnection, qualified: str, exclude: tuple[str, ...] | frozenset[str] = ()
) -> tuple[int, str]:
    """Row count and an order-independent content hash of ``qualified``, leaving out the columns in
    ``exclude``.

    The hash is the exact (HUGEINT) sum of DuckDB's 64-bit ``hash()`` of every row, columns taken in name
    order: row order and physical column order do not change it, a duplicated or changed row does (a XOR
    of row hashes would let two equal rows cancel out)."""
    schema, name = qualified.split(".", 1)
    cols = [
        r[0]
        for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        ).fetchall()
        if r[0] not in exclude
    ]
    if not cols:
        rows = con.execute(f"SELECT count(*) FROM {quote_ident(schema)}.{quote_ident(name)}").fetchall()[0][0]
        return int(rows), "0"
    struct = ", ".join(quote_ident(c) for c in sorted(cols))
    rows, total = con.execute(
        f"SELECT count(*), coalesce(sum(hash(struct_pack({struct}))::HUGEINT), 0) "
        f"FROM {quote_ident(schema)}.{quote_ident(name)}"
    ).fetchall()[0]
    return int(rows), format(int(total), "x")


def warehouse_fingerprints(
    con: duckdb.DuckDBPyConnection,
    schemas: tuple[str, ...],
    exclude_columns: tuple[str, ...] | frozenset[str] = (),
    exclude_tables: tuple[str, ...] | frozenset[str] = (),
) -> dict[str, tuple[int, str]]:
    """``table_fingerprint`` of every table in ``schemas`` (qualified name -> (rows, hash))."""
    marks = ", ".join("?" for _ in schemas)
    tables = con.execute(
        f"SELECT table_schema || '.' || table_name FROM information_schema.tables "
        f"WHERE table_schema IN ({marks}) AND table_type = 'BASE TABLE' ORDER BY 1",
        list(schemas),
    ).fetchall()
    return {t: table_fingerprint(con, t, exclude_columns) for (t,) in tables if t not in exclude_tables}


# Columns that say which run wrote a row and when; they differ between two runs of the same work by design.
# An idempotency comparison leaves out exactly these (raw/staging lineage `_load_id` = the run id, raw
# `_loaded_at`, quarantine `load_id`/`quarantined_at`, inbox `run_id`/`published_at`,
# embedding `embedded_at`).
PER_RUN_COLUMNS = frozenset(
    {"_load_id", "_loaded_at", "load_id", "quarantined_at", "run_id", "published_at", "embedded_at"}
)


@contextmanager
def atomic(con: duckdb.DuckDBPyConnection):
    """One transaction: a step killed between dropping and refilling a table leaves the previous table."""
    con.execute("BEGIN")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def partition_load_counts(con: duckdb.DuckDBPyConnection, table: str) -> dict:
    """Per current partition load of ``table`` (daily ingest, ``meta.partition_loads``): raw rows, accepted
    rows (inserted / updated / unchanged / stale) and quarantined rows, plus the totals and the rows in raw
    and staging now, so raw = accepted + quarantined can be read off per partition and in total."""
    if not table_exists(con, "meta.partition_loads"):
        return {"partitions": {}, "total": {}}
    rows = con.execute(
        "SELECT partition_key, raw_rows, accepted_rows, inserted_rows, updated_rows, unchanged_rows, "
        "stale_rows, quarantined_rows FROM meta.partition_loads WHERE table_name = ? "
        "AND is_current ORDER BY 1",
        [table],
    ).fetchall()
    names = ("raw", "accepted", "inserted", "updated", "unchanged", "stale", "quarantined")
    parts = {r[0]: dict(zip(names, (int(v or 0) for v in r[1:]))) for r in rows}
    total = {n: sum(p[n] for p in parts.values()) for n in names}
    total["raw_table_rows"] = con.execute(f"SELECT count(*) FROM raw.{quote_ident(table)}").fetchall()[0][0]
    total["staged_table_rows"] = (
        con.execute(f"SELECT count(*) FROM staging.{quote_ident(table)}").fetchall()[0][0]
        if table_exists(con, f"staging.{table}")
        else 0
    )
    total["quarantine_table_rows"] = con.execute(
        "SELECT count(*) FROM staging.quarantine WHERE table_name = ?", [table]
    ).fetchall()[0][0]
    return {"partitions": parts, "total": total}
