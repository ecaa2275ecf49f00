"""User-level temporal evaluation on top of :func:`ecom_pipeline.ml.splits.temporal_split`.

Train = every interaction strictly before the cutoff; test truth = the target interactions (purchases by
default) from the cutoff on, for users who have history before the cutoff.  With ``exclude_seen`` the
truth leaves out what the user had already bought before the cutoff (the recommenders exclude those too):
recommending a known purchase is not a discovery.  Nothing after the cutoff reaches training.

Scoring every eligible user costs one full catalogue scan each (at 1M orders ~140k users: about half of the
sequence step's time went to evaluation); ``max_eval_users`` evaluates a fixed random sample instead
(``MAX_EVAL_USERS`` = 50,000 by default; it binds only on large shops: the 1M-order synthetic shop, not the
UK shop, the Olist sample or 100k synthetic orders, whose eligible users are fewer).  The serving gate's
paired bootstrap runs over the users evaluated, and says how many.  Training always uses every user; the
metadata gives both the evaluated and the eligible count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ecom_pipeline.ml.recsys.data import InteractionData, build_data
from ecom_pipeline.ml.recsys.metrics import MAX_EVAL_USERS, evaluate_rankings
from ecom_pipeline.ml.splits import temporal_split


@dataclass
class RecsysSplit:
    cutoff: pd.Timestamp
    train: pd.DataFrame
    test: pd.DataFrame  # target interactions after the cutoff (all users)
    truth: dict  # customer_id -> set of items, for users with history before the cutoff (sampled: see module)
    item_col: str
    eligible_users: int = 0  # users with a truth before sampling


def sample_users(truth: dict, max_users: int | None, seed: int = 0) -> dict:
    """At most ``max_users`` entries of ``truth``, a seeded random sample (the same users for every model
    of a run; None or 0 keeps everyone)."""
    if not max_users or len(truth) <= max_users:
        return truth
    keep = np.random.default_rng(seed).choice(np.array(sorted(truth), dtype=object), max_users, replace=False)
    return {u: truth[u] for u in keep}


def user_temporal_split(
    interactions: pd.DataFrame,
    *,
    item_col: str = "product_id",
    cutoff: pd.Timestamp | str | None = None,
    test_fraction: float = 0.2,
    target_types: tuple[str, ...] = ("purchase",),
    exclude_seen: bool = True,
    require_history: bool = True,
    max_eval_users: int | None = None,
    seed: int = 0,
) -> RecsysSplit:
    """:func:`split_data` (the one implementation: cutoff, truth, sample) for an interactions frame, with the
    training and test rows as frames; the assets split ``InteractionData`` directly."""
    s = split_data(
        build_data(interactions, item_col),
        cutoff=cutoff,
        test_fraction=test_fraction,
        target_types=target_types,
        exclude_seen=exclude_seen,
        require_history=require_history,
        max_eval_users=max_eval_users,
        seed=seed,
    )
    split = temporal_split(interactions, "ts", cutoff=s.cutoff)
    test = split.test[split.test["event_type"].isin(target_types)]
    if require_history:
        test = test[test["customer_id"].isin(set(split.train["customer_id"]))]
    return RecsysSplit(s.cutoff, split.train, test, s.truth, item_col, s.eligible_users)


@dataclass
class DataSplit:
    """:func:`split_data`'s result: the cutoff, the training rows as an :class:`InteractionData` (what
    ``build_data`` gives for them) and the truth."""

    cutoff: pd.Timestamp
    train: InteractionData
    truth: dict  # customer_id -> set of item ids, ordered by customer_id (sampled: see module)
    eligible_users: int = 0


def split_data(
    data: InteractionData,
    *,
    cutoff: pd.Timestamp | str | None = None,
    test_fraction: float = 0.2,
    target_types: tuple[str, ...] = ("purchase",),
    exclude_seen: bool = True,
    require_history: bool = True,
    max_eval_users: int | None = None,
    seed: int = 0,
    catalog: list | pd.Index | None = None,
) -> DataSplit:
    """The user-level temporal split on ``data``'s integer arrays.  Cutoff from ``temporal_split`` (over the
    target interactions' times when no cutoff is given); truth: each user's distinct target items from the
    cutoff on (users with history before it with ``require_history``; without what they bought before with
    ``exclude_seen``), at most ``max_eval_users`` users (:func:`sample_users`); ``train``: what
    ``build_data`` gives for the rows before the cutoff, ``catalog`` as there (default: the items seen
    before the cutoff).  On an interactions frame this was 9-12M rows of id strings per split at 1M orders."""
    from ecom_pipeline.ml.recsys.data import select_rows

    f = data.frame
    times = pd.DataFrame({"ts": f["ts"].to_numpy()})  # positional index: the split's rows are positions
    events = pd.Series(f["event_type"].array)
    is_target = events.isin(target_types).to_numpy(dtype=bool)
    if cutoff is None:
        cutoff = temporal_split(
            times[is_target] if is_target.any() else times, "ts", test_fraction=test_fraction
        ).cutoff
    split = temporal_split(times, "ts", cutoff=cutoff)  # refuses rows without a time, as the frame route
    is_train = np.zeros(len(times), dtype=bool)
    is_train[split.train.index.to_numpy()] = True
    u, i = f["u"].to_numpy(), f["i"].to_numpy()
    test = ~is_train & is_target
    if require_history:
        test &= np.isin(u, u[is_train])
    n_items = max(data.n_items, 1)
    pairs = np.unique(u[test] * n_items + i[test])
    if exclude_seen and len(pairs):
        bought = is_train & (events == "purchase").to_numpy(dtype=bool)
        pairs = pairs[~np.isin(pairs, u[bought] * n_items + i[bought])]
    pair_users, pair_items = np.divmod(pairs, n_items)
    ids = pd.DataFrame(
        {
            "customer_id": np.asarray(data.users, dtype=object)[pair_users],
            "item": np.asarray(data.items, dtype=object)[pair_items],
        }
    )
    truth = ids.groupby("customer_id")["item"].agg(lambda s: set(map(str, s))).to_dict()
    eligible = len(truth)
    return DataSplit(
        pd.Timestamp(split.cutoff),
        select_rows(data, is_train, catalog=catalog),
        sample_users(truth, max_eval_users, seed),
        eligible,
    )


def top_k(
    model, data: InteractionData, user_ids, k: int, *, exclude_seen: bool = True, batch: int = 512
) -> dict:
    """customer_id -> list of the top-k item ids (users unknown to ``data`` get nothing), ranked as serving
    ranks (``ranking.ranked_items``: ties by item index; group-shared scores on their candidate columns)."""
    from ecom_pipeline.ml.recsys.ranking import ranked_items, shared_item_scores

    idx = data.users.get_indexer(pd.Index([str(u) for u in user_ids]))
    known = idx >= 0
    users, idx = [u for u, ok in zip(user_ids, known) if ok], idx[known]
    shared = shared_item_scores(model, data, k, exclude_seen=exclude_seen)
    item_ids = np.asarray(data.items, dtype=object)
    out = {}
    for start in range(0, len(idx), batch):
        best, top = ranked_items(
            model, data, idx[start : start + batch], k, exclude_seen=exclude_seen, shared=shared
        )
        finite = np.isfinite(top)
        for u, row, ok in zip(users[start : start + batch], best, finite):
            out[u] = item_ids[row[ok]].tolist()
    return out


def evaluate_model(
    model,
    data: InteractionData,
    split: RecsysSplit,
    k: int = 10,
    exclude_seen: bool = True,
    per_user: bool = False,
) -> dict[str, float]:
    """Ranking metrics on the split; ``per_user`` adds ``_per_user_ndcg`` (a Series) for the serving gate."""
    t0 = time.perf_counter()
    recs = top_k(model, data, list(split.truth), k, exclude_seen=exclude_seen)
    metrics = evaluate_rankings(
        recs,
        split.truth,
        k=k,
        catalog_size=data.n_items,
        item_user_counts=data.item_user_counts(),
        n_train_users=data.n_users,
    )
    metrics["_score_seconds"] = time.perf_counter() - t0
    if per_user:
        metrics["_per_user_ndcg"] = per_user_ndcg(recs, split.truth, k)
    return metrics


def per_user_ndcg(recs: dict, truth: dict, k: int) -> pd.Series:
    """NDCG@k of every evaluated user (0 for a user the model recommends nothing to), indexed by user: the
    evaluation units the serving gate's paired bootstrap resamples."""
    from ecom_pipeline.ml.recsys.metrics import ndcg_at_k

    users = list(truth)
    return pd.Series([ndcg_at_k(recs.get(u, []), set(truth[u]), k) for u in users], index=users, dtype=float)


__all__ = [
    "MAX_EVAL_USERS",
    "DataSplit",
    "RecsysSplit",
    "build_data",
    "evaluate_model",
    "sample_users",
    "split_data",
    "top_k",
    "user_temporal_split",
]
