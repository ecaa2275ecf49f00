"""GCN region embeddings for every region level with a graph: the work behind the ``region_embeddings`` asset.

Framework-free: takes the region, kNN-graph and flow frames and returns the embeddings, the per-level link
AUC beside a random-embedding baseline, and the encoder of the finest level (the one that is served).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

LEVELS_FINEST_FIRST = ("zip3", "state", "country")


@dataclass
class LevelScore:
    level: str
    auc: float  # link-reconstruction AUC of the embedding (NaN: complete graph, no non-edges)
    random_auc: float  # the same for a random embedding: the baseline


@dataclass
class RegionEmbeddings:
    embeddings: pd.DataFrame  # region_id, level, embedding (list of floats)
    scores: list[LevelScore] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # for MLflow, NaN dropped
    meta: dict[str, Any] = field(default_factory=dict)  # per-level counts, seconds, notes
    served_encoder: Any = None  # the encoder of the finest level with a graph (None: no level trained)
    served_auc: float | None = None


def embed_region_levels(
    regions: pd.DataFrame,
    graph: pd.DataFrame,
    flows: pd.DataFrame,
    *,
    dim: int,
    hidden: int,
    epochs: int,
    min_flow_orders: int,
    device: str,
) -> RegionEmbeddings:
    """Train one graph autoencoder per region level (kNN edges plus seller→customer flow edges with at least
    ``min_flow_orders`` orders); levels with fewer than three regions are skipped with a note."""
    from ecom_pipeline.ml.spatial.gcn import adjacency, link_auc, node_features, train_embeddings

    sizes = regions["level"].value_counts() if len(regions) else pd.Series(dtype=int)
    finest = next((lv for lv in LEVELS_FINEST_FIRST if sizes.get(lv, 0) >= 3), None)
    result = RegionEmbeddings(pd.DataFrame(columns=["region_id", "level", "embedding"]))
    rows = []
    for level, r in regions.groupby("level") if len(regions) else []:
        r = r.reset_index(drop=True)
        ids = r["region_id"].tolist()
        if len(r) < 3:
            result.meta[f"{level}_skipped"] = f"only {len(r)} regions"
            continue
        edges = graph[graph.level == level][["src", "dst"]]
        if len(flows):
            f = flows[(flows.level == level) & (flows.orders >= min_flow_orders)][["src", "dst"]]
            edges = pd.concat([edges, f])
        A = adjacency(ids, edges)
        t0 = time.perf_counter()
        Z, hist, enc = train_embeddings(
            node_features(r), A, dim=dim, hidden=hidden, epochs=epochs, device=device
        )
        auc = link_auc(Z, A)
        rand_auc = link_auc(np.random.default_rng(0).normal(size=Z.shape), A)
        result.meta[f"{level}_regions"] = len(r)
        result.meta[f"{level}_edges"] = int((A > 0).sum() // 2)
        result.meta[f"{level}_link_auc"] = round(auc, 3)
        result.meta[f"{level}_seconds"] = round(time.perf_counter() - t0, 1)
        scores = {
            f"{level}_link_auc": auc,
            f"{level}_random_link_auc": rand_auc,
            f"{level}_final_loss": hist[-1],
        }
        result.metrics.update({k: v for k, v in scores.items() if v == v})
        if auc != auc:
            result.meta[f"{level}_note"] = (
                "graph is complete (no non-edges): link AUC undefined, no metric row"
            )
        else:
            result.scores.append(LevelScore(level, auc, rand_auc))
        rows += [
            {"region_id": rid, "level": level, "embedding": Z[i].astype(float).tolist()}
            for i, rid in enumerate(ids)
        ]
        if level == finest:  # the encoder of the finest level with a graph is the one served
            result.served_encoder, result.served_auc = enc.cpu(), auc
    result.embeddings = pd.DataFrame(rows, columns=["region_id", "level", "embedding"])
    return result
