"""The full fine-tuning path of sentiment_model (taken when CUDA is available): ``finetune_classifier`` with
every layer trainable, exercised here on CPU with a small model."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

TEXTS = [
    "terrible, broken",
    "awful, never arrived",
    "bad quality",
    "great, love it",
    "excellent, fast",
    "perfect product",
] * 6
SCORES = [1, 1, 2, 5, 5, 4] * 6


def _run(device: str, models_dir, out_dir):
    from ecom_pipeline.assets.reviews import SentimentConfig, _finetuned
    from ecom_pipeline.ml.encoders import load_text_encoder
    from ecom_pipeline.ml.safe_artifacts import load_model_dir, save_model
    from ecom_pipeline.ml.text.finetune import predict_proba
    from ecom_pipeline.ml.text.sentiment import fit_and_evaluate

    docs = pd.DataFrame(
        {
            "doc": TEXTS,
            "score": SCORES,
            "created_at": pd.date_range("2024-01-01", periods=len(TEXTS), freq="D"),
        }
    )
    res = fit_and_evaluate(docs, np.eye(len(TEXTS), 8, dtype=np.float32), "binary", test_fraction=0.25)
    config = SentimentConfig(
        text_encoder="all-minilm-l6-v2",
        max_length=16,
        finetune_epochs=3,
        finetune_lr=5e-4,
        finetune_batch_size=8,
    )
    enc = load_text_encoder("all-minilm-l6-v2", models_dir=models_dir, device=device, max_length=16)
    before = {k: v.detach().cpu().clone() for k, v in enc.model.state_dict().items()}
    # _finetuned reads only paths.models; the session's shared encoder cache keeps the encoder loaded once
    paths = SimpleNamespace(models=models_dir)
    model, metrics = _finetuned(config, docs, res, "binary", device, paths)
    # the registry's encoder is untouched (a copy is trained); in the copy the bottom layer changed too
    assert all((enc.model.state_dict()[k].cpu() == v).all() for k, v in before.items())
    key = "encoder.layer.0.attention.self.query.weight"
    assert not (model.backbone.state_dict()[key] == before[key]).all()
    assert metrics["accuracy"] >= 0.8, metrics
    probs = predict_proba(model, enc, TEXTS)
    assert probs.shape == (len(TEXTS), 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    # what sentiment_model registers: state dict + architecture config, rebuilt without downloading anything
    save_model(model.cpu(), "pytorch", out_dir / "registered")
    back = load_model_dir(out_dir / "registered")
    assert np.allclose(predict_proba(back, enc, TEXTS), probs, atol=1e-5)


def test_full_finetune_of_sentiment_model_runs_on_cpu(shared_models_dir, tmp_path):
    _run("cpu", shared_models_dir, tmp_path)


@pytest.mark.gpu
def test_finetune_on_cuda(shared_models_dir, tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    _run("cuda", shared_models_dir, tmp_path)


@pytest.mark.gpu
def test_encoders_on_cuda_match_cpu(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from ecom_pipeline.ml.encoders import load_image_encoder, load_text_encoder

    texts = ["o produto chegou quebrado", "great quality"]
    a = load_text_encoder("multilingual-e5-small", models_dir=tmp_path, device="cpu").encode(texts)
    b = load_text_encoder("multilingual-e5-small", models_dir=tmp_path, device="cuda").encode(texts)
    assert ((a * b).sum(1) > 0.999).all()
    assert load_image_encoder("mobilenet_v2", device="cuda").dim == 1280
