"""ONNX Runtime int8 encoders: export + quantise once (cached under the models folder), agree with fp32
torch."""

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from ecom_pipeline.config import Settings
from ecom_pipeline.ml.encoders import load_image_encoder, load_text_encoder
from ecom_pipeline.ml.encoders.onnx_runtime import OnnxTextEncoder, check_runtime
from ecom_pipeline_tests.encoders.test_encoders import SENTENCES


def test_runtime_setting_is_validated(monkeypatch):
    monkeypatch.setenv("ECOM_ENCODER_RUNTIME", "ONNX-int8")
    assert check_runtime(Settings.from_env().encoder_runtime) == "onnx-int8"
    monkeypatch.delenv("ECOM_ENCODER_RUNTIME")
    assert Settings.from_env().encoder_runtime == "torch"
    with pytest.raises(ValueError, match="ECOM_ENCODER_RUNTIME"):
        check_runtime("tensorrt")


def test_onnx_int8_text_encoder_agrees_with_fp32_and_is_cached(shared_models_dir):
    fp32 = load_text_encoder("multilingual-e5-small", models_dir=shared_models_dir)
    int8 = load_text_encoder("multilingual-e5-small", models_dir=shared_models_dir, runtime="onnx-int8")
    assert isinstance(int8, OnnxTextEncoder) and int8.model_id == "multilingual-e5-small+onnx-int8"
    path = shared_models_dir / "onnx"
    files = sorted(path.rglob("*.onnx"))
    assert [f.name for f in files] == ["model.int8.onnx"]  # the fp32 intermediate is not kept
    mtime = files[0].stat().st_mtime_ns
    a, b = fp32.encode(SENTENCES), int8.encode(SENTENCES)
    assert b.shape == a.shape and b.dtype == np.float32
    assert np.allclose(np.linalg.norm(b, axis=1), 1, atol=1e-4)
    cos = (a * b).sum(axis=1)
    assert cos.mean() > 0.99 and cos.min() > 0.97, cos
    assert (np.argmax(a @ b.T, axis=1) == np.arange(len(SENTENCES))).all()
    # query/passage prefixes reach the ONNX graph too
    assert not np.allclose(int8.encode(SENTENCES[:2], kind="query"), b[:2])
    again = load_text_encoder("multilingual-e5-small", models_dir=shared_models_dir, runtime="onnx-int8")
    assert files[0].stat().st_mtime_ns == mtime  # reused, not exported again
    # same batch → same vectors (dynamic int8 scales activations per batch, so batch-mates matter a little)
    assert np.allclose(again.encode(SENTENCES), b, atol=1e-6)


def test_onnx_int8_image_encoder_agrees_with_fp32(tmp_path, shared_models_dir):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):  # smooth colour gradients with noise: generated, not real product photos
        base = np.linspace(0, 255, 160)[None, :, None] * rng.uniform(0.2, 1, 3)
        img = np.clip(base + rng.normal(0, 25, (120, 160, 3)), 0, 255).astype(np.uint8)
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(img).save(paths[-1])
    fp32 = load_image_encoder("mobilenet_v2")
    int8 = load_image_encoder("mobilenet_v2", runtime="onnx-int8", models_dir=shared_models_dir)
    assert int8.model_id == "mobilenet_v2+onnx-int8"
    a, _, _ = fp32.encode_uris(paths)
    b, good, failures = int8.encode_uris(paths + [str(tmp_path / "missing.jpg")])
    assert good == list(range(6)) and list(failures) == [6]
    cos = (a * b).sum(axis=1)
    assert cos.mean() > 0.95, cos
