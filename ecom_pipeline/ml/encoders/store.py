"""Embedding tables in DuckDB (``FLOAT[]`` columns, model name/version per row), incremental writes,
multimodal fusion and similarity search with DuckDB's ``list_cosine_similarity``.

Framework-free: every function takes a DuckDB connection.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from ecom_pipeline.warehouse.tables import table_exists  # noqa: F401  (the shared helper; callers import it from here)

EMBEDDING_COLUMNS = (
    "embedding FLOAT[], dim INTEGER, model VARCHAR, model_version VARCHAR, "
    "input_hash VARCHAR, embedded_at TIMESTAMP"
)


def text_hash(text: str | None) -> str:
    return hashlib.sha1((text or "").encode("utf-8")).hexdigest()[:16]


def ensure_embedding_table(con, table: str, key: str, extra_columns: str = "") -> None:
    schema = table.split(".")[0]
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    extra = (extra_columns + ", ") if extra_columns else ""
    con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({key} VARCHAR PRIMARY KEY, {extra}{EMBEDDING_COLUMNS})")


def to_arrow(frame: pd.DataFrame, embeddings: np.ndarray, vector_col: str = "embedding"):
    """``frame`` plus a ``FLOAT[]`` column built from ``embeddings`` (float32 [n, d]) as an Arrow table."""
    import pyarrow as pa

    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, d = emb.shape if emb.ndim == 2 else (0, 0)
    values = pa.array(emb.reshape(-1), type=pa.float32())
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32) if n else np.zeros(1, np.int32))
    lists = pa.ListArray.from_arrays(offsets, values)
    tbl = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    return tbl.append_column(vector_col, lists)


def pending_rows(con, table: str, key: str, candidates: pd.DataFrame, model_id: str) -> pd.DataFrame:
    """The candidate rows (``key``, ``input_hash``) not yet embedded by ``model_id`` with the same input."""
    if candidates.empty or not table_exists(con, table):
        return candidates
    con.register("_cand", candidates[[key, "input_hash"]])
    try:
        todo = con.execute(
            f"SELECT c.{key} FROM _cand c LEFT JOIN {table} t ON t.{key} = c.{key} "
            f"AND t.model = ? AND t.input_hash = c.input_hash WHERE t.{key} IS NULL",
            [model_id],
        ).fetchdf()
    finally:
        con.unregister("_cand")
    return candidates[candidates[key].isin(set(todo[key]))]


def arrived_since_last_run(pending: pd.DataFrame, loaded_at: pd.Series, last_run) -> tuple[pd.DataFrame, int]:
    """The ``pending`` rows loaded after the last encoder run (``loaded_at``: per row, aligned with
    ``pending``; unknown load times count as new), and how many older pending rows are left out (a cold
    start's history, for a backfill run).  Without an earlier run every pending row is new."""
    if last_run is None or pd.isna(last_run):
        return pending, 0
    new = loaded_at.isna() | (loaded_at > pd.Timestamp(last_run))
    return pending[new.to_numpy()], int((~new).sum())


def bounded_batch(pending: pd.DataFrame, limit: int, by: str) -> tuple[pd.DataFrame, int]:
    """At most ``limit`` rows of ``pending``, largest ``by`` first (newest, best-selling), and how many are
    left for later runs.

    Bounds the work of one incremental run: a cold start on a large table catches up over several runs
    (the rows that matter most first) while a daily run stays small.  ``limit <= 0`` means no limit.
    """
    if limit <= 0 or len(pending) <= limit:
        return pending, 0
    ordered = pending.sort_values(by, ascending=False, na_position="last", kind="stable")
    return ordered.head(limit), len(pending) - limit


def upsert_embeddings(
    con,
    table: str,
    key: str,
    frame: pd.DataFrame,
    embeddings: np.ndarray,
    *,
    model: str,
    model_version: str,
    extra_columns: str = "",
    replace: bool = False,
) -> int:
    """Replace the rows of ``frame[key]`` in ``table`` with the new vectors; returns rows written.

    ``replace``: the table becomes exactly ``frame`` (dropped and recreated in the same transaction as the
    insert, so a step killed half-way leaves the previous table, never a missing one)."""
    cols = [c.strip().split()[0] for c in extra_columns.split(",") if c.strip()]
    names = ", ".join(
        [key] + cols + ["embedding", "dim", "model", "model_version", "input_hash", "embedded_at"]
    )
    arrow = None
    if len(frame):
        f = frame.reset_index(drop=True).copy()
        f["dim"] = int(embeddings.shape[1])
        f["model"] = model
        f["model_version"] = model_version
        f["embedded_at"] = datetime.now(UTC).replace(tzinfo=None)
        arrow = to_arrow(
            f[[key] + cols + ["dim", "model", "model_version", "input_hash", "embedded_at"]], embeddings
        )
    if not replace:
        ensure_embedding_table(con, table, key, extra_columns)
        if arrow is None:
            return 0
    if arrow is not None:
        con.register("_new", arrow)
    try:
        con.execute("BEGIN")
        if replace:
            con.execute(f"DROP TABLE IF EXISTS {table}")
            ensure_embedding_table(con, table, key, extra_columns)
        elif arrow is not None:
            con.execute(f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM _new)")
        if arrow is not None:
            con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM _new")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        if arrow is not None:
            con.unregister("_new")
    return len(frame)


def read_vectors(con, table: str, key: str, where: str = "") -> tuple[list[str], np.ndarray]:
    """Keys and a float32 matrix of the ``embedding`` column (empty when the table is missing or empty)."""
    if not table_exists(con, table):
        return [], np.zeros((0, 0), np.float32)
    arrow = con.sql(f"SELECT {key}, embedding FROM {table} {where} ORDER BY {key}").to_arrow_table()
    if arrow.num_rows == 0:
        return [], np.zeros((0, 0), np.float32)
    keys = arrow.column(key).to_pylist()
    col = arrow.column("embedding").combine_chunks()
    d = len(col[0].as_py())
    mat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(keys), d)
    return keys, mat


def normalize_rows(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(n > 0, n, 1)).astype(np.float32)


def fuse_modalities(
    product_ids: list[str],
    parts: dict[str, tuple[list[str], np.ndarray]],
    weights: dict[str, float],
) -> tuple[pd.DataFrame, np.ndarray]:
    """Weighted concatenation of unit-norm modality vectors, zeros where a modality is missing, re-normalised.

    For two products the cosine of the fused vectors is the weight-averaged cosine of the modalities both
    have, so text-only and text+image products stay comparable.  Returns (product_id, modalities) + matrix.
    """
    blocks, present = [], np.zeros((len(product_ids), len(parts)), dtype=bool)
    index = {p: i for i, p in enumerate(product_ids)}
    names = list(parts)
    for j, name in enumerate(names):
        keys, mat = parts[name]
        dim = mat.shape[1] if mat.size else 0
        block = np.zeros((len(product_ids), dim), np.float32)
        for k, row in zip(keys, mat):
            i = index.get(k)
            if i is not None:
                block[i] = row
                present[i, j] = True
        blocks.append(block * np.sqrt(weights.get(name, 1.0)))
    fused = (
        normalize_rows(np.concatenate(blocks, axis=1))
        if blocks
        else np.zeros((len(product_ids), 0), np.float32)
    )
    has_any = present.any(axis=1)
    meta = pd.DataFrame(
        {
            "product_id": product_ids,
            "modalities": [",".join(n for n, p in zip(names, row) if p) for row in present],
        }
    )
    return meta[has_any].reset_index(drop=True), fused[has_any]


def top_k_similar(
    keys: list[str],
    mat: np.ndarray,
    k: int = 10,
    chunk: int = 2048,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """All-pairs top-k cosine neighbours (rows are unit norm), excluding the item itself."""
    rows = []
    n = len(keys)
    k = min(k, max(n - 1, 0))
    if k == 0:
        return pd.DataFrame(columns=["product_id", "rank", "similar_product_id", "score"])
    for s in range(0, n, chunk):
        sims = mat[s : s + chunk] @ mat.T
        for i in range(sims.shape[0]):
            sims[i, s + i] = -np.inf
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        part = np.take_along_axis(sims, idx, axis=1)
        order = np.argsort(-part, axis=1)
        idx, part = np.take_along_axis(idx, order, axis=1), np.take_along_axis(part, order, axis=1)
        for i in range(sims.shape[0]):
            for r in range(k):
                rows.append((keys[s + i], r + 1, keys[idx[i, r]], float(part[i, r])))
        if progress:
            progress(min(s + chunk, n), n)
    return pd.DataFrame(rows, columns=["product_id", "rank", "similar_product_id", "score"])


def similar_products(
    con, product_id: str, k: int = 10, table: str = "features.product_embeddings"
) -> pd.DataFrame:
    """Serving query: the ``k`` products most similar to ``product_id`` by DuckDB
    ``list_cosine_similarity``."""
    return con.execute(
        f"""SELECT o.product_id AS similar_product_id,
                   list_cosine_similarity(o.embedding, q.embedding) AS score, o.modalities
            FROM {table} q JOIN {table} o ON o.product_id <> q.product_id
            WHERE q.product_id = ?
            ORDER BY score DESC, similar_product_id LIMIT ?""",
        [product_id, k],
    ).fetchdf()


def similar_to_vector(
    con, vector: np.ndarray, k: int = 10, table: str = "features.product_embeddings"
) -> pd.DataFrame:
    """Products closest to an arbitrary query vector (same space as ``table``)."""
    return con.execute(
        f"""SELECT product_id, list_cosine_similarity(embedding, ?::FLOAT[]) AS score FROM {table}
            ORDER BY score DESC, product_id LIMIT ?""",
        [np.asarray(vector, np.float32).tolist(), k],
    ).fetchdf()
