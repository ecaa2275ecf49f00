"""The one serving gate: a candidate model serves only if it beats its best baseline *significantly* on the
held-out split; otherwise the best baseline serves.  Every decision is a row in ``ml.serving_decisions``
(another engineer's serving app reads exactly this schema), and every serving table names the model that
produced each of its rows, so ``served_against_decision`` can prove nothing is served that lost.

Framework-free: assets call :func:`decide` with a :class:`~ecom_pipeline.ml.evaluation.Comparison` and write
the decisions with :func:`record_decisions`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import duckdb
import numpy as np
import pandas as pd

from ecom_pipeline.ml.evaluation import Comparison

SERVING_DECISIONS_TABLE = "ml.serving_decisions"
DECISION_COLUMNS = [
    "task",
    "scope",
    "candidate",
    "baseline",
    "metric",
    "candidate_value",
    "baseline_value",
    "ci_low",
    "ci_high",
    "served",
    "reason",
    "decided_at",
]


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


def decide(
    task: str,
    scope: str,
    candidate: str,
    baseline: str,
    comparison: Comparison | None,
    *,
    refusal: str | None = None,
    metric: str | None = None,
) -> Decision:
    """The candidate serves only when ``comparison`` says it is significantly better and nothing refused it
    (``refusal``: why its output is unusable, e.g. a degenerate forecast); otherwise the baseline serves."""
    if comparison is None or comparison.n_units == 0:
        return Decision(
            task,
            scope,
            candidate,
            baseline,
            metric or "",
            None,
            None,
            None,
            None,
            baseline,
            "no held-out evaluation of the candidate: the baseline serves",
        )
    c = comparison
    diff = (
        f"{c.metric} {_fmt(c.candidate_value)} vs {_fmt(c.baseline_value)}, difference {_fmt(c.diff)} "
        f"[{_fmt(c.ci_low)}, {_fmt(c.ci_high)}] over {c.n_units} units"
    )
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
    return Decision(
        task,
        scope,
        candidate,
        baseline,
        c.metric,
        c.candidate_value,
        c.baseline_value,
        c.ci_low,
        c.ci_high,
        served,
        reason,
    )


def degenerate_forecast(
    yhat, recent_actuals, *, min_recent_mean: float = 0.5, zero_share: float = 0.1
) -> str | None:
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
        return (
            f"forecast about zero (mean {yhat.mean():.3f}/day) where the training window's recent mean is "
            f"{level:.3f}/day"
        )
    return None


def ensure_serving_decisions(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS ml")
    con.execute(f"""CREATE TABLE IF NOT EXISTS {SERVING_DECISIONS_TABLE} (
        task VARCHAR, scope VARCHAR, candidate VARCHAR, baseline VARCHAR, metric VARCHAR,
        candidate_value DOUBLE, baseline_value DOUBLE, ci_low DOUBLE, ci_high DOUBLE, served VARCHAR,
        reason VARCHAR, decided_at TIMESTAMP)""")


def record_decisions(con: duckdb.DuckDBPyConnection, task: str, decisions: list[Decision]) -> int:
    """Replace ``task``'s decisions (its serving table is replaced in the same run, so the two stay in
    step)."""
    if any(d.task != task for d in decisions):
        raise ValueError(f"record_decisions({task!r}) got decisions of other tasks")
    ensure_serving_decisions(con)
    frame = pd.DataFrame([asdict(d) for d in decisions], columns=DECISION_COLUMNS)
    frame = frame.astype({c: float for c in ("candidate_value", "baseline_value", "ci_low", "ci_high")})
    con.execute(f"DELETE FROM {SERVING_DECISIONS_TABLE} WHERE task = ?", [task])
    if len(frame):
        con.register("_decisions", frame)
        try:
            con.execute(
                f"INSERT INTO {SERVING_DECISIONS_TABLE} ({', '.join(DECISION_COLUMNS)}) "
                f"SELECT {', '.join(DECISION_COLUMNS)} FROM _decisions"
            )
        finally:
            con.unregister("_decisions")
    return len(frame)


def served_against_decision(
    serving: pd.DataFrame,
    decisions: list[Decision] | pd.DataFrame,
    *,
    model_col: str = "model",
    scope_col: str | None = None,
) -> pd.DataFrame:
    """Rows of a serving table produced by a model other than the one its decision serves (should be empty).
    ``scope_col`` None: one decision (scope "all") covers every row."""
    d = (
        decisions
        if isinstance(decisions, pd.DataFrame)
        else pd.DataFrame([asdict(x) for x in decisions], columns=DECISION_COLUMNS)
    )
    if scope_col is None:
        served = set(d["served"])
        return serving[~serving[model_col].isin(served)] if len(d) else serving
    m = serving.merge(d[["scope", "served"]], left_on=scope_col, right_on="scope", how="left")
    return serving[(m["served"].isna() | (m[model_col] != m["served"])).to_numpy()]


def served_model(
    con: duckdb.DuckDBPyConnection, task: str, scope: str, *, candidate: str, baseline: str
) -> tuple[str, str]:
    """(model to serve, why) for ``task``/``scope`` from the newest decision row on ``candidate``; without one
    (no table, no evaluation this run) the baseline serves, as :func:`decide` would."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'ml' "
        "AND table_name = 'serving_decisions'"
    ).fetchall()[0][0]
    row = (
        con.execute(
            f"SELECT served, reason FROM {SERVING_DECISIONS_TABLE} WHERE task = ? AND scope = ? "
            "AND candidate = ? ORDER BY decided_at DESC LIMIT 1",
            [task, scope, candidate],
        ).fetchone()
        if exists
        else None
    )
    if row is None:
        return (
            baseline,
            f"no decision row for {task}/{scope} in {SERVING_DECISIONS_TABLE}: the baseline serves",
        )
    return str(row[0]), str(row[1])


# Every gated serving table: (task in ml.serving_decisions, column naming the model, column holding the
# decision's scope; a plain string instead = one fixed scope for every row)
GATED_TABLES: dict[str, tuple[str, str, str]] = {
    "serving.forecasts": ("forecast_daily_orders", "model", "series_id"),
    "serving.anomalies": ("anomaly_expected", "expected_model", "series_id"),
    "serving.recommendations": ("recommendation", "model", "level"),
    "serving.sequence_recommendations": ("recommendation_sequence", "model", "segment"),
    "serving.repurchase_scores": ("repurchase", "model", "all"),
    "features.review_sentiment": ("sentiment", "model", "3class"),
}


# Gated tables a second candidate may take over: where the overriding task's decision for a scope serves its
# candidate (the fine-tuned review model), that decision judges the scope's rows;
# elsewhere the table's own does.
OVERRIDING_TASKS: dict[str, str] = {
    "features.review_sentiment": "sentiment_finetuned",
}


def _judging_decisions_sql(table: str, task: str) -> str:
    """SELECT scope, served, reason of the decisions that judge ``table``'s rows (see OVERRIDING_TASKS)."""
    own = f"SELECT scope, served, reason FROM {SERVING_DECISIONS_TABLE} WHERE task = '{task}'"
    over = OVERRIDING_TASKS.get(table)
    if over is None:
        return own
    won = (
        f"SELECT scope, served, reason FROM {SERVING_DECISIONS_TABLE} WHERE task = '{over}' "
        "AND served = candidate"
    )
    return f"{won} UNION ALL ({own} AND scope NOT IN (SELECT scope FROM ({won})))"


def serving_violations(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Rows of the gated serving tables produced by a model other than the one the decision row for their task
    and scope serves (the candidate where it lost, or any other model), grouped with counts.  Empty when the
    gate held.  Rows whose scope has no decision are not judged here (each asset refuses those itself)."""
    ensure_serving_decisions(con)
    present = set(
        con.execute("SELECT table_schema || '.' || table_name FROM information_schema.tables")
        .fetchdf()
        .iloc[:, 0]
    )
    found = []
    for table, (task, model_col, scope) in GATED_TABLES.items():
        if table not in present:
            continue
        cols = set(con.execute(f"SELECT * FROM {table} LIMIT 0").fetchdf().columns)
        if model_col not in cols:
            raise ValueError(f"{table} has no {model_col!r} column naming the model behind each row")
        scope_sql = f"t.{scope}::VARCHAR" if scope in cols else f"'{scope}'"
        found.append(
            con.execute(f"""
            SELECT '{table}' AS serving_table, {scope_sql} AS scope, t.{model_col}::VARCHAR AS model,
                   d.served, d.reason, count(*) AS rows
            FROM {table} t JOIN ({_judging_decisions_sql(table, task)}) d
              ON d.scope = {scope_sql}
            WHERE t.{model_col}::VARCHAR IS DISTINCT FROM d.served
            GROUP BY ALL""").fetchdf()
        )
    return (
        pd.concat(found, ignore_index=True)
        if found
        else pd.DataFrame(columns=["serving_table", "scope", "model", "served", "reason", "rows"])
    )


def decide_chain(
    task: str,
    scope: str,
    baseline: str,
    candidates: list[str],
    compare: Callable[[str, str], Comparison | None],
) -> list[Decision]:
    """Nested candidates, simplest first (e.g. a model without, then with, graph features): each serves only
    if it significantly beats what would serve without it (``compare(candidate, reference)``), starting from
    ``baseline``.  One decision per step, every one naming the model that finally serves."""
    current, steps = baseline, []
    for candidate in candidates:
        d = decide(task, scope, candidate, current, compare(candidate, current))
        steps.append(d)
        current = d.served
    for d in steps:
        d.served, d.reason = current, f"{d.reason}; serves: {current}"
    return steps
