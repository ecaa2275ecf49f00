"""Every baseline and model on a world with planted preferences: the personalised ones must beat
popularity."""

import pandas as pd
import pytest

from ecom_pipeline.ml.recsys.data import build_data
from ecom_pipeline.ml.recsys.evaluation import evaluate_model, top_k, user_temporal_split
from ecom_pipeline.ml.recsys.interactions import build_interactions
from ecom_pipeline.ml.recsys.models import make_model
from ecom_pipeline.ml.recsys.planted import planted_world


@pytest.fixture(scope="module")
def world():
    w = planted_world(n_users=500, n_items=250, seed=1)
    inter = build_interactions(w["orders"], w["order_items"], w["events"], w["products"])
    regions = w["customers"].set_index("customer_id")["state"]
    return w, inter, regions


def _evaluate(world, name, level="product_id", k=10, exclude_seen=True):
    w, inter, regions = world
    s = user_temporal_split(inter, item_col=level, exclude_seen=exclude_seen)
    names = w["products"].set_index("product_id")["title"].to_dict() if level == "product_id" else {}
    data = build_data(s.train, level, user_regions=regions, item_names=names)
    model = make_model(name).fit(data)
    return evaluate_model(model, data, s, k, exclude_seen=exclude_seen), model, data, s


@pytest.mark.parametrize("name", ["recent_popularity", "regional_popularity", "item_knn", "als"])
def test_models_beat_global_popularity_on_planted_items(world, name):
    pop, *_ = _evaluate(world, "popularity")
    got, *_ = _evaluate(world, name)
    if name == "recent_popularity":  # no planted trend: it must at least not collapse
        assert got["ndcg@10"] > 0.8 * pop["ndcg@10"]
    else:
        assert got["ndcg@10"] > pop["ndcg@10"] * 1.1, (name, got, pop)
        assert got["recall@10"] > pop["recall@10"]


def test_als_recovers_planted_category_taste(world):
    pop, *_ = _evaluate(world, "popularity", level="category", k=3, exclude_seen=False)
    als, *_ = _evaluate(world, "als", level="category", k=3, exclude_seen=False)
    assert als["ndcg@3"] > pop["ndcg@3"] * 1.2
    # the favourite category is the top recommendation for most users
    w, inter, regions = world
    _, model, data, s = _evaluate(world, "als", level="category", k=1, exclude_seen=False)
    recs = top_k(model, data, list(data.users), 1, exclude_seen=False)
    taste = w["taste"].set_index("customer_id")["category"]
    agree = sum(recs[u][0] == taste[u] for u in recs) / len(recs)
    assert agree > 0.6


def test_explanations_reference_real_history(world):
    _, model, data, _ = _evaluate(world, "item_knn")
    _, als, _, _ = _evaluate(world, "als")
    _, reg, _, _ = _evaluate(world, "regional_popularity")
    u = 0
    recs = top_k(model, data, [data.users[u]], 3)[data.users[u]]
    history_names = {data.name(j) for j in data.matrix[u].indices}
    for item in recs:
        i = data.items.get_loc(item)
        for m in (model, als):
            text = m.explain(data, u, i)
            assert any(name in text for name in history_names), text
        assert reg.explain(data, u, i) == f"popular in your region ({data.user_region[u]})"


def test_recommendations_exclude_purchases(world):
    _, model, data, _ = _evaluate(world, "als")
    recs = top_k(model, data, list(data.users[:50]), 10)
    for u, items in recs.items():
        bought = {data.items[j] for j in data.purchased[data.users.get_loc(u)].indices}
        assert not bought & set(items)
        assert len(items) == 10


@pytest.mark.parametrize(
    "name", ["popularity", "recent_popularity", "regional_popularity", "item_knn", "als", "two_tower"]
)
def test_vectorised_explanations_equal_the_per_pair_ones(world, name):
    import numpy as np

    from ecom_pipeline.ml.recsys.models import explain_many

    w, inter, regions = world
    s = user_temporal_split(inter, item_col="product_id")
    names = w["products"].set_index("product_id")["title"].to_dict()
    data = build_data(s.train, "product_id", user_regions=regions, item_names=names)
    params = {"epochs": 1, "max_seconds": 20} if name == "two_tower" else {}
    model = make_model(name, **params).fit(data)
    rng = np.random.default_rng(0)
    users = rng.integers(0, data.n_users, 400)
    items = rng.integers(0, data.n_items, 400)
    # each user's own top items too, where history explanations are most often non-trivial
    top = top_k(model, data, [data.users[u] for u in users[:50]], 3)
    pairs = [(u, data.items.get_loc(i)) for u in users[:50] for i in top[data.users[u]]]
    users = np.concatenate([users, [p[0] for p in pairs]])
    items = np.concatenate([items, [p[1] for p in pairs]])
    got = explain_many(model, data, users, items)
    expected = [model.explain(data, int(u), int(i)) for u, i in zip(users, items)]
    assert list(got) == expected
    assert len(set(expected)) > 1 or name in ("popularity", "recent_popularity")


def test_serve_ranks_exclude_purchases_and_explain(world):
    from ecom_pipeline.ml.recsys.pipeline import serve

    w, inter, regions = world
    names = w["products"].set_index("product_id")["title"].to_dict()
    out, fitted = serve(
        inter,
        level="item",
        model_name="item_knn",
        params={},
        k=5,
        user_regions=regions,
        item_names=names,
        model_version="v-test",
    )
    data = fitted.data
    assert len(out) == 5 * data.n_users
    assert out.groupby("customer_id")["rank"].apply(list).map(lambda r: r == [1, 2, 3, 4, 5]).all()
    first = out[out["customer_id"] == data.users[0]]
    bought = {data.items[j] for j in data.purchased[0].indices}
    assert not bought & set(first["item_id"])
    assert first["score"].is_monotonic_decreasing
    assert list(first["item_id"]) == fitted.predict(pd.DataFrame({"customer_id": [data.users[0]]}))[0].split()
    assert list(first["explanation"]) == [
        fitted.model.explain(data, 0, data.items.get_loc(i)) for i in first["item_id"]
    ]
    assert (first["item_name"] == [names.get(i, i) for i in first["item_id"]]).all()


@pytest.mark.parametrize("block_items", [1, 7, 64, 10_000])
def test_item_knn_similarity_in_blocks_equals_the_whole_product(world, block_items):
    """ItemKNN computes its similarity a block of rows at a time (memory); its neighbours, their values and
    the scores are those of the whole product pruned once (the implementation before the blocks)."""
    import numpy as np
    import scipy.sparse as sp

    from ecom_pipeline.ml.recsys.models import ItemKNN

    _, inter, _ = world
    data = build_data(inter, "product_id")
    model = ItemKNN(neighbours=5, block_items=block_items).fit(data)
    x = data.matrix.copy().astype(np.float32)
    x.data = np.log1p(x.data)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel())
    norms[norms == 0] = 1.0
    xn = x @ sp.diags(1.0 / norms)
    whole = (xn.T @ xn).tocsr()
    whole.setdiag(0)
    whole.eliminate_zeros()
    reference = ItemKNN._prune(whole, 5)
    assert model.sim.shape == reference.shape and model.sim.dtype == reference.dtype
    assert (model.sim != reference).nnz == 0 and model.sim.nnz == reference.nnz > 0
    users = np.arange(min(data.n_users, 200))
    np.testing.assert_array_equal(model.score(users), (x[users] @ reference).toarray() + model.fallback)
