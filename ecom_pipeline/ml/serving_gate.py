"""The one serving gate: a candidate model serves only if it beats its best baseline *significantly* on the
held-out split; otherwise the best baseline serves.  Every decision is a row in ``ml.serving_decisions``
(another engineer's serving app reads exactly this schema), and every serving table names the model that
produced each of its rows, so ``served_against_decision`` can prove nothing is served that lost.

Framework-free: assets call :func:`decide` with a :class:`~ecom_pipeline.ml.evaluation.Comparison` and write the
decisions with :func:`record_decisions`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import duckdb
import numpy as np
import pandas as pd

from ecom_pipeline.ml.evaluation import Comparison

SERVING_DECISIONS_TABLE = "ml.serving_decisions"
DECISION_COLUMNS = ["task", "scope", "candidate", "baseline", "metric", "candidate_value", "baseline_value",
                    "ci_low", "ci_high", "served", "reason", "decided_at"]


@dataclass
class Decision:
    task: str
    scope: str  # what the decision covers: "all", a series id, a segment
    candidate: str
    baseline: str
    metric: str
    candidate_value: float | None
    baseline_value: float | None
    ci_low: float | None  # 95 % interval of candidate - baseline
    ci_high: float | None
    served: str  # the model that serves this scope: the candidate or the baseline
    reason: str
    decided_at: datetime = field(default_factory=lambda: datetime.now(UTC).replace(tzinfo=None))

    @property
    def candidate_serves(self) -> bool:
        return self.served == self.candidate


def _fmt(x) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:.4g}"


def decide(task: str, scope: str, candidate: str, baseline: str, comparison: Comparison | None, *,
           refusal: str | None = None, metric: str | None = None) -> Decision:
    """The candidate serves only when ``comparison`` says it is significantly better and nothing refused it
    (``refusal``: why its output is unusable, e.g. a degenerate forecast); otherwise the baseline serves."""
    if comparison is None or comparison.n_units == 0:
        return Decision(task, scope, candidate, baseline, metric or "", None, None, None, None, baseline,
                        "no held-out evaluation of the candidate: the baseline serves")
    c = comparison
    diff = (f"{c.metric} {_fmt(c.candidate_value)} vs {_fmt(c.baseline_value)}, difference {_fmt(c.diff)} "
            f"[{_fmt(c.ci_low)}, {_fmt(c.ci_high)}] over {c.n_units} units")
    if refusal:
        served, reason = baseline, f"candidate refused: {refusal}; {diff}"
    elif c.candidate_better:
        served, reason = candidate, f"beats {baseline} significantly: {diff}"
    elif c.significant:
        served, reason = baseline, f"significantly worse than {baseline}: {diff}"
    elif not (np.isfinite(c.ci_low) and np.isfinite(c.ci_high)):
        served, reason = baseline, f"interval undefined (too few units): {diff}"
    else:
        served, reason = baseline, f"no significant difference from {baseline} (interval contains 0): {diff}"
    return Decision(task, scope, candidate, baseline, c.metric, c.candidate_value, c.baseline_value, c.ci_low,
                    c.ci_high, served, reason)


def degenerate_forecast(yhat, recent_actuals, *, min_recent_mean: float = 0.5, zero_share: float = 0.1) -> str | None:
    """Why a count forecast is unusable, or None: negative values, or about zero (mean below ``zero_share``
    of the recent actual mean) where the recent actual mean is clearly positive (>= ``min_recent_mean``)."""
    yhat = np.asarray(yhat, dtype=float)
    recent = np.asarray(recent_actuals, dtype=float)
    if not np.all(np.isfinite(yhat)):
        return "non-finite forecast values"
    if (yhat < 0).any():
        return f"{int((yhat < 0).sum())} negative forecast values"
    level = float(recent.mean()) if len(recent) else 0.0
    if level >= min_recent_mean and yhat.mean() < zero_share * level:
        return (f"forecast about zero (mean {yhat.mean():.3f}/day) where the training window's recent mean is "
                f"{level:.3f}/day")
    return None


def ensure_serving_decisions(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS ml")
    con.execute(f"""CREATE TABLE IF NOT EXISTS {SERVING_DECISIONS_TABLE} (
        task VARCHAR, scope VARCHAR, candidate VARCHAR, baseline VARCHAR, metric VARCHAR, candidate_value DOUBLE,
        baseline_value DOUBLE, ci_low DOUBLE, ci_high DOUBLE, served VARCHAR, reason VARCHAR,
        decided_at TIMESTAMP)""")


def record_decisions(con: duckdb.DuckDBPyConnection, task: str, decisions: list[Decision]) -> int:
    """Replace ``task``'s decisions (its serving table is replaced in the same run, so the two stay in step)."""
    if any(d.task != task for d in decisions):
        raise ValueError(f"record_decisions({task!r}) got decisions of other tasks")
    ensure_serving_decisions(con)
    frame = pd.DataFrame([asdict(d) for d in decisions], columns=DECISION_COLUMNS)
    frame = frame.astype({c: float for c in ("candidate_value", "baseline_value", "ci_low", "ci_high")})
    con.execute(f"DELETE FROM {SERVING_DECISIONS_TABLE} WHERE task = ?", [task])
    if len(frame):
        con.register("_decisions", frame)
        try:
            con.execute(f"INSERT INTO {SERVING_DECISIONS_TABLE} ({', '.join(DECISION_COLUMNS)}) "
                        f"SELECT {', '.join(DECISION_COLUMNS)} FROM _decisions")
        finally:
            con.unregister("_decisions")
    return len(frame)


def served_against_decision(serving: pd.DataFrame, decisions: list[Decision] | pd.DataFrame, *,
                            model_col: str = "model", scope_col: str | None = None) -> pd.DataFrame:
    """Rows of a serving table produced by a model other than the one its decision serves (should be empty).
    ``scope_col`` None: one decision (scope "all") covers every row."""
    d = decisions if isinstance(decisions, pd.DataFrame) else pd.DataFrame([asdict(x) for x in decisions],
                                                                           columns=DECISION_COLUMNS)
    if scope_col is None:
        served = set(d["served"])
        return serving[~serving[model_col].isin(served)] if len(d) else serving
    m = serving.merge(d[["scope", "served"]], left_on=scope_col, right_on="scope", how="left")
    return serving[(m["served"].isna() | (m[model_col] != m["served"])).to_numpy()]
