"""The warehouse as a DuckLake (``ECOM_WAREHOUSE_BACKEND=ducklake``): a PostgreSQL catalog on the throwaway
server plus a folder of Parquet files, written by several processes at once.

First the layer itself (a lake connection names the same tables, the extensions come from their packages,
conflicting writers both finish, raw load + staging give the same tables as the single file); then the
distributed setup on the lake: two ingest runs at once through two Celery workers of the ``default`` queue
(no lock errors, the row invariant, the same tables as one clean run), and a worker process killed in the
middle of a raw load (the same tables again)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

import dagster as dg
import duckdb
import pandas as pd
import psycopg2
import pytest

from ecom_pipeline.canonical import TABLE_ORDER
from ecom_pipeline.cleaning.staging import stage_table
from ecom_pipeline.distributed.local import LocalCluster
from ecom_pipeline.distributed.services import POSTGRES_BINARIES, REDIS_BINARIES, missing_binaries
from ecom_pipeline.distributed.smoke import steps_per_worker
from ecom_pipeline.loading import load_raw_table
from ecom_pipeline.resources.source import SourceResource
from ecom_pipeline.routing import WAREHOUSE_POOL
from ecom_pipeline.warehouse.lake import LakeConfigError, connect_lake, run_transaction
from ecom_pipeline.warehouse.tables import (
    PER_RUN_COLUMNS,
    load_counts,
    read_table,
    warehouse_fingerprints,
    write_table,
)
from ecom_pipeline_tests.distributed import CLEARED_VARS as CLUSTER_CLEARED_VARS
from ecom_pipeline_tests.distributed.ingest_run import TABLES

ORDERS = 300
KILL_POINT = "raw_load.orders"
MEETING_POINT = "raw_load.customers"  # the two concurrent runs' first loads wait there for each other
CLEARED_VARS = (
    *CLUSTER_CLEARED_VARS,
    "ECOM_WAREHOUSE_BACKEND",
    "ECOM_DUCKLAKE_CATALOG",
    "ECOM_DUCKLAKE_DATA_PATH",
)
needs_servers = pytest.mark.skipif(
    bool(missing_binaries(*POSTGRES_BINARIES)),
    reason="needs PostgreSQL 15 server binaries (Debian: postgresql-15)",
)


@pytest.fixture
def lake(postgres_server, tmp_path):
    """A fresh catalog database on the session's Postgres and a data folder: (catalog, data path)."""
    db = f"lake_{uuid.uuid4().hex[:10]}"
    con = psycopg2.connect(postgres_server.url("postgres"))
    con.autocommit = True
    with con.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{db}"')
    con.close()
    return postgres_server.url(db), tmp_path / "lake"


@needs_servers
def test_a_lake_connection_names_the_same_tables_and_loads_the_packaged_extensions(lake):
    catalog, data = lake
    frame = pd.DataFrame({"i": range(1000), "s": [f"v{i % 7}" for i in range(1000)]})
    with connect_lake(catalog, data) as con:
        assert con.execute("SELECT current_database()").fetchone()[0] == "wh"
        assert con.execute("SELECT current_setting('autoinstall_known_extensions')").fetchone()[0] is False
        loaded = {
            r[0]
            for r in con.execute("SELECT extension_name FROM duckdb_extensions() WHERE loaded").fetchall()
        }
        assert {"ducklake", "postgres_scanner"} <= loaded
        write_table(con, "features.lake_probe", frame)
    with connect_lake(catalog, data, read_only=True) as other:  # another connection, as another process
        back = read_table(other, "features.lake_probe").sort_values("i").reset_index(drop=True)
        pd.testing.assert_frame_equal(back, frame, check_dtype=False)
        with pytest.raises(duckdb.Error):
            other.execute("CREATE TABLE features.nope AS SELECT 1 AS x")  # read-only attach
    assert any(data.rglob("*.parquet")), "the rows are in Parquet files under the data path"


def test_a_lake_without_a_catalog_is_a_clear_error(tmp_path):
    with pytest.raises(LakeConfigError, match="ECOM_DUCKLAKE_CATALOG"):
        connect_lake("", tmp_path / "lake")


def test_the_setting_selects_the_lake_for_both_warehouse_resources(monkeypatch, tmp_path):
    from ecom_pipeline.config import Settings
    from ecom_pipeline.resources import build_resources

    monkeypatch.setenv("ECOM_DATA_ROOT", str(tmp_path))
    for var in ("ECOM_WAREHOUSE_BACKEND", "ECOM_DUCKLAKE_CATALOG", "ECOM_DUCKLAKE_DATA_PATH"):
        monkeypatch.delenv(var, raising=False)
    default = build_resources(Settings.from_env())
    assert default["warehouse"].backend == "duckdb" and default["io_manager"].backend == "duckdb"
    monkeypatch.setenv("ECOM_WAREHOUSE_BACKEND", "ducklake")
    with pytest.raises(ValueError, match="ECOM_DUCKLAKE_CATALOG"):
        build_resources(Settings.from_env())
    monkeypatch.setenv("ECOM_DUCKLAKE_CATALOG", "host=pg dbname=ducklake password=secret")
    lake = build_resources(Settings.from_env())
    for name in ("warehouse", "io_manager"):
        assert lake[name].backend == "ducklake" and lake[name].lake_data_path == str(tmp_path / "lake")
        assert isinstance(lake[name].lake_catalog, dg.EnvVar)  # a DSN with a password is not stored in config
    monkeypatch.setenv("ECOM_WAREHOUSE_BACKEND", "postgres")
    with pytest.raises(ValueError, match="duckdb, ducklake"):
        build_resources(Settings.from_env())


@needs_servers
def test_two_writers_replacing_the_same_table_at_once_both_finish(lake):
    """Both transactions drop and re-create the table from the same snapshot; DuckLake refuses the second
    COMMIT (conflict) and run_transaction re-runs that body on the new snapshot."""
    catalog, data = lake
    with connect_lake(catalog, data) as setup:
        setup.execute("CREATE SCHEMA IF NOT EXISTS raw")
        setup.execute("CREATE TABLE raw.shared AS SELECT range AS i, 'initial' AS writer FROM range(500)")
    both_inside = threading.Barrier(2)
    retries: list[str] = []
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        def body(con):
            con.execute("DROP TABLE IF EXISTS raw.shared")
            con.execute(f"CREATE TABLE raw.shared AS SELECT range AS i, '{name}' AS writer FROM range(500)")
            if not retries:  # the first attempts meet inside their transactions
                both_inside.wait(timeout=30)

        try:
            with connect_lake(catalog, data) as con:
                run_transaction(con, body, on_retry=retries.append)
        except BaseException as exc:  # noqa: BLE001 (asserted below)
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert retries and "conflict" in retries[0].lower(), retries
    with connect_lake(catalog, data, read_only=True) as con:
        rows, writers = con.execute("SELECT count(*), list(DISTINCT writer) FROM raw.shared").fetchone()
    assert rows == 500 and len(writers) == 1 and writers[0] in ("a", "b")  # one complete version, not a mix


@needs_servers
def test_raw_load_and_staging_on_the_lake_equal_the_single_file(lake, tmp_path):
    catalog, data = lake
    resource = SourceResource(kind="synthetic", data_root=str(tmp_path / "root"), synthetic_orders=150)
    source = resource.build()
    tables = [t for t in TABLE_ORDER if t in ("customers", "orders", "order_items", "products", "sellers")]
    key = b"k" * 32
    single = duckdb.connect(str(tmp_path / "w.duckdb"))
    with connect_lake(catalog, data) as lake_con:
        prints = []
        for con in (single, lake_con):
            for t in tables:
                load_raw_table(con, source, t, load_id="L1", chunk_rows=100)
                stage_table(con, t, hints=source.parse_hints(t), pseudonym_key=key)
            for t, c in load_counts(con, tables).items():
                assert c["raw"] > 0 and c["raw"] == c["staged"] + c["quarantined"], (t, c)
            prints.append(warehouse_fingerprints(con, ("raw", "staging"), exclude_columns=PER_RUN_COLUMNS))
        leftovers = lake_con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = 'wh' "
            "AND (table_name LIKE '%loading' OR table_name LIKE '%building')"
        ).fetchall()
    single.close()
    assert prints[0] == prints[1] and len(prints[0]) == 2 * len(tables) + 1  # + staging.quarantine
    assert leftovers == []


# ----------------------------------------------------------------------------- the distributed setup


def _lake_fingerprints(env: dict) -> dict:
    with connect_lake(env["ECOM_DUCKLAKE_CATALOG"], env["ECOM_DUCKLAKE_DATA_PATH"], read_only=True) as con:
        return warehouse_fingerprints(con, ("raw", "staging"), exclude_columns=PER_RUN_COLUMNS)


def _lake_invariant(env: dict) -> dict:
    with connect_lake(env["ECOM_DUCKLAKE_CATALOG"], env["ECOM_DUCKLAKE_DATA_PATH"], read_only=True) as con:
        counts = load_counts(con, TABLES)
    for table, c in counts.items():
        assert c["raw"] > 0 and c["raw"] == c["staged"] + c["quarantined"], (table, c)
    return counts


@pytest.fixture(scope="module")
def lake_cluster(tmp_path_factory):
    """The local distributed setup on a DuckLake with two workers of the ``default`` queue; the warehouse
    pool gets two slots (the one-writer limit is the single file's)."""
    missing = missing_binaries(*POSTGRES_BINARIES, *REDIS_BINARIES)
    if missing:
        pytest.skip(
            f"not on PATH: {missing} (PostgreSQL 15 server binaries; redis-server: .ci/run installs it)"
        )
    root = tmp_path_factory.mktemp("ducklake")
    marker = root / "kill.marker"
    marker.write_text("disarmed")  # the pause point fires only once the marker is deleted
    meeting = root / "meeting"  # the barrier is armed only while this folder exists
    saved = dict(os.environ)
    for var in CLEARED_VARS:
        os.environ.pop(var, None)
    extra = {
        "ECOM_DATA_SOURCE": "synthetic",
        "ECOM_SYNTHETIC_ORDERS": str(ORDERS),
        "ECOM_FAULT_PAUSE": f"{KILL_POINT}={marker}",
        "ECOM_FAULT_BARRIER": f"{MEETING_POINT}={meeting}",
    }
    try:
        with LocalCluster(
            root, extra_env=extra, queues=("default", "default"), warehouse="ducklake"
        ) as local:
            os.environ.update(local.env)
            with dg.DagsterInstance.get() as instance:
                instance.event_log_storage.set_concurrency_slots(WAREHOUSE_POOL, 2)
            local.marker, local.meeting = marker, meeting
            yield local
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _start_ingest(cluster) -> subprocess.Popen:
    """An ingest run in its own process (ingest_run.py) on the cluster's instance and lake."""
    return subprocess.Popen(
        [sys.executable, "-m", "ecom_pipeline_tests.distributed.ingest_run"],
        env={**os.environ, **cluster.env},
        cwd=cluster.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen, timeout_s: float = 300) -> dict:
    out, _ = process.communicate(timeout=timeout_s)
    assert process.returncode == 0, out[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def clean_run(lake_cluster):
    """One ingest run alone on the lake: the tables every later run must reproduce."""
    started = time.perf_counter()
    outcome = _finish(_start_ingest(lake_cluster))
    wall = time.perf_counter() - started
    assert outcome["success"], outcome
    return {"wall_s": wall, "fingerprints": _lake_fingerprints(lake_cluster.env)}


def _step_windows(instance: dg.DagsterInstance, run_id: str) -> list[tuple[float, float]]:
    return [(s.start_time, s.end_time) for s in instance.get_run_step_stats(run_id)]


def _event_types(instance: dg.DagsterInstance, run_id: str) -> set:
    return {
        r.event_log_entry.dagster_event.event_type
        for r in instance.get_records_for_run(run_id, limit=10_000).records
        if r.event_log_entry.dagster_event
    }


@pytest.mark.distributed
@pytest.mark.slow
def test_two_concurrent_runs_from_two_workers_write_the_lake(lake_cluster, clean_run):
    # Without a meeting point a loaded machine can finish one 300-order run before the other's first step
    # starts (seen in CI): both raw customer loads wait for each other, so the runs certainly overlap.
    lake_cluster.meeting.mkdir()
    started = time.perf_counter()
    try:
        processes = [_start_ingest(lake_cluster) for _ in range(2)]
        outcomes = [_finish(p) for p in processes]
    finally:
        arrivals = os.listdir(lake_cluster.meeting)
        shutil.rmtree(lake_cluster.meeting)
    wall = time.perf_counter() - started
    assert len(arrivals) == 2, f"processes that reached the meeting point: {arrivals}"
    assert all(o["success"] for o in outcomes), outcomes
    with dg.DagsterInstance.get() as instance:
        run_ids = [o["run_id"] for o in outcomes]
        for run_id in run_ids:
            types = _event_types(instance, run_id)
            assert dg.DagsterEventType.RUN_SUCCESS in types, run_id
            # no step failed, not even one that a retry then hid (a lock error would be a failure)
            assert not types & {dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_UP_FOR_RETRY}, (
                types
            )
        workers = {w.split("@")[0] for run_id in run_ids for w in steps_per_worker(instance, run_id).values()}
        assert workers == {"default", "default-2"}, workers
        first, second = (_step_windows(instance, i) for i in run_ids)
        overlapping = sum(a0 < b1 and b0 < a1 for a0, a1 in first for b0, b1 in second)
        assert overlapping, "the two runs' steps never ran at the same time"
        assert instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).active_slot_count == 0

    _lake_invariant(lake_cluster.env)
    assert _lake_fingerprints(lake_cluster.env) == clean_run["fingerprints"]
    logs = "".join(w.log.read_text(errors="replace") for w in lake_cluster.workers.values())
    print(
        f"\nducklake: two concurrent ingest runs {wall:.1f} s vs one alone {clean_run['wall_s']:.1f} s; "
        f"{overlapping} overlapping step pairs; conflicts retried: {logs.count('DuckLake conflict')}"
    )


@pytest.mark.distributed
@pytest.mark.slow
def test_a_worker_killed_mid_load_leaves_the_lake_equal_to_a_clean_run(lake_cluster, clean_run):
    """SIGKILL the worker process loading raw.orders (its rows are in the connection's own loading table,
    nothing committed to the lake): the task is redelivered to a ``default`` worker, the run succeeds and
    raw + staging equal the clean run's."""
    lake_cluster.marker.unlink()  # arm the pause point
    process = _start_ingest(lake_cluster)
    deadline = time.monotonic() + 180
    while not (lake_cluster.marker.exists() and lake_cluster.marker.read_text().strip()):
        assert time.monotonic() < deadline and process.poll() is None, "the raw load never reached the pause"
        time.sleep(0.2)
    os.kill(int(lake_cluster.marker.read_text()), signal.SIGKILL)
    outcome = _finish(process, timeout_s=240)
    assert outcome["success"], outcome
    with dg.DagsterInstance.get() as instance:
        deliveries = [
            r.event_log_entry.dagster_event.engine_event_data.metadata["Celery worker"].value
            for r in instance.get_records_for_run(outcome["run_id"]).records
            if r.event_log_entry.dagster_event
            and r.event_log_entry.dagster_event.step_key == "raw__orders"
            and "in celery worker" in (r.event_log_entry.dagster_event.message or "")
        ]
    assert len(deliveries) == 2 and all(w.startswith("default") for w in deliveries), deliveries
    assert any("WorkerLostError" in w.log.read_text(errors="replace") for w in lake_cluster.workers.values())
    assert all(w.process.poll() is None for w in lake_cluster.workers.values())  # the workers live on

    _lake_invariant(lake_cluster.env)
    assert _lake_fingerprints(lake_cluster.env) == clean_run["fingerprints"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-x", "-q", "-s"]))
