"""Unusable media (unreadable images, broken videos) quarantined beside an embedding table, with the reason.

Framework-free: works on a DuckDB connection the caller opened, like :mod:`ecom_pipeline.ml.encoders.store`.
"""

from __future__ import annotations

import pandas as pd


def replace_quarantine(
    con,
    quarantine: str,
    embeddings: str,
    uri_column: str,
    checked_ids: list[str],
    bad: pd.DataFrame,
    model_id: str,
) -> tuple[int, int]:
    """Replace the quarantine rows of every product checked this run with ``bad`` (``product_id``,
    ``uri_column``, ``reason``) and drop those products' embeddings; returns ``(embedded rows, quarantined
    rows)`` of the two tables after the change."""
    con.execute(f"""CREATE TABLE IF NOT EXISTS {quarantine} (product_id VARCHAR, {uri_column} VARCHAR,
                    reason VARCHAR, model VARCHAR, checked_at TIMESTAMP)""")
    con.execute(f"DELETE FROM {quarantine} WHERE product_id IN (SELECT unnest(?::VARCHAR[]))", [checked_ids])
    if len(bad):
        rows = bad[["product_id", uri_column, "reason"]].assign(
            model=model_id, checked_at=pd.Timestamp.now(tz=None)
        )
        con.register("_bad", rows)
        try:
            con.execute(
                f"INSERT INTO {quarantine} SELECT product_id, {uri_column}, reason, model, "
                "checked_at FROM _bad"
            )
            con.execute(f"DELETE FROM {embeddings} WHERE product_id IN (SELECT product_id FROM _bad)")
        finally:
            con.unregister("_bad")
    total = con.execute(f"SELECT count(*) FROM {embeddings}").fetchall()[0][0]
    quarantined = con.execute(f"SELECT count(*) FROM {quarantine}").fetchall()[0][0]
    return int(total), int(quarantined)
