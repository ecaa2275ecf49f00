"""Ranking metrics for top-K recommendation, per user and averaged.

Conventions (binary relevance, ``truth`` = the items the user interacted with in the test window):
- recall@K   = |top-K ∩ truth| / |truth|
- hit_rate@K = 1 when top-K ∩ truth is not empty
- ndcg@K     = DCG@K / IDCG@K with gain 1/log2(rank+1), IDCG over min(K, |truth|) relevant items
- map@K      = mean over users of AP@K = Σ_{i ≤ K, rec_i ∈ truth} precision@i / min(K, |truth|)
- catalog_coverage = |items recommended to anyone| / |catalogue|
- novelty    = mean over recommended items of -log2(p(item)), p = share of training users who
               interacted with the item (items never seen in training count as seen by one user)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

# at most this many users are scored per model in an evaluation (ml/recsys/evaluation.py explains why); here,
# in a module of numpy only, so the asset modules can use it as a config default without importing scipy
MAX_EVAL_USERS = 50_000


def recall_at_k(recs: Sequence, truth: set, k: int) -> float:
    if not truth:
        return float("nan")
    return len(set(recs[:k]) & truth) / len(truth)


def hit_rate_at_k(recs: Sequence, truth: set, k: int) -> float:
    if not truth:
        return float("nan")
    return float(bool(set(recs[:k]) & truth))


def ndcg_at_k(recs: Sequence, truth: set, k: int) -> float:
    if not truth:
        return float("nan")
    dcg = sum(1.0 / math.log2(i + 2) for i, r in enumerate(recs[:k]) if r in truth)
    idcg = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(truth))))
    return dcg / idcg


def average_precision_at_k(recs: Sequence, truth: set, k: int) -> float:
    if not truth:
        return float("nan")
    hits, total = 0, 0.0
    for i, r in enumerate(recs[:k]):
        if r in truth:
            hits += 1
            total += hits / (i + 1)
    return total / min(k, len(truth))


def catalog_coverage(recommendations: Mapping[object, Sequence], catalog_size: int, k: int) -> float:
    if catalog_size <= 0:
        return float("nan")
    seen = set()
    for recs in recommendations.values():
        seen.update(recs[:k])
    return len(seen) / catalog_size


def novelty(
    recommendations: Mapping[object, Sequence], item_user_counts: Mapping[object, int], n_users: int, k: int
) -> float:
    if n_users <= 0:
        return float("nan")
    values = []
    for recs in recommendations.values():
        for r in recs[:k]:
            p = max(int(item_user_counts.get(r, 0)), 1) / n_users
            values.append(-math.log2(p))
    return float(np.mean(values)) if values else float("nan")


def evaluate_rankings(
    recommendations: Mapping[object, Sequence],
    truth: Mapping[object, set],
    *,
    k: int = 10,
    catalog_size: int,
    item_user_counts: Mapping[object, int],
    n_train_users: int,
) -> dict[str, float]:
    """All metrics, averaged over the users in ``truth`` (a user without recommendations scores 0)."""
    users = [u for u, t in truth.items() if t]
    if not users:
        return {}
    per = {"recall": [], "ndcg": [], "hit_rate": [], "map": []}
    for u in users:
        recs = list(recommendations.get(u, []))
        t = truth[u]
        per["recall"].append(recall_at_k(recs, t, k))
        per["ndcg"].append(ndcg_at_k(recs, t, k))
        per["hit_rate"].append(hit_rate_at_k(recs, t, k))
        per["map"].append(average_precision_at_k(recs, t, k))
    out = {f"{name}@{k}": float(np.mean(v)) for name, v in per.items()}
    evaluated = {u: recommendations.get(u, []) for u in users}
    out["catalog_coverage"] = catalog_coverage(evaluated, catalog_size, k)
    out["novelty"] = novelty(evaluated, item_user_counts, n_train_users, k)
    return out
