"""Image encoder: a torchvision CNN without its classifier → global-average-pooled, L2-normalised vector."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Refused before decoding: more pixels than a 64-megapixel photo (a decompression bomb would otherwise
# take gigabytes), or a strip so thin that resizing its short side to 224 px makes a gigantic tensor.
MAX_IMAGE_PIXELS = 64_000_000
MAX_ASPECT_RATIO = 20.0


class ImageDecodeError(Exception):
    """An image that cannot be read; the message is the quarantine reason."""


def decode_image(uri: str, base_dir: str | Path | None = None):
    """Open ``uri`` (a path, relative to ``base_dir`` when not absolute, or ``file://``) as an RGB PIL
    image."""
    from PIL import Image, UnidentifiedImageError

    if not uri or not isinstance(uri, str):
        raise ImageDecodeError("no image uri")
    if uri.startswith(("http://", "https://")):
        raise ImageDecodeError("remote image not fetched: the pipeline runs offline")
    path = Path(uri.removeprefix("file://"))
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    try:  # a NUL byte or an over-long name raises instead of answering False
        if not path.exists():
            raise ImageDecodeError(f"file not found: {path}")
        if not path.is_file():  # a directory, a FIFO (would block forever), a device
            raise ImageDecodeError(f"not a regular file: {path}")
    except (OSError, ValueError) as exc:
        raise ImageDecodeError(f"unusable image path: {type(exc).__name__}: {str(exc)[:200]}") from None
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise ImageDecodeError(f"image too large: {w}x{h} pixels (limit {MAX_IMAGE_PIXELS:,})")
            if min(w, h) < 1 or max(w, h) / min(w, h) > MAX_ASPECT_RATIO:
                raise ImageDecodeError(
                    f"degenerate image: {w}x{h} pixels (aspect ratio limit {MAX_ASPECT_RATIO:g})"
                )
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"cannot decode image: {type(exc).__name__}: {exc}") from exc


@dataclass
class ImageEncoder:
    name: str
    version: str
    model: object  # a module mapping [B,3,224,224] → [B, dim]
    dim: int
    image_size: int = 224
    batch_size: int = 32
    device: str = "cpu"

    @property
    def model_id(self) -> str:
        return self.name

    def transform(self, image):
        t = getattr(self, "_transform", None)
        if t is None:
            import torch
            from torchvision.transforms import v2 as T

            t = self._transform = T.Compose(
                [
                    T.ToImage(),
                    T.Resize(self.image_size, antialias=True),
                    T.CenterCrop(self.image_size),
                    T.ToDtype(torch.float32, scale=True),
                    T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
                ]
            )
        return t(image)

    def forward(self, pixels):
        import torch

        with torch.inference_mode():
            feats = self.model(pixels.to(self.device)).float()
            return torch.nn.functional.normalize(feats, dim=-1).cpu()

    def encode_images(
        self, images: Sequence, progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        import torch

        n = len(images)
        out = np.zeros((n, self.dim), dtype=np.float32)
        for start in range(0, n, self.batch_size):
            chunk = images[start : start + self.batch_size]
            out[start : start + len(chunk)] = self.forward(
                torch.stack([self.transform(im) for im in chunk])
            ).numpy()
            if progress is not None:
                progress(min(start + self.batch_size, n), n)
        return out

    def encode_uris(
        self,
        uris: Sequence[str],
        base_dir: str | Path | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[np.ndarray, list[int], dict[int, str]]:
        """Embed every decodable image → (embeddings of the good ones, their indices, {index: reason})."""
        good, images, failures = [], [], {}
        for i, uri in enumerate(uris):
            try:
                images.append(decode_image(uri, base_dir))
                good.append(i)
            except ImageDecodeError as exc:
                failures[i] = str(exc)
        emb = self.encode_images(images, progress) if images else np.zeros((0, self.dim), np.float32)
        return emb, good, failures


def _pooled_backbone(net):
    """``features`` + global average pooling + flatten of a torchvision classification network."""
    import torch

    if hasattr(net, "features"):
        return torch.nn.Sequential(net.features, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    net.fc = torch.nn.Identity()  # ResNet-style
    return net
