"""Load guards as real Dagster runs: the quarantine-share check blocks everything downstream of a table whose
dates do not match the mapping, and its message names the file, the column and the format."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from ecom_pipeline.config import Settings
from ecom_pipeline.definitions import build_definitions
from ecom_pipeline.demo import outputs_summary

REPO = Path(__file__).resolve().parents[2]
RETAIL_YAML = REPO / "docs" / "examples" / "retail_orders.yaml"
RETAIL_CSV = REPO / "docs" / "examples" / "retail_orders.csv"


def _write_day_first_copy(folder: Path) -> Path:
    """The shipped example with its dates rewritten day first with two-digit years (11/13/2016 ->
    13/11/16)."""
    with open(RETAIL_CSV, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for col in ("Order Date", "Ship Date"):
            m, d, y = r[col].split("/")
            r[col] = f"{int(d):02d}/{int(m):02d}/{y[-2:]}"
    out = folder / "orders_ddmmyy.csv"
    with open(out, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out


def _mapping(folder: Path, formats: list[str]) -> Path:
    m = yaml.safe_load(RETAIL_YAML.read_text(encoding="utf-8"))
    m["timestamp_formats"] = formats
    for spec in m["tables"].values():
        spec["file"] = "orders_ddmmyy.csv"
    path = folder / "mapping.yaml"
    path.write_text(yaml.safe_dump(m, sort_keys=False), encoding="utf-8")
    return path


def _ingest(data_root: Path, monkeypatch, mapping: Path):
    monkeypatch.setenv("ECOM_DATA_SOURCE", "mapped")
    monkeypatch.setenv("ECOM_MAPPING", str(mapping))
    settings = Settings.from_env()
    job = build_definitions(settings).resolve_job_def("ingest")
    return (
        settings,
        job,
        job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False),
    )


def _materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_dates_that_do_not_match_the_mapping_fail_the_run_at_the_staging_check(
    data_root, tmp_path, monkeypatch
):
    folder = tmp_path / "exports"
    folder.mkdir()
    _write_day_first_copy(folder)
    # the mistake of the issue: the documented month-first format copied onto a dd/mm/yy file
    settings, job, result = _ingest(data_root, monkeypatch, _mapping(folder, ["%m/%d/%Y"]))
    assert not result.success
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    share = [e for e in failed if e.check_name == "quarantine_share"]
    assert [e.asset_key.to_user_string() for e in share] == ["staging/orders"]
    message = share[0].description
    assert "orders_ddmmyy.csv" in message and "purchased_at" in message and "%m/%d/%Y" in message
    assert "100.0 % of 15 raw rows quarantined" in message
    assert share[0].metadata["example"].value["file"] == "orders_ddmmyy.csv"
    # nothing downstream of staging.orders ran: its children are not materialised
    done = _materialized(result)
    assert "staging/orders" in done and "staging/customers" in done
    assert not {"staging/order_items", "staging/payments", "staging/reviews"} & done
    # the demo summary says which outputs were produced and which were not, and why
    lines = outputs_summary(job, result)
    assert lines[0].startswith("outputs: ") and "not run" in lines[0]
    assert any(
        line.startswith("  not run: staging/order_items: ") and "staging/orders:quarantine_share" in line
        for line in lines
    ), lines
    assert "staging/orders" in next(line for line in lines if line.startswith("  produced: "))
    assert "  skipped: raw/events: the source (mapped) delivers no such table: empty" in lines

    # the same file with the right format stages completely and every blocking check passes
    settings, job, result = _ingest(data_root, monkeypatch, _mapping(folder, ["%d/%m/%y"]))
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations() if e.check_name == "quarantine_share")
    con = duckdb.connect(str(settings.warehouse), read_only=True)
    try:
        first = con.execute("SELECT min(purchased_at), max(purchased_at) FROM staging.orders").fetchall()[0]
        quarantined = con.execute(
            "SELECT count(*) FROM staging.quarantine WHERE table_name = 'orders'"
        ).fetchall()
    finally:
        con.close()
    assert first[0].year >= 2014 and first[1].year <= 2017
    assert quarantined == [(0,)]


@pytest.mark.parametrize("share, passes", [(0.05, False), (0.5, True)])
def test_quarantine_share_threshold_and_duplicates(tmp_path, share, passes):
    from ecom_pipeline import quality

    con = duckdb.connect()
    con.execute("CREATE SCHEMA raw; CREATE SCHEMA staging")
    con.execute(
        "CREATE TABLE raw.products AS SELECT 'L1' AS _load_id, range::VARCHAR AS product_id FROM range(100)"
    )
    con.execute(
        "CREATE TABLE staging.quarantine (table_name VARCHAR, load_id VARCHAR, source_file VARCHAR, "
        "source_row BIGINT, reason VARCHAR, detail VARCHAR, original_row VARCHAR, quarantined_at TIMESTAMP)"
    )
    rows = [("bad_type:price", 7), ("missing_required:product_id", 3), ("duplicate_key_conflict", 40)]
    n = 0
    for reason, count in rows:
        for _ in range(count):
            n += 1
            con.execute(
                "INSERT INTO staging.quarantine VALUES ('products', 'L1', 'p.csv', ?, ?, ?, ?, now())",
                [n, reason, reason, '{"product_id": "x", "price": "12,5,0"}'],
            )
    out = quality.check_quarantine_share(con, "products", share)
    assert out.passed is passes
    # duplicates of a staged key are reported, not counted: 10 of 100 rows
    assert out.metadata["share"] == 0.1 and out.metadata["duplicates_not_counted"] == {
        "duplicate_key_conflict": 40
    }
    if not passes:
        assert out.description.startswith("staging.products: 10.0 % of 100 raw rows quarantined (limit 5.0 %")
        assert "bad_type:price (7), missing_required:product_id (3)" in out.description
        assert 'file p.csv row 1: bad_type:price; values {"price": "12,5,0"}' in out.description


def test_a_custom_dagster_home_without_pools_is_refused_with_a_clear_message(tmp_path, monkeypatch):
    from ecom_pipeline.config import REPO_DAGSTER_HOME, missing_pool_limits

    assert missing_pool_limits(REPO_DAGSTER_HOME) is None
    assert missing_pool_limits("") is None  # no instance directory: ephemeral instances
    empty = tmp_path / "home"
    empty.mkdir()
    assert "has no dagster.yaml" in missing_pool_limits(empty)
    (empty / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    problem = missing_pool_limits(empty)
    assert "sets no concurrency.pools.default_limit" in problem and "ECOM_ALLOW_NO_POOLS=1" in problem
    # loading the code location (what dagster dev / make demo do) refuses, naming the fix
    env = {k: v for k, v in os.environ.items() if k != "ECOM_ALLOW_NO_POOLS"}
    env["DAGSTER_HOME"] = str(empty)
    proc = subprocess.run(
        [sys.executable, "-c", "import ecom_pipeline.definitions"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode != 0 and "sets no concurrency.pools.default_limit" in proc.stderr
    assert str(REPO_DAGSTER_HOME / "dagster.yaml") in proc.stderr
