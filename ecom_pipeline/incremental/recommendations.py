"""Recommendations, refreshed for the customers with new activity.

Only the customers with staging changes since the last refresh are scored, and their rows replace their old
ones; the rows of everyone else are kept.  Per level, what the scores come from:

* **ALS: refit weekly, fold-in daily.**  The refit on every interaction was most of the daily cost (0.78 of
  the incremental steps at 50k orders).  The item factors of the last fit are kept
  (``incremental.recommender_fits``) and a daily run solves only the vectors of the customers with new
  activity against them (:class:`~ecom_pipeline.ml.recsys.models.FoldInALS`: the ALS user step).  The
  model is refit (and its factors stored) on every full refresh (weekly, a new served model, version or
  parameters, ``refresh: full``) and whenever the interactions grew by more than ``REFIT_GROWTH`` (5 %)
  since the fit.  Items new since the fit have no factor: they are not recommended, and a customer whose
  history holds only such items gets no list, until the refit (the metadata counts both).
  The serving gate's evaluation stays what it measured: ALS fit on the training split vs its baselines on
  the later test split.  It did not measure fold-in with factors up to a week old; the weekly full refresh
  bounds that, and ``benchmarks/incremental.py`` reports how many of the recomputed customers' items a
  full refit would give (overlap@k).
* **item-kNN and the rest**: refit on all interactions (the similarities come from one sparse product;
  new items and customers need it), then only the changed customers are scored.
* a kept customer's list came from an earlier fit: for ALS and item-kNN a new day moves the factors and
  similarities a little, so some kept lists would differ if recomputed; the weekly full refresh (and a full
  refresh whenever the served model or its version changes) bounds how old they get;
* **popularity baselines** (global or regional counts) follow the same rule by default: the counts are
  recomputed from all interactions, then only the customers with new activity are scored.  One day moves
  the counts of a long history very little, but it can swap neighbouring ranks in kept lists until the weekly
  full refresh (``benchmarks/incremental.py`` counts the kept customers whose list a full refresh changes).
  Scoring everyone from global counts every day rewrote every customer's rows: at 1M orders 9M rows, 51 s of
  the 126 s daily scoring (``benchmarks/results/load_daily.md``).  ``global_counts_everyone=True`` (asset
  config ``global_counts_refresh: everyone``) keeps that behaviour for shops that want today's ranks for all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import duckdb
import numpy as np
import pandas as pd

from ecom_pipeline.incremental.changes import FULL_REFRESH_DAYS, RefreshPlan, plan_refresh, read_state
from ecom_pipeline.incremental.interactions import TARGET as INTERACTIONS
from ecom_pipeline.incremental.interactions import (
    count_stored_interactions,
    customers_with_interactions,
    read_interaction_levels,
    read_interactions,
)
from ecom_pipeline.incremental.serving import MergeCounts, Part, write_customer_rows
from ecom_pipeline.ml.recsys.data import InteractionData
from ecom_pipeline.ml.recsys.pipeline import LEVELS, FittedRecommender, serve
from ecom_pipeline.warehouse.tables import atomic, table_exists

TARGET = "serving.recommendations"
COLUMNS = [
    "customer_id",
    "level",
    "rank",
    "item_id",
    "item_name",
    "score",
    "model",
    "model_version",
    "explanation",
]
# scores from global counts alone: one day can reorder any user's list (rescored for everyone daily only with
# global_counts_everyone)
GLOBAL_COUNT_MODELS = frozenset({"popularity", "recent_popularity", "regional_popularity"})
# one list for everyone at a level without per-user exclusion (not the item level, which drops what a user
# bought): scored once and repeated per user instead of once per user (same rows, ~1/users of the work)
SAME_LIST_FOR_EVERYONE = frozenset({"popularity", "recent_popularity"})
# models whose daily run folds new activity into the last fit instead of refitting (see the module docstring)
FOLD_IN_MODELS = frozenset({"als"})
FITS = "incremental.recommender_fits"  # per level: the fit's signature, time, size and item factors
REFIT_GROWTH = 0.05  # refit when the interactions grew by more than this fraction since the fit


@dataclass
class StoredFit:
    signature: str
    fitted_at: object
    interactions: int
    item_ids: list
    factors: np.ndarray


def fit_signature(c: LevelChoice) -> str:
    return f"{c.model}@{c.version}/{json.dumps(c.params, sort_keys=True)}"


def read_fit(con: duckdb.DuckDBPyConnection, level: str) -> StoredFit | None:
    if not table_exists(con, FITS):
        return None
    f = con.execute(
        f"SELECT signature, fitted_at, interactions, item_id, factors FROM {FITS} WHERE level = ? "
        "ORDER BY item_index",
        [level],
    ).fetchdf()
    if f.empty:
        return None
    factors = np.vstack([np.asarray(v, dtype=np.float32) for v in f["factors"]])
    first = f.iloc[0]
    return StoredFit(
        first["signature"], first["fitted_at"], int(first["interactions"]), f["item_id"].tolist(), factors
    )


def store_fit(
    con: duckdb.DuckDBPyConnection, level: str, signature: str, interactions: int, fitted: FittedRecommender
) -> None:
    items = [str(i) for i in fitted.data.items]
    frame = pd.DataFrame(
        {
            "level": level,
            "signature": signature,
            "fitted_at": pd.Timestamp.now(tz="UTC").tz_localize(None),
            "interactions": interactions,
            "item_index": np.arange(len(items)),
            "item_id": pd.Series(items, dtype="string"),
            "factors": [row.tolist() for row in np.asarray(fitted.model.item_factors, dtype=np.float32)],
        }
    )
    con.execute("CREATE SCHEMA IF NOT EXISTS incremental")
    con.register("_fit", frame)
    try:
        with atomic(con):
            con.execute(
                f"CREATE TABLE IF NOT EXISTS {FITS} (level VARCHAR, signature VARCHAR, fitted_at TIMESTAMP, "
                "interactions BIGINT, item_index BIGINT, item_id VARCHAR, factors FLOAT[])"
            )
            con.execute(f"DELETE FROM {FITS} WHERE level = ?", [level])
            con.execute(f"INSERT INTO {FITS} BY NAME SELECT * FROM _fit")
    finally:
        con.unregister("_fit")


def refit_reason(fit: StoredFit | None, signature: str, interactions: int, growth: float) -> str | None:
    """Why the served model must be refit before scoring, or None: fold the customers into ``fit``."""
    if fit is None:
        return "no stored fit"
    if fit.signature != signature:
        return f"the stored fit is of {fit.signature}"
    grown = interactions / max(fit.interactions, 1) - 1
    if grown > growth:
        return f"interactions grew {grown:.1%} since the fit (more than {growth:.0%})"
    return None


@dataclass
class LevelChoice:
    """The model that serves one level, why, and the version its rows are labelled with."""

    level: str
    k: int
    model: str
    why: str
    version: str
    params: dict


@dataclass
class RecommendationsRefresh:
    plan: RefreshPlan
    counts: MergeCounts
    rows: pd.DataFrame  # the rows written (every row on a full refresh, the recomputed ones otherwise)
    scope: dict  # level -> whom it recomputed


def recommendations_signature(choices: list[LevelChoice]) -> str:
    return ";".join(
        f"{c.level}={c.model}@{c.version}/k={c.k}/{json.dumps(c.params, sort_keys=True)}" for c in choices
    )


def refresh_recommendations(
    con: duckdb.DuckDBPyConnection,
    choices: list[LevelChoice],
    *,
    user_regions: pd.Series | None,
    item_names: dict,
    mode: str = "auto",
    full_refresh_days: float = FULL_REFRESH_DAYS,
    now: datetime | None = None,
    refit_growth: float = REFIT_GROWTH,
    global_counts_everyone: bool = False,
) -> RecommendationsRefresh:
    """Plan, score (everyone, or the customers with new activity) and write serving.recommendations with
    its refresh state in one transaction.  ``global_counts_everyone``: a level served by a popularity model is
    rescored for every customer on incremental runs too (its ranks move with everyone's activity).

    The interactions are read from ``con``'s features.interactions as the levels need them: indexed in
    DuckDB for the levels fit on all of them, together (no frame of every interaction's ids: 11.8M rows at
    1M orders), only the scored customers' rows for an ALS fold-in."""
    # the interactions are the input: cover the staging changes they cover, and rebuild in full when they
    # were (new weights, a changed product: every customer's rows may differ)
    inputs = read_state(con, INTERACTIONS) or {}
    signature = recommendations_signature(choices) + f";interactions_full={inputs.get('last_full_at')}"
    plan = plan_refresh(
        con,
        TARGET,
        signature=signature,
        mode=mode,
        full_refresh_days=full_refresh_days,
        now=now,
        input_target=INTERACTIONS,
        input_watermark=inputs.get("watermark"),
    )
    n = count_stored_interactions(con)
    with_history = None  # the planned customers that have interactions: asked only when a level needs it
    levels, parts, scope = [], [], {}
    for c in choices:
        whole = plan.full or (global_counts_everyone and c.model in GLOBAL_COUNT_MODELS)
        if not whole and with_history is None:
            with_history = customers_with_interactions(con, plan.customers)
        users = None if whole else [u for u in plan.customers if u in with_history]
        scope[c.level] = (
            "all users" + ("" if plan.full else f" ({c.model} scores from global counts)")
            if whole
            else f"{len(users):,} customers with new activity"
        )
        parts.append(Part(f"level = '{c.level}'", None if whole else plan.customers))
        if users != [] and n:
            levels.append(_LevelWork(c, users, *_fit_to_fold_into(con, c, users, n, refit_growth)))
    # the levels fit on every interaction read them together: one numbering of the rows for all
    every = [LEVELS[w.choice.level] for w in levels if w.fold_into is None]
    data = read_interaction_levels(
        con, tuple(every), user_regions=user_regions, item_names={LEVELS["item"]: item_names}
    )
    frames = []
    for w in levels:
        df, note = _score_level(con, w, n, data.pop(LEVELS[w.choice.level], None), user_regions, item_names)
        scope[w.choice.level] += note
        frames.append(df)
    rows = (
        pd.concat([f for f in frames if len(f)], ignore_index=True)
        if any(len(f) for f in frames)
        else pd.DataFrame(columns=COLUMNS)
    )
    counts = write_customer_rows(con, plan, signature, rows, parts=parts, now=now)
    return RecommendationsRefresh(plan, counts, rows, scope)


@dataclass
class _LevelWork:
    choice: LevelChoice
    users: list[str] | None  # None: everyone
    fold_into: StoredFit | None  # the stored ALS fit the customers are folded into, or None: fit on all
    why: str | None  # why the served model is fit on all interactions (ALS: the refit's reason)


def _fit_to_fold_into(
    con: duckdb.DuckDBPyConnection, c: LevelChoice, users: list[str] | None, n: int, refit_growth: float
) -> tuple[StoredFit | None, str | None]:
    """(the stored fit to fold ``users`` into, None) for an incremental ALS level with no refit due, else
    (None, why the model is fit on all ``n`` interactions)."""
    if users is None:
        return None, "full refresh"
    if c.model not in FOLD_IN_MODELS:
        return None, None
    fit = read_fit(con, c.level)
    why = refit_reason(fit, fit_signature(c), n, refit_growth)
    return (fit, None) if why is None else (None, why)


def _score_level(
    con: duckdb.DuckDBPyConnection,
    w: _LevelWork,
    n: int,
    data: InteractionData | None,
    user_regions: pd.Series | None,
    item_names: dict,
) -> tuple[pd.DataFrame, str]:
    """The rows of ``w.users`` at one level, and a note on what the scores came from: a fold-in into the
    stored fit (ALS, incremental, no refit due) or a fit on ``data``, all ``n`` interactions (stored for
    ALS)."""
    c, users = w.choice, w.users
    names = item_names if c.level == "item" else {}
    common = dict(level=c.level, model_name=c.model, params=c.params, k=c.k, user_regions=user_regions)
    if w.fold_into is not None:
        return _fold_in(con, c, w.fold_into, n, users, names, common)
    if c.model in SAME_LIST_FOR_EVERYONE and c.level != "item":
        everyone = list(data.users) if users is None else users
        one, _ = serve(data, model_version=c.version, users=everyone[:1], item_names=names, **common)
        return _broadcast(one, everyone), "; one list scored once, the same for everyone"
    df, fitted = serve(data, model_version=c.version, users=users, item_names=names, **common)
    if c.model in FOLD_IN_MODELS and fitted is not None:
        store_fit(con, c.level, fit_signature(c), n, fitted)
        return df, f"; refit ({w.why}), factors stored"
    return df, ""


def _fold_in(
    con: duckdb.DuckDBPyConnection,
    c: LevelChoice,
    fit: StoredFit,
    n: int,
    users: list[str],
    item_names: dict,
    common: dict,
) -> tuple[pd.DataFrame, str]:
    from ecom_pipeline.ml.recsys.models import FoldInALS

    col = LEVELS[c.level]
    mine = read_interactions(con, customers=users)
    known = mine[mine[col].astype(str).isin(set(fit.item_ids))]
    scored = set(known["customer_id"].astype(str))
    new_items = mine.loc[~mine[col].astype(str).isin(set(fit.item_ids)), col].nunique()
    grown = n / max(fit.interactions, 1) - 1
    note = (
        f"; fold-in into the fit of {fit.fitted_at} ({grown:+.1%} interactions since), "
        f"{new_items:,} items new since the fit not recommended, "
        f"{len(set(users) - scored):,} customers with only such items without a list until the refit"
    )
    if known.empty:
        return pd.DataFrame(columns=COLUMNS), note
    df, _ = serve(
        known,
        model_version=c.version,
        users=[u for u in users if u in scored],
        unfitted=FoldInALS(fit.item_ids, fit.factors, **c.params),
        catalog=fit.item_ids,
        item_names=item_names,
        **common,
    )
    return df, note


def _broadcast(one: pd.DataFrame, users: list[str]) -> pd.DataFrame:
    """The rows of one user's list repeated for every user (in ``users`` order), as serve() would give."""
    if one.empty:
        return pd.DataFrame(columns=COLUMNS)
    rows = one.iloc[np.tile(np.arange(len(one)), len(users))].reset_index(drop=True)
    rows["customer_id"] = np.repeat(np.asarray(users, dtype=object), len(one))
    return rows
