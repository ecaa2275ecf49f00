"""The warehouse as a DuckLake: a PostgreSQL catalog plus a shared folder of Parquet files, written by
several processes on several machines at once (``ECOM_WAREHOUSE_BACKEND=ducklake``, docs/deployment.md).

A connection is an in-memory DuckDB with the lake attached as ``wh`` and made the default catalog (``USE``),
so ``raw.orders``, ``staging.quarantine`` ... name the same tables as in the single-file warehouse.  The
``ducklake`` and ``postgres_scanner`` extensions come from their PyPI packages (``duckdb-extension-*``, built
for exactly the pinned DuckDB) and are loaded from those files; ``autoinstall_known_extensions`` is off, so
nothing is ever downloaded.

Concurrency is optimistic: a transaction works on the snapshot it started from and its COMMIT fails with a
conflict when another writer changed the same thing first (dropped or replaced the same table, deleted from
the same data file, created the same name); DuckLake itself retries commits that do not conflict logically
(two inserts).  :class:`LakeConnection` re-runs a conflicting single statement, :func:`run_transaction`
re-runs a whole transaction body.  Framework-free: no Dagster here.
"""

from __future__ import annotations

import importlib
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self, TypeVar

import duckdb

LAKE_ALIAS = "wh"
# PyPI package (module) that ships each extension file, in load order (ducklake's catalog needs postgres)
EXTENSION_PACKAGES = (
    ("postgres_scanner", "duckdb_extension_postgres_scanner"),
    ("ducklake", "duckdb_extension_ducklake"),
)
# DuckLake's words for a commit that lost to another writer (it retried already when nothing conflicted)
CONFLICT_MARKERS = ("conflict", "Failed to commit DuckLake transaction", "could not serialize access")
CONFLICT_ATTEMPTS = 8
CONFLICT_FIRST_WAIT_S = 0.1

T = TypeVar("T")
log = logging.getLogger(__name__)


class LakeConfigError(ValueError):
    """The DuckLake settings are missing or wrong (catalog DSN, data path, extension packages)."""


def extension_file(name: str, package: str) -> Path:
    """The extension file that ``package`` ships for the running DuckDB version."""
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise LakeConfigError(
            f"the DuckLake warehouse needs the {name} extension package: pip install "
            f"'{package.replace('_', '-')}=={duckdb.__version__}'"
        ) from exc
    path = Path(module.__file__).parent / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.is_file():
        shipped = sorted(p.parent.name for p in (Path(module.__file__).parent / "extensions").glob("*/*"))
        raise LakeConfigError(
            f"{package} has no {name} extension for DuckDB {duckdb.__version__} (it ships "
            f"{shipped or 'none'}): install the {package.replace('_', '-')} release of that "
            "version (extensions load only into the DuckDB they were built for)"
        )
    return path


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def is_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is DuckLake's (or its Postgres catalog's) refusal of a commit that lost a race."""
    return isinstance(exc, duckdb.Error) and any(m.lower() in str(exc).lower() for m in CONFLICT_MARKERS)


def retry_on_conflict(
    work: Callable[[], T],
    *,
    attempts: int = CONFLICT_ATTEMPTS,
    first_wait_s: float = CONFLICT_FIRST_WAIT_S,
    on_retry: Callable[[str], None] | None = None,
) -> T:
    """``work()``, run again (jittered, growing waits) while it fails on a DuckLake conflict."""
    wait = first_wait_s
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except duckdb.Error as exc:
            if not is_conflict(exc) or attempt == attempts:
                raise
            (on_retry or log.warning)(f"DuckLake conflict (attempt {attempt} of {attempts}), retrying: {exc}")
        time.sleep(wait + random.uniform(0, wait))
        wait = min(wait * 2, 3.0)
    raise AssertionError("unreachable")


class LakeConnection:
    """A DuckDB connection to the lake that re-runs a statement that lost a commit race.

    Outside an explicit transaction every statement commits by itself, so a conflicting one failed as a
    whole and is simply run again (``CREATE ... IF NOT EXISTS`` by two first runs, appends to a log table).
    Between ``BEGIN`` and ``COMMIT`` nothing is retried here: the conflict comes out of COMMIT and the caller
    re-runs the transaction (:func:`run_transaction`).  Everything else is the DuckDB connection's."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self._con = con
        self._in_transaction = False
        self.conflict_retries = 0

    @property
    def duckdb_connection(self) -> duckdb.DuckDBPyConnection:
        return self._con

    def execute(self, query: str, parameters=None):
        word = query.lstrip().split(None, 1)[0].upper().rstrip(";") if query.strip() else ""
        if word in ("BEGIN", "START"):
            result = self._con.execute(query, parameters)
            self._in_transaction = True
            return result
        if word in ("COMMIT", "END", "ROLLBACK", "ABORT"):
            self._in_transaction = False  # a failed COMMIT ends the transaction too
            try:
                return self._con.execute(query, parameters)
            except duckdb.TransactionException as exc:
                if word in ("ROLLBACK", "ABORT") and "no transaction is active" in str(exc):
                    return self._con  # the failed COMMIT already ended it: keep the caller's real error
                raise
        if self._in_transaction:
            return self._con.execute(query, parameters)

        def once():
            return self._con.execute(query, parameters)

        def count(message: str) -> None:
            self.conflict_retries += 1
            log.warning(message)

        return retry_on_conflict(once, on_retry=count)

    def __getattr__(self, name: str):
        return getattr(self._con, name)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self._con.close()


def is_lake(con) -> bool:
    return isinstance(con, LakeConnection)


def connect_lake(
    catalog: str,
    data_path: str | Path,
    *,
    read_only: bool = False,
    config: dict | None = None,
    attempts: int = CONFLICT_ATTEMPTS,
) -> LakeConnection:
    """An in-memory DuckDB with the lake (catalog = a PostgreSQL connection string, libpq keywords or a
    ``postgresql://`` URI) attached as ``wh`` and used as the default catalog.  The first attach creates the
    catalog's tables; two processes doing that at once race, so the attach is retried on a conflict."""
    if not catalog:
        raise LakeConfigError(
            "ECOM_WAREHOUSE_BACKEND=ducklake needs ECOM_DUCKLAKE_CATALOG (a PostgreSQL "
            "connection string for the lake's catalog database)"
        )
    if not str(data_path):
        raise LakeConfigError(
            "ECOM_WAREHOUSE_BACKEND=ducklake needs ECOM_DUCKLAKE_DATA_PATH (a folder every "
            "writer reaches: the lake's Parquet files)"
        )
    data_path = str(data_path)
    if "://" not in data_path:  # a local or mounted folder (not object storage): create it
        Path(data_path).mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(":memory:", config={**(config or {}), "autoinstall_known_extensions": False})
    try:
        for name, package in EXTENSION_PACKAGES:
            con.execute(f"LOAD {_literal(str(extension_file(name, package)))}")
        options = f"DATA_PATH {_literal(data_path)}" + (", READ_ONLY" if read_only else "")

        def attach():
            con.execute(
                f"ATTACH IF NOT EXISTS {_literal('ducklake:postgres:' + catalog)} AS {LAKE_ALIAS} ({options})"
            )

        retry_on_conflict(_or_duplicate(attach, con), attempts=attempts)
        con.execute(f"USE {LAKE_ALIAS}")
    except BaseException:
        con.close()
        raise
    return LakeConnection(con)


def _or_duplicate(attach: Callable[[], None], con: duckdb.DuckDBPyConnection) -> Callable[[], None]:
    """Two first attaches both create the catalog tables; the loser sees a duplicate key or relation from
    Postgres: detach and try again (the tables exist by then), like a conflict."""

    def run() -> None:
        try:
            attach()
        except duckdb.Error as exc:
            text = str(exc).lower()
            if "duplicate key" in text or "already exists" in text:
                con.execute(f"DETACH DATABASE IF EXISTS {LAKE_ALIAS}")
                raise duckdb.TransactionException(f"conflict while creating the lake catalog: {exc}") from exc
            raise

    return run


def run_transaction(
    con,
    body: Callable[[object], T],
    *,
    attempts: int = CONFLICT_ATTEMPTS,
    on_retry: Callable[[str], None] | None = None,
) -> T:
    """``body(con)`` inside BEGIN ... COMMIT; on a DuckLake conflict the transaction is rolled back and
    ``body`` runs again on a fresh snapshot (so it must read what it depends on inside ``body``).  On the
    single-file warehouse there are no conflicts and this is one transaction."""

    def once() -> T:
        con.execute("BEGIN TRANSACTION")
        try:
            result = body(con)
            con.execute("COMMIT")
        except BaseException:
            try:
                con.execute("ROLLBACK")
            except duckdb.Error:
                pass  # already ended by the failed COMMIT: the body's or COMMIT's error is the one to raise
            raise
        return result

    return retry_on_conflict(once, attempts=attempts, on_retry=on_retry)
