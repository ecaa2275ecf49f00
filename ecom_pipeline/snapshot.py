"""The read-only snapshot: a separate DuckDB file that readers open instead of the warehouse.

DuckDB lets one process write a file, and a read-only open of that file takes a lock too: a notebook, a BI
tool or the serving app holding ``warehouse.duckdb`` open stalls the pipeline's next write (and a write in
progress makes their open fail).  After each run that changes the serving or reporting layers the pipeline
publishes the tables readers need into a *new* file and swaps it into place with ``os.replace`` (atomic on
one file system).  A reader keeps the file it opened (the old inode) until it reconnects, so readers never
take the warehouse lock and the pipeline never waits for a reader.

Copied: every table of the ``serving``, ``reports`` and ``ml`` schemas, the product embeddings and
``staging.products`` (no personal data), plus two tables derived here for the serving app:
``staging.customer_regions`` (pseudonymised customer id → state) and ``serving.popular_items`` (order lines
per product, overall and per customer state, for customers without a history) and
``serving.series_last_day`` (the last day of each daily series, for the anomaly status).
``meta.snapshot_info`` says when and from what the snapshot was taken.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

log = logging.getLogger(__name__)

FULL_SCHEMAS = ("serving", "reports", "ml")
EXTRA_TABLES = (
    "features.product_embeddings",
    "features.product_text_embeddings",
    "features.product_image_embeddings",
    "staging.products",
)
INFO_TABLE = "meta.snapshot_info"
# derived tables: name -> (the staging tables it needs, its SELECT over the warehouse)
DERIVED = {
    "staging.customer_regions": (("staging.customers",), "SELECT customer_id, state FROM staging.customers"),
    "serving.popular_items": (
        ("staging.order_items", "staging.orders", "staging.customers"),
        """SELECT CASE WHEN grouping(c.state) = 1 THEN '*' ELSE coalesce(c.state, '?') END AS region,
           oi.product_id, count(*)::BIGINT AS order_lines
           FROM staging.order_items oi JOIN staging.orders o USING (order_id)
           LEFT JOIN staging.customers c USING (customer_id)
           GROUP BY GROUPING SETS ((c.state, oi.product_id), (oi.product_id))""",
    ),
    "serving.series_last_day": (
        ("features.daily_series",),
        "SELECT series_id, max(date) AS last_day FROM features.daily_series GROUP BY 1",
    ),
}


@dataclass
class SnapshotResult:
    path: Path
    tables: dict[str, int] = field(default_factory=dict)  # table -> rows
    seconds: float = 0.0
    published_at: datetime | None = None
    bytes: int = 0


def _tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_catalog = current_database() AND table_type = 'BASE TABLE'"
    ).fetchall()
    return sorted(f"{s}.{t}" for s, t in rows)


def _sql_text(value: str) -> str:
    return value.replace("'", "''")


def _quoted(qualified: str) -> str:
    schema, table = qualified.split(".", 1)
    return f'"{schema}"."{table}"'


def publish_snapshot(warehouse: duckdb.DuckDBPyConnection | str | Path, target: str | Path) -> SnapshotResult:
    """Copy the reader tables of ``warehouse`` into a new file and atomically replace ``target`` with it.

    ``warehouse``: an open connection (the caller's, read-only or not) or a path (opened read-only, waiting
    for a writer's lock like every other warehouse open).  The new file is attached to that connection and
    the tables are copied by DuckDB itself (in parallel, instead of streaming every row through Arrow into a
    second connection; no second open of the warehouse file in this process), then detached before the swap.
    """
    from ecom_pipeline.resources.warehouse import connect_with_retry

    start = time.monotonic()
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    own = isinstance(warehouse, (str, Path))  # else an open connection (a DuckLake one too)
    src = connect_with_retry(warehouse, read_only=True) if own else warehouse
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{int(time.time() * 1000)}.tmp")
    alias = f"_ecom_snapshot_{os.getpid()}"  # never a name the caller's connection already uses
    result = SnapshotResult(target)
    attached = False
    try:
        existing = _tables(src)
        wanted = [t for t in existing if t.split(".", 1)[0] in FULL_SCHEMAS or t in EXTRA_TABLES]
        src.execute(f"ATTACH '{_sql_text(str(tmp))}' AS {alias} (READ_WRITE)")
        attached = True
        for schema in {t.split(".", 1)[0] for t in [*wanted, *DERIVED, INFO_TABLE]}:
            src.execute(f'CREATE SCHEMA IF NOT EXISTS {alias}."{schema}"')
        copies = [(t, f"SELECT * FROM {_quoted(t)}") for t in wanted]
        copies += [(t, sql) for t, (needs, sql) in DERIVED.items() if all(n in existing for n in needs)]
        for table, sql in copies:
            src.execute(f"CREATE TABLE {alias}.{_quoted(table)} AS {sql}")
            result.tables[table] = src.execute(f"SELECT count(*) FROM {alias}.{_quoted(table)}").fetchall()[
                0
            ][0]
        result.published_at = datetime.now(UTC).replace(tzinfo=None)
        src.execute(
            f"CREATE TABLE {alias}.{INFO_TABLE} (published_at TIMESTAMP, source VARCHAR, tables INTEGER, "
            "pid INTEGER)"
        )
        source = str(warehouse) if own else "connection"
        src.execute(
            f"INSERT INTO {alias}.{INFO_TABLE} VALUES (?, ?, ?, ?)",
            [result.published_at, source, len(result.tables), os.getpid()],
        )
        src.execute(f"CHECKPOINT {alias}")
        src.execute(f"DETACH {alias}")
        attached = False
        with open(tmp, "rb") as fh:  # the data is on disk before the name points at it
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        result.bytes = target.stat().st_size
    except BaseException:
        if attached:
            with contextlib.suppress(duckdb.Error):
                src.execute(f"DETACH {alias}")
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
        raise
    finally:
        if own:
            src.close()
    result.seconds = time.monotonic() - start
    log.info("published snapshot %s: %d tables in %.2f s", target, len(result.tables), result.seconds)
    return result


def open_snapshot(path: str | Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection on the published snapshot (never the warehouse)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no snapshot at {path}: run the `publish_snapshot` job (or `make demo`) first"
        )
    return duckdb.connect(str(path), read_only=True)


def snapshot_identity(path: str | Path) -> tuple[int, int] | None:
    """(inode, mtime_ns) of the published file; changes on every publish (None when there is none yet)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns
