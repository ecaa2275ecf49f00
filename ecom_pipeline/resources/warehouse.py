"""The DuckDB warehouse: one file, one schema per layer.

DuckDB allows one writer *process* at a time.  Writers run in the Dagster pool ``duckdb`` (limit 1) and
readers open the file read-only; on top of that, opening retries for a while on a lock conflict so two
runs that race for the file wait for each other instead of failing with "could not set lock".
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb

LAYER_SCHEMAS = ("raw", "staging", "features", "ml", "serving", "reports", "meta")

# DuckDB's message for a file locked by another process.
_LOCK_MARKERS = ("could not set lock", "Conflicting lock")


def connect_with_retry(
    path: str | Path, *, read_only: bool = False, timeout_s: float = 120.0, threads: int | None = None
) -> duckdb.DuckDBPyConnection:
    """Open the warehouse, waiting (with jittered back-off) while another process holds the write lock."""
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.exists():
        raise FileNotFoundError(f"warehouse {path} does not exist yet: materialise the raw and staging assets first")
    config = {"threads": threads} if threads else {}
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=config)
        except duckdb.ConnectionException as exc:
            # This process already holds the file read-write (an in-process run): a read-only open is
            # refused, but a read-write one shares the same database instance, so use that.
            if read_only and "different configuration" in str(exc):
                return duckdb.connect(str(path), read_only=False, config=config)
            raise
        except duckdb.IOException as exc:
            if not any(m in str(exc) for m in _LOCK_MARKERS) or time.monotonic() > deadline:
                raise
            time.sleep(delay + random.uniform(0, delay))
            delay = min(delay * 2, 5.0)


class WarehouseResource(dg.ConfigurableResource):
    """Connections to the DuckDB warehouse file (default ``data/warehouse.duckdb``)."""

    path: str
    lock_timeout_s: float = 300.0
    threads: int = 0  # 0 = DuckDB's default (all cores)

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        con = connect_with_retry(
            self.path, read_only=read_only, timeout_s=self.lock_timeout_s, threads=self.threads or None
        )
        try:
            if not read_only:
                for schema in LAYER_SCHEMAS:
                    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            yield con
        finally:
            con.close()
