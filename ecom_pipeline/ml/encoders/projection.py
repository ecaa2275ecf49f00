"""A joint image→text space: a linear projection of image embeddings into the text embedding space,
trained contrastively (InfoNCE, CLIP-style, both directions) on image/title pairs; evaluated by
text→image retrieval Recall@k against a random-projection baseline.
"""

from __future__ import annotations

import hashlib

import numpy as np


def holdout_mask(ids: list[str], test_fraction: float = 0.2) -> np.ndarray:
    """Deterministic held-out set by a salted hash of the id (image/title pairs carry no timestamps).

    Salted: datasets are often sub-sampled by an unsalted hash of the id (product_images was), which would
    correlate with an unsalted split."""
    h = np.array([int(hashlib.sha1(f"holdout:{i}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF for i in ids])
    return h < test_fraction


def recall_at_k(queries: np.ndarray, items: np.ndarray, k: int = 10) -> float:
    """Query i's relevant item is item i; share of queries whose item is in the top k by cosine."""
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    it = items / np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-12)
    sims = q @ it.T
    own = sims[np.arange(len(q)), np.arange(len(q))]
    rank = (sims > own[:, None]).sum(axis=1)
    return float((rank < k).mean())


def random_projection(in_dim: int, out_dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 1 / np.sqrt(out_dim), (in_dim, out_dim))).astype(np.float32)


def train_projection(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    *,
    epochs: int = 60,
    batch_size: int = 256,
    lr: float = 3e-3,
    temperature: float = 0.05,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device: str = "cpu",
    progress=None,
):
    """A ``torch.nn.Linear(image_dim, text_dim)`` trained with symmetric InfoNCE; returns the module
    (eval)."""
    import torch

    torch.manual_seed(seed)
    x = torch.as_tensor(image_emb, dtype=torch.float32, device=device)
    y = torch.nn.functional.normalize(torch.as_tensor(text_emb, dtype=torch.float32, device=device), dim=-1)
    proj = torch.nn.Linear(x.shape[1], y.shape[1]).to(device)
    opt = torch.optim.AdamW(proj.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    n = len(x)
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, batch_size):
            idx = perm[s : s + batch_size].to(device)
            if len(idx) < 2:
                continue
            z = torch.nn.functional.normalize(proj(x[idx]), dim=-1)
            logits = z @ y[idx].T / temperature
            target = torch.arange(len(idx), device=device)
            loss = (
                torch.nn.functional.cross_entropy(logits, target)
                + torch.nn.functional.cross_entropy(logits.T, target)
            ) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
        if progress:
            progress(epoch + 1, epochs)
    return proj.eval()


def project(proj, image_emb: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        z = proj(torch.as_tensor(image_emb, dtype=torch.float32, device=next(proj.parameters()).device))
        return torch.nn.functional.normalize(z, dim=-1).cpu().numpy()


def evaluate_projection(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    ids: list[str],
    *,
    k: int = 10,
    test_fraction: float = 0.2,
    seed: int = 0,
    **train_kw,
) -> dict:
    """Train on the non-held-out pairs; Recall@k (text→image) on the held-out ones, model vs random
    projection."""
    test = holdout_mask(ids, test_fraction)
    if test.sum() < k + 1 or (~test).sum() < 10:
        raise ValueError(
            f"too few pairs for a held-out Recall@{k}: {int((~test).sum())} train, {int(test.sum())} test"
        )
    proj = train_projection(image_emb[~test], text_emb[~test], seed=seed, **train_kw)
    r_model = recall_at_k(text_emb[test], project(proj, image_emb[test]), k)
    rp = random_projection(image_emb.shape[1], text_emb.shape[1], seed)
    r_random = recall_at_k(text_emb[test], image_emb[test] @ rp, k)
    return {
        "model": proj,
        f"recall@{k}": r_model,
        f"random_recall@{k}": r_random,
        "chance": min(1.0, k / int(test.sum())),
        "n_train": int((~test).sum()),
        "n_test": int(test.sum()),
    }
