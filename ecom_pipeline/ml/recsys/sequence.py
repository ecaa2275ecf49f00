"""Sequence recommender (SASRec-style self-attention over each customer's ordered interactions) and the
"repeat" baseline, framework-free (no Dagster here).

Model: item-id embedding (+ a linear projection of the fused product embedding when given) + learned position
embedding → causal Transformer encoder → the state at a position scored against every item vector (tied
weights), plus a repeat term: two gates computed from the same state times log(1 + how often the customer
already bought the item) and 1 / (1 + baskets since they last bought it), so the model can learn when a
customer re-buys (a copy mechanism, as in RepeatNet) instead of having to memorise it in the item vectors.
Trained on next-item prediction with a full softmax over the catalogue at the last ``train_positions``
positions of a random window of each customer's time-ordered history; early stopping on a validation window
carved from the END of the training time (the project's one temporal split applied again inside training),
then refit on all training interactions for the chosen number of epochs.  Every phase stops at ``max_seconds``
(the same time cap as the two-tower).  Deterministic for a seed on CPU.

``RepeatPurchases`` ranks each customer's own purchases by how often (then how recently) they bought them:
on a shop with repeat buying it is the personalised bar to beat when the evaluation keeps repeat purchases.

:func:`evaluate_sequence_models` is what the asset and ``benchmarks/sequence_recommender.py`` both call:
every model on the same split, per-user NDCG@k for the paired bootstrap, per customer segment.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ecom_pipeline.ml.recsys.data import InteractionData, as_interaction_data, interaction_count
from ecom_pipeline.ml.recsys.evaluation import MAX_EVAL_USERS
from ecom_pipeline.ml.recsys.models import ANYONE, GlobalPopularity

PAD = 0  # sequence index 0 is padding: item j is stored as j + 1


# --------------------------------------------------------------------------------------------- baseline


class RepeatPurchases(GlobalPopularity):
    """Each customer's own purchases, most-bought first (latest as tie-breaker), then popular items."""

    name = "repeat"
    description = "the customer's own most-bought items (count, then recency), popularity after them"

    def fit(self, data: InteractionData):
        super().fit(data)
        f = data.frame[data.frame["event_type"] == "purchase"]
        counts = f.groupby(["u", "i"]).size()
        last = f.groupby(["u", "i"])["ts"].max()
        age_days = (data.end - last).dt.total_seconds().to_numpy() / 86400.0
        u = counts.index.get_level_values(0).to_numpy()
        i = counts.index.get_level_values(1).to_numpy()
        # count dominates; recency only breaks ties (< 1 count); popularity (< 1e-3) ranks the rest
        value = counts.to_numpy(dtype=np.float64) + 0.5 / (1.0 + age_days)
        import scipy.sparse as sp

        self.own = sp.csr_matrix((value, (u, i)), shape=(data.n_users, data.n_items))
        self.scores = 1e-3 * self.scores
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        return self.own[np.asarray(user_idx)].toarray() + self.scores

    def score_groups(self) -> None:
        """None: each customer's own purchases make the scores personal (no rows shared by groups)."""
        return None

    def explain(self, data: InteractionData, u: int, i: int) -> str:
        return f"you bought {data.name(i)} before" if self.own[u, i] > 0 else ANYONE

    def explain_many(self, data: InteractionData, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.array([self.explain(data, int(u), int(i)) for u, i in zip(users, items)], dtype=object)


# ------------------------------------------------------------------------------------------- sequences


def user_sequences(data: InteractionData) -> list[np.ndarray]:
    """Per user index: item indices in time order (ties keep the frame's order); an item repeated back to
    back (view → cart → purchase of one product) counts once."""
    return user_baskets(data)[0]


def user_baskets(data: InteractionData) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """:func:`user_sequences` and, per user, the position of the last item of every basket (items sharing one
    timestamp: the lines of one order).  The order of items inside a basket means nothing (the warehouse
    sorts them by product id), so training predicts the NEXT basket from the end of each basket."""
    f = data.frame[["u", "i", "ts"]]
    f = f.iloc[np.lexsort((f["ts"].to_numpy(), f["u"].to_numpy()))]
    u, i = f["u"].to_numpy(), f["i"].to_numpy()
    keep = np.ones(len(u), dtype=bool)
    keep[1:] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    u, i, ts = u[keep], i[keep], f["ts"].to_numpy()[keep]
    bounds = np.searchsorted(u, np.arange(data.n_users + 1))
    last = np.ones(len(u), dtype=bool)  # last item of its basket
    last[:-1] = (u[1:] != u[:-1]) | (ts[1:] != ts[:-1])
    seqs = [i[bounds[x] : bounds[x + 1]].astype(np.int64) for x in range(data.n_users)]
    ends = [np.flatnonzero(last[bounds[x] : bounds[x + 1]]) for x in range(data.n_users)]
    return seqs, ends


def history_features(items: np.ndarray, basket_of: np.ndarray, n_items: int) -> np.ndarray:
    """(n_items, 2) float32 for one customer's purchases so far (``items`` in time order, ``basket_of`` their
    basket numbers): how often each item was bought, and 1 / (1 + baskets since it was last bought)."""
    out = np.zeros((n_items, 2), dtype=np.float32)
    if len(items):
        out[:, 0] = np.bincount(items, minlength=n_items)
        last = np.full(n_items, -1, dtype=np.int64)
        np.maximum.at(last, items, basket_of)
        seen = last >= 0
        out[seen, 1] = 1.0 / (1.0 + (basket_of[-1] - last[seen]))
    return out


def _left_pad(seqs: list[np.ndarray], length: int) -> np.ndarray:
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for r, s in enumerate(seqs):
        s = s[-length:]
        if len(s):
            out[r, length - len(s) :] = s + 1
    return out


# ---------------------------------------------------------------------------------------------- network


def _module_base():
    import torch.nn

    return torch.nn.Module


class SASRecNet(_module_base()):
    """The network; ``safe_config()`` + its state dict rebuild it (``ml/safe_artifacts.py``).  Carries the
    item ids so a registered model recommends from a list of product ids without the training code."""

    def __init__(
        self,
        n_items: int,
        dim: int = 64,
        max_len: int = 50,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.2,
        feature_dim: int = 0,
        item_ids: list | None = None,
    ):
        import torch
        from torch import nn

        super().__init__()
        self.config = {
            "n_items": int(n_items),
            "dim": int(dim),
            "max_len": int(max_len),
            "layers": int(layers),
            "heads": int(heads),
            "dropout": float(dropout),
            "feature_dim": int(feature_dim),
        }
        self.item_ids = [str(x) for x in (item_ids if item_ids is not None else range(n_items))]
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=PAD)
        self.position = nn.Embedding(max_len, dim)
        self.feature_proj = nn.Linear(feature_dim, dim, bias=False) if feature_dim else None
        # the fused product embeddings (row 0 = padding): a buffer, saved with the weights
        self.register_buffer("features", torch.zeros(n_items + 1, max(feature_dim, 1)))
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.repeat_gate = nn.Linear(dim, 2)  # how much this customer, now, re-buys what they bought before
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.item.weight, std=0.05)
        nn.init.normal_(self.position.weight, std=0.05)
        with torch.no_grad():
            self.item.weight[PAD].zero_()

    def safe_config(self) -> dict:
        return {**self.config, "item_ids": self.item_ids}

    @classmethod
    def from_config(cls, cfg: dict) -> SASRecNet:
        return cls(
            **{k: cfg[k] for k in ("n_items", "dim", "max_len", "layers", "heads", "dropout", "feature_dim")},
            item_ids=list(cfg["item_ids"]),
        )

    def item_vectors(self):
        v = self.item.weight
        if self.feature_proj is not None:
            v = v + self.feature_proj(self.features)
        return v

    def forward(self, seq):
        """(batch, max_len) left-padded item indices + 1 → (batch, max_len, dim) states."""
        import torch

        iv = self.item_vectors()
        length = seq.shape[1]
        x = iv[seq] * math.sqrt(self.config["dim"]) + self.position.weight[-length:]
        x = self.dropout(x * (seq != PAD).unsqueeze(-1))
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=seq.device), diagonal=1)
        return self.norm(self.encoder(x, mask=causal))

    def scores(self, states, history):
        """Item scores from states (..., dim) and the customer's history features so far (..., n_items, 2):
        purchase count and 1 / (1 + baskets since the last purchase), 0 for items never bought."""
        import torch

        gate = torch.nn.functional.softplus(self.repeat_gate(states))
        repeat = gate[..., None, 0] * torch.log1p(history[..., 0]) + gate[..., None, 1] * history[..., 1]
        return states @ self.item_vectors()[1:].T + repeat

    def next_item_scores(self, seq, history=None):
        """(batch, max_len) → (batch, n_items): scores of every item as the next one; ``history`` (batch,
        n_items, 2) from :func:`history_features` over the whole history (default: ``seq`` alone, each item
        its own basket)."""
        import torch

        if history is None:
            rows = [r[r > PAD] - 1 for r in seq.cpu().numpy()]
            history = torch.as_tensor(
                np.stack([history_features(r, np.arange(len(r)), self.config["n_items"]) for r in rows]),
                device=seq.device,
            )
        return self.scores(self.forward(seq)[:, -1], history)

    def recommend(self, history: list, k: int = 10, exclude: set | None = None) -> list[str]:
        """Top-k product ids after ``history`` (product ids, oldest first; unknown ids are skipped)."""
        import torch

        pos = {p: j for j, p in enumerate(self.item_ids)}
        idx = np.array([pos[str(p)] for p in history if str(p) in pos], dtype=np.int64)
        if not len(idx):
            return []
        with torch.no_grad():
            s = self.next_item_scores(torch.as_tensor(_left_pad([idx], self.config["max_len"])))[0]
        for p in exclude or ():
            if str(p) in pos:
                s[pos[str(p)]] = -float("inf")
        return [self.item_ids[j] for j in torch.topk(s, min(k, len(s))).indices.tolist()]


# -------------------------------------------------------------------------------------------- recommender


class SequenceRecommender:
    """SASRec-style recommender with the interface of :mod:`ecom_pipeline.ml.recsys.models`
    (``fit(data)``, ``score(user_idx)``, ``explain``)."""

    name = "sasrec"
    description = (
        "self-attention over the customer's time-ordered interactions (SASRec-style), item = id + "
        "product embedding; next-item softmax, early stopping on a validation window"
    )

    def __init__(
        self,
        dim: int = 64,
        max_len: int = 50,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.2,
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        batch_size: int = 128,
        max_epochs: int = 40,
        train_positions: int = 8,
        patience: int = 3,
        validation_fraction: float = 0.1,
        k: int = 10,
        seed: int = 0,
        max_seconds: float = 300.0,
        refit_when_capped: bool = True,
    ):
        self.params = {
            "dim": dim,
            "max_len": max_len,
            "layers": layers,
            "heads": heads,
            "dropout": dropout,
            "lr": lr,
            "weight_decay": weight_decay,
            "batch_size": batch_size,
            "max_epochs": max_epochs,
            "train_positions": train_positions,
            "patience": patience,
            "validation_fraction": validation_fraction,
            "k": k,
            "seed": seed,
            "max_seconds": max_seconds,
            "refit_when_capped": refit_when_capped,
        }
        self.inputs_used: dict[str, str] = {}
        self.validation_curve: list[float] = []
        self.loss_history: list[float] = []
        self.chosen_epochs = 0
        self.stopped_early = ""
        self.device = "cpu"
        self.exclude_seen = True
        self.validation: dict | None = None
        self.refit = ""

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        data: InteractionData,
        *,
        product_embeddings: pd.DataFrame | None = None,
        exclude_seen: bool = True,
        epochs: int | None = None,
        device: str = "cpu",
        cpu_threads: int | None = 1,
        log=None,
    ):
        """Choose the number of epochs on a validation window carved from the end of ``data``'s time
        (unless ``epochs`` is given), then train on all of ``data``.  ``exclude_seen``: the protocol the
        validation scores with (as the test will).  ``cpu_threads`` as in the two-tower.

        ``refit_when_capped=False``: when the time cap ended the validation run at its best epoch, keep
        that network (scoring with every customer's full history) instead of a refit that would stop at the
        same cap: half the fit time, but it never trains on the newest tenth of the data; measured on the
        UK shop at 0.48x the fit time and NDCG@10 -0.0066 [-0.0105, -0.0024], so the refit stays the default
        (benchmarks/results/sequence_refit.md)."""
        from ecom_pipeline.ml.threads import cpu_threads as threads

        with threads(cpu_threads, device):
            self.device, self.exclude_seen, self.validation = device, exclude_seen, None
            if epochs is None:
                epochs = self._choose_epochs(data, product_embeddings, exclude_seen, device, log)
            self.chosen_epochs = epochs
            if self._cap_stopped_validation_at_its_best():
                self.refit = (
                    f"skipped: the time cap ended the validation run at its best epoch ({epochs}); "
                    "its network scores with the full histories"
                )
                self._use_histories_of(data)
            else:
                self.refit = f"on all data, {epochs} epoch(s)"
                self._train(data, product_embeddings, epochs, device, log, validation=None)
            if log:
                log(f"sasrec: refit {self.refit}")
            return self

    def _cap_stopped_validation_at_its_best(self) -> bool:
        curve = self.validation["curve"] if self.validation else []
        return (
            not self.params["refit_when_capped"]
            and bool(curve)
            and self.stopped_early.startswith("time cap")
            and int(np.argmax(curve)) == len(curve) - 1
        )

    def _use_histories_of(self, data: InteractionData) -> list[np.ndarray]:
        """Train on / score ``data``'s customers (a skipped refit: the validation run trained on the same
        catalogue, fewer events); returns each customer's basket ends."""
        self.data = data
        self.sequences, basket_ends = user_baskets(data)
        self.basket_numbers = [
            np.searchsorted(e, np.arange(len(q))) for q, e in zip(self.sequences, basket_ends)
        ]
        return basket_ends

    def _choose_epochs(self, data, product_embeddings, exclude_seen, device, log) -> int:
        from ecom_pipeline.ml.recsys.evaluation import split_data

        p = self.params
        try:
            # the inner split on data's arrays: training data indexed over the whole catalogue
            inner = split_data(
                data,
                test_fraction=p["validation_fraction"],
                exclude_seen=exclude_seen,
                catalog=list(data.items),
            )
        except ValueError as exc:
            if log:
                log(f"sasrec: no validation window ({exc}): {p['max_epochs']} epochs within the time cap")
            return p["max_epochs"]
        if len(inner.truth) < 20:
            if log:
                log(
                    f"sasrec: only {len(inner.truth)} validation users: "
                    f"{p['max_epochs']} epochs within the cap"
                )
            return p["max_epochs"]
        inner_data = inner.train
        self._train(
            inner_data, product_embeddings, p["max_epochs"], device, log, validation=(inner, exclude_seen)
        )
        curve = self.validation_curve
        best = int(np.argmax(curve)) + 1 if curve else p["max_epochs"]
        if log:
            log(
                f"sasrec: validation ndcg@{p['k']} by epoch {[round(v, 4) for v in curve]} → {best} epochs "
                f"({len(inner.truth)} validation users, cutoff {inner.cutoff:%Y-%m-%d})"
            )
        self.validation = {
            "cutoff": str(inner.cutoff),
            "users": len(inner.truth),
            "curve": list(curve),
            "best_epochs": best,
        }
        return best

    def _item_features(self, data: InteractionData, product_embeddings):
        from ecom_pipeline.ml.recsys.two_tower import _matrix

        emb, mask = _matrix(product_embeddings, "product_id", [str(i) for i in data.items])
        self.inputs_used["product_embeddings"] = (
            f"{int(mask.sum())}/{data.n_items} items" if emb is not None else "absent"
        )
        return emb

    def _train(self, data: InteractionData, product_embeddings, epochs: int, device: str, log, validation):
        import torch

        p = self.params
        torch.manual_seed(p["seed"])
        rng = np.random.default_rng(p["seed"])
        dev = torch.device(device)
        feats = self._item_features(data, product_embeddings)
        net = SASRecNet(
            data.n_items,
            p["dim"],
            p["max_len"],
            p["layers"],
            p["heads"],
            p["dropout"],
            feats.shape[1] if feats is not None else 0,
            list(data.items),
        )
        if feats is not None:
            net.features[1:] = torch.as_tensor(feats)
        self.net = net.to(dev)
        basket_ends = self._use_histories_of(data)
        basket_numbers = self.basket_numbers
        opt = torch.optim.Adam(net.parameters(), lr=p["lr"], weight_decay=p["weight_decay"])
        # an epoch: one window per customer with two baskets or more, ending at the end of a random basket
        # (long histories are seen piece by piece over the epochs); targets: an item of the basket after each
        # of the window's last ``train_positions`` basket ends
        pieces = np.flatnonzero(np.array([len(e) >= 2 for e in basket_ends], dtype=bool))
        self.loss_history, self.stopped_early = [], ""
        if validation is not None:  # the refit keeps the validation run's curve (it chose the epochs)
            self.validation_curve = []
        best_state, best, since_best = None, -1.0, 0
        t0 = time.perf_counter()
        L, T = p["max_len"], min(p["train_positions"], p["max_len"])
        for epoch in range(epochs if len(pieces) else 0):
            net.train()
            order = rng.permutation(pieces)
            total, n, out_of_time = 0.0, 0, False
            for s in range(0, len(order), p["batch_size"]):
                if time.perf_counter() - t0 > p["max_seconds"]:
                    out_of_time = True
                    break
                users = order[s : s + p["batch_size"]]
                inp = np.zeros((len(users), L), dtype=np.int64)
                tgt = np.full((len(users), T), -100, dtype=np.int64)  # -100: ignored by cross_entropy
                at = np.full((len(users), T), L - 1, dtype=np.int64)  # window position of each target's state
                hist = np.zeros((len(users), T, data.n_items, 2), dtype=np.float32)  # purchases so far
                for r, u in enumerate(users):
                    seq, ends, basket_of = self.sequences[u], basket_ends[u], basket_numbers[u]
                    k = int(
                        rng.integers(0, len(ends) - 1)
                    )  # the window ends with basket k (not the last one)
                    e = int(ends[k])
                    start = max(0, e + 1 - L)
                    inp[r, L - (e + 1 - start) :] = seq[start : e + 1] + 1
                    first = max(k - T + 1, int(np.searchsorted(ends, start)))
                    for slot, j in enumerate(range(first, k + 1), start=T - (k + 1 - first)):
                        hist[r, slot] = history_features(
                            seq[: ends[j] + 1], basket_of[: ends[j] + 1], data.n_items
                        )
                        nxt = seq[ends[j] + 1 : ends[j + 1] + 1]
                        if self.exclude_seen:  # the discovery protocol: learn to predict what is new to them
                            nxt = nxt[hist[r, slot, nxt, 0] == 0]
                        if len(nxt):
                            tgt[r, slot] = nxt[int(rng.integers(len(nxt)))]
                        at[r, slot] = L - 1 - (e - ends[j])
                x, y = torch.as_tensor(inp, device=dev), torch.as_tensor(tgt, device=dev)
                states = net(x)[
                    torch.arange(len(users), device=dev)[:, None], torch.as_tensor(at, device=dev)
                ]
                logits = net.scores(states, torch.as_tensor(hist, device=dev))
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, data.n_items), y.reshape(-1))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, n = total + float(loss.detach()), n + 1
            if n:
                self.loss_history.append(total / n)
            if validation is not None and n:
                value = self._validate(*validation)
                self.validation_curve.append(value)
                if value > best:
                    best, since_best = value, 0
                    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                else:
                    since_best += 1
            if log:
                v = (
                    f", validation ndcg {self.validation_curve[-1]:.4f}"
                    if validation is not None and n
                    else ""
                )
                log(f"sasrec epoch {epoch + 1}/{epochs}: loss {total / max(n, 1):.4f}{v}")
            if out_of_time:
                self.stopped_early = (
                    f"time cap: stopped in epoch {epoch + 1} of {epochs} (max_seconds={p['max_seconds']})"
                )
                break
            if validation is not None and since_best >= p["patience"]:
                self.stopped_early = (
                    f"early stop: no validation gain for {p['patience']} epochs after {epoch + 1}"
                )
                break
        if best_state is not None:
            net.load_state_dict(best_state)
        self.fit_seconds = time.perf_counter() - t0
        net.eval()
        if log and self.stopped_early:
            log(f"sasrec: {self.stopped_early}")

    def _validate(self, inner, exclude_seen: bool) -> float:
        from ecom_pipeline.ml.recsys.evaluation import evaluate_model

        self.net.eval()
        return float(
            evaluate_model(self, self.data, inner, self.params["k"], exclude_seen=exclude_seen).get(
                f"ndcg@{self.params['k']}", 0.0
            )
        )

    # ------------------------------------------------------------------ score
    def score(self, user_idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(user_idx)
        return self.score_sequences([self.sequences[u] for u in idx], [self.basket_numbers[u] for u in idx])

    def score_sequences(
        self, sequences: list[np.ndarray], baskets: list[np.ndarray] | None = None, batch: int = 512
    ) -> np.ndarray:
        """Next-item scores (n, n_items) for item-index sequences (oldest first) and their basket numbers
        (default: every item its own basket)."""
        import torch

        out = np.zeros((len(sequences), self.data.n_items), dtype=np.float64)
        dev = next(self.net.parameters()).device
        with torch.no_grad():
            for s in range(0, len(sequences), batch):
                chunk = sequences[s : s + batch]
                x = torch.as_tensor(_left_pad(chunk, self.params["max_len"]), device=dev)
                bs = baskets[s : s + batch] if baskets is not None else [np.arange(len(q)) for q in chunk]
                hist = np.stack([history_features(q, b, self.data.n_items) for q, b in zip(chunk, bs)])
                out[s : s + len(chunk)] = (
                    self.net.next_item_scores(x, torch.as_tensor(hist, device=dev)).cpu().numpy()
                )
        return out

    def explain(self, data: InteractionData, u: int, i: int) -> str:
        seq = self.sequences[u] if u < len(self.sequences) else []
        return f"often bought after {data.name(int(seq[-1]))}" if len(seq) else ANYONE


# -------------------------------------------------------------------------------------------- evaluation

NON_PERSONALISED = ("popularity", "recent_popularity", "regional_popularity")
SEQUENCE_BASELINES = (*NON_PERSONALISED, "item_knn", "repeat")  # what a learned model must beat to serve
LEARNED = ("als", "two_tower", "sasrec")
SEGMENTS = ("returning", "new")  # history before the cutoff or not


def make_sequence_model(name: str, **params):
    if name == "sasrec":
        return SequenceRecommender(**params)
    if name == "repeat":
        return RepeatPurchases()
    from ecom_pipeline.ml.recsys.models import make_model

    return make_model(name, **params)


@dataclass
class SequenceEvaluation:
    cutoff: pd.Timestamp | None
    k: int
    exclude_seen: bool
    n_items: int = 0
    metrics: dict = field(default_factory=dict)  # model -> {metric: value} over returning customers
    per_user: dict = field(default_factory=dict)  # (segment, model) -> per-user NDCG@k Series
    fit_seconds: dict = field(default_factory=dict)
    users: dict = field(default_factory=dict)  # segment -> evaluated customers
    eligible: dict = field(default_factory=dict)  # segment -> evaluable customers before the sample
    message: str = ""
    fitted: dict = field(default_factory=dict)  # model -> fitted model (sasrec, for registration)


def evaluate_sequence_models(
    interactions: pd.DataFrame | InteractionData,
    *,
    k: int = 10,
    models: tuple[str, ...] = (*SEQUENCE_BASELINES, *LEARNED),
    params: dict | None = None,
    fit_args: dict | None = None,
    user_regions: pd.Series | None = None,
    exclude_seen: bool = False,
    test_fraction: float = 0.2,
    min_eval_users: int = 5,
    eval_users: int | None = MAX_EVAL_USERS,
    seed: int = 0,
    log=print,
) -> SequenceEvaluation:
    """Every model on the project's user-level temporal split (item level), per segment.

    ``exclude_seen`` False keeps repeat purchases in the truth and the rankings (the shop's real next
    purchases); True is the discovery protocol of ``recommender_evaluation``.  ``fit_args``: per model,
    keyword arguments for ``fit`` (side inputs, device).  ``eval_users``: evaluate a random sample of that
    many returning customers (the cost of scoring; training always uses everyone; ``res.eligible`` gives the
    counts before sampling).  ``interactions``: a frame, or every interaction already indexed
    (:func:`as_interaction_data`; then ``user_regions`` is unused: the data has its regions)."""
    from ecom_pipeline.ml.recsys.evaluation import per_user_ndcg, sample_users, split_data, top_k
    from ecom_pipeline.ml.recsys.metrics import evaluate_rankings

    params, fit_args = params or {}, fit_args or {}
    if interaction_count(interactions) == 0:
        return SequenceEvaluation(None, k, exclude_seen, message="no interactions: nothing to evaluate")
    try:
        split = split_data(
            as_interaction_data(interactions, user_regions),
            test_fraction=test_fraction,
            exclude_seen=exclude_seen,
            require_history=False,
        )
    except ValueError as exc:
        return SequenceEvaluation(None, k, exclude_seen, message=f"cannot split: {exc}")
    res = SequenceEvaluation(split.cutoff, k, exclude_seen)
    data = split.train
    res.n_items = data.n_items
    known = set(data.users)
    truth = {
        "returning": {u: t for u, t in split.truth.items() if str(u) in known and t},
        "new": {u: t for u, t in split.truth.items() if str(u) not in known and t},
    }
    res.eligible = {s: len(t) for s, t in truth.items()}
    truth["returning"] = sample_users(truth["returning"], eval_users, seed)
    res.users = {s: len(t) for s, t in truth.items()}
    if res.users["returning"] < min_eval_users:
        res.message = (
            f"only {res.users['returning']} customers have history before {split.cutoff:%Y-%m-%d} "
            f"and a purchase after it (< {min_eval_users}): no reliable evaluation"
        )
        return res
    for name in models:
        t0 = time.perf_counter()
        try:
            model = make_sequence_model(name, **params.get(name, {}))
            args = dict(fit_args.get(name, {}))
            if name == "sasrec":
                args.setdefault("exclude_seen", exclude_seen)
                args.setdefault("log", log)
            model.fit(data, **args)
        except Exception as exc:  # noqa: BLE001 - one failing model must not hide the others
            log(f"{name}: training failed: {exc!r}")
            continue
        res.fit_seconds[name] = time.perf_counter() - t0
        recs = top_k(model, data, list(truth["returning"]), k, exclude_seen=exclude_seen)
        res.metrics[name] = evaluate_rankings(
            recs,
            truth["returning"],
            k=k,
            catalog_size=data.n_items,
            item_user_counts=data.item_user_counts(),
            n_train_users=data.n_users,
        )
        res.per_user[("returning", name)] = per_user_ndcg(recs, truth["returning"], k)
        if name in NON_PERSONALISED and name != "regional_popularity" and truth["new"]:
            # a customer without history gets the model's one global list
            ranked = [data.items[j] for j in np.argsort(-model.scores, kind="stable")[:k]]
            res.per_user[("new", name)] = per_user_ndcg({u: ranked for u in truth["new"]}, truth["new"], k)
        if name == "sasrec":
            res.fitted[name] = model
        log(
            f"{name} ({res.fit_seconds[name]:.1f}s): "
            + ", ".join(f"{a}={b:.4f}" for a, b in res.metrics[name].items())
        )
    return res


def gate_segments(res: SequenceEvaluation, task: str = "recommendation_sequence"):
    """Serving decisions per segment and the comparisons behind them (``ml/serving_gate.py``).

    returning: the best learned model (ALS, two-tower, SASRec) against the best of the baselines including
    "repeat"; new: recent popularity against popularity (no personalised model applies without history)."""
    from ecom_pipeline.ml.evaluation import paired_bootstrap
    from ecom_pipeline.ml.serving_gate import decide

    metric = f"ndcg@{res.k}"
    decisions, comparisons = [], []
    plans = {"returning": (LEARNED, SEQUENCE_BASELINES), "new": (("recent_popularity",), ("popularity",))}
    for segment, (cands, bases) in plans.items():
        scored = {m: float(s.mean()) for (seg, m), s in res.per_user.items() if seg == segment and len(s)}
        base_scores = {m: v for m, v in scored.items() if m in bases}
        if not base_scores:
            decisions.append(decide(task, segment, "none", "popularity", None, metric=metric))
            continue
        base = max(base_scores, key=base_scores.get)
        comps = {}
        for m in [m for m in scored if m in cands] + [m for m in scored if m in bases and m != base]:
            a, b = res.per_user[(segment, m)], res.per_user[(segment, base)]
            both = pd.concat([a, b], axis=1, join="inner").dropna()
            comps[m] = paired_bootstrap(
                both.iloc[:, 0].to_numpy(), both.iloc[:, 1].to_numpy(), metric=metric, higher_is_better=True
            )
            comparisons.append((segment, m, base, comps[m]))
        learned = [m for m in comps if m in cands]
        if not learned:
            decisions.append(decide(task, segment, "none", base, None, metric=metric))
            continue
        cand = max(learned, key=lambda m: comps[m].candidate_value)
        decisions.append(decide(task, segment, cand, base, comps[cand]))
    return decisions, comparisons


def versus_non_personalised(res: SequenceEvaluation) -> dict:
    """The issue's target on returning customers: best personalised NDCG@k / best non-personalised, with the
    paired-bootstrap interval of the difference."""
    from ecom_pipeline.ml.evaluation import paired_bootstrap

    metric = f"ndcg@{res.k}"
    scores = {m: v[metric] for m, v in res.metrics.items() if metric in v}
    npers = {m: v for m, v in scores.items() if m in NON_PERSONALISED}
    pers = {m: v for m, v in scores.items() if m not in NON_PERSONALISED}
    if not npers or not pers:
        return {}
    b, c = max(npers, key=npers.get), max(pers, key=pers.get)
    both = pd.concat(
        [res.per_user[("returning", c)], res.per_user[("returning", b)]], axis=1, join="inner"
    ).dropna()
    comp = paired_bootstrap(
        both.iloc[:, 0].to_numpy(), both.iloc[:, 1].to_numpy(), metric=metric, higher_is_better=True
    )
    ratio = comp.candidate_value / comp.baseline_value if comp.baseline_value > 0 else float("inf")
    return {
        "model": c,
        "baseline": b,
        "value": comp.candidate_value,
        "baseline_value": comp.baseline_value,
        "ratio": ratio,
        "ci_low": comp.ci_low,
        "ci_high": comp.ci_high,
        "n_units": comp.n_units,
        "significant": comp.significant,
        "target_met": bool(ratio >= 1.3 and comp.candidate_better and comp.n_units >= 1000),
    }


def recommendation_rows(
    model,
    data: InteractionData,
    users: list,
    k: int,
    *,
    exclude_seen: bool,
    model_name: str,
    model_version: str,
    segment: str = "returning",
) -> pd.DataFrame:
    """Serving rows (customer_id, segment, rank, item_id, model, model_version) from ``top_k``."""
    from ecom_pipeline.ml.recsys.evaluation import top_k

    recs = top_k(model, data, users, k, exclude_seen=exclude_seen)
    # columnar: a tuple per row was the step's peak at 1M orders (6M rows, ~1.4 GB of tuples)
    lengths = np.fromiter((len(items) for items in recs.values()), dtype=np.int64, count=len(recs))
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return pd.DataFrame(
        {
            "customer_id": np.repeat(np.array(list(recs), dtype=object), lengths),
            "segment": segment,
            "rank": np.arange(int(lengths.sum()), dtype=np.int64) - starts + 1,
            "item_id": np.fromiter(
                itertools.chain.from_iterable(recs.values()), dtype=object, count=int(lengths.sum())
            ),
            "model": model_name,
            "model_version": model_version,
        },
        columns=SERVING_COLUMNS,
    )


def global_rows(model, data: InteractionData, k: int, *, model_name: str, model_version: str) -> pd.DataFrame:
    """The one list a customer without history gets (customer_id NULL, segment "new")."""
    top = np.argsort(-np.asarray(model.scores), kind="stable")[:k]
    return pd.DataFrame(
        {
            "customer_id": None,
            "segment": "new",
            "rank": np.arange(1, len(top) + 1),
            "item_id": [data.items[j] for j in top],
            "model": model_name,
            "model_version": model_version,
        }
    )


SERVING_COLUMNS = ["customer_id", "segment", "rank", "item_id", "model", "model_version"]
EVALUATION_COLUMNS = [
    "segment",
    "model",
    "baseline",
    "metric",
    "value",
    "baseline_value",
    "ci_low",
    "ci_high",
    "customers",
    "significant",
    "protocol",
    "cutoff",
]


def evaluation_frame(comparisons: list, protocol: str, cutoff) -> pd.DataFrame:
    """``ml.sequence_evaluation``: one row per segment's gate comparison (value, baseline, interval,
    customers)."""
    return pd.DataFrame(
        [
            {
                "segment": seg,
                "model": m,
                "baseline": b,
                "metric": c.metric,
                "value": c.candidate_value,
                "baseline_value": c.baseline_value,
                "ci_low": c.ci_low,
                "ci_high": c.ci_high,
                "customers": c.n_units,
                "significant": c.significant,
                "protocol": protocol,
                "cutoff": cutoff,
            }
            for seg, m, b, c in comparisons
        ],
        columns=EVALUATION_COLUMNS,
    )


def serving_recommendations(
    interactions: pd.DataFrame | InteractionData,
    served: dict[str, str],
    res: SequenceEvaluation,
    *,
    params: dict,
    fit_args: dict,
    k: int,
    exclude_seen: bool,
    user_regions=None,
    registered: str | None = None,
) -> pd.DataFrame:
    """Each segment's gated model (``served``: segment -> model) refit on every interaction and its rows for
    ``serving.sequence_recommendations``; SASRec is refit for the number of epochs validation chose.
    ``registered`` names the registered SASRec version ("name vN") the refit descends from; ``interactions``
    as in :func:`evaluate_sequence_models`."""
    if not served or interaction_count(interactions) == 0:
        return pd.DataFrame(columns=SERVING_COLUMNS)
    data = as_interaction_data(interactions, user_regions)
    frames = []
    for segment, name in served.items():
        args = dict(fit_args.get(name, {}))
        if name == "sasrec":
            args.update(epochs=max(res.fitted["sasrec"].chosen_epochs, 1), exclude_seen=exclude_seen)
        fitted = make_sequence_model(name, **params.get(name, {})).fit(data, **args)
        version = (
            f"{registered} refit on all data"
            if name == "sasrec" and registered
            else "baseline (no training)"
            if name in (*NON_PERSONALISED, "repeat")
            else "refit on all data (not registered)"
        )
        if segment == "new":
            frames.append(global_rows(fitted, data, k, model_name=name, model_version=version))
        else:
            frames.append(
                recommendation_rows(
                    fitted,
                    data,
                    list(data.users),
                    k,
                    exclude_seen=exclude_seen,
                    model_name=name,
                    model_version=version,
                )
            )
    return pd.concat(frames, ignore_index=True)


__all__ = [
    "RepeatPurchases",
    "SASRecNet",
    "SequenceEvaluation",
    "SequenceRecommender",
    "evaluate_sequence_models",
    "evaluation_frame",
    "gate_segments",
    "make_sequence_model",
    "serving_recommendations",
    "user_baskets",
    "user_sequences",
    "versus_non_personalised",
]
