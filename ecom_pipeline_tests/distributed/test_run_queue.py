"""Runs submitted the way the UI, schedules and sensors submit them: into the Postgres instance's run queue,
dequeued by ``dagster-daemon`` (QueuedRunCoordinator, ``concurrency.runs`` of docker/dagster.yaml), launched
in a run-worker process whose Celery executor sends the steps to the workers.  Two runs that both reload raw +
staging (tag ``ecom/reload``) are submitted at once: the queue lets them in one after the other."""

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from ecom_pipeline.distributed.local import LocalCluster
from ecom_pipeline.distributed.services import POSTGRES_BINARIES, REDIS_BINARIES, missing_binaries
from ecom_pipeline.distributed.smoke import JOB_NAME, steps_per_worker
from ecom_pipeline_tests.distributed import CLEARED_VARS

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

STEPS = "raw__customers,raw__orders,staging__customers,staging__orders"
TERMINAL = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


@pytest.mark.skipif(
    bool(missing_binaries(*POSTGRES_BINARIES, *REDIS_BINARIES)),
    reason="needs PostgreSQL 15 server binaries and redis-server (.ci/run installs it)",
)
def test_two_reload_runs_through_the_queue_and_daemon_run_one_at_a_time(tmp_path, monkeypatch):
    for var in CLEARED_VARS:
        monkeypatch.delenv(var, raising=False)
    extra = {"ECOM_DATA_SOURCE": "synthetic", "ECOM_SYNTHETIC_ORDERS": "300"}
    with LocalCluster(tmp_path / "cluster", extra_env=extra, queues=("default",)) as local:
        for key, value in local.env.items():
            monkeypatch.setenv(key, value)
        daemon = local.start_daemon()
        workspace = local.root / "workspace.yaml"
        run_ids = []
        for _ in range(2):
            proc = subprocess.run(
                [
                    str(Path(sys.executable).parent / "dagster"),
                    "job",
                    "launch",
                    "-w",
                    str(workspace),
                    "-j",
                    JOB_NAME,
                    "-o",
                    STEPS,
                ],
                env=dict(os.environ),
                cwd=local.root,
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        with dg.DagsterInstance.get() as instance:
            runs = instance.get_runs(filters=dg.RunsFilter(job_name=JOB_NAME))
            assert len(runs) == 2
            run_ids = [r.run_id for r in runs]
            deadline = time.monotonic() + 300
            while not all(instance.get_run_by_id(i).status in TERMINAL for i in run_ids):
                assert daemon.process.poll() is None, daemon.log.read_text()[-3000:]
                assert time.monotonic() < deadline, daemon.log.read_text()[-3000:]
                time.sleep(2)
            records = [instance.get_run_record_by_id(i) for i in run_ids]
            for record in records:
                assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS, record.dagster_run.run_id
                assert record.dagster_run.tags.get("ecom/reload") == "warehouse"
                types = {
                    r.event_log_entry.dagster_event.event_type
                    for r in instance.get_records_for_run(record.dagster_run.run_id, limit=10_000).records
                    if r.event_log_entry.dagster_event
                }
                queued = {
                    dg.DagsterEventType.RUN_ENQUEUED,
                    dg.DagsterEventType.RUN_STARTING,
                    dg.DagsterEventType.RUN_SUCCESS,
                }
                assert queued <= types, types  # submitted to the queue, launched by the daemon
                placed = steps_per_worker(instance, record.dagster_run.run_id)
                assert sorted(placed) == sorted(STEPS.split(",")) and all(
                    w.startswith("default@") for w in placed.values()
                ), placed
            first, second = sorted(records, key=lambda r: r.start_time)
            assert second.start_time >= first.end_time, "two ecom/reload runs overlapped"
