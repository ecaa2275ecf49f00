"""Recommenders over :class:`InteractionData`: four baselines and implicit-feedback matrix factorisation.

Every model has ``fit(data)``, ``score(user_idx) -> (n, n_items)`` and ``explain(data, u, i) -> str``
(a short reason that refers to the user's real history or region); :func:`explain_many` gives the same
texts for many (user, item) pairs at once, vectorised where the model has ``explain_many``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ecom_pipeline.ml.recsys.data import InteractionData


def _normalise(v: np.ndarray) -> np.ndarray:
    m = float(v.max()) if v.size else 0.0
    return v / m if m > 0 else v


ANYONE = "popular with all customers"


def explain_many(model, data: InteractionData, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """``model.explain(data, u, i)`` for every pair (object array); vectorised when the model can."""
    users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
    if hasattr(model, "explain_many"):
        return model.explain_many(data, users, items)
    return np.array([model.explain(data, int(u), int(i)) for u, i in zip(users, items)], dtype=object)


def best_history_item(
    history: sp.csr_matrix, users: np.ndarray, items: np.ndarray, score, order_weight: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Per pair (u, i): the history item j of user u maximising ``score(j, i, w)`` (``w`` = history value),
    and that score; -1 where u has no history.  Ties go to the first j in the history order (column order,
    or descending value first with ``order_weight``), as ``np.argmax`` over that order would."""
    starts, ends = history.indptr[users], history.indptr[users + 1]
    lengths = ends - starts
    pair = np.repeat(np.arange(len(users)), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    entry = np.repeat(starts, lengths) + offsets
    j, w = history.indices[entry], history.data[entry]
    values = np.asarray(score(j, items[pair], w), dtype=np.float64)
    keys = (offsets, -w, -values, pair) if order_weight else (offsets, -values, pair)
    order = np.lexsort(keys)
    first = np.ones(len(order), dtype=bool)
    first[1:] = pair[order][1:] != pair[order][:-1]
    best_j, best_v = np.full(len(users), -1), np.full(len(users), -np.inf)
    chosen = order[first]
    best_j[pair[chosen]], best_v[pair[chosen]] = j[chosen], values[chosen]
    return best_j, best_v


def _you_bought_or_viewed(data: InteractionData, users: np.ndarray, best: np.ndarray) -> np.ndarray:
    out = np.full(len(users), ANYONE, dtype=object)
    has = best >= 0
    bought = np.asarray(data.purchased[users[has], best[has]]).ravel() > 0
    out[np.flatnonzero(has)[bought]] = data.phrases("similar to {name} you bought")[best[has][bought]]
    out[np.flatnonzero(has)[~bought]] = data.phrases("similar to {name} you viewed")[best[has][~bought]]
    return out


class GlobalPopularity:
    name = "popularity"
    description = "items ranked by how many training users interacted with them (weighted)"

    def fit(self, data: InteractionData):
        self.data = data
        users_per_item = np.asarray((data.matrix > 0).sum(axis=0)).ravel().astype(np.float64)
        weight = np.asarray(data.matrix.sum(axis=0)).ravel().astype(np.float64)
        # distinct users first, total weight as a tie-breaker
        self.scores = _normalise(users_per_item) + 1e-3 * _normalise(weight)
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        return np.tile(self.scores, (len(user_idx), 1))

    def score_groups(self) -> tuple[np.ndarray, np.ndarray] | None:
        """One score row shared by every user (``ranking.shared_item_scores``)."""
        return self.scores[None, :], np.zeros(self.data.n_users, dtype=np.intp)

    def explain(self, data: InteractionData, u: int, i: int) -> str:
        return ANYONE

    def explain_many(self, data: InteractionData, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.full(len(users), self.explain(data, 0, 0), dtype=object)


class RecentPopularity(GlobalPopularity):
    name = "recent_popularity"
    description = "popularity with exponential time decay (recent trend)"

    def __init__(self, half_life_days: float = 30.0):
        self.half_life_days = half_life_days

    def fit(self, data: InteractionData):
        self.data = data
        f = data.frame
        age = (data.end - f["ts"]).dt.total_seconds().to_numpy() / 86400.0
        decay = np.power(0.5, age / self.half_life_days) * f["weight"].to_numpy()
        self.scores = _normalise(np.bincount(f["i"].to_numpy(), weights=decay, minlength=data.n_items))
        return self

    def explain(self, data: InteractionData, u: int, i: int) -> str:
        return "trending recently"


class RegionalPopularity:
    name = "regional_popularity"
    description = "popularity among customers of the user's region (state), backed off to global"

    def __init__(self, global_weight: float = 0.05):
        self.global_weight = global_weight

    def fit(self, data: InteractionData):
        self.data = data
        binary = (data.matrix > 0).astype(np.float64)
        self.global_scores = _normalise(np.asarray(binary.sum(axis=0)).ravel())
        regions = data.user_region
        self.region_scores = {}
        for r in set(x for x in regions if x is not None):
            rows = np.flatnonzero(regions == r)
            self.region_scores[r] = _normalise(np.asarray(binary[rows].sum(axis=0)).ravel())
        self.group_scores, self.group_of_user = self._groups()
        return self

    def _groups(self) -> tuple[np.ndarray, np.ndarray]:
        """The distinct score rows (row 0: global, for users without a known region; then one per region)
        and each user's row: a user's scores are ``group_scores[group_of_user[u]]``."""
        regions = sorted(self.region_scores)
        rows = [self.global_scores] + [
            self.region_scores[r] + self.global_weight * self.global_scores for r in regions
        ]
        position = {r: g + 1 for g, r in enumerate(regions)}
        group = np.array([position.get(r, 0) for r in self.data.user_region], dtype=np.intp)
        return np.vstack(rows), group

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        return self.group_scores[self.group_of_user[np.asarray(user_idx, dtype=np.intp)]]

    def score_groups(self) -> tuple[np.ndarray, np.ndarray]:
        """Each region's score row and each user's row (``ranking.shared_item_scores``)."""
        return self.group_scores, self.group_of_user

    def explain(self, data: InteractionData, u: int, i: int) -> str:
        r = data.user_region[u]
        return f"popular in your region ({r})" if r is not None else ANYONE

    def explain_many(self, data: InteractionData, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        regions = data.user_region[users]
        text = {
            r: self.explain(data, int(users[k]), 0)
            for r, k in zip(*np.unique(regions.astype(str), return_index=True))
        }
        return np.array([text[r] for r in regions.astype(str)], dtype=object)


def _history(data: InteractionData, u: int) -> np.ndarray:
    row = data.matrix[u]
    return row.indices[np.argsort(-row.data, kind="stable")]


class ItemKNN:
    """Item-item cosine similarity of co-occurrence (users who interacted with both), top-N neighbours."""

    name = "item_knn"
    description = "item-kNN on co-occurrence (cosine), score = Σ similarity to the user's history"

    def __init__(self, neighbours: int = 100, block_items: int = 2048):
        self.neighbours = neighbours
        self.block_items = block_items  # similarity rows computed at once (memory, not results)

    def fit(self, data: InteractionData):
        self.data = data
        x = data.matrix.copy().astype(np.float32)
        x.data = np.log1p(x.data)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel())
        norms[norms == 0] = 1.0
        xn = x @ sp.diags(1.0 / norms)
        self.sim = self._similarity(xn, self.neighbours, self.block_items)
        self.user_matrix = x.tocsr()
        pop = np.asarray((data.matrix > 0).sum(axis=0)).ravel().astype(np.float64)
        self.fallback = 1e-6 * _normalise(pop)  # ranks the rest by popularity when history has no neighbours
        return self

    @classmethod
    def _similarity(cls, xn: sp.csr_matrix, n: int, block_items: int) -> sp.csr_matrix:
        """Each item's ``n`` most similar items: ``xn.T @ xn`` without its diagonal, pruned per row, computed
        ``block_items`` rows at a time.  The whole product before pruning was the step's largest transient
        (1.4 GB at 1M orders); a row needs only itself, and each block's rows equal the whole product's
        (same sums in the same order), so the result is the same to the bit (tested)."""
        n_items, step = xn.shape[1], max(block_items, 1)
        blocks = []
        for start in range(0, n_items, step):
            sim = (xn[:, start : start + step].T @ xn).tocsr()  # rows start.. of xn.T @ xn
            sim.setdiag(0, k=start)  # (r, start + r): the item itself
            sim.eliminate_zeros()
            blocks.append(cls._prune(sim, n))
        if not blocks:
            return sp.csr_matrix((n_items, n_items), dtype=np.float32)
        return sp.vstack(blocks, format="csr", dtype=np.float32)

    @staticmethod
    def _prune(sim: sp.csr_matrix, n: int) -> sp.csr_matrix:
        sim = sim.tocsr()
        rows, cols, vals = [], [], []
        for r in range(sim.shape[0]):
            s, e = sim.indptr[r], sim.indptr[r + 1]
            if e - s == 0:
                continue
            d, c = sim.data[s:e], sim.indices[s:e]
            if e - s > n:
                keep = np.argpartition(-d, n - 1)[:n]
                d, c = d[keep], c[keep]
            rows.append(np.full(len(c), r))
            cols.append(c)
            vals.append(d)
        if not rows:
            return sp.csr_matrix(sim.shape, dtype=np.float32)
        return sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=sim.shape,
            dtype=np.float32,
        )

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        s = (self.user_matrix[user_idx] @ self.sim).toarray().astype(np.float64)
        return s + self.fallback

    def explain(self, data: InteractionData, u: int, i: int) -> str:
        hist = self.user_matrix[u]
        if hist.nnz:
            contrib = np.asarray(self.sim[hist.indices, i].todense()).ravel() * hist.data
            if contrib.max() > 0:
                j = hist.indices[int(np.argmax(contrib))]
                return f"customers who bought {data.name(j)} also bought this"
        return ANYONE

    def explain_many(self, data: InteractionData, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        def contribution(j, i, w):
            return np.asarray(self.sim[j, i]).ravel() * w if len(j) else np.zeros(0)

        best, value = best_history_item(self.user_matrix, users, items, contribution)
        out = np.full(len(users), ANYONE, dtype=object)
        hit = (best >= 0) & (value > 0)
        out[hit] = data.phrases("customers who bought {name} also bought this")[best[hit]]
        return out


class ALSRecommender:
    """Implicit-feedback ALS (Hu, Koren & Volinsky) from the ``implicit`` package, CPU."""

    name = "als"
    description = "matrix factorisation for implicit feedback (implicit ALS), confidence = 1 + alpha·weight"

    def __init__(
        self,
        factors: int = 32,
        regularization: float = 0.05,
        iterations: int = 15,
        alpha: float = 2.0,
        seed: int = 0,
    ):
        self.params = dict(
            factors=factors, regularization=regularization, iterations=iterations, alpha=alpha, seed=seed
        )

    def fit(self, data: InteractionData):
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        p = self.params
        self.data = data
        x = data.matrix.copy().astype(np.float32)
        x.data = np.log1p(x.data)
        with threadpool_limits(1, "blas"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            model = AlternatingLeastSquares(
                factors=p["factors"],
                regularization=p["regularization"],
                iterations=p["iterations"],
                alpha=p["alpha"],
                random_state=p["seed"],
            )
            model.fit(x, show_progress=False)
        self.user_factors = np.asarray(model.user_factors)
        self.item_factors = np.asarray(model.item_factors)
        norms = np.linalg.norm(self.item_factors, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        self._unit = self.item_factors / norms
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        return self.user_factors[user_idx] @ self.item_factors.T

    def item_similarity(self, i: int) -> np.ndarray:
        return self._unit @ self._unit[i]

    def explain(self, data: InteractionData, u: int, i: int) -> str:
        hist = _history(data, u)
        if len(hist):
            sims = self._unit[hist] @ self._unit[i]
            j = hist[int(np.argmax(sims))]
            return (
                f"similar to {data.name(j)} you bought"
                if data.purchased[u, j]
                else f"similar to {data.name(j)} you viewed"
            )
        return ANYONE

    def explain_many(self, data: InteractionData, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        def similarity(j, i, w):
            return np.einsum("nf,nf->n", self._unit[j], self._unit[i])

        best, _ = best_history_item(data.matrix, users, items, similarity, order_weight=True)
        return _you_bought_or_viewed(data, users, best)


class FoldInALS(ALSRecommender):
    """ALS that keeps the item factors of an earlier fit and solves only the user vectors.

    ``fit(data)`` is the user half-step of implicit ALS (``AlternatingLeastSquares.recalculate_user``: for
    each user the regularised weighted least squares against the fixed item factors, the same solve every ALS
    iteration does), so a customer with new activity gets the vector a refit's last user step would give with
    those item factors, at the cost of one small solve per customer instead of a refit on every interaction.
    Every item of ``data`` must have a factor (the caller drops interactions with items new since the fit).
    """

    def __init__(self, item_ids, item_factors: np.ndarray, **params):
        super().__init__(**params)
        self.fixed_items = pd.Index([str(i) for i in item_ids])
        self.fixed_factors = np.asarray(item_factors, dtype=np.float32)

    def fit(self, data: InteractionData):
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        pos = self.fixed_items.get_indexer(pd.Index([str(i) for i in data.items]))
        if (pos < 0).any():
            raise ValueError(f"{int((pos < 0).sum())} items have no factor in the earlier fit")
        p = self.params
        self.data = data
        self.item_factors = self.fixed_factors[pos]
        x = data.matrix.copy().astype(np.float32)
        x.data = np.log1p(x.data)
        model = AlternatingLeastSquares(
            factors=self.item_factors.shape[1],
            regularization=p["regularization"],
            alpha=p["alpha"],
            random_state=p["seed"],
        )
        model.item_factors = self.item_factors
        with threadpool_limits(1, "blas"):
            self.user_factors = np.asarray(model.recalculate_user(np.arange(x.shape[0]), x.tocsr()))
        norms = np.linalg.norm(self.item_factors, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        self._unit = self.item_factors / norms
        return self


BASELINES = ("popularity", "recent_popularity", "regional_popularity", "item_knn")


def make_model(name: str, **params):
    classes = {
        c.name: c for c in (GlobalPopularity, RecentPopularity, RegionalPopularity, ItemKNN, ALSRecommender)
    }
    if name == "two_tower":
        from ecom_pipeline.ml.recsys.two_tower import TwoTowerRecommender

        return TwoTowerRecommender(**params)
    if name not in classes:
        raise KeyError(f"unknown recommender {name!r}; choose one of {sorted(classes) + ['two_tower']}")
    return classes[name](**params)
