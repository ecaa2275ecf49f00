"""The daily partitioned ingest as a real Dagster materialisation: a delivery day's files (inbox archive)
appended to raw and merged into staging by key; a later day's correction updates its order."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import duckdb
import yaml

from ecom_pipeline.automation.inbox import daily_partition_ingest, partition_staging_rebuild_job
from ecom_pipeline.resources import PrivacyResource, SourceResource, WarehouseResource
from ecom_pipeline.resources.paths import PathsResource
from ecom_pipeline.warehouse.tables import PER_RUN_COLUMNS, warehouse_fingerprints

MAPPING = {
    "version": 1,
    "tables": {
        "customers": {"file": "customers.csv", "columns": {"customer_id": "id", "city": "city"}},
        "orders": {
            "file": "orders.csv",
            "columns": {
                "order_id": "order",
                "customer_id": "customer",
                "status": "status",
                "purchased_at": "bought",
            },
        },
    },
}


def _deliver(root: Path, day: str, name: str, text: str) -> None:
    folder = root / "inbox" / "processed" / day
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    stamp = time.time()
    os.utime(path, (stamp, stamp))


def _materialize(root: Path, day: str, mapping: Path, kind: str = "mapped"):
    return dg.materialize(
        [daily_partition_ingest],
        partition_key=day,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
        resources={
            "source": SourceResource(kind=kind, mapping=str(mapping), data_root=str(root)),
            "paths": PathsResource(data_root=str(root)),
            "privacy": PrivacyResource(pseudonym_key="test-key"),
            "warehouse": WarehouseResource(path=str(root / "warehouse.duckdb")),
        },
    )


def test_two_days_then_a_redelivery(tmp_path):
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump(MAPPING))
    _deliver(tmp_path, "2024-05-01", "customers_2024-05-01.csv", "id,city\nc1,Recife\nc2,Natal\n")
    _deliver(
        tmp_path,
        "2024-05-01",
        "orders_2024-05-01.csv",
        "order,customer,status,bought\n"
        "o1,c1,shipped,2024-05-01 10:00:00\no2,c2,shipped,2024-05-01 11:00:00\n",
    )
    # day 2 brings only orders: a correction of o1 and a new order
    _deliver(
        tmp_path,
        "2024-05-02",
        "orders_2024-05-02.csv",
        "order,customer,status,bought\n"
        "o1,c1,delivered,2024-05-01 10:00:00\no3,c2,created,2024-05-02 09:00:00\n",
    )

    first = _materialize(tmp_path, "2024-05-01", mapping)
    assert first.success
    second = _materialize(tmp_path, "2024-05-02", mapping)
    assert second.success
    meta = second.asset_materializations_for_node(second.all_node_events[0].node_name)[0].metadata
    assert (meta["new_rows"].value, meta["changed_rows"].value, meta["untouched_rows"].value) == (1, 1, 0)
    assert meta["tables_delivered"].value == "orders"
    assert meta["customers_with_new_activity"].value == 2  # c1 (corrected o1) and c2 (new o3)
    again = _materialize(tmp_path, "2024-05-02", mapping)  # the same day re-delivered
    meta = again.asset_materializations_for_node(again.all_node_events[0].node_name)[0].metadata
    assert (meta["new_rows"].value, meta["changed_rows"].value, meta["untouched_rows"].value) == (0, 0, 2)

    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    assert con.execute("SELECT order_id, status FROM staging.orders ORDER BY 1").fetchall() == [
        ("o1", "delivered"),
        ("o2", "shipped"),
        ("o3", "created"),
    ]
    assert con.execute("SELECT count(*) FROM staging.change_log").fetchall()[0][0] == 1
    assert (
        con.execute("SELECT count(*) FROM raw.orders").fetchall()[0][0] == 4
    )  # 2 per day, re-delivery replaced
    daily = warehouse_fingerprints(con, ("staging",), PER_RUN_COLUMNS | {"changed_at"})
    con.close()
    rebuild = partition_staging_rebuild_job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        resources={
            "source": SourceResource(kind="mapped", mapping=str(mapping), data_root=str(tmp_path)),
            "paths": PathsResource(data_root=str(tmp_path)),
            "privacy": PrivacyResource(pseudonym_key="test-key"),
            "warehouse": WarehouseResource(path=str(tmp_path / "warehouse.duckdb")),
        },
    )
    assert rebuild.success
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    assert warehouse_fingerprints(con, ("staging",), PER_RUN_COLUMNS | {"changed_at"}) == daily


def test_other_sources_are_refused_with_a_reason(tmp_path):
    result = _materialize(tmp_path, "2024-05-01", tmp_path / "none.yaml", kind="synthetic")
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "mapped source" in str(failure.event_specific_data.error.message)


def test_a_day_without_files_is_a_clear_error(tmp_path):
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump(MAPPING))
    result = _materialize(tmp_path, "2024-05-03", mapping)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    error = failure.event_specific_data.error
    assert "none of the files" in error.message + str(error.cause and error.cause.message)


def test_sensor_requests_the_same_day_after_inbox_ingest_and_is_opt_in(data_root):
    from ecom_pipeline.automation.inbox import (
        daily_partition_after_inbox,
        daily_partition_ingest_job,
        inbox_deliveries,
    )
    from ecom_pipeline.config import Settings
    from ecom_pipeline.definitions import build_definitions

    assert daily_partition_after_inbox.default_status == dg.DefaultSensorStatus.STOPPED
    assert daily_partition_ingest_job.tags["ecom/reload"] == "warehouse"  # queued with the full reloads
    defs = build_definitions(Settings.from_env())
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("inbox_ingest").execute_in_process(
            instance=instance, partition_key="2024-05-01"
        )
        ctx = dg.build_run_status_sensor_context(
            sensor_name="daily_partition_after_inbox",
            dagster_event=result.get_run_success_event(),
            dagster_instance=instance,
            dagster_run=result.dagster_run,
        )
        request = daily_partition_after_inbox(ctx)
        # the daily path: daily_ingest stages every pending day (this one included), unpartitioned
        assert request.run_key.endswith(result.run_id) and request.tags["ecom/inbox_day"] == "2024-05-01"
        assert daily_partition_after_inbox.job_name == "daily_ingest"
        other = dg.materialize(
            [inbox_deliveries],
            instance=instance,
            partition_key="2024-05-01",
            resources={
                "source": SourceResource(data_root=str(data_root)),
                "paths": PathsResource(data_root=str(data_root)),
                "warehouse": WarehouseResource(path=str(Path(data_root) / "w.duckdb")),
            },
        )
        ctx = dg.build_run_status_sensor_context(
            sensor_name="daily_partition_after_inbox",
            dagster_event=other.get_run_success_event(),
            dagster_instance=instance,
            dagster_run=other.dagster_run,
        )
        assert isinstance(daily_partition_after_inbox(ctx), dg.SkipReason)  # not an inbox_ingest run
