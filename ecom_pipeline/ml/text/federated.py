"""Federated training of the sentiment head on frozen review embeddings (Flower FedAvg, in-process).

Parties (e.g. the customers' states) each keep their reviews: a party only ever sends model parameters
(and, once, the count/sum/sum-of-squares of its embeddings for standardisation), never a review or an
embedding. Each round every party starts from the global head, runs local SGD epochs on its own training
reviews and returns its parameters; Flower's ``FedAvg`` strategy averages them weighted by example counts.

Flower's simulation engine needs Ray (a heavy extra, not installed here), so the rounds run in-process:
the parties are real ``flwr.client.NumPyClient`` objects and the aggregation is Flower's ``FedAvg``
strategy object (``aggregate_fit``), called directly instead of over gRPC.

Compared on the same time-split test reviews (``ml.splits.temporal_split``) with
* centralised: the same head and optimiser on all parties' training reviews pooled (the upper reference),
  and the project's sentiment head (``ml.text.sentiment.embedding_head``) on the same pooled reviews,
* local-only: each party trains alone and scores its own test reviews,
with bootstrap intervals (paired for the differences).

Optional client-side DP: each party clips its round update to L2 norm ``dp_clip`` and adds Gaussian noise
of std ``dp_noise_multiplier * dp_clip`` before sending it; the reported ε (party-level, for ``dp_delta``)
comes from the Rényi-DP bound of the Gaussian mechanism composed over the rounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ecom_pipeline.ml.text.sentiment import SETTINGS, sentiment_labels


@dataclass(frozen=True)
class FederatedConfig:
    setting: str = "binary"  # binary | 3class (ml.text.sentiment.SETTINGS)
    rounds: int = 30
    local_epochs: int = 1
    lr: float = 0.1
    batch_size: int = 64
    l2: float = 1e-4
    max_parties: int = 8  # the largest parties by training reviews; the rest form one "other" party
    min_party_train: int = 30  # a party needs this many training reviews, else it joins "other"
    test_fraction: float = 0.2
    dp_noise_multiplier: float = 0.0  # 0 = no DP noise
    dp_clip: float = 1.0
    dp_delta: float = 1e-5
    bootstrap: int = 1000
    seed: int = 0


# --- the head: multinomial logistic regression on standardised embeddings --------------------------------


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def init_params(dim: int, n_classes: int) -> list[np.ndarray]:
    return [np.zeros((dim, n_classes), np.float64), np.zeros(n_classes, np.float64)]


def predict(params: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    w, b = params
    return np.argmax(x @ w + b, axis=1)


def sgd(
    params: list[np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    l2: float,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Mini-batch SGD on the cross-entropy (+ L2 on weights), starting from ``params``; returns new params."""
    w, b = params[0].copy(), params[1].copy()
    k = w.shape[1]
    onehot = np.eye(k)[y]
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for s in range(0, len(y), batch_size):
            i = order[s : s + batch_size]
            g = _softmax(x[i] @ w + b) - onehot[i]
            w -= lr * (x[i].T @ g / len(i) + l2 * w)
            b -= lr * g.mean(axis=0)
    return [w, b]


@dataclass(frozen=True)
class Moments:
    """What a party shares for standardisation: counts and sums, never rows."""

    n: int
    total: np.ndarray
    total_sq: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> Moments:
        return cls(len(x), x.sum(axis=0), (x.astype(np.float64) ** 2).sum(axis=0))

    @staticmethod
    def pooled(parts: list[Moments]) -> tuple[np.ndarray, np.ndarray]:
        n = sum(p.n for p in parts)
        mean = sum(p.total for p in parts) / n
        var = sum(p.total_sq for p in parts) / n - mean**2
        return mean, np.sqrt(np.maximum(var, 1e-12))


# --- Flower parties --------------------------------------------------------------------------------------


def _numpy_client_base():
    from flwr.client import NumPyClient

    return NumPyClient


class PartyClient(_numpy_client_base()):
    """One party: holds its training reviews' embeddings and labels, and only ever returns parameters."""

    def __init__(self, name: str, x: np.ndarray, y: np.ndarray, cfg: FederatedConfig, seed: int):
        self.name, self._x, self._y, self.cfg = name, x, y, cfg
        self.rng = np.random.default_rng(seed)

    def moments(self) -> Moments:
        return Moments.of(self._x)

    def standardise(self, mean: np.ndarray, std: np.ndarray) -> None:
        self._x = (self._x - mean) / std

    def get_parameters(self, config):
        return init_params(self._x.shape[1], len(SETTINGS[self.cfg.setting]))

    def fit(self, parameters, config):
        cfg = self.cfg
        new = sgd(
            parameters,
            self._x,
            self._y,
            epochs=cfg.local_epochs,
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            l2=cfg.l2,
            rng=self.rng,
        )
        if cfg.dp_noise_multiplier > 0:
            new = clip_and_noise(parameters, new, cfg.dp_clip, cfg.dp_noise_multiplier, self.rng)
        return new, len(self._y), {}


def clip_and_noise(
    old: list[np.ndarray],
    new: list[np.ndarray],
    clip: float,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """old + (update clipped to L2 norm ``clip``) + N(0, (noise_multiplier·clip)²) per coordinate."""
    delta = [n - o for n, o in zip(new, old)]
    norm = math.sqrt(sum(float((d**2).sum()) for d in delta))
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    return [o + d * scale + rng.normal(0, noise_multiplier * clip, d.shape) for o, d in zip(old, delta)]


def gaussian_dp_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """ε of ``rounds`` Gaussian releases of one party's clipped update (sensitivity 2·clip: any two clipped
    updates differ by at most that; noise std ``noise_multiplier·clip``), via Rényi DP:
    ε = min_α rounds·α·2/z² + log(1/δ)/(α−1). ``inf`` without noise."""
    if noise_multiplier <= 0:
        return math.inf
    per_alpha = 2.0 * rounds / noise_multiplier**2
    alphas = np.concatenate([np.linspace(1.01, 10, 400), np.linspace(10, 1000, 400)])
    return float(np.min(per_alpha * alphas + math.log(1 / delta) / (alphas - 1)))


def fedavg(clients: list[PartyClient], cfg: FederatedConfig, progress=None) -> list[np.ndarray]:
    """``cfg.rounds`` rounds of FedAvg with Flower's strategy object; returns the global parameters."""
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import FedAvg

    strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=len(clients),
        min_available_clients=len(clients),
        fit_metrics_aggregation_fn=lambda _metrics: {},
    )
    params = clients[0].get_parameters({})
    for rnd in range(1, cfg.rounds + 1):
        results = []
        for client in clients:
            new, n, metrics = client.fit([p.copy() for p in params], {"round": rnd})
            results.append(
                (
                    None,
                    FitRes(
                        status=Status(code=Code.OK, message="ok"),
                        parameters=ndarrays_to_parameters(new),
                        num_examples=n,
                        metrics=metrics,
                    ),
                )
            )
        aggregated, _ = strategy.aggregate_fit(rnd, results, [])
        params = parameters_to_ndarrays(aggregated)
        if progress is not None:
            progress(rnd, cfg.rounds)
    return params


# --- evaluation ------------------------------------------------------------------------------------------


def bootstrap_interval(
    correct: np.ndarray,
    n_boot: int,
    rng: np.random.Generator,
    other: np.ndarray | None = None,
) -> tuple[float, float]:
    """95 % percentile bootstrap interval of mean(correct) (or of mean(correct − other), paired)."""
    values = correct.astype(float) - (other.astype(float) if other is not None else 0.0)
    idx = rng.integers(0, len(values), (n_boot, len(values)))
    means = values[idx].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


@dataclass
class FederatedResult:
    setting: str
    parties: list[str]
    party_train: dict[str, int]
    party_test: dict[str, int]
    n_train: int
    n_test: int
    cutoff: str
    accuracy: dict[str, float]  # fedavg, centralised, centralised_sentiment_head, local_only, majority
    macro_f1: dict[str, float]
    interval: dict[str, tuple[float, float]]  # 95 % bootstrap of each accuracy
    difference: dict[str, tuple[float, float, float]]  # name → (value, lo, hi), paired bootstrap
    epsilon: float
    params: list[np.ndarray] = field(repr=False, default_factory=list)
    mean: np.ndarray | None = field(repr=False, default=None)
    std: np.ndarray | None = field(repr=False, default=None)

    def summary(self) -> dict:
        d = {f"accuracy_{k}": v for k, v in self.accuracy.items()}
        d |= {f"macro_f1_{k}": v for k, v in self.macro_f1.items()}
        d |= {f"accuracy_{k}_ci95": list(v) for k, v in self.interval.items()}
        d |= {k: list(v) for k, v in self.difference.items()}
        return d | {
            "n_train": self.n_train,
            "n_test": self.n_test,
            "parties": len(self.parties),
            "cutoff": self.cutoff,
            "dp_epsilon": self.epsilon,
        }


def assign_parties(party: pd.Series, is_train: np.ndarray, cfg: FederatedConfig) -> pd.Series:
    """The ``max_parties`` largest parties by training reviews keep their name (if they have at least
    ``min_party_train``); everyone else is ``other`` (folded into the largest party if ``other`` is too
    small)."""
    party = party.fillna("unknown").astype(str)
    counts = party[is_train].value_counts()
    keep = [p for p in counts.index[: cfg.max_parties] if counts[p] >= cfg.min_party_train]
    if not keep:
        raise ValueError(f"no party has {cfg.min_party_train} training reviews")
    out = party.where(party.isin(keep), "other")
    if 0 < (out[is_train] == "other").sum() < cfg.min_party_train:
        out = out.replace("other", keep[0])
    return out


def train_and_compare(
    embeddings: np.ndarray,
    frame: pd.DataFrame,
    cfg: FederatedConfig = FederatedConfig(),
    time_col: str = "created_at",
    progress=None,
) -> FederatedResult:
    """FedAvg vs centralised vs local-only on one time split. ``frame``: ``score``, ``party``, ``time_col``,
    row-aligned with ``embeddings``."""
    from ecom_pipeline.ml.splits import temporal_split
    from ecom_pipeline.ml.text.sentiment import classification_metrics

    classes = SETTINGS[cfg.setting]
    y_all = sentiment_labels(frame["score"], cfg.setting)
    keep = y_all >= 0
    f = frame.loc[keep].reset_index(drop=True).assign(_row=np.flatnonzero(keep), _y=y_all[keep])
    split = temporal_split(f, time_col, test_fraction=cfg.test_fraction)
    train_rows = set(split.train["_row"])
    is_train = f["_row"].isin(train_rows).to_numpy()
    if is_train.sum() == 0 or (~is_train).sum() == 0:
        raise ValueError(
            f"not enough reviews on both sides of the time split (train {is_train.sum()}, "
            f"test {(~is_train).sum()})"
        )
    f["party"] = assign_parties(f["party"], is_train, cfg).to_numpy()
    x = embeddings[f["_row"].to_numpy()].astype(np.float64)
    y = f["_y"].to_numpy()
    parties = sorted(f.loc[is_train, "party"].unique())
    rng = np.random.default_rng(cfg.seed)

    clients = [
        PartyClient(
            p,
            x[is_train & (f["party"] == p).to_numpy()],
            y[is_train & (f["party"] == p).to_numpy()],
            cfg,
            seed=cfg.seed + 1 + i,
        )
        for i, p in enumerate(parties)
    ]
    mean, std = Moments.pooled([c.moments() for c in clients])  # sums only: no rows leave a party
    for c in clients:
        c.standardise(mean, std)
    params = fedavg(clients, cfg, progress)
    x_test, y_test = (x[~is_train] - mean) / std, y[~is_train]
    test_party = f.loc[~is_train, "party"].to_numpy()
    pred = {"fedavg": predict(params, x_test)}

    # centralised: the same head and optimiser on the pooled training reviews, as many epochs as FedAvg ran
    epochs = cfg.rounds * cfg.local_epochs
    central = sgd(
        init_params(x.shape[1], len(classes)),
        (x[is_train] - mean) / std,
        y[is_train],
        epochs=epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        l2=cfg.l2,
        rng=np.random.default_rng(cfg.seed),
    )
    pred["centralised"] = predict(central, x_test)
    # and the project's production head (class-balanced L-BFGS logistic regression) on the pooled reviews
    from ecom_pipeline.ml.text.sentiment import embedding_head

    pred["centralised_sentiment_head"] = embedding_head().fit(x[is_train], y[is_train]).predict(x[~is_train])

    # local-only: each party standardises with its own moments and trains alone
    local = np.zeros(len(y_test), dtype=int)
    for i, p in enumerate(parties):
        tr = is_train & (f["party"] == p).to_numpy()
        m, s = Moments.pooled([Moments.of(x[tr])])
        own = sgd(
            init_params(x.shape[1], len(classes)),
            (x[tr] - m) / s,
            y[tr],
            epochs=epochs,
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            l2=cfg.l2,
            rng=np.random.default_rng(cfg.seed + 100 + i),
        )
        te = test_party == p
        if te.any():
            local[te] = predict(own, (x[~is_train][te] - m) / s)
    pred["local_only"] = local
    pred["majority"] = np.full(len(y_test), np.bincount(y[is_train]).argmax())

    correct = {k: v == y_test for k, v in pred.items()}
    accuracy = {k: float(v.mean()) for k, v in correct.items()}
    macro = {k: classification_metrics(y_test, v, classes)["macro_f1"] for k, v in pred.items()}
    interval = {k: bootstrap_interval(v, cfg.bootstrap, rng) for k, v in correct.items()}
    difference = {}
    for a, b in (
        ("fedavg", "centralised"),
        ("fedavg", "local_only"),
        ("fedavg", "centralised_sentiment_head"),
    ):
        lo, hi = bootstrap_interval(correct[a], cfg.bootstrap, rng, other=correct[b])
        difference[f"accuracy_{a}_minus_{b}"] = (accuracy[a] - accuracy[b], lo, hi)
    return FederatedResult(
        cfg.setting,
        parties,
        {c.name: len(c._y) for c in clients},
        {p: int((test_party == p).sum()) for p in parties},
        int(is_train.sum()),
        int((~is_train).sum()),
        str(split.cutoff),
        accuracy,
        macro,
        interval,
        difference,
        gaussian_dp_epsilon(cfg.dp_noise_multiplier, cfg.rounds, cfg.dp_delta),
        params,
        mean,
        std,
    )


def to_sklearn(params: list[np.ndarray], mean: np.ndarray, std: np.ndarray):
    """The global head as a fitted scikit-learn pipeline (StandardScaler → LogisticRegression) with the
    same predictions, so it logs, registers and serves like the other sentiment heads."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    w, b = params
    scaler = StandardScaler()
    scaler.mean_, scaler.scale_, scaler.var_ = mean.copy(), std.copy(), std**2
    scaler.n_features_in_, scaler.n_samples_seen_ = len(mean), 1
    head = LogisticRegression()
    k = w.shape[1]
    if k == 2:  # sklearn's binary form: one logit, class 1 vs class 0
        head.coef_, head.intercept_ = (w[:, 1] - w[:, 0])[None, :], np.array([b[1] - b[0]])
    else:
        head.coef_, head.intercept_ = w.T.copy(), b.copy()
    head.classes_, head.n_features_in_ = np.arange(k), len(mean)
    return make_pipeline(scaler, head)
