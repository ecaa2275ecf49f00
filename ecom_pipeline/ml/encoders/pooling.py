"""Sentence pooling: attention-masked mean over token states, then L2 normalisation."""

from __future__ import annotations


def mean_pool(hidden, attention_mask):
    """Mean of the token vectors where ``attention_mask`` is 1 (padding never counts)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return summed / counts


def l2_normalize(x, eps: float = 1e-12):
    import torch

    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp(min=eps)
