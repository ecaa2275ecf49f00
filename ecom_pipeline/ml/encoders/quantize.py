"""int8 dynamic quantisation (torch) of a text encoder's Linear layers, for CPU inference."""

from __future__ import annotations


def quantize_dynamic_int8(model):
    """A copy of ``model`` with every ``nn.Linear`` replaced by a dynamically quantised int8 Linear.

    Weights are int8 per channel; activations are quantised per batch at run time.  CPU only (fbgemm/qnnpack);
    embeddings and LayerNorm stay float32.
    """
    import copy

    import torch

    engines = torch.backends.quantized.supported_engines
    if "fbgemm" in engines:
        torch.backends.quantized.engine = "fbgemm"
    elif "qnnpack" in engines:
        torch.backends.quantized.engine = "qnnpack"
    q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).cpu().eval(), {torch.nn.Linear},
                                               dtype=torch.qint8)
    return q
