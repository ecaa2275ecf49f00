"""Celery workers of the local distributed setup: one ``dagster-celery`` worker per queue, each one task at a
time, named after its queue (``default@host``, ``gpu@host``) so the event log says where a step ran."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ecom_pipeline.distributed.instance import CELERY_WORKER_YAML

READY_MARKER = " ready."  # celery's log line once the worker consumes
WORKER_START_TIMEOUT_S = 120.0


def worker_command(
    queue: str, config_yaml: Path = CELERY_WORKER_YAML, concurrency: int = 1, name: str | None = None
) -> list[str]:
    """``name`` (default: the queue's) names the worker, ``<name>@host``; a second worker of a queue needs its
    own."""
    dagster_celery = Path(sys.executable).parent / "dagster-celery"
    return [
        str(dagster_celery) if dagster_celery.exists() else "dagster-celery",
        "worker",
        "start",
        "-A",
        "dagster_celery.app",
        "-q",
        queue,
        "-n",
        name or queue,
        "-y",
        str(config_yaml),
        "-l",
        "INFO",
        "--",
        f"--concurrency={concurrency}",
        "--without-gossip",
        "--without-mingle",
    ]


@dataclass
class Worker:
    queue: str
    process: subprocess.Popen
    log: Path

    def wait_ready(self, timeout_s: float = WORKER_START_TIMEOUT_S) -> Worker:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if READY_MARKER in self.log.read_text(errors="replace"):
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.5)
        raise RuntimeError(
            f"celery worker for queue {self.queue!r} did not start "
            f"(exit {self.process.poll()}):\n{self.log.read_text(errors='replace')[-3000:]}"
        )

    def stop(self, timeout_s: float = 30.0) -> None:
        """Warm shutdown of the whole worker: the dagster-celery CLI, celery's main process and its pool all
        share the process group; wait until every one of them is gone (the CLI exits first), else SIGKILL."""
        group = self.process.pid
        if not _group_alive(group):
            self.process.poll()
            return
        os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _group_alive(group) and time.monotonic() < deadline:
            self.process.poll()  # reap the CLI so it does not count as alive
            time.sleep(0.2)
        if _group_alive(group):
            os.killpg(group, signal.SIGKILL)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_worker(
    queue: str, env: dict[str, str], log_dir: Path, cwd: Path | None = None, name: str | None = None
) -> Worker:
    """Start a worker consuming ``queue`` in its own process group (so it can be stopped as a whole)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"worker-{name or queue}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            worker_command(queue, name=name),
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Worker(queue, process, log)
