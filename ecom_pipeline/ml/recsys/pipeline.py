"""The recommender workflow the assets call: evaluate every model on the temporal split, then serve.

``evaluate_all`` returns one row per (level, model, metric); ``serve`` retrains a chosen model on all
interactions and writes top-K recommendations with a short explanation from the user's real history.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ecom_pipeline.ml.recsys.data import InteractionData, as_interaction_data, interaction_count
from ecom_pipeline.ml.recsys.evaluation import MAX_EVAL_USERS, evaluate_model, split_data, top_k
from ecom_pipeline.ml.recsys.models import BASELINES, explain_many, make_model
from ecom_pipeline.ml.recsys.ranking import ranked_items, shared_item_scores

LEVELS = {"item": "product_id", "category": "category"}


@dataclass
class LevelResult:
    level: str
    k: int
    cutoff: pd.Timestamp | None
    n_train_interactions: int
    n_eval_users: int
    n_items: int
    metrics: dict = field(default_factory=dict)  # model -> {metric: value}
    fit_seconds: dict = field(default_factory=dict)
    message: str = ""
    per_user: dict = field(default_factory=dict)  # model -> per-user NDCG@k (pd.Series), for the serving gate
    n_eligible_users: int = 0  # before the evaluation sample (evaluation.MAX_EVAL_USERS)
    # the evaluated ALS and its training data: what gets registered is the model that was scored
    fitted_als: object = None
    train_data: InteractionData | None = None

    def evaluated_users(self) -> str:
        """'12,000 users' or '50,000 of 140,000 users (sampled)' for logs and metadata."""
        if self.n_eligible_users > self.n_eval_users:
            return f"{self.n_eval_users:,} of {self.n_eligible_users:,} users (sampled)"
        return f"{self.n_eval_users:,} users"

    def winner(self, metric: str | None = None) -> str | None:
        metric = metric or f"ndcg@{self.k}"
        scored = {m: v.get(metric, float("nan")) for m, v in self.metrics.items()}
        scored = {m: v for m, v in scored.items() if v == v}
        return max(scored, key=scored.get) if scored else None


def evaluate_level(
    interactions: pd.DataFrame | InteractionData,
    *,
    level: str,
    k: int,
    models: list[str],
    params: dict[str, dict],
    user_regions: pd.Series | None,
    test_fraction: float = 0.2,
    min_eval_users: int = 5,
    max_eval_users: int | None = MAX_EVAL_USERS,
    log=print,
    extra_fit_args: dict | None = None,
) -> LevelResult:
    """Every model of ``models`` on the user-level temporal split of one level.  ``interactions``: a frame, or
    every interaction already indexed by the level's column (``InteractionData`` with its regions; then
    ``user_regions`` is unused)."""
    col = LEVELS[level]
    exclude_seen = level == "item"
    rows = interaction_count(interactions)
    if rows == 0:
        return LevelResult(level, k, None, 0, 0, 0, message="no interactions: nothing to evaluate")
    try:
        split = split_data(
            as_interaction_data(interactions, user_regions, col),
            test_fraction=test_fraction,
            exclude_seen=exclude_seen,
            max_eval_users=max_eval_users,
        )
    except ValueError as exc:
        return LevelResult(level, k, None, rows, 0, 0, message=f"cannot split: {exc}")
    res = LevelResult(level, k, split.cutoff, len(split.train.frame), len(split.truth), 0)
    res.n_eligible_users = split.eligible_users
    if len(split.truth) < min_eval_users:
        res.message = (
            f"only {len(split.truth)} users have history before {split.cutoff:%Y-%m-%d} and a new "
            f"{level}-level purchase after it (< {min_eval_users}): no reliable evaluation"
        )
        return res
    data = res.train_data = split.train
    res.n_items = data.n_items
    for name in models:
        t0 = time.perf_counter()
        try:
            model = make_model(name, **params.get(name, {}))
            if name == "two_tower" and extra_fit_args:
                model.fit(data, **extra_fit_args)
            else:
                model.fit(data)
        except Exception as exc:  # one failing model must not hide the others' results
            log(f"{level}/{name}: training failed: {exc!r}")
            continue
        res.fit_seconds[name] = time.perf_counter() - t0
        if name == "als":
            res.fitted_als = model
        m = evaluate_model(model, data, split, k, exclude_seen=exclude_seen, per_user=True)
        m.pop("_score_seconds", None)
        res.per_user[name] = m.pop("_per_user_ndcg", None)
        res.metrics[name] = m
        log(f"{level}/{name}: " + ", ".join(f"{a}={b:.4f}" for a, b in m.items()))
    return res


def metrics_frame(results: list[LevelResult], dataset: str, baseline: str = "popularity") -> pd.DataFrame:
    rows = []
    for r in results:
        base = r.metrics.get(baseline, {})
        winner = r.winner()
        for model, ms in r.metrics.items():
            for metric, value in ms.items():
                rows.append(
                    {
                        "level": r.level,
                        "model": model,
                        "is_baseline": model in BASELINES,
                        "metric": metric,
                        "value": float(value),
                        "baseline": baseline,
                        "baseline_value": base.get(metric),
                        "beats_baseline": (value > base[metric])
                        if metric in base and model != baseline
                        else None,
                        "winner": model == winner,
                        "cutoff": r.cutoff,
                        "eval_users": r.n_eval_users,
                        "items": r.n_items,
                        "fit_seconds": r.fit_seconds.get(model),
                        "dataset": dataset,
                    }
                )
    cols = [
        "level",
        "model",
        "is_baseline",
        "metric",
        "value",
        "baseline",
        "baseline_value",
        "beats_baseline",
        "winner",
        "cutoff",
        "eval_users",
        "items",
        "fit_seconds",
        "dataset",
    ]
    return pd.DataFrame(rows, columns=cols)


class FittedRecommender:
    """A trained recommender with its index: what gets registered in MLflow (``predict`` → top-K ids)."""

    def __init__(self, model, data: InteractionData, k: int = 10):
        self.model, self.data, self.k = model, data, k

    def predict(self, frame: pd.DataFrame) -> list[str]:
        users = [str(u) for u in pd.DataFrame(frame)["customer_id"]]
        recs = top_k(self.model, self.data, users, self.k)
        return [" ".join(map(str, recs.get(u, []))) for u in users]


def serve(
    interactions: pd.DataFrame | InteractionData,
    *,
    level: str,
    model_name: str,
    params: dict,
    k: int,
    user_regions: pd.Series | None,
    item_names: dict | None,
    model_version: str,
    users: list | None = None,
    fitted=None,
    unfitted=None,
    catalog: list | None = None,
) -> tuple[pd.DataFrame, FittedRecommender | None]:
    """Top-k per user with score and explanation (users: everyone with history by default).

    ``unfitted``: a model object to fit on the data instead of ``make_model(model_name, **params)`` (the
    daily fold-in, :class:`~ecom_pipeline.ml.recsys.models.FoldInALS`); ``catalog``: every item that may be
    recommended (default: the items in ``interactions``).  ``interactions`` already indexed
    (``InteractionData``, e.g. built in DuckDB) carries its own regions, names and catalogue:
    ``user_regions``, ``item_names`` and ``catalog`` are not applied again."""
    cols = [
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
    data = as_interaction_data(
        interactions, user_regions, LEVELS[level], item_names=item_names, catalog=catalog
    )
    if data.n_users == 0:
        return pd.DataFrame(columns=cols), None
    model = fitted or (unfitted if unfitted is not None else make_model(model_name, **params)).fit(data)
    users = list(data.users) if users is None else users
    frames = []
    batch = 1024
    item_ids = np.asarray(data.items, dtype=object)
    shared = shared_item_scores(model, data, k) if level == "item" else None
    for start in range(0, len(users), batch):  # columnar per chunk: millions of rows stay arrays, not tuples
        chunk = users[start : start + batch]
        uidx = data.users.get_indexer(pd.Index(chunk))
        best, top = ranked_items(model, data, uidx, k, exclude_seen=level == "item", shared=shared)
        finite = np.isfinite(top)
        row, pos = np.nonzero(finite)
        items = best[row, pos]
        frames.append(
            pd.DataFrame(
                {
                    "customer_id": np.asarray(chunk, dtype=object)[row],
                    "level": level,
                    "rank": np.cumsum(finite, axis=1)[row, pos],
                    "item_id": item_ids[items],
                    "item_name": data.phrases("{name}")[items],
                    "score": top[row, pos],
                    "model": model_name,
                    "model_version": model_version,
                    "explanation": explain_many(model, data, uidx[row], items),
                },
                columns=cols,
            )
        )
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    return out, FittedRecommender(model, data, k)


def related_items(
    interactions: pd.DataFrame | InteractionData,
    *,
    n: int = 10,
    item_names: dict | None = None,
    product_embeddings: pd.DataFrame | None = None,
    products: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Item → related items: co-occurrence (item-kNN) first; items without co-occurrence neighbours (cold
    start) get content neighbours from product embeddings when present, else popular items of the same
    category.  ``interactions``: a frame, or every interaction already indexed by product (``InteractionData``
    with its item names; then ``item_names`` only labels the explanations)."""
    cols = ["product_id", "rank", "related_product_id", "score", "method", "explanation"]
    names = item_names or {}
    rows = []
    covered = set()
    data = as_interaction_data(interactions, item_col="product_id", item_names=names)
    if data.n_users:
        knn = make_model("item_knn", neighbours=max(n, 20)).fit(data)
        sim = knn.sim.tocsr()
        for i in range(data.n_items):
            s, e = sim.indptr[i], sim.indptr[i + 1]
            if e == s:
                continue
            d, c = sim.data[s:e], sim.indices[s:e]
            order = np.argsort(-d, kind="stable")[:n]
            item = data.items[i]
            covered.add(item)
            for rank, o in enumerate(order, 1):
                rows.append(
                    (
                        item,
                        rank,
                        data.items[c[o]],
                        float(d[o]),
                        "co_occurrence",
                        f"customers who bought {names.get(item, item)} also bought this",
                    )
                )
    if product_embeddings is not None and len(product_embeddings):
        emb = product_embeddings.dropna(subset=["embedding"])
        emb = emb[~emb["product_id"].astype(str).isin(covered)] if len(emb) else emb
        all_emb = product_embeddings.dropna(subset=["embedding"])
        if len(emb) and len(all_emb) > 1:
            mat = np.vstack(all_emb["embedding"].map(lambda v: np.asarray(v, dtype=np.float32)).to_numpy())
            mat /= np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-9)
            ids = all_emb["product_id"].astype(str).to_numpy()
            pos = {p: j for j, p in enumerate(ids)}
            for start in range(0, len(emb), 1024):
                chunk = emb["product_id"].astype(str).to_numpy()[start : start + 1024]
                q = mat[[pos[p] for p in chunk]]
                sims = q @ mat.T
                for row, p in enumerate(chunk):
                    sims[row, pos[p]] = -np.inf
                    top = np.argpartition(-sims[row], min(n, len(ids) - 1) - 1)[:n]
                    top = top[np.argsort(-sims[row, top])]
                    for rank, j in enumerate(top, 1):
                        rows.append(
                            (
                                p,
                                rank,
                                ids[j],
                                float(sims[row, j]),
                                "content_embedding",
                                f"similar to {names.get(p, p)} (product content)",
                            )
                        )
                    covered.add(p)
    elif products is not None and len(products) and data.n_users:
        pairs = data.frame[["u", "i"]].drop_duplicates()  # distinct customers per product
        pop = pd.Series(np.bincount(pairs["i"], minlength=data.n_items), index=data.items)
        prods = products[["product_id", "category"]].astype(str)
        prods = prods.assign(pop=prods["product_id"].map(pop).fillna(0))
        top_by_cat = {
            c: g.sort_values("pop", ascending=False).head(n + 1)
            for c, g in prods[prods["pop"] > 0].groupby("category")
        }
        for p, c in prods[["product_id", "category"]].itertuples(index=False):
            if p in covered or c not in top_by_cat:
                continue
            cand = top_by_cat[c][top_by_cat[c]["product_id"] != p].head(n)
            for rank, (q, sc) in enumerate(zip(cand["product_id"], cand["pop"]), 1):
                rows.append(
                    (p, rank, q, float(sc), "category_popularity", f"popular in the same category ({c})")
                )
    return pd.DataFrame(rows, columns=cols)
