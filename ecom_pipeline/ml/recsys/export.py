"""What gets registered in MLflow for a factor recommender: a tiny torch module (pytorch flavor).

It carries the user and item ids and the factors, so ``mlflow.pytorch.load_model`` gives back something
that scores without the training code: ``module(torch.tensor([user_index]))`` → item scores, and
``module.recommend(customer_id, k)`` → item ids.
"""

from __future__ import annotations

import numpy as np


def factor_module(user_ids, item_ids, user_factors: np.ndarray, item_factors: np.ndarray, seen: dict | None = None):
    import torch

    class FactorRecommenderModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("user_factors", torch.as_tensor(np.asarray(user_factors, dtype=np.float32)))
            self.register_buffer("item_factors", torch.as_tensor(np.asarray(item_factors, dtype=np.float32)))
            self.user_ids = [str(u) for u in user_ids]
            self.item_ids = [str(i) for i in item_ids]
            self.seen = {str(k): list(map(int, v)) for k, v in (seen or {}).items()}

        def forward(self, user_index):
            return self.user_factors[user_index] @ self.item_factors.T

        def recommend(self, customer_id: str, k: int = 10) -> list[str]:
            try:
                u = self.user_ids.index(str(customer_id))
            except ValueError:
                return []
            s = self.forward(torch.tensor([u]))[0].clone()
            for j in self.seen.get(str(customer_id), []):
                s[j] = -float("inf")
            return [self.item_ids[j] for j in torch.topk(s, min(k, len(s))).indices.tolist()]

    return FactorRecommenderModule()


def seen_items(data) -> dict:
    p = data.purchased.tocsr()
    return {data.users[u]: p.indices[p.indptr[u]:p.indptr[u + 1]].tolist() for u in range(p.shape[0])
            if p.indptr[u + 1] > p.indptr[u]}
