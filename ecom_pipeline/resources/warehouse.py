"""The DuckDB warehouse: one file, one schema per layer.

DuckDB allows one writer *process* at a time.  Writers run in the Dagster pool ``duckdb`` (limit 1) and
readers open the file read-only; on top of that, opening retries for a while on a lock conflict so two
runs that race for the file wait for each other instead of failing with "could not set lock".

With ``ECOM_WAREHOUSE_BACKEND=ducklake`` the same schemas and tables live in a DuckLake instead (a Postgres
catalog plus shared Parquet files, several writers at once: :mod:`ecom_pipeline.warehouse.lake`); the lock
rules above are then not needed (optimistic concurrency, conflicts retried).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import duckdb

from ecom_pipeline.config import duckdb_memory_limit
from ecom_pipeline.warehouse.lake import connect_lake

# every schema an asset writes into with plain SQL (models.*: the backtests; in a launched run at 1M orders
# lstm_backtest finished before the first write into models and failed on the missing schema)
LAYER_SCHEMAS = ("raw", "staging", "features", "models", "ml", "serving", "reports", "meta")

# DuckDB's message for a file locked by another process.
_LOCK_MARKERS = ("could not set lock", "Conflicting lock")
# Cap on DuckDB's buffer pool (e.g. "4GB"); unset = a share of the machine (config.duckdb_memory_limit).
MEMORY_LIMIT_ENV = "ECOM_DUCKDB_MEMORY_LIMIT"
# ECOM_WAREHOUSE_BACKEND: one DuckDB file (default) or a DuckLake (several writers)
BACKENDS = ("duckdb", "ducklake")
# How long a writer waits for another process's lock before failing (a full ingest step holds it ~minutes).
DEFAULT_LOCK_TIMEOUT_S = 300.0

log = logging.getLogger(__name__)
# A waiting open says who holds the lock after this long, then again every LOCK_REPORT_EVERY_S.
LOCK_REPORT_AFTER_S = 5.0
LOCK_REPORT_EVERY_S = 30.0
_HOLDER_RE = re.compile(r"held in (?P<exe>.*?) \(PID (?P<pid>\d+)\)")
_waits: list[float] = []  # seconds this process waited for the lock, one entry per open that had to wait
_waits_guard = threading.Lock()


def lock_wait_stats() -> dict:
    """How often and how long this process waited for another process's warehouse lock (for reports)."""
    with _waits_guard:
        waits = list(_waits)
    return {"waits": len(waits), "total_s": round(sum(waits), 3), "max_s": round(max(waits, default=0.0), 3)}


def duckdb_config(threads: int | None = None, memory_limit: str | None = None) -> dict:
    """Connection settings; every open in a process must use the same ones (DuckDB refuses a second open of
    a file with a different configuration), so all of them are built here."""
    config: dict = {"threads": threads} if threads else {}
    config["memory_limit"] = memory_limit or duckdb_memory_limit()
    return config


def lock_holder(message: str) -> str:
    """Who holds the warehouse lock, from DuckDB's error: PID, program, and how long that process has been
    running (from /proc, when it is visible from here: same host or PID namespace)."""
    m = _HOLDER_RE.search(message)
    if not m:
        return "an unknown process"
    pid = int(m.group("pid"))
    parts = [f"PID {pid} ({m.group('exe')})"]
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        cmdline = cmdline.decode(errors="replace").strip()
        if cmdline:
            parts.append(f"command: {cmdline[:200]}")
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        parts.append(f"running for {uptime - ticks / os.sysconf('SC_CLK_TCK'):.0f} s")
    except (OSError, ValueError, IndexError):
        pass  # another host or container: the PID and program are what DuckDB tells
    return ", ".join(parts)


def _waiting_logger():
    """Dagster's logger inside a step (shown in the run's logs in the UI), this module's outside one."""
    try:
        return dg.get_dagster_logger("ecom_pipeline.warehouse")
    except Exception:  # noqa: BLE001 - logging must never break an open
        return log


def connect_with_retry(
    path: str | Path,
    *,
    read_only: bool = False,
    timeout_s: float = 120.0,
    threads: int | None = None,
    memory_limit: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> duckdb.DuckDBPyConnection:
    """Open the warehouse, waiting (with jittered back-off) while another process holds the write lock.

    While it waits it says who holds the lock and for how long, through ``warn`` (default: this module's
    logger at WARNING), after ``LOCK_REPORT_AFTER_S`` and every ``LOCK_REPORT_EVERY_S``: an open read-only
    session (a notebook, a BI tool) that stalls a run is named, not silent.  Readers should open the published
    snapshot instead (:mod:`ecom_pipeline.snapshot`)."""
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.exists():
        raise FileNotFoundError(
            f"warehouse {path} does not exist yet: materialise the raw and staging assets first"
        )
    config = duckdb_config(threads, memory_limit)
    start = time.monotonic()
    deadline = start + timeout_s
    delay = 0.1
    waited = reported = False
    # short waits are normal (another step finishing a write); a wait that lasts is
    # reported, always before giving up
    next_report = start + min(LOCK_REPORT_AFTER_S, timeout_s / 2)
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only, config=config)
        except duckdb.ConnectionException as exc:
            # This process already holds the file read-write (an in-process run): a read-only open is
            # refused, but a read-write one shares the same database instance, so use that.
            if read_only and "different configuration" in str(exc):
                return duckdb.connect(str(path), read_only=False, config=config)
            raise
        except duckdb.IOException as exc:
            if not any(m in str(exc) for m in _LOCK_MARKERS):
                raise
            if time.monotonic() > deadline:
                if not reported:  # a slow first open can pass the deadline before the first report
                    (warn or _waiting_logger().warning)(
                        f"waited {time.monotonic() - start:.0f} s for the warehouse lock on {path}: held by "
                        f"{lock_holder(str(exc))}; giving up (readers: open the published snapshot, not the "
                        "warehouse)"
                    )
                raise duckdb.IOException(
                    f"{exc} (gave up after waiting {timeout_s:.0f} s for {lock_holder(str(exc))} to release "
                    f"the warehouse lock on {path})"
                ) from exc
            waited = True
            now = time.monotonic()
            if now >= next_report:  # a reader left open (notebook, BI tool) or a long writer: say who
                reported = True
                (warn or _waiting_logger().warning)(
                    f"waiting {now - start:.0f} s for the warehouse lock on {path}: held by "
                    f"{lock_holder(str(exc))}; giving up after {timeout_s:.0f} s "
                    "(readers: open the published snapshot, not the warehouse)"
                )
                next_report = now + LOCK_REPORT_EVERY_S
            time.sleep(delay + random.uniform(0, delay))
            delay = min(delay * 2, 2.0)
            continue
        if waited:
            seconds = time.monotonic() - start
            with _waits_guard:
                _waits.append(seconds)
            log.info("waited %.1f s for the warehouse lock on %s", seconds, path)
        return con


def open_warehouse(
    path: str | Path,
    *,
    backend: str = "duckdb",
    lake_catalog: str = "",
    lake_data_path: str = "",
    read_only: bool = False,
    timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    threads: int | None = None,
    memory_limit: str | None = None,
    warn: Callable[[str], None] | None = None,
):
    """A connection to the warehouse of ``backend``: the DuckDB file at ``path`` (waiting for its lock), or
    the DuckLake (``lake_catalog`` + ``lake_data_path``) used as the default catalog."""
    if backend == "ducklake":
        return connect_lake(
            lake_catalog, lake_data_path, read_only=read_only, config=duckdb_config(threads, memory_limit)
        )
    if backend != "duckdb":
        raise ValueError(f"ECOM_WAREHOUSE_BACKEND={backend!r} is not one of {BACKENDS}")
    return connect_with_retry(
        path, read_only=read_only, timeout_s=timeout_s, threads=threads, memory_limit=memory_limit, warn=warn
    )


class WarehouseResource(dg.ConfigurableResource):
    """Connections to the warehouse: the DuckDB file (default ``data/warehouse.duckdb``) or the DuckLake."""

    path: str
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S
    threads: int = 0  # 0 = DuckDB's default (all cores)
    memory_limit: str = (
        ""  # e.g. "4GB"; "" = config.duckdb_memory_limit() ($ECOM_DUCKDB_MEMORY_LIMIT or a share)
    )
    backend: str = "duckdb"  # duckdb | ducklake (ECOM_WAREHOUSE_BACKEND)
    lake_catalog: str = ""  # ducklake: the catalog's PostgreSQL connection string (ECOM_DUCKLAKE_CATALOG)
    lake_data_path: str = ""  # ducklake: the shared folder of its Parquet files (ECOM_DUCKLAKE_DATA_PATH)

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        con = open_warehouse(
            self.path,
            backend=self.backend,
            lake_catalog=self.lake_catalog,
            lake_data_path=self.lake_data_path,
            read_only=read_only,
            timeout_s=self.lock_timeout_s,
            threads=self.threads or None,
            memory_limit=self.memory_limit or None,
            warn=dg.get_dagster_logger().warning,  # shown in the run's log
        )
        try:
            if not read_only:
                for schema in LAYER_SCHEMAS:
                    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            yield con
        finally:
            con.close()
