"""Metrics against hand-computed values, the backtest splitter, models on series with known structure,
anomaly detection, calendar features and skip reasons."""

import numpy as np
import pandas as pd
import pytest

from ecom_pipeline.ml.forecasting import metrics as M
from ecom_pipeline.ml.forecasting.anomalies import detect
from ecom_pipeline.ml.forecasting.backtest import TooShort, rolling_origin
from ecom_pipeline.ml.forecasting.models import (
    SeriesConfig,
    choose_best,
    run_series,
    seasonal_naive,
    summarise,
)
from ecom_pipeline.ml.forecasting.series import black_friday, calendar_features


def test_metrics_hand_computed():
    y, yhat = [1, 2, 3, 4], [2, 2, 5, 4]
    assert M.mae(y, yhat) == pytest.approx(0.75)  # (1+0+2+0)/4
    assert M.rmse(y, yhat) == pytest.approx(np.sqrt(5 / 4))
    # sMAPE terms: 2*1/3, 0, 2*2/8, 0 -> mean 0.2916.. -> 29.1666 %
    assert M.smape(y, yhat) == pytest.approx(100 * (2 / 3 + 0.5) / 4)
    assert M.smape([0, 0], [0, 0]) == 0.0
    # MASE with m=1 on train [1, 3, 2]: naive MAE = (2 + 1)/2 = 1.5 -> 0.75 / 1.5
    assert M.mase(y, yhat, [1, 3, 2], m=1) == pytest.approx(0.5)
    # seasonal scale m=2 on [1, 2, 3, 5]: |3-1|, |5-2| -> 2.5
    assert M.mase_scale([1, 2, 3, 5], m=2) == pytest.approx(2.5)
    assert M.mase_scale([4, 4, 4], m=7) == 1.0  # flat and too short: no division by zero
    assert M.coverage([1, 2, 3, 4], [0, 2.5, 3, 0], [1, 3, 3, 3]) == pytest.approx(0.5)


def test_rolling_origin_never_leaks():
    dates = pd.date_range("2020-01-01", periods=200)
    folds = rolling_origin(dates, horizon=14, folds=3, step=7, min_train=30)
    assert [len(f.test_idx) for f in folds] == [14, 14, 14]
    assert folds[-1].test_idx[-1] == 199  # last fold ends at the last observation
    for f in folds:
        assert f.train_idx.max() < f.test_idx.min()
        assert dates[f.train_idx].max() < f.origin == dates[f.test_idx[0]]
        assert len(f.train_idx) == f.test_idx[0]  # everything before the origin, nothing after
    assert folds[1].origin - folds[0].origin == pd.Timedelta(days=7)
    with pytest.raises(TooShort):
        rolling_origin(dates[:50], horizon=14, folds=3, step=7, min_train=30)


def test_seasonal_naive_repeats_last_week():
    y = np.tile([1, 2, 3, 4, 5, 6, 7], 5).astype(float)
    yhat, lo, hi = seasonal_naive(y, 10)
    assert list(yhat) == [1, 2, 3, 4, 5, 6, 7, 1, 2, 3]
    assert (lo <= yhat).all() and (yhat <= hi).all()


def _structured(n=300, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return pd.date_range("2019-01-01", periods=n), 20 + 6 * np.sin(2 * np.pi * t / 7) + 0.02 * t + rng.normal(
        0, 1.5, n
    )


def test_sarima_beats_seasonal_naive_on_known_structure():
    dates, y = _structured()
    r = run_series(
        "s", dates, y, SeriesConfig(folds=2, max_train_days=200, models=("seasonal_naive", "sarima"))
    )
    s = summarise(r.metrics)
    mase = s[s.metric == "mase"].set_index("model")["value"]
    assert r.order is not None and mase["sarima"] < mase["seasonal_naive"]
    cov = s[s.metric == "coverage"].set_index("model")["value"]["sarima"]
    assert 0.6 <= cov <= 1.0  # nominal 80 %
    assert set(r.predictions["kind"]) == {"backtest", "future"}
    best = choose_best(s)
    assert best.iloc[0]["best_model"] == "sarima"


@pytest.mark.parametrize(
    "y,reason", [(np.array([]), "empty"), (np.zeros(200), "all zeros"), (np.ones(40), "need at least")]
)
def test_short_or_empty_series_get_a_skip_reason(y, reason):
    r = run_series("s", pd.date_range("2020-01-01", periods=len(y)), y, SeriesConfig())
    assert reason in r.skip_reason and r.predictions.empty


def test_lstm_beats_seasonal_naive_on_known_structure():
    from ecom_pipeline.ml.forecasting.lstm import LSTMConfig, lstm_backtest
    from ecom_pipeline.ml.forecasting.series import covariate_matrix

    rng = np.random.default_rng(0)
    n = 360
    dates = pd.date_range("2019-01-01", periods=n)
    cov = covariate_matrix(calendar_features(dates[0], dates[-1] + pd.Timedelta(days=28)))
    t = np.arange(n)
    Y = np.stack(
        [(5 + 3 * k) * (1 + 0.5 * np.sin(2 * np.pi * t / 7)) + rng.normal(0, 1.5, n) for k in range(3)]
    )
    preds, mets, model = lstm_backtest(
        ["a", "b", "c"],
        dates,
        Y,
        cov,
        LSTMConfig(epochs=10, max_samples=900, hidden=16, batch_size=64),
        folds=2,
    )
    lstm_mase = summarise(mets).query("metric == 'mase'")["value"].mean()
    base = [
        summarise(run_series(s, dates, Y[i], SeriesConfig(folds=2, models=("seasonal_naive",))).metrics)
        .query("metric == 'mase'")["value"]
        .iloc[0]
        for i, s in enumerate("abc")
    ]
    assert lstm_mase < np.mean(base)
    assert len(preds[preds.kind == "future"]) == 3 * 28


def test_anomaly_detection_finds_spike_and_stays_quiet_on_noise():
    rng = np.random.default_rng(3)
    n = 365
    dates = pd.date_range("2018-01-01", periods=n)
    y = rng.poisson(50 * (1 + 0.3 * np.sin(2 * np.pi * np.arange(n) / 7))).astype(float)
    clean = detect(dates, y)
    assert clean["is_anomaly"].mean() < 0.02
    spiked = y.copy()
    spiked[250] += 120
    spiked[300] = 0  # a dead day (outage)
    d = detect(dates, spiked)
    flagged = d[d.is_anomaly].set_index("date")
    assert flagged.loc[dates[250], "direction"] == "spike" and flagged.loc[dates[250], "size"] > 80
    assert flagged.loc[dates[300], "direction"] == "drop"


def test_calendar_black_friday_and_holidays():
    assert black_friday(2017) == pd.Timestamp("2017-11-24")
    assert black_friday(2018) == pd.Timestamp("2018-11-23")
    cal = calendar_features("2018-01-01", "2018-12-31", "BR").set_index("date")
    assert cal.loc["2018-09-07", "is_holiday"] and "Independence" in cal.loc["2018-09-07", "holiday_name"]
    assert cal.loc["2018-11-23", "is_black_friday"] and cal["is_black_friday"].sum() == 1
    assert cal.loc["2018-01-06", "is_weekend"]
