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

    # env exception: Dagster reads DAGSTER_HOME itself; the demo only supplies the repository's instance
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    return dg.DagsterInstance.get()


def warehouse_summary(warehouse: Path) -> str:
    """Per table: raw, staged and quarantined rows, conflicting duplicates, and the main quarantine
    reasons."""
    from ecom_pipeline.canonical import TABLE_ORDER
    from ecom_pipeline.resources.warehouse import connect_with_retry
    from ecom_pipeline.warehouse.tables import load_counts

    con = connect_with_retry(warehouse, read_only=True)
    try:
        lines = [
            f"{'table':<12} {'raw':>10} {'staged':>10} {'quarantined':>12} {'dup_conflict':>12}  top reasons"
        ]
        for table, c in load_counts(con, TABLE_ORDER).items():
            conflicts = c["reasons"].get(
                "duplicate_key_conflict", 0
            )  # same key, other values: first one kept
            top = ", ".join(f"{r} ({n})" for r, n in list(c["reasons"].items())[:3]) or "-"
            lines.append(
                f"{table:<12} {c['raw']:>10,} {c['staged']:>10,} {c['quarantined']:>12,} "
                f"{conflicts:>12,}  {top}"
            )
        schemas = con.execute(
            "SELECT table_schema, count(*) FROM information_schema.tables GROUP BY 1 ORDER BY 1"
        ).fetchall()
        lines.append("tables per schema: " + ", ".join(f"{s}={n}" for s, n in schemas))
        return "\n".join(lines)
    finally:
        con.close()


def _skip_reason(metadata: dict) -> str | None:
    """Why an asset that ran produced nothing useful, from the conventions the assets use in metadata."""

    def value(key):
        v = metadata.get(key)
        return getattr(v, "value", v)

    skipped = value("skipped")
    if skipped not in (None, "none", "", {}, []) and not isinstance(skipped, dict | list):
        return str(skipped)
    if value("training_path") == "skipped":
        return str(value("message") or "skipped")
    if value("dagster/row_count") == 0 and value("message"):
        return str(value("message"))
    if value("delivered") is False:  # raw.<table> of a table the source does not have
        return f"the source ({value('source')}) delivers no such table: empty"
    if value("raw_rows") == 0:  # staging.<table> over an empty raw table
        return "no raw rows: empty"
    return None


def outputs_summary(job, result) -> list[str]:
    """Every asset of ``job``: produced, skipped (ran, but said why it produced nothing), failed, or not run
    (an upstream step failed or a blocking check did not pass), each with its reason."""
    failures = {}
    for ev in result.all_events:
        if ev.is_step_failure:
            err = ev.step_failure_data.error
            message = (err.cause.message if err and err.cause else err.message if err else "") or ""
            failures[ev.step_key] = message.strip().splitlines()[-1][:200] if message.strip() else "failed"
    produced: dict = {}
    for ev in result.all_events:
        if ev.event_type_value == "ASSET_MATERIALIZATION":
            produced[ev.asset_key] = ev.event_specific_data.materialization.metadata
    failed_checks = sorted(
        f"{c.asset_key.to_user_string()}:{c.check_name}"
        for c in result.get_asset_check_evaluations()
        if not c.passed and c.severity.value == "ERROR"
    )
    layer = job.asset_layer
    keys = getattr(layer, "selected_asset_keys", None) or layer.executable_asset_keys
    rows = {"produced": [], "skipped": [], "failed": [], "not run": []}
    for key in sorted(keys, key=lambda k: k.to_user_string()):
        name = key.to_user_string()
        if key in produced:
            reason = _skip_reason(produced[key])
            (rows["skipped"].append(f"{name}: {reason}") if reason else rows["produced"].append(name))
        elif key.to_python_identifier() in failures:
            rows["failed"].append(f"{name}: {failures[key.to_python_identifier()]}")
        else:
            blocked = f"; failed blocking checks: {', '.join(failed_checks)}" if failed_checks else ""
            rows["not run"].append(
                f"{name}: an upstream step failed or a blocking check did not pass{blocked}"
            )
    counts = ", ".join(f"{len(v)} {k}" for k, v in rows.items())
    lines = [f"outputs: {counts}"]
    if rows["produced"]:
        lines.append("  produced: " + ", ".join(rows["produced"]))
    for kind in ("skipped", "failed", "not run"):
        lines += [f"  {kind}: {r}" for r in rows[kind]]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--job", default="full_pipeline", help="job to run (default: every asset)")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="console log level of the run (DEBUG prints every Dagster event)",
    )
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    print(
        f"ecom_pipeline demo: source={settings.data_source} warehouse={settings.warehouse} "
        f"mlflow={settings.mlflow_tracking_uri}",
        flush=True,
    )
    instance = _instance()
    from ecom_pipeline.config import check_pool_limits

    try:
        check_pool_limits()
    except RuntimeError as exc:  # a custom DAGSTER_HOME without the pool limits: say how to fix it
        print(f"refusing to run: {exc}", file=sys.stderr)
        return 2
    from ecom_pipeline.definitions import defs

    job = defs.resolve_job_def(args.job)
    started = time.perf_counter()
    run_config = {"loggers": {"console": {"config": {"log_level": args.log_level}}}}
    result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=run_config)
    elapsed = time.perf_counter() - started

    checks = result.get_asset_check_evaluations()
    failed_checks = [c for c in checks if not c.passed]
    print(
        f"\nrun {result.run_id}: {'SUCCESS' if result.success else 'FAILED'} in {elapsed:.1f}s; "
        f"{len(checks)} checks, {len(failed_checks)} not passed"
    )
    for c in failed_checks:
        print(
            f"  check {c.asset_key.to_user_string()}:{c.check_name} ({c.severity.value}) did not pass"
            + (f": {c.description}" if c.description and c.check_name == "quarantine_share" else "")
        )
    print("\n" + "\n".join(outputs_summary(job, result)))
    if settings.warehouse.exists():
        print("\n" + warehouse_summary(settings.warehouse))
    print(
        f"\nOpen the UI with `make dev` (runs are in {instance.root_directory}); "
        f"query the warehouse with duckdb {settings.warehouse}"
    )
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
