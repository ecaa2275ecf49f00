"""A writer waiting for the DuckDB lock says who holds it, at WARNING, in the run's logs (the UI)."""

import logging
import os
import subprocess
import sys

import dagster as dg

from ecom_pipeline.resources import WarehouseResource
from ecom_pipeline.resources.warehouse import lock_holder

# holds the file read-write until the writer has been waiting for a few seconds (marker files), at most 60 s
HOLD = """
import sys, time, duckdb
from pathlib import Path
con = duckdb.connect(sys.argv[1])
print("locked", flush=True)
started, deadline = Path(sys.argv[2]), time.time() + 60
while not started.exists() and time.time() < deadline:
    time.sleep(0.1)
time.sleep(float(sys.argv[3]))
con.close()
"""


def test_lock_holder_reads_pid_program_and_age():
    me = os.getpid()
    text = (
        f'IO Error: Could not set lock on file "/x/w.duckdb": Conflicting lock is held in '
        f"{sys.executable} (PID {me}) by user someone. See also https://duckdb.org/docs/connect/concurrency"
    )
    who = lock_holder(text)
    assert who.startswith(f"PID {me} ({sys.executable})") and "running for" in who
    assert lock_holder("something else") == "an unknown process"


def test_a_waiting_writer_logs_the_lock_holder_at_warning_in_the_run(tmp_path, monkeypatch):
    from ecom_pipeline.resources import warehouse as warehouse_mod

    monkeypatch.setattr(warehouse_mod, "LOCK_REPORT_AFTER_S", 1.0)  # report after 1 s of waiting, not 5 s
    path = tmp_path / "w.duckdb"
    started = tmp_path / "writer_started"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), str(started), "4"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"

        @dg.asset
        def writer(warehouse: WarehouseResource) -> None:
            started.touch()  # the holder keeps the lock 4 s more from here
            with warehouse.connect() as con:
                con.execute("CREATE TABLE meta.t AS SELECT 1 AS x")

        with dg.DagsterInstance.ephemeral() as instance:
            warehouse = WarehouseResource(path=str(path), lock_timeout_s=60)
            result = dg.materialize([writer], instance=instance, resources={"warehouse": warehouse})
            assert result.success  # it waited for the lock, then wrote
            warnings = [
                e.user_message
                for e in instance.all_logs(result.run_id)
                if e.level == logging.WARNING and "warehouse lock" in e.user_message
            ]
        assert warnings and f"PID {holder.pid}" in warnings[0] and "running for" in warnings[0]
    finally:
        holder.kill()
        holder.wait()
