"""What text a product is embedded from, and how review embeddings enrich products without text."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ecom_pipeline.ml.encoders.store import normalize_rows, text_hash


def category_words(category: str | None) -> str:
    return (category or "").replace("_", " ").strip()


def product_texts(products: pd.DataFrame, max_chars: int = 600) -> pd.DataFrame:
    """``product_id``, ``text`` (category + title + description), ``has_title`` and ``input_hash``."""

    def build(row) -> str:
        parts = [category_words(row.get("category"))]
        for col in ("title", "description"):
            v = row.get(col)
            if isinstance(v, str) and v.strip():
                parts.append(v.strip())
        return ". ".join(p for p in parts if p)[:max_chars]

    if products.empty:
        return pd.DataFrame(columns=["product_id", "text", "has_title", "input_hash"])
    out = pd.DataFrame({"product_id": products["product_id"].astype(str)})
    out["text"] = [build(r) for r in products.to_dict("records")]
    out["has_title"] = products["title"].notna().to_numpy() if "title" in products else False
    out["input_hash"] = out["text"].map(text_hash)
    return out


def blend_with_reviews(
    product_ids: list[str],
    text_emb: np.ndarray,
    review_product_ids: list[str],
    review_emb: np.ndarray,
    review_weight: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """normalise(text + w · mean(review embeddings of the product)); returns (matrix, n_reviews per product).

    Used where products have no title (Olist): the category alone would make every product of a category
    identical, the reviews tell them apart.
    """
    counts = np.zeros(len(product_ids), dtype=np.int64)
    if len(review_product_ids) == 0:
        return text_emb, counts
    index = {p: i for i, p in enumerate(product_ids)}
    sums = np.zeros_like(text_emb)
    for pid, vec in zip(review_product_ids, review_emb):
        i = index.get(pid)
        if i is not None:
            sums[i] += vec
            counts[i] += 1
    mean = sums / np.maximum(counts, 1)[:, None]
    mixed = text_emb + review_weight * normalize_rows(mean)
    return normalize_rows(np.where(counts[:, None] > 0, mixed, text_emb)), counts
