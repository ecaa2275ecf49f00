"""`make demo`: materialise the whole asset graph on the configured source and print a summary.

Runs are recorded in the local Dagster instance (``.dagster_home``), so `make dev` shows them afterwards.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ecom_pipeline.config import REPO_ROOT, Settings


def _instance():
    import dagster as dg

    home = Path(os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    return dg.DagsterInstance.get()


def warehouse_summary(warehouse: Path) -> str:
    """Per table: raw, staged and quarantined rows, and the main quarantine reasons."""
    from ecom_pipeline.canonical import TABLE_ORDER
    from ecom_pipeline.resources.warehouse import connect_with_retry

    con = connect_with_retry(warehouse, read_only=True)
    try:
        lines = [f"{'table':<12} {'raw':>10} {'staged':>10} {'quarantined':>12}  top reasons"]
        for table in TABLE_ORDER:
            raw = con.execute(f'SELECT count(*) FROM raw."{table}"').fetchall()[0][0]
            staged = con.execute(f'SELECT count(*) FROM staging."{table}"').fetchall()[0][0]
            reasons = con.execute(
                "SELECT reason, count(*) n FROM staging.quarantine WHERE table_name = ? GROUP BY 1 ORDER BY 2 DESC LIMIT 3",
                [table],
            ).fetchall()
            q = sum(n for _, n in con.execute(
                "SELECT reason, count(*) FROM staging.quarantine WHERE table_name = ? GROUP BY 1", [table]).fetchall())
            top = ", ".join(f"{r} ({n})" for r, n in reasons) or "-"
            lines.append(f"{table:<12} {raw:>10,} {staged:>10,} {q:>12,}  {top}")
        schemas = con.execute(
            "SELECT table_schema, count(*) FROM information_schema.tables GROUP BY 1 ORDER BY 1").fetchall()
        lines.append("tables per schema: " + ", ".join(f"{s}={n}" for s, n in schemas))
        return "\n".join(lines)
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--job", default="full_pipeline", help="job to run (default: every asset)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="console log level of the run (DEBUG prints every Dagster event)")
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    print(f"ecom_pipeline demo: source={settings.data_source} warehouse={settings.warehouse} "
          f"mlflow={settings.mlflow_tracking_uri}", flush=True)
    instance = _instance()
    from ecom_pipeline.definitions import defs

    job = defs.resolve_job_def(args.job)
    started = time.perf_counter()
    run_config = {"loggers": {"console": {"config": {"log_level": args.log_level}}}}
    result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=run_config)
    elapsed = time.perf_counter() - started

    checks = result.get_asset_check_evaluations()
    failed_checks = [c for c in checks if not c.passed]
    print(f"\nrun {result.run_id}: {'SUCCESS' if result.success else 'FAILED'} in {elapsed:.1f}s; "
          f"{len(checks)} checks, {len(failed_checks)} not passed")
    for c in failed_checks:
        print(f"  check {c.asset_key.to_user_string()}:{c.check_name} ({c.severity.value}) did not pass")
    if settings.warehouse.exists():
        print("\n" + warehouse_summary(settings.warehouse))
    print(f"\nOpen the UI with `make dev` (runs are in {os.environ['DAGSTER_HOME']}); "
          f"query the warehouse with duckdb {settings.warehouse}")
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
