"""The daily run's ingest: every delivered day not staged yet, appended to raw and merged into staging.

A delivery day is the inbox archive's ``processed/<day>/`` folder.  Its *digest* (names, sizes and
modification times of its files) is recorded in ``incremental.ingested_days`` once the day is staged, so a
day is pending when it has no record (new) or another digest (a later delivery added or replaced a file of
that day: the day is loaded again, which replaces its raw load and merges its rows by key again).  Days are
ingested in day order, each table through :func:`~ecom_pipeline.loading.load_raw_partition` (raw: one load
per day) and :func:`~ecom_pipeline.cleaning.staging_upsert.upsert_staging_partition` (staging: MERGE by key,
quarantine per day, changes in ``staging.change_log``): the same functions as the per-day asset
``inbox/daily_partition_ingest``.  Framework-free: plain DuckDB connection, no Dagster.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from ecom_pipeline.sources.base import Source

INGESTED_DAYS = "incremental.ingested_days"
COUNTS = ("raw", "new", "changed", "untouched", "quarantined")


@dataclass
class DayIngest:
    day: str
    reason: str  # why it was pending
    rows: dict[str, dict[str, int]]  # table -> raw / new / changed / untouched / quarantined
    customers: list[str] = field(default_factory=list)  # with a row this day inserted or changed

    def total(self, what: str) -> int:
        return sum(r[what] for r in self.rows.values())


def day_digest(files: list[Path]) -> str:
    """What identifies one day's delivery: its files' names, sizes and modification times."""
    h = hashlib.sha256()
    for p in sorted(files, key=lambda p: p.name):
        st = p.stat()
        h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def ensure_ingested_days(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS incremental")
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {INGESTED_DAYS} (day VARCHAR PRIMARY KEY, digest VARCHAR, "
        "ingested_at TIMESTAMP, load_id VARCHAR)"
    )


def pending_days(con: duckdb.DuckDBPyConnection, archive: dict[str, str]) -> list[tuple[str, str]]:
    """(day, why) for each archived day (``archive``: day -> digest) not staged with that digest, in day
    order."""
    ensure_ingested_days(con)
    done = dict(con.execute(f"SELECT day, digest FROM {INGESTED_DAYS}").fetchall())
    pending = []
    for day in sorted(archive):
        if day not in done:
            pending.append((day, "new delivery day"))
        elif done[day] != archive[day]:
            pending.append((day, "re-delivered: its files changed since it was staged"))
    return pending


def record_day(con: duckdb.DuckDBPyConnection, day: str, digest: str, load_id: str) -> None:
    """After every table of the day is staged (a crash before leaves the day pending: re-running it replaces
    its raw load and merges the same rows again, which changes nothing)."""
    ensure_ingested_days(con)
    at = datetime.now(UTC).replace(tzinfo=None)
    con.execute(f"DELETE FROM {INGESTED_DAYS} WHERE day = ?", [day])
    con.execute(f"INSERT INTO {INGESTED_DAYS} VALUES (?, ?, ?, ?)", [day, digest, at, load_id])


def ingest_day(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    day: str,
    *,
    load_id: str,
    pseudonym_key: bytes,
    chunk_rows: int,
    reason: str = "",
) -> DayIngest:
    """One day's files (``source`` delivers just that day's rows) appended to raw and merged into staging."""
    from ecom_pipeline.canonical import TABLE_ORDER
    from ecom_pipeline.cleaning.staging_upsert import customers_with_new_activity, upsert_staging_partition
    from ecom_pipeline.loading import load_raw_partition

    rows = {}
    for table in TABLE_ORDER:
        raw = load_raw_partition(con, source, table, day, load_id=load_id, chunk_rows=chunk_rows)
        r = upsert_staging_partition(
            con, table, day, pseudonym_key=pseudonym_key, hints=source.parse_hints(table)
        )
        rows[table] = {
            "raw": raw.rows,
            "new": r.inserted,
            "changed": r.updated,
            "untouched": r.unchanged + r.stale,
            "quarantined": r.quarantined,
        }
    return DayIngest(day, reason, rows, customers_with_new_activity(con, day))


def ingest_pending_days(
    con: duckdb.DuckDBPyConnection,
    archive: dict[str, str],
    source_for: Callable[[str], Source],
    *,
    run_id: str,
    pseudonym_key: bytes,
    chunk_rows: int,
) -> list[DayIngest]:
    """Every pending day (:func:`pending_days`), in day order; ``source_for(day)``: the source reading that
    day's files.  Untouched days are not read at all: their raw loads and staged rows stay as they are."""
    done = []
    for day, why in pending_days(con, archive):
        load_id = f"{day}:{run_id}"
        done.append(
            ingest_day(
                con,
                source_for(day),
                day,
                load_id=load_id,
                pseudonym_key=pseudonym_key,
                chunk_rows=chunk_rows,
                reason=why,
            )
        )
        record_day(con, day, archive[day], load_id)
    return done


def summary_markdown(days: list[DayIngest]) -> str:
    if not days:
        return "no pending delivery day: nothing appended, staging unchanged"
    lines = ["| day | why | " + " | ".join(COUNTS) + " | customers |", "|---|---|" + "---:|" * 6]
    for d in days:
        lines.append(
            f"| {d.day} | {d.reason} | "
            + " | ".join(f"{d.total(c):,}" for c in COUNTS)
            + f" | {len(d.customers):,} |"
        )
    return "\n".join(lines)
