"""The read-only snapshot: readers in other processes never hold up the pipeline."""

import subprocess
import sys
import time

import dagster as dg
import duckdb
import pytest

from ecom_pipeline.assets import ingest
from ecom_pipeline.assets.snapshot import SNAPSHOT_DEPS, SNAPSHOT_KEY, read_only_warehouse
from ecom_pipeline.resources import PrivacyResource, SourceResource, WarehouseResource
from ecom_pipeline.resources.paths import PathsResource
from ecom_pipeline.resources.warehouse import connect_with_retry, lock_wait_stats
from ecom_pipeline.snapshot import publish_snapshot

# holds a read-only connection on argv[1] until stdin closes, reporting the published_at it sees
READER = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
print(con.execute(sys.argv[2]).fetchall()[0][0], flush=True)
sys.stdin.read()
print(con.execute(sys.argv[2]).fetchall()[0][0], flush=True)
"""


def _reader(path, sql):
    proc = subprocess.Popen(
        [sys.executable, "-c", READER, str(path), sql],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    first = proc.stdout.readline().strip()
    return proc, first


def _resources(root, lock_timeout_s=300.0):
    return {
        "source": SourceResource(kind="synthetic", synthetic_orders=300, data_root=str(root)),
        "paths": PathsResource(data_root=str(root)),
        "privacy": PrivacyResource(pseudonym_key="snapshot-test-key-0123456789abcdef", data_root=str(root)),
        "warehouse": WarehouseResource(path=str(root / "wh.duckdb"), lock_timeout_s=lock_timeout_s),
    }


def _ingest(root, selection=None, **kw):
    assets = ingest.build().assets
    return dg.materialize(
        list(assets),
        resources=_resources(root, **kw),
        raise_on_error=False,
        selection=selection or dg.AssetSelection.groups("ingest"),
    )


def test_ingest_runs_while_a_reader_holds_the_snapshot(tmp_path):
    assert _ingest(tmp_path).success
    snap = tmp_path / "snapshot.duckdb"
    res = dg.materialize(
        [read_only_warehouse],
        resources=_resources(tmp_path),
        run_config={"ops": {"snapshot__read_only_warehouse": {"config": {"path": str(snap)}}}},
    )
    assert res.success
    tables = {
        t
        for (t,) in duckdb.connect(str(snap), read_only=True)
        .execute("SELECT table_schema || '.' || table_name FROM information_schema.tables")
        .fetchall()
    }
    assert {
        "staging.products",
        "staging.customer_regions",
        "serving.popular_items",
        "meta.snapshot_info",
    } <= tables
    assert not any(t.startswith(("raw.", "staging.orders", "staging.customers")) for t in tables)

    reader, first = _reader(snap, "SELECT published_at FROM meta.snapshot_info")
    try:
        waits = lock_wait_stats()["waits"]
        started = time.monotonic()
        assert _ingest(tmp_path).success  # the whole ingest while the reader holds the snapshot
        ingest_s = time.monotonic() - started
        assert lock_wait_stats()["waits"] == waits  # never waited for a lock
        again = publish_snapshot(
            tmp_path / "wh.duckdb", snap
        )  # a new publish swaps the file under the reader
        assert again.tables["serving.popular_items"] > 0
        out, _ = reader.communicate("", timeout=30)
    finally:
        reader.kill()
    assert out.strip() == first  # the reader kept the snapshot it opened, undisturbed
    newer = duckdb.connect(str(snap), read_only=True).execute("SELECT published_at FROM meta.snapshot_info")
    assert str(newer.fetchall()[0][0]) > first
    assert ingest_s < 120


def test_a_reader_on_the_warehouse_itself_does_block_the_ingest(tmp_path):
    """The control: the same reader on warehouse.duckdb makes the ingest's writes fail on the lock."""
    assert _ingest(tmp_path).success
    reader, _ = _reader(tmp_path / "wh.duckdb", "SELECT count(*) FROM staging.orders")
    warnings = []
    try:
        # one table is enough (each raw step retries twice, 5 s apart, before it fails)
        result = _ingest(tmp_path, selection=[dg.AssetKey(["raw", "regions"])], lock_timeout_s=1.0)
        # the waiting writer says who holds the lock (the run log gets the same line via the resource)
        with pytest.raises(duckdb.IOException, match=f"PID {reader.pid}"):
            connect_with_retry(tmp_path / "wh.duckdb", timeout_s=1.0, warn=warnings.append)
    finally:
        reader.kill()
    assert not result.success
    assert warnings and f"held by PID {reader.pid}" in warnings[0] and "snapshot" in warnings[0]


@pytest.mark.parametrize("group", ["serving", "reports"])
def test_snapshot_asset_runs_after_every_serving_and_reporting_asset(group):
    from ecom_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = {k for k in graph.get_all_asset_keys() if k.path[0] == group}
    assert keys and keys <= set(SNAPSHOT_DEPS)
    assert graph.get(SNAPSHOT_KEY).tags.get("ecom/stage") == "scoring"  # in the scoring job and full_pipeline
