"""Recommendations, refreshed for the customers with new activity.

Per level the served model is refit on all interactions (new items and new customers need it), then only the
customers with staging changes since the last refresh are scored, and their rows replace their old ones; the
rows of everyone else are kept.  What that leaves different from a full rebuild, by design:

* a kept customer's list came from the previous fit.  For ALS and item-kNN a new day moves the factors and
  similarities a little, so some kept lists would differ if recomputed; the weekly full refresh (and a full
  refresh whenever the served model or its version changes) bounds how old they get;
* a level served by a popularity baseline scores every user from global counts, so one day can change every
  list: such a level is recomputed for all users (as cheap as the incremental path would be) and says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import duckdb
import pandas as pd

from ecom_pipeline.incremental.changes import FULL_REFRESH_DAYS, RefreshPlan, plan_refresh, read_state
from ecom_pipeline.incremental.interactions import TARGET as INTERACTIONS
from ecom_pipeline.incremental.serving import MergeCounts, Part, write_customer_rows
from ecom_pipeline.ml.recsys.pipeline import serve

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
# scores from global counts alone: one day can reorder every user's list
GLOBAL_COUNT_MODELS = frozenset({"popularity", "recent_popularity", "regional_popularity"})


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
    interactions: pd.DataFrame,
    choices: list[LevelChoice],
    *,
    user_regions: pd.Series | None,
    item_names: dict,
    mode: str = "auto",
    full_refresh_days: float = FULL_REFRESH_DAYS,
    now: datetime | None = None,
) -> RecommendationsRefresh:
    """Plan, score (everyone, or the customers with new activity) and write serving.recommendations with
    its refresh state in one transaction."""
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
    with_history = set(pd.unique(interactions["customer_id"].astype(str))) if len(interactions) else set()
    frames, parts, scope = [], [], {}
    for c in choices:
        whole = plan.full or c.model in GLOBAL_COUNT_MODELS
        users = None if whole else [u for u in plan.customers if u in with_history]
        scope[c.level] = (
            "all users" + ("" if plan.full else f" ({c.model} scores from global counts)")
            if whole
            else f"{len(users):,} customers with new activity"
        )
        if users == [] or interactions.empty:
            frames.append(pd.DataFrame(columns=COLUMNS))
        else:
            df, _ = serve(
                interactions,
                level=c.level,
                model_name=c.model,
                params=c.params,
                k=c.k,
                user_regions=user_regions,
                item_names=item_names if c.level == "item" else {},
                model_version=c.version,
                users=users,
            )
            frames.append(df)
        parts.append(Part(f"level = '{c.level}'", None if whole else plan.customers))
    rows = (
        pd.concat([f for f in frames if len(f)], ignore_index=True)
        if any(len(f) for f in frames)
        else pd.DataFrame(columns=COLUMNS)
    )
    counts = write_customer_rows(con, plan, signature, rows, parts=parts, now=now)
    return RecommendationsRefresh(plan, counts, rows, scope)
