"""The serving gate on anomalies' expected values, and the gate lookups shared by the serving tables."""

import duckdb
import numpy as np
import pandas as pd

from ecom_pipeline.ml.forecasting.anomalies import BASELINE, CANDIDATE, GATE_TASK, detect_many, gate_expected
from ecom_pipeline.ml.serving_gate import decide, record_decisions, served_model, serving_violations


def _daily(series: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.concat(
        [
            pd.DataFrame({"series_id": sid, "date": pd.date_range("2021-01-04", periods=len(y)), "orders": y})
            for sid, y in series.items()
        ],
        ignore_index=True,
    )


def _spiky_weekly(n=280, seed=0):
    """A stable weekly pattern with frequent one-day spikes: last week's value carries each spike into the
    next week, the 4-week median does not."""
    rng = np.random.default_rng(seed)
    y = 20 + 6 * np.sin(2 * np.pi * np.arange(n) / 7) + rng.normal(0, 1, n)
    spikes = rng.choice(n, n // 6, replace=False)
    y[spikes] += rng.uniform(20, 40, len(spikes))
    return y


def _level_shifts(n=280, seed=1):
    """A steadily growing shop: last week's value is the best guess, a 4-week median lags weeks behind."""
    rng = np.random.default_rng(seed)
    return 50 + 0.8 * np.arange(n) + rng.normal(0, 1.0, n)


def test_the_median_serves_only_where_it_beats_seasonal_naive():
    d, c = gate_expected("spiky", _spiky_weekly())
    assert d.task == GATE_TASK and d.served == CANDIDATE and c.candidate_better and c.n_units > 200
    d, c = gate_expected("shifts", _level_shifts())
    assert d.served == BASELINE and not d.candidate_serves and c.significant and c.diff > 0
    d, c = gate_expected("short", np.ones(30))
    assert c is None and d.served == BASELINE and "no held-out evaluation" in d.reason


def test_anomaly_rows_name_the_served_expected_model():
    y = _level_shifts()
    y[200] += 60  # a clear spike on top of the shifting level
    found, summary, gate = detect_many(_daily({"spiky": _spiky_weekly(), "shifts": y}), ["spiky", "shifts"])
    served = {d.scope: d.served for d, _ in gate}
    assert served == {"spiky": CANDIDATE, "shifts": BASELINE}
    assert set(found["expected_model"]) <= {CANDIDATE, BASELINE}
    assert (found["expected_model"] == found["series_id"].map(served)).all()
    shifts = found[found["series_id"] == "shifts"]
    day = pd.Timestamp("2021-01-04") + pd.Timedelta(days=200)
    row = shifts[shifts["date"] == day]
    assert len(row) == 1 and row["direction"].iloc[0] == "spike"
    assert row["expected"].iloc[0] == y[193]  # seasonal naive: the same weekday last week
    assert dict(zip(summary["series_id"], summary["expected_model"])) == served


def test_served_model_follows_the_decision_row_and_defaults_to_the_baseline():
    con = duckdb.connect()
    head, base = "ecom.sentiment.3class", "ecom.sentiment_baseline.3class"
    assert served_model(con, "sentiment", "3class", candidate=head, baseline=base)[0] == base  # no table
    record_decisions(
        con,
        "sentiment",
        [decide("sentiment", "binary", "ecom.sentiment.binary", "ecom.sentiment_baseline.binary", None)],
    )
    chosen, why = served_model(con, "sentiment", "3class", candidate=head, baseline=base)
    assert chosen == base and "no decision row" in why  # another scope's decision does not count
    won = decide("sentiment", "3class", head, base, None)
    won.served, won.reason = head, "beats the baseline significantly"
    record_decisions(con, "sentiment", [won])
    assert served_model(con, "sentiment", "3class", candidate=head, baseline=base) == (head, won.reason)


def test_serving_violations_finds_rows_of_a_model_that_lost():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA serving")
    con.execute(
        "CREATE TABLE serving.forecasts AS SELECT * FROM (VALUES ('SP', 'sarima'), ('SP', 'sarima'), "
        "('RJ', 'seasonal_naive'), ('MG', 'lstm')) t(series_id, model)"
    )
    decisions = [decide("forecast_daily_orders", s, "sarima", "seasonal_naive", None) for s in ("SP", "RJ")]
    record_decisions(con, "forecast_daily_orders", decisions)
    bad = serving_violations(con)
    # SP's two SARIMA rows lost (the baseline serves); RJ is right; MG has no decision (judged by its asset)
    assert bad[["serving_table", "scope", "model", "served", "rows"]].values.tolist() == [
        ["serving.forecasts", "SP", "sarima", "seasonal_naive", 2]
    ]
    con.execute("UPDATE serving.forecasts SET model = 'seasonal_naive' WHERE series_id = 'SP'")
    assert serving_violations(con).empty


def test_the_serving_app_reads_the_pipelines_decision_rows():
    """``served`` holds the served model's name: the app must block the head when the baseline serves."""
    from pathlib import Path

    from ecom_pipeline.api.data import CustomerLists, ServingData, VectorIndex
    from ecom_pipeline.api.models import SENTIMENT
    from ecom_pipeline.api.service import gate_block

    con = duckdb.connect()
    lost = decide("sentiment", "3class", SENTIMENT, "ecom.sentiment_baseline.3class", None)
    won = decide("sentiment", "binary", "ecom.sentiment.binary", "ecom.sentiment_baseline.binary", None)
    won.served = won.candidate
    record_decisions(con, "sentiment", [lost, won])
    empty_index = VectorIndex([], np.zeros((0, 4), np.float32))
    data = ServingData(
        Path("."),
        None,
        None,
        pd.DataFrame(),
        CustomerLists(pd.DataFrame()),
        {},
        {},
        {},
        empty_index,
        empty_index,
        empty_index,
        pd.DataFrame(),
        pd.DataFrame(),
        {},
        con.execute("SELECT * FROM ml.serving_decisions").fetchdf(),
    )
    assert "baseline serves" in gate_block(data, "sentiment", "3class", SENTIMENT)
    assert gate_block(data, "sentiment", "binary", "ecom.sentiment.binary") is None
