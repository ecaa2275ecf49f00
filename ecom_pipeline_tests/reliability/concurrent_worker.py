"""One OS process of a concurrency test: a writer running a job, or a read-only reader.

    python -m ecom_pipeline_tests.reliability.concurrent_worker write --job ingest --sync DIR --out OUT.json
        [--run-config JSON | --fast | --light]
    python -m ecom_pipeline_tests.reliability.concurrent_worker read --sync DIR --out OUT.json

Settings come from the environment (``ECOM_DATA_ROOT`` ...).  Every worker imports and builds everything
first, then writes ``DIR/ready.<pid>`` and waits for ``DIR/go``, so the runs really start together (imports
take seconds and vary).  A writer runs the job in-process (one OS process, steps one after another) on its
own ephemeral Dagster instance: no pool serialises it against the other writers, only the warehouse's lock
retry does.  A reader opens the warehouse read-only in a loop until ``DIR/stop`` appears.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

LOCK_ERRORS = ("could not set lock", "Conflicting lock")
REPO_ROOT = Path(__file__).resolve().parents[2]


# Test-sized settings for the features job: a short GCN training and the small packaged English text encoder
# (the default e5 is converted on first use, ~1 min); ops the job does not have are left out.
FAST_OPS = {
    "features__region_embeddings": {"epochs_cpu": 20},
    "features__review_text_embeddings": {"text_encoder": "all-minilm-l6-v2"},
    "features__product_text_embeddings": {"text_encoder": "all-minilm-l6-v2"},
    "features__review_topics": {"text_encoder": "all-minilm-l6-v2"},
}


# Model-heavy feature assets (encoders, topic clustering, GCN + MLflow) left out where a test only needs the
# job's warehouse writes: the rest still writes a dozen tables through the pandas IO manager.
HEAVY_FEATURES = (
    "review_text_embeddings",
    "product_text_embeddings",
    "product_image_embeddings",
    "product_embeddings",
    "review_topics",
    "region_embeddings",
)


def light_selection(job) -> list:
    """The asset keys of ``job`` without ``HEAVY_FEATURES``."""
    return [
        k
        for k in job.asset_layer.selected_asset_keys
        if not (k.path[0] == "features" and k.path[-1] in HEAVY_FEATURES)
    ]


def fast_run_config(job) -> dict:
    """``FAST_OPS`` for the ops that ``job`` (a resolved job definition) has."""
    names = {node.name for node in job.graph.nodes}
    return {"ops": {op: {"config": cfg} for op, cfg in FAST_OPS.items() if op in names}}


def _wait_for_go(sync: Path) -> float:
    (sync / f"ready.{os.getpid()}").write_text("")
    while not (sync / "go").exists():
        time.sleep(0.02)
    return time.time()


def write(
    job_name: str,
    sync: Path,
    out: Path,
    run_config: dict | None = None,
    fast: bool = False,
    light: bool = False,
) -> None:
    import dagster as dg

    from ecom_pipeline.config import Settings
    from ecom_pipeline.definitions import build_definitions
    from ecom_pipeline.resources.warehouse import lock_wait_stats

    job = build_definitions(Settings.from_env()).resolve_job_def(job_name)
    run_config = fast_run_config(job) if fast else run_config
    selection = light_selection(job) if light else None
    started = _wait_for_go(sync)
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            instance=instance, raise_on_error=False, run_config=run_config or {}, asset_selection=selection
        )
        failures = [
            str(e.event_specific_data.error.message if e.event_specific_data.error else e.message)
            for e in result.all_events
            if e.is_step_failure
        ]
    out.write_text(
        json.dumps(
            {
                "role": "writer",
                "job": job_name,
                "pid": os.getpid(),
                "success": result.success,
                "started": started,
                "finished": time.time(),
                "seconds": round(time.time() - started, 2),
                "lock_errors": sum(any(m in f for m in LOCK_ERRORS) for f in failures),
                "failures": failures[:5],
                "steps": sum(1 for e in result.all_events if e.is_step_success),
                **lock_wait_stats(),
            }
        )
    )


def read(sync: Path, out: Path, table: str) -> None:
    from ecom_pipeline.config import Settings
    from ecom_pipeline.resources.warehouse import connect_with_retry

    path = Settings.from_env().warehouse
    started = _wait_for_go(sync)
    opens, errors, counts, waits = 0, [], [], []
    while not (sync / "stop").exists():
        t0 = time.monotonic()
        try:
            con = connect_with_retry(path, read_only=True, timeout_s=300)
        except Exception as exc:  # noqa: BLE001 - every failure is reported, none expected
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        waits.append(time.monotonic() - t0)
        try:
            counts.append(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])
            opens += 1
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            con.close()
        time.sleep(0.05)
    out.write_text(
        json.dumps(
            {
                "role": "reader",
                "pid": os.getpid(),
                "started": started,
                "finished": time.time(),
                "reads": opens,
                "errors": errors[:5],
                "error_count": len(errors),
                "counts": sorted(set(counts)),
                "max_wait_s": round(max(waits, default=0.0), 3),
            }
        )
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=("write", "read"))
    parser.add_argument("--job", default="ingest")
    parser.add_argument("--run-config", default="{}", help="JSON run config for the writer's job")
    parser.add_argument("--fast", action="store_true", help="run config = fast_run_config(job) (test-sized)")
    parser.add_argument(
        "--light", action="store_true", help="only light_selection(job) (no model-heavy assets)"
    )
    parser.add_argument("--table", default="staging.orders", help="what the reader counts")
    parser.add_argument("--sync", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.role == "write":
        write(args.job, args.sync, args.out, json.loads(args.run_config), args.fast, args.light)
    else:
        read(args.sync, args.out, args.table)


if __name__ == "__main__":
    main()


def run_together(
    workers: list[list[str]],
    sync: Path,
    env: dict,
    *,
    reader_table: str | None = "staging.orders",
    timeout_s: float = 600,
) -> list[dict]:
    """Start one process per writer (``[job, run_config_json | "fast" | "light"]``) plus a reader, release
    them at once, wait for the writers, stop the reader; their JSON reports (writers first, reader last)."""
    import subprocess
    import sys

    sync.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "ecom_pipeline_tests.reliability.concurrent_worker"]
    procs, outs = [], []
    for i, (job, config) in enumerate(workers):
        outs.append(sync / f"writer{i}.json")
        config_args = {"fast": ["--fast"], "light": ["--light"]}.get(config, ["--run-config", config])
        procs.append(
            subprocess.Popen(
                cmd + ["write", "--job", job, *config_args, "--sync", str(sync), "--out", str(outs[-1])],
                env=env,
                cwd=REPO_ROOT,
            )
        )
    if reader_table:
        outs.append(sync / "reader.json")
        reader = subprocess.Popen(
            cmd + ["read", "--table", reader_table, "--sync", str(sync), "--out", str(outs[-1])],
            env=env,
            cwd=REPO_ROOT,
        )
    everyone = procs + ([reader] if reader_table else [])
    deadline = time.monotonic() + timeout_s
    try:
        while len(list(sync.glob("ready.*"))) < len(everyone):
            if any(p.poll() is not None for p in everyone) or time.monotonic() > deadline:
                raise RuntimeError("a worker died or hung before the start")
            time.sleep(0.1)
        (sync / "go").write_text("")
        for p in procs:
            p.wait(max(1.0, deadline - time.monotonic()))
        (sync / "stop").write_text("")
        if reader_table:
            reader.wait(60)
    finally:
        for p in everyone:
            if p.poll() is None:
                p.kill()
    return [json.loads(o.read_text()) if o.exists() else {"missing": str(o)} for o in outs]
