"""Spatio-temporal GCN forecaster for per-state daily demand.

Every day's vector of (scaled) state demand goes through graph convolutions over the state graph
(:mod:`ecom_pipeline.ml.spatial.gcn`, symmetric-normalised adjacency with self-loops), so each state's day
carries a summary of its neighbours' demand; each state's sequence of [own value, graph features, calendar
covariates] then goes through the global LSTM's temporal model and quantile head (:mod:`.lstm`), with the same
windowing, scaling, pinball loss, training loop and rolling-origin backtest.

The no-graph twin is the identical network with the identity as adjacency (``graph=False``): the GCN layers
become per-state maps of the state's own value, same parameters, same seeds, so the difference between the
two is what the graph adds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ecom_pipeline.ml.forecasting.lstm import (
    LSTMConfig,
    _module_base,
    panel_backtest,
    series_scale,
    temporal_net,
    to_intervals,
    train_quantile_net,
    window_starts,
)
from ecom_pipeline.ml.spatial.gcn import GCNLayer, adjacency, normalized_adjacency

MIN_STATES = 3  # fewer nodes leave no neighbourhood worth convolving over


@dataclass
class GraphConfig:
    gcn_dim: int = 8  # graph features per state and day fed to the temporal model
    gcn_layers: int = 2
    min_flow_orders: int = 3  # seller->customer flows with fewer orders add no edge


class SpatioTemporalNet(_module_base()):
    """[batch, states, window] scaled demand -> [batch, states, horizon, 3] quantiles."""

    def __init__(self, a_hat: np.ndarray, cov_dim: int, cfg: LSTMConfig, gcfg: GraphConfig):
        import torch
        from torch import nn

        super().__init__()
        n = len(a_hat)
        self.register_buffer("a_hat", torch.tensor(a_hat, dtype=torch.float32))
        dims = [1] + [gcfg.gcn_dim] * gcfg.gcn_layers
        self.gcn = nn.ModuleList([GCNLayer(a, b) for a, b in zip(dims[:-1], dims[1:])])
        self.temporal = temporal_net(n, cov_dim, cfg, extra_dim=gcfg.gcn_dim)

    def safe_config(self) -> dict:
        """What the architecture depends on, read off the layers; the adjacency is a buffer (in the
        weights)."""
        t = self.temporal.safe_config()
        return {
            "n_states": int(self.a_hat.shape[0]),
            "cov_dim": t["cov_dim"],
            "hidden": t["hidden"],
            "embed_dim": t["embed_dim"],
            "horizon": t["horizon"],
            "gcn_dim": self.gcn[0].linear.out_features,
            "gcn_layers": len(self.gcn),
        }

    def forward(self, x, cov_in, cov_out):
        import torch

        b, n, w = x.shape
        z = x.transpose(1, 2).unsqueeze(-1)  # [b, w, n, 1]: one graph signal per day
        for k, layer in enumerate(self.gcn):
            z = layer(z, self.a_hat)
            if k < len(self.gcn) - 1:  # the last layer stays linear: neighbour levels pass through unclipped
                z = torch.relu(z)
        extra = z.permute(0, 2, 1, 3).reshape(b * n, w, -1)
        sid = torch.arange(n, device=x.device).repeat(b)
        q = self.temporal(
            x.reshape(b * n, w), cov_in.repeat_interleave(n, 0), cov_out.repeat_interleave(n, 0), sid, extra
        )
        return q.view(b, n, -1, 3)


class STGCNForecaster:
    """Same interface as :class:`.lstm.GlobalLSTMForecaster`.  A training sample is one day-window of all
    states at once; ``cfg.max_samples`` and ``cfg.batch_size`` count state-windows, as the LSTM's do, so both
    see the same amount of data per step and per fit."""

    def __init__(
        self, cfg: LSTMConfig, a_hat: np.ndarray, gcfg: GraphConfig | None = None, device: str = "cpu"
    ):
        self.cfg, self.a_hat, self.gcfg, self.device = cfg, a_hat, gcfg or GraphConfig(), device
        self.net = None
        self.scale = None
        self.train_seconds = 0.0
        self.final_loss = float("nan")

    def fit(self, Y: np.ndarray, cov: np.ndarray, end: int, log=None):
        import torch

        cfg = self.cfg
        n = Y.shape[0]
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        self.scale = series_scale(Y, end)
        Ys = (Y / self.scale[:, None]).astype(np.float32)
        st = window_starts(end, cfg.window, cfg.horizon, cfg.stride)
        cap = max(1, cfg.max_samples // n)
        if len(st) > cap:
            st = np.sort(rng.choice(st, cap, replace=False))
        w, h = cfg.window, cfg.horizon
        xi = st[:, None] + np.arange(w)
        yi = st[:, None] + w + np.arange(h)
        dev = torch.device(self.device)
        X = torch.tensor(np.ascontiguousarray(Ys[:, xi].transpose(1, 0, 2))).to(dev)  # [samples, states, w]
        T = torch.tensor(np.ascontiguousarray(Ys[:, yi].transpose(1, 0, 2))).to(dev)
        Ci, Co = torch.tensor(cov[xi]).to(dev), torch.tensor(cov[yi]).to(dev)
        self.net = SpatioTemporalNet(self.a_hat, cov.shape[1], cfg, self.gcfg).to(dev)
        self.final_loss, self.train_seconds = train_quantile_net(
            self.net,
            len(st),
            lambda j: (self.net(X[j], Ci[j], Co[j]), T[j]),
            cfg,
            max(1, round(cfg.batch_size / n)),
            name="stgcn",
            log=log,
        )
        return self

    def predict(self, Y: np.ndarray, cov: np.ndarray, origin: int):
        import torch

        w, h = self.cfg.window, self.cfg.horizon
        Ys = (Y / self.scale[:, None]).astype(np.float32)
        dev = torch.device(self.device)
        self.net.eval()
        with torch.no_grad():
            q = (
                self.net(
                    torch.tensor(Ys[None, :, origin - w : origin]).to(dev),
                    torch.tensor(cov[None, origin - w : origin]).to(dev),
                    torch.tensor(cov[None, origin : origin + h]).to(dev),
                )[0]
                .cpu()
                .numpy()
            )
        self.net.train()
        return to_intervals(q, self.scale)


def state_graph(
    state_ids: list[str],
    knn_edges: pd.DataFrame,
    flow_edges: pd.DataFrame | None = None,
    min_flow_orders: int = 3,
) -> np.ndarray:
    """Adjacency over ``state_ids`` (region ids like ``state:SP``): geographic kNN edges plus seller→customer
    flow edges with at least ``min_flow_orders`` orders, made symmetric.  Edges to states outside the list
    are dropped (the forecaster's graph is the induced subgraph)."""
    edges = [knn_edges[["src", "dst"]]] if len(knn_edges) else []
    if flow_edges is not None and len(flow_edges):
        edges.append(flow_edges[flow_edges["orders"] >= min_flow_orders][["src", "dst"]])
    return adjacency(state_ids, pd.concat(edges) if edges else pd.DataFrame(columns=["src", "dst"]))


def stgcn_backtest(
    series_ids: list[str],
    dates,
    Y: np.ndarray,
    cov: np.ndarray,
    A: np.ndarray,
    cfg: LSTMConfig,
    *,
    graph: bool = True,
    gcfg: GraphConfig | None = None,
    folds: int = 3,
    step: int | None = None,
    device: str = "cpu",
    season: int = 7,
    log=None,
    future: bool = True,
):
    """Backtest of the ST-GCN (``graph=True``, model ``stgcn``) or its no-graph twin (identity adjacency,
    model ``stgcn_no_graph``) on the same rolling origins as every other forecaster."""
    if len(series_ids) < MIN_STATES:
        raise ValueError(
            f"the spatio-temporal model needs at least {MIN_STATES} states, got {len(series_ids)}"
        )
    a_hat = normalized_adjacency(A if graph else np.zeros_like(A))
    model = "stgcn" if graph else "stgcn_no_graph"
    return panel_backtest(
        model,
        lambda: STGCNForecaster(cfg, a_hat, gcfg, device),
        series_ids,
        dates,
        Y,
        cov,
        cfg,
        folds=folds,
        step=step,
        season=season,
        log=log,
        future=future,
    )


def skip_reason(
    series_ids: list[str], n_days: int, A: np.ndarray | None, cfg: LSTMConfig, folds: int
) -> str | None:
    """Why the spatio-temporal comparison cannot run on this input, or None."""
    if len(series_ids) < MIN_STATES:
        return (
            f"{len(series_ids)} state series with orders; the spatio-temporal GCN needs at least {MIN_STATES}"
        )
    need = cfg.window + cfg.horizon * (folds + 1)
    if n_days < need:
        return (
            f"too short: {n_days} days, the backtest needs {need} ({cfg.window}-day window + "
            f"{folds} folds + 1 horizon)"
        )
    if A is None or not (A > 0).any():
        return (
            "no edges between the selected states (empty kNN graph and flows): nothing for the graph to add"
        )
    return None


@dataclass
class GraphComparison:
    predictions: pd.DataFrame  # stgcn (backtest + future) and stgcn_no_graph (backtest)
    metrics: pd.DataFrame  # per fold: stgcn, stgcn_no_graph and the seasonal-naive baseline
    final: STGCNForecaster  # the ST-GCN fitted on everything (serves the future forecast)
    seconds: dict


def compare_graph(
    series_ids: list[str],
    dates,
    Y: np.ndarray,
    cov: np.ndarray,
    A: np.ndarray,
    cfg: LSTMConfig,
    *,
    gcfg: GraphConfig | None = None,
    folds: int = 3,
    device: str = "cpu",
    log=None,
) -> GraphComparison:
    """The ST-GCN, its no-graph twin (same hyper-parameters and seeds) and seasonal naive on the same
    folds."""
    import time

    from ecom_pipeline.ml.forecasting import models as fm

    seconds = {}
    t0 = time.perf_counter()
    p_graph, m_graph, final = stgcn_backtest(
        series_ids, dates, Y, cov, A, cfg, graph=True, gcfg=gcfg, folds=folds, device=device, log=log
    )
    seconds["stgcn"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    p_twin, m_twin, _ = stgcn_backtest(
        series_ids,
        dates,
        Y,
        cov,
        A,
        cfg,
        graph=False,
        gcfg=gcfg,
        folds=folds,
        device=device,
        log=log,
        future=False,
    )
    seconds["stgcn_no_graph"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = fm.run_many(
        {sid: (dates, Y[i]) for i, sid in enumerate(series_ids)},
        fm.SeriesConfig(horizon=cfg.horizon, step=cfg.horizon, folds=folds, models=("seasonal_naive",)),
        workers=1,
    )
    seconds["seasonal_naive"] = time.perf_counter() - t0
    return GraphComparison(
        pd.concat([p_graph, p_twin], ignore_index=True),
        pd.concat([m_graph, m_twin] + [b.metrics for b in base], ignore_index=True),
        final,
        seconds,
    )
