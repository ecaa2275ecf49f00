"""N writer processes started at the same instant on one DuckDB warehouse, plus a read-only reader.

Each writer runs the ``ingest`` job (raw + staging of every canonical table: ~18 tables, ~40 warehouse
opens) in its own OS process on its own ephemeral Dagster instance, so no ``duckdb`` pool serialises them;
only ``connect_with_retry`` does.  For N = 2 and 3, over several repetitions: runs that succeeded, lock
errors, the longest single wait for the lock and the most a run waited in total, the reader's reads and
errors, and whether the warehouse afterwards equals the state one run alone leaves (content fingerprints,
per-run columns excluded).  A solo run is timed first for scale.

    python benchmarks/concurrency.py                 # N = 2, 3; 3 repetitions; 300 synthetic orders
    python benchmarks/concurrency.py --writers 2 --reps 5 --orders 1000

Results: ``benchmarks/results/concurrency.json`` and ``concurrency.md``.  The machine is shared: the
timings are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO))


def _fingerprints(warehouse: Path) -> dict:
    import duckdb

    from ecom_pipeline.warehouse.tables import PER_RUN_COLUMNS, warehouse_fingerprints

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return warehouse_fingerprints(con, ("raw", "staging"), PER_RUN_COLUMNS)
    finally:
        con.close()


def render(out: dict) -> str:
    """The markdown report of a results dict (also: ``python benchmarks/concurrency.py --render``)."""
    summary = out["summary"]
    lines = [
        "# Concurrent writers on one DuckDB warehouse",
        "",
        (
            f"`python benchmarks/concurrency.py` — N processes each run the `ingest` job ({out['orders']} "
            "synthetic orders: raw + staging of 9 tables) released at the same instant, plus one read-only "
            "reader looping on `staging.orders`; no Dagster pool, only the lock retry of "
            f"`connect_with_retry`. Solo ingest run: {out['solo_ingest_s']} s. {out['machine']}."
        ),
        "",
        (
            "| writers | runs | succeeded | lock errors | longest single wait (s) | most waited by one run "
            "(s) | slowest run (s) | reader reads / errors | reader longest wait (s) | warehouse = solo run |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, s in summary.items():
        lines.append(
            f"| {n} | {s['runs']} | {s['succeeded']} | {s['lock_errors']} | {s['max_single_wait_s']} | "
            f"{s['max_total_wait_s']} | {s['max_run_s']} | {s['reader_reads']} / {s['reader_errors']} | "
            f"{s['reader_max_wait_s']} | {s['consistent']}/{s['reps']} |"
        )
    failed = [c for c in out["cases"] if c["failures"]]
    if failed:
        lines += [
            "",
            (
                "Runs that failed (not on the lock). Two *reloads* interleave step by step: a run's blocking "
                "`row_invariant` check can look at `raw.<t>` after another run reloaded it (new load id) "
                "while `staging.<t>` and its quarantine rows still carry the first run's load id. The "
                "warehouse itself stayed consistent (last column); serialise reload runs to avoid it (see "
                "docs/reliability_concurrency.md)."
            ),
            "",
        ]
        lines += [
            f"* N={c['writers']} rep {c['rep']}: "
            + " / ".join(f.replace("\n", " ").strip() for f in c["failures"])
            for c in failed
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--render", action="store_true", help="only rewrite the .md from the .json")
    args = parser.parse_args()
    if args.render:
        (RESULTS / "concurrency.md").write_text(
            render(json.loads((RESULTS / "concurrency.json").read_text()))
        )
        return

    from ecom_pipeline_tests.reliability.concurrent_worker import run_together

    root = Path(tempfile.mkdtemp(prefix="ecom_conc_")) / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECOM_", "MLFLOW_"))}
    env.update(
        ECOM_DATA_ROOT=str(root),
        ECOM_DATA_SOURCE="synthetic",
        ECOM_SYNTHETIC_ORDERS=str(args.orders),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    warehouse = root / "warehouse.duckdb"
    work = root.parent / "sync"

    solo = run_together([["ingest", "{}"]], work / "solo", env, reader_table=None)[0]
    reference = _fingerprints(warehouse)
    print(f"solo ingest: {solo['seconds']} s, success={solo['success']}", flush=True)
    cases = []
    for n in args.writers:
        for rep in range(args.reps):
            reports = run_together([["ingest", "{}"]] * n, work / f"n{n}_rep{rep}", env)
            writers, reader = reports[:-1], reports[-1]
            consistent = _fingerprints(warehouse) == reference
            case = {
                "writers": n,
                "rep": rep,
                "succeeded": sum(bool(w.get("success")) for w in writers),
                "lock_errors": sum(w.get("lock_errors", 0) for w in writers),
                "max_single_wait_s": max(w.get("max_s", 0.0) for w in writers),
                "max_total_wait_s": max(w.get("total_s", 0.0) for w in writers),
                "waits": sum(w.get("waits", 0) for w in writers),
                "run_seconds": [w.get("seconds") for w in writers],
                "reader_reads": reader.get("reads"),
                "reader_errors": reader.get("error_count"),
                "reader_max_wait_s": reader.get("max_wait_s"),
                "reader_counts": reader.get("counts"),
                "consistent_with_solo_run": consistent,
                "failures": [f for w in writers for f in w.get("failures", [])][:3],
            }
            cases.append(case)
            print(json.dumps(case), flush=True)

    summary = {}
    for n in args.writers:
        mine = [c for c in cases if c["writers"] == n]
        summary[n] = {
            "runs": n * len(mine),
            "succeeded": sum(c["succeeded"] for c in mine),
            "lock_errors": sum(c["lock_errors"] for c in mine),
            "max_single_wait_s": max(c["max_single_wait_s"] for c in mine),
            "max_total_wait_s": max(c["max_total_wait_s"] for c in mine),
            "max_run_s": max(max(s for s in c["run_seconds"] if s is not None) for c in mine),
            "reader_reads": sum(c["reader_reads"] or 0 for c in mine),
            "reader_errors": sum(c["reader_errors"] or 0 for c in mine),
            "reader_max_wait_s": max(c["reader_max_wait_s"] or 0 for c in mine),
            "consistent": sum(c["consistent_with_solo_run"] for c in mine),
            "reps": len(mine),
        }
    out = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared: timings are upper bounds)",
        "orders": args.orders,
        "solo_ingest_s": solo["seconds"],
        "summary": summary,
        "cases": cases,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "concurrency.json").write_text(json.dumps(out, indent=1))
    (RESULTS / "concurrency.md").write_text(render(out))
    print(render(out))


if __name__ == "__main__":
    main()
