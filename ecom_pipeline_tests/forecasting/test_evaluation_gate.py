"""Honest evaluation: the incomplete tail is cut before backtests, statsforecast peers run as baselines,
paired-bootstrap intervals, and the serving gate (a deliberately worse candidate loses to its baseline, a
degenerate zero forecast is refused, nothing is served against its decision)."""

import duckdb
import numpy as np
import pandas as pd
import pytest

from ecom_pipeline.ml.evaluation import auc_comparison, paired_bootstrap
from ecom_pipeline.ml.forecasting.backtest import incomplete_tail, rolling_origin
from ecom_pipeline.ml.forecasting.models import BASELINES, PEERS, SeriesConfig, peer_forecast, run_series
from ecom_pipeline.ml.forecasting.selection import gate_series, served_forecasts
from ecom_pipeline.ml.forecasting.series import panel
from ecom_pipeline.ml.serving_gate import (
    SERVING_DECISIONS_TABLE,
    decide,
    degenerate_forecast,
    record_decisions,
    served_against_decision,
)
from ecom_pipeline.resources.model_metrics import MetricRecord, record_model_metrics

TASK = "forecast_daily_orders"


def _weekly(n=300, level=20.0, seed=0):
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2020-01-01", periods=n)
    lam = level * np.array([1.3, 1.2, 1.1, 1.0, 0.9, 0.7, 0.6])[dates.weekday]
    return dates, rng.poisson(lam).astype(float)


# ---------------------------------------------------------------- complete data
def test_incomplete_tail_is_cut_where_the_export_collapses():
    dates, y = _weekly()
    y[-40:] = np.random.default_rng(1).poisson(0.5, 40)  # the export stops mid-stream
    y[-45:-40] *= 0.3  # and slides into it over five days
    tail = incomplete_tail(dates, y)
    assert tail.trimmed_days == 45 and tail.last_complete == dates[-46]
    assert tail.reference_per_day > 10 > tail.tail_per_day and "incomplete" in tail.reason
    partial = y.copy()
    partial[-45:] = _weekly(seed=3)[1][-45:]
    partial[-1] = 2  # a partial last day
    assert incomplete_tail(dates, partial).trimmed_days == 1


@pytest.mark.parametrize("level", [0.4, 3.0, 25.0])
def test_complete_series_are_not_cut(level):
    cut = [incomplete_tail(*_weekly(200, level, seed)).trimmed_days for seed in range(20)]
    assert sum(c > 0 for c in cut) <= 1  # chance zeros of a sparse shop are not a collapse


def test_panel_ends_every_series_at_the_last_complete_day():
    dates, y = _weekly(250)
    y[-30:] = 0
    rows = [
        pd.DataFrame({"series_id": sid, "level": lvl, "date": dates, "orders": v})
        for sid, lvl, v in (("total", "total", y), ("state:SP", "state", np.round(y * 0.6)))
    ]
    daily = pd.concat(rows, ignore_index=True)
    d, Y, _ = panel(daily, ["state:SP"])
    assert d[-1] == dates[-31] and Y.shape == (1, 220)
    folds = rolling_origin(d, horizon=28, folds=3)
    assert folds[-1].test_idx[-1] == len(d) - 1  # the fold grid ends at the last complete day
    assert len(panel(daily, ["state:SP"], complete_only=False)[0]) == 250


# ---------------------------------------------------------------- peers
def test_statsforecast_peers_forecast_and_are_timed():
    dates, y = _weekly(200)
    for name in PEERS:
        yhat, lo, hi = peer_forecast(name, y[:172], 28)
        assert (
            yhat.shape == (28,)
            and (lo <= yhat + 1e-9).all()
            and (yhat <= hi + 1e-9).all()
            and (lo >= 0).all()
        )
    r = run_series("s", dates, y, SeriesConfig(folds=2, models=BASELINES))
    assert set(r.metrics["model"]) == set(BASELINES) and set(r.model_seconds) == set(PEERS)
    assert not [n for n in r.notes if "failed" in n]


# ---------------------------------------------------------------- intervals
def test_paired_bootstrap_intervals():
    rng = np.random.default_rng(0)
    base = rng.normal(1.0, 0.3, 400)
    better = paired_bootstrap(
        base - 0.2 + rng.normal(0, 0.05, 400), base, metric="mase", higher_is_better=False
    )
    assert better.significant and better.candidate_better and better.ci_high < 0 and better.n_units == 400
    same = paired_bootstrap(base + rng.normal(0, 0.3, 400), base, metric="mase", higher_is_better=False)
    assert same.ci_low < 0 < same.ci_high and not same.significant and not same.candidate_better
    worse = paired_bootstrap(base + 0.2, base, metric="mase", higher_is_better=False, block=7)
    assert worse.significant and not worse.candidate_better
    y = rng.integers(0, 2, 600)
    auc = auc_comparison(y, y + rng.normal(0, 0.5, 600), rng.normal(0, 1, 600), n_boot=200)
    assert auc.candidate_better and auc.candidate_value > 0.8 and 0.4 < auc.baseline_value < 0.6


def test_paired_bootstrap_in_chunks_equals_one_resample_matrix(monkeypatch):
    """The chunked resamples are the one-matrix bootstrap's, drawn in the same order: equal intervals."""
    from ecom_pipeline.ml import evaluation

    rng = np.random.default_rng(4)
    a, b = rng.normal(0, 1, 1_001), rng.normal(0.05, 1, 1_001)
    for block in (1, 7):
        draws = np.random.default_rng(0)
        idx = np.stack([evaluation._resample_positions(len(a), block, draws) for _ in range(300)])
        level = [(1 - 0.95) / 2, 1 - (1 - 0.95) / 2]
        lo, hi = np.quantile((a - b)[idx].mean(axis=1), level)
        monkeypatch.setattr(evaluation, "BOOTSTRAP_CHUNK_VALUES", 7 * len(a))  # 43 chunks of 7 resamples
        c = paired_bootstrap(a, b, metric="m", higher_is_better=True, block=block, n_boot=300)
        assert (c.ci_low, c.ci_high) == (lo, hi)


@pytest.mark.parametrize("name", ["roc_auc_score", "average_precision_score", "brier_score_loss"])
def test_scorer_bootstrap_from_unit_counts_equals_sklearn_on_each_resample(name):
    """ROC AUC, average precision and Brier from per-unit counts on once-sorted scores (tied scores
    included) give sklearn's values on every resample: the same comparison as re-scoring each one."""
    import sklearn.metrics

    from ecom_pipeline.ml.evaluation import scorer_comparison

    fn = getattr(sklearn.metrics, name)
    rng = np.random.default_rng(5)
    y = (rng.random(3_000) < 0.2).astype(int)
    cand = np.round(np.clip(0.3 * y + rng.random(3_000) * 0.7, 0, 1), 2)  # rounded: many ties
    base = np.round(rng.random(3_000), 1)
    hib = name != "brier_score_loss"
    fast = scorer_comparison(y, cand, base, fn, metric=name, higher_is_better=hib, n_boot=200)
    slow = scorer_comparison(
        y, cand, base, lambda t, s: fn(t, s), metric=name, higher_is_better=hib, n_boot=200
    )
    for field in ("candidate_value", "baseline_value", "ci_low", "ci_high"):
        assert getattr(fast, field) == pytest.approx(getattr(slow, field), abs=1e-12)
    assert fast.n_units == slow.n_units == 3_000


def test_model_metrics_carry_intervals_and_old_tables_gain_the_columns(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("CREATE SCHEMA ml")
    con.execute(
        "CREATE TABLE ml.model_metrics (run_ts TIMESTAMP, model VARCHAR, task VARCHAR, dataset VARCHAR, "
        "split VARCHAR, metric VARCHAR, value DOUBLE, baseline VARCHAR, baseline_value DOUBLE, "
        "mlflow_run_id VARCHAR)"
    )
    c = paired_bootstrap(
        np.linspace(0, 1, 50), np.linspace(0, 1, 50) + 0.5, metric="mase", higher_is_better=False
    )
    record_model_metrics(
        con,
        [
            MetricRecord.from_comparison(c, model="m", task="t", dataset="d", split="s", baseline="b"),
            MetricRecord("m", "t", "d", "s", "rmse", 1.0, "b", 2.0),
        ],
    )
    rows = con.execute(
        "SELECT metric, ci_low, ci_high, n_units, significant FROM ml.model_metrics ORDER BY metric"
    ).fetchall()
    assert rows[0][0] == "mase" and rows[0][2] < 0 and rows[0][3] == 50 and rows[0][4] is True
    assert rows[1] == ("rmse", None, None, None, None)  # no interval measured: no claim


# ---------------------------------------------------------------- the serving gate
def _daily(sid, dates, y):
    return pd.DataFrame({"series_id": sid, "level": "state", "date": dates, "orders": y})


def test_a_deliberately_worse_candidate_loses_and_the_baseline_serves(tmp_path):
    dates, y = _weekly(300, 30.0)
    # the candidate: SARIMA restricted to a constant mean (no weekly terms), trained like the real one
    worse = ((0, 0, 0), (0, 0, 0, 7))
    r = run_series(
        "state:SP",
        dates,
        y,
        SeriesConfig(folds=2, grid=(worse,), models=("sarima", "seasonal_naive", "auto_ets")),
    )
    gate = gate_series(r.predictions, _daily("state:SP", dates, y), task=TASK)
    (d,) = gate.decisions
    assert d.candidate == "sarima" and d.baseline in {"seasonal_naive", "auto_ets"}
    assert d.served == d.baseline and not d.candidate_serves and d.ci_low > 0
    assert "significantly worse" in d.reason
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    record_decisions(con, TASK, gate.decisions)
    row = con.execute(
        f"SELECT candidate, baseline, served, metric, ci_low, ci_high FROM {SERVING_DECISIONS_TABLE}"
    ).fetchall()
    assert row == [("sarima", d.baseline, d.baseline, "mase", d.ci_low, d.ci_high)]
    served = served_forecasts(r.predictions[r.predictions.kind == "future"], gate.decisions)
    assert set(served["model"]) == {d.baseline} and len(served) == 28
    assert served_against_decision(served, gate.decisions, scope_col="series_id").empty
    # and the same table with the candidate's rows in it is caught
    leak = r.predictions[(r.predictions.kind == "future") & (r.predictions.model == "sarima")]
    assert len(served_against_decision(leak, gate.decisions, scope_col="series_id")) == 28


def _oracle(preds, name, future_yhat):
    """A candidate that knew the backtest actuals (so it wins the backtest) with a chosen future forecast."""
    base = preds[preds.model == "seasonal_naive"].copy()
    base["model"] = name
    bt = base.kind == "backtest"
    base.loc[bt, "yhat"] = base.loc[bt, "actual"]
    base.loc[~bt, "yhat"] = future_yhat
    return base


def test_a_degenerate_zero_forecast_is_refused_and_a_real_winner_serves():
    dates, y = _weekly(250, 20.0)
    r = run_series("total", dates, y, SeriesConfig(folds=2, models=("seasonal_naive",)))
    daily = _daily("total", dates, y)
    zero = pd.concat([r.predictions, _oracle(r.predictions, "lstm", 0.0)], ignore_index=True)
    (d,) = gate_series(zero, daily, task=TASK).decisions
    assert d.candidate == "lstm" and d.served == "seasonal_naive" and "about zero" in d.reason
    good = pd.concat([r.predictions, _oracle(r.predictions, "lstm", 20.0)], ignore_index=True)
    (d,) = gate_series(good, daily, task=TASK).decisions
    assert d.served == "lstm" and d.candidate_serves and d.ci_high < 0 and "significantly" in d.reason


def test_degenerate_and_decision_rules():
    assert degenerate_forecast([0.01] * 28, [20] * 28) is not None
    assert "negative" in degenerate_forecast([-1] + [5] * 27, [5] * 28)
    assert degenerate_forecast([0.0] * 28, [0.2] * 28) is None  # a sparse series: about zero is plausible
    assert degenerate_forecast([18.0] * 28, [20] * 28) is None
    assert decide(TASK, "x", "m", "b", None).served == "b"


def test_sentiment_macro_f1_gap_inside_its_interval_is_no_difference():
    from ecom_pipeline.ml.text.sentiment import macro_f1_comparison

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    base = np.where(rng.random(400) < 0.94, y, 1 - y)  # 94 % right
    cand = base.copy()
    flip = rng.choice(np.flatnonzero(cand != y), 3, replace=False)
    cand[flip] = y[flip]  # three more right: a small gap
    c = macro_f1_comparison(y, cand, base, n_boot=300)
    assert c.candidate_value > c.baseline_value and not c.significant
    d = decide("sentiment_binary", "all", "head", "tfidf_logreg", c)
    assert d.served == "tfidf_logreg" and "no significant difference" in d.reason


def test_promotion_gate_verdict_is_skip_aware():
    import dagster as dg

    from ecom_pipeline.ml.registry import gate_verdict, skip_reason

    assert skip_reason({"message": dg.MetadataValue.text("too short: 40 days")}) == "too short: 40 days"
    assert (
        skip_reason({"skipped": {"state:AC": "empty series"}, "registered": "x v1"}) is None
    )  # per-part skips
    assert skip_reason({"skipped": "none"}) is None and skip_reason(None) is None
    passed, severity, text = gate_verdict(None, "ecom.forecast.lstm", "too short: 40 days")
    assert passed and severity == "WARN" and "skipped" in text
    assert gate_verdict(None, "ecom.forecast.lstm")[:2] == (False, "ERROR")  # trained, yet nothing registered
