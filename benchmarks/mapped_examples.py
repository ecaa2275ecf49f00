"""The shipped example mappings through the Dagster ``ingest`` job (raw + staging + their checks), timed.

For each example (``docs/examples/online_retail_uk.yaml``, ``docs/examples/sales_sample_multicountry.yaml``)
on its shared dataset (``../shared/datasets/<name>``), in a fresh process and a temporary data root:
wall and CPU seconds of the job, the machine's 1-minute load average before and after, raw / staged /
quarantined rows with reasons per table, the source's filter / duplicate / guest counts, and every check
that did not pass.  Skips an example whose dataset is absent.

    python benchmarks/mapped_examples.py [--examples online_retail_uk sales_sample_multicountry]

Results: ``benchmarks/results/mapped_examples.json`` and ``mapped_examples.md`` (with the git commit).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
EXAMPLES = {
    "online_retail_uk": REPO.parent / "shared" / "datasets" / "online_retail_uk",
    "sales_sample_multicountry": REPO.parent / "shared" / "datasets" / "sales_sample_multicountry",
}


def child(name: str) -> dict:
    """Runs in the measured process (environment set by the parent)."""
    import dagster as dg
    import duckdb

    from ecom_pipeline.canonical import TABLE_ORDER
    from ecom_pipeline.config import Settings
    from ecom_pipeline.definitions import build_definitions
    from ecom_pipeline.warehouse.tables import load_counts

    settings = Settings.from_env()
    job = build_definitions(settings).resolve_job_def("ingest")
    wall, cpu = time.perf_counter(), time.process_time()
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    facts = {}
    for ev in result.all_events:
        if ev.event_type_value == "ASSET_MATERIALIZATION" and ev.asset_key.path[0] == "raw":
            md = ev.event_specific_data.materialization.metadata
            facts[ev.asset_key.path[1]] = {
                k: getattr(md[k], "value", md[k])
                for k in (
                    "rows_filtered_out",
                    "identical_duplicates_dropped",
                    "conflicting_duplicate_rows",
                    "guest_rows",
                )
                if k in md
            }
    con = duckdb.connect(str(settings.warehouse), read_only=True)
    tables = {t: {**c, **facts.get(t, {})} for t, c in load_counts(con, TABLE_ORDER).items() if c["raw"]}
    con.close()
    return {
        "example": name,
        "success": result.success,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "tables": tables,
        "checks_not_passed": sorted(
            f"{c.asset_key.to_user_string()}:{c.check_name}"
            for c in result.get_asset_check_evaluations()
            if not c.passed
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", nargs="*", default=list(EXAMPLES))
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child)))
        return
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    runs = []
    for name in args.examples:
        data = EXAMPLES[name]
        if not data.is_dir():
            runs.append({"example": name, "skipped": f"dataset not found at {data}"})
            continue
        with tempfile.TemporaryDirectory() as root:
            env = {
                k: v for k, v in os.environ.items() if not k.startswith(("ECOM_", "MLFLOW_", "DAGSTER_HOME"))
            }
            env.update(
                ECOM_DATA_ROOT=root,
                ECOM_DATA_SOURCE="mapped",
                ECOM_DATA_DIR=str(data),
                ECOM_MAPPING=str(REPO / "docs" / "examples" / f"{name}.yaml"),
                PYTHONPATH=str(REPO),
            )
            load_before = os.getloadavg()[0]
            proc = subprocess.run(
                [sys.executable, __file__, "--child", name],
                env=env,
                cwd=REPO,
                capture_output=True,
                text=True,
                check=False,
            )
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                raise RuntimeError(f"{name} failed: {proc.stderr[-3000:]}")
            run = json.loads(line[len("RESULT ") :])
            run["load_avg_1m"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
            runs.append(run)
            print(json.dumps(run, indent=1), flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = {"commit": commit, "cpus": os.cpu_count(), "runs": runs}
    (RESULTS / "mapped_examples.json").write_text(json.dumps(out, indent=1) + "\n")
    md = [
        f"# Example mappings through the ingest job (commit {commit}, {os.cpu_count()} CPUs, shared machine)",
        "",
    ]
    for r in runs:
        if "skipped" in r:
            md.append(f"## {r['example']}: skipped ({r['skipped']})")
            continue
        status = "SUCCESS" if r["success"] else "FAILED"
        load = f"{r['load_avg_1m'][0]} -> {r['load_avg_1m'][1]}"
        title = f"## {r['example']}: {status}, {r['wall_s']} s wall, {r['cpu_s']} s CPU, load average {load}"
        md += [
            title,
            "",
            "| table | raw | staged | quarantined | reasons | filtered out | guest lines |",
            "|---|---|---|---|---|---|---|",
        ]
        for t, c in r["tables"].items():
            reasons = ", ".join(f"{k} {v:,}" for k, v in c["reasons"].items()) or "-"
            md.append(
                f"| {t} | {c['raw']:,} | {c['staged']:,} | {c['quarantined']:,} | {reasons} | "
                f"{c.get('rows_filtered_out', 0):,} | {c.get('guest_rows', 0):,} |"
            )
        md += ["", "checks not passed: " + (", ".join(r["checks_not_passed"]) or "none"), ""]
    (RESULTS / "mapped_examples.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
