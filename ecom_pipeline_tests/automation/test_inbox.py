import json
import os
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from ecom_pipeline.automation import inbox as inbox_mod
from ecom_pipeline.automation.inbox import (
    delivery_day,
    inbox_deliveries,
    inbox_ingest_job,
    inbox_sensor,
    ingest_after_inbox,
    landing_name,
    safe_inbox_path,
    validate_name,
)
from ecom_pipeline.resources import SourceResource, WarehouseResource
from ecom_pipeline.resources.paths import PathsResource
from ecom_pipeline_tests.datasets import OLIST_DIR, requires_olist

OLD = time.time() - 3600  # files older than the settle time
# a file-based source the sensor accepts deliveries for: orders.csv and customers.csv
MAPPING = """\
version: 1
tables:
  orders:
    file: orders.csv
    columns: {order_id: order_id, customer_id: customer_id, purchased_at: purchased_at}
  customers:
    file: customers.csv
    columns: {customer_id: customer_id}
"""


def _orders(*ids: str) -> bytes:
    return b"order_id,customer_id,purchased_at\n" + b"".join(f"{i},c1,2024-05-01\n".encode() for i in ids)


def _drop(inbox: Path, name: str, content: bytes = b"order_id,status\no1,delivered\n", mtime=OLD) -> Path:
    inbox.mkdir(parents=True, exist_ok=True)
    path = inbox / name
    path.write_bytes(content)
    os.utime(path, (mtime, mtime))
    return path


def _ctx(root, cursor=None, instance=None, source=None):
    if source is None:
        (root / "mapping.yaml").write_text(MAPPING)
        source = SourceResource(kind="mapped", mapping=str(root / "mapping.yaml"), data_root=str(root))
    return dg.build_sensor_context(
        cursor=cursor,
        instance=instance,
        resources={"source": source, "paths": PathsResource(data_root=str(root))},
    )


@pytest.mark.parametrize(
    "name",
    [
        "../orders.csv",
        "a/b.csv",
        "a\\b.csv",
        "..",
        ".hidden.csv",
        "orders.exe",
        "or\nders.csv",
        "x..csv",
        "ordérs.csv",
        "",
    ],
)
def test_bad_names_are_refused(name):
    assert validate_name(name) is not None


def test_good_names_days_and_landing_names():
    assert validate_name("olist_orders_dataset.csv") is None
    assert validate_name("orders_2024-05-01.csv.gz") is None
    assert delivery_day("orders_2024-05-01.csv", OLD) == "2024-05-01"
    assert delivery_day("orders_20240502.parquet", OLD) == "2024-05-02"
    assert delivery_day("orders_2024-13-45.csv", 0.0) == "1970-01-01"  # invalid token: the file's mtime
    assert landing_name("orders_2024-05-01.csv.gz") == "orders.csv.gz"
    assert landing_name("olist_orders_dataset~0123abcd.csv") == "olist_orders_dataset.csv"


def test_safe_inbox_path_refuses_symlinks_and_escapes(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (tmp_path / "secret.csv").write_text("x")
    (inbox / "link.csv").symlink_to(tmp_path / "secret.csv")
    with pytest.raises(ValueError, match="symlink"):
        safe_inbox_path(inbox, "link.csv")
    with pytest.raises(ValueError, match="traversal"):
        safe_inbox_path(inbox, "../secret.csv")
    assert safe_inbox_path(inbox, "orders.csv") == inbox / "orders.csv"


def test_sensor_launches_one_run_per_delivery_day_and_moves_files(tmp_path):
    inbox = tmp_path / "inbox"
    _drop(inbox, "orders_2024-05-01.csv", _orders("o1"))
    _drop(inbox, "customers_2024-05-01.csv", b"customer_id\nc2\n")
    _drop(inbox, "orders_2024-05-02.csv", _orders("o3"))
    result = inbox_sensor(_ctx(tmp_path))
    assert isinstance(result, dg.SensorResult)
    by_day = {r.partition_key: r for r in result.run_requests}
    assert set(by_day) == {"2024-05-01", "2024-05-02"}
    assert by_day["2024-05-01"].tags["ecom/inbox_files"] == "customers_2024-05-01.csv,orders_2024-05-01.csv"
    assert by_day["2024-05-01"].run_key.startswith("inbox:2024-05-01:")
    assert sorted(p.name for p in (inbox / "processed" / "2024-05-01").iterdir()) == [
        "customers_2024-05-01.csv",
        "orders_2024-05-01.csv",
    ]
    assert not list(inbox.glob("*.csv"))  # moved aside
    assert len(json.loads(result.cursor)["hashes"]) == 3

    # nothing new: no run, cursor kept
    quiet = inbox_sensor(_ctx(tmp_path, cursor=result.cursor))
    assert (
        not quiet.run_requests and quiet.skip_reason and json.loads(quiet.cursor) == json.loads(result.cursor)
    )

    # the same content delivered again under another name: a duplicate, no run
    _drop(inbox, "orders_2024-05-09.csv", _orders("o1"))
    dup = inbox_sensor(_ctx(tmp_path, cursor=result.cursor))
    assert not dup.run_requests and "1 duplicate" in dup.skip_reason.skip_message
    assert (inbox / "duplicates" / "orders_2024-05-09.csv").exists()


def test_sensor_refuses_symlinks_bad_names_and_waits_for_files_being_written(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    outside = tmp_path / "outside.csv"
    outside.write_text("precious\n")
    (inbox / "orders.csv").symlink_to(outside)
    _drop(inbox, "orders.exe")
    _drop(inbox, "empty.csv", b"")
    _drop(inbox, "fresh.csv", mtime=time.time())  # still being copied
    _drop(inbox, "upload.csv.part")
    result = inbox_sensor(_ctx(tmp_path))
    assert not result.run_requests
    assert "3 rejected" in result.skip_reason.skip_message
    assert "2 still being written" in result.skip_reason.skip_message
    assert outside.read_text() == "precious\n"  # the link's target is never touched
    rejected = inbox / "rejected"
    assert (rejected / "orders.csv").is_symlink()
    assert "symlink" in (rejected / "orders.csv.reason").read_text()
    assert (inbox / "fresh.csv").exists() and (inbox / "upload.csv.part").exists()
    assert json.loads(result.cursor)["hashes"] == {}


def test_partition_publishes_to_landing_and_records_deliveries(tmp_path):
    root = tmp_path
    day = root / "inbox" / "processed" / "2024-05-01"
    _drop(day, "orders_2024-05-01.csv", b"order_id\no1\n", mtime=OLD)
    _drop(day, "orders_2024-05-01~0123abcd.csv", b"order_id\no2\n", mtime=OLD + 10)  # later delivery wins
    wh = root / "w.duckdb"
    resources = {
        "source": SourceResource(data_root=str(root)),
        "paths": PathsResource(data_root=str(root)),
        "warehouse": WarehouseResource(path=str(wh)),
    }
    res = dg.materialize([inbox_deliveries], partition_key="2024-05-01", resources=resources)
    assert res.success
    assert (root / "landing" / "orders.csv").read_bytes() == b"order_id\no2\n"
    # re-running (a backfill) replaces the day's rows instead of duplicating them; an empty day succeeds
    assert dg.materialize([inbox_deliveries], partition_key="2024-05-01", resources=resources).success
    empty = dg.materialize([inbox_deliveries], partition_key="2024-05-03", resources=resources)
    assert empty.success
    mats = empty.asset_materializations_for_node("inbox__deliveries")
    assert mats[0].metadata["files"].value == 0
    con = duckdb.connect(str(wh), read_only=True)
    assert (
        con.execute("SELECT count(*) FROM meta.inbox_deliveries WHERE day = '2024-05-01'").fetchone()[0] == 2
    )
    con.close()


def test_ingest_follows_a_successful_inbox_run(tmp_path):
    defs = dg.Definitions(
        assets=[inbox_deliveries],
        jobs=[inbox_ingest_job],
        resources={
            "source": SourceResource(data_root=str(tmp_path)),
            "paths": PathsResource(data_root=str(tmp_path)),
            "warehouse": WarehouseResource(path=str(tmp_path / "w.duckdb")),
        },
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("inbox_ingest").execute_in_process(
            instance=instance, partition_key="2024-05-01"
        )
        ctx = dg.build_run_status_sensor_context(
            sensor_name="ingest_after_inbox",
            dagster_event=result.get_run_success_event(),
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            resources={
                "source": SourceResource(kind="olist", data_root=str(tmp_path)),
                "paths": PathsResource(data_root=str(tmp_path)),
            },
        )
        request = ingest_after_inbox(ctx)
        assert request.run_key == f"ingest-after-inbox:{result.run_id}"
        assert request.tags["ecom/inbox_day"] == "2024-05-01"
        config = request.run_config["resources"]["source"]["config"]
        assert config["data_dir"] == str(tmp_path / "landing")
        assert config["kind"] == "olist"  # the whole source config: run config replaces, it does not merge

        other = dg.materialize(
            [inbox_deliveries],
            instance=instance,
            partition_key="2024-05-01",
            resources={
                "source": SourceResource(data_root=str(tmp_path)),
                "paths": PathsResource(data_root=str(tmp_path)),
                "warehouse": WarehouseResource(path=str(tmp_path / "w.duckdb")),
            },
        )
        ctx2 = dg.build_run_status_sensor_context(
            sensor_name="ingest_after_inbox",
            dagster_event=other.get_run_success_event(),
            dagster_instance=instance,
            dagster_run=other.dagster_run,
            resources={
                "source": SourceResource(data_root=str(tmp_path)),
                "paths": PathsResource(data_root=str(tmp_path)),
            },
        )
        assert isinstance(ingest_after_inbox(ctx2), dg.SkipReason)  # not the inbox_ingest job


def test_settle_time_default_is_positive():
    assert inbox_mod.settle_seconds() > 0


def test_a_source_that_takes_no_files_leaves_the_inbox_alone_and_says_why(tmp_path):
    dropped = _drop(tmp_path / "inbox", "orders_2024-05-01.csv", _orders("o1"))
    result = inbox_sensor(_ctx(tmp_path, source=SourceResource(kind="synthetic", data_root=str(tmp_path))))
    assert not result.run_requests
    assert "'synthetic' takes no files" in result.skip_reason.skip_message
    assert "1 file(s) left untouched" in result.skip_reason.skip_message
    assert dropped.exists() and not (tmp_path / "inbox" / "processed").exists()


ONLINE_EVENTS = (
    b"event_id,ts,customer_id,session_id,event_type,product_id\ne1,2024-05-01 10:00:00,c1,s1,view,p1\n"
)


@pytest.mark.parametrize("kind", ["synthetic", "olist"])
def test_the_serving_apps_session_events_are_archived_whatever_the_source(tmp_path, kind):
    """Every ingest reads archived online-event files, so the sensor archives them for any source (a source
    that takes no files still leaves delivered files alone); a broken one is rejected with a reason."""
    inbox = tmp_path / "inbox"
    other = _drop(inbox, "orders_2024-05-01.csv", _orders("o1"))
    _drop(inbox, "online_events_2024-05-01_1_000001.csv", ONLINE_EVENTS)
    _drop(inbox, "online_events_2024-05-01_1_000002.csv", b"what,ever\n1,2\n")
    result = inbox_sensor(_ctx(tmp_path, source=SourceResource(kind=kind, data_root=str(tmp_path))))
    assert [r.partition_key for r in result.run_requests] == ["2024-05-01"]
    assert (inbox / "processed" / "2024-05-01" / "online_events_2024-05-01_1_000001.csv").is_file()
    reasons = list((inbox / "rejected").glob("*.reason"))
    assert len(reasons) == (1 if kind == "synthetic" else 2)
    assert any("online_events_2024-05-01_1_000002.csv" in r.read_text() for r in reasons)
    if kind == "synthetic":
        assert other.exists()


def test_olist_takes_only_its_own_file_names_and_headers(tmp_path):
    source = SourceResource(kind="olist", data_root=str(tmp_path))
    inbox = tmp_path / "inbox"
    _drop(inbox, "orders_2024-05-01.csv", _orders("o1"))  # the name the old docs showed: not an Olist file
    _drop(inbox, "olist_sellers_dataset_2024-05-01.csv", b"seller_id,seller_city\ns1,Sao Paulo\n")
    _drop(
        inbox,
        "olist_sellers_dataset_2024-05-02.csv",
        b"seller_id,seller_zip_code_prefix,seller_city,seller_state\ns1,01001,sao paulo,SP\n",
    )
    result = inbox_sensor(_ctx(tmp_path, source=source))
    assert [r.partition_key for r in result.run_requests] == ["2024-05-02"]
    assert (
        "reads no file called 'orders.csv'"
        in (inbox / "rejected" / "orders_2024-05-01.csv.reason").read_text()
    )
    reason = (inbox / "rejected" / "olist_sellers_dataset_2024-05-01.csv.reason").read_text()
    assert "seller_zip_code_prefix" in reason


@requires_olist
def test_olist_columns_the_inbox_expects_are_in_the_real_olist_files():
    for stem in inbox_mod.OLIST_COLUMNS:
        assert inbox_mod.check_layout(OLIST_DIR / f"{stem}.csv.gz", f"{stem}.csv.gz", "olist") is None, stem


def test_garbage_is_rejected_the_good_delivery_lands_and_ingests_and_the_previous_landing_survives(
    tmp_path, monkeypatch
):
    """Under the mapped source of the docs' example: a garbage delivery never replaces the landing file;
    the good one published next is what the ingest (with the run config ingest_after_inbox asks for) reads."""
    from ecom_pipeline.config import REPO_ROOT
    from ecom_pipeline.definitions import build_definitions

    mapping = REPO_ROOT / "docs" / "examples" / "retail_orders.yaml"
    example = (REPO_ROOT / "docs" / "examples" / "retail_orders.csv").read_bytes().splitlines(keepends=True)
    first, second = b"".join(example[:4]), b"".join(example[:12])  # header + 3 lines, header + 11 lines
    monkeypatch.setenv("ECOM_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("ECOM_DATA_SOURCE", "mapped")
    monkeypatch.setenv("ECOM_MAPPING", str(mapping))
    for var in ("ECOM_DATA_DIR", "ECOM_WAREHOUSE"):
        monkeypatch.delenv(var, raising=False)
    defs = build_definitions()
    source = SourceResource(kind="mapped", mapping=str(mapping), data_root=str(tmp_path))
    resources = {
        "source": source,
        "paths": PathsResource(data_root=str(tmp_path)),
        "warehouse": WarehouseResource(path=str(tmp_path / "warehouse.duckdb")),
    }
    inbox, landing = tmp_path / "inbox", tmp_path / "landing" / "retail_orders.csv"

    _drop(inbox, "retail_orders_2024-05-01.csv", first)
    tick = inbox_sensor(_ctx(tmp_path, source=source))
    assert [r.partition_key for r in tick.run_requests] == ["2024-05-01"]
    assert dg.materialize([inbox_deliveries], partition_key="2024-05-01", resources=resources).success
    assert landing.read_bytes() == first

    _drop(inbox, "retail_orders_2024-05-02.csv", b"\x89PNG\r\n\x1a\n\x00\x00garbage\xff\xfe" * 50)
    _drop(inbox, "retail_orders_2024-05-03.csv", second)
    tick = inbox_sensor(_ctx(tmp_path, cursor=tick.cursor, source=source))
    assert [r.partition_key for r in tick.run_requests] == ["2024-05-03"]  # no run for the garbage
    reason = (inbox / "rejected" / "retail_orders_2024-05-02.csv.reason").read_text()
    assert "retail_orders_2024-05-02.csv" in reason and ("Order ID" in reason or "unreadable" in reason)
    assert not (inbox / "processed" / "2024-05-02").exists()
    assert landing.read_bytes() == first  # the bad delivery replaced nothing

    with dg.DagsterInstance.ephemeral() as instance:
        inbox_run = defs.resolve_job_def("inbox_ingest").execute_in_process(
            instance=instance, partition_key="2024-05-03"
        )
        assert inbox_run.success and landing.read_bytes() == second
        request = ingest_after_inbox(
            dg.build_run_status_sensor_context(
                sensor_name="ingest_after_inbox",
                dagster_event=inbox_run.get_run_success_event(),
                dagster_instance=instance,
                dagster_run=inbox_run.dagster_run,
                resources={"source": source, "paths": PathsResource(data_root=str(tmp_path))},
            )
        )
        ingest = defs.resolve_job_def("ingest").execute_in_process(
            instance=instance, run_config=request.run_config
        )
        assert ingest.success
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    orders = {line.split(b",")[1] for line in example[1:12]}
    assert con.execute("SELECT count(*) FROM staging.orders").fetchone()[0] == len(orders)
    con.close()
