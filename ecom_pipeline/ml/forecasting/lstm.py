"""A global LSTM forecaster trained across all series at once, and the pieces it shares with the
spatio-temporal GCN forecaster (:mod:`.stgcn`): quantile head, pinball loss, windowing, scaling, training loop
and the panel backtest.

Each sample is one series' last ``window`` days (scaled by that series' training mean) with the calendar
covariates of those days; the encoder's last hidden state, a learned series embedding and the covariates of
the ``horizon`` target days go through an MLP that outputs three quantiles (alpha/2, 0.5, 1-alpha/2) for every
target day (direct multi-horizon, pinball loss).  The 0.5 quantile is the point forecast, the outer two the
prediction interval.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ecom_pipeline.ml.forecasting.backtest import TooShort, rolling_origin
from ecom_pipeline.ml.forecasting.metrics import all_metrics


@dataclass
class LSTMConfig:
    window: int = 56
    horizon: int = 28
    hidden: int = 32
    embed_dim: int = 4
    epochs: int = 8
    batch_size: int = 64  # series-windows per step (the ST-GCN counts each state of a day-window as one)
    lr: float = 3e-3
    stride: int = 2
    alpha: float = 0.2
    seed: int = 0
    max_samples: int = 3000  # per training: a random subset when there are more windows (CPU-small)
    refit_every_fold: bool = (
        False  # False: one fit at the first origin, re-scaled per fold to its training mean
    )


def quantile_levels(alpha: float) -> list[float]:
    return [alpha / 2, 0.5, 1 - alpha / 2]


def pinball_loss(pred, target, quantiles):
    """pred [..., Q], target [...]."""
    import torch

    q = torch.as_tensor(quantiles, dtype=pred.dtype, device=pred.device)
    diff = target.unsqueeze(-1) - pred
    return torch.mean(torch.maximum(q * diff, (q - 1) * diff))


def _module_base():
    import torch.nn

    return torch.nn.Module


class GlobalLSTM(_module_base()):
    """Encoder LSTM + series embedding + target-day covariates -> 3 quantiles per target day.

    ``extra_dim`` > 0 adds per-day input features beside the series' own value (the ST-GCN feeds its graph
    convolution outputs here); with 0 it is the plain global LSTM."""

    def __init__(
        self, n_series: int, cov_dim: int, hidden: int, embed_dim: int, horizon: int, extra_dim: int = 0
    ):
        from torch import nn

        super().__init__()
        self.horizon = horizon
        self.embed = nn.Embedding(n_series, embed_dim)
        self.lstm = nn.LSTM(1 + cov_dim + extra_dim, hidden, batch_first=True)
        self.head = nn.Sequential(
            nn.Linear(hidden + embed_dim + horizon * cov_dim, 2 * hidden),
            nn.ReLU(),
            nn.Linear(2 * hidden, horizon * 3),
        )

    def safe_config(self) -> dict:
        """Constructor arguments, read off the layers (so modules pickled by older code convert too), to
        rebuild a registered state dict (ml/safe_artifacts.py)."""
        hidden, embed_dim = self.lstm.hidden_size, self.embed.embedding_dim
        cov_dim = (self.head[0].in_features - hidden - embed_dim) // self.horizon
        return {
            "n_series": self.embed.num_embeddings,
            "cov_dim": cov_dim,
            "hidden": hidden,
            "embed_dim": embed_dim,
            "horizon": int(self.horizon),
            "extra_dim": self.lstm.input_size - 1 - cov_dim,
        }

    def forward(self, x, cov_in, cov_out, sid, extra=None):
        import torch
        from torch.nn import functional as F

        steps = [x.unsqueeze(-1), cov_in] + ([extra] if extra is not None else [])
        _, (h, _) = self.lstm(torch.cat(steps, dim=-1))
        z = torch.cat([h[-1], self.embed(sid), cov_out.flatten(1)], dim=1)
        q = self.head(z).view(-1, self.horizon, 3)
        mid = q[..., 1]  # median; the outer quantiles are non-negative offsets from it
        return torch.stack([mid - F.softplus(q[..., 0]), mid, mid + F.softplus(q[..., 2])], -1)


def temporal_net(n_series: int, cov_dim: int, cfg: LSTMConfig, extra_dim: int = 0) -> GlobalLSTM:
    return GlobalLSTM(n_series, cov_dim, cfg.hidden, cfg.embed_dim, cfg.horizon, extra_dim)


def make_windows(Y: np.ndarray, end: int, window: int, horizon: int, stride: int = 1):
    """Training windows whose targets lie entirely before position ``end``: (series, start) index pairs."""
    starts = window_starts(end, window, horizon, stride)
    return [(i, s) for i in range(Y.shape[0]) for s in starts]


def window_starts(end: int, window: int, horizon: int, stride: int = 1) -> np.ndarray:
    """Start positions of windows (``window`` inputs + ``horizon`` targets) that end before ``end``."""
    starts = np.arange(0, end - window - horizon + 1, stride)
    if not len(starts):
        raise TooShort(f"no training window: need {window + horizon} days before the origin, have {end}")
    return starts


def series_scale(Y: np.ndarray, end: int, recent_days: int = 91) -> np.ndarray:
    """Per-series mean of the last ``recent_days`` before ``end`` (floored): every series is modelled relative
    to its current level, not to a whole-history mean that a growing shop's early months drag down."""
    return np.maximum(Y[:, max(0, end - recent_days) : end].mean(axis=1), 1e-3)


def to_intervals(q_scaled: np.ndarray, scale: np.ndarray):
    """Scaled quantiles [series, horizon, 3] -> (yhat, lo, hi) in counts, sorted and clipped at zero."""
    q = np.maximum(np.sort(q_scaled, axis=-1) * scale[:, None, None], 0)
    return q[..., 1], q[..., 0], q[..., 2]


def train_quantile_net(net, n: int, batch, cfg: LSTMConfig, batch_size: int, *, name: str = "lstm", log=None):
    """Adam on the pinball loss over ``n`` samples; ``batch(idx)`` -> (pred, target) for a LongTensor of
    sample indices.  Returns (final epoch loss, seconds)."""
    import torch

    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    qs = quantile_levels(cfg.alpha)
    t0 = time.perf_counter()
    final = float("nan")
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n)
        total = 0.0
        for b in range(0, n, batch_size):
            j = perm[b : b + batch_size]
            pred, target = batch(j)
            loss = pinball_loss(pred, target, qs)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(j)
        final = total / n
        if log and (epoch + 1) % max(1, cfg.epochs // 4) == 0:
            log(f"{name} epoch {epoch + 1}/{cfg.epochs}: pinball {final:.4f}")
    return final, time.perf_counter() - t0


class GlobalLSTMForecaster:
    """``fit(Y, cov, end)`` on positions < end of the panel ``Y`` [series, days]; ``predict(Y, cov, origin)``
    forecasts positions origin .. origin+horizon-1 (``cov`` must cover them)."""

    def __init__(self, cfg: LSTMConfig, device: str = "cpu"):
        self.cfg, self.device = cfg, device
        self.net = None
        self.scale = None
        self.train_seconds = 0.0
        self.final_loss = float("nan")

    def fit(self, Y: np.ndarray, cov: np.ndarray, end: int, log=None):
        import torch

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        self.scale = series_scale(Y, end)
        Ys = (Y / self.scale[:, None]).astype(np.float32)
        idx = make_windows(Y, end, cfg.window, cfg.horizon, cfg.stride)
        if len(idx) > cfg.max_samples:
            idx = [idx[i] for i in rng.choice(len(idx), cfg.max_samples, replace=False)]
        sid = np.array([i for i, _ in idx])
        st = np.array([s for _, s in idx])
        w, h = cfg.window, cfg.horizon
        xi = st[:, None] + np.arange(w)
        yi = st[:, None] + w + np.arange(h)
        dev = torch.device(self.device)
        X, T = torch.tensor(Ys[sid[:, None], xi]).to(dev), torch.tensor(Ys[sid[:, None], yi]).to(dev)
        Ci, Co = torch.tensor(cov[xi]).to(dev), torch.tensor(cov[yi]).to(dev)
        S = torch.tensor(sid, dtype=torch.long, device=dev)
        self.net = temporal_net(Y.shape[0], cov.shape[1], cfg).to(dev)
        self.final_loss, self.train_seconds = train_quantile_net(
            self.net,
            len(S),
            lambda j: (self.net(X[j], Ci[j], Co[j], S[j]), T[j]),
            cfg,
            cfg.batch_size,
            log=log,
        )
        return self

    def predict(self, Y: np.ndarray, cov: np.ndarray, origin: int):
        import torch

        cfg = self.cfg
        w, h = cfg.window, cfg.horizon
        Ys = (Y / self.scale[:, None]).astype(np.float32)
        dev = torch.device(self.device)
        self.net.eval()
        with torch.no_grad():
            X = torch.tensor(Ys[:, origin - w : origin])
            Ci = torch.tensor(np.repeat(cov[None, origin - w : origin], Y.shape[0], 0))
            Co = torch.tensor(np.repeat(cov[None, origin : origin + h], Y.shape[0], 0))
            q = (
                self.net(X.to(dev), Ci.to(dev), Co.to(dev), torch.arange(Y.shape[0], device=dev))
                .cpu()
                .numpy()
            )
        self.net.train()
        return to_intervals(q, self.scale)


def panel_backtest(
    model: str,
    new_forecaster,
    series_ids: list[str],
    dates,
    Y: np.ndarray,
    cov: np.ndarray,
    cfg: LSTMConfig,
    *,
    folds: int = 3,
    step: int | None = None,
    season: int = 7,
    log=None,
    future: bool = True,
):
    """Rolling-origin backtest of a panel forecaster (``new_forecaster()`` -> object with ``fit(Y, cov, end,
    log)`` and ``predict(Y, cov, origin)``) over all series at once, plus (``future``) a final fit on
    everything for the ``future`` forecast, then also the returned forecaster.  ``cov`` covers ``len(dates) +
    horizon`` days.

    Returns (predictions, metrics, final forecaster) in the frames of :mod:`.models`."""
    dates = pd.DatetimeIndex(pd.to_datetime(dates))
    n = len(dates)
    h = cfg.horizon
    fold_list = rolling_origin(dates, horizon=h, folds=folds, step=step or h, min_train=cfg.window + h)
    preds, mets = [], []
    future_dates = pd.date_range(dates[-1] + pd.Timedelta(days=1), periods=h, freq="D")
    final = None
    for fi, fold in enumerate(fold_list + ([None] if future else [])):
        origin = int(fold.test_idx[0]) if fold is not None else n
        if log:
            log(f"{model} fold {fi + 1}/{len(fold_list) + int(future)} (origin {origin})")
        if fold is None or fi == 0 or cfg.refit_every_fold:
            forecaster = new_forecaster().fit(Y, cov, origin, log=log)
        else:  # not refitted: at least re-scaled to the level of this fold's own training window
            forecaster.scale = series_scale(Y, origin)
        yhat, lo, hi = forecaster.predict(Y, cov, origin)
        fdates = dates[origin : origin + h] if fold is not None else future_dates
        for i, sid in enumerate(series_ids):
            actual = Y[i, origin : origin + h] if fold is not None else np.full(h, np.nan)
            preds.append(
                pd.DataFrame(
                    {
                        "series_id": sid,
                        "model": model,
                        "kind": "backtest" if fold is not None else "future",
                        "origin": fdates[0],
                        "date": fdates,
                        "step": np.arange(1, h + 1),
                        "actual": actual,
                        "yhat": yhat[i],
                        "lo": lo[i],
                        "hi": hi[i],
                    }
                )
            )
            if fold is not None:
                for metric, value in all_metrics(
                    actual, yhat[i], lo[i], hi[i], Y[i, :origin], season
                ).items():
                    mets.append((sid, model, fi, metric, value))
        final = forecaster
    return (
        pd.concat(preds, ignore_index=True),
        pd.DataFrame(mets, columns=["series_id", "model", "fold", "metric", "value"]),
        final,
    )


def lstm_backtest(
    series_ids: list[str],
    dates,
    Y: np.ndarray,
    cov: np.ndarray,
    cfg: LSTMConfig,
    *,
    folds: int = 3,
    step: int | None = None,
    device: str = "cpu",
    season: int = 7,
    log=None,
):
    """The global LSTM through :func:`panel_backtest` (model name ``lstm``)."""
    return panel_backtest(
        "lstm",
        lambda: GlobalLSTMForecaster(cfg, device),
        series_ids,
        dates,
        Y,
        cov,
        cfg,
        folds=folds,
        step=step,
        season=season,
        log=log,
    )
