"""Graph convolution over the region graph (Kipf & Welling): H' = Â H W with Â = D^-1/2 (A + I) D^-1/2.

Region embeddings come from a two-layer GCN encoder trained as a graph autoencoder: the embeddings must
reconstruct both the edges (inner-product decoder, with as many sampled non-edges) and the region's own
standardised features (demand, revenue, customers, sellers, delivery time, late rate, location).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

EMBED_FEATURES = [
    "log_orders",
    "log_revenue",
    "log_customers",
    "log_sellers",
    "mean_delivery_days",
    "late_rate",
    "lat",
    "lng",
]


def adjacency(region_ids: list[str], edges: pd.DataFrame, weight: str | None = None) -> np.ndarray:
    """Symmetric adjacency from (src, dst[, weight]) edges; unknown ids are ignored."""
    pos = {r: i for i, r in enumerate(region_ids)}
    A = np.zeros((len(region_ids), len(region_ids)), dtype=np.float32)
    for row in edges.itertuples(index=False):
        i, j = pos.get(row.src), pos.get(row.dst)
        if i is None or j is None or i == j:
            continue
        w = float(getattr(row, weight)) if weight else 1.0
        A[i, j] = A[j, i] = max(A[i, j], w)
    return A


def normalized_adjacency(A: np.ndarray, self_loops: bool = True) -> np.ndarray:
    A = np.asarray(A, dtype=np.float32)
    if self_loops:
        A = A + np.eye(len(A), dtype=np.float32)
    deg = A.sum(1)
    inv = np.where(deg > 0, deg**-0.5, 0.0).astype(np.float32)
    return inv[:, None] * A * inv[None, :]


def _torch_nn():
    import torch.nn

    return torch.nn.Module


class GCNLayer(_torch_nn()):
    def __init__(self, d_in: int, d_out: int, bias: bool = True):
        from torch import nn

        super().__init__()
        self.linear = nn.Linear(d_in, d_out, bias=bias)

    def forward(self, x, a_hat):
        return a_hat @ self.linear(x)


class GCNEncoder(_torch_nn()):
    def __init__(self, d_in: int, hidden: int, d_out: int):
        super().__init__()
        self.g1 = GCNLayer(d_in, hidden)
        self.g2 = GCNLayer(hidden, d_out)

    def safe_config(self) -> dict:
        """Constructor arguments, so a registered state dict can be rebuilt (ml/safe_artifacts.py)."""
        return {
            "d_in": self.g1.linear.in_features,
            "hidden": self.g1.linear.out_features,
            "d_out": self.g2.linear.out_features,
        }

    def forward(self, x, a_hat):
        import torch

        return self.g2(torch.relu(self.g1(x, a_hat)), a_hat)


def node_features(regions: pd.DataFrame) -> np.ndarray:
    f = pd.DataFrame(
        {
            "log_orders": np.log1p(regions["orders"].astype(float)),
            "log_revenue": np.log1p(regions["revenue"].astype(float)),
            "log_customers": np.log1p(regions["customers"].astype(float)),
            "log_sellers": np.log1p(regions["sellers"].astype(float)),
            "mean_delivery_days": regions["mean_delivery_days"].astype(float),
            "late_rate": regions["late_rate"].astype(float),
            "lat": regions["lat"].astype(float),
            "lng": regions["lng"].astype(float),
        }
    )
    f = f.fillna(f.mean()).fillna(0.0)
    std = f.std(ddof=0).replace(0, 1.0)
    return ((f - f.mean()) / std).to_numpy(dtype=np.float32)


def train_embeddings(
    X: np.ndarray,
    A: np.ndarray,
    *,
    dim: int = 16,
    hidden: int = 32,
    epochs: int = 200,
    lr: float = 0.01,
    seed: int = 0,
    device: str = "cpu",
    cpu_threads: int | None = 1,
):
    """(embeddings [n, dim], history of losses) from the graph autoencoder; ``cpu_threads`` as in
    :func:`ecom_pipeline.ml.threads.cpu_threads` (one: a region graph is small)."""
    from ecom_pipeline.ml.threads import cpu_threads as threads

    with threads(cpu_threads, device):
        return _train_embeddings(X, A, dim=dim, hidden=hidden, epochs=epochs, lr=lr, seed=seed, device=device)


def _train_embeddings(X, A, *, dim, hidden, epochs, lr, seed, device):
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = len(X)
    dev = torch.device(device)
    a_hat = torch.tensor(normalized_adjacency(A), device=dev)
    x = torch.tensor(X, device=dev)
    enc = GCNEncoder(X.shape[1], hidden, dim).to(dev)
    dec = torch.nn.Linear(dim, X.shape[1]).to(dev)
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=lr)
    pos = np.argwhere(np.triu(A, 1) > 0)
    history = []
    for _ in range(epochs):
        z = enc(x, a_hat)
        loss = torch.mean((dec(z) - x) ** 2)
        if len(pos):
            neg = rng.integers(0, n, size=(len(pos), 2))
            pi, pj = torch.tensor(pos[:, 0], device=dev), torch.tensor(pos[:, 1], device=dev)
            ni, nj = torch.tensor(neg[:, 0], device=dev), torch.tensor(neg[:, 1], device=dev)
            logits = torch.cat([(z[pi] * z[pj]).sum(1), (z[ni] * z[nj]).sum(1)])
            labels = torch.cat([torch.ones(len(pos), device=dev), torch.zeros(len(neg), device=dev)])
            loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    enc.eval()
    with torch.no_grad():
        z = enc(x, a_hat).cpu().numpy()
    return z, history, enc


def link_auc(Z: np.ndarray, A: np.ndarray, seed: int = 0) -> float:
    """AUC of inner-product scores for edges vs random non-edges (how well embeddings encode the graph)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    pos = np.argwhere(np.triu(A, 1) > 0)
    if len(pos) == 0:
        return float("nan")
    candidates = np.argwhere(np.triu(A == 0, 1))  # every non-edge (the graph may be complete: small levels)
    if len(candidates) == 0:
        return float("nan")
    neg = candidates[rng.choice(len(candidates), min(len(pos), len(candidates)), replace=False)]
    s = np.concatenate([(Z[pos[:, 0]] * Z[pos[:, 1]]).sum(1), (Z[neg[:, 0]] * Z[neg[:, 1]]).sum(1)])
    return float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], s))
