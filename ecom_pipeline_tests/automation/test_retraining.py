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
    return dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"warehouse": WarehouseResource(path=str(path))}
    )


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
    later = evaluate_retraining(
        _ctx(instance, drifted_warehouse, cursor=result.cursor),
        str(drifted_warehouse),
        thresholds=DriftThresholds(),
        cooldown_hours=24,
        now=state["last_fired"] + 25 * 3600,
    )
    assert isinstance(later, dg.SkipReason) and "not enough data" in later.skip_message


def test_new_data_after_training_window_is_measured_against_it(instance, tmp_path):
    # trained on data up to 2024-03-31; everything after it is "new": a volume reason, no distribution drift
    path = write_orders(tmp_path / "w.duckdb")
    cursor = json.dumps({"trained_until": "2024-03-31T23:59:59"})
    result = evaluate_retraining(
        _ctx(instance, path, cursor), str(path), thresholds=DriftThresholds(), cooldown_hours=24
    )
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


def _daily_and_forecasts(path, *, forecast_scale: float, start="2024-06-01", days=60, horizon=28):
    """features.daily_series with a weekly pattern; serving.forecasts made at ``start`` for ``horizon`` days,
    whose point forecast is the true pattern times ``forecast_scale``; backtest MASE promised 0.8."""
    import duckdb
    import numpy as np
    import pandas as pd

    dates = pd.date_range(
        end=pd.Timestamp(start) + pd.Timedelta(days=horizon - 1), periods=days + horizon, freq="D"
    )
    pattern = 20 + 6 * np.sin(2 * np.pi * np.arange(len(dates)) / 7)
    noise = np.random.default_rng(1).normal(0, 1.0, len(dates))
    daily = pd.DataFrame({"series_id": "total", "date": dates, "orders": pattern + noise})
    fut = dates >= pd.Timestamp(start)
    fc = pd.DataFrame(
        {
            "series_id": "total",
            "model": "sarima",
            "date": dates[fut],
            "yhat": pattern[fut] * forecast_scale,
            "lo": pattern[fut] * forecast_scale - 3,
            "hi": pattern[fut] * forecast_scale + 3,
            "backtest_mase": 0.8,
            "is_best": True,
        }
    )
    con = duckdb.connect(str(path))
    for schema, name, frame in (("features", "daily_series", daily), ("serving", "forecasts", fc)):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        con.register("_f", frame)
        con.execute(f"CREATE OR REPLACE TABLE {schema}.{name} AS SELECT * FROM _f")
        con.unregister("_f")
    con.close()


def test_forecast_error_drift_measures_live_error_against_backtest():
    import pandas as pd

    from ecom_pipeline.ml.drift import forecast_error_drift

    dates = pd.date_range("2024-01-01", periods=42, freq="D")
    y = [10.0 + (i % 7) for i in range(42)]  # seasonal-naive scale on the first 28 days: 0 -> lag-1 fallback
    daily = pd.DataFrame({"series_id": "a", "date": dates, "orders": y})
    fc = pd.DataFrame(
        {
            "series_id": "a",
            "date": dates[28:],
            "yhat": [v + 2 for v in y[28:]],
            "lo": 0.0,
            "hi": 100.0,
            "backtest_mase": 0.5,
            "is_best": True,
        }
    )
    report = forecast_error_drift(fc, daily)
    (row,) = report.series.itertuples()
    # lag-7 differences are all 0, so the scale falls back to the lag-1 in-sample error
    steps = [abs(y[i] - y[i - 1]) for i in range(1, 28)]
    assert row.live_mase == pytest.approx(2.0 / (sum(steps) / len(steps)))
    assert row.ratio == pytest.approx(row.live_mase / 0.5)
    assert row.coverage == 1.0
    assert report.drifted == (row.ratio > 1.5)
    # too few realised days: no verdict, not a false alarm
    short = forecast_error_drift(fc.head(3), daily)
    assert short.series.empty and not short.drifted


def test_stale_forecasts_launch_training_even_without_data_drift(instance, tmp_path):
    path = write_orders(tmp_path / "w.duckdb")
    _daily_and_forecasts(path, forecast_scale=1.0)
    good = drift_retraining(_ctx(instance, path))
    assert isinstance(good, dg.SkipReason) and "forecast error stable" in good.skip_message

    _daily_and_forecasts(path, forecast_scale=0.4)  # demand is 2.5x what the served model predicts
    result = drift_retraining(_ctx(instance, path))
    assert isinstance(result, dg.SensorResult)
    (request,) = result.run_requests
    assert request.tags["ecom/drift_reason"].startswith("forecast_error: median live/backtest MASE")


@pytest.mark.parametrize("fixture", ["stable_warehouse", "drifted_warehouse"])
def test_drift_check_job_gives_the_sensors_verdict(instance, fixture, request):
    from ecom_pipeline.automation.retraining import drift_check_job

    path = request.getfixturevalue(fixture)
    tick = drift_retraining(_ctx(instance, path))
    result = drift_check_job.execute_in_process(
        instance=instance, resources={"warehouse": WarehouseResource(path=str(path))}
    )
    assert result.success
    verdict = result.output_for_node("drift_check_op")
    if isinstance(tick, dg.SkipReason):
        assert fixture == "stable_warehouse"
        assert verdict == {"retrain": False, "message": tick.skip_message}
    else:
        assert fixture == "drifted_warehouse"
        assert (
            verdict["retrain"]
            and verdict["message"] == "retrain: " + tick.run_requests[0].tags["ecom/drift_reason"]
        )


def test_drift_check_job_measures_against_the_running_sensors_window(drifted_warehouse):
    """Run on demand after the sensor fired, the job reads the sensor's cursor: no new data since the
    window it stored, so no drift, the same verdict the next tick gives."""
    from dagster._core.remote_origin import (
        InProcessCodeLocationOrigin,
        RemoteInstigatorOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.scheduler.instigation import (
        InstigatorState,
        InstigatorStatus,
        InstigatorType,
        SensorInstigatorData,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    from ecom_pipeline.automation.retraining import drift_check_job, sensor_trained_until

    with dg.instance_for_test() as instance:
        fired = drift_retraining(_ctx(instance, drifted_warehouse))
        assert fired.run_requests
        origin = RemoteInstigatorOrigin(
            RemoteRepositoryOrigin(
                InProcessCodeLocationOrigin(
                    LoadableTargetOrigin(module_name="ecom_pipeline.definitions"),
                    location_name="ecom_pipeline",
                ),
                "__repository__",
            ),
            "drift_retraining",
        )
        instance.add_instigator_state(
            InstigatorState(
                origin,
                InstigatorType.SENSOR,
                InstigatorStatus.RUNNING,
                SensorInstigatorData(cursor=fired.cursor),
            )
        )
        assert sensor_trained_until(instance).isoformat() == json.loads(fired.cursor)["trained_until"]
        result = drift_check_job.execute_in_process(
            instance=instance, resources={"warehouse": WarehouseResource(path=str(drifted_warehouse))}
        )
        verdict = result.output_for_node("drift_check_op")
        assert not verdict["retrain"]
        tick = evaluate_retraining(
            _ctx(instance, drifted_warehouse, cursor=fired.cursor),
            str(drifted_warehouse),
            thresholds=DriftThresholds(),
            cooldown_hours=0,
        )
        assert isinstance(tick, dg.SkipReason) and tick.skip_message == verdict["message"]
