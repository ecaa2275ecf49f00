"""ONNX Runtime int8 for the text encoder and the image CNN (CPU inference).

The torch model is exported once with ``torch.onnx`` (pooling and L2 normalisation inside the graph, batch
and sequence length dynamic), quantised with ONNX Runtime's dynamic int8 quantisation (weights int8 per
channel, activations quantised per batch at run time) and cached under ``<models_dir>/onnx/``; a cached file
is reused while the source model's version and the recipe are unchanged. Nothing downloads.

Selected by ``ECOM_ENCODER_RUNTIME=onnx-int8`` (``Settings.encoder_runtime``); the default runtime is torch.
"""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RUNTIMES = ("torch", "onnx-int8")
ONNX_OPSET = 17
# Bumped whenever the export or quantisation recipe changes: cached files of another recipe are rebuilt.
RECIPE = "v1-dynamic-qint8-per-channel"
# As with torch dynamic quantisation (see quantize.py): the MatMuls writing back into the residual stream
# (BERT's attention output and FFN output projections) carry the activation outliers; quantising them costs
# most of the accuracy. With ONNX Runtime's per-channel weights the loss is small enough (mean cosine to fp32
# 0.996 on Olist reviews) that serving quantises every MatMul (``quantize_all``, ~20 % faster); keeping these
# fp32 is the higher-fidelity option (cosine 0.999). benchmarks/embeddings.py measures both.
TEXT_KEEP_FP32_PATTERNS = ("attention/output/dense", "output/dense")
_LOCK = threading.Lock()
_SESSIONS: dict[tuple, object] = {}


def check_runtime(runtime: str) -> str:
    value = (runtime or "torch").strip().lower()
    if value not in RUNTIMES:
        raise ValueError(f"encoder runtime must be one of {RUNTIMES}, got {runtime!r} (ECOM_ENCODER_RUNTIME)")
    return value


def _session(path: Path, threads: int | None = None):
    key = (str(path), path.stat().st_mtime_ns, threads)
    with _LOCK:
        if key not in _SESSIONS:
            _SESSIONS[key] = _new_session(path, threads)
        return _SESSIONS[key]


def _new_session(path: Path, threads: int | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _fingerprint(*parts: str) -> str:
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]


def _quantize(fp32_path: Path, int8_path: Path, keep_fp32_patterns: Sequence[str]) -> list[str]:
    """Dynamic int8 quantisation of ``fp32_path``'s MatMul/Gemm/Conv weights → ``int8_path``; returns the
    node names kept fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    excluded = [
        n.name
        for n in graph.node
        if n.op_type in ("MatMul", "Gemm") and any(p in n.name for p in keep_fp32_patterns)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(
            str(fp32_path),
            str(int8_path),
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=excluded,
            extra_options={"MatMulConstBOnly": True},
        )
    return excluded


def _export(module, args: tuple, names_in: list[str], dynamic: dict, out: Path) -> None:
    import torch

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.onnx")
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(tmp),
            input_names=names_in,
            output_names=["embedding"],
            dynamic_axes=dynamic,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    tmp.replace(out)  # a half-written export never looks cached


class _PooledText:
    """forward(input_ids, attention_mask) → mean-pooled, L2-normalised sentence vectors (export wrapper)."""

    def __new__(cls, model):
        import torch

        from ecom_pipeline.ml.encoders.pooling import l2_normalize, mean_pool

        class Wrapped(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, input_ids, attention_mask):
                hidden = self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                return l2_normalize(mean_pool(hidden, attention_mask))

        return Wrapped(model).eval()


def onnx_text_files(encoder, models_dir: str | Path, quantize_all: bool = False) -> tuple[Path, dict]:
    """Export + quantise a torch :class:`TextEncoder` (cached) → (int8 .onnx path, recipe info)."""
    keep = () if quantize_all else TEXT_KEEP_FP32_PATTERNS
    tag = _fingerprint(encoder.name, encoder.version, RECIPE, ",".join(keep))
    folder = Path(models_dir) / "onnx" / f"{Path(encoder.name).name}-{tag}"
    fp32, int8, info_path = folder / "model.fp32.onnx", folder / "model.int8.onnx", folder / "RECIPE.json"
    with _LOCK:
        if not (int8.exists() and info_path.exists()):
            import torch

            batch = encoder.tokenize(
                ["passage: export example", "passage: a second, longer example sentence"]
            )
            _export(
                _PooledText(encoder.model.cpu()),
                (batch["input_ids"], batch["attention_mask"]),
                ["input_ids", "attention_mask"],
                {
                    "input_ids": {0: "batch", 1: "seq"},
                    "attention_mask": {0: "batch", 1: "seq"},
                    "embedding": {0: "batch"},
                },
                fp32,
            )
            excluded = _quantize(fp32, int8, keep)
            info = {
                "source": encoder.name,
                "source_version": encoder.version,
                "recipe": RECIPE,
                "kept_fp32_nodes": len(excluded),
                "opset": ONNX_OPSET,
                "torch": torch.__version__,
            }
            info_path.write_text(json.dumps(info, indent=2))
            fp32.unlink(missing_ok=True)  # only the int8 file is served
    return int8, json.loads(info_path.read_text())


@dataclass
class OnnxTextEncoder:
    """A text encoder served by ONNX Runtime int8: same tokenizer, prefixes, pooling and API as
    TextEncoder."""

    name: str
    version: str
    tokenizer: object
    session: object
    dim: int
    query_prefix: str = ""
    passage_prefix: str = ""
    max_length: int = 128
    batch_size: int = 32
    device: str = "cpu"
    quantized: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        return self.name + "+onnx-int8"

    def prefixed(self, texts: Sequence[str], kind: str) -> list[str]:
        from ecom_pipeline.ml.encoders.text import TextEncoder

        return TextEncoder.prefixed(self, texts, kind)  # type: ignore[arg-type]

    def forward_numpy(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.session.run(
            None, {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64)}
        )[0]

    def encode(
        self, texts: Sequence[str], kind: str = "passage", progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        texts = self.prefixed(texts, kind)
        n = len(texts)
        out = np.zeros((n, self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")  # length buckets: little padding
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            tok = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="np",
            )
            out[idx] = self.forward_numpy(tok["input_ids"], tok["attention_mask"])
            if progress is not None:
                progress(min(start + self.batch_size, n), n)
        return out


def onnx_text_encoder(
    torch_encoder, models_dir: str | Path, quantize_all: bool = True, threads: int | None = None
) -> OnnxTextEncoder:
    """The int8 ONNX Runtime twin of a torch :class:`TextEncoder` (exported and quantised on first use)."""
    path, info = onnx_text_files(torch_encoder, models_dir, quantize_all)
    return OnnxTextEncoder(
        name=torch_encoder.name,
        version=f"{torch_encoder.version}+onnx-int8({info['recipe']})",
        tokenizer=torch_encoder.tokenizer,
        session=_session(path, threads),
        dim=torch_encoder.dim,
        query_prefix=torch_encoder.query_prefix,
        passage_prefix=torch_encoder.passage_prefix,
        max_length=torch_encoder.max_length,
        batch_size=torch_encoder.batch_size,
        extra={"onnx_path": str(path), **info},
    )


class _OnnxImageModel:
    """Callable like the torch backbone: float tensor [B,3,H,W] → float tensor [B, dim]."""

    def __init__(self, session):
        self.session = session

    def __call__(self, pixels):
        import torch

        out = self.session.run(None, {"pixels": pixels.detach().cpu().numpy().astype(np.float32)})[0]
        return torch.from_numpy(out)


def onnx_image_encoder(torch_encoder, models_dir: str | Path, threads: int | None = None):
    """The int8 ONNX Runtime twin of a torch :class:`ImageEncoder` (same transform, same output space)."""
    import dataclasses

    import torch

    tag = _fingerprint(torch_encoder.name, torch_encoder.version, RECIPE)
    folder = Path(models_dir) / "onnx" / f"{torch_encoder.name}-{tag}"
    fp32, int8 = folder / "model.fp32.onnx", folder / "model.int8.onnx"
    with _LOCK:
        if not int8.exists():
            _export(
                torch_encoder.model.cpu().eval(),
                (torch.zeros(1, 3, torch_encoder.image_size, torch_encoder.image_size),),
                ["pixels"],
                {"pixels": {0: "batch"}, "embedding": {0: "batch"}},
                fp32,
            )
            _quantize(fp32, int8, ())
            fp32.unlink(missing_ok=True)
    return dataclasses.replace(
        torch_encoder,
        name=torch_encoder.name + "+onnx-int8",
        model=_OnnxImageModel(_session(int8, threads)),
        version=f"{torch_encoder.version}+onnx-int8({RECIPE})",
        device="cpu",
    )
