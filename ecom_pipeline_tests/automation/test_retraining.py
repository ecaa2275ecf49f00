import json
from datetime import datetime

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

from ecom_pipeline.automation.retraining import drift_retraining, evaluate_retraining
from ecom_pipeline.ml.drift import DriftThresholds
from ecom_pipeline.resources import WarehouseResource
from ecom_pipeline_tests.automation.conftest import write_orders


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


def _ctx(instance, path, cursor=None):
    return dg.build_sensor_context(instance=instance, cursor=cursor,
                                   resources={"warehouse": WarehouseResource(path=str(path))})


def test_no_drift_does_not_launch_training(instance, stable_warehouse):
    result = drift_retraining(_ctx(instance, stable_warehouse))
    assert isinstance(result, dg.SkipReason)
    assert "no drift" in result.skip_message


def test_drift_launches_training_with_reason_then_cools_down(instance, drifted_warehouse):
    ctx = _ctx(instance, drifted_warehouse)
    result = drift_retraining(ctx)
    assert isinstance(result, dg.SensorResult)
    (request,) = result.run_requests
    assert request.tags["ecom/trigger"] == "drift"
    assert "psi(price)" in request.tags["ecom/drift_reason"]
    assert "new_categories(category)" in request.tags["ecom/drift_reason"]
    state = json.loads(result.cursor)
    assert state["trained_until"] == request.tags["ecom/trained_until"]
    assert datetime.fromisoformat(state["trained_until"]) > datetime(2024, 6, 29)

    # same data, next tick: cooldown, nothing launched, cursor untouched
    again = drift_retraining(_ctx(instance, drifted_warehouse, cursor=result.cursor))
    assert isinstance(again, dg.SkipReason) and "cooldown" in again.skip_message

    # after the cooldown: the window after trained_until is empty -> no verdict, no run
    later = evaluate_retraining(_ctx(instance, drifted_warehouse, cursor=result.cursor), str(drifted_warehouse),
                                thresholds=DriftThresholds(), cooldown_hours=24, now=state["last_fired"] + 25 * 3600)
    assert isinstance(later, dg.SkipReason) and "not enough data" in later.skip_message


def test_new_data_after_training_window_is_measured_against_it(instance, tmp_path):
    # trained on data up to 2024-03-31; everything after it is "new": a volume reason, no distribution drift
    path = write_orders(tmp_path / "w.duckdb")
    cursor = json.dumps({"trained_until": "2024-03-31T23:59:59"})
    result = evaluate_retraining(_ctx(instance, path, cursor), str(path), thresholds=DriftThresholds(),
                                 cooldown_hours=24)
    (request,) = result.run_requests
    reason = request.tags["ecom/drift_reason"]
    assert reason.startswith("volume:") and "psi" not in reason


def test_never_queues_a_second_training_run(instance, drifted_warehouse):
    create_run_for_test(instance, job_name="training", status=dg.DagsterRunStatus.STARTED)
    result = drift_retraining(_ctx(instance, drifted_warehouse))
    assert isinstance(result, dg.SkipReason) and "still queued or running" in result.skip_message


def test_missing_warehouse_is_a_skip_not_a_crash(instance, tmp_path):
    result = drift_retraining(_ctx(instance, tmp_path / "absent.duckdb"))
    assert isinstance(result, dg.SkipReason) and "no warehouse" in result.skip_message
