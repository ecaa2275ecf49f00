"""Idempotency: running the same work again, or an overlapping backfill, leaves the same warehouse.

Compared with ``table_fingerprint`` (row count + order-independent content hash).  What may differ between
two runs is exactly ``PER_RUN_COLUMNS`` (who/when: run ids, load ids, timestamps of the run) and the load
history ``meta.load_log`` (one row per load by design); the tests also check that these *do* differ, so
an exclusion cannot hide a run that did not happen.
"""

import hashlib
import os
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from ecom_pipeline.automation.inbox import INBOX_TABLE, inbox_deliveries
from ecom_pipeline.resources import SourceResource, WarehouseResource
from ecom_pipeline.resources.paths import PathsResource
from ecom_pipeline.warehouse.tables import PER_RUN_COLUMNS, table_fingerprint, warehouse_fingerprints
from ecom_pipeline_tests.reliability.concurrent_worker import fast_run_config

DAYS = [f"2024-05-0{d}" for d in range(1, 6)]


# ------------------------------------------------------------------------------------------------ inbox


def _archive(root: Path) -> None:
    """Five delivery days already moved to processed/<day>/ by the sensor; files overlap across days."""
    deliveries = {  # day -> [(archived name, content, mtime offset)]
        "2024-05-01": [
            ("orders_2024-05-01.csv", "order_id\no1\n", 0),
            ("customers_2024-05-01.csv", "c\nc1\n", 0),
        ],
        "2024-05-02": [
            ("orders_2024-05-02.csv", "order_id\no1\no2\n", 0),
            # a second delivery of products the same day (the sensor's ~sha copy name): newer wins
            ("products_2024-05-02.csv", "p\np-old\n", 0),
            ("products_2024-05-02~0123abcd.csv", "p\np-new\n", 60),
        ],
        "2024-05-03": [("customers_2024-05-03.csv", "c\nc1\nc2\n", 0)],
        "2024-05-04": [("orders_2024-05-04.csv", "order_id\no1\no2\no3\n", 0)],
        "2024-05-05": [("customers_2024-05-05.csv", "c\nc1\nc2\nc3\n", 0)],
    }
    base = 1_714_521_600  # 2024-05-01T00:00Z
    for i, (day, files) in enumerate(deliveries.items()):
        folder = root / "inbox" / "processed" / day
        folder.mkdir(parents=True)
        for name, content, offset in files:
            (folder / name).write_text(content)
            t = base + i * 86400 + 3600 + offset
            os.utime(folder / name, (t, t))


def _inbox_state(root: Path) -> dict:
    """What the inbox partitions produce: the landing folder's files and the deliveries table."""
    landing = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root / "landing").iterdir())
    }
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    try:
        deliveries = table_fingerprint(con, INBOX_TABLE, PER_RUN_COLUMNS)
        dup = con.execute(
            f"SELECT count(*) FROM (SELECT day, file FROM {INBOX_TABLE} GROUP BY ALL HAVING count(*) > 1)"
        ).fetchall()[0][0]
        run_ids = {r[0] for r in con.execute(f"SELECT DISTINCT run_id FROM {INBOX_TABLE}").fetchall()}
    finally:
        con.close()
    return {"landing": landing, "deliveries": deliveries, "duplicated_rows": dup, "run_ids": run_ids}


def _run_days(root: Path, instance: dg.DagsterInstance, days: list[str]) -> list[str]:
    resources = {
        "source": SourceResource(data_root=str(root)),
        "paths": PathsResource(data_root=str(root)),
        "warehouse": WarehouseResource(path=str(root / "warehouse.duckdb")),
    }
    run_ids = []
    for day in days:
        result = dg.materialize([inbox_deliveries], partition_key=day, resources=resources, instance=instance)
        assert result.success, day
        run_ids.append(result.run_id)
    return run_ids


def test_same_inbox_partition_twice_gives_identical_tables_and_landing(tmp_path):
    _archive(tmp_path)
    with dg.DagsterInstance.ephemeral() as instance:
        _run_days(tmp_path, instance, ["2024-05-02"])
        first = _inbox_state(tmp_path)
        [second_run] = _run_days(tmp_path, instance, ["2024-05-02"])
        second = _inbox_state(tmp_path)
    assert first["deliveries"] == second["deliveries"] and first["deliveries"][0] == 3
    assert first["landing"] == second["landing"]
    assert (tmp_path / "landing" / "products.csv").read_text() == "p\np-new\n"  # newest of the day
    assert second["duplicated_rows"] == 0
    assert second["run_ids"] == {second_run} != first["run_ids"]  # the excluded column really changed


def test_overlapping_backfills_equal_one_backfill_whatever_the_order(tmp_path):
    overlapping, single = tmp_path / "overlapping", tmp_path / "single"
    _archive(overlapping)
    _archive(single)
    with dg.DagsterInstance.ephemeral() as instance:
        _run_days(overlapping, instance, DAYS[0:3])  # backfill 1-3 ...
        _run_days(overlapping, instance, DAYS[1:5])  # ... then 2-5
        _run_days(single, instance, DAYS)  # one backfill 1-5
        a, b = _inbox_state(overlapping), _inbox_state(single)
        assert a["landing"] == b["landing"]
        assert a["deliveries"] == b["deliveries"] and a["deliveries"][0] == 8
        assert a["duplicated_rows"] == b["duplicated_rows"] == 0
        # the newest delivery of each file is in landing: orders of day 4, customers of day 5
        assert (overlapping / "landing" / "orders.csv").read_text() == "order_id\no1\no2\no3\n"
        assert (overlapping / "landing" / "customers.csv").read_text() == "c\nc1\nc2\nc3\n"

        # re-running an old day after newer ones does not bring its older files back into landing
        _run_days(overlapping, instance, [DAYS[0], DAYS[1]])
        again = _inbox_state(overlapping)
    assert again["landing"] == b["landing"] and again["deliveries"] == b["deliveries"]


# ------------------------------------------------------------------------- full reload and features

MINILM = {"ops": {"features__review_text_embeddings": {"config": {"text_encoder": "all-minilm-l6-v2"}}}}


def _snapshot(warehouse: Path, schemas: tuple[str, ...]) -> dict:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return warehouse_fingerprints(con, schemas, PER_RUN_COLUMNS, exclude_tables={"meta.load_log"})
    finally:
        con.close()


@pytest.fixture(scope="module")
def repeated_runs(tmp_path_factory):
    """ingest -> features (+ incremental review embeddings) -> ingest again -> features again, one
    warehouse."""
    from ecom_pipeline.assets.embeddings import review_text_embeddings
    from ecom_pipeline.config import Settings
    from ecom_pipeline.definitions import build_definitions
    from ecom_pipeline.resources import build_resources

    root = tmp_path_factory.mktemp("idem") / "data"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ECOM_DATA_ROOT", str(root))
        for var in (
            "ECOM_WAREHOUSE",
            "MLFLOW_TRACKING_URI",
            "ECOM_PSEUDONYM_KEY",
            "ECOM_DATA_DIR",
            "ECOM_MAPPING",
            "ECOM_ENV",
            "ECOM_DUCKDB_MEMORY_LIMIT",
        ):
            mp.delenv(var, raising=False)
        mp.setenv("ECOM_DATA_SOURCE", "synthetic")
        mp.setenv("ECOM_SYNTHETIC_ORDERS", "300")
        settings = Settings.from_env()
        defs = build_definitions(settings)
        resources = build_resources(settings)
        out = {"warehouse": settings.warehouse, "ingest": [], "features": [], "run_ids": []}
        with dg.DagsterInstance.ephemeral() as instance:
            for _ in range(2):
                ingest = defs.resolve_job_def("ingest").execute_in_process(instance=instance)
                out["run_ids"].append(ingest.run_id)
                out["ingest"].append(_snapshot(settings.warehouse, ("raw", "staging", "meta")))
                features = defs.resolve_job_def("features")
                assert features.execute_in_process(
                    instance=instance, run_config=fast_run_config(features)
                ).success
                # the incremental review embeddings again (in the features job too when it selects them)
                emb = dg.materialize(
                    [review_text_embeddings],
                    instance=instance,
                    run_config=MINILM,
                    resources={k: resources[k] for k in ("warehouse", "compute", "source", "paths")},
                )
                out["encoded"] = [
                    m.metadata["encoded_this_run"].value
                    for m in emb.asset_materializations_for_node("features__review_text_embeddings")
                ]
                con = duckdb.connect(str(settings.warehouse), read_only=True)
                out["embeddings_exact"] = out.get("embeddings_exact", []) + [
                    table_fingerprint(con, "features.review_text_embeddings")
                ]
                out["load_log"] = con.execute(
                    "SELECT count(*), count(DISTINCT (load_id, layer, table_name)) FROM meta.load_log"
                ).fetchall()[0]
                con.close()
                out["features"].append(_snapshot(settings.warehouse, ("features",)))
    return out


@pytest.mark.slow
def test_ingest_twice_on_the_same_source_gives_identical_raw_and_staging(repeated_runs):
    first, second = repeated_runs["ingest"]
    assert any(t.startswith("staging.") for t in first) and "staging.quarantine" in first
    assert first == second, {t: (first[t], second.get(t)) for t in first if first[t] != second.get(t)}
    assert first["staging.orders"][0] > 0 and first["staging.quarantine"][0] > 0
    # what the comparison left out did change: the second load's rows carry the second run's id
    con = duckdb.connect(str(repeated_runs["warehouse"]), read_only=True)
    try:
        assert con.execute("SELECT DISTINCT _load_id FROM staging.orders").fetchall() == [
            (repeated_runs["run_ids"][1],)
        ]
    finally:
        con.close()
    # the load log is the one history that grows: one row per (load, layer, table), none repeated
    rows, distinct = repeated_runs["load_log"]
    assert (
        rows
        == distinct
        == 2 * sum(1 for t in first if t.startswith(("raw.", "staging.")) and t != "staging.quarantine")
    )


@pytest.mark.slow
def test_features_twice_give_identical_feature_tables(repeated_runs):
    first, second = repeated_runs["features"]
    assert {"features.daily_series", "features.region_embeddings", "features.review_text_embeddings"} <= set(
        first
    )
    # empty by design on the synthetic shop: no bad images, and no product videos at all
    maybe_empty = {
        "features.image_quarantine",
        "features.product_video_embeddings",
        "features.video_quarantine",
    }
    assert all(rows > 0 for t, (rows, _) in first.items() if t not in maybe_empty), first
    # region_embeddings is a GCN: identical because its training seeds torch and numpy (seed=0)
    assert first == second, {t: (first[t], second.get(t)) for t in first if first[t] != second.get(t)}
    # incremental: the last run re-encoded nothing, so even embedded_at is unchanged
    assert repeated_runs["encoded"] == [0]
    assert repeated_runs["embeddings_exact"][0] == repeated_runs["embeddings_exact"][1]
