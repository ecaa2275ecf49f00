"""Recompute a whole-catalogue table only when its model would change: the daily gate of tables that are not
keyed by customer (serving.related_items, serving.similar_products).

Such a table is a function of its inputs and settings.  Its *signature* (settings plus, where the output is
determined by it, a fingerprint of the input table) and its input size are recorded in
``incremental.refit_state`` when it is computed.  The next run recomputes it when

* there is no state or no table yet, or the run asks for it (``mode="full"``);
* the signature differs (other settings, or an input fingerprint that changed: then the old rows are stale);
* the last computation is ``full_refresh_days`` or more old (weekly, as the other incremental tables);
* the input grew by more than ``growth`` (a fraction of the rows counted at the last computation).

Otherwise the table is kept as it is ("untouched").  With a fingerprint in the signature and ``growth=0`` the
kept table equals a rebuild exactly (same inputs, deterministic computation); with a row-count rule it is the
last computation's result, the documented difference (as the ALS fold-in between weekly refits).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb

from ecom_pipeline.incremental.changes import FULL_REFRESH_DAYS, MODES
from ecom_pipeline.warehouse.tables import table_exists

REFIT_STATE = "incremental.refit_state"


@dataclass
class RefitDecision:
    target: str
    recompute: bool
    reason: str
    signature: str
    input_rows: int

    @property
    def refresh(self) -> str:
        return "recomputed" if self.recompute else "untouched"


def _now(now: datetime | None) -> datetime:
    return (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)


def _state(con: duckdb.DuckDBPyConnection, target: str) -> tuple | None:
    if not table_exists(con, REFIT_STATE):
        return None
    rows = con.execute(
        "SELECT signature, input_rows, computed_at FROM incremental.refit_state WHERE target = ?", [target]
    ).fetchall()
    return rows[0] if rows else None


def decide_refit(
    con: duckdb.DuckDBPyConnection,
    target: str,
    *,
    signature: str,
    input_rows: int,
    mode: str = "auto",
    growth: float = 0.0,
    full_refresh_days: float = FULL_REFRESH_DAYS,
    now: datetime | None = None,
) -> RefitDecision:
    """Whether ``target`` must be recomputed today, and why (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"refresh mode {mode!r}: expected one of {', '.join(MODES)}")

    def decision(recompute: bool, reason: str) -> RefitDecision:
        return RefitDecision(target, recompute, reason, signature, input_rows)

    state = _state(con, target)
    if mode == "full":
        return decision(True, "full refresh requested (mode=full)")
    if state is None or not table_exists(con, target):
        return decision(True, f"first run: no refit state for {target}")
    old_signature, old_rows, computed_at = state
    if old_signature != signature:
        return decision(True, f"inputs or settings changed: {old_signature} → {signature}")
    if _now(now) - computed_at >= timedelta(days=full_refresh_days):
        return decision(
            True, f"weekly recomputation due (last {computed_at}, every {full_refresh_days:g} days)"
        )
    grown = (input_rows - old_rows) / max(old_rows, 1)
    if abs(grown) > growth:
        return decision(True, f"input rows changed {grown:+.1%} since {computed_at} (more than {growth:.0%})")
    return decision(
        False,
        f"kept: same inputs and settings as the computation of {computed_at}"
        + (f" (input rows {grown:+.1%}, within {growth:.0%})" if growth else ""),
    )


def record_refit(
    con: duckdb.DuckDBPyConnection, decision: RefitDecision, now: datetime | None = None
) -> None:
    """After the recomputed table is written (a crash before leaves the old state: recomputed next run)."""
    con.execute("CREATE SCHEMA IF NOT EXISTS incremental")
    con.execute(
        "CREATE TABLE IF NOT EXISTS incremental.refit_state (target VARCHAR PRIMARY KEY, signature VARCHAR, "
        "input_rows BIGINT, computed_at TIMESTAMP)"
    )
    con.execute("DELETE FROM incremental.refit_state WHERE target = ?", [decision.target])
    con.execute(
        "INSERT INTO incremental.refit_state VALUES (?, ?, ?, ?)",
        [decision.target, decision.signature, decision.input_rows, _now(now)],
    )


def input_fingerprint(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """Rows and content hash of ``table`` (absent: 'absent'), for a signature."""
    from ecom_pipeline.warehouse.tables import table_fingerprint

    if not table_exists(con, table):
        return "absent"
    rows, digest = table_fingerprint(con, table)
    return f"{rows}:{digest}"


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    from ecom_pipeline.warehouse.tables import table_fingerprint

    return table_fingerprint(con, table)[0] if table_exists(con, table) else 0


# serving.related_items: item-kNN co-occurrence over every interaction (cold items: content neighbours).  Kept
# between weekly recomputations unless the interactions grew by more than RELATED_ITEMS_GROWTH (as the ALS
# refit rule) or the product embeddings it uses for cold items changed.
RELATED_ITEMS = "serving.related_items"
RELATED_ITEMS_GROWTH = 0.05


def related_items_decision(
    con: duckdb.DuckDBPyConnection,
    *,
    n: int,
    neighbours: int,
    mode: str = "auto",
    growth: float = RELATED_ITEMS_GROWTH,
    full_refresh_days: float = FULL_REFRESH_DAYS,
    now: datetime | None = None,
) -> RefitDecision:
    signature = (
        f"related_items:n={n};item_knn_neighbours={neighbours};"
        f"product_embeddings={input_fingerprint(con, 'features.product_embeddings')}"
    )
    return decide_refit(
        con,
        RELATED_ITEMS,
        signature=signature,
        input_rows=_count(con, "features.interactions"),
        mode=mode,
        growth=growth,
        full_refresh_days=full_refresh_days,
        now=now,
    )


# serving.similar_products: top-k cosine neighbours of the product embeddings: the same embeddings (and, when
# only the best sellers are kept, the same sales) give the same table, so it is kept until they change.
SIMILAR_PRODUCTS = "serving.similar_products"


def similar_products_decision(
    con: duckdb.DuckDBPyConnection,
    *,
    embeddings: str,
    top_k: int,
    max_products: int,
    mode: str = "auto",
    full_refresh_days: float = FULL_REFRESH_DAYS,
    now: datetime | None = None,
) -> RefitDecision:
    products = _count(con, embeddings)
    signature = f"similar_products:top_k={top_k};max_products={max_products};embeddings=" + input_fingerprint(
        con, embeddings
    )
    if products > max_products:  # the best sellers are chosen by sales: those count too
        signature += ";order_items=" + input_fingerprint(con, "staging.order_items")
    return decide_refit(
        con,
        SIMILAR_PRODUCTS,
        signature=signature,
        input_rows=products,
        mode=mode,
        growth=0.0,
        full_refresh_days=full_refresh_days,
        now=now,
    )


# features.region_embeddings: a GCN trained over the region graph (kNN + flow edges), ~half of a daily
# features run on a small shop.  The graph's structure is what the embedding encodes, so it is retrained
# when the regions or the kNN edges change, weekly, or when the flow orders grew by more than
# REGION_EMBEDDINGS_GROWTH (flow edges appear as pairs cross min_flow_orders); in between the last
# training's embeddings are kept.
REGION_EMBEDDINGS = "features.region_embeddings"
REGION_EMBEDDINGS_GROWTH = 0.05


def _key_fingerprint(con: duckdb.DuckDBPyConnection, table: str, keys: tuple[str, ...]) -> str:
    """``input_fingerprint`` over ``keys`` only: the regions' daily counts and the edges' distances move
    every day without changing the graph the embedding encodes."""
    from ecom_pipeline.warehouse.tables import table_fingerprint

    if not table_exists(con, table):
        return "absent"
    schema, name = table.split(".", 1)
    columns = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
        [schema, name],
    ).fetchall()
    rows, digest = table_fingerprint(con, table, exclude=frozenset(c for (c,) in columns if c not in keys))
    return f"{rows}:{digest}"


def region_embeddings_decision(
    con: duckdb.DuckDBPyConnection,
    *,
    settings: str,
    mode: str = "auto",
    growth: float = REGION_EMBEDDINGS_GROWTH,
    full_refresh_days: float = FULL_REFRESH_DAYS,
    now: datetime | None = None,
) -> RefitDecision:
    signature = (
        f"region_embeddings:{settings};"
        f"regions={_key_fingerprint(con, 'features.regions', ('region_id', 'level'))};"
        f"knn={_key_fingerprint(con, 'features.region_knn_graph', ('src', 'dst', 'level'))}"
    )
    flow_orders = (
        con.execute("SELECT coalesce(sum(orders), 0) FROM features.region_flows").fetchone()[0]
        if table_exists(con, "features.region_flows")
        else 0
    )
    return decide_refit(
        con,
        REGION_EMBEDDINGS,
        signature=signature,
        input_rows=int(flow_orders),
        mode=mode,
        growth=growth,
        full_refresh_days=full_refresh_days,
        now=now,
    )
