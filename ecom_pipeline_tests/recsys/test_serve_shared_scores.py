"""serve() and the evaluation's top_k, for a model whose item scores are shared by groups of users (global /
recent popularity: everyone; regional popularity: each region), score only the columns that can reach a top k
after each user's purchases are excluded; the lists equal scoring every item (the path every other model
takes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ecom_pipeline.ml.recsys.data import build_data
from ecom_pipeline.ml.recsys.evaluation import top_k
from ecom_pipeline.ml.recsys.models import make_model
from ecom_pipeline.ml.recsys.pipeline import serve
from ecom_pipeline.ml.recsys.ranking import best_columns, shared_item_scores
from ecom_pipeline.ml.recsys.sequence import RepeatPurchases


def _interactions(n: int = 6000, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    kinds = np.array(["view", "cart", "purchase"])
    heavy = rng.random(n) < 0.2  # a few customers buy much of the catalogue: deep exclusions
    return pd.DataFrame(
        {
            "customer_id": np.where(heavy, "c0", [f"c{x}" for x in rng.integers(1, 400, n)]),
            "product_id": [f"p{x}" for x in rng.zipf(1.5, n) % 300],
            "category": "unknown",
            "event_type": kinds[rng.integers(0, 3, n)],
            "ts": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 10**7, n), unit="s"),
            "weight": rng.choice([1.0, 3.0, 5.0, 0.1], n),
            "source": "events",
        }
    )


class _EveryItem:
    """The same fitted model without its class: serve() scores it against every item."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):
        if name == "score_groups":  # hidden: the every-item path
            raise AttributeError(name)
        return getattr(self._model, name)


def _served_equal_to_every_item(inter, model, model_name, regions, n_users) -> pd.DataFrame:
    """serve()'s lists through the shortcut, checked equal to scoring every item; sorted by customer, rank."""
    args = dict(
        level="item",
        model_name=model_name,
        params={},
        k=10,
        user_regions=regions,
        item_names={},
        model_version="v",
    )
    fast, _ = serve(inter, fitted=model, **args)
    full, _ = serve(inter, fitted=_EveryItem(model), **args)
    assert len(fast) == 10 * n_users
    key = ["customer_id", "rank"]
    fast, full = fast.sort_values(key).reset_index(drop=True), full.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(fast, full)
    return fast


@pytest.mark.parametrize("model_name", ["popularity", "recent_popularity"])
def test_shared_scores_give_the_lists_of_scoring_every_item(model_name):
    inter = _interactions()
    data = build_data(inter, "product_id")
    model = make_model(model_name).fit(data)
    columns = shared_item_scores(model, data, 10).columns
    assert len(columns) < data.n_items  # the shortcut is taken and leaves columns out
    top10 = set(np.asarray(data.items)[np.argsort(-model.scores, kind="stable")[:10]])
    bought = inter[inter["event_type"] == "purchase"].groupby("customer_id")["product_id"].agg(set)
    assert len(bought["c0"]) > 10 and len(top10 & bought["c0"]) >= 5  # c0's list reaches deep
    fast = _served_equal_to_every_item(inter, model, model_name, None, data.n_users)
    heavy = fast[fast["customer_id"] == "c0"]["item_id"]
    assert not set(heavy) & bought["c0"]  # the heavy buyer's list skips everything they bought


def test_models_with_per_user_scores_keep_every_column():
    inter = _interactions(1500)
    data = build_data(inter, "product_id")
    assert shared_item_scores(make_model("item_knn").fit(data), data, 10) is None


def test_regional_scores_give_the_lists_of_scoring_every_item():
    inter = _interactions(9000, seed=11)
    customers = sorted(inter["customer_id"].unique())
    # three regions and customers without one (they get the global list)
    regions = pd.Series([("SP", "RJ", "MG", None)[n % 4] for n in range(len(customers))], index=customers)
    # each region prefers its own products (its zipf head shifted)
    shift = inter["customer_id"].map(pd.Series(range(len(customers)), index=customers) % 4 * 7)
    inter["product_id"] = [f"p{(int(p[1:]) + s) % 300}" for p, s in zip(inter["product_id"], shift)]
    regions = regions.dropna()
    data = build_data(inter, "product_id", user_regions=regions)
    model = make_model("regional_popularity").fit(data)
    shared = shared_item_scores(model, data, 10)
    assert len(shared.columns) < data.n_items and shared.scores.shape == (4, len(shared.columns))
    assert set(shared.group_of_user) == {0, 1, 2, 3}
    # each region's top 10 differs from the others': the union is wider than any one shortlist
    tops = {tuple(np.argsort(-row, kind="stable")[:10]) for row in model.group_scores}
    assert len(tops) == 4
    fast = _served_equal_to_every_item(inter, model, "regional_popularity", regions, data.n_users)
    assert fast["explanation"].str.startswith("popular in your region").any()


def test_best_columns_break_ties_by_column_also_at_the_cut():
    inf = np.inf
    scores = np.array(
        [
            [1.0, 3.0, 2.0, 2.0, 2.0, 0.0],  # three tied at the cut: the first two columns of them
            [-inf, -inf, 5.0, np.nan, -inf, -inf],  # one finite score, NaN treated as excluded
            [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
        ]
    )
    best, top = best_columns(scores.copy(), 3)
    assert best.tolist() == [[1, 2, 3], [2, 0, 1], [0, 1, 2]]
    assert top[0].tolist() == [3.0, 2.0, 2.0] and top[1][0] == 5.0 and not np.isfinite(top[1][1:]).any()


@pytest.mark.parametrize("exclude_seen", [True, False])
@pytest.mark.parametrize("model_name", ["popularity", "regional_popularity", "repeat"])
def test_top_k_gives_the_lists_of_scoring_every_item(model_name, exclude_seen):
    """The evaluation's top_k takes the same shortcut; "repeat" inherits popularity's class but its scores
    are personal, so it must keep every column."""
    inter = _interactions(5000, seed=3)
    customers = sorted(inter["customer_id"].unique())
    regions = pd.Series([("SP", "RJ", None)[n % 3] for n in range(len(customers))], index=customers).dropna()
    data = build_data(inter, "product_id", user_regions=regions)
    model = RepeatPurchases().fit(data) if model_name == "repeat" else make_model(model_name).fit(data)
    assert (shared_item_scores(model, data, 10) is None) == (model_name == "repeat")
    users = list(data.users)
    fast = top_k(model, data, users, 10, exclude_seen=exclude_seen)
    full = top_k(_EveryItem(model), data, users, 10, exclude_seen=exclude_seen)
    assert fast == full and len(fast) == len(users)
    assert all(len(v) == 10 for v in fast.values())
