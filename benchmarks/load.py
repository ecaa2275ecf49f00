"""Load benchmark: the whole asset graph on N synthetic orders, then the daily run on the same warehouse.

Per case (``--orders N``), in a fresh data root under /tmp (never the repository's ``data/``) with its own
Dagster instance (``<root>/dagster_home``):

1. **full**: ``python -m ecom_pipeline.demo --job full_pipeline`` in a subprocess (what ``make demo`` runs).
2. **snapshot daily** (``--snapshot-daily``, on the warehouse and MLflow store the full run left): the
   daily schedules' jobs for a snapshot source, ``full_refresh`` (raw + staging reload, features;
   ``daily_refresh`` before issue 15) then ``scoring`` (serving + reports with the champions), with the
   source grown by one day's worth of orders (``--daily-growth``, default 1/731 of N, the generator's
   calendar being 731 days).  See ``docs/performance.md`` for what is and is not incremental in that run.

Every 0.5 s the whole process tree's RSS is sampled (sum over the tree, and the largest single process;
psutil when installed, else /proc).  After each run the Dagster run storage gives the per-step start/end
times (``instance.get_run_step_stats``); the samples are attributed to the step running at the time, so
every step also gets its peak tree RSS.  The machine is shared: wall times are upper bounds.

    python benchmarks/load.py --orders 50000 --snapshot-daily
    python benchmarks/load.py --orders 1000000 --snapshot-daily --timeout 14400

``--daily`` measures instead the daily path of a source that delivers days, through the inbox (results
``load_daily``): see :func:`daily_path_case`.

    python benchmarks/load.py --orders 50000 --daily

Results are merged per case into ``benchmarks/results/load.json`` and ``load.md`` (a case that did not
finish is written with ``"complete": false`` and the steps it got through).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CALENDAR_DAYS = 731  # SyntheticSource default calendar
SAMPLE_SECONDS = 0.5


# ------------------------------------------------------------------------------------------- sampling


def _tree_rss_proc(pid: int) -> tuple[int, int]:
    """(sum, max) RSS in bytes over ``pid`` and its descendants, read from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            ppid, resident = int(fields[1]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = resident * page
    total = biggest = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        biggest = max(biggest, rss.get(p, 0))
        stack.extend(children.get(p, []))
    return total, biggest


def _tree_rss_psutil(pid: int) -> tuple[int, int]:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    values = []
    for p in procs:
        try:
            values.append(p.memory_info().rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return sum(values), max(values, default=0)


def tree_rss(pid: int) -> tuple[int, int]:
    try:
        import psutil  # noqa: F401
    except ImportError:
        return _tree_rss_proc(pid)
    return _tree_rss_psutil(pid)


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc)."""
    stack, out = [pid], []
    while stack:
        p = stack.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as fh:
                stack += [int(c) for c in fh.read().split()]
        except (OSError, ValueError):
            continue
    return out


def tree_pss(pid: int) -> int:
    """Sum of PSS (proportional set size) in bytes over ``pid`` and its descendants.  Step processes fork from
    one forkserver and share its pages: the RSS sum counts those once per process, PSS splits them, so the PSS
    sum is what the tree really holds in memory."""
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                total += next((int(line.split()[1]) * 1024 for line in fh if line.startswith("Pss:")), 0)
        except (OSError, ValueError):
            continue
    return total


def peak_rss_hwm(pid: int) -> int:
    """The kernel's high-water mark of ``pid``'s own RSS since it started (VmHWM), bytes; 0 when gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    """Samples the process tree of ``pid`` every ``SAMPLE_SECONDS`` until stopped: (unix ts, sum, max), plus
    the root process's VmHWM (its peak RSS since start, also covering the time before sampling began)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, int, int]] = []
        self.peak_pss = 0
        self.root_hwm = 0
        self.load_averages: list[float] = []  # 1-minute load average: how busy the machine was
        # each process's own peak RSS (VmHWM, read while it lives): a launched run's step processes by pid
        self.hwm_by_pid: dict[int, int] = {}
        self._finished = threading.Event()  # not `_stop`: threading.Thread has a method of that name

    def run(self) -> None:
        while not self._finished.is_set():
            total, biggest = tree_rss(self.pid)
            if total:
                self.samples.append((time.time(), total, biggest))
                self.peak_pss = max(self.peak_pss, tree_pss(self.pid))
                self.root_hwm = max(self.root_hwm, peak_rss_hwm(self.pid))
                for p in tree_pids(self.pid):
                    self.hwm_by_pid[p] = max(self.hwm_by_pid.get(p, 0), peak_rss_hwm(p))
                self.load_averages.append(os.getloadavg()[0])
            self._finished.wait(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._finished.set()
        self.join()


# ------------------------------------------------------------------------------------------- one run


def _env(root: Path, orders: int, extra: dict | None = None) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ECOM_WAREHOUSE", "MLFLOW_TRACKING_URI", "ECOM_DATA_DIR", "ECOM_MAPPING")
    }
    env.update(
        ECOM_DATA_ROOT=str(root),
        ECOM_DATA_SOURCE="synthetic",
        ECOM_SYNTHETIC_ORDERS=str(orders),
        DAGSTER_HOME=str(root / "dagster_home"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


def step_stats(dagster_home: Path, run_id: str | None) -> tuple[str | None, str | None, list[dict]]:
    """(run id, run status, steps) from the run storage; the newest run when ``run_id`` is unknown."""
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        if run_id is None:
            runs = instance.get_runs(limit=1)
            if not runs:
                return None, None, []
            run_id = runs[0].run_id
        run = instance.get_run_by_id(run_id)
        stats = instance.get_run_step_stats(run_id)
        starts = instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.STEP_START, limit=100_000
        ).records
    pids = {r.event_log_entry.step_key: r.event_log_entry.dagster_event.pid for r in starts}
    steps = [
        {
            "step": s.step_key,
            "pid": pids.get(s.step_key),
            "status": s.status.value if s.status else "IN_PROGRESS",
            "start": s.start_time,
            "end": s.end_time,
            "seconds": round(s.end_time - s.start_time, 2) if s.start_time and s.end_time else None,
        }
        for s in stats
    ]
    return run_id, run.status.value if run else None, steps


def _process_start(pid: int) -> float:
    """Unix time ``pid`` started (from /proc: boot time + start ticks)."""
    with open("/proc/stat") as fh:
        boot = next(int(line.split()[1]) for line in fh if line.startswith("btime"))
    with open(f"/proc/{pid}/stat") as fh:
        ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def _wait_pid(pid: int, timeout: float) -> tuple[int | None, bool]:
    """Wait for a process that is not our child (``--attach``); SIGTERM then SIGKILL at the timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":  # exited, not reaped
                return None, False
        except OSError:  # gone
            return None, False
        time.sleep(1)
    os.kill(pid, 15)
    for _ in range(60):
        if not Path(f"/proc/{pid}").exists():
            return None, True
        time.sleep(1)
    os.kill(pid, 9)
    return None, True


def run_job(
    root: Path,
    orders: int,
    job: str,
    timeout: float,
    log: Path,
    memory_limit: str = "",
    attach_pid: int | None = None,
    extra_env: dict | None = None,
    launched: bool = False,
) -> dict:
    """One ``ecom_pipeline.demo --job <job>`` subprocess, sampled; wall time, peak RSS and per-step figures.

    ``launched``: ``dagster job execute`` instead, the run worker the UI, schedules and sensors start: the job
    runs on its own executor (model jobs: one forked process per step, ``ECOM_MAX_CONCURRENT`` at once), and
    the sampled tree RSS is the sum over the run worker, the forkserver and the step processes.

    ``attach_pid``: monitor a run an earlier driver started (same root) instead of starting one; RSS samples
    then cover only the time since attaching (the root process's VmHWM still gives its whole-run peak)."""
    env = _env(root, orders, extra_env)
    if memory_limit:
        env["ECOM_DUCKDB_MEMORY_LIMIT"] = memory_limit
    cmd = [sys.executable, "-m", "ecom_pipeline.demo", "--job", job, "--log-level", "INFO"]
    if launched:
        cmd = [sys.executable, "-m", "dagster", "job", "execute", "-m", "ecom_pipeline.definitions"]
        cmd += ["-j", job]
    t0 = time.time()
    attached_at = None
    if attach_pid:
        attached_at = t0
        t0 = _process_start(attach_pid)
        sampler = Sampler(attach_pid)
        sampler.start()
        rc, timed_out = _wait_pid(attach_pid, timeout)
        sampler.stop()
    else:
        with open(log, "w") as fh:
            # own process group: on a timeout the run worker and the step processes it forked stop together
            proc = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
            sampler = Sampler(proc.pid)
            sampler.start()
            timed_out = False
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    rc = proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    rc = proc.wait()
            sampler.stop()
    wall = time.time() - t0
    text = log.read_text(errors="replace")
    m = re.search(r"^run ([0-9a-f-]{36}): (SUCCESS|FAILED)", text, re.MULTILINE)
    run_id, status, steps = step_stats(root / "dagster_home", m.group(1) if m else None)
    samples = sampler.samples
    stopped = t0 + wall
    own_processes = len({s["pid"] for s in steps}) > 1
    # in-process executor: one step at a time, so a sample belongs to the running step; launched
    # (multiprocess) steps overlap, so a step's peak is the tree's peak while it ran, neighbours included
    for s in steps:
        end = s["end"] or stopped
        if s["seconds"] is None and s["start"]:  # still running when the run ended (timeout): time until then
            s["seconds"] = round(stopped - s["start"], 2)
            s["status"] = "INTERRUPTED"
        inside = [tot for ts, tot, _ in samples if s["start"] and s["start"] <= ts <= end]
        s["peak_tree_rss_mb"] = round(max(inside) / 2**20) if inside else None
        # a step in a process of its own (launched runs): that process's peak, the step's own memory
        own = sampler.hwm_by_pid.get(s["pid"]) if own_processes else None
        s["own_peak_rss_mb"] = round(own / 2**20) if own else None
        del s["start"], s["end"], s["pid"]
    steps.sort(key=lambda s: -(s["seconds"] or 0))
    return {
        "job": job,
        "orders": orders,
        "executor": "launched (dagster job execute: the job's own executor)" if launched else "in-process",
        "duckdb_memory_limit": memory_limit or "DuckDB default (80% of RAM)",
        "returncode": rc,
        "timed_out": timed_out,
        "run_id": run_id,
        "run_status": status,
        "complete": status == "SUCCESS" and rc in (0, None),
        "rss_sampled_from": (
            "attached after start: tree RSS samples from "
            + datetime.fromtimestamp(attached_at, UTC).strftime("%H:%M UTC")
            if attached_at
            else "start"
        ),
        "peak_root_process_rss_mb_vmhwm": round(sampler.root_hwm / 2**20),
        "wall_seconds": round(wall, 1),
        "peak_tree_rss_mb": round(max((t for _, t, _ in samples), default=0) / 2**20),
        # the RSS sum counts the pages step processes share with their forkserver once per process
        "peak_tree_pss_mb": round(sampler.peak_pss / 2**20),
        "peak_single_process_rss_mb": round(max((b for _, _, b in samples), default=0) / 2**20),
        "samples": len(samples),
        "load_average_1m": (
            {
                "mean": round(sum(sampler.load_averages) / len(sampler.load_averages), 2),
                "max": round(max(sampler.load_averages), 2),
            }
            if sampler.load_averages
            else None
        ),
        "steps_succeeded": sum(s["status"] == "SUCCESS" for s in steps),
        "steps_failed": [s["step"] for s in steps if s["status"] == "FAILURE"],
        "steps": steps,
        "log": str(log),
    }


def _git_commit() -> str:
    """The checkout's short commit ("" outside a git checkout)."""
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()


def _prepare_root(root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    (root / "dagster_home").mkdir(parents=True)
    # same instance settings as make demo (pools with one slot), but its own run storage
    shutil.copy(REPO / ".dagster_home" / "dagster.yaml", root / "dagster_home" / "dagster.yaml")


def run_case(
    orders: int,
    daily: bool,
    growth: int | None,
    timeout: float,
    root: Path,
    memory_limit: str = "",
    attach_pid: int | None = None,
) -> dict:
    commit = None  # attaching: the code the earlier driver started with is not known here
    if not attach_pid:  # attaching: the earlier driver's data root and run stay as they are
        _prepare_root(root)
        commit = _git_commit() or None
    print(f"[load] {orders:,} orders: full_pipeline in {root}", flush=True)
    full = run_job(
        root, orders, "full_pipeline", timeout, root / "full_pipeline.log", memory_limit, attach_pid
    )
    _print_run(full)
    case = {
        "orders": orders,
        "data_root": str(root),
        "full": full,
        "daily": None,
        "commit": commit,
        "complete": full["complete"],
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if daily and full["complete"]:
        grown = orders + (growth if growth is not None else max(1, round(orders / CALENDAR_DAYS)))
        runs = []
        # the synthetic source is a snapshot: its daily run is full_refresh (daily_refresh is the features
        # after daily_ingest, for a source delivering days)
        for job in ("full_refresh", "scoring"):
            print(f"[load] {grown:,} orders: {job}", flush=True)
            r = run_job(root, grown, job, timeout, root / f"{job}.log", memory_limit)
            _print_run(r)
            runs.append(r)
        wall = sum(r["wall_seconds"] for r in runs)
        case["daily"] = {
            "orders": grown,
            "added_orders": grown - orders,
            "runs": runs,
            "wall_seconds": round(wall, 1),
            "peak_tree_rss_mb": max(r["peak_tree_rss_mb"] for r in runs),
            "complete": all(r["complete"] for r in runs),
            "wall_ratio_vs_full": round(wall / full["wall_seconds"], 3),
            "peak_rss_ratio_vs_full": round(
                max(r["peak_tree_rss_mb"] for r in runs) / max(full["peak_tree_rss_mb"], 1), 3
            ),
        }
        case["complete"] = case["complete"] and case["daily"]["complete"]
    return case


def _print_run(r: dict) -> None:
    print(
        f"[load]   {r['job']}: {'complete' if r['complete'] else 'NOT complete'} in "
        f"{r['wall_seconds']:.0f}s, peak tree RSS {r['peak_tree_rss_mb']:,} MB; slowest: "
        + ", ".join(f"{s['step']} {s['seconds']}s" for s in r["steps"][:5]),
        flush=True,
    )


# ------------------------------------------------------------------------------------------- report


def render_md(results: dict) -> str:
    cases = sorted(results["cases"].values(), key=lambda c: c["orders"])
    lines = [
        "# Load benchmark",
        "",
        (
            f"{results['machine']}. Whole graph (`full_pipeline`, what `make demo` runs) on synthetic "
            "orders, each case in a fresh data root under /tmp with its own Dagster instance; RSS of the "
            "whole process tree sampled every 0.5 s. The in-process executor runs the steps one after "
            "another in one process, so a step's peak tree RSS includes what earlier steps left allocated. "
            "Wall times depend on what else ran on the machine: each case's note says how busy it was. Code "
            "= the commit given per case. Daily = `full_refresh` (`daily_refresh` before issue 15) then "
            "`scoring` on the warehouse the full run left, source grown by one day of orders (see "
            "docs/performance.md for what is incremental)."
        ),
        "",
        (
            "| orders | full run | wall s | peak tree RSS MB (sampled) | peak RSS MB of the run process "
            "(VmHWM) | steps ok | daily wall s | daily peak RSS MB | daily/full time | measured |"
        ),
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in cases:
        f, d = c["full"], c.get("daily")
        state = (
            "complete"
            if f["complete"]
            else "**PARTIAL** (timed out)"
            if f["timed_out"]
            else "**FAILED**"
            if f["steps_failed"]
            else "**PARTIAL** (stopped)"
        )
        lines.append(
            f"| {c['orders']:,} | {state} | {f['wall_seconds']:,.0f} | {f['peak_tree_rss_mb']:,} | "
            f"{f.get('peak_root_process_rss_mb_vmhwm', '-'):,} | {f['steps_succeeded']} | "
            + (
                f"{d['wall_seconds']:,.0f} | {d['peak_tree_rss_mb']:,} | {d['wall_ratio_vs_full']:.2f} | "
                if d
                else "- | - | - | "
            )
            + f"{c['measured_at']} |"
        )
    for c in cases:
        f = c["full"]
        lines += [
            "",
            f"## {c['orders']:,} orders: slowest steps of the full run",
            "",
            f"Code: {c.get('commit') or 'see note'}; RSS samples from {f.get('rss_sampled_from', 'start')}; "
            f"DuckDB memory limit: {f.get('duckdb_memory_limit', '-')}."
            + (
                f" Load average (1 min) during the run: mean {f['load_average_1m']['mean']}, max "
                f"{f['load_average_1m']['max']} on {os.cpu_count()} cores."
                if f.get("load_average_1m")
                else ""
            )
            + (f" Note: {c['note']}" if c.get("note") else ""),
            "",
            "| step | status | s | peak tree RSS MB |",
            "|---|---|---:|---:|",
        ]
        for s in c["full"]["steps"][:15]:
            lines.append(
                f"| {s['step']} | {s['status']} | {s['seconds'] if s['seconds'] is not None else '-'} | "
                f"{s['peak_tree_rss_mb'] if s['peak_tree_rss_mb'] is not None else '-'} |"
            )
        if c["full"]["steps_failed"]:
            lines.append(f"\nFailed steps: {', '.join(c['full']['steps_failed'])}")
        if c.get("daily"):
            for r in c["daily"]["runs"]:
                lines += [
                    "",
                    (
                        f"### daily: `{r['job']}` ({c['daily']['orders']:,} orders, "
                        f"+{c['daily']['added_orders']:,}): {r['wall_seconds']:,.0f} s, peak "
                        f"{r['peak_tree_rss_mb']:,} MB; slowest steps"
                    ),
                    "",
                    "| step | status | s |",
                    "|---|---|---:|",
                ]
                for s in r["steps"][:8]:
                    lines.append(
                        f"| {s['step']} | {s['status']} | "
                        f"{s['seconds'] if s['seconds'] is not None else '-'} |"
                    )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- ingest layer: daily vs full

# Which rows of each table belong to the last day (the daily partition): orders by purchase day, their
# items / payments / reviews with them, customers whose first order is that day, events by time.  Everything
# else (dimension tables, rows whose date cannot be read) is history.
_DAY_OF = {
    "orders": "order_id IN (SELECT order_id FROM _day_orders)",
    "order_items": "order_id IN (SELECT order_id FROM _day_orders)",
    "payments": "order_id IN (SELECT order_id FROM _day_orders)",
    "reviews": "order_id IN (SELECT order_id FROM _day_orders)",
    "customers": "customer_id IN (SELECT customer_id FROM _day_customers)",
    "events": "TRY_CAST(ts AS TIMESTAMP)::DATE = $day",
}


def _identity_mapping(folder: Path, pattern: str) -> Path:
    import yaml

    from ecom_pipeline.canonical import TABLE_ORDER, TABLES

    mapping = {
        "version": 1,
        "timezone": "UTC",
        "geo_bounds": "brazil",
        "timestamp_formats": ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d"],
        "tables": {
            t: {"file": pattern.format(table=t), "columns": {c: c for c in TABLES[t].column_names}}
            for t in TABLE_ORDER
        },
    }
    path = folder / f"mapping_{abs(hash(pattern))}.yaml"
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    return path


def _split_by_day(gen, root: Path) -> tuple[str, str, dict]:
    """Write every table as two CSV partitions, <day before>/ (history) and <last day>/; returns the keys."""
    from ecom_pipeline.canonical import TABLE_ORDER, TABLES

    day = gen.execute("SELECT max(TRY_CAST(purchased_at AS TIMESTAMP))::DATE FROM raw.orders").fetchall()[0][
        0
    ]
    history = (day - __import__("datetime").timedelta(days=1)).isoformat()
    gen.execute(
        "CREATE TEMP TABLE _first AS SELECT order_id, customer_id, "
        "min(TRY_CAST(purchased_at AS TIMESTAMP))::DATE AS d FROM raw.orders GROUP BY ALL"
    )
    gen.execute(
        "CREATE TEMP TABLE _day_orders AS SELECT DISTINCT order_id FROM raw.orders WHERE order_id IN "
        "(SELECT order_id FROM _first GROUP BY order_id HAVING min(d) = $day)",
        {"day": day},
    )
    gen.execute(
        "CREATE TEMP TABLE _day_customers AS SELECT customer_id FROM _first GROUP BY customer_id "
        "HAVING min(d) = $day",
        {"day": day},
    )
    rows: dict = {}
    for key in (history, day.isoformat()):
        (root / key).mkdir(parents=True)
    for t in TABLE_ORDER:
        cols = ", ".join(f'"{c}"' for c in TABLES[t].column_names)
        pred = _DAY_OF.get(t, "false")
        for key, where in (
            (day.isoformat(), f"coalesce({pred}, false)"),
            (history, f"NOT coalesce({pred}, false)"),
        ):
            params = {"day": day} if "$day" in where else None
            gen.execute(
                f'COPY (SELECT {cols} FROM raw."{t}" WHERE {where} ORDER BY _source_row) '
                f"TO '{root / key / (t + '.csv')}' (HEADER, DELIMITER ',')",
                params,
            )
            rows.setdefault(key, {})[t] = gen.execute(
                f'SELECT count(*) FROM raw."{t}" WHERE {where}', params
            ).fetchall()[0][0]
    return history, day.isoformat(), rows


def ingest_daily_case(orders: int, root: Path) -> dict:
    """The ingest layer (raw + staging of every table) after one new day: the full reload (what the
    unpartitioned ingest job does every day) vs the daily partition (load_raw_partition +
    upsert_staging_partition) on a warehouse that holds the history, and whether they give the same
    staging."""
    import duckdb

    from ecom_pipeline.canonical import TABLE_ORDER
    from ecom_pipeline.cleaning.staging import stage_table
    from ecom_pipeline.cleaning.staging_upsert import upsert_staging_partition
    from ecom_pipeline.loading import load_raw_partition, load_raw_table
    from ecom_pipeline.sources.mapped import MappedSource
    from ecom_pipeline.sources.synthetic import SyntheticSource
    from ecom_pipeline.warehouse.tables import PER_RUN_COLUMNS, table_fingerprint

    key = b"benchmark-key"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    gen = duckdb.connect(str(root / "generated.duckdb"))
    source = SyntheticSource(n_orders=orders, seed=7, image_dir=None)
    for t in TABLE_ORDER:
        load_raw_table(gen, source, t, load_id="gen")
    files = root / "files"
    history, day, rows = _split_by_day(gen, files)
    gen.close()
    hints = MappedSource.from_yaml(_identity_mapping(root, "*/{table}.csv"), data_dir=files).parse_hints(
        "orders"
    )

    def full_reload(con) -> float:
        src = MappedSource.from_yaml(_identity_mapping(root, "*/{table}.csv"), data_dir=files)
        t0 = time.perf_counter()
        for t in TABLE_ORDER:
            load_raw_table(con, src, t, load_id="full")
        for t in TABLE_ORDER:
            stage_table(con, t, hints=hints, pseudonym_key=key)
        return time.perf_counter() - t0

    def partition(con, part: str) -> tuple[float, dict]:
        src = MappedSource.from_yaml(_identity_mapping(root, part + "/{table}.csv"), data_dir=files)
        t0 = time.perf_counter()
        counts = {}
        for t in TABLE_ORDER:
            load_raw_partition(con, src, t, part, load_id=f"{part}-{t}")
            r = upsert_staging_partition(con, t, part, pseudonym_key=key, hints=hints)
            counts[t] = {
                "raw": r.raw_rows,
                "inserted": r.inserted,
                "updated": r.updated,
                "unchanged": r.unchanged,
                "stale": r.stale,
                "quarantined": r.quarantined,
            }
        return time.perf_counter() - t0, counts

    def staging_state(con) -> tuple[dict, dict]:
        prints = {t: table_fingerprint(con, f"staging.{t}", PER_RUN_COLUMNS) for t in TABLE_ORDER}
        reasons = {
            f"{t}:{r}": n
            for t, r, n in con.execute(
                "SELECT table_name, reason, count(*) FROM staging.quarantine GROUP BY ALL ORDER BY ALL"
            ).fetchall()
        }
        return prints, reasons

    full_con = duckdb.connect(str(root / "full.duckdb"))
    full_s = full_reload(full_con)
    full_prints, full_reasons = staging_state(full_con)
    full_con.close()
    inc = duckdb.connect(str(root / "daily.duckdb"))
    history_s, _ = partition(inc, history)
    daily_s, day_counts = partition(inc, day)
    inc_prints, inc_reasons = staging_state(inc)
    inc.close()
    differences = {
        t: {"full": list(full_prints[t]), "daily": list(inc_prints[t])}
        for t in TABLE_ORDER
        if full_prints[t] != inc_prints[t]
    }
    reason_diff = {
        k: {"full": full_reasons.get(k, 0), "daily": inc_reasons.get(k, 0)}
        for k in sorted(set(full_reasons) | set(inc_reasons))
        if full_reasons.get(k) != inc_reasons.get(k)
    }
    return {
        "orders": orders,
        "history_partition": history,
        "day_partition": day,
        "rows": {p: sum(r.values()) for p, r in rows.items()},
        "day_rows_by_table": rows[day],
        "full_reload_seconds": round(full_s, 2),
        "history_partition_seconds": round(history_s, 2),
        "daily_partition_seconds": round(daily_s, 2),
        "daily_vs_full": round(daily_s / full_s, 4),
        "day_counts": day_counts,
        "staging_tables_equal": not differences,
        "staging_differences": differences,
        "quarantine_reason_differences": reason_diff,
    }


def render_ingest_md(results: dict) -> str:
    lines = [
        "# Ingest layer: daily partition vs full reload",
        "",
        (
            f"{results['machine']}. Synthetic orders dumped to CSV and split into two partitions: the last "
            "day (its orders with their items, payments and reviews, customers whose first order it is, its "
            "events) and the history (everything else). Full = raw + staging of every table reloaded from "
            "all files (what the unpartitioned ingest does every day). Daily = `load_raw_partition` + "
            "`upsert_staging_partition` of the last day on a warehouse that already holds the history. Only "
            "the ingest layer is measured here, not the feature, model and scoring steps of the daily jobs."
        ),
        "",
        (
            "| orders | rows (history / day) | full reload s | daily partition s | daily / full | "
            "staging equal | commit | load avg (1 min) before / after | measured |"
        ),
        "|---:|---|---:|---:|---:|---|---|---|---|",
    ]
    for c in sorted(results["cases"].values(), key=lambda c: c["orders"]):
        r = c["rows"]
        lines.append(
            f"| {c['orders']:,} | {r[c['history_partition']]:,} / {r[c['day_partition']]:,} | "
            f"{c['full_reload_seconds']:.1f} | {c['daily_partition_seconds']:.2f} | {c['daily_vs_full']:.3f} "
            f"| {c['staging_tables_equal']} | {c['commit']} | {c['load_before']} / {c['load_after']} | "
            f"{c['measured_at']} |"
        )
    for c in sorted(results["cases"].values(), key=lambda c: c["orders"]):
        lines += [
            "",
            f"## {c['orders']:,} orders: the day's partition by table",
            "",
            "| table | raw | inserted | updated | unchanged | stale | quarantined |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for t, n in c["day_counts"].items():
            lines.append(
                f"| {t} | {n['raw']} | {n['inserted']} | {n['updated']} | {n['unchanged']} | "
                f"{n['stale']} | {n['quarantined']} |"
            )
        if c["staging_differences"] or c["quarantine_reason_differences"]:
            lines += [
                "",
                "Differences between the two (staging fingerprints: rows, hash; quarantine by reason):",
                "",
                "```",
                json.dumps(
                    {"staging": c["staging_differences"], "quarantine": c["quarantine_reason_differences"]},
                    indent=1,
                ),
                "```",
            ]
    return "\n".join(lines) + "\n"


def ingest_daily_main(orders_list: list[int], root: Path, out: str) -> int:
    out_json = RESULTS / f"{out}.json"
    for orders in orders_list:
        before = [round(x, 2) for x in os.getloadavg()]
        case = ingest_daily_case(orders, root / f"ingest_daily_{orders}")
        case["load_before"] = before
        case["load_after"] = [round(x, 2) for x in os.getloadavg()]
        case["commit"] = _git_commit()
        case["measured_at"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        print(json.dumps(case, indent=1, default=str), flush=True)
        results = json.loads(out_json.read_text()) if out_json.exists() else {"cases": {}}
        results["machine"] = f"{platform.machine()}, {os.cpu_count()} cores"
        results["cases"][str(orders)] = case
        RESULTS.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(results, indent=1, default=str) + "\n")
        (RESULTS / f"{out}.md").write_text(render_ingest_md(results))
        shutil.rmtree(root / f"ingest_daily_{orders}", ignore_errors=True)
    return 0


# ------------------------------------------------------------------------ the daily path, through the inbox

# What a user's daily schedule runs for a source that delivers days (docs/deployment.md): the inbox sensor
# archives the day's files, daily_ingest stages every day not staged yet, features_after_daily_ingest
# launches daily_refresh, and daily_scoring runs scoring.  The first build of such a warehouse is the same
# ingest on the history, then every feature, every model and the scoring: the full graph with the
# partitioned ingest in place of the snapshot reload (the same 59 assets as full_pipeline minus the
# snapshot raw/staging assets, whose tables daily_ingest writes).
FIRST_BUILD_JOBS = ("daily_ingest", "daily_refresh", "training", "scoring")
DAILY_JOBS = ("daily_ingest", "daily_refresh", "scoring")
FEATURE_JOBS = ("daily_ingest", "daily_refresh")


def deliver_to_inbox(files: Path, key: str, inbox: Path, mapping: Path, seen: dict) -> dict:
    """Drop partition ``key``'s CSV files into the inbox as ``<table>_<key>.csv`` and let the inbox sensor's
    own function (:func:`process_inbox`, with the mapped layout check) archive them under
    ``processed/<key>/``; tables without rows that day are not delivered.  Returns the accepted files."""
    from ecom_pipeline.automation.inbox import check_layout, process_inbox

    inbox.mkdir(parents=True, exist_ok=True)
    for path in sorted((files / key).glob("*.csv")):
        with open(path) as fh:
            has_rows = fh.readline() and fh.readline()
        if has_rows:
            shutil.move(path, inbox / f"{path.stem}_{key}.csv")
    scan = process_inbox(
        inbox,
        seen,
        settle_seconds=0,
        layout_check=lambda path, landing: check_layout(path, landing, "mapped", mapping),
    )
    if scan.rejected or set(scan.accepted) != {key}:
        raise RuntimeError(f"inbox refused the delivery of {key}: {scan.rejected or scan.accepted}")
    return {f["name"]: f["bytes"] for f in scan.accepted[key]}


def _sum_runs(runs: list[dict]) -> dict:
    return {
        "wall_seconds": round(sum(r["wall_seconds"] for r in runs), 1),
        "step_seconds": round(sum(s["seconds"] or 0 for r in runs for s in r["steps"]), 1),
        "peak_tree_rss_mb": max(r["peak_tree_rss_mb"] for r in runs),
        "peak_tree_pss_mb": max(r.get("peak_tree_pss_mb") or 0 for r in runs) or None,
        "complete": all(r["complete"] for r in runs),
    }


def daily_path_case(
    orders: int,
    timeout: float,
    root: Path,
    memory_limit: str = "",
    features_only: bool = False,
    launched: bool = False,
    keep_first_build: Path | None = None,
) -> dict:
    """Synthetic shop delivered through the inbox: the history (every day but the last, one delivery) and
    its first build, then the last day delivered and the daily jobs, each a real Dagster run.
    ``keep_first_build``: copy the data root there between the two phases (outside any job's wall), for
    ``--daily-again``.
    ``features_only``: only ``daily_ingest`` + ``daily_refresh`` in both phases (no training, no scoring):
    the ingest and features part of the daily path, when the whole graph does not fit the time at hand."""
    import duckdb

    from ecom_pipeline.canonical import TABLE_ORDER
    from ecom_pipeline.loading import load_raw_table
    from ecom_pipeline.sources.synthetic import SyntheticSource

    _prepare_root(root)
    commit = _git_commit()
    t0 = time.perf_counter()
    gen = duckdb.connect(str(root / "generated.duckdb"))
    source = SyntheticSource(n_orders=orders, seed=42, image_dir=None)
    for t in TABLE_ORDER:
        load_raw_table(gen, source, t, load_id="gen")
    history, day, rows = _split_by_day(gen, root / "files")
    gen.close()
    (root / "generated.duckdb").unlink()
    mapping = _identity_mapping(root, "{table}.csv")  # landing names: the date token is stripped
    generate_s = time.perf_counter() - t0
    inbox, seen = root / "inbox", {}

    def run_jobs(jobs: tuple[str, ...], phase: str) -> list[dict]:
        return _run_jobs(root, orders, jobs, phase, timeout, memory_limit, mapping, launched)

    delivered = {"history": deliver_to_inbox(root / "files", history, inbox, mapping, seen)}
    first_jobs, daily_jobs = (FEATURE_JOBS, FEATURE_JOBS) if features_only else (FIRST_BUILD_JOBS, DAILY_JOBS)
    first = run_jobs(first_jobs, "first")
    daily: list[dict] = []
    kept_s = None
    if _sum_runs(first)["complete"] and keep_first_build is not None:
        t_keep = time.perf_counter()
        if keep_first_build.exists():
            shutil.rmtree(keep_first_build)
        shutil.copytree(root, keep_first_build, symlinks=True)
        kept_s = round(time.perf_counter() - t_keep, 1)
    if _sum_runs(first)["complete"]:
        delivered["day"] = deliver_to_inbox(root / "files", day, inbox, mapping, seen)
        daily = run_jobs(daily_jobs, "daily")
    case = {
        "orders": orders,
        "data_root": str(root),
        "commit": commit,
        "scope": "ingest + features only (no training, no scoring)" if features_only else "whole graph",
        "executor": "launched (dagster job execute, multiprocess)" if launched else "in-process (demo)",
        "history_partition": history,
        "day_partition": day,
        "rows": {"history": sum(rows[history].values()), "day": sum(rows[day].values())},
        "day_rows_by_table": rows[day],
        "delivered_files": delivered,
        "generate_and_split_seconds": round(generate_s, 1),
        "kept_first_build": {"path": str(keep_first_build), "copy_seconds": kept_s} if kept_s else None,
        "first_build": {"runs": first, **_sum_runs(first)},
        "daily": {"runs": daily, **_sum_runs(daily)} if daily else None,
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    return _with_ratios(case)


def _run_jobs(
    root: Path,
    orders: int,
    jobs: tuple[str, ...],
    phase: str,
    timeout: float,
    memory_limit: str,
    mapping: Path,
    launched: bool,
) -> list[dict]:
    """The jobs one after another on the mapped (inbox-fed) source, stopping at the first that fails."""
    extra = {"ECOM_DATA_SOURCE": "mapped", "ECOM_MAPPING": str(mapping)}
    runs = []
    for job in jobs:
        print(f"[load] {orders:,} orders, {phase}: {job}", flush=True)
        log = root / f"{phase}_{job}.log"
        r = run_job(root, orders, job, timeout, log, memory_limit, None, extra, launched)
        _print_run(r)
        runs.append(r)
        if not r["complete"]:
            break
    return runs


def _with_ratios(case: dict) -> dict:
    if case["daily"]:
        f, d = case["first_build"], case["daily"]
        d["wall_ratio_vs_first_build"] = round(d["wall_seconds"] / f["wall_seconds"], 3)
        d["step_ratio_vs_first_build"] = round(d["step_seconds"] / max(f["step_seconds"], 1e-9), 3)
    case["complete"] = bool(case["daily"]) and case["daily"]["complete"]
    return case


def daily_again_case(case: dict, kept: Path, timeout: float, memory_limit: str, launched: bool) -> dict:
    """The daily phase of an earlier case again, on ``kept``: a copy of its data root taken between its
    first build and its daily phase (the last day's files still under files/<day>).  The copy is restored
    at the case's own data root (MLflow's artifact locations are absolute paths), the day delivered and
    the daily jobs run.  The earlier daily result is kept under ``daily_earlier``."""
    if not (case.get("first_build") or {}).get("complete"):
        raise SystemExit("--daily-again: the earlier case has no complete first build")
    day, root = case["day_partition"], Path(case["data_root"])
    if not any((kept / "files" / day).glob("*.csv")):
        raise SystemExit(f"--daily-again: {kept}/files/{day} holds no day files (copied after delivery?)")
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(kept, root, symlinks=True)
    (mapping,) = root.glob("mapping_*.yaml")
    delivered = deliver_to_inbox(root / "files", day, root / "inbox", mapping, {})
    commit = _git_commit()
    daily = _run_jobs(root, case["orders"], DAILY_JOBS, "daily", timeout, memory_limit, mapping, launched)
    earlier = case.pop("daily_earlier", []) + ([case["daily"]] if case.get("daily") else [])
    case.update(
        daily={"runs": daily, **_sum_runs(daily), "commit": commit, "delivered_files": delivered},
        daily_earlier=earlier,
        daily_measured_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    return _with_ratios(case)


def _scope(c: dict) -> str:
    scope = " (ingest + features only)" if c.get("scope", "").startswith("ingest") else ""
    return scope + (", launched (multiprocess)" if c.get("executor", "").startswith("launched") else "")


def _commits(c: dict) -> str:
    """The case's commit; with a daily phase measured again (--daily-again), first build / daily."""
    daily = (c.get("daily") or {}).get("commit")
    if daily and daily != c["commit"]:
        return f"{c['commit']} (first build) / {daily} (daily, {c.get('daily_measured_at')})"
    return c["commit"]


def _intervention(c: dict) -> list[str]:
    return [f"**Interventions during this run:** {c['intervention']}", ""] if c.get("intervention") else []


def _load_note(r: dict) -> str:
    la = r.get("load_average_1m")
    return f"{la['mean']} / {la['max']}" if la else "-"


def render_daily_path_md(results: dict) -> str:
    lines = [
        "# Load benchmark: the daily path through the inbox",
        "",
        (
            f"{results['machine']}. `python benchmarks/load.py --daily`: a synthetic shop dumped to CSV and "
            "delivered through the inbox (the sensor's `process_inbox` with the mapped layout check) as two "
            "delivery days: the history (every day but the last) and the last day. First build = "
            "`daily_ingest` (stages the history) + `daily_refresh` + `training` + `scoring`: the whole graph "
            "with the partitioned ingest. Daily = the last day delivered, then `daily_ingest` (stages only "
            "that day) + `daily_refresh` + `scoring`: what the daily schedules run. Each job is a real "
            "Dagster run (`python -m ecom_pipeline.demo --job <job>`, in-process executor, its own instance "
            "in a fresh data root under /tmp); *launched* cases (`--launched`) start each job as "
            "`dagster job execute`, the run worker the UI, schedules and sensors start, so model jobs "
            "run one forked process per step, two at a time (peak RSS = the sum over the run worker "
            "and its step processes). Wall = the subprocess, including Python start and loading "
            "the definitions (~10-20 s per run); steps = the sum of the run's step times. Load = 1-minute "
            "load average while the jobs ran (mean / max) on 2 cores, shared with other engineers' work."
        ),
        "",
        (
            "| orders | rows history / day | first build wall s (steps s) | daily wall s (steps s) | "
            "daily/first wall | daily/first steps | peak RSS MB first / daily | commit | measured |"
        ),
        "|---:|---|---:|---:|---:|---:|---|---|---|",
    ]
    cases = sorted(results["cases"].values(), key=lambda c: c["orders"])
    for c in cases:
        f, d = c["first_build"], c.get("daily")
        lines.append(
            f"| {c['orders']:,}{_scope(c)} | {c['rows']['history']:,} / {c['rows']['day']:,} | "
            f"{f['wall_seconds']:,.0f} ({f['step_seconds']:,.0f}){'' if f['complete'] else ' INCOMPLETE'} | "
            + (
                f"{d['wall_seconds']:,.0f} ({d['step_seconds']:,.0f}){'' if d['complete'] else ' INCOMPLETE'}"
                f" | {d['wall_ratio_vs_first_build']:.3f} | {d['step_ratio_vs_first_build']:.3f} | "
                f"{f['peak_tree_rss_mb']:,} / {d['peak_tree_rss_mb']:,} | "
                if d
                else "- | - | - | - | "
            )
            + f"{_commits(c)} | {c['measured_at']} |"
        )
    for c in cases:
        lines += [
            "",
            f"## {c['orders']:,} orders{_scope(c)}",
            "",
            *_intervention(c),
            "| phase | job | wall s | steps s | load mean / max | peak tree RSS MB | peak tree PSS MB |",
            "|---|---|---:|---:|---|---:|---:|",
        ]
        for phase in ("first_build", "daily"):
            for r in (c.get(phase) or {}).get("runs", []):
                lines.append(
                    f"| {phase} | `{r['job']}`{'' if r['complete'] else ' (NOT complete)'} | "
                    f"{r['wall_seconds']:,.1f} | {sum(s['seconds'] or 0 for s in r['steps']):,.1f} | "
                    f"{_load_note(r)} | {r['peak_tree_rss_mb']:,} | {r.get('peak_tree_pss_mb') or '-'} |"
                )
        for r in (c.get("first_build") or {}).get("runs", []):
            own = sorted(
                (s for s in r["steps"] if s.get("own_peak_rss_mb")), key=lambda s: -s["own_peak_rss_mb"]
            )
            if own:
                lines += [
                    "",
                    f"### first build `{r['job']}`: steps by the peak RSS of their own process",
                    "",
                    "| step | s | own process peak RSS MB | tree peak RSS MB while it ran |",
                    "|---|---:|---:|---:|",
                ]
                lines += [
                    f"| {s['step']} | {s['seconds']} | {s['own_peak_rss_mb']:,} | "
                    f"{s['peak_tree_rss_mb'] or '-'} |"
                    for s in own[:8]
                ]
        for r in (c.get("daily") or {}).get("runs", []):
            lines += [
                "",
                f"### daily `{r['job']}`: slowest steps",
                "",
                "| step | status | s |",
                "|---|---|---:|",
            ]
            lines += [f"| {s['step']} | {s['status']} | {s['seconds']} |" for s in r["steps"][:10]]
    return "\n".join(lines) + "\n"


def daily_path_main(
    orders_list: list[int],
    timeout: float,
    root: Path,
    out: str,
    memory_limit: str,
    features_only: bool,
    launched: bool = False,
    keep_first_build: Path | None = None,
) -> int:
    complete = True
    for orders in orders_list:
        case = daily_path_case(
            orders,
            timeout,
            root / f"daily_path_{orders}",
            memory_limit,
            features_only,
            launched,
            keep_first_build / f"daily_path_{orders}" if keep_first_build else None,
        )
        complete = complete and case["complete"]
        _write_daily_results(out, _case_key(orders, features_only, launched), case)
    return 0 if complete else 1


def _case_key(orders: int, features_only: bool, launched: bool) -> str:
    return f"{orders}" + (":features_only" if features_only else "") + (":launched" if launched else "")


def _write_daily_results(out: str, key: str, case: dict) -> None:
    out_json = RESULTS / f"{out}.json"
    results = json.loads(out_json.read_text()) if out_json.exists() else {"cases": {}}
    results["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, " + (
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GB RAM"
    )
    results["cases"][key] = case
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    (RESULTS / f"{out}.md").write_text(render_daily_path_md(results))


def daily_again_main(args) -> int:
    out = args.out if args.out != "load" else "load_daily"
    if len(args.orders) != 1:
        raise SystemExit("--daily-again takes one --orders value")
    key = _case_key(args.orders[0], args.features_only, args.launched)
    recorded = json.loads((RESULTS / f"{out}.json").read_text())["cases"].get(key)
    if recorded is None:
        raise SystemExit(f"--daily-again: no case {key!r} in benchmarks/results/{out}.json")
    case = daily_again_case(recorded, args.daily_again, args.timeout, args.duckdb_memory_limit, args.launched)
    _write_daily_results(out, key, case)
    return 0 if case["complete"] else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--orders", type=int, nargs="+", default=[50_000])
    p.add_argument(
        "--daily",
        action="store_true",
        help="the daily path through the inbox: first build, then one new day's daily_ingest + daily_refresh "
        "+ scoring (results: load_daily)",
    )
    p.add_argument(
        "--features-only",
        action="store_true",
        help="with --daily: only daily_ingest + daily_refresh in both phases (no training, no scoring)",
    )
    p.add_argument(
        "--launched",
        action="store_true",
        help="with --daily: each job as `dagster job execute` (the run worker the UI, schedules and sensors "
        "start; model jobs on the multiprocess executor) instead of the in-process demo",
    )
    p.add_argument(
        "--daily-again",
        type=Path,
        default=None,
        metavar="KEPT_ROOT",
        help="with --daily and one --orders: run the daily phase of the recorded case again on KEPT_ROOT, "
        "a copy of its data root taken between its first build and its daily phase",
    )
    p.add_argument(
        "--keep-first-build",
        type=Path,
        default=None,
        metavar="DIR",
        help="with --daily: copy each case's data root to DIR/daily_path_<orders> between its first build "
        "and its daily phase (for --daily-again)",
    )
    p.add_argument(
        "--snapshot-daily",
        action="store_true",
        help="after the full_pipeline run, full_refresh + scoring on a grown snapshot source (a snapshot "
        "source's daily run)",
    )
    p.add_argument(
        "--daily-growth",
        type=int,
        default=None,
        help="orders added for the daily run (default: one day's worth, orders / 731)",
    )
    p.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per job run")
    p.add_argument("--root", default="/tmp/ecom_load", help="parent of the per-case data roots")
    p.add_argument("--out", default="load", help="results name under benchmarks/results/")
    p.add_argument(
        "--duckdb-memory-limit", default="", help="ECOM_DUCKDB_MEMORY_LIMIT for the runs, e.g. 4GB"
    )
    p.add_argument(
        "--attach",
        type=int,
        default=None,
        metavar="PID",
        help="monitor the full run an earlier driver started for --orders (one case) and finish its "
        "case (--timeout counts from now)",
    )
    p.add_argument(
        "--ingest-daily",
        action="store_true",
        help="measure only the ingest layer: daily partition vs full reload (results: load_ingest_daily)",
    )
    args = p.parse_args(argv)
    if args.ingest_daily:
        return ingest_daily_main(args.orders, Path(args.root), "load_ingest_daily")
    if args.daily and args.daily_again:
        return daily_again_main(args)
    if args.daily:
        return daily_path_main(
            args.orders,
            args.timeout,
            Path(args.root),
            args.out if args.out != "load" else "load_daily",
            args.duckdb_memory_limit,
            args.features_only,
            args.launched,
            args.keep_first_build,
        )

    out_json = RESULTS / f"{args.out}.json"
    complete = True
    for orders in args.orders:
        case = run_case(
            orders,
            args.snapshot_daily,
            args.daily_growth,
            args.timeout,
            Path(args.root) / f"orders_{orders}",
            args.duckdb_memory_limit,
            args.attach,
        )
        complete = complete and case["complete"]
        # re-read before writing: several cases may run at once (separate processes) into the same file
        results = json.loads(out_json.read_text()) if out_json.exists() else {"cases": {}}
        results["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, " + (
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GB RAM"
        )
        results["cases"][str(orders)] = case
        RESULTS.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(results, indent=1, default=str) + "\n")
        (RESULTS / f"{args.out}.md").write_text(render_md(results))
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
