"""Daily (partitioned) staging: one partition's raw rows are validated like a full staging run and then
merged into ``staging.<table>`` by key, in one transaction.

A partition is staged with :func:`ecom_pipeline.cleaning.staging.stage_table` itself (same typing, privacy,
rules and in-partition duplicate handling), over a scratch copy of the partition's raw rows; the orphan
checks look at the live staging tables (the parents staged so far, this partition included).  Then each
accepted row is, against the row staging holds for its key:

* ``insert``    a new key;
* ``update``    the key exists with other values, and the row's partition is not older than the one that
                wrote the current row (a late-arriving correction).  The change is recorded in
                ``staging.change_log``: key, partition, changed columns and the previous row;
* ``unchanged`` the same values (a re-delivered partition): nothing is written;
* ``stale``     other values, but the current row came from a later partition (an old partition
                re-delivered after a correction): the newer row stays.

The partition's quarantine rows replace those of its earlier loads.  The invariant raw = accepted +
quarantined is checked per partition inside the transaction (as ``stage_table`` does per table), and the
counts go to ``meta.partition_loads``; :func:`ecom_pipeline.warehouse.tables.partition_load_counts` reads
them.

A full rebuild (:func:`rebuild_staging_from_partitions`) replays every partition in order into empty staging
tables; it is what a mapping or cleaning-rule change needs, and gives the same tables as the daily runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from ecom_pipeline.canonical import TABLE_ORDER, TABLES, ParseHints
from ecom_pipeline.cleaning.staging import (
    QUARANTINE_TABLE,
    STAGING_SCHEMA,
    StagingError,
    ensure_quarantine_table,
    stage_table,
)
from ecom_pipeline.loading import PARTITION_LOADS, RAW_SCHEMA, ensure_partition_loads
from ecom_pipeline.warehouse.tables import quote_ident as qi
from ecom_pipeline.warehouse.tables import table_exists

CHANGE_LOG = f"{STAGING_SCHEMA}.change_log"
SCRATCH_RAW = "partition_raw"
SCRATCH_STAGING = "partition_staging"
LINEAGE = ("_load_id", "_source_file", "_source_row")


@dataclass
class PartitionStageResult:
    table: str
    partition: str
    load_id: str
    raw_rows: int
    inserted: int
    updated: int
    unchanged: int
    stale: int
    quarantined: int
    reasons: dict
    seconds: float

    @property
    def accepted(self) -> int:
        return self.inserted + self.updated + self.unchanged + self.stale


def ensure_change_log(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {STAGING_SCHEMA}")
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {CHANGE_LOG} (table_name VARCHAR, key_value VARCHAR, partition_key "
        "VARCHAR, load_id VARCHAR, source_file VARCHAR, source_row BIGINT, changed_columns VARCHAR, "
        "previous_row VARCHAR, previous_load_id VARCHAR, changed_at TIMESTAMP)"
    )


def _drop_relation(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> None:
    kinds = con.execute(
        "SELECT table_type FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [schema, name],
    ).fetchall()
    for (kind,) in kinds:
        con.execute(f"DROP {'VIEW' if kind == 'VIEW' else 'TABLE'} {qi(schema)}.{qi(name)}")


def current_load(con: duckdb.DuckDBPyConnection, table: str, partition: str) -> str:
    rows = con.execute(
        f"SELECT load_id FROM {PARTITION_LOADS} WHERE table_name = ? AND partition_key = ? AND is_current",
        [table, partition],
    ).fetchall()
    if not rows:
        raise StagingError(f"no raw load of partition {partition} of {table}: run load_raw_partition first")
    return rows[0][0]


def upsert_staging_partition(
    con: duckdb.DuckDBPyConnection,
    table: str,
    partition: str,
    *,
    pseudonym_key: bytes,
    hints: ParseHints | None = None,
    now: datetime | None = None,
) -> PartitionStageResult:
    """Stage the current raw load of ``partition`` of ``table`` and merge it into staging by key."""
    start = time.perf_counter()
    spec = TABLES[table]
    ensure_partition_loads(con)
    ensure_change_log(con)
    ensure_quarantine_table(con)
    load_id = current_load(con, table, partition)
    for schema in (SCRATCH_RAW, SCRATCH_STAGING):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    scratch_raw = f"{SCRATCH_RAW}.{qi(table)}"
    scratch = f"{SCRATCH_STAGING}.{qi(table)}"
    live = f"{STAGING_SCHEMA}.{qi(table)}"
    con.execute(
        f"CREATE OR REPLACE TABLE {scratch_raw} AS SELECT * FROM {RAW_SCHEMA}.{qi(table)} WHERE _load_id = ?",
        [load_id],
    )
    if (
        table_exists(con, f"{STAGING_SCHEMA}.{table}")
        and not con.execute(f"SELECT count(*) FROM {scratch_raw}").fetchall()[0][0]
    ):
        return _empty_partition(con, table, partition, load_id, start, now)
    # Orphan checks against the live parents (views, so a parent staged earlier in this run counts).
    _drop_relation(con, SCRATCH_STAGING, table)
    for fk in spec.foreign_keys:
        _drop_relation(con, SCRATCH_STAGING, fk.parent)
        if table_exists(con, f"{STAGING_SCHEMA}.{fk.parent}"):
            con.execute(
                f"CREATE VIEW {SCRATCH_STAGING}.{qi(fk.parent)} AS "
                f"SELECT * FROM {STAGING_SCHEMA}.{qi(fk.parent)}"
            )
    stage = stage_table(
        con,
        table,
        hints=hints,
        pseudonym_key=pseudonym_key,
        raw_schema=SCRATCH_RAW,
        staging_schema=SCRATCH_STAGING,
        now=now,
    )
    if not table_exists(con, f"{STAGING_SCHEMA}.{table}"):
        con.execute(f"CREATE TABLE {live} AS SELECT * FROM {scratch} LIMIT 0")

    cols = spec.column_names
    keys = list(spec.key)
    on = " AND ".join(f"s.{qi(k)} = t.{qi(k)}" for k in keys)
    same = (
        f"struct_pack({', '.join(f's.{qi(c)}' for c in cols)}) IS NOT DISTINCT FROM "
        f"struct_pack({', '.join(f't.{qi(c)}' for c in cols)})"
    )
    changed = (
        "concat_ws(',', "
        + ", ".join(f"CASE WHEN s.{qi(c)} IS DISTINCT FROM t.{qi(c)} THEN '{c}' END" for c in cols)
        + ")"
    )
    key_json = "CAST(json_object(" + ", ".join(f"'{k}', s.{qi(k)}" for k in keys) + ") AS VARCHAR)"
    prev_json = "CAST(json_object(" + ", ".join(f"'{c}', t.{qi(c)}" for c in cols) + ") AS VARCHAR)"
    work = f"_upsert_{table}"
    now_ts = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    con.execute(f"DROP TABLE IF EXISTS temp.{qi(work)}")
    con.execute(
        f"CREATE TEMP TABLE {qi(work)} AS SELECT s.*, "
        "CASE WHEN t._present IS NULL THEN 'insert' "
        f"     WHEN {same} THEN 'unchanged' "
        "     WHEN coalesce(pl.partition_key, '') > ? THEN 'stale' ELSE 'update' END AS _change, "
        f"{changed} AS _changed_columns, {key_json} AS _key_value, {prev_json} AS _previous_row, "
        "t._load_id AS _previous_load_id "
        f"FROM {scratch} s LEFT JOIN (SELECT *, true AS _present FROM {live}) t ON {on} "
        f"LEFT JOIN (SELECT DISTINCT load_id, partition_key FROM {PARTITION_LOADS} WHERE table_name = ?) pl "
        "ON pl.load_id = t._load_id",
        [partition, table],
    )
    counts = dict(con.execute(f"SELECT _change, count(*) FROM {qi(work)} GROUP BY 1").fetchall())
    all_cols = [*cols, *LINEAGE]
    col_list = ", ".join(qi(c) for c in all_cols)
    quarantine = f"{STAGING_SCHEMA}.{QUARANTINE_TABLE}"
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(
                f"DELETE FROM {quarantine} WHERE table_name = ? AND load_id IN (SELECT load_id FROM "
                f"{PARTITION_LOADS} WHERE table_name = ? AND partition_key = ?)",
                [table, table, partition],
            )
            con.execute(
                f"INSERT INTO {quarantine} SELECT * FROM {SCRATCH_STAGING}.{QUARANTINE_TABLE} "
                "WHERE table_name = ?",
                [table],
            )
            con.execute(
                f"INSERT INTO {CHANGE_LOG} SELECT ?, _key_value, ?, _load_id, _source_file, _source_row, "
                f"_changed_columns, _previous_row, _previous_load_id, ? FROM {qi(work)} "
                "WHERE _change = 'update'",
                [table, partition, now_ts],
            )
            con.execute(
                f"MERGE INTO {live} t USING (SELECT {col_list} FROM {qi(work)} "
                f"WHERE _change IN ('insert', 'update')) s ON ({on}) "
                f"WHEN MATCHED THEN UPDATE SET {', '.join(f'{qi(c)} = s.{qi(c)}' for c in all_cols)} "
                f"WHEN NOT MATCHED THEN INSERT ({col_list}) VALUES "
                f"({', '.join(f's.{qi(c)}' for c in all_cols)})"
            )
            raw_rows = con.execute(f"SELECT count(*) FROM {scratch_raw}").fetchall()[0][0]
            accepted = sum(counts.values())
            quarantined = con.execute(
                f"SELECT count(*) FROM {quarantine} WHERE table_name = ? AND load_id = ?", [table, load_id]
            ).fetchall()[0][0]
            if raw_rows != accepted + quarantined:
                raise StagingError(
                    f"invariant violated for {table} partition {partition}: raw {raw_rows} != "
                    f"accepted {accepted} + quarantined {quarantined}; nothing was changed"
                )
            con.execute(
                f"UPDATE {PARTITION_LOADS} SET staged_at = ?, accepted_rows = ?, inserted_rows = ?, "
                "updated_rows = ?, unchanged_rows = ?, stale_rows = ?, quarantined_rows = ? WHERE load_id = "
                "? AND table_name = ?",
                [
                    now_ts,
                    accepted,
                    counts.get("insert", 0),
                    counts.get("update", 0),
                    counts.get("unchanged", 0),
                    counts.get("stale", 0),
                    quarantined,
                    load_id,
                    table,
                ],
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    finally:
        con.execute(f"DROP TABLE IF EXISTS temp.{qi(work)}")
        con.execute(f"DROP TABLE IF EXISTS {scratch_raw}")
    return PartitionStageResult(
        table=table,
        partition=partition,
        load_id=load_id,
        raw_rows=raw_rows,
        inserted=counts.get("insert", 0),
        updated=counts.get("update", 0),
        unchanged=counts.get("unchanged", 0),
        stale=counts.get("stale", 0),
        quarantined=quarantined,
        reasons=stage.reasons,
        seconds=time.perf_counter() - start,
    )


def _empty_partition(
    con: duckdb.DuckDBPyConnection,
    table: str,
    partition: str,
    load_id: str,
    start: float,
    now: datetime | None,
) -> PartitionStageResult:
    """A partition without rows of ``table`` (most days have no new sellers): nothing to stage; the
    quarantine rows of its earlier loads go, as a re-delivery would replace them."""
    now_ts = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            f"DELETE FROM {STAGING_SCHEMA}.{QUARANTINE_TABLE} WHERE table_name = ? AND load_id IN "
            f"(SELECT load_id FROM {PARTITION_LOADS} WHERE table_name = ? AND partition_key = ?)",
            [table, table, partition],
        )
        con.execute(
            f"UPDATE {PARTITION_LOADS} SET staged_at = ?, accepted_rows = 0, inserted_rows = 0, "
            "updated_rows = 0, unchanged_rows = 0, stale_rows = 0, quarantined_rows = 0 "
            "WHERE load_id = ? AND table_name = ?",
            [now_ts, load_id, table],
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    con.execute(f"DROP TABLE IF EXISTS {SCRATCH_RAW}.{qi(table)}")
    return PartitionStageResult(
        table=table,
        partition=partition,
        load_id=load_id,
        raw_rows=0,
        inserted=0,
        updated=0,
        unchanged=0,
        stale=0,
        quarantined=0,
        reasons={},
        seconds=time.perf_counter() - start,
    )


def rebuild_staging_from_partitions(
    con: duckdb.DuckDBPyConnection,
    *,
    pseudonym_key: bytes,
    hints_for=lambda table: ParseHints(),
    tables: tuple[str, ...] = TABLE_ORDER,
    now: datetime | None = None,
) -> list[PartitionStageResult]:
    """The full rebuild: empty the staging tables, their quarantine and change log, and replay every current
    partition load in partition order (tables in dependency order within a partition)."""
    ensure_partition_loads(con)
    ensure_change_log(con)
    ensure_quarantine_table(con)
    loaded = [
        t
        for t in tables
        if con.execute(f"SELECT count(*) FROM {PARTITION_LOADS} WHERE table_name = ?", [t]).fetchall()[0][0]
    ]
    for t in loaded:
        con.execute(f"DROP TABLE IF EXISTS {STAGING_SCHEMA}.{qi(t)}")
        con.execute(f"DELETE FROM {STAGING_SCHEMA}.{QUARANTINE_TABLE} WHERE table_name = ?", [t])
        con.execute(f"DELETE FROM {CHANGE_LOG} WHERE table_name = ?", [t])
    parts = [
        p
        for (p,) in con.execute(
            f"SELECT DISTINCT partition_key FROM {PARTITION_LOADS} WHERE is_current ORDER BY 1"
        ).fetchall()
    ]
    results = []
    for p in parts:
        for t in loaded:
            if con.execute(
                f"SELECT count(*) FROM {PARTITION_LOADS} WHERE table_name = ? AND partition_key = ? "
                "AND is_current",
                [t, p],
            ).fetchall()[0][0]:
                results.append(
                    upsert_staging_partition(
                        con, t, p, pseudonym_key=pseudonym_key, hints=hints_for(t), now=now
                    )
                )
    return results


# Tables whose rows are a customer's activity (their customer_id column), for incremental scoring.
ACTIVITY_TABLES = ("customers", "orders", "reviews", "events")


def keys_written_by_partition(con: duckdb.DuckDBPyConnection, table: str, partition: str) -> list[tuple]:
    """Keys of ``table`` that the current load of ``partition`` inserted or updated in staging (rows it left
    unchanged keep their earlier lineage and are not listed)."""
    load_id = current_load(con, table, partition)
    keys = ", ".join(qi(k) for k in TABLES[table].key)
    return con.execute(
        f"SELECT {keys} FROM {STAGING_SCHEMA}.{qi(table)} WHERE _load_id = ? ORDER BY ALL", [load_id]
    ).fetchall()


def customers_with_new_activity(con: duckdb.DuckDBPyConnection, partition: str) -> list[str]:
    """Staged (pseudonymised) customer ids with a row that ``partition`` inserted or changed in customers,
    orders, reviews or events: whom incremental scoring must recompute."""
    parts = []
    params: list = []
    for table in ACTIVITY_TABLES:
        if not table_exists(con, f"{STAGING_SCHEMA}.{table}"):
            continue
        parts.append(
            f"SELECT customer_id FROM {STAGING_SCHEMA}.{qi(table)} WHERE _load_id IN "
            f"(SELECT load_id FROM {PARTITION_LOADS} WHERE table_name = ? AND partition_key = ? "
            "AND is_current)"
        )
        params += [table, partition]
    if not parts:
        return []
    return [
        r[0]
        for r in con.execute(
            f"SELECT DISTINCT customer_id FROM ({' UNION ALL '.join(parts)}) "
            "WHERE customer_id IS NOT NULL ORDER BY 1",
            params,
        ).fetchall()
    ]
