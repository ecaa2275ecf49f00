"""Launched vs in-process: what a run started by the UI, a schedule or a sensor costs beside `make demo`.

Per job and mode, in a fresh data root under /tmp (never the repository's ``data/``) with its own Dagster
instance (pools ``default_limit: 1``, as ``.dagster_home/dagster.yaml``), on the same synthetic source:

* ``in_process``  a fresh ``python`` that imports the code location and calls ``execute_in_process`` (what
                  ``make demo`` / ``python -m ecom_pipeline.demo --job <job>`` does);
* ``launched``    ``dagster job execute -m ecom_pipeline.definitions -j <job>``: a run worker process that
                  loads the code location and runs the job with the job's *own* executor, as the run
                  launcher does for the UI, schedules and sensors (``ingest``: in-process executor;
                  model jobs: the forkserver multiprocess executor);
* ``launched_in_process_executor`` (``--in-process-executor``) the same with ``ECOM_LONG_JOBS_EXECUTOR=
                  in_process``: model jobs run every step in the run worker (no step processes);
* ``launched_multiprocess`` (``--multiprocess``) the same with ``ECOM_SHORT_JOBS_EXECUTOR=multiprocess``:
                  ``ingest`` with one process per step forked from the preloaded forkserver, one step at a
                  time (every ingest step is in the one-slot ``duckdb`` pool);
* ``launched_location`` (``--location``) the same with ``ECOM_SHORT_JOBS_EXECUTOR=location``: ``ingest`` on
                  the location's multiprocess executor (``ECOM_MAX_CONCURRENT`` steps, default 2, so the
                  second waits for the pool slot with Dagster's claim back-off).

Reported per case: wall seconds of the whole process (start-up and imports included) and of the run itself
(Dagster's run start to end), steps, and the launched / in-process ratios of the medians.  Every mode runs
once per repeat, interleaved, and a ratio is given only between cases of the same invocation (same commit,
same load).

    python benchmarks/launched.py                       # ingest, 2 repeats
    python benchmarks/launched.py --multiprocess --location --repeats 2   # ingest, one process per step
    python benchmarks/launched.py --jobs full_pipeline --repeats 1 --timeout 3600  # long: not on a shared box

Results are merged per (job, mode) into ``benchmarks/results/launched.json`` and ``launched.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
INSTANCE_YAML = "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n"
IN_PROCESS = """
import sys, dagster as dg
from ecom_pipeline.definitions import defs
job = defs.resolve_job_def(sys.argv[1])
result = job.execute_in_process(instance=dg.DagsterInstance.get(), raise_on_error=False)
sys.exit(0 if result.success else 1)
"""


def _commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")


def _run_stats(home: Path, job: str) -> dict:
    """Run wall time and step counts from the instance the case wrote to."""
    os.environ["DAGSTER_HOME"] = str(home)
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(job_name=job), limit=1)
        if not runs:
            return {"status": "NO RUN"}
        run = runs[0]
        record = instance.get_run_record_by_id(run.run_id)
        steps = instance.get_run_step_stats(run.run_id)
        run_s = (record.end_time - record.start_time) if record.end_time and record.start_time else None
        return {
            "status": run.status.value,
            "run_s": round(run_s, 2) if run_s else None,
            "steps": len(steps),
            "steps_ok": sum(s.status.value == "SUCCESS" for s in steps),
            "step_seconds": round(sum((s.end_time or 0) - (s.start_time or 0) for s in steps), 2),
        }


def run_case(job: str, mode: str, orders: int, timeout: float) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"ecom_launched_{job}_{mode}_"))
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ECOM_DATA_ROOT": str(root / "data"),
        "ECOM_SYNTHETIC_ORDERS": str(orders),
        "PYTHONPATH": str(REPO),
    }
    for var in (
        "ECOM_WAREHOUSE",
        "ECOM_DATA_SOURCE",
        "ECOM_DATA_DIR",
        "ECOM_MAPPING",
        "ECOM_EXECUTOR",
        "ECOM_SHORT_JOBS_EXECUTOR",
        "ECOM_LONG_JOBS_EXECUTOR",
        "MLFLOW_TRACKING_URI",
    ):
        env.pop(var, None)
    if mode == "in_process":
        command = [sys.executable, "-c", IN_PROCESS, job]
    else:
        command = [
            sys.executable,
            "-m",
            "dagster",
            "job",
            "execute",
            "-m",
            "ecom_pipeline.definitions",
            "-j",
            job,
        ]
        if mode == "launched_multiprocess":
            env["ECOM_SHORT_JOBS_EXECUTOR"] = "multiprocess"
        if mode == "launched_location":
            env["ECOM_SHORT_JOBS_EXECUTOR"] = "location"
        if mode == "launched_in_process_executor":
            env["ECOM_LONG_JOBS_EXECUTOR"] = "in_process"
    started = time.perf_counter()
    # own process group: on a timeout the run worker and every step process it forked are stopped together
    proc = subprocess.Popen(
        command,
        env=env,
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=timeout)
        complete, rc, tail = True, proc.returncode, stderr[-1500:]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        complete, rc, tail = False, None, f"stopped after {timeout:.0f} s"
    wall = time.perf_counter() - started
    stats = _run_stats(home, job)
    shutil.rmtree(root, ignore_errors=True)
    return {
        "job": job,
        "mode": mode,
        "complete": complete,
        "rc": rc,
        "process_s": round(wall, 2),
        **stats,
        "error_tail": tail if rc not in (0,) else "",
    }


def write_results(cases: list[dict], meta: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "launched.json"
    data = json.loads(path.read_text()) if path.exists() else {"cases": {}}
    for c in cases:
        data["cases"][f"{c['job']}/{c['mode']}"] = {**c, **meta}
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    lines = [
        "# Launched vs in-process runs",
        "",
        (
            "Same job, same synthetic source, fresh data root and Dagster instance per run (pools "
            "`default_limit: 1`). *in_process* = a fresh python calling `execute_in_process` (the `make "
            "demo` path); *launched* = `dagster job execute`: a run worker that runs the job with its own "
            "executor, as the run launcher does for the UI, schedules and sensors; "
            "*launched_in_process_executor* = the same with `ECOM_LONG_JOBS_EXECUTOR=in_process`; "
            "*launched_multiprocess* = `ingest` with one process per step forked from the preloaded "
            "forkserver, one at a time (`ECOM_SHORT_JOBS_EXECUTOR=multiprocess`); *launched_location* = "
            "`ingest` on the location's multiprocess executor (2 steps at once; "
            "`ECOM_SHORT_JOBS_EXECUTOR=location`). Since commit 904cf89 the staging checks run in their "
            "table's step: `ingest` has 18 steps (84 before). process s includes start-up and imports; run s "
            "is Dagster's run start to end. Medians over the repeats; ratios only between cases measured in "
            "the same invocation (same commit and load); the machine is shared (load average given), so "
            "times are upper bounds. Produced by `benchmarks/launched.py`."
        ),
        "",
        (
            "| job | mode | complete | process s (median) | each run's process s | run s (median) | "
            "steps ok / steps | process s / in-process | run s / in-process | commit | "
            "load avg before -> after | measured |"
        ),
        "|---|---|---|---:|---|---:|---|---:|---:|---|---|---|",
    ]
    rows = data["cases"]
    for key in sorted(rows):
        c = rows[key]
        base = rows.get(f"{c['job']}/in_process")
        comparable = (
            base
            and c.get("complete")
            and base.get("complete")
            and c["mode"] != "in_process"
            and base.get("measured") == c.get("measured")
            and base.get("commit") == c.get("commit")
        )
        ratio = f"{c['process_s'] / base['process_s']:.2f}" if comparable else "-"
        run_ratio = (
            f"{c['run_s'] / base['run_s']:.2f}"
            if comparable and c.get("run_s") and base.get("run_s")
            else "-"
        )
        lines.append(
            f"| {c['job']} | {c['mode']} | {'yes' if c.get('complete') else '**no** (stopped)'} | "
            f"{c['process_s']} | {', '.join(str(x) for x in c.get('all_process_s', []))} | "
            f"{c.get('run_s') or '-'} | "
            f"{c.get('steps_ok', '-')} / {c.get('steps', '-')} | {ratio} | {run_ratio} | "
            f"{c['commit']} | "
            f"{c['load_before']} -> {c['load_after']} | {c['measured']} |"
        )
    (RESULTS / "launched.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", nargs="+", default=["ingest"])
    parser.add_argument("--orders", type=int, default=5000, help="synthetic orders (default: the demo's)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--multiprocess",
        action="store_true",
        help="also launch with one process per step, one at a time (ECOM_SHORT_JOBS_EXECUTOR=multiprocess)",
    )
    parser.add_argument(
        "--location",
        action="store_true",
        help="also launch on the location's executor (ECOM_SHORT_JOBS_EXECUTOR=location)",
    )
    parser.add_argument(
        "--in-process-executor",
        action="store_true",
        help="also launch with ECOM_LONG_JOBS_EXECUTOR=in_process (model jobs in the run worker)",
    )
    parser.add_argument("--timeout", type=float, default=600, help="per run, seconds")
    parser.add_argument(
        "--multiprocess-timeout",
        type=float,
        default=150,
        help="for the one-process-per-step run (reported as stopped when it runs out)",
    )
    args = parser.parse_args(argv)

    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    extra = ["launched_in_process_executor"] if args.in_process_executor else []
    extra += (["launched_multiprocess"] if args.multiprocess else []) + (
        ["launched_location"] if args.location else []
    )
    modes = ["in_process", "launched", *extra]
    results = []
    for job in args.jobs:
        # interleaved (in_process, launched, in_process, launched, ...): on a shared machine the load changes
        # by the minute, and alternating exposes both modes to it alike
        runs: dict[str, list[dict]] = {mode: [] for mode in modes}
        schedule = [m for _ in range(args.repeats) for m in modes]
        for mode in schedule:
            timeout = (
                args.multiprocess_timeout
                if mode in ("launched_multiprocess", "launched_location")
                else args.timeout
            )
            runs[mode].append(run_case(job, mode, args.orders, timeout))
            print(json.dumps(runs[mode][-1]), flush=True)
        for mode, done_runs in runs.items():
            done = [r for r in done_runs if r["complete"] and r["rc"] == 0]
            best = dict(done_runs[-1])
            if done:
                best.update(
                    process_s=round(statistics.median(r["process_s"] for r in done), 2),
                    run_s=round(statistics.median(r["run_s"] for r in done if r.get("run_s")), 2),
                )
            best["repeats"] = len(done_runs)
            best["all_process_s"] = [r["process_s"] for r in done_runs]
            results.append(best)
    meta = {
        "commit": _commit(),
        "orders": args.orders,
        "load_before": load_before,
        "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "measured": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    write_results(results, meta)
    print((RESULTS / "launched.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
