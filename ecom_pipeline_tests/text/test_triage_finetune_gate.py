"""The serving app's review triage follows the fine-tune's gate decision like features.review_sentiment:
the fine-tuned encoder answers only where ml.serving_decisions says it won; otherwise what served before
(the embedding head unless its own gate blocks it, else TF-IDF).  Real models: a small encoder with a head
on it, a head on its frozen embeddings, a TF-IDF pipeline."""

import copy
from types import SimpleNamespace

import numpy as np
import pytest

from ecom_pipeline.api.models import (
    SENTIMENT,
    SENTIMENT_BASELINE,
    SENTIMENT_FINETUNED,
    Champions,
    load_champions,
)
from ecom_pipeline.api.service import triage
from ecom_pipeline.ml.registry import ServedModel
from ecom_pipeline.ml.text.finetune import FINETUNED_NAME, predict_proba
from ecom_pipeline_tests.text.test_finetune_top_layers import planted

TEXT = "the box was okay, an average seller"


class _FrozenEncoder:  # the app's batching encoder interface, over a real encoder
    def __init__(self, encoder):
        self.encoder = encoder

    def encode(self, text: str, kind: str, timeout=None) -> np.ndarray:
        return self.encoder.encode([text], kind)[0]


@pytest.fixture(scope="module")
def served(shared_models_dir):
    import torch
    from sklearn.linear_model import LogisticRegression

    from ecom_pipeline.ml.encoders import load_text_encoder
    from ecom_pipeline.ml.text.sentiment import FinetunedClassifier, tfidf_baseline

    enc = load_text_encoder("all-minilm-l6-v2", models_dir=shared_models_dir, device="cpu", max_length=24)
    texts, y = planted(60, seed=11)
    head = LogisticRegression(max_iter=500).fit(enc.encode(texts, "passage"), y)
    baseline = tfidf_baseline().fit(texts, y)
    finetuned = FinetunedClassifier(copy.deepcopy(enc.model), enc.dim, 3).eval()
    with torch.no_grad():  # an encoder + head that calls everything neutral: its answers are recognisable
        finetuned.head.weight.zero_()
        finetuned.head.bias.copy_(torch.tensor([0.0, 3.0, 0.0]))
    models = {
        SENTIMENT: ServedModel(head, SENTIMENT, "4", "4"),
        SENTIMENT_BASELINE: ServedModel(baseline, SENTIMENT_BASELINE, "2", "2"),
        SENTIMENT_FINETUNED: ServedModel(finetuned, SENTIMENT_FINETUNED, "7", "7"),
    }
    return Champions(models=models, finetune_tokens=enc), _FrozenEncoder(enc)


def _gate(finetuned_served: bool | None, head_served: bool = True) -> SimpleNamespace:
    gate = {("sentiment", SENTIMENT, "3class"): (head_served, "" if head_served else "head lost to TF-IDF")}
    if finetuned_served is not None:
        reason = "beat its best baseline" if finetuned_served else "no significant difference"
        gate[("sentiment_finetuned", SENTIMENT_FINETUNED, "3class")] = (finetuned_served, reason)
    return SimpleNamespace(gate=gate)


def _run(champions, encoder, data) -> dict:
    return triage(champions, data, encoder, None, TEXT, timeout=5.0)["sentiment"]


def test_the_finetune_serves_where_its_gate_serves_it(served):
    champions, encoder = served
    out = _run(champions, encoder, _gate(finetuned_served=True))
    assert out["model"] == SENTIMENT_FINETUNED and out["version"] == "7"
    assert out["label"] == "neutral" and out["finetuned"] == "beat its best baseline"
    expected = predict_proba(champions.get(SENTIMENT_FINETUNED), champions.finetune_tokens, [TEXT])[0]
    assert np.allclose(list(out["probabilities"].values()), expected, atol=1e-4)


@pytest.mark.parametrize("decision", [False, None], ids=["gate-says-no", "no-decision-row"])
def test_otherwise_what_served_before_serves(served, decision):
    champions, encoder = served
    out = _run(champions, encoder, _gate(finetuned_served=decision))
    assert out["model"] == SENTIMENT and out["version"] == "4" and out["gate"] is None
    assert "no" in out["finetuned"]
    # ...and where the head's own gate blocks it, the TF-IDF baseline, as features.review_sentiment does
    blocked = _run(champions, encoder, _gate(finetuned_served=decision, head_served=False))
    assert blocked["model"] == SENTIMENT_BASELINE and blocked["gate"] == "head lost to TF-IDF"


def test_without_its_tokenizer_the_finetune_is_not_served(served):
    champions, encoder = served
    no_tokens = Champions(models=dict(champions.models), finetune_tokens=None)
    assert _run(no_tokens, encoder, _gate(finetuned_served=True))["model"] == SENTIMENT


def test_the_app_loads_the_name_the_pipeline_registers(tmp_path, monkeypatch):
    assert SENTIMENT_FINETUNED == FINETUNED_NAME
    monkeypatch.setenv("ECOM_DATA_ROOT", str(tmp_path))  # a generated local signing key lands here
    # an empty registry: every model has its reason, nothing is served and nothing raises
    champions = load_champions(f"sqlite:///{tmp_path}/mlflow.db", models_dir=tmp_path / "models")
    assert champions.get(SENTIMENT_FINETUNED) is None and SENTIMENT_FINETUNED in champions.errors
