"""The WHOLE asset graph (``full_pipeline``) on the two shared example shops, in process, timed.

For each example (``docs/examples/<name>.yaml`` on ``../shared/datasets/<name>``), in a fresh process with a
temporary data root and a temporary ``DAGSTER_HOME`` holding a copy of ``.dagster_home/dagster.yaml`` (pool
limits): success, wall and CPU seconds, the 1-minute load average before and after, raw / staged /
quarantined rows with reasons, customers placed vs not placed (with reasons), the calendar's countries and
some holiday names, every output produced / skipped / failed / not run with its reason, whether the DP
report's regions lie in the data's countries and which of them the data has, whether every state series id is
a region id, and (multi-country sample) a personal-data scan of everything outside ``raw``.

    nice -n 10 python benchmarks/shared_examples.py [--examples sales_sample_multicountry online_retail_uk]
    # a finished `python -m ecom_pipeline.demo` run of one example (its DAGSTER_HOME and ECOM_DATA_ROOT):
    nice -n 10 python benchmarks/shared_examples.py --examples online_retail_uk --collect \
        --dagster-home DIR --data-root DIR

Results: ``benchmarks/results/shared_examples.json`` and ``shared_examples.md`` (with the git commit).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATASETS = REPO.parent / "shared" / "datasets"
EXAMPLES = {
    "sales_sample_multicountry": "sales_data_sample.csv",
    "online_retail_uk": "online_retail_2010_2011.parquet",
}


def _value(md: dict, key: str):
    v = md.get(key)
    return getattr(v, "value", v)


def multicountry_needles(data_dir: Path) -> dict[str, str]:
    """Contact names, phones and street addresses of the multi-country sample, as scanner needles."""
    from ecom_pipeline import pii_scan

    with open(data_dir / EXAMPLES["sales_sample_multicountry"], encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return pii_scan.seeded_needles(
        names=[f"{r['CONTACTFIRSTNAME']} {r['CONTACTLASTNAME']}" for r in rows]
        + [r["CONTACTLASTNAME"] for r in rows],
        phones=[r["PHONE"] for r in rows],
        addresses=[r["ADDRESSLINE1"] for r in rows] + [r["ADDRESSLINE2"] for r in rows if r["ADDRESSLINE2"]],
    )


def facts(warehouse: Path, materialised: dict) -> dict:
    """What the run left in the warehouse, checked against itself (see the module doc)."""
    import duckdb

    from ecom_pipeline.canonical import TABLE_ORDER
    from ecom_pipeline.geography import country_code
    from ecom_pipeline.warehouse.tables import load_counts

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        tables = {t: c for t, c in load_counts(con, TABLE_ORDER).items() if c["raw"]}
        out = {"tables": tables}
        have = {
            f"{s}.{t}"
            for s, t in con.execute(
                "SELECT table_schema, table_name FROM information_schema.tables"
            ).fetchall()
        }
        if "features.regions" in have:
            regions = con.execute(
                "SELECT region_id, level, country, customers FROM features.regions"
            ).fetchdf()
            out["regions_by_level"] = regions.groupby("level").size().to_dict()
            out["region_countries"] = sorted(regions["country"].dropna().unique().tolist())
            out["regions_without_centroid"] = int(
                con.execute(
                    "SELECT count(*) FROM features.regions WHERE lat IS NULL OR lng IS NULL"
                ).fetchall()[0][0]
            )
            region_ids = set(regions["region_id"])
            if "features.daily_series" in have:
                states = {
                    r[0]
                    for r in con.execute(
                        "SELECT DISTINCT series_id FROM features.daily_series WHERE level = 'state'"
                    ).fetchall()
                }
                known = {s for s in states if not s.endswith(":unknown")}
                out["state_series"] = len(states)
                out["state_series_not_regions"] = sorted(known - region_ids)[:10]
            if "reports.regional_demand_dp" in have:
                md = materialised.get("reports/regional_demand_dp", {})
                level = _value(md, "level")
                report = con.execute("SELECT DISTINCT region FROM reports.regional_demand_dp").fetchdf()[
                    "region"
                ]
                data_countries = set(out["region_countries"])
                # a report region's country: the region itself (country level) or its "US-" part / the shop's
                many = len(data_countries) > 1

                def region_country(r: str) -> str | None:
                    if level == "country":
                        return country_code(r)
                    return r.split("-", 1)[0] if many else next(iter(data_countries), None)

                prefix = f"{level}:"
                in_data = {r for r in report if prefix + r in region_ids}
                out["dp"] = {
                    "level": level,
                    "report_regions": int(report.nunique()),
                    "report_regions_in_data_regions": len(in_data),
                    "report_countries_subset_of_data_countries": {region_country(r) for r in report}
                    <= data_countries,
                    "report_regions_subset_of_data_regions": len(in_data) == report.nunique(),
                    "data_regions_at_level": int((regions["level"] == level).sum()),
                    "suppressed_fraction": _value(md, "suppressed_fraction"),
                    "orders_placed": _value(md, "orders_placed"),
                }
        return out
    finally:
        con.close()


class _Recorded:
    """A finished run read back from its Dagster instance, shaped like an in-process result for
    :func:`ecom_pipeline.demo.outputs_summary` (``--collect``: a run started by ``make demo``)."""

    def __init__(self, instance, run_id: str):
        self.all_events = [e.dagster_event for e in instance.all_logs(run_id) if e.is_dagster_event]
        record = instance.get_run_record_by_id(run_id)
        self.success = record.dagster_run.is_success
        start, end = record.start_time, record.end_time or time.time()
        self.wall_s = round(end - start, 1) if start else None

    def get_asset_check_evaluations(self):
        return [
            e.event_specific_data for e in self.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
        ]


def child(name: str, collect: bool = False) -> dict:
    """Runs in the measured process (environment set by the parent); ``collect``: read the latest run of
    ``DAGSTER_HOME`` instead of starting one."""
    import dagster as dg

    from ecom_pipeline.config import Settings
    from ecom_pipeline.definitions import build_definitions
    from ecom_pipeline.demo import outputs_summary

    settings = Settings.from_env()
    job = build_definitions(settings).resolve_job_def("full_pipeline")
    instance = dg.DagsterInstance.get()
    if collect:
        result = _Recorded(instance, instance.get_runs(limit=1)[0].run_id)
        wall, cpu = result.wall_s, None
    else:
        wall, cpu = time.perf_counter(), time.process_time()
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        wall, cpu = round(time.perf_counter() - wall, 1), round(time.process_time() - cpu, 1)
    materialised = {}
    for ev in result.all_events:
        if ev.event_type_value == "ASSET_MATERIALIZATION":
            materialised[ev.asset_key.to_user_string()] = ev.event_specific_data.materialization.metadata
    cal = materialised.get("features/calendar", {})
    reg = materialised.get("features/regions", {})
    run = {
        "example": name,
        "success": result.success,
        "wall_s": wall,
        "cpu_s_main_process": cpu,
        "outputs": outputs_summary(job, result),
        "checks_not_passed": sorted(
            f"{c.asset_key.to_user_string()}:{c.check_name} ({c.severity.value})"
            for c in result.get_asset_check_evaluations()
            if not c.passed
        ),
        "calendar": {
            k: _value(cal, k)
            for k in (
                "countries",
                "countries_without_holiday_calendar",
                "customer_weights",
                "holidays",
                "message",
            )
            if _value(cal, k) is not None
        }
        | {"holiday_names": (_value(cal, "holiday_names") or "")[:400]},
        "locations": {
            k: _value(reg, k)
            for k in (
                "countries",
                "customers_resolved",
                "customers_unresolved",
                "customers_unresolved_reasons",
                "customers_resolution_sources",
            )
            if _value(reg, k) is not None
        },
    }
    if settings.warehouse.exists():
        run |= facts(settings.warehouse, materialised)
    if name == "sales_sample_multicountry" and settings.warehouse.exists():
        import duckdb

        from ecom_pipeline import pii_scan

        needles = multicountry_needles(Path(os.environ["ECOM_DATA_DIR"]))
        con = duckdb.connect(str(settings.warehouse), read_only=True)
        try:
            in_raw, _ = pii_scan.scan_warehouse(con, needles, patterns=False)
            outside, scanned = pii_scan.scan_warehouse(con, needles, patterns=False, exclude_schemas=["raw"])
        finally:
            con.close()
        in_files, files = pii_scan.scan_files(
            [settings.data_root], needles, patterns=False, exclude=[settings.warehouse]
        )
        run["personal_data"] = {
            "found_in_raw": sorted({f"{f.where}: {f.kind}" for f in in_raw if f.where.startswith("raw.")}),
            "columns_scanned_outside_raw": len(scanned),
            "found_outside_raw": [f.as_dict() for f in outside],
            "files_scanned": len(files),
            "found_in_files": [f.as_dict() for f in in_files],
        }
    return run


def markdown(out: dict) -> str:
    md = [
        (
            f"# The whole graph (full_pipeline) on the shared example shops ({out['cpus']} CPUs, shared "
            "machine, `nice -n 10`)"
        ),
        "",
        (
            "Produced by `benchmarks/shared_examples.py`. Wall time includes every model of the graph "
            "(CPU-small training paths)."
        ),
        "",
    ]
    for r in out["runs"]:
        if "skipped" in r or "error" in r:
            md += [f"## {r['example']}: {r.get('skipped') or 'ERROR ' + r['error'][-1500:]}", ""]
            continue
        status = "SUCCESS" if r["success"] else "FAILED"
        md += [
            (
                f"## {r['example']}: {status}, {r['wall_s']} s wall, commit {r.get('commit')}, load average "
                f"(1 min) {r['load_avg_1m'][0]} -> {r['load_avg_1m'][1]}"
            ),
            "",
            f"Run by: {r.get('how')}",
            "",
            "| table | raw | staged | quarantined | reasons |",
            "|---|---|---|---|---|",
        ]
        for t, c in r.get("tables", {}).items():
            reasons = ", ".join(f"{k} {v:,}" for k, v in c["reasons"].items()) or "-"
            md.append(f"| {t} | {c['raw']:,} | {c['staged']:,} | {c['quarantined']:,} | {reasons} |")
        md += [
            "",
            f"- locations (customers): {json.dumps(r.get('locations'))}",
            (
                f"- regions by level: {json.dumps(r.get('regions_by_level'))}; countries: "
                f"{', '.join(r.get('region_countries', [])) or '-'}; regions without centroid: "
                f"{r.get('regions_without_centroid')}"
            ),
            (
                f"- state series: {r.get('state_series')}; state series ids that are not region ids: "
                f"{r.get('state_series_not_regions')}"
            ),
            f"- calendar: {json.dumps(r.get('calendar'))}",
            f"- DP report: {json.dumps(r.get('dp'))}",
            "- checks not passed: " + (", ".join(r["checks_not_passed"]) or "none"),
        ]
        if r.get("notes"):
            md.append(f"- notes: {r['notes']}")
        if "personal_data" in r:
            md.append(
                f"- personal data (contact names, phones, street addresses): {json.dumps(r['personal_data'])}"
            )
        md += ["", "```", *r["outputs"], "```", ""]
    return "\n".join(md) + "\n"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()


def _run_child(name: str, env: dict, collect: bool) -> dict:
    load_before = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, __file__, "--child", name] + (["--collect"] if collect else []),
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        return {"example": name, "error": proc.stderr[-3000:]}
    run = json.loads(line[len("RESULT ") :])
    run["load_avg_1m"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", nargs="*", default=list(EXAMPLES))
    parser.add_argument("--child")
    parser.add_argument(
        "--collect",
        action="store_true",
        help="read a finished `make demo` run instead of starting one: with --child, or with "
        "--dagster-home and --data-root (one example)",
    )
    parser.add_argument("--dagster-home", type=Path)
    parser.add_argument("--data-root", type=Path)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.collect), default=str))
        return
    commit = _git("rev-parse", "--short", "HEAD") + (
        "-dirty" if _git("status", "--porcelain", "--untracked-files=no") else ""
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ECOM_", "MLFLOW_", "DAGSTER_HOME"))}
    runs = []
    for name in args.examples:
        data = DATASETS / name
        env = base | {
            "ECOM_DATA_SOURCE": "mapped",
            "ECOM_DATA_DIR": str(data),
            "PYTHONPATH": str(REPO),
            "ECOM_MAPPING": str(REPO / "docs" / "examples" / f"{name}.yaml"),
        }
        if not (data / EXAMPLES[name]).is_file():
            runs.append({"example": name, "skipped": f"dataset not found at {data}"})
        elif args.collect:
            env |= {"ECOM_DATA_ROOT": str(args.data_root), "DAGSTER_HOME": str(args.dagster_home)}
            runs.append(
                _run_child(name, env, collect=True)
                | {
                    "how": (
                        "collected from a `make demo`-style run (python -m ecom_pipeline.demo) of this commit"
                    )
                }
            )
        else:
            with tempfile.TemporaryDirectory() as tmp:
                home = Path(tmp) / "dagster_home"
                home.mkdir()
                shutil.copy(REPO / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")  # the pool limits
                env |= {"ECOM_DATA_ROOT": str(Path(tmp) / "data"), "DAGSTER_HOME": str(home)}
                runs.append(_run_child(name, env, collect=False) | {"how": "benchmarks/shared_examples.py"})
        runs[-1]["commit"] = commit
        print(json.dumps(runs[-1], indent=1), flush=True)
    # one file for both examples: a run replaces the earlier result of its example only
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "shared_examples.json"
    earlier = json.loads(path.read_text())["runs"] if path.is_file() else []
    merged = {r["example"]: r for r in earlier} | {r["example"]: r for r in runs}
    # other entries (e.g. a run recorded before a fix, for comparison) are kept after the examples
    out = {
        "cpus": os.cpu_count(),
        "runs": [merged[n] for n in EXAMPLES if n in merged]
        + [r for k, r in merged.items() if k not in EXAMPLES],
    }
    path.write_text(json.dumps(out, indent=1, default=str) + "\n")
    (RESULTS / "shared_examples.md").write_text(markdown(out))


if __name__ == "__main__":
    main()
