import duckdb
import pytest

from ecom_pipeline.resources.model_metrics import MetricRecord, record_model_metrics


def test_records_land_beside_their_baseline(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    n = record_model_metrics(
        con,
        [
            MetricRecord(
                "sarima", "forecast", "synthetic", "backtest", "mase", 0.8, "seasonal_naive", 1.0, "r1"
            ),
            MetricRecord("als", "recommend", "olist", "test", "recall@20", 0.1, "popularity", 0.05),
        ],
    )
    assert n == 2
    rows = con.execute(
        "SELECT model, metric, value, baseline_value FROM ml.model_metrics ORDER BY model"
    ).fetchall()
    assert rows == [("als", "recall@20", 0.1, 0.05), ("sarima", "mase", 0.8, 1.0)]


def test_unconventional_metric_names_are_refused(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    with pytest.raises(ValueError, match="MASE"):
        record_model_metrics(con, [MetricRecord("m", "t", "d", "s", "MASE", 1, "b", 1)])
