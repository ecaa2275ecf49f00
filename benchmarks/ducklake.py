"""Two ingest runs on the DuckLake warehouse (``ECOM_WAREHOUSE_BACKEND=ducklake``) through two Celery workers
of the ``default`` queue: one after the other, then both at once, on the local distributed setup (PostgreSQL
for Dagster and the lake's catalog, Redis, the lake's Parquet files in a fresh folder under /tmp).

    python benchmarks/ducklake.py [--orders 300]

Each run is its own process (``python -m ecom_pipeline.distributed.smoke --steps ...``: raw + staging of
customers and orders), as runs from two machines would be.  The warehouse pool gets two slots (its one slot
is the single file's rule).  Writes ``benchmarks/results/ducklake.json`` and ``ducklake.md`` (commit, load
average, wall seconds, conflicts the pipeline retried, the row invariant after the concurrent runs)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
STEPS = "raw__customers,raw__orders,staging__customers,staging__orders"


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


def _runs_at_once(count: int, env: dict, cwd: Path) -> tuple[float, list[dict]]:
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "ecom_pipeline.distributed.smoke", "--steps", STEPS],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(count)
    ]
    outcomes = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(out[-3000:])
        outcomes.append(json.loads(out.strip().splitlines()[-1]))
    return time.perf_counter() - started, outcomes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=300)
    args = parser.parse_args()
    from ecom_pipeline.distributed.local import LocalCluster
    from ecom_pipeline.routing import WAREHOUSE_POOL
    from ecom_pipeline.warehouse.lake import connect_lake
    from ecom_pipeline.warehouse.tables import load_counts

    root = Path(tempfile.mkdtemp(prefix="ecom-bench-ducklake-"))
    extra = {"ECOM_DATA_SOURCE": "synthetic", "ECOM_SYNTHETIC_ORDERS": str(args.orders)}
    load_before = os.getloadavg()
    with LocalCluster(root, extra_env=extra, queues=("default", "default"), warehouse="ducklake") as cluster:
        env = {**os.environ, **cluster.env}
        os.environ.update(cluster.env)
        with dg.DagsterInstance.get() as instance:
            instance.event_log_storage.set_concurrency_slots(WAREHOUSE_POOL, 2)
        sequential = [_runs_at_once(1, env, root) for _ in range(2)]
        concurrent_s, concurrent = _runs_at_once(2, env, root)
        with connect_lake(
            env["ECOM_DUCKLAKE_CATALOG"], env["ECOM_DUCKLAKE_DATA_PATH"], read_only=True
        ) as con:
            counts = load_counts(con, ("customers", "orders"))
        conflicts = sum(
            w.log.read_text(errors="replace").count("DuckLake conflict") for w in cluster.workers.values()
        )
    shutil.rmtree(root, ignore_errors=True)
    ok = all(o["success"] for _, outs in sequential for o in outs) and all(o["success"] for o in concurrent)
    invariant = all(c["raw"] == c["staged"] + c["quarantined"] > 0 for c in counts.values())
    sequential_s = sum(s for s, _ in sequential)
    record = {
        "commit": _commit(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "orders": args.orders,
        "steps_per_run": STEPS.split(","),
        "success": ok,
        "sequential_two_runs_s": round(sequential_s, 1),
        "each_sequential_run_s": [round(s, 1) for s, _ in sequential],
        "concurrent_two_runs_s": round(concurrent_s, 1),
        "ratio": round(concurrent_s / sequential_s, 2),
        "conflicts_retried": conflicts,
        "invariant_holds": invariant,
        "counts": {t: {k: c[k] for k in ("raw", "staged", "quarantined")} for t, c in counts.items()},
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ducklake.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / "ducklake.md").write_text(
        "# Two ingest runs on the DuckLake warehouse: one after the other vs at once\n\n"
        "| commit | orders | two sequential s | two concurrent s | ratio | conflicts retried | invariant | "
        "load avg (1/5/15 min) before | after |\n|---|---|---|---|---|---|---|---|---|\n"
        f"| {record['commit']} | {args.orders} | {record['sequential_two_runs_s']} | "
        f"{record['concurrent_two_runs_s']} | {record['ratio']} | {conflicts} | {invariant} | "
        f"{record['loadavg_before']} | {record['loadavg_after']} |\n\n"
        "Each run is a process of its own on two Celery workers (`default`, `default-2`), 4 steps (raw + "
        "staging\nof customers and orders); each pays its own start (imports, plan, "
        "Postgres) besides the steps.\n"
    )
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
