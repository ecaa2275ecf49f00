"""What the serving app reads from the published snapshot, held in memory (one immutable object per
snapshot, swapped whole on reload so a request never sees half of two snapshots)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ecom_pipeline.snapshot import open_snapshot, snapshot_identity


def _exists(con, table: str) -> bool:
    schema, name = table.split(".", 1)
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        ).fetchall()[0][0]
    )


def _frame(con, table: str, sql: str | None = None) -> pd.DataFrame:
    return con.execute(sql or f"SELECT * FROM {table}").fetchdf() if _exists(con, table) else pd.DataFrame()


@dataclass
class VectorIndex:
    """Unit-norm row vectors with their product ids, for cosine top-k by one matrix product."""

    ids: list[str]
    matrix: np.ndarray  # float32, rows unit norm
    model: str = ""
    position: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.position = {p: i for i, p in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1]) if self.matrix.size else 0

    def vector(self, product_id: str) -> np.ndarray | None:
        i = self.position.get(product_id)
        return None if i is None else self.matrix[i]

    def top_k(self, query: np.ndarray, k: int, exclude: set[str] = frozenset()) -> list[tuple[str, float]]:
        if not len(self.ids):
            return []
        q = np.asarray(query, np.float32)
        q = q / (np.linalg.norm(q) or 1.0)
        scores = self.matrix @ q
        n = min(len(scores), k + len(exclude))
        best = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
        best = best[np.argsort(-scores[best])]
        return [(self.ids[i], float(scores[i])) for i in best if self.ids[i] not in exclude][:k]


def _vectors(con, table: str) -> VectorIndex:
    from ecom_pipeline.ml.encoders.store import read_vectors

    if not _exists(con, table):
        return VectorIndex([], np.zeros((0, 0), np.float32))
    ids, mat = read_vectors(con, table, "product_id")
    if mat.size:
        mat = mat / np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
    model = con.execute(f"SELECT any_value(model) FROM {table}").fetchall()[0][0] if len(ids) else ""
    return VectorIndex(ids, mat.astype(np.float32), model or "")


class CustomerLists:
    """The batch lists of ``serving.recommendations`` (level item), one sorted frame with a customer → row
    range index: a dict of one small frame per customer costs seconds and gigabytes at a million customers."""

    def __init__(self, recs: pd.DataFrame):
        self.frame = recs.reset_index(drop=True)
        self.ranges: dict[str, tuple[int, int]] = {}
        if len(recs):
            ids = self.frame["customer_id"].to_numpy()
            starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
            ends = np.r_[starts[1:], len(ids)]
            self.ranges = dict(zip(ids[starts].tolist(), zip(starts.tolist(), ends.tolist())))
        # plain arrays for the request path (a pandas slice per request costs more than the whole ranking)
        self.item_ids = self.frame["item_id"].astype(str).to_numpy() if len(recs) else np.array([], object)
        self.explanations = (
            self.frame["explanation"].fillna("").astype(str).to_numpy()
            if "explanation" in self.frame
            else np.full(len(self.frame), "", object)
        )
        self.models = (
            self.frame["model"].fillna("").astype(str).to_numpy()
            if "model" in self.frame
            else np.full(len(self.frame), "", object)
        )

    def rows(self, customer: str) -> tuple[list[str], list[str], str] | None:
        """(item ids by rank, their explanations, the model) of ``customer``'s batch list."""
        span = self.ranges.get(customer)
        if span is None:
            return None
        a, b = span
        return self.item_ids[a:b].tolist(), self.explanations[a:b].tolist(), str(self.models[a])

    def __len__(self) -> int:
        return len(self.ranges)

    def __contains__(self, customer: str) -> bool:
        return customer in self.ranges

    def get(self, customer: str) -> pd.DataFrame | None:
        span = self.ranges.get(customer)
        return None if span is None else self.frame.iloc[span[0] : span[1]]

    def __getitem__(self, customer: str) -> pd.DataFrame:
        rows = self.get(customer)
        if rows is None:
            raise KeyError(customer)
        return rows


@dataclass
class ServingData:
    path: Path
    identity: tuple[int, int] | None
    published_at: str | None
    products: pd.DataFrame  # product_id (index) -> title, category, price
    recommendations: CustomerLists  # pseudonymised customer_id -> item rows ordered by rank
    customer_region: dict[str, str]
    popular: dict[str, list[str]]  # region ('*' = everywhere) -> product ids, most order lines first
    similar: dict[str, list[tuple[str, float]]]  # precomputed serving.similar_products
    fused: VectorIndex  # features.product_embeddings (text + image)
    text: VectorIndex  # features.product_text_embeddings
    image: VectorIndex  # features.product_image_embeddings
    forecasts: pd.DataFrame
    anomalies: pd.DataFrame
    daily_last: dict[str, str]  # series_id -> last day of its daily series (for the anomaly status)
    decisions: pd.DataFrame  # ml.serving_decisions ('' frame when the gate table does not exist)
    tables: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    # (task, candidate, scope) -> (served, reason) of the newest decision
    gate: dict[tuple[str, str, str], tuple[bool, str]] = field(default_factory=dict)

    def __post_init__(self):
        p = self.products
        if len(p) and not self.names:
            label = p["title"].where(p["title"].notna() & (p["title"].astype(str) != ""), p["category"])
            self.names = {str(i): str(v) for i, v in label.fillna("").items() if v}
        d = self.decisions
        if (
            d is not None
            and len(d)
            and {"task", "scope", "candidate", "served"} <= set(d.columns)
            and not self.gate
        ):
            d = d.sort_values("decided_at") if "decided_at" in d else d
            for row in d.itertuples(index=False):
                # the pipeline's gate writes the served model's name; a boolean column is read as it is
                served = (
                    bool(row.served)
                    if isinstance(row.served, (bool, np.bool_))
                    else str(row.served) == str(row.candidate)
                )
                self.gate[(str(row.task), str(row.candidate), str(row.scope))] = (
                    served,
                    str(getattr(row, "reason", "") or ""),
                )

    def name(self, product_id: str) -> str:
        return self.names.get(product_id, product_id)


def load_serving_data(path: str | Path) -> ServingData:
    path = Path(path)
    identity = snapshot_identity(path)
    con = open_snapshot(path)
    try:
        tables = [
            f"{s}.{t}"
            for s, t in con.execute(
                "SELECT table_schema, table_name FROM information_schema.tables ORDER BY 1, 2"
            ).fetchall()
        ]
        info = _frame(con, "meta.snapshot_info")
        products = _frame(
            con, "staging.products", "SELECT product_id, title, category, price FROM staging.products"
        )
        products = (
            products.set_index("product_id")
            if len(products)
            else pd.DataFrame(columns=["title", "category", "price"])
        )
        recs = _frame(
            con,
            "serving.recommendations",
            "SELECT * FROM serving.recommendations WHERE level = 'item' ORDER BY customer_id, rank",
        )
        by_customer = CustomerLists(recs)
        regions = _frame(con, "staging.customer_regions")
        popular_rows = _frame(
            con,
            "serving.popular_items",
            "SELECT region, product_id FROM serving.popular_items "
            "ORDER BY region, order_lines DESC, product_id",
        )
        popular = (
            {r: g["product_id"].tolist()[:500] for r, g in popular_rows.groupby("region", sort=False)}
            if len(popular_rows)
            else {}
        )
        sim = _frame(
            con,
            "serving.similar_products",
            "SELECT product_id, similar_product_id, score FROM serving.similar_products "
            "ORDER BY product_id, rank",
        )
        similar: dict[str, list[tuple[str, float]]] = {}
        for p, s, v in sim.itertuples(index=False) if len(sim) else []:
            similar.setdefault(p, []).append((s, float(v)))
        forecasts = _frame(con, "serving.forecasts")
        anomalies = _frame(con, "serving.anomalies")
        decisions = _frame(con, "ml.serving_decisions")
        last = _frame(con, "serving.series_last_day")
        daily_last = (
            {sid: str(pd.Timestamp(d).date()) for sid, d in zip(last["series_id"], last["last_day"])}
            if len(last)
            else {}
        )
        return ServingData(
            path=path,
            identity=identity,
            published_at=str(info["published_at"].iloc[0]) if len(info) else None,
            products=products,
            recommendations=by_customer,
            customer_region=dict(zip(regions["customer_id"], regions["state"])) if len(regions) else {},
            popular=popular,
            similar=similar,
            fused=_vectors(con, "features.product_embeddings"),
            text=_vectors(con, "features.product_text_embeddings"),
            image=_vectors(con, "features.product_image_embeddings"),
            forecasts=forecasts,
            anomalies=anomalies,
            daily_last=daily_last,
            decisions=decisions,
            tables=tables,
        )
    finally:
        con.close()
