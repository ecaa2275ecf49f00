"""The recommender's serving gate: per level the best candidate serves only when its per-user NDCG beats the
best baseline's significantly; otherwise that baseline serves (and is what `_choose` picks)."""

import numpy as np
import pandas as pd

from ecom_pipeline.assets.recommender import RecommenderConfig, _choose, _gate_levels
from ecom_pipeline.ml.recsys.pipeline import LevelResult


def _level(level, per_user):
    res = LevelResult(level, 10, pd.Timestamp("2024-01-01"), 1000, len(next(iter(per_user.values()))), 50)
    res.per_user = {m: pd.Series(v, index=[f"u{i}" for i in range(len(v))]) for m, v in per_user.items()}
    res.metrics = {m: {"ndcg@10": float(np.mean(v))} for m, v in per_user.items()}
    return res


def test_worse_or_tied_candidates_lose_and_a_clear_winner_serves():
    rng = np.random.default_rng(0)
    pop = rng.uniform(0, 0.4, 1500)
    noise = np.concatenate([e := rng.normal(0, 0.2, 750), -e])  # mean difference exactly 0
    results = [
        _level("item", {"popularity": pop, "item_knn": pop * 0.9, "als": pop * 0.8}),  # a worse candidate
        _level("category", {"popularity": pop, "als": pop + noise}),  # noise around it
        _level("brand", {"popularity": pop, "als": pop + 0.1}),  # clearly better
    ]
    decisions, records = _gate_levels(results, RecommenderConfig(), "test", None)
    by = {d.scope: d for d in decisions}
    assert by["item"].candidate == "als" and by["item"].baseline == "popularity"
    assert by["item"].served == "popularity" and by["item"].ci_high < 0 and "worse" in by["item"].reason
    assert by["category"].served == "popularity" and by["category"].ci_low < 0 < by["category"].ci_high
    assert by["brand"].served == "als" and by["brand"].ci_low > 0
    assert all(r.n_units == 1500 and r.ci_low is not None for r in records)
    evaluation = pd.DataFrame(
        {"level": ["item", "item"], "model": ["als", "popularity"], "winner": [False, True]}
    )
    assert _choose("item", evaluation, RecommenderConfig())[0] == "popularity"
