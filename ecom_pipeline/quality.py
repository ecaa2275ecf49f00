"""Data checks over the warehouse, as plain functions (the Dagster asset checks are thin wrappers).

Each returns a :class:`CheckOutcome`: passed or not, and figures for the UI.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import duckdb

from ecom_pipeline.canonical import TABLES, ParseHints
from ecom_pipeline.cleaning import rules
from ecom_pipeline.loading import RAW_SCHEMA, quote_ident
from ecom_pipeline.warehouse.tables import table_exists

STAGING_SCHEMA = "staging"
QUARANTINE = f"{STAGING_SCHEMA}.quarantine"
LOAD_LOG = "meta.load_log"


@dataclass
class CheckOutcome:
    passed: bool
    metadata: dict = field(default_factory=dict)
    description: str = ""


def _exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return table_exists(con, f"{schema}.{table}")


def _staged(table: str) -> str:
    return f"{STAGING_SCHEMA}.{quote_ident(table)}"


def _key_sql(table: str) -> str:
    return ", ".join(quote_ident(c) for c in TABLES[table].key)


def check_unique_key(con: duckdb.DuckDBPyConnection, table: str) -> CheckOutcome:
    key = _key_sql(table)
    dup = con.execute(
        f"SELECT count(*) FROM (SELECT {key} FROM {_staged(table)} GROUP BY {key} HAVING count(*) > 1)"
    ).fetchall()[0][0]
    return CheckOutcome(dup == 0, {"duplicated_keys": int(dup)}, f"key ({key}) is unique")


def check_non_null_key(con: duckdb.DuckDBPyConnection, table: str) -> CheckOutcome:
    cond = " OR ".join(f"{quote_ident(c)} IS NULL" for c in TABLES[table].key)
    n = con.execute(f"SELECT count(*) FROM {_staged(table)} WHERE {cond}").fetchall()[0][0]
    return CheckOutcome(n == 0, {"null_keys": int(n)}, "no key column is null")


def check_foreign_keys(con: duckdb.DuckDBPyConnection, table: str) -> CheckOutcome:
    orphans: dict[str, int] = {}
    skipped: list[str] = []
    for fk in TABLES[table].foreign_keys:
        if not _exists(con, STAGING_SCHEMA, fk.parent):
            skipped.append(fk.parent)
            continue
        on = " AND ".join(
            f"c.{quote_ident(a)} = p.{quote_ident(b)}" for a, b in zip(fk.columns, fk.parent_columns)
        )
        not_null = " AND ".join(f"c.{quote_ident(a)} IS NOT NULL" for a in fk.columns)
        n = con.execute(
            f"SELECT count(*) FROM {_staged(table)} c ANTI JOIN {_staged(fk.parent)} "
            f"p ON {on} WHERE {not_null}"
        ).fetchall()[0][0]
        orphans[f"{','.join(fk.columns)}->{fk.parent}"] = int(n)
    meta = {"orphans": orphans, "parents_not_staged": skipped}
    return CheckOutcome(all(v == 0 for v in orphans.values()), meta, "every foreign key has its parent row")


def check_ranges(con: duckdb.DuckDBPyConnection, table: str) -> CheckOutcome:
    spec = TABLES[table]
    violations: dict[str, int] = {}
    for col in spec.columns:
        conds = []
        q = quote_ident(col.name)
        if col.min_value is not None:
            conds.append(f"{q} < {float(col.min_value)}")
        if col.max_value is not None:
            conds.append(f"{q} > {float(col.max_value)}")
        if col.allowed:
            allowed = ", ".join("'" + a.replace("'", "''") + "'" for a in col.allowed)
            conds.append(f"{q} NOT IN ({allowed})")
        if not conds:
            continue
        n = con.execute(f"SELECT count(*) FROM {_staged(table)} WHERE {' OR '.join(conds)}").fetchall()[0][0]
        violations[col.name] = int(n)
    return CheckOutcome(
        all(v == 0 for v in violations.values()),
        {"violations": violations},
        "numeric ranges and closed vocabularies hold",
    )


def current_load_id(con: duckdb.DuckDBPyConnection, table: str) -> str | None:
    row = con.execute(f"SELECT max(_load_id) FROM {RAW_SCHEMA}.{quote_ident(table)}").fetchall()[0]
    return row[0] if row else None


def check_row_invariant(con: duckdb.DuckDBPyConnection, table: str) -> CheckOutcome:
    """raw rows = staging rows + quarantined rows, for the load now in the warehouse."""
    raw = con.execute(f"SELECT count(*) FROM {RAW_SCHEMA}.{quote_ident(table)}").fetchall()[0][0]
    staged = con.execute(f"SELECT count(*) FROM {_staged(table)}").fetchall()[0][0]
    load_id = current_load_id(con, table)
    quarantined = 0
    if _exists(con, STAGING_SCHEMA, "quarantine"):
        quarantined = con.execute(
            f"SELECT count(*) FROM {QUARANTINE} WHERE table_name = ? AND load_id IS NOT DISTINCT FROM ?",
            [table, load_id],
        ).fetchall()[0][0]
    meta = {
        "raw_rows": int(raw),
        "staged_rows": int(staged),
        "quarantined_rows": int(quarantined),
        "load_id": load_id or "",
    }
    return CheckOutcome(raw == staged + quarantined, meta, "raw = staged + quarantined")


def _fmt_pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def check_quarantine_share(
    con: duckdb.DuckDBPyConnection,
    table: str,
    max_share: float,
    hints: ParseHints | None = None,
) -> CheckOutcome:
    """At most ``max_share`` of the raw rows quarantined (duplicates of a staged key not counted).

    A failure names the top reasons and one example row (file, row, the values of the failing column); when
    timestamps did not parse, also the formats they were read with, so a file whose dates do not match the
    mapping (``dd/mm/yy`` read as ``%m/%d/%Y``) stops here instead of training models on nothing.
    """
    raw = con.execute(f"SELECT count(*) FROM {RAW_SCHEMA}.{quote_ident(table)}").fetchall()[0][0]
    reasons: dict[str, int] = {}
    if _exists(con, STAGING_SCHEMA, "quarantine"):
        load_id = current_load_id(con, table)
        reasons = dict(
            con.execute(
                f"SELECT reason, count(*) FROM {QUARANTINE} WHERE table_name = ? AND load_id IS NOT DISTINCT "
                "FROM ? GROUP BY 1 ORDER BY 2 DESC, 1",
                [table, load_id],
            ).fetchall()
        )
    rejected = {r: n for r, n in reasons.items() if r not in rules.DUPLICATE_REASONS}
    duplicates = {r: n for r, n in reasons.items() if r in rules.DUPLICATE_REASONS}
    n_rejected = sum(rejected.values())
    share = n_rejected / raw if raw else 0.0
    meta = {
        "raw_rows": int(raw),
        "quarantined_rows": int(n_rejected),
        "share": round(share, 4),
        "max_share": max_share,
        "reasons": rejected or "none",
        "duplicates_not_counted": duplicates or "none",
    }
    if share <= max_share:
        return CheckOutcome(
            True,
            meta,
            f"at most {_fmt_pct(max_share)} of raw rows quarantined "
            f"({_fmt_pct(share)}; duplicates of a staged key not counted)",
        )
    top = list(rejected.items())[:3]
    top_reason = top[0][0]
    example = con.execute(
        f"SELECT source_file, source_row, detail, original_row FROM {QUARANTINE} WHERE table_name = ? "
        "AND reason = ? ORDER BY source_file, source_row LIMIT 1",
        [table, top_reason],
    ).fetchall()[0]
    file_, row, detail, original = example
    column = top_reason.split(":", 1)[1] if ":" in top_reason else None
    values = json.loads(original) if original else {}
    shown = {column: values.get(column)} if column in values else values
    message = (
        f"staging.{table}: {_fmt_pct(share)} of {raw:,} raw rows quarantined (limit {_fmt_pct(max_share)}, "
        "setting ECOM_MAX_QUARANTINE_SHARE). Top reasons: "
        + ", ".join(f"{r} ({n:,})" for r, n in top)
        + f". Example: file {file_} row {row}: {detail}; values {json.dumps(shown, ensure_ascii=False)}."
    )
    if (
        column
        and column in TABLES[table].column_names
        and TABLES[table].column(column).dtype == "TIMESTAMP"
        and top_reason.split(":")[0] in ("bad_type", "ancient_timestamp", "future_timestamp")
    ):
        formats = list(hints.timestamp_formats) if hints else "the source's"
        message += (
            f" Dates of column {column} in file {file_} do not match the timestamp format(s) {formats}: "
            "set timestamp_formats in the mapping to the file's format (docs/mapping.md)."
        )
    meta["example"] = {"file": file_, "row": int(row), "detail": detail, "values": shown}
    meta["message"] = message
    return CheckOutcome(False, meta, message)


def check_freshness(
    con: duckdb.DuckDBPyConnection, table: str, max_lag_days: float, now: datetime | None = None
) -> CheckOutcome:
    """Newest event time within ``max_lag_days`` of now (historical datasets fail this, honestly: WARN)."""
    col = TABLES[table].time_column
    if col is None:
        return CheckOutcome(True, {"note": "table has no event time"})
    newest = con.execute(f"SELECT max({quote_ident(col)}) FROM {_staged(table)}").fetchall()[0][0]
    now = (now or datetime.now(timezone.utc)).replace(tzinfo=None)
    if newest is None:
        return CheckOutcome(False, {"newest": "none", "note": "table is empty"})
    lag = now - newest
    return CheckOutcome(
        lag <= timedelta(days=max_lag_days),
        {
            "newest": str(newest),
            "lag_days": round(lag.total_seconds() / 86400, 2),
            "max_lag_days": max_lag_days,
        },
        f"newest {col} is at most {max_lag_days} days old",
    )


def ensure_load_log(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS meta")
    con.execute(
        f"""CREATE TABLE IF NOT EXISTS {LOAD_LOG} (
            load_id VARCHAR, layer VARCHAR, table_name VARCHAR, source VARCHAR,
            rows BIGINT, quarantined BIGINT, seconds DOUBLE, logged_at TIMESTAMP)"""
    )


def log_load(
    con: duckdb.DuckDBPyConnection,
    *,
    load_id: str,
    layer: str,
    table: str,
    source: str,
    rows: int,
    quarantined: int,
    seconds: float,
) -> None:
    """Record one load (idempotent per load, layer and table) for the row-count anomaly check."""
    ensure_load_log(con)
    con.execute(
        f"DELETE FROM {LOAD_LOG} WHERE load_id = ? AND layer = ? AND table_name = ?", [load_id, layer, table]
    )
    con.execute(
        f"INSERT INTO {LOAD_LOG} VALUES (?, ?, ?, ?, ?, ?, ?, now()::TIMESTAMP)",
        [load_id, layer, table, source, rows, quarantined, seconds],
    )


def check_row_count_anomaly(
    con: duckdb.DuckDBPyConnection,
    table: str,
    *,
    layer: str = "raw",
    history: int = 5,
    low: float = 0.5,
    high: float = 2.0,
) -> CheckOutcome:
    """The newest load's row count within [low, high] x the median of the previous loads of the same
    source."""
    if not _exists(con, "meta", "load_log"):
        return CheckOutcome(False, {"note": "no load recorded"})
    rows = con.execute(
        f"""SELECT load_id, source, rows FROM {LOAD_LOG} WHERE layer = ? AND table_name = ?
            ORDER BY logged_at DESC LIMIT ?""",
        [layer, table, history + 1],
    ).fetchall()
    if not rows:
        return CheckOutcome(False, {"note": "no load recorded"})
    _, source, current = rows[0]
    previous = [r[2] for r in rows[1:] if r[1] == source]
    if not previous:
        return CheckOutcome(
            True, {"rows": int(current), "note": "first load of this source: nothing to compare"}
        )
    median = statistics.median(previous)
    ratio = current / median if median else (1.0 if current == 0 else float("inf"))
    return CheckOutcome(
        low <= ratio <= high,
        {
            "rows": int(current),
            "median_previous": float(median),
            "ratio": round(ratio, 3),
            "loads_compared": len(previous),
        },
        f"row count within {low}x..{high}x of the median of the last {history} loads",
    )
