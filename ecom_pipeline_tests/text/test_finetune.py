"""The full fine-tuning path (used by sentiment_model when CUDA is available)."""

import numpy as np
import pytest

from ecom_pipeline.ml.text.sentiment import finetune_encoder, predict_finetuned

TEXTS = ["terrible, broken", "awful, never arrived", "bad quality", "great, love it", "excellent, fast",
         "perfect product"] * 4
Y = np.array([0, 0, 0, 1, 1, 1] * 4)


def _run(device: str, tmp_path):
    from ecom_pipeline.ml.encoders import load_text_encoder

    enc = load_text_encoder("all-minilm-l6-v2", models_dir=tmp_path, device=device, max_length=16)
    before = {k: v.clone() for k, v in enc.model.state_dict().items()}
    model = finetune_encoder(enc, TEXTS, Y, 2, epochs=3, lr=5e-4, batch_size=8)
    # the encoder handed in is untouched (a copy is trained); the trained copy changed
    assert all((enc.model.state_dict()[k] == v).all() for k, v in before.items())
    changed = any(not (model.backbone.state_dict()[k].cpu() == v.cpu()).all() for k, v in before.items())
    assert changed
    probs = predict_finetuned(model, enc, TEXTS)
    assert probs.shape == (len(TEXTS), 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert (probs.argmax(1) == Y).mean() >= 0.8
    # what sentiment_model registers: state dict + architecture config, rebuilt without downloading anything
    from ecom_pipeline.ml.safe_artifacts import load_model_dir, save_model

    save_model(model.cpu(), "pytorch", tmp_path / "registered")
    back = load_model_dir(tmp_path / "registered").to(enc.device)
    assert np.allclose(predict_finetuned(back, enc, TEXTS), probs, atol=1e-5)


def test_finetune_runs_on_cpu(tmp_path):
    _run("cpu", tmp_path)


@pytest.mark.gpu
def test_finetune_on_cuda(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    _run("cuda", tmp_path)


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
