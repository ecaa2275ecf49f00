"""Index users and items and build the sparse user × item matrix every recommender trains on."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp


@dataclass
class InteractionData:
    """Training interactions indexed for matrix models.

    ``matrix``: users × items summed weights (CSR, float32); ``purchased``: users × items, 1 where the user
    bought the item (what recommenders exclude by default); ``frame``: the rows with integer indices
    ``u``/``i`` and their time ``ts``; ``user_region``: region label per user index (None when unknown).
    """

    users: pd.Index
    items: pd.Index
    matrix: sp.csr_matrix
    purchased: sp.csr_matrix
    frame: pd.DataFrame
    end: pd.Timestamp
    user_region: np.ndarray
    item_names: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def item_user_counts(self) -> dict:
        counts = np.asarray((self.matrix > 0).sum(axis=0)).ravel()
        return dict(zip(self.items, counts.tolist()))

    def name(self, item_idx: int) -> str:
        item = self.items[item_idx]
        return str(self.item_names.get(item, item))

    def phrases(self, template: str) -> np.ndarray:
        """``template.format(name=<item name>)`` for every item index (object array, cached per template):
        explanations for millions of rows share one string per item instead of building one per row."""
        cache = self.__dict__.setdefault("_phrases", {})
        if template not in cache:
            cache[template] = np.array(
                [template.format(name=self.name(j)) for j in range(self.n_items)], dtype=object
            )
        return cache[template]


def build_data(
    interactions: pd.DataFrame,
    item_col: str = "product_id",
    *,
    user_regions: pd.Series | None = None,
    item_names: dict | None = None,
    catalog: list | pd.Index | None = None,
) -> InteractionData:
    """``catalog``: every item that may be recommended (default: the items seen in ``interactions``)."""
    users = pd.Index(pd.unique(interactions["customer_id"].astype(str)), name="customer_id")
    seen_items = pd.unique(interactions[item_col].astype(str))
    if catalog is not None:
        extra = pd.Index([str(c) for c in catalog]).difference(pd.Index(seen_items))
        items = pd.Index(list(seen_items) + list(extra), name=item_col)
    else:
        items = pd.Index(seen_items, name=item_col)
    u = users.get_indexer(interactions["customer_id"].astype(str))
    i = items.get_indexer(interactions[item_col].astype(str))
    w = interactions["weight"].to_numpy(dtype=np.float32)
    shape = (len(users), len(items))
    matrix = sp.csr_matrix((w, (u, i)), shape=shape, dtype=np.float32)
    matrix.sum_duplicates()
    is_p = (interactions["event_type"] == "purchase").to_numpy()
    purchased = sp.csr_matrix((np.ones(is_p.sum(), dtype=np.float32), (u[is_p], i[is_p])), shape=shape)
    purchased.sum_duplicates()
    purchased.data[:] = 1.0
    frame = pd.DataFrame(
        {
            "u": u,
            "i": i,
            "weight": w,
            "ts": pd.to_datetime(interactions["ts"]).to_numpy(),
            "event_type": interactions["event_type"].to_numpy(),
        }
    )
    region = np.array([None] * len(users), dtype=object)
    if user_regions is not None and len(user_regions):
        r = user_regions.copy()
        r.index = r.index.astype(str)
        region = r.reindex(users).to_numpy(dtype=object)
        region = np.where(pd.isna(region), None, region)
    end = pd.Timestamp(frame["ts"].max()) if len(frame) else pd.Timestamp.now()
    return InteractionData(users, items, matrix, purchased, frame, end, region, dict(item_names or {}))
