from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecom_pipeline.ml.text.topics import assign_intents, ctfidf_terms, intent_matrix, topic_table
from ecom_pipeline_tests.datasets import OLIST_DIR, requires_olist

LABELLED = Path(__file__).parent / "olist_intents_labelled.csv"


def test_ctfidf_labels_toy_clusters():
    rng = np.random.default_rng(0)
    groups = {
        0: ["entrega atrasada demais", "atrasada a entrega de novo", "entrega muito atrasada prazo"],
        1: ["produto quebrado na caixa", "veio quebrado", "chegou quebrado e amassado"],
        2: ["vendedor não responde mensagens", "vendedor sumiu", "o vendedor nunca responde"],
    }
    docs, truth, emb = [], [], []
    centres = np.eye(3, 16)
    for g, texts in groups.items():
        for t in texts * 4:
            docs.append(t)
            truth.append(g)
            v = centres[g] + rng.normal(0, 0.05, 16)
            emb.append(v / np.linalg.norm(v))
    emb = np.array(emb, np.float32)
    per, topics = topic_table(
        [f"r{i}" for i in range(len(docs))], docs, emb, ["a", "b"], np.eye(2, 16), n_clusters=3
    )
    # clusters recover the planted groups exactly (up to renaming)
    assert pd.crosstab(per["topic"], truth).gt(0).sum(axis=1).eq(1).all()
    labels = {
        tuple(truth[i] for i in per.index[per["topic"] == t])[0]: lab
        for t, lab in zip(topics["topic"], topics["topic_label"])
    }
    assert "atrasada" in labels[0] and "quebrado" in labels[1] and "vendedor" in labels[2]
    terms = ctfidf_terms(docs, np.array(truth), top_n=1)
    assert terms == {0: ["atrasada"], 1: ["quebrado"], 2: ["vendedor"]}


@pytest.fixture(scope="module")
def e5(shared_models_dir):
    from ecom_pipeline.ml.encoders import load_text_encoder

    return load_text_encoder("multilingual-e5-small", models_dir=shared_models_dir, max_length=128)


def test_intent_mapping_on_clear_sentences(e5):
    names, vecs = intent_matrix(e5)
    texts = {
        "não recebi meu pedido até hoje": "not_received",
        "my order never arrived": "not_received",
        "a entrega demorou muito e passou do prazo": "late_delivery",
        "veio quebrado e com a cor errada": "wrong_or_damaged",
        "o vendedor não responde minhas mensagens": "seller_service",
    }
    got, sim = assign_intents(e5.encode(list(texts)), names, vecs)
    assert sum(g == w for g, w in zip(got, texts.values())) >= 4, got
    assert (sim > 0.5).all()


@requires_olist
@pytest.mark.slow
def test_intent_accuracy_on_hand_labelled_olist(e5):
    """70 real negative/neutral Olist reviews labelled by hand (see olist_intents_labelled.csv)."""
    gold = pd.read_csv(LABELLED)
    df = pd.read_csv(OLIST_DIR / "olist_order_reviews_dataset.csv.gz")
    df = gold.merge(df.drop_duplicates("review_id"), on="review_id")
    assert len(df) == len(gold) == 70
    docs = [
        ". ".join(p for p in (t, m) if isinstance(p, str))
        for t, m in zip(df["review_comment_title"], df["review_comment_message"])
    ]
    names, vecs = intent_matrix(e5)
    got, _ = assign_intents(e5.encode(docs), names, vecs)
    acc = float(np.mean(np.array(got) == df["intent"].to_numpy()))
    majority = float(df["intent"].value_counts(normalize=True).iloc[0])
    print(f"intent accuracy {acc:.3f} on {len(df)} hand-labelled reviews (majority {majority:.3f})")
    assert acc > 0.45
