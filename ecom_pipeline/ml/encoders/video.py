"""Frame-sampling video encoder: decode with PyAV, sample N frames uniformly over the clip, embed each
frame with the image encoder, mean-pool over time, L2-normalise. The result lives in the image encoder's
space, so a product's video and image vectors are directly comparable.

Where product videos come from: a folder convention, ``<dir>/product_videos/<product_id>.mp4`` (or ``.webm``,
``.mov``, ``.mkv``), looked up under the source's data directory and the data root (see docs/models.md).
Bad files never stop a run: :func:`sample_frames` raises :class:`VideoDecodeError` whose message is the
quarantine reason (truncated, zero frames, resolution or length beyond the limits, not a video).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv")
VIDEO_FOLDER = "product_videos"


class VideoDecodeError(Exception):
    """A video that cannot be used; the message is the quarantine reason."""


@dataclass(frozen=True)
class VideoLimits:
    frames: int = 8  # frames sampled uniformly per clip
    max_pixels: int = 3840 * 2160  # per frame: a 4K frame is the largest accepted
    max_seconds: float = 600.0  # declared duration
    max_decoded_frames: int = 20_000  # decode work per clip, whatever the container declares
    min_decoded_share: float = 0.5  # fewer decoded frames than this share of the declared count = truncated


def find_product_videos(*folders: str | Path | None) -> dict[str, Path]:
    """``{product_id: path}`` from ``<folder>/product_videos/<product_id>.<mp4|webm|mov|mkv>``; an earlier
    folder wins when two hold the same product."""
    found: dict[str, Path] = {}
    for folder in folders:
        if not folder:
            continue
        root = Path(folder) / VIDEO_FOLDER
        if not root.is_dir():
            continue
        for path in sorted(root.iterdir()):
            if path.suffix.lower() in VIDEO_SUFFIXES and path.stem and path.stem not in found:
                found[path.stem] = path
    return found


def sample_frames(path: str | Path, limits: VideoLimits = VideoLimits()) -> list:
    """``limits.frames`` RGB PIL frames spread uniformly over the clip (fewer when it has fewer frames)."""
    import av

    path = Path(path)
    try:
        if not path.is_file():
            raise VideoDecodeError(f"not a regular file: {path}")
        if path.stat().st_size == 0:
            raise VideoDecodeError("empty file (0 bytes)")
    except OSError as exc:
        raise VideoDecodeError(f"unusable video path: {type(exc).__name__}: {str(exc)[:200]}") from None
    try:
        container = av.open(str(path), mode="r")
    except av.error.EOFError:
        raise VideoDecodeError("zero frames: the file ends right after its header") from None
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise VideoDecodeError(
            f"cannot open video (not a video, or truncated): {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    with container:
        fmt = container.format.name or ""
        if fmt == "image2" or fmt.endswith("_pipe"):  # FFmpeg reads a renamed photo as a 1-frame "video"
            raise VideoDecodeError(f"not a video: a still image ({fmt})")
        if not container.streams.video:
            raise VideoDecodeError("no video stream (zero frames)")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise VideoDecodeError("video stream without a frame size")
        if width * height > limits.max_pixels:
            raise VideoDecodeError(
                f"resolution too large: {width}x{height} (limit {limits.max_pixels:,} pixels)"
            )
        seconds = _declared_seconds(container, stream)
        if seconds is not None and seconds > limits.max_seconds:
            raise VideoDecodeError(f"video too long: {seconds:.0f} s (limit {limits.max_seconds:g} s)")
        declared = int(stream.frames or 0)
        if not declared and seconds and stream.average_rate:
            declared = round(seconds * float(stream.average_rate))
        stream.thread_type = "AUTO"
        frames = _decode_uniform(container, stream, declared, limits)
    if not frames:
        raise VideoDecodeError("zero decodable frames")
    return frames


def _declared_seconds(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # av.time_base
    return None


def _decode_uniform(container, stream, declared: int, limits: VideoLimits) -> list:
    """Decode once, front to back, keeping the frames nearest to N uniform positions of the declared length.

    Without a declared length every frame is a candidate and the N are picked at the end from a bounded
    reservoir (every k-th frame, k doubling when it fills).
    """
    import av

    n = max(1, limits.frames)
    targets = set(np.linspace(0, declared - 1, n).round().astype(int).tolist()) if declared > 0 else None
    kept: list[tuple[int, object]] = []
    stride, decoded = 1, 0
    try:
        for frame in container.decode(stream):
            if decoded >= limits.max_decoded_frames:
                raise VideoDecodeError(f"more than {limits.max_decoded_frames:,} frames decoded: too long")
            if targets is None:
                if decoded % stride == 0:
                    kept.append((decoded, frame.to_image()))
                    if len(kept) >= 4 * n:  # thin the reservoir, keep sampling half as often
                        kept, stride = kept[::2], stride * 2
            elif decoded in targets:
                kept.append((decoded, frame.to_image()))
            decoded += 1
    except av.FFmpegError as exc:
        raise VideoDecodeError(
            f"decode error after {decoded} frames (truncated or corrupt): "
            f"{type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    if declared > 0 and decoded < limits.min_decoded_share * declared:
        raise VideoDecodeError(f"truncated: decoded {decoded} of {declared} declared frames")
    if targets is None and len(kept) > n:
        pick = np.linspace(0, len(kept) - 1, n).round().astype(int)
        kept = [kept[i] for i in pick]
    return [image.convert("RGB") for _, image in kept]


@dataclass
class VideoEncoder:
    """Mean over time of the image encoder's frame embeddings, re-normalised."""

    image_encoder: object  # an ImageEncoder (torch or ONNX Runtime int8)
    limits: VideoLimits = VideoLimits()

    @property
    def dim(self) -> int:
        return int(self.image_encoder.dim)

    @property
    def model_id(self) -> str:
        return f"{self.image_encoder.model_id}+frames{self.limits.frames}-mean"

    @property
    def version(self) -> str:
        return f"{self.image_encoder.version}; {self.limits.frames} uniform frames, mean-pooled"

    def encode_frames(self, frames: Sequence) -> np.ndarray:
        per_frame = self.image_encoder.encode_images(list(frames))
        pooled = per_frame.mean(axis=0)
        norm = np.linalg.norm(pooled)
        return (pooled / norm if norm > 0 else pooled).astype(np.float32)

    def encode_paths(
        self,
        paths: Sequence[str | Path],
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[np.ndarray, list[int], dict[int, str], list[int]]:
        """Embed every usable clip → (embeddings of the good ones, their indices, {index: reason},
        frames sampled per good clip)."""
        vectors, good, failures, counts = [], [], {}, []
        for i, path in enumerate(paths):
            try:
                frames = sample_frames(path, self.limits)
            except VideoDecodeError as exc:
                failures[i] = str(exc)
            else:
                vectors.append(self.encode_frames(frames))
                good.append(i)
                counts.append(len(frames))
            if progress is not None:
                progress(i + 1, len(paths))
        emb = np.stack(vectors) if vectors else np.zeros((0, self.dim), np.float32)
        return emb, good, failures, counts


def write_clip(
    path: str | Path,
    images: Sequence,
    fps: int = 4,
    seconds_per_image: float = 1.0,
    codec: str | None = None,
    size: tuple[int, int] | None = None,
) -> Path:
    """Write a short clip showing ``images`` (PIL) one after another: how tests and the demo build product
    "videos" from product photos (no real product videos ship with this project). ``.webm`` → VP9 (or VP8),
    anything else → H.264 (or MPEG-4 Part 2 where libx264 is missing)."""
    import av

    path = Path(path)
    width, height = size or images[0].size
    width, height = width - width % 2, height - height % 2  # yuv420p needs even sizes
    candidates = (
        [codec]
        if codec
        else (["libvpx-vp9", "libvpx"] if path.suffix == ".webm" else ["libx264", "h264", "mpeg4"])
    )
    last_error = None
    for name in candidates:
        try:
            with av.open(str(path), mode="w") as out:
                stream = out.add_stream(name, rate=fps)
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                for image in images:
                    frame = av.VideoFrame.from_image(image.convert("RGB").resize((width, height)))
                    for _ in range(max(1, round(fps * seconds_per_image))):
                        for packet in stream.encode(frame):
                            out.mux(packet)
                for packet in stream.encode():
                    out.mux(packet)
            return path
        except (av.FFmpegError, ValueError) as exc:  # codec missing from this FFmpeg build: try the next
            last_error = exc
    raise RuntimeError(f"no usable video encoder among {candidates}: {last_error}")
