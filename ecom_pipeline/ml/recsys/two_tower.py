"""Hybrid two-tower recommender in torch (framework-free: no Dagster here).

Item tower: learned item-id embedding + category embedding + price-bucket embedding + a projection of the
(frozen) multimodal product embedding when given + review-sentiment aggregate when given → MLP → unit vector.
User tower: weighted mean of the item-tower vectors of the user's history (the training target left out while
training) + region embedding (a projection of the GCN ``features.region_embeddings`` vector of the user's
state when given, else a learned state embedding) + segment embedding when given → MLP → unit vector.
Score = cosine / temperature.  Trained with sampled softmax: in-batch negatives plus shared uniform
negatives, per-pair weight log1p(interaction weight).  Deterministic for a given seed on CPU.

Same interface as :mod:`ecom_pipeline.ml.recsys.models`: ``fit(data, **side_inputs)``, ``score(user_idx)``,
``explain(data, u, i)``; ``make_model("two_tower", **params)`` builds it.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ecom_pipeline.ml.recsys.data import InteractionData


def _matrix(frame: pd.DataFrame | None, key: str, ids, key_fn=str) -> tuple[np.ndarray | None, np.ndarray]:
    """Rows of ``frame.embedding`` aligned to ``ids`` (zeros + mask False where missing); None if no frame."""
    if frame is None or len(frame) == 0 or "embedding" not in frame:
        return None, np.zeros(len(ids), dtype=bool)
    f = frame.dropna(subset=["embedding"])
    if f.empty:
        return None, np.zeros(len(ids), dtype=bool)
    lookup = {str(k): np.asarray(v, dtype=np.float32) for k, v in zip(f[key], f["embedding"])}
    dim = len(next(iter(lookup.values())))
    out = np.zeros((len(ids), dim), dtype=np.float32)
    mask = np.zeros(len(ids), dtype=bool)
    for j, x in enumerate(ids):
        v = lookup.get(key_fn(x))
        if v is not None and len(v) == dim:
            out[j], mask[j] = v, True
    if not mask.any():
        return None, mask
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
    return out, mask


def _codes(values, min_count: int = 1) -> tuple[np.ndarray, list]:
    """Integer codes with 0 = unknown."""
    s = pd.Series(list(values), dtype="object")
    known = s.dropna().astype(str)
    vocab = sorted(v for v, c in known.value_counts().items() if c >= min_count and v != "")
    pos = {v: j + 1 for j, v in enumerate(vocab)}
    return np.array([pos.get(str(v), 0) if v is not None and v == v else 0 for v in s], dtype=np.int64), vocab


class TwoTowerRecommender:
    name = "two_tower"
    description = (
        "hybrid two-tower (torch): user = history mean + region + segment, item = id + category + "
        "price + product embedding + sentiment; sampled softmax"
    )

    def __init__(
        self,
        dim: int = 32,
        epochs: int = 8,
        batch_size: int = 256,
        lr: float = 0.01,
        temperature: float = 0.1,
        uniform_negatives: int = 512,
        history_len: int = 30,
        price_buckets: int = 5,
        weight_decay: float = 1e-5,
        seed: int = 0,
        max_seconds: float = 600.0,
    ):
        self.params = dict(
            dim=dim,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            temperature=temperature,
            uniform_negatives=uniform_negatives,
            history_len=history_len,
            price_buckets=price_buckets,
            weight_decay=weight_decay,
            seed=seed,
            max_seconds=max_seconds,
        )
        self.inputs_used: dict[str, str] = {}
        self.loss_history: list[float] = []
        self.stopped_early = ""
        self.device = "cpu"

    # ---------------------------------------------------------------- features
    def _item_features(self, data: InteractionData, products, product_embeddings, sentiment):
        items = [str(i) for i in data.items]
        p = (
            products.assign(product_id=products["product_id"].astype(str))
            .drop_duplicates("product_id")
            .set_index("product_id")
            if products is not None and len(products)
            else None
        )
        cat = (
            p["category"].reindex(items)
            if p is not None and "category" in p
            else pd.Series([None] * len(items))
        )
        self.cat_codes, cats = _codes(cat.to_numpy())
        price = (
            pd.to_numeric(p["price"].reindex(items), errors="coerce")
            if p is not None and "price" in p
            else pd.Series(np.nan, index=items)
        )
        nb = self.params["price_buckets"]
        if price.notna().sum() >= nb:
            edges = np.unique(np.nanquantile(price.to_numpy(dtype=float), np.linspace(0, 1, nb + 1)[1:-1]))
            b = np.searchsorted(edges, price.to_numpy(dtype=float), side="right") + 1
            self.price_codes = np.where(price.notna().to_numpy(), b, 0).astype(np.int64)
            self.inputs_used["price"] = f"{len(edges) + 1} buckets"
        else:
            self.price_codes = np.zeros(len(items), dtype=np.int64)
            self.inputs_used["price"] = "absent"
        self.inputs_used["category"] = f"{len(cats)} categories" if len(cats) else "absent"
        self.n_categories = len(cats) + 1
        self.item_emb, mask = _matrix(product_embeddings, "product_id", items)
        self.inputs_used["product_embeddings"] = (
            f"{int(mask.sum())}/{len(items)} items" if self.item_emb is not None else "absent"
        )
        sent = np.zeros((len(items), 2), dtype=np.float32)  # (P(positive) - 0.5, has reviews)
        if sentiment is not None and len(sentiment) and "mean_p_positive" in sentiment:
            s = sentiment.dropna(subset=["product_id"]).assign(
                product_id=lambda d: d["product_id"].astype(str)
            )
            s = s.drop_duplicates("product_id").set_index("product_id")["mean_p_positive"].reindex(items)
            has = s.notna().to_numpy()
            sent[has, 0] = s.to_numpy(dtype=float)[has] - 0.5
            sent[has, 1] = 1.0
            self.inputs_used["sentiment"] = f"{int(has.sum())}/{len(items)} items" if has.any() else "absent"
        else:
            self.inputs_used["sentiment"] = "absent"
        self.sentiment = sent

    def _user_features(self, data: InteractionData, region_embeddings, user_segments):
        regions = [r if r is not None else None for r in data.user_region]
        self.region_codes, states = _codes(regions)
        self.region_emb, mask = _matrix(
            region_embeddings, "region_id", regions, key_fn=lambda r: f"state:{str(r).upper().strip()}"
        )
        self.inputs_used["region"] = (
            f"GCN region embeddings ({int(mask.sum())}/{len(regions)} users)"
            if self.region_emb is not None
            else f"learned state embedding ({len(states)} states)"
            if states
            else "absent"
        )
        if user_segments is not None and len(user_segments):
            seg = pd.Series(user_segments)
            seg.index = seg.index.astype(str)
            self.segment_codes, segs = _codes(seg.reindex(data.users).to_numpy())
            self.inputs_used["segment"] = f"{len(segs)} segments" if segs else "absent"
        else:
            self.segment_codes, segs = np.zeros(data.n_users, dtype=np.int64), []
            self.inputs_used["segment"] = "absent"
        self.n_regions, self.n_segments = len(states) + 1, len(segs) + 1

    def _histories(self, data: InteractionData):
        L = self.params["history_len"]
        m = data.matrix.tocsr()
        idx = np.zeros((data.n_users, L), dtype=np.int64)
        w = np.zeros((data.n_users, L), dtype=np.float32)
        for u in range(data.n_users):
            s, e = m.indptr[u], m.indptr[u + 1]
            cols, vals = m.indices[s:e], np.log1p(m.data[s:e])
            if len(cols) > L:
                keep = np.argsort(-vals, kind="stable")[:L]
                cols, vals = cols[keep], vals[keep]
            idx[u, : len(cols)], w[u, : len(cols)] = cols, vals
        return idx, w

    # ---------------------------------------------------------------- model
    def _build(self, torch):
        nn = torch.nn
        d = self.params["dim"]
        me = self

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.item_id = nn.Embedding(me.data.n_items, d)
                self.cat = nn.Embedding(me.n_categories, d)
                self.price = nn.Embedding(me.params["price_buckets"] + 2, d)
                self.sent = nn.Linear(2, d)
                self.item_proj = nn.Linear(me.item_emb.shape[1], d) if me.item_emb is not None else None
                self.item_mlp = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))
                self.region = (
                    nn.Linear(me.region_emb.shape[1], d)
                    if me.region_emb is not None
                    else nn.Embedding(me.n_regions, d)
                )
                self.region_id = nn.Embedding(me.n_regions, d)  # used with GCN vectors for unknown states
                self.segment = nn.Embedding(me.n_segments, d)
                self.user_mlp = nn.Sequential(nn.Linear(3 * d, d), nn.ReLU(), nn.Linear(d, d))
                for emb in (self.item_id, self.cat, self.price, self.region_id, self.segment):
                    nn.init.normal_(emb.weight, std=0.1)
                if isinstance(self.region, nn.Embedding):
                    nn.init.normal_(self.region.weight, std=0.1)

            def items(self, t):
                x = self.item_id.weight + self.cat(t["cat"]) + self.price(t["price"]) + self.sent(t["sent"])
                if self.item_proj is not None:
                    x = x + self.item_proj(t["item_emb"])
                return torch.nn.functional.normalize(x + self.item_mlp(x), dim=-1)

            def users(self, t, u, item_vecs, exclude=None):
                idx, w = t["hist_idx"][u], t["hist_w"][u].clone()
                if exclude is not None:  # leave the training target out of its own history
                    w = w * (idx != exclude[:, None]).float()
                h = (item_vecs[idx] * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp_min(1e-6)
                if isinstance(self.region, nn.Embedding):
                    r = self.region(t["region"][u])
                else:
                    r = self.region(t["region_emb"][u]) * t["region_mask"][u, None] + self.region_id(
                        t["region"][u]
                    )
                x = torch.cat([h, r, self.segment(t["segment"][u])], dim=-1)
                return torch.nn.functional.normalize(h + self.user_mlp(x), dim=-1)

        return Net()

    def fit(
        self,
        data: InteractionData,
        *,
        products: pd.DataFrame | None = None,
        product_embeddings: pd.DataFrame | None = None,
        region_embeddings: pd.DataFrame | None = None,
        sentiment: pd.DataFrame | None = None,
        user_segments: pd.Series | None = None,
        device: str = "cpu",
        cpu_threads: int | None = 1,
        log=None,
    ):
        """``cpu_threads``: torch intra-op threads while training on CPU (1 by default: these tensors are
        tiny, and several threads on a busy machine make each step 10-20× slower); None keeps torch's
        setting."""
        import torch

        from ecom_pipeline.ml.threads import cpu_threads as threads

        with threads(cpu_threads, device):
            return self._fit(
                torch,
                data,
                products,
                product_embeddings,
                region_embeddings,
                sentiment,
                user_segments,
                device,
                log,
            )

    def _fit(
        self,
        torch,
        data,
        products,
        product_embeddings,
        region_embeddings,
        sentiment,
        user_segments,
        device,
        log,
    ):

        p = self.params
        self.data, self.device = data, device
        torch.manual_seed(p["seed"])
        rng = np.random.default_rng(p["seed"])
        self._item_features(data, products, product_embeddings, sentiment)
        self._user_features(data, region_embeddings, user_segments)
        hist_idx, hist_w = self._histories(data)
        dev = torch.device(device)
        t = {
            "cat": torch.as_tensor(self.cat_codes),
            "price": torch.as_tensor(self.price_codes),
            "sent": torch.as_tensor(self.sentiment),
            "hist_idx": torch.as_tensor(hist_idx),
            "hist_w": torch.as_tensor(hist_w),
            "region": torch.as_tensor(self.region_codes),
            "segment": torch.as_tensor(self.segment_codes),
        }
        if self.item_emb is not None:
            t["item_emb"] = torch.as_tensor(self.item_emb)
        if self.region_emb is not None:
            t["region_emb"] = torch.as_tensor(self.region_emb)
            t["region_mask"] = torch.as_tensor((np.abs(self.region_emb).sum(1) > 0).astype(np.float32))
        self.tensors = {k: v.to(dev) for k, v in t.items()}
        net = self._build(torch).to(dev)
        opt = torch.optim.Adam(net.parameters(), lr=p["lr"], weight_decay=p["weight_decay"])
        coo = data.matrix.tocoo()
        pu, pi = coo.row.astype(np.int64), coo.col.astype(np.int64)
        pw = np.log1p(coo.data).astype(np.float32)
        t0 = time.perf_counter()
        self.loss_history, self.stopped_early = [], ""
        if len(pu) and data.n_items > 1:
            out_of_time = False
            for epoch in range(p["epochs"]):
                order = rng.permutation(len(pu))
                total, n = 0.0, 0
                net.train()
                for s in range(0, len(order), p["batch_size"]):
                    # the cap is checked per batch: at 1M orders one CPU epoch alone is far longer than it
                    if time.perf_counter() - t0 > p["max_seconds"]:
                        out_of_time = True
                        break
                    b = order[s : s + p["batch_size"]]
                    u = torch.as_tensor(pu[b], device=dev)
                    i = torch.as_tensor(pi[b], device=dev)
                    w = torch.as_tensor(pw[b], device=dev)
                    iv = net.items(self.tensors)
                    uv = net.users(self.tensors, u, iv, exclude=i)
                    neg = torch.as_tensor(rng.integers(0, data.n_items, p["uniform_negatives"]), device=dev)
                    cand = torch.cat([i, neg])
                    logits = uv @ iv[cand].T / p["temperature"]
                    # a candidate equal to the row's own positive elsewhere in the batch is not a negative
                    same = cand[None, :] == i[:, None]
                    same[torch.arange(len(b), device=dev), torch.arange(len(b), device=dev)] = False
                    logits = logits.masked_fill(same, -1e9)
                    target = torch.arange(len(b), device=dev)
                    loss = (
                        torch.nn.functional.cross_entropy(logits, target, reduction="none") * w
                    ).sum() / w.sum()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total, n = total + float(loss.detach()) * len(b), n + len(b)
                if n:
                    self.loss_history.append(total / n)
                if log:
                    done = f"{n:,}/{len(order):,} interactions" if out_of_time else "complete"
                    log(f"two_tower epoch {epoch + 1}/{p['epochs']} ({done}): loss {total / max(n, 1):.4f}")
                if out_of_time or (epoch + 1 < p["epochs"] and time.perf_counter() - t0 > p["max_seconds"]):
                    self.stopped_early = (
                        f"stopped in epoch {epoch + 1} of {p['epochs']} (max_seconds={p['max_seconds']})"
                    )
                    if log:
                        log(f"two_tower: {self.stopped_early}")
                    break
        self.fit_seconds = time.perf_counter() - t0
        net.eval()
        with torch.no_grad():
            iv = net.items(self.tensors)
            uv = (
                torch.cat(
                    [
                        net.users(self.tensors, torch.arange(s, min(s + 4096, data.n_users), device=dev), iv)
                        for s in range(0, data.n_users, 4096)
                    ]
                )
                if data.n_users
                else iv[:0]
            )
        self.net = net
        self.item_vectors = iv.cpu().numpy().astype(np.float32)
        self.user_vectors = uv.cpu().numpy().astype(np.float32)
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        return self.user_vectors[np.asarray(user_idx)] @ self.item_vectors.T / self.params["temperature"]

    def explain(self, data: InteractionData, u: int, i: int) -> str:
        row = data.matrix[u]
        if row.nnz:
            hist = row.indices
            j = hist[int(np.argmax(self.item_vectors[hist] @ self.item_vectors[i]))]
            return (
                f"similar to {data.name(j)} you bought"
                if data.purchased[u, j]
                else f"similar to {data.name(j)} you viewed"
            )
        r = data.user_region[u]
        return f"popular in your region ({r})" if r is not None else "popular with all customers"


__all__ = ["TwoTowerRecommender"]
