"""The ``distributed_smoke`` job (16 steps: ingest of six tables, features, SARIMA, the gpu-pool LSTM) on the
local distributed setup (PostgreSQL, Redis, Celery workers ``default`` and ``gpu``) beside the same job in
one process, on the same synthetic shop in a fresh folder under /tmp.

    python benchmarks/distributed.py [--orders 400]

Writes ``benchmarks/results/distributed.json`` and ``distributed.md`` (commit, load average, wall seconds,
steps per queue from the event log)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def _commit() -> str:
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return head + ("+dirty" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=400)
    args = parser.parse_args()
    from ecom_pipeline.distributed.local import LocalCluster
    from ecom_pipeline.distributed.smoke import RUN_CONFIG, in_process_smoke_job, smoke_job, steps_per_worker

    root = Path(tempfile.mkdtemp(prefix="ecom-bench-distributed-"))
    os.environ.update(
        {
            "ECOM_DATA_SOURCE": "synthetic",
            "ECOM_SYNTHETIC_ORDERS": str(args.orders),
            "ECOM_MODEL_SIGNING_KEY": os.environ.get("ECOM_MODEL_SIGNING_KEY")
            or "bench-only-model-signing-key-not-secret-0123456789",
        }
    )
    load_before = os.getloadavg()
    with LocalCluster(
        root,
        extra_env={
            "ECOM_WAREHOUSE": str(root / "data" / "warehouse.duckdb"),
            "ECOM_MODEL_SIGNING_KEY": os.environ["ECOM_MODEL_SIGNING_KEY"],
        },
    ) as cluster:
        os.environ.update(cluster.env)
        ref = {
            "ECOM_WAREHOUSE": str(root / "reference.duckdb"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'reference-mlflow.db'}",
        }
        saved = {k: os.environ[k] for k in ref}
        os.environ.update(ref)
        started = time.perf_counter()
        with dg.DagsterInstance.ephemeral() as instance:
            assert dg.execute_job(
                dg.reconstructable(in_process_smoke_job), instance=instance, run_config=RUN_CONFIG
            ).success
        in_process_s = time.perf_counter() - started
        os.environ.update(saved)
        with dg.DagsterInstance.get() as instance:
            started = time.perf_counter()
            result = dg.execute_job(dg.reconstructable(smoke_job), instance=instance, run_config=RUN_CONFIG)
            celery_s = time.perf_counter() - started
            placed = steps_per_worker(instance, result.run_id)
    shutil.rmtree(root, ignore_errors=True)
    per_queue: dict[str, int] = {}
    for worker in placed.values():
        per_queue[worker.split("@")[0]] = per_queue.get(worker.split("@")[0], 0) + 1
    record = {
        "commit": _commit(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "orders": args.orders,
        "success": result.success,
        "steps": len(placed),
        "steps_per_queue": per_queue,
        "celery_wall_s": round(celery_s, 1),
        "in_process_wall_s": round(in_process_s, 1),
        "ratio": round(celery_s / in_process_s, 2),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "distributed.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / "distributed.md").write_text(
        "# distributed_smoke: Celery workers vs one process\n\n"
        "| commit | orders | steps per queue | celery s | in-process s | ratio "
        "| load avg (1/5/15 min) before |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {record['commit']} | {args.orders} | {per_queue} | {record['celery_wall_s']} | "
        f"{record['in_process_wall_s']} | {record['ratio']} | {record['loadavg_before']} |\n\n"
        "Per step, a Celery task re-creates the execution plan and reconnects to the Postgres instance "
        "in the\n"
        "worker; on a shared 2-core box that overhead, not the steps, is what the ratio shows.\n"
    )
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
