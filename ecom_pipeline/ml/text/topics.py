"""Complaint topics and customer-service intents.

* cluster negative/neutral reviews on their (unit-norm) embeddings with k-means,
* label each cluster with its most distinctive terms by class-based TF-IDF (c-TF-IDF: a cluster is one
  document; term weight = tf within the cluster × log(1 + mean words per cluster / term frequency overall)),
* map clusters (their centroid) and single reviews to a small intent vocabulary by cosine similarity to
  embedded intent descriptions (English + Portuguese).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

INTENTS: dict[str, str] = {
    "late_delivery": "a entrega atrasou, demorou muito para chegar, passou do prazo de entrega; "
    "the delivery was late and took too long, past the delivery deadline",
    "not_received": "não recebi o produto, o pedido nunca chegou, quero o reembolso; "
    "I never received my order, the package did not arrive, refund",
    "wrong_or_damaged": "veio o produto errado, diferente do anunciado, quebrado ou danificado, tamanho ou "
    "cor errada; wrong item, different from the listing, broken or damaged on arrival",
    "quality": "produto de má qualidade, com defeito, parou de funcionar, material ruim; "
    "poor quality, defective, stopped working, cheap material",
    "seller_service": "o vendedor não responde, atendimento péssimo, não emitiu nota fiscal, não consigo "
    "cancelar; seller does not answer, bad customer service, no invoice, cannot cancel",
    "other": "comentário geral sem reclamação específica; general comment without a specific complaint",
}

STOP_WORDS = sorted(
    set(
        [
            "a",
            "ao",
            "aos",
            "as",
            "até",
            "com",
            "como",
            "da",
            "das",
            "de",
            "do",
            "dos",
            "e",
            "é",
            "ela",
            "ele",
            "eles",
            "em",
            "entre",
            "era",
            "essa",
            "esse",
            "esta",
            "está",
            "estou",
            "eu",
            "foi",
            "for",
            "há",
            "isso",
            "já",
            "la",
            "lo",
            "mais",
            "mas",
            "me",
            "mesmo",
            "meu",
            "minha",
            "muito",
            "na",
            "nas",
            "nem",
            "no",
            "nos",
            "não",
            "nao",
            "o",
            "os",
            "ou",
            "para",
            "pela",
            "pelo",
            "por",
            "porque",
            "pra",
            "que",
            "se",
            "sem",
            "ser",
            "seu",
            "sua",
            "são",
            "só",
            "tem",
            "ter",
            "um",
            "uma",
            "uns",
            "vcs",
            "você",
            "voce",
            "vou",
            "the",
            "and",
            "of",
            "to",
            "is",
            "it",
            "in",
            "for",
            "was",
            "my",
            "on",
            "this",
            "that",
            "with",
            "not",
            "i",
            "you",
            "but",
            "have",
            "be",
            "are",
            "at",
            "as",
            "so",
            "me",
            "no",
            "do",
            "q",
            "pq",
            "ainda",
        ]
    )
)


def cluster_embeddings(emb: np.ndarray, n_clusters: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k-means on unit vectors (≈ spherical k-means); returns (labels, unit-norm centroids)."""
    from sklearn.cluster import KMeans

    k = max(1, min(n_clusters, len(emb)))
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(emb)
    cent = km.cluster_centers_
    cent = cent / np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-12)
    return km.labels_.astype(int), cent.astype(np.float32)


def ctfidf_terms(
    docs: list[str],
    labels: np.ndarray,
    top_n: int = 5,
    stop_words: list[str] | None = None,
    min_count: int = 2,
) -> dict[int, list[str]]:
    """Most distinctive terms per cluster by class-based TF-IDF.

    Each cluster is one document.  Weight = c-TF-IDF (tf within the cluster × log(1 + mean words per
    cluster / the term's total count), as in BERTopic) × the term's lift in the cluster (its share of the
    cluster's words over its share of all words), so that words every complaint uses ("produto",
    "recebi") do not label every cluster.
    """
    from sklearn.feature_extraction.text import CountVectorizer

    frame = pd.DataFrame({"doc": docs, "label": labels})
    joined = frame.groupby("label")["doc"].apply(lambda s: " ".join(s))
    cv = CountVectorizer(
        stop_words=stop_words if stop_words is not None else STOP_WORDS,
        ngram_range=(1, 2),
        min_df=1,
        token_pattern=r"(?u)\b[^\W\d_]{3,}\b",
        lowercase=True,
    )
    counts = cv.fit_transform(joined.to_numpy()).toarray().astype(float)
    tf = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    total = counts.sum(axis=0)
    avg_words = counts.sum() / max(len(joined), 1)
    idf = np.log(1 + avg_words / np.maximum(total, 1))
    lift = tf / np.maximum(total / max(counts.sum(), 1), 1e-12)
    score = np.where(counts >= min_count, tf * idf * lift, 0.0)
    vocab = np.array(cv.get_feature_names_out())
    return {int(lbl): vocab[np.argsort(-score[i])[:top_n]].tolist() for i, lbl in enumerate(joined.index)}


def intent_matrix(encoder, intents: dict[str, str] | None = None) -> tuple[list[str], np.ndarray]:
    intents = intents or INTENTS
    names = list(intents)
    return names, encoder.encode([intents[n] for n in names], kind="query")


def assign_intents(
    vectors: np.ndarray, intent_names: list[str], intent_vecs: np.ndarray
) -> tuple[list[str], np.ndarray]:
    """Nearest intent description by cosine (rows unit norm) → (intent per row, similarity)."""
    if len(vectors) == 0:
        return [], np.zeros(0)
    sims = vectors @ intent_vecs.T
    best = sims.argmax(axis=1)
    return [intent_names[i] for i in best], sims[np.arange(len(best)), best]


def topic_table(
    review_ids: list[str],
    docs: list[str],
    emb: np.ndarray,
    intent_names: list[str],
    intent_vecs: np.ndarray,
    n_clusters: int = 8,
    top_n: int = 5,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per review: topic id, topic label (c-TF-IDF terms), cluster intent, own nearest intent; and per
    topic."""
    if len(review_ids) == 0:
        cols = ["review_id", "topic", "topic_label", "topic_intent", "review_intent", "intent_similarity"]
        return pd.DataFrame(columns=cols), pd.DataFrame(
            columns=["topic", "topic_label", "topic_intent", "reviews"]
        )
    labels, cent = cluster_embeddings(emb, n_clusters, seed)
    terms = ctfidf_terms(docs, labels, top_n)
    t_intent, _ = assign_intents(cent, intent_names, intent_vecs)
    r_intent, r_sim = assign_intents(emb, intent_names, intent_vecs)
    topics = pd.DataFrame(
        {
            "topic": np.arange(len(cent)),
            "topic_label": [", ".join(terms.get(i, [])) for i in range(len(cent))],
            "topic_intent": t_intent,
            "reviews": np.bincount(labels, minlength=len(cent)),
        }
    )
    per = pd.DataFrame({"review_id": review_ids, "topic": labels})
    per = per.merge(topics[["topic", "topic_label", "topic_intent"]], on="topic", how="left")
    per["review_intent"] = r_intent
    per["intent_similarity"] = r_sim
    return per, topics
