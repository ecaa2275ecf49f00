"""Each user's top k from a model's scores: the one ranking that evaluation (``evaluation.top_k``) and serving
(``pipeline.serve``, the sequence step's serving rows) use.

Ties are broken by the lower item index, also at the cut, so a list does not depend on which columns were
scored.  That lets models whose scores depend on the user only through a group (popularity: one list for
everyone; regional popularity: one per region) score only the few columns that can reach anyone's top k
(:func:`shared_item_scores`): at 1M orders, 600k users x 20k items took ~100 s for the global list, ~7 s this
way.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ecom_pipeline.ml.recsys.data import InteractionData


def best_columns(scores: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``kk`` best columns, best first, and their scores; equal scores in column order, also at the
    cut (``argpartition`` alone would pick any of the tied columns there).  NaN ranks last."""
    n = scores.shape[1]
    if kk < n:
        # partitioning one further column shows the rows where a tie crosses the cut, without another pass
        part = np.argpartition(-scores, kk, axis=1)[:, : kk + 1]
        vals = np.take_along_axis(scores, part, axis=1)
        cut = vals[:, :kk].min(axis=1)
        crossing = np.flatnonzero(vals[:, kk] == cut)
        part = part[:, :kk]
        if len(crossing):
            part[crossing] = _first_tied_columns(scores[crossing], cut[crossing], kk)
    else:
        part = np.tile(np.arange(n), (len(scores), 1))
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)  # by score, then by column
    best = np.take_along_axis(part, order, axis=1)
    return best, np.take_along_axis(scores, best, axis=1)


def _first_tied_columns(scores: np.ndarray, cut: np.ndarray, kk: int) -> np.ndarray:
    """The ``kk`` best columns of rows where a tie at ``cut`` (each row's kk-th best score) crosses the cut:
    every column above it, then the first tied ones in column order."""
    above = scores > cut[:, None]
    need = kk - above.sum(axis=1)
    rows, cols = np.nonzero(scores == cut[:, None])  # row-major: per row in column order
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)  # position among the row's tied columns
    first = rank < need[rows]
    above[rows[first], cols[first]] = True
    return np.nonzero(above)[1].reshape(len(scores), kk)


class SharedScores(NamedTuple):
    """Item scores that depend on the user only through a group: ``scores[group_of_user[u]]`` over
    ``columns``."""

    columns: np.ndarray
    scores: np.ndarray  # groups x columns
    group_of_user: np.ndarray


def shared_item_scores(
    model, data: InteractionData, k: int, *, exclude_seen: bool = True
) -> SharedScores | None:
    """For a model whose item scores are shared by groups of users (it has ``score_groups()``, which returns
    each group's score row and each user's group, or None): the only columns that can reach anyone's top
    ``k`` (per group, its best ``k``, plus the most items any user bought when purchases are excluded; their
    union), and each group's scores on them."""
    groups = getattr(model, "score_groups", lambda: None)()
    if groups is None:
        return None
    scores, group_of_user = np.asarray(groups[0], dtype=np.float64), np.asarray(groups[1], dtype=np.intp)
    most_bought = int(data.purchased.getnnz(axis=1).max()) if exclude_seen and data.purchased.shape[0] else 0
    depth = k + most_bought
    # in column order, as in the full matrix: best_columns breaks ties by position
    columns = np.unique(np.concatenate([np.argsort(-row, kind="stable")[:depth] for row in scores]))
    return SharedScores(columns, scores[:, columns], group_of_user)


def ranked_items(
    model,
    data: InteractionData,
    user_idx: np.ndarray,
    k: int,
    *,
    exclude_seen: bool,
    shared: SharedScores | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The top ``min(k, n_items)`` item indices of each user in ``user_idx`` (rows) and their scores, best
    first; a user's own purchases score -inf with ``exclude_seen`` (callers drop non-finite entries).
    ``shared``: :func:`shared_item_scores` of the model, computed once per model."""
    if shared is None:
        columns, scores = None, np.asarray(model.score(user_idx), dtype=np.float64)
    else:
        columns, scores = shared.columns, shared.scores[shared.group_of_user[user_idx]]
    if exclude_seen:
        bought = data.purchased[user_idx] if columns is None else data.purchased[user_idx][:, columns]
        r, c = bought.nonzero()
        scores[r, c] = -np.inf
    best, top = best_columns(scores, min(k, scores.shape[1]))
    return (best if columns is None else columns[best]), top


__all__ = ["SharedScores", "best_columns", "ranked_items", "shared_item_scores"]
