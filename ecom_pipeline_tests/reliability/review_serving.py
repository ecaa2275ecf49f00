"""A small warehouse for the review-sentiment serving asset: staged reviews, their embeddings, and the gate's
decision that the 3-class head serves (without it the TF-IDF baseline would, and no head would be loaded)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd


def review_serving_warehouse(path: Path, rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """Write the warehouse at ``path``; returns the review embeddings (``n`` x ``dim``)."""
    from ecom_pipeline.assets import reviews
    from ecom_pipeline.ml.serving_gate import Decision, record_decisions

    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA staging; CREATE SCHEMA features")
    docs = pd.DataFrame(
        {
            "review_id": [f"r{i:02d}" for i in range(n)],
            "order_id": [f"o{i}" for i in range(n)],
            "customer_id": [f"c{i}" for i in range(n)],
            "product_id": [f"p{i % 5}" for i in range(n)],
            "score": rng.integers(1, 6, n),
            "title": ["ok"] * n,
            "text": [f"review text {i}" for i in range(n)],
            "created_at": pd.date_range("2024-01-01", periods=n, freq="D"),
        }
    )
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    con.register("_r", docs)
    con.execute("CREATE TABLE staging.reviews AS SELECT * FROM _r")
    con.register(
        "_e", pd.DataFrame({"review_id": docs["review_id"], "embedding": list(emb), "model": "test-enc"})
    )
    con.execute(
        f"CREATE TABLE {reviews.REVIEW_EMB} AS SELECT review_id, embedding::FLOAT[] "
        "AS embedding, model FROM _e"
    )
    head = reviews.MODEL_NAME.format(setting="3class")
    record_decisions(
        con,
        "sentiment",
        [
            Decision(
                "sentiment",
                "3class",
                head,
                "ecom.sentiment_baseline.3class",
                "macro_f1",
                0.6,
                0.4,
                0.1,
                0.3,
                head,
                "planted by the test",
            )
        ],
    )
    con.close()
    return emb
