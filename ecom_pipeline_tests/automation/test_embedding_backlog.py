"""A cold start catches up by itself: while the capped review encoder reports a backlog,
``embedding_backlog_sensor`` requests ``embedding_backfill`` runs (real runs on a real instance) until every
review is embedded; it yields to other runs and does not relaunch a failed backfill."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
from dagster._core.test_utils import create_run_for_test

from ecom_pipeline.assets import embeddings as E
from ecom_pipeline.assets import video as V
from ecom_pipeline.automation import backlog as B
from ecom_pipeline.resources import ComputeResource, SourceResource, WarehouseResource
from ecom_pipeline.resources.paths import PathsResource

N_REVIEWS = 25


def _shop(db: Path) -> None:
    reviews = pd.DataFrame(
        {
            "review_id": [f"r{i}" for i in range(N_REVIEWS)],
            "product_id": "p1",
            "title": None,
            "text": [f"great parcel number {i}, arrived on time" for i in range(N_REVIEWS)],
            "created_at": pd.date_range("2024-01-01", periods=N_REVIEWS, freq="D"),
        }
    )
    products = pd.DataFrame({"product_id": ["p1"], "image_uri": [None]})
    con = duckdb.connect(str(db))
    con.execute("CREATE SCHEMA IF NOT EXISTS staging")
    con.register("r", reviews)
    con.register("p", products)
    con.execute("CREATE TABLE staging.reviews AS SELECT * FROM r")
    con.execute("CREATE TABLE staging.products AS SELECT * FROM p")
    con.execute("CREATE TABLE staging.order_items AS SELECT 'o1' order_id, 1 item_seq, 'p1' product_id")
    con.close()


@pytest.fixture
def shop(tmp_path, monkeypatch):
    db = tmp_path / "warehouse.duckdb"
    _shop(db)
    # a backfill run encodes 10 here (the real cap is 50k), so catching up takes several runs
    monkeypatch.setitem(B.BACKFILL_CAPS, B.REVIEW_TEXT, {"max_new_per_run_cpu": 10})
    defs = dg.Definitions(
        assets=[E.review_text_embeddings, E.product_image_embeddings, V.product_video_embeddings],
        jobs=[B.embedding_backfill_job],
        sensors=[B.embedding_backlog_sensor],
        resources={
            "warehouse": WarehouseResource(path=str(db)),
            "compute": ComputeResource(device="cpu", threads=2),
            "source": SourceResource(data_root=str(tmp_path)),
            "paths": PathsResource(data_root=str(tmp_path)),
        },
    )
    return db, defs, dg.DagsterInstance.ephemeral()


def _daily_run(defs, instance, cap: int, **config) -> None:
    """One run of the review encoder with a small cap (backlog included unless ``include_backlog=False``,
    which is what the daily_refresh job sets)."""
    config = {"ops": {"features__review_text_embeddings": {"config": {"max_new_per_run_cpu": cap, **config}}}}
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(
        run_config=config, instance=instance, asset_selection=[B.REVIEW_TEXT]
    ).success


def _embedded(db: Path) -> int:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT count(*) FROM features.review_text_embeddings").fetchone()[0]


def test_nothing_to_do_before_any_encoder_ran(shop):
    _db, _defs, instance = shop
    result = B.evaluate_backlog(instance)
    assert isinstance(result, dg.SkipReason) and "no capped encoder" in result.skip_message


def test_sensor_catches_up_the_backlog_run_by_run(shop):
    db, defs, instance = shop
    _daily_run(defs, instance, cap=4)
    assert _embedded(db) == 4
    backfill = defs.resolve_job_def("embedding_backfill")
    left, runs = [], 0
    while isinstance(request := B.evaluate_backlog(instance), dg.RunRequest):
        assert request.asset_selection == [B.REVIEW_TEXT]  # images and videos have no backlog
        left.append(json.loads(request.tags["ecom/backlog"])["review_text_embeddings"])
        result = backfill.execute_in_process(
            run_config=request.run_config,
            instance=instance,
            asset_selection=request.asset_selection,
            tags=request.tags,
        )
        assert result.success
        runs += 1
        assert runs <= 5, "the backlog does not shrink"
    assert left == [21, 11, 1]  # 25 - 4, then 10 per backfill run
    assert "no embedding backlog" in request.skip_message
    assert _embedded(db) == N_REVIEWS
    meta = instance.get_latest_materialization_event(B.REVIEW_TEXT).asset_materialization.metadata
    assert meta["backlog"].value == 0 and meta["coverage"].value == 1.0


def test_yields_to_other_runs_and_to_a_running_backfill(shop):
    _db, defs, instance = shop
    _daily_run(defs, instance, cap=4)
    run = create_run_for_test(instance, job_name="daily_refresh", status=dg.DagsterRunStatus.STARTED)
    result = B.evaluate_backlog(instance)
    assert isinstance(result, dg.SkipReason)
    assert (
        "waiting for daily_refresh" in result.skip_message
        and "review_text_embeddings 21" in result.skip_message
    )
    instance.report_run_canceled(run)
    create_run_for_test(instance, job_name="embedding_backfill", status=dg.DagsterRunStatus.STARTED)
    result = B.evaluate_backlog(instance)
    assert isinstance(result, dg.SkipReason) and "in progress" in result.skip_message


def test_a_failed_backfill_is_not_relaunched_until_the_encoder_materialises_again(shop):
    db, defs, instance = shop
    _daily_run(defs, instance, cap=4)
    request = B.evaluate_backlog(instance)
    broken = {"ops": {"features__review_text_embeddings": {"config": {"text_encoder": "no-such-model"}}}}
    failed = defs.resolve_job_def("embedding_backfill").execute_in_process(
        run_config=broken, instance=instance, asset_selection=request.asset_selection, raise_on_error=False
    )
    assert not failed.success
    result = B.evaluate_backlog(instance)
    assert isinstance(result, dg.SkipReason) and "failed" in result.skip_message
    _daily_run(defs, instance, cap=4)  # the daily run (or a fixed config) materialises the encoder again
    assert isinstance(B.evaluate_backlog(instance), dg.RunRequest)
    assert _embedded(db) == 8


def test_daily_refresh_encodes_the_days_reviews_and_leaves_the_history_to_the_backfill(shop):
    """In the daily_refresh job the encoder's include_backlog defaults to False: on a cold start (nothing
    embedded) the newest reviews up to the cap, then only reviews whose load arrived after its last run (a
    day's new reviews and corrections); the older pending reviews stay in the reported backlog for
    embedding_backfill."""
    from ecom_pipeline.automation.jobs import daily_refresh_job

    db, defs, instance = shop
    assert daily_refresh_job.name == E.DAILY_JOB  # where include_backlog defaults to False
    with duckdb.connect(str(db)) as con:  # load lineage as the partitioned ingest writes it: the history
        con.execute("ALTER TABLE staging.reviews ADD COLUMN _load_id VARCHAR DEFAULT 'history'")
        con.execute("CREATE SCHEMA meta")
        con.execute(
            "CREATE TABLE meta.partition_loads AS SELECT 'reviews' AS table_name, 'history' AS load_id, "
            "TIMESTAMP '2020-01-01' AS loaded_at"
        )
    _daily_run(defs, instance, cap=10, include_backlog=False)
    assert _embedded(db) == 10  # cold start: the 10 newest of 25
    with duckdb.connect(str(db)) as con:  # the next day's load: 2 new reviews and a corrected old one
        con.execute(
            "INSERT INTO staging.reviews (review_id, product_id, title, text, created_at, _load_id) "
            "SELECT 'n' || i, 'p1', NULL, 'new parcel ' || i, TIMESTAMP '2024-03-01' + INTERVAL (i) DAY, "
            "'day' FROM range(2) t(i)"
        )
        con.execute(
            "UPDATE staging.reviews SET text = 'box was damaged', _load_id = 'day' WHERE review_id = 'r0'"
        )
        con.execute(
            "INSERT INTO meta.partition_loads VALUES ('reviews', 'day', now()::TIMESTAMP + INTERVAL 1 MINUTE)"
        )
    # a run of the daily_refresh job, no include_backlog in its config: the job's default applies
    daily = dg.Definitions(
        assets=[E.review_text_embeddings],
        jobs=[dg.define_asset_job(E.DAILY_JOB, selection=[B.REVIEW_TEXT])],
        resources=defs.resources,
    ).resolve_job_def(E.DAILY_JOB)
    cap = {"ops": {"features__review_text_embeddings": {"config": {"max_new_per_run_cpu": 10}}}}
    assert daily.execute_in_process(run_config=cap, instance=instance).success
    with duckdb.connect(str(db), read_only=True) as con:
        ids = {r for (r,) in con.execute("SELECT review_id FROM features.review_text_embeddings").fetchall()}
    assert {"n0", "n1", "r0"} <= ids and len(ids) == 13  # the day's 3 (r0 is old but corrected), no history
    meta = instance.get_latest_materialization_event(B.REVIEW_TEXT).asset_materialization.metadata
    assert meta["encoded_this_run"].value == 3 and meta["backlog"].value == 14
    assert isinstance(B.evaluate_backlog(instance), dg.RunRequest)  # the sensor takes the 14 from here


def test_arrived_since_last_run_splits_new_from_history():
    from ecom_pipeline.ml.encoders.store import arrived_since_last_run

    pending = pd.DataFrame({"id": list("abcd")}, index=[3, 5, 7, 9])
    loaded = pd.Series(pd.to_datetime(["2024-01-01", "2024-01-03", None, "2024-01-05"]), index=pending.index)
    new, older = arrived_since_last_run(pending, loaded, pd.Timestamp("2024-01-02"))
    assert list(new["id"]) == ["b", "c", "d"] and older == 1  # an unknown load time counts as new
    new, older = arrived_since_last_run(pending, loaded, None)  # no earlier run: everything is new
    assert len(new) == 4 and older == 0
