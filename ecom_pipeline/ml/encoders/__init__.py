"""Text and image encoders, resolved by name through :mod:`ecom_pipeline.ml.encoders.registry`."""

from ecom_pipeline.ml.encoders.image import ImageDecodeError, ImageEncoder, decode_image
from ecom_pipeline.ml.encoders.pooling import l2_normalize, mean_pool
from ecom_pipeline.ml.encoders.registry import (
    DEFAULT_IMAGE_ENCODER,
    DEFAULT_TEXT_ENCODER,
    FALLBACK_TEXT_ENCODER,
    load_image_encoder,
    load_text_encoder,
)
from ecom_pipeline.ml.encoders.text import TextEncoder

__all__ = [
    "DEFAULT_IMAGE_ENCODER",
    "DEFAULT_TEXT_ENCODER",
    "FALLBACK_TEXT_ENCODER",
    "ImageDecodeError",
    "ImageEncoder",
    "TextEncoder",
    "decode_image",
    "l2_normalize",
    "load_image_encoder",
    "load_text_encoder",
    "mean_pool",
]
