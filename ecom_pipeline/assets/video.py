"""Product video embeddings: thin asset over :mod:`ecom_pipeline.ml.encoders.video`.

Videos are found by folder convention, ``<data_dir or data_root>/product_videos/<product_id>.mp4|webm``
(docs/models.md). Each usable clip becomes one vector in the image encoder's space (N uniform frames,
mean-pooled), stored like the image embeddings; unusable files go to ``features.video_quarantine`` with the
reason. ``features.product_embeddings`` fuses the video vector in when a product has one.
"""

from pathlib import Path

import dagster as dg
import pandas as pd

from ecom_pipeline.assets.embeddings import (
    GROUP,
    PRODUCT_VIDEO_EMB,
    _progress,
    fkey,
)
from ecom_pipeline.resources import ComputeResource, PathsResource, SourceResource, WarehouseResource
from ecom_pipeline.routing import GPU_OP_TAGS, GPU_POOL

VIDEO_QUARANTINE = "features.video_quarantine"


class VideoEmbeddingConfig(dg.Config):
    image_encoder: str = "mobilenet_v2"
    frames: int = 8  # sampled uniformly over each clip
    max_pixels: int = 3840 * 2160  # per frame; larger videos are quarantined before decoding
    max_seconds: float = 600.0  # declared duration; longer videos are quarantined
    max_new_per_run: int = 500  # at most this many new/changed clips per run; 0 = no cap


def video_frame(folders: list, known_products: set[str]) -> pd.DataFrame:
    """``product_id``, ``video_uri``, ``input_hash`` (path + size + mtime: a replaced file is re-encoded)
    and ``known`` (the product exists in staging.products)."""
    from ecom_pipeline.ml.encoders.store import text_hash
    from ecom_pipeline.ml.encoders.video import find_product_videos

    rows = []
    for pid, path in find_product_videos(*folders).items():
        st = path.stat()
        rows.append(
            (pid, str(path), text_hash(f"{path}|{st.st_size}|{st.st_mtime_ns}"), pid in known_products)
        )
    # bool dtype even when empty: an empty object-dtype mask would select columns, not rows
    return pd.DataFrame(rows, columns=["product_id", "video_uri", "input_hash", "known"]).astype(
        {"known": bool}
    )


def _known_products(warehouse: WarehouseResource) -> set[str]:
    """Product ids in staging.products (none when the table does not exist yet)."""
    from ecom_pipeline.ml.encoders.store import table_exists

    with warehouse.connect(read_only=True) as con:
        return (
            set(con.execute("SELECT product_id FROM staging.products").fetchdf()["product_id"].astype(str))
            if table_exists(con, "staging.products")
            else set()
        )


def _quarantine_rows(todo: pd.DataFrame, failures: dict, unknown: pd.DataFrame) -> pd.DataFrame:
    """``product_id``, ``video_uri``, ``reason`` for the clips that failed to encode and the videos of
    products that staging does not know."""
    return pd.concat(
        [
            todo.iloc[sorted(failures)].assign(reason=[failures[i] for i in sorted(failures)]),
            unknown.assign(reason="no such product in staging.products"),
        ]
    )[["product_id", "video_uri", "reason"]]


def _store_video_embeddings(warehouse, enc, videos, todo, unknown, ok, emb, frames, bad) -> tuple:
    """Upsert the new embeddings, drop those of vanished files and replace the quarantine rows of the
    products looked at this run, in one connection; ``(written, total, quarantined)``."""
    from ecom_pipeline.ml.encoders.quarantine import replace_quarantine
    from ecom_pipeline.ml.encoders.store import ensure_embedding_table, upsert_embeddings

    with warehouse.connect() as con:
        ensure_embedding_table(con, PRODUCT_VIDEO_EMB, "product_id", "frames INTEGER")
        written = upsert_embeddings(
            con,
            PRODUCT_VIDEO_EMB,
            "product_id",
            ok[["product_id", "input_hash"]].assign(frames=frames),
            emb,
            model=enc.model_id,
            model_version=enc.version,
            extra_columns="frames INTEGER",
        )
        # a product whose video file is gone has no video embedding any more
        con.execute(
            f"DELETE FROM {PRODUCT_VIDEO_EMB} WHERE product_id NOT IN (SELECT unnest(?::VARCHAR[]))",
            [videos.loc[videos["known"], "product_id"].tolist()],
        )
        total, quarantined = replace_quarantine(
            con,
            VIDEO_QUARANTINE,
            PRODUCT_VIDEO_EMB,
            "video_uri",
            todo["product_id"].tolist() + unknown["product_id"].tolist(),
            bad,
            enc.model_id,
        )
    return written, total, quarantined


@dg.asset(
    key=fkey("product_video_embeddings"),
    group_name=GROUP,
    tags={"ecom/stage": "features"},
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    deps=[dg.AssetKey(["staging", "products"])],
    kinds={"pytorch", "duckdb"},
    description="Product video embeddings: N frames sampled uniformly from "
    "`product_videos/<product_id>.mp4|webm` (under the source's data dir or the data root), each embedded "
    "with the image encoder, mean-pooled over time. Unusable files (truncated, zero frames, too large, too "
    "long, unknown product) are listed in `features.video_quarantine` with the reason. Incremental by "
    "file (path, size, mtime).",
)
def product_video_embeddings(
    context: dg.AssetExecutionContext,
    config: VideoEmbeddingConfig,
    warehouse: WarehouseResource,
    compute: ComputeResource,
    source: SourceResource,
    paths: PathsResource,
):
    import time

    from ecom_pipeline.ml.encoders import load_image_encoder
    from ecom_pipeline.ml.encoders.store import bounded_batch, pending_rows
    from ecom_pipeline.ml.encoders.video import VideoEncoder, VideoLimits

    known = _known_products(warehouse)
    folders = [source.data_dir or None, paths.root]
    videos = video_frame(folders, known)
    device = compute.torch_device()
    compute.configure_threads()
    image_enc = load_image_encoder(config.image_encoder, device=device)
    enc = VideoEncoder(
        image_enc,
        VideoLimits(frames=config.frames, max_pixels=config.max_pixels, max_seconds=config.max_seconds),
    )
    unknown = videos[~videos["known"]]
    with warehouse.connect(read_only=True) as con:
        pending = pending_rows(con, PRODUCT_VIDEO_EMB, "product_id", videos[videos["known"]], enc.model_id)
    todo, backlog = bounded_batch(pending, config.max_new_per_run, by="product_id")
    context.log.info(
        f"{len(videos):,} product videos under {[str(Path(f) / 'product_videos') for f in folders if f]}; "
        f"{len(todo):,} to encode on {device}" + (f", {backlog:,} left for later runs" if backlog else "")
    )
    t0 = time.monotonic()
    emb, good, failures, frames = enc.encode_paths(
        todo["video_uri"].tolist(), _progress(context, "product videos")
    )
    secs = time.monotonic() - t0
    ok = todo.iloc[good]
    bad = _quarantine_rows(todo, failures, unknown)
    written, total, quarantined = _store_video_embeddings(
        warehouse, enc, videos, todo, unknown, ok, emb, frames, bad
    )
    if len(bad):
        context.log.warning(f"{len(bad)} product videos quarantined this run; see {VIDEO_QUARANTINE}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": int(total),
            "videos_found": len(videos),
            "encoded_this_run": written,
            "quarantined_this_run": len(bad),
            "quarantined_total": int(quarantined),
            "backlog": int(backlog),
            "model": enc.model_id,
            "model_version": enc.version,
            "device": device,
            "seconds": round(secs, 2),
            "message": "no product videos (product_videos/<product_id>.mp4|webm)" if videos.empty else "ok",
        }
    )


def build() -> dg.Definitions:
    return dg.Definitions(assets=[product_video_embeddings])
