import numpy as np
import pandas as pd
import pytest

from ecom_pipeline.ml.text.sentiment import (
    SETTINGS,
    classification_metrics,
    fit_and_evaluate,
    majority_baseline,
    sentiment_labels,
)
from ecom_pipeline_tests.datasets import OLIST_DIR, requires_olist


def test_labels_from_scores():
    s = pd.Series([1, 2, 3, 4, 5])
    assert sentiment_labels(s, "3class").tolist() == [0, 0, 1, 2, 2]
    assert sentiment_labels(s, "binary").tolist() == [0, 0, -1, 1, 1]
    with pytest.raises(ValueError):
        sentiment_labels(s, "5class")


def test_metrics_names_and_values():
    m = classification_metrics([0, 0, 1, 2], [0, 1, 1, 2], SETTINGS["3class"])
    assert set(m) == {"accuracy", "macro_f1", "f1_negative", "f1_neutral", "f1_positive"}
    assert m["accuracy"] == 0.75 and m["f1_positive"] == 1.0
    assert majority_baseline([2, 2, 0]) == 2


def test_time_split_is_respected():
    n = 120
    rng = np.random.default_rng(0)
    score = rng.choice([1, 3, 5], n)
    frame = pd.DataFrame(
        {
            "doc": [f"w{s} filler" for s in score],
            "score": score,
            "created_at": pd.date_range("2024-01-01", periods=n, freq="D"),
        }
    )
    emb = np.eye(6)[score].astype(np.float32) + rng.normal(0, 0.01, (n, 6)).astype(np.float32)
    r = fit_and_evaluate(frame, emb, "3class", test_fraction=0.25)
    assert r.n_test == 30 and r.n_train == 90
    assert pd.Timestamp(r.cutoff) == frame["created_at"].iloc[90]
    assert r.model_metrics["macro_f1"] == 1.0  # perfectly separable embeddings
    # the TF-IDF baseline separates these too: a tie, so the baseline serves
    # (the gate needs a significant win)
    assert r.comparison.n_units == 30 and not r.comparison.candidate_better
    assert r.decision.served == "ecom.sentiment_baseline.3class" and not r.decision.candidate_serves
    assert (r.decision.task, r.decision.scope, r.decision.candidate) == (
        "sentiment",
        "3class",
        "ecom.sentiment.3class",
    )


@requires_olist
@pytest.mark.slow
def test_sentiment_on_real_olist_subset_beats_majority(shared_models_dir):
    from ecom_pipeline.ml.encoders import load_text_encoder
    from ecom_pipeline.ml.text.reviews import review_documents

    df = pd.read_csv(OLIST_DIR / "olist_order_reviews_dataset.csv.gz")
    df = df.rename(
        columns={
            "review_comment_title": "title",
            "review_comment_message": "text",
            "review_score": "score",
            "review_creation_date": "created_at",
        }
    )
    df["created_at"] = pd.to_datetime(df["created_at"])
    docs = (
        review_documents(df).sort_values("created_at").iloc[::8].reset_index(drop=True)
    )  # ~500 real reviews
    enc = load_text_encoder("multilingual-e5-small", models_dir=shared_models_dir, max_length=64)
    emb = enc.encode(docs["doc"].tolist())
    for setting in ("3class", "binary"):
        r = fit_and_evaluate(docs, emb, setting, test_fraction=0.25)
        assert r.model_metrics["macro_f1"] > r.majority_metrics["macro_f1"] + 0.2, (setting, r.model_metrics)
        assert r.model_metrics["accuracy"] > 0.6
