import dagster as dg

from ecom_pipeline.automation.failures import read_failures, record_run_failures
from ecom_pipeline.resources import SourceResource
from ecom_pipeline.resources.paths import PathsResource


@dg.op
def boom():
    raise RuntimeError("warehouse exploded")


@dg.op
def fine():
    return 1


@dg.job(tags={"ecom/trigger": "drift"})
def failing_job():
    boom()


@dg.job
def passing_job():
    fine()


def _context(instance, result, root, failed=True):
    event = result.get_run_failure_event() if failed else result.get_run_success_event()
    ctx = dg.build_run_status_sensor_context(
        sensor_name="record_run_failures",
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={
            "source": SourceResource(data_root=str(root)),
            "paths": PathsResource(data_root=str(root)),
        },
    )
    return ctx.for_run_failure() if failed else ctx


def test_failure_is_recorded_once_and_success_is_not(tmp_path):
    with dg.DagsterInstance.ephemeral() as instance:
        failed = failing_job.execute_in_process(instance=instance, raise_on_error=False)
        assert not failed.success
        assert record_run_failures(_context(instance, failed, tmp_path)) is None
        (rec,) = read_failures(tmp_path)
        assert rec["run_id"] == failed.run_id and rec["job_name"] == "failing_job"
        assert rec["failed_steps"] == ["boom"]
        # the cause, not only Dagster's "Steps failed: ['boom']"
        assert rec["step_errors"] == [{"step": "boom", "error": "RuntimeError: warehouse exploded"}]
        assert "warehouse exploded" in rec["message"]
        assert rec["tags"] == {"ecom/trigger": "drift"}
        # the same failure seen again (sensor re-evaluated): not recorded twice
        again = record_run_failures(_context(instance, failed, tmp_path))
        assert isinstance(again, dg.SkipReason) and len(read_failures(tmp_path)) == 1

        ok = passing_job.execute_in_process(instance=instance)
        skip = record_run_failures(_context(instance, ok, tmp_path, failed=False))
        assert isinstance(skip, dg.SkipReason) and len(read_failures(tmp_path)) == 1


def test_torn_lines_do_not_hide_other_records(tmp_path):
    (tmp_path / "ops").mkdir()
    (tmp_path / "ops" / "run_failures.jsonl").write_text('{"run_id": "a"}\n{"run_id": "b"\n')
    assert [r["run_id"] for r in read_failures(tmp_path)] == ["a"]


def test_missing_data_folder_fails_on_the_first_attempt_and_the_record_names_it(tmp_path, monkeypatch):
    from ecom_pipeline.definitions import build_definitions

    missing = tmp_path / "no_such_olist_folder"
    monkeypatch.setenv("ECOM_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("ECOM_DATA_SOURCE", "olist")
    monkeypatch.setenv("ECOM_DATA_DIR", str(missing))
    monkeypatch.delenv("ECOM_WAREHOUSE", raising=False)
    job = build_definitions().resolve_job_def("ingest")
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        events = result.all_events
        # the raw steps' retry policy (2 retries, for killed steps and locks) is not used: no retry at all
        assert not [
            e
            for e in events
            if e.event_type in (dg.DagsterEventType.STEP_UP_FOR_RETRY, dg.DagsterEventType.STEP_RESTARTED)
        ]
        failures = [e for e in events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
        assert failures and all(e.step_key.startswith("raw__") for e in failures)
        assert record_run_failures(_context(instance, result, tmp_path)) is None
    (rec,) = read_failures(tmp_path)
    assert rec["job_name"] == "ingest"
    assert str(missing) in rec["message"] and "Olist data folder not found" in rec["message"]
    assert all(str(missing) in e["error"] for e in rec["step_errors"])
