"""Full or incremental, and for whom: the refresh plan of one serving table.

A table built from staging records in ``incremental.refresh_state`` the staging watermark it covers (the
latest ``staged_at`` of ``meta.partition_loads`` when it was computed), when it was last rebuilt in full, and
a *signature* (the served model, its version and the settings its rows depend on).  The next run recomputes
only the customers with a staging row that a partition load staged after that watermark inserted or changed,
unless a full refresh is due:

* no state yet (first run), or the run asks for one (``mode="full"``);
* staging was not built by the partitioned ingest (a full ``ingest`` rewrote it: no per-row lineage to go by);
* the signature differs (a new champion version, another served model, other settings);
* the last full refresh is ``full_refresh_days`` or more old (the weekly refresh bounds what incremental runs
  leave stale, e.g. recommendations of customers without activity from a model that was refit since).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import duckdb

from ecom_pipeline.loading import PARTITION_LOADS
from ecom_pipeline.warehouse.tables import table_exists

STATE_TABLE = "incremental.refresh_state"
FULL_REFRESH_DAYS = 7
MODES = ("auto", "full")
# Staging tables whose rows are a customer's activity, and how a row names its customer.
ACTIVITY = {
    "customers": "SELECT customer_id FROM staging.customers s WHERE {changed}",
    "orders": "SELECT customer_id FROM staging.orders s WHERE {changed}",
    "order_items": "SELECT o.customer_id FROM staging.order_items s JOIN staging.orders o USING (order_id) "
    "WHERE {changed}",
    "reviews": "SELECT coalesce(s.customer_id, o.customer_id) FROM staging.reviews s "
    "LEFT JOIN staging.orders o USING (order_id) WHERE {changed}",
    "events": "SELECT customer_id FROM staging.events s WHERE {changed}",
}


@dataclass
class RefreshPlan:
    target: str
    full: bool
    reason: str
    watermark: datetime | None  # the staging watermark this run covers (recorded with its rows)
    customers: list[str] = field(default_factory=list)  # incremental: the customers to recompute
    last_full_at: datetime | None = None

    @property
    def mode(self) -> str:
        return "full" if self.full else "incremental"


def _now(now: datetime | None) -> datetime:
    return (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)


def ensure_state(con: duckdb.DuckDBPyConnection) -> None:
    # its own schema, not meta: it changes with every feature/scoring run, and ingest comparisons read meta
    con.execute("CREATE SCHEMA IF NOT EXISTS incremental")
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (target VARCHAR PRIMARY KEY, signature VARCHAR, "
        "watermark TIMESTAMP, last_full_at TIMESTAMP, refreshed_at TIMESTAMP, mode VARCHAR, "
        "recomputed_customers BIGINT)"
    )


def read_state(con: duckdb.DuckDBPyConnection, target: str) -> dict | None:
    if not table_exists(con, STATE_TABLE):
        return None
    rows = con.execute(
        f"SELECT signature, watermark, last_full_at FROM {STATE_TABLE} WHERE target = ?", [target]
    ).fetchall()
    return dict(zip(("signature", "watermark", "last_full_at"), rows[0])) if rows else None


def record_state(
    con: duckdb.DuckDBPyConnection, plan: RefreshPlan, signature: str, now: datetime | None = None
) -> None:
    """Called inside the transaction that writes the target's rows, so rows and state never disagree."""
    ensure_state(con)
    at = _now(now)
    last_full = at if plan.full else plan.last_full_at
    con.execute(f"DELETE FROM {STATE_TABLE} WHERE target = ?", [plan.target])
    con.execute(
        f"INSERT INTO {STATE_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?)",
        [plan.target, signature, plan.watermark, last_full, at, plan.mode, len(plan.customers)],
    )


def staged_watermark(con: duckdb.DuckDBPyConnection) -> datetime | None:
    if not table_exists(con, PARTITION_LOADS):
        return None
    return con.execute(f"SELECT max(staged_at) FROM {PARTITION_LOADS}").fetchall()[0][0]


def built_by_partitions(con: duckdb.DuckDBPyConnection) -> bool:
    """Every activity row in staging was written by a partition load (so its ``_load_id`` dates it)."""
    if not table_exists(con, PARTITION_LOADS):
        return False
    present = [t for t in ACTIVITY if table_exists(con, f"staging.{t}")]
    if "orders" not in present:
        return False
    for t in present:
        foreign = con.execute(
            f"SELECT count(*) FROM (SELECT DISTINCT _load_id FROM staging.{t}) s "
            f"WHERE _load_id NOT IN (SELECT load_id FROM {PARTITION_LOADS})"
        ).fetchall()[0][0]
        if foreign:
            return False
    return True


def customers_changed_since(
    con: duckdb.DuckDBPyConnection, since: datetime | None, upto: datetime | None = None
) -> list[str]:
    """Customers with a staging row inserted or changed by a load staged after ``since`` (and not after
    ``upto``, when given), plus the previous customer of a changed row (an order moved to another customer
    changes both)."""
    loads = (
        f"(SELECT load_id FROM {PARTITION_LOADS} WHERE staged_at > coalesce(?, TIMESTAMP '1900-01-01') "
        "AND staged_at <= coalesce(?, TIMESTAMP '9999-12-31'))"
    )
    params = [since, upto]
    parts = [
        sql.format(changed=f"s._load_id IN {loads}")
        for t, sql in ACTIVITY.items()
        if table_exists(con, f"staging.{t}")
    ]
    n_params = len(parts)
    if table_exists(con, "staging.change_log"):
        parts.append(
            f"SELECT json_extract_string(previous_row, '$.customer_id') FROM staging.change_log "
            f"WHERE load_id IN {loads} AND table_name IN ('customers', 'orders', 'reviews', 'events')"
        )
        parts.append(
            f"SELECT o.customer_id FROM staging.change_log c JOIN staging.orders o "
            f"ON o.order_id = json_extract_string(c.previous_row, '$.order_id') "
            f"WHERE c.load_id IN {loads} AND c.table_name IN ('order_items', 'reviews')"
        )
        n_params += 2
    if not parts:
        return []
    sql = " UNION ".join(parts)
    rows = con.execute(
        f"SELECT DISTINCT x FROM ({sql}) t(x) WHERE x IS NOT NULL ORDER BY 1", params * n_params
    ).fetchall()
    return [str(r[0]) for r in rows]


def plan_refresh(
    con: duckdb.DuckDBPyConnection,
    target: str,
    *,
    signature: str,
    mode: str = "auto",
    full_refresh_days: float = FULL_REFRESH_DAYS,
    now: datetime | None = None,
    input_watermark: datetime | None = None,
    input_target: str | None = None,
) -> RefreshPlan:
    """Full or incremental for ``target`` (a serving table), with the reason and whom to recompute.

    ``input_target``: a table built from staging that ``target`` is computed from (recommendations from
    features.interactions); the plan then covers the staging changes that table covers
    (``input_watermark``, its recorded watermark), not the ones it has not caught up with yet."""
    if mode not in MODES:
        raise ValueError(f"refresh mode {mode!r}: expected one of {', '.join(MODES)}")
    # read first: a load staged while this run works is caught next time
    watermark = input_watermark if input_target else staged_watermark(con)
    state = read_state(con, target)
    at = _now(now)

    def full(reason: str) -> RefreshPlan:
        return RefreshPlan(target, True, reason, watermark)

    if mode == "full":
        return full("full refresh requested (mode=full)")
    if state is None or not table_exists(con, target):
        return full(f"first run: no state for {target}")
    if input_target and input_watermark is None:
        return full(f"{input_target} records no refresh state: nothing dates what it covers")
    if not built_by_partitions(con):
        return full(
            "staging was not built by the partitioned ingest (rows without a partition load): "
            "nothing dates its changes"
        )
    if state["signature"] != signature:
        return full(f"served model or settings changed: {state['signature']} → {signature}")
    if state["last_full_at"] is None or at - state["last_full_at"] >= timedelta(days=full_refresh_days):
        return full(
            f"weekly full refresh due (last full {state['last_full_at']}, every {full_refresh_days:g} days)"
        )
    customers = customers_changed_since(con, state["watermark"], watermark if input_target else None)
    return RefreshPlan(
        target,
        False,
        f"incremental: {len(customers):,} customers with staging changes after {state['watermark']}",
        watermark,
        customers,
        state["last_full_at"],
    )
