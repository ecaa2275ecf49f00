"""The time-series asset group end to end on a small typed shop written straight into staging."""

import dagster as dg
import duckdb
import pytest

from ecom_pipeline.assets import timeseries as ts
from ecom_pipeline.resources import ComputeResource, MLflowResource, SourceResource, WarehouseResource
from ecom_pipeline.resources.io_manager import WarehouseIOManager
from ecom_pipeline.resources.paths import PathsResource
from ecom_pipeline_tests.forecasting.shop import SPIKE_DAY, make_shop, write_staging

SMALL = {
    "models__sarima_backtest": {
        "config": {"n_states": 2, "n_categories": 1, "folds": 2, "max_train_days": 180}
    },
    "models__lstm_backtest": {
        "config": {
            "n_states": 2,
            "n_categories": 1,
            "folds": 2,
            "epochs_cpu": 2,
            "max_samples_cpu": 600,
            "hidden": 16,
        }
    },
}


pytestmark = pytest.mark.slow  # ~2 min: SARIMA process pool, LSTM, MLflow registry


@pytest.fixture(scope="module")
def materialised(tmp_path_factory):
    root = tmp_path_factory.mktemp("ts")
    wh = write_staging(root / "wh.duckdb", make_shop(days=330))
    resources = {
        "warehouse": WarehouseResource(path=str(wh)),
        "io_manager": WarehouseIOManager(database=str(wh)),
        "mlflow": MLflowResource(tracking_uri=f"sqlite:///{root}/mlflow.db"),
        "compute": ComputeResource(device="cpu"),
        "source": SourceResource(kind="synthetic", data_root=str(root)),
        "paths": PathsResource(data_root=str(root)),
    }
    from ecom_pipeline.assets.spatial import located_features  # builds features.daily_series

    assets = [*ts.build().assets, located_features]
    result = dg.materialize(assets, resources=resources, run_config={"ops": SMALL})
    assert result.success
    return root, wh, result


def _q(wh, sql):
    con = duckdb.connect(str(wh), read_only=True)
    try:
        return con.execute(sql).fetchdf()
    finally:
        con.close()


def test_daily_series_gap_free_and_consistent(materialised):
    _, wh, _ = materialised
    d = _q(
        wh,
        "SELECT series_id, count(*) n, count(DISTINCT date) nd, sum(orders) o FROM "
        "features.daily_series GROUP BY 1",
    )
    assert d["n"].nunique() == 1 and (d["n"] == d["nd"]).all()  # every series covers every day once
    total = d.set_index("series_id").loc["total", "o"]
    assert d[d.series_id.str.startswith("state:")]["o"].sum() == total
    assert d[d.series_id.str.startswith("category:")]["o"].sum() == total
    assert (d.series_id.str.startswith("state_category:")).any()
    cal = _q(wh, "SELECT * FROM features.calendar")
    assert cal["is_black_friday"].sum() >= 1 and cal["is_holiday"].sum() >= 5


def test_forecasts_and_metrics(materialised):
    _, wh, result = materialised
    f = _q(wh, "SELECT * FROM serving.forecasts")
    d = _q(wh, f"SELECT * FROM ml.serving_decisions WHERE task = '{ts.TASK}'")  # anomalies have their own
    # one gated model per series, and it is the model its decision serves (nothing served that lost)
    assert (f.groupby("series_id")["model"].nunique() == 1).all() and (
        f.groupby("series_id").size() == 28
    ).all()
    assert set(d["scope"]) == set(f["series_id"])
    served = f.drop_duplicates("series_id").merge(d, left_on="series_id", right_on="scope")
    assert (served["model"] == served["served"]).all()
    assert ((d["served"] == d["candidate"]) | (d["served"] == d["baseline"])).all()
    assert (
        d.loc[d.served == d.candidate, "ci_high"].lt(0).all()
    )  # a candidate serves only when significantly better
    assert (f["lo"] <= f["yhat"] + 1e-9).all() and (f["yhat"] <= f["hi"] + 1e-9).all()
    m = _q(wh, "SELECT * FROM ml.model_metrics")
    assert {"sarima", "lstm", "ensemble"} <= set(m["model"])
    assert set(m["baseline"]) <= {"seasonal_naive", "auto_ets", "auto_theta", "auto_arima", "mstl"}
    assert {"mase", "smape", "mae"} <= set(m["metric"])
    assert m["ci_low"].notna().all() and (m["ci_low"] <= m["ci_high"]).all() and (m["n_units"] > 0).all()
    assert (m["significant"] == ((m["ci_low"] > 0) | (m["ci_high"] < 0))).all()
    mean = m[m.dataset.str.endswith(":mean_over_series")]
    assert (mean["n_units"] == f["series_id"].nunique()).any()
    md = result.asset_materializations_for_node("serving__forecasts")[0].metadata
    assert md["complete_data"].value["trimmed_days"] == 0  # the test shop is complete to its last day


def test_anomalies_find_the_spike_and_plot(materialised):
    root, wh, result = materialised
    a = _q(wh, "SELECT * FROM serving.anomalies WHERE series_id = 'total'")
    assert SPIKE_DAY in set(a["date"])
    assert a.loc[a["date"] == SPIKE_DAY, "direction"].iloc[0] == "spike"
    # the expected values come from the model the gate served for the series, named on every row
    d = _q(
        wh,
        "SELECT scope, served, candidate, baseline FROM ml.serving_decisions WHERE task = 'anomaly_expected'",
    )
    assert (
        "total" in set(d["scope"])
        and (a["expected_model"] == d.set_index("scope").loc["total", "served"]).all()
    )
    iv = _q(wh, "SELECT n_units, ci_low, ci_high FROM ml.model_metrics WHERE task = 'anomaly_expected'")
    assert len(iv) == len(d) and (iv["n_units"] > 100).all()
    md = result.asset_materializations_for_node("serving__anomalies")[0].metadata
    assert md["flag_rate"].value < 0.05
    assert (root / "reports" / "forecasts.png").stat().st_size > 1000


def test_lstm_records_device_path(materialised):
    _, _, result = materialised
    md = result.asset_materializations_for_node("models__lstm_backtest")[0].metadata
    assert md["device"].value == "cpu" and "cpu" in md["training_path"].value
    assert md["threads"].value == 1  # a small model: one torch thread (ComputeResource.configure_threads)
