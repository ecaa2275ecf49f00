"""The run-failure log: one JSON line per failed run in ``<data_root>/ops/run_failures.jsonl``.

A file rather than a warehouse table so that recording never waits for (or fails on) the DuckDB write lock
held by the very run that may have failed.  Framework-free: the ``record_run_failures`` sensor
(:mod:`ecom_pipeline.automation.failures`) writes it and the ``reports/run_failures`` asset reads it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ecom_pipeline.paths import DataPaths

FAILURE_LOG = Path("ops") / "run_failures.jsonl"


def failure_log_path(data_root: str | Path) -> Path:
    return DataPaths(Path(data_root)).failure_log


def read_failures(data_root: str | Path) -> list[dict]:
    path = failure_log_path(data_root)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn line from a crash: skip it, keep the rest
    return out


def record_failure(data_root: str | Path, record: dict) -> bool:
    """Append ``record`` unless its run id is already recorded; True when written."""
    if any(r.get("run_id") == record["run_id"] for r in read_failures(data_root)):
        return False
    path = failure_log_path(data_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return True
