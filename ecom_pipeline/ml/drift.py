"""Data drift between a reference window (what the models were trained on) and the newest data.

Framework-free: the retraining sensor (:mod:`ecom_pipeline.automation.retraining`) reads the two windows
from the warehouse and calls :func:`measure_drift`; the thresholds decide whether to retrain.

Measures
--------
* PSI (population stability index) on numeric features, binned on the reference window's quantiles.
  Rule of thumb: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 significant shift.
* Two-sample Kolmogorov-Smirnov statistic (max distance between the two empirical CDFs) and its p-value.
* Share of new categories: the fraction of current rows whose category never occurs in the reference.
* Volume: new rows relative to the reference window's size (enough new data is itself a reason to retrain).

Both windows below ``min_rows`` rows give "not enough data" rather than a noisy verdict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

EPS = 1e-4


def psi(reference, current, bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference`` (numeric, NaN dropped).

    Bin edges are the reference quantiles (so every reference bin holds ~1/bins of the mass); values
    outside the reference range fall in the outer bins.  Empty bins are floored at ``EPS``.
    """
    ref = pd.to_numeric(pd.Series(reference), errors="coerce").dropna().to_numpy(dtype=float)
    cur = pd.to_numeric(pd.Series(current), errors="coerce").dropna().to_numpy(dtype=float)
    if len(ref) == 0 or len(cur) == 0:
        return float("nan")
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:  # constant reference: compare the share equal to that constant
        same_ref, same_cur = 1.0, float(np.mean(cur == edges[0]))
        e = np.array([same_ref, 1 - same_ref]) + EPS
        a = np.array([same_cur, 1 - same_cur]) + EPS
        return float(np.sum((a - e) * np.log(a / e)))
    inner = edges[1:-1]
    e = np.bincount(np.searchsorted(inner, ref, side="right"), minlength=len(edges) - 1) / len(ref)
    a = np.bincount(np.searchsorted(inner, cur, side="right"), minlength=len(edges) - 1) / len(cur)
    e = np.clip(e, EPS, None)
    a = np.clip(a, EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def ks(reference, current) -> tuple[float, float]:
    """Two-sample KS statistic and p-value (NaN, NaN when a side is empty)."""
    from scipy.stats import ks_2samp

    ref = pd.to_numeric(pd.Series(reference), errors="coerce").dropna().to_numpy(dtype=float)
    cur = pd.to_numeric(pd.Series(current), errors="coerce").dropna().to_numpy(dtype=float)
    if len(ref) == 0 or len(cur) == 0:
        return float("nan"), float("nan")
    res = ks_2samp(ref, cur)
    return float(res.statistic), float(res.pvalue)


def new_category_share(reference, current) -> float:
    """Fraction of ``current`` rows (non-null) whose value never occurs in ``reference``."""
    cur = pd.Series(current).dropna()
    if len(cur) == 0:
        return 0.0
    known = set(pd.Series(reference).dropna().unique())
    return float((~cur.isin(known)).mean())


@dataclass(frozen=True)
class DriftThresholds:
    """When to retrain.  Any one crossed threshold is a reason (they are listed in the run tags)."""

    psi: float = 0.25
    ks: float = 0.2  # KS statistic (effect size, not the p-value: with large samples every p is tiny)
    new_category_share: float = 0.1
    volume_ratio: float = 0.5  # new rows / reference rows
    min_rows: int = 200  # below this in either window: no verdict


@dataclass
class DriftReport:
    reference_rows: int
    current_rows: int
    features: dict[str, dict[str, float]] = field(default_factory=dict)
    volume_ratio: float = 0.0
    reasons: list[str] = field(default_factory=list)
    enough_data: bool = True

    @property
    def drifted(self) -> bool:
        return bool(self.reasons)

    def summary(self) -> str:
        if not self.enough_data:
            return (
                f"not enough data for a verdict: reference {self.reference_rows} rows, "
                f"current {self.current_rows} rows"
            )
        return "; ".join(self.reasons) if self.reasons else "no drift"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["drifted"] = self.drifted
        return out


def measure_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    numeric: list[str],
    categorical: list[str] = (),
    thresholds: DriftThresholds = DriftThresholds(),
) -> DriftReport:
    """Compare ``current`` with ``reference`` on the given columns; ``reasons`` lists crossed thresholds.

    Volume counts even when the distributions are stable: ``current`` holding at least
    ``volume_ratio`` times the reference rows is a reason on its own.
    """
    report = DriftReport(reference_rows=len(reference), current_rows=len(current))
    report.volume_ratio = (
        len(current) / len(reference) if len(reference) else float("inf") if len(current) else 0.0
    )
    if len(reference) < thresholds.min_rows or len(current) < thresholds.min_rows:
        report.enough_data = False
        return report
    for col in numeric:
        if col not in reference or col not in current:
            continue
        p = psi(reference[col], current[col])
        k, pv = ks(reference[col], current[col])
        report.features[col] = {"psi": round(p, 4), "ks": round(k, 4), "ks_pvalue": pv}
        if p == p and p > thresholds.psi:
            report.reasons.append(f"psi({col})={p:.3f}>{thresholds.psi}")
        if k == k and k > thresholds.ks:
            report.reasons.append(f"ks({col})={k:.3f}>{thresholds.ks}")
    for col in categorical:
        if col not in reference or col not in current:
            continue
        share = new_category_share(reference[col], current[col])
        report.features[col] = {"new_category_share": round(share, 4)}
        if share > thresholds.new_category_share:
            report.reasons.append(f"new_categories({col})={share:.3f}>{thresholds.new_category_share}")
    if report.volume_ratio >= thresholds.volume_ratio:
        report.reasons.append(
            f"volume: {len(current)} new rows = {report.volume_ratio:.2f}x reference "
            f">= {thresholds.volume_ratio}"
        )
    return report


@dataclass(frozen=True)
class ForecastErrorThresholds:
    """When the served forecasts have gone stale: the live error of the chosen model per series, on days whose
    actuals have arrived since the forecast was made, against the error its backtest promised."""

    mase_ratio: float = 1.5  # median over series of live MASE / backtest MASE
    min_days: int = 7  # a series needs this many realised forecast days to count
    min_series: int = 1


@dataclass
class ForecastErrorReport:
    series: pd.DataFrame  # series_id, days, live_mase, backtest_mase, ratio, coverage
    median_ratio: float = float("nan")
    reasons: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        return bool(self.reasons)

    def summary(self) -> str:
        if self.series.empty:
            return "forecast error: no realised forecast days yet"
        return (
            "; ".join(self.reasons)
            if self.reasons
            else (
                f"forecast error stable: median live/backtest MASE {self.median_ratio:.2f} over "
                f"{len(self.series)} series"
            )
        )


def forecast_error_drift(
    forecasts: pd.DataFrame,
    daily: pd.DataFrame,
    *,
    thresholds: ForecastErrorThresholds = ForecastErrorThresholds(),
    value: str = "orders",
    m: int = 7,
) -> ForecastErrorReport:
    """Live error of the served (``is_best``) forecasts on days whose actuals are now in ``daily``.

    ``forecasts``: series_id, date, yhat, lo, hi, backtest_mase, is_best (``serving.forecasts``);
    ``daily``: series_id, date, ``value`` (``features.daily_series``).  MASE is scaled, as in the backtest,
    by the seasonal-naive in-sample error of the history before the first forecast day.
    """
    from ecom_pipeline.ml.forecasting.metrics import coverage, mase

    cols = ["series_id", "days", "live_mase", "backtest_mase", "ratio", "coverage"]
    if forecasts.empty or daily.empty:
        return ForecastErrorReport(pd.DataFrame(columns=cols))
    fc = forecasts[forecasts["is_best"].astype(bool)].copy()
    fc["date"] = pd.to_datetime(fc["date"])
    hist = daily[["series_id", "date", value]].copy()
    hist["date"] = pd.to_datetime(hist["date"])
    rows = []
    for sid, f in fc.groupby("series_id"):
        h = hist[hist.series_id == sid].sort_values("date")
        start = f["date"].min()
        realised = f.merge(h, on=["series_id", "date"], how="inner")
        train = h.loc[h["date"] < start, value]
        if len(realised) < thresholds.min_days or len(train) <= m:
            continue
        live = mase(realised[value], realised["yhat"], train, m)
        promised = float(f["backtest_mase"].iloc[0])
        ratio = live / promised if promised and promised == promised else float("nan")
        rows.append(
            (
                sid,
                len(realised),
                live,
                promised,
                ratio,
                coverage(realised[value], realised["lo"], realised["hi"]),
            )
        )
    per_series = pd.DataFrame(rows, columns=cols)
    report = ForecastErrorReport(per_series)
    if len(per_series) < thresholds.min_series:
        return report
    report.median_ratio = float(per_series["ratio"].median())
    if report.median_ratio > thresholds.mase_ratio:
        report.reasons.append(
            f"forecast_error: median live/backtest MASE {report.median_ratio:.2f}>"
            f"{thresholds.mase_ratio} over {len(per_series)} series"
        )
    return report
