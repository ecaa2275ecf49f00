"""Review documents: what text of a review is embedded and classified."""

from __future__ import annotations

import pandas as pd

from ecom_pipeline.ml.encoders.store import text_hash


def review_document(title, text) -> str:
    parts = [p.strip() for p in (title, text) if isinstance(p, str) and p.strip()]
    return ". ".join(parts)


def review_documents(reviews: pd.DataFrame) -> pd.DataFrame:
    """Reviews with a non-empty title or text → review_id, product_id, doc, input_hash (+ other columns
    kept)."""
    cols = ["review_id", "product_id", "doc", "input_hash"]
    if reviews is None or reviews.empty:
        return pd.DataFrame(columns=cols)
    r = reviews.copy()
    r["doc"] = [review_document(a, b) for a, b in zip(r.get("title", [None] * len(r)), r["text"])]
    r = r[r["doc"].str.len() > 0].reset_index(drop=True)
    r["input_hash"] = r["doc"].map(text_hash)
    if "product_id" not in r:
        r["product_id"] = None
    return r
