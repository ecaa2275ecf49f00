"""Fault points for the kill tests, installed by the tests themselves: production code has no fault hook.

``ECOM_FAULT_PAUSE=<point>=<marker file>`` (read here, in test code) names one point:

- ``raw_load.<table>``: after a chunk of ``raw.<table>`` is inserted into its loading table (the raw asset's
  ``load_raw_table`` is wrapped so its progress callback, called after every chunk, pauses);
- ``io_write.<schema>.<table>``: after the IO manager wrote the table, before its COMMIT (the IO manager's
  ``write_table`` is wrapped).

The first process to reach the point creates the marker file with its pid and sleeps, so a test can SIGKILL
exactly the process in the middle of a write; later arrivals (the re-execution) see the marker and go on.
Never killed within ``PAUSE_MAX_S`` it goes on too (the test then fails, not hangs).  :func:`install` must
run in the process that writes: the kill tests' step processes call it when they build their job, the
subprocess scripts call it first.

``ECOM_FAULT_BARRIER=<point>=<folder>`` makes the point a meeting place instead: once the folder exists (the
test creates it to arm the barrier), each process reaching the point leaves its pid there and waits until
``BARRIER_PARTIES`` processes have arrived (at most ``PAUSE_MAX_S``), so two runs' steps are certainly in
progress at the same time however loaded the machine is.
"""

from __future__ import annotations

import os
import time

FAULT_PAUSE_ENV = "ECOM_FAULT_PAUSE"
FAULT_BARRIER_ENV = "ECOM_FAULT_BARRIER"
PAUSE_MAX_S = 120.0
BARRIER_PARTIES = 2


def pause_point(point: str) -> None:
    """Pause here, once, when ``ECOM_FAULT_PAUSE`` names this point; a no-op otherwise."""
    name, _, marker = os.environ.get(FAULT_PAUSE_ENV, "").partition("=")
    if not marker or name != point:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(PAUSE_MAX_S)


def barrier_point(point: str) -> None:
    """Wait here for the other party when ``ECOM_FAULT_BARRIER`` names this point and its folder exists."""
    name, _, folder = os.environ.get(FAULT_BARRIER_ENV, "").partition("=")
    if not folder or name != point or not os.path.isdir(folder):
        return
    arrival = os.path.join(folder, str(os.getpid()))
    if os.path.exists(arrival):  # this process already met the other party (a later chunk of the same load)
        return
    open(arrival, "w").close()
    deadline = time.monotonic() + PAUSE_MAX_S
    while len(os.listdir(folder)) < BARRIER_PARTIES and time.monotonic() < deadline:
        time.sleep(0.1)


def pausing_progress(table: str, progress=None):
    """A ``load_raw_table`` progress callback that pauses at ``raw_load.<table>`` after each chunk."""

    def progress_then_pause(chunks: int, rows: int) -> None:
        if progress is not None:
            progress(chunks, rows)
        pause_point(f"raw_load.{table}")
        barrier_point(f"raw_load.{table}")

    return progress_then_pause


def install() -> None:
    """Wrap the raw asset's loader and the IO manager's table write with the fault points (idempotent)."""
    import ecom_pipeline.assets.ingest as ingest
    import ecom_pipeline.resources.io_manager as io_manager

    if getattr(ingest.load_raw_table, "fault_points", False):
        return
    load, write = ingest.load_raw_table, io_manager.write_table

    def load_raw_table(con, source, table, *args, progress=None, **kwargs):
        return load(con, source, table, *args, progress=pausing_progress(table, progress), **kwargs)

    def write_table(con, qualified, *args, **kwargs):
        out = write(con, qualified, *args, **kwargs)
        pause_point(f"io_write.{qualified}")
        return out

    load_raw_table.fault_points = write_table.fault_points = True
    ingest.load_raw_table, io_manager.write_table = load_raw_table, write_table
