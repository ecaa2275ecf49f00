import dagster as dg
import pytest

from ecom_pipeline.automation import jobs as jobs_mod
from ecom_pipeline.automation.partitions import INBOX_PARTITIONS

EXPECTED_JOBS = {
    "ingest",
    "inbox_ingest",
    "features",
    "daily_ingest",
    "daily_refresh",
    "full_refresh",
    "training",
    "scoring",
    "full_pipeline",
}


@pytest.fixture(scope="module")
def defs():
    from ecom_pipeline.definitions import defs

    return defs


def test_every_job_resolves_over_the_full_definitions(defs):
    repo = defs.get_repository_def()
    names = {j.name for j in repo.get_all_jobs()}
    assert EXPECTED_JOBS <= names
    for name in EXPECTED_JOBS:
        job = defs.resolve_job_def(name)
        assert job.name == name
    ingest = defs.resolve_job_def("ingest").asset_layer.selected_asset_keys
    assert dg.AssetKey(["staging", "orders"]) in ingest and dg.AssetKey(["raw", "orders"]) in ingest
    # the demo job must be runnable without a partition key
    full = defs.resolve_job_def("full_pipeline")
    assert dg.AssetKey(["inbox", "deliveries"]) not in full.asset_layer.selected_asset_keys
    assert defs.resolve_job_def("inbox_ingest").partitions_def == INBOX_PARTITIONS


def test_schedules_and_sensors_target_the_right_jobs(defs):
    schedules = {s.name: s for s in defs.schedules}
    assert schedules["daily_ingest_features"].cron_schedule == "0 2 * * *"
    # the daily path is incremental: new days staged, then (sensor) the features; a snapshot source's daily
    # schedule is the full rebuild
    assert schedules["daily_ingest_features"].job_name == "daily_ingest"
    assert schedules["daily_full_refresh"].job_name == "full_refresh"
    assert schedules["daily_full_refresh"].cron_schedule == "0 2 * * *"
    assert schedules["weekly_retraining"].job_name == "training"
    assert schedules["weekly_retraining"].cron_schedule == "0 3 * * 0"
    assert schedules["daily_scoring"].job_name == "scoring"
    sensors = {s.name: s for s in defs.sensors}
    assert {"inbox_sensor", "ingest_after_inbox", "drift_retraining", "record_run_failures"} <= set(sensors)
    assert sensors["drift_retraining"].job_name == "training"
    assert sensors["inbox_sensor"].job_name == "inbox_ingest"
    assert sensors["features_after_daily_ingest"].job_name == "daily_refresh"
    assert sensors["daily_partition_after_inbox"].job_name == "daily_ingest"


def test_jobs_pick_up_new_assets_by_layer_and_group():
    @dg.asset(key=["models", "some_model"], group_name="reviews")
    def some_model():
        return 1

    @dg.asset(key=["features", "some_feature"], group_name="spatial")
    def some_feature():
        return 1

    @dg.asset(key=["raw", "some_table"], group_name="ingest")
    def some_raw():
        return 1

    @dg.asset(key=["reports", "some_report"], group_name="operations")
    def some_report():
        return 1

    @dg.asset(key=["snapshot", "some_copy"], group_name="snapshot")
    def some_copy():
        return 1

    d = dg.Definitions(
        assets=[some_model, some_feature, some_raw, some_report, some_copy], jobs=jobs_mod.JOBS
    )

    def keys(job):
        return {k.to_user_string() for k in d.resolve_job_def(job).asset_layer.selected_asset_keys}

    assert keys("training") == {"models/some_model"}
    assert keys("features") == {"features/some_feature"}
    assert keys("scoring") == {"reports/some_report", "snapshot/some_copy"}
    assert keys("ingest") == {"raw/some_table"}
    assert keys("daily_refresh") == {"features/some_feature"}
    assert keys("full_refresh") == {"raw/some_table", "features/some_feature"}


def test_schedule_evaluation_requests_a_run():
    ctx = dg.build_schedule_context()
    result = jobs_mod.weekly_retraining.evaluate_tick(ctx)
    assert len(result.run_requests) == 1
    assert result.run_requests[0].tags["ecom/trigger"] == "schedule"


def test_reload_runs_are_limited_to_one_at_a_time(tmp_path):
    """Every job that reloads raw + staging carries the reload tag, and both instance configs queue a second
    such run until the first ends (the run queue the daemon applies)."""
    import shutil

    import yaml

    from ecom_pipeline.automation.jobs import JOBS, RELOAD_TAG
    from ecom_pipeline.config import REPO_ROOT
    from ecom_pipeline.definitions import defs

    ((key, value),) = RELOAD_TAG.items()
    for job in JOBS:
        executable = defs.resolve_job_def(job.name).asset_layer.executable_asset_keys
        selected = {k.path[0] for k in executable}
        # inbox/new_partitions (daily_ingest) appends to raw and merges into staging
        reloads = (
            bool(selected & {"raw", "staging"}) or dg.AssetKey(["inbox", "new_partitions"]) in executable
        )
        assert (job.tags.get(key) == value) == reloads, job.name

    shutil.copy(REPO_ROOT / ".dagster_home" / "dagster.yaml", tmp_path)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    assert {"key": key, "limit": 1} in limits

    docker = yaml.safe_load((REPO_ROOT / "docker" / "dagster.yaml").read_text())
    assert {"key": key, "limit": 1} in docker["concurrency"]["runs"]["tag_concurrency_limits"]
