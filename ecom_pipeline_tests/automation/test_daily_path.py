"""The daily path as Dagster runs: ``daily_ingest`` stages only the delivery days not staged yet, its success
launches ``daily_refresh`` (features_after_daily_ingest), and the interactions it refreshes are recomputed
for that day's customers only; a day already staged is neither read nor recomputed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from ecom_pipeline.assets.recommender import category_interactions, interactions
from ecom_pipeline.automation.inbox import new_partitions
from ecom_pipeline.automation.jobs import (
    daily_ingest_job,
    daily_refresh_job,
    features_after_daily_ingest,
    full_refresh_job,
)
from ecom_pipeline.canonical import TABLE_ORDER, TABLES
from ecom_pipeline.incremental.interactions import refresh_interactions
from ecom_pipeline.ml.recsys.interactions import DEFAULT_WEIGHTS
from ecom_pipeline.resources import PrivacyResource, SourceResource, WarehouseResource
from ecom_pipeline.resources.paths import PathsResource
from ecom_pipeline.warehouse.tables import table_fingerprint
from ecom_pipeline_tests.incremental.world import day_partitions

DAY1, DAY2 = "2024-05-01", "2024-05-02"


def _mapping(root: Path) -> Path:
    doc = {
        "version": 1,
        "timezone": "UTC",
        "geo_bounds": "brazil",
        "timestamp_formats": ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d"],
        "tables": {
            t: {"file": f"{t}.csv", "columns": {c: c for c in TABLES[t].column_names}} for t in TABLE_ORDER
        },
    }
    path = root / "mapping.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _deliver(root: Path, day: str, tables: dict) -> None:
    """One day's files in the inbox archive, as inbox_sensor leaves them (processed/<day>/)."""
    folder = root / "inbox" / "processed" / day
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in tables.items():
        if len(frame):
            frame.to_csv(folder / f"{t}_{day}.csv", index=False)
            stamp = time.time()
            os.utime(folder / f"{t}_{day}.csv", (stamp, stamp))


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    history, new_day, _source = day_partitions(n_orders=600, days=30)
    root = tmp_path_factory.mktemp("daily_path")
    mapping = _mapping(root)
    resources = {
        "source": SourceResource(kind="mapped", mapping=str(mapping), data_root=str(root)),
        "paths": PathsResource(data_root=str(root)),
        "privacy": PrivacyResource(pseudonym_key="test-key"),
        "warehouse": WarehouseResource(path=str(root / "warehouse.duckdb")),
    }
    defs = dg.Definitions(
        assets=[new_partitions, interactions, category_interactions],
        jobs=[daily_ingest_job, daily_refresh_job, full_refresh_job],
        resources=resources,
    )
    return root, history, new_day, defs


def _meta(result, asset) -> dict:
    (mat,) = result.asset_materializations_for_node(asset.op.name)
    return {k: v.value for k, v in mat.metadata.items()}


def _run(defs, job: str, instance) -> dg.ExecuteInProcessResult:
    result = defs.resolve_job_def(job).execute_in_process(instance=instance)
    assert result.success
    return result


def _day_loads(root: Path) -> list[tuple]:
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    rows = con.execute(
        "SELECT table_name, partition_key, load_id, raw_rows FROM meta.partition_loads WHERE is_current "
        "ORDER BY 1, 2"
    ).fetchall()
    con.close()
    return rows


def test_a_daily_run_after_one_new_day_touches_only_that_day_and_its_customers(shop):
    root, history, new_day, defs = shop
    _deliver(root, DAY1, history)
    with dg.DagsterInstance.ephemeral() as instance:
        first = _run(defs, "daily_ingest", instance)
        assert _meta(first, new_partitions)["days_ingested"] == DAY1
        assert _meta(_run(defs, "daily_refresh", instance), interactions)["refresh"] == "full"  # first run
        loads_before = _day_loads(root)

        _deliver(root, DAY2, new_day)
        ingest = _run(defs, "daily_ingest", instance)
        meta = _meta(ingest, new_partitions)
        assert (meta["days_ingested"], meta["days_untouched"]) == (DAY2, 1)
        assert meta["new_rows"] > 0 and meta["changed_rows"] >= 1  # the day's rows and the late correction
        # day 1's raw loads are the ones of the first run (not reloaded); day 2 added one load per table
        loads_after = _day_loads(root)
        assert [r for r in loads_after if r[1] == DAY1] == loads_before
        assert {r[1] for r in loads_after} == {DAY1, DAY2}

        # the sensor turns the successful daily_ingest into a daily_refresh run
        ctx = dg.build_run_status_sensor_context(
            sensor_name=features_after_daily_ingest.name,
            dagster_event=ingest.get_run_success_event(),
            dagster_instance=instance,
            dagster_run=ingest.dagster_run,
        )
        request = features_after_daily_ingest(ctx)
        assert isinstance(request, dg.RunRequest) and request.run_key.endswith(ingest.run_id)
        assert features_after_daily_ingest.job_name == "daily_refresh"

        refresh = _run(defs, "daily_refresh", instance)
        inter = _meta(refresh, interactions)
        assert inter["refresh"] == "incremental", inter["refresh_reason"]
        # whom the day touched: its customers (new orders, events) and the late-corrected order's customer
        assert inter["recomputed_customers"] == meta["customers_with_new_activity"] > 0
        assert inter["untouched_rows"] > inter["changed_rows"] + inter["new_rows"] > 0
        assert _meta(refresh, category_interactions)["refresh"] == "incremental"

        # the same staging rebuilt in full gives the same table
        con = duckdb.connect(str(root / "warehouse.duckdb"))
        daily = table_fingerprint(con, "features.interactions")
        staging = table_fingerprint(con, "staging.orders")
        refresh_interactions(con, DEFAULT_WEIGHTS, mode="full")
        assert table_fingerprint(con, "features.interactions") == daily
        con.close()

        # nothing delivered since: nothing read, staging unchanged, nobody recomputed
        again = _meta(_run(defs, "daily_ingest", instance), new_partitions)
        assert (again["days_ingested"], again["days_untouched"], again["dagster/row_count"]) == ("none", 2, 0)
        con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
        assert table_fingerprint(con, "staging.orders") == staging
        con.close()
        quiet = _meta(_run(defs, "daily_refresh", instance), interactions)
        assert (quiet["refresh"], quiet["recomputed_customers"]) == ("incremental", 0)


def test_a_redelivered_day_is_staged_again_and_changes_nothing_new(shop, tmp_path):
    """A day whose archive changed (a file delivered again) is pending again; same rows: nothing changes."""
    root, _history, new_day, defs = shop
    if not (root / "warehouse.duckdb").exists():
        pytest.skip("runs after the daily-path test (module fixture)")
    _deliver(root, DAY2, {"orders": new_day["orders"]})  # same content, new file times
    with dg.DagsterInstance.ephemeral() as instance:
        meta = _meta(_run(defs, "daily_ingest", instance), new_partitions)
        assert meta["days_ingested"] == DAY2
        assert (meta["new_rows"], meta["changed_rows"]) == (0, 0)
        assert meta["customers_with_new_activity"] == 0


def test_the_daily_ingest_refuses_a_snapshot_source_with_the_full_refresh_named(tmp_path):
    result = dg.materialize(
        [new_partitions],
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
        resources={
            "source": SourceResource(kind="synthetic", data_root=str(tmp_path)),
            "paths": PathsResource(data_root=str(tmp_path)),
            "privacy": PrivacyResource(pseudonym_key="test-key"),
            "warehouse": WarehouseResource(path=str(tmp_path / "w.duckdb")),
        },
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "full_refresh" in failure.event_specific_data.error.message
