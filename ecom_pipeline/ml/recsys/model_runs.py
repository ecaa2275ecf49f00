"""Training runs of the recommender assets, framework-free: the two-tower model beside the baselines on the
item-level temporal split, and the evaluated ALS rebuilt for registration.

They take interaction frames and plain parameters and return results; the assets read the warehouse, call
these, and record the results (MLflow, ``ml.model_metrics``, tables).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ecom_pipeline.ml.recsys.data import InteractionData, as_interaction_data, interaction_count


@dataclass
class TwoTowerRun:
    result: Any  # pipeline.LevelResult of the item level: metrics per model, cutoff, message
    model: Any = None  # the fitted TwoTower (None: not trained, see result.message)
    data: Any = None  # the training RecData (users, items) the model's vectors index


def evaluate_two_tower(
    interactions: pd.DataFrame | InteractionData,
    *,
    regions: pd.Series | None,
    side: dict,
    params: dict,
    k: int,
    test_fraction: float,
    min_eval_users: int,
    device: str,
    max_eval_users: int | None = None,
    log: Callable[[str], None] = print,
) -> TwoTowerRun:
    """Train the two-tower model and every baseline on the user-level temporal split of the item level and
    score each at ``k``; too few evaluable users (< ``min_eval_users``) trains nothing and says why.
    ``interactions``: a frame (indexed here with ``regions``) or every interaction already indexed at the
    item level (``InteractionData`` with its regions: no frame of id strings, as the asset reads it)."""
    from ecom_pipeline.ml.recsys.evaluation import evaluate_model, split_data
    from ecom_pipeline.ml.recsys.models import BASELINES, make_model
    from ecom_pipeline.ml.recsys.pipeline import LevelResult

    rows = interaction_count(interactions)
    res = LevelResult("item", k, None, rows, 0, 0)
    run = TwoTowerRun(res)
    if rows == 0:
        res.message = "no interactions: nothing to train"
        return run
    try:
        split = split_data(
            as_interaction_data(interactions, regions),
            test_fraction=test_fraction,
            max_eval_users=max_eval_users,
        )
    except ValueError as exc:
        res.message = f"cannot split: {exc}"
        return run
    res.cutoff, res.n_eval_users = split.cutoff, len(split.truth)
    res.n_train_interactions = len(split.train.frame)
    res.n_eligible_users = split.eligible_users
    if len(split.truth) < min_eval_users:
        res.message = (
            f"only {len(split.truth)} users have history before {split.cutoff:%Y-%m-%d} and a new "
            f"purchase after it (< {min_eval_users}): two-tower not trained"
        )
        return run
    run.data = split.train
    res.n_items = run.data.n_items
    for name in list(BASELINES) + ["two_tower"]:
        t0 = time.perf_counter()
        m = make_model(name, **(params if name == "two_tower" else {}))
        if name == "two_tower":
            m.fit(run.data, device=device, log=log, **side)
            run.model = m
        else:
            m.fit(run.data)
        res.fit_seconds[name] = time.perf_counter() - t0
        ms = evaluate_model(m, run.data, split, k)
        ms.pop("_score_seconds", None)
        res.metrics[name] = ms
    return run


def evaluated_als_module(result):
    """The ALS of one evaluated level (``pipeline.LevelResult``: the model fitted on the interactions before
    its cutoff and scored there) as the torch module that is registered (factors plus, at item level, the
    items each user has seen)."""
    from ecom_pipeline.ml.recsys.export import factor_module, seen_items

    als, data = result.fitted_als, result.train_data
    return factor_module(
        data.users,
        data.items,
        als.user_factors,
        als.item_factors,
        seen_items(data) if result.level == "item" else None,
    )
