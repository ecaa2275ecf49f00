"""What gets registered in MLflow for a factor recommender: a tiny torch module (pytorch flavor).

It carries the user and item ids and the factors, so the registered state dict and ids
(``ml/safe_artifacts.py``) give back something that scores without the training code:
``module(torch.tensor([user_index]))`` → item scores, and ``module.recommend(customer_id, k)`` → item ids.
"""

from __future__ import annotations

import numpy as np


def _module_base():
    import torch.nn

    return torch.nn.Module


class FactorRecommenderModule(_module_base()):
    """User and item factors (buffers) with their ids; ``safe_config`` + the state dict rebuild it."""

    def __init__(
        self, user_ids, item_ids, user_factors: np.ndarray, item_factors: np.ndarray, seen: dict | None = None
    ):
        import torch

        super().__init__()
        self.register_buffer("user_factors", torch.as_tensor(np.asarray(user_factors, dtype=np.float32)))
        self.register_buffer("item_factors", torch.as_tensor(np.asarray(item_factors, dtype=np.float32)))
        self.user_ids = [str(u) for u in user_ids]
        self.item_ids = [str(i) for i in item_ids]
        self.seen = {str(k): list(map(int, v)) for k, v in (seen or {}).items()}

    def safe_config(self) -> dict:
        return {
            "user_ids": self.user_ids,
            "item_ids": self.item_ids,
            "seen": self.seen,
            "n_factors": int(self.user_factors.shape[1]),
        }

    @classmethod
    def from_config(cls, cfg: dict) -> FactorRecommenderModule:
        """Zero factors of the recorded shape; the registered state dict fills them in."""
        f = int(cfg["n_factors"])
        users, items = [str(u) for u in cfg["user_ids"]], [str(i) for i in cfg["item_ids"]]
        seen = {str(k): [int(j) for j in v] for k, v in dict(cfg["seen"]).items()}
        return cls(
            users, items, np.zeros((len(users), f), np.float32), np.zeros((len(items), f), np.float32), seen
        )

    def forward(self, user_index):
        return self.user_factors[user_index] @ self.item_factors.T

    def recommend(self, customer_id: str, k: int = 10) -> list[str]:
        import torch

        try:
            u = self.user_ids.index(str(customer_id))
        except ValueError:
            return []
        s = self.forward(torch.tensor([u]))[0].clone()
        for j in self.seen.get(str(customer_id), []):
            s[j] = -float("inf")
        return [self.item_ids[j] for j in torch.topk(s, min(k, len(s))).indices.tolist()]


def factor_module(
    user_ids, item_ids, user_factors: np.ndarray, item_factors: np.ndarray, seen: dict | None = None
) -> FactorRecommenderModule:
    return FactorRecommenderModule(user_ids, item_ids, user_factors, item_factors, seen)


def seen_items(data) -> dict:
    p = data.purchased.tocsr()
    return {
        data.users[u]: p.indices[p.indptr[u] : p.indptr[u + 1]].tolist()
        for u in range(p.shape[0])
        if p.indptr[u + 1] > p.indptr[u]
    }
