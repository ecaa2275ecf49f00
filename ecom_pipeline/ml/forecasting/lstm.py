"""A global LSTM forecaster trained across all series at once.

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
    batch_size: int = 64
    lr: float = 3e-3
    stride: int = 2
    alpha: float = 0.2
    seed: int = 0
    max_samples: int = 3000  # per training: a random subset when there are more windows (CPU-small)
    refit_every_fold: bool = False  # False: one fit at the first origin serves every backtest fold


def pinball_loss(pred, target, quantiles):
    """pred [..., Q], target [...]."""
    import torch

    q = torch.as_tensor(quantiles, dtype=pred.dtype, device=pred.device)
    diff = target.unsqueeze(-1) - pred
    return torch.mean(torch.maximum(q * diff, (q - 1) * diff))


def _net(n_series: int, cov_dim: int, cfg: LSTMConfig):
    return GlobalLSTM(n_series, cov_dim, cfg.hidden, cfg.embed_dim, cfg.horizon)


def _module_base():
    import torch.nn

    return torch.nn.Module


class GlobalLSTM(_module_base()):
    """Encoder LSTM + series embedding + target-day covariates -> 3 quantiles per target day."""

    def __init__(self, n_series: int, cov_dim: int, hidden: int, embed_dim: int, horizon: int):
        from torch import nn

        super().__init__()
        self.horizon = horizon
        self.embed = nn.Embedding(n_series, embed_dim)
        self.lstm = nn.LSTM(1 + cov_dim, hidden, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden + embed_dim + horizon * cov_dim, 2 * hidden), nn.ReLU(),
                                  nn.Linear(2 * hidden, horizon * 3))

    def forward(self, x, cov_in, cov_out, sid):
        import torch
        from torch.nn import functional as F

        _, (h, _) = self.lstm(torch.cat([x.unsqueeze(-1), cov_in], dim=-1))
        z = torch.cat([h[-1], self.embed(sid), cov_out.flatten(1)], dim=1)
        q = self.head(z).view(-1, self.horizon, 3)
        mid = q[..., 1]  # median; the outer quantiles are non-negative offsets from it
        return torch.stack([mid - F.softplus(q[..., 0]), mid, mid + F.softplus(q[..., 2])], -1)


def make_windows(Y: np.ndarray, end: int, window: int, horizon: int, stride: int = 1):
    """Training windows whose targets lie entirely before position ``end``: (series, start) index pairs."""
    starts = np.arange(0, end - window - horizon + 1, stride)
    return [(i, s) for i in range(Y.shape[0]) for s in starts]


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
        self.scale = np.maximum(Y[:, :end].mean(axis=1), 1e-3)
        Ys = (Y / self.scale[:, None]).astype(np.float32)
        idx = make_windows(Y, end, cfg.window, cfg.horizon, cfg.stride)
        if not idx:
            raise TooShort(f"no training window: need {cfg.window + cfg.horizon} days before the origin, have {end}")
        if len(idx) > cfg.max_samples:
            idx = [idx[i] for i in rng.choice(len(idx), cfg.max_samples, replace=False)]
        sid = np.array([i for i, _ in idx])
        st = np.array([s for _, s in idx])
        w, h = cfg.window, cfg.horizon
        xi = st[:, None] + np.arange(w)
        yi = st[:, None] + w + np.arange(h)
        X = torch.tensor(Ys[sid[:, None], xi])
        T = torch.tensor(Ys[sid[:, None], yi])
        Ci = torch.tensor(cov[xi])
        Co = torch.tensor(cov[yi])
        S = torch.tensor(sid, dtype=torch.long)
        dev = torch.device(self.device)
        self.net = _net(Y.shape[0], cov.shape[1], cfg).to(dev)
        opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        qs = [cfg.alpha / 2, 0.5, 1 - cfg.alpha / 2]
        t0 = time.perf_counter()
        n = len(S)
        for epoch in range(cfg.epochs):
            perm = torch.randperm(n)
            total = 0.0
            for b in range(0, n, cfg.batch_size):
                j = perm[b:b + cfg.batch_size]
                pred = self.net(X[j].to(dev), Ci[j].to(dev), Co[j].to(dev), S[j].to(dev))
                loss = pinball_loss(pred, T[j].to(dev), qs)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(j)
            self.final_loss = total / n
            if log and (epoch + 1) % max(1, cfg.epochs // 4) == 0:
                log(f"lstm epoch {epoch + 1}/{cfg.epochs}: pinball {self.final_loss:.4f}")
        self.train_seconds = time.perf_counter() - t0
        return self

    def predict(self, Y: np.ndarray, cov: np.ndarray, origin: int):
        import torch

        cfg = self.cfg
        w, h = cfg.window, cfg.horizon
        Ys = (Y / self.scale[:, None]).astype(np.float32)
        dev = torch.device(self.device)
        self.net.eval()
        with torch.no_grad():
            X = torch.tensor(Ys[:, origin - w:origin])
            Ci = torch.tensor(np.repeat(cov[None, origin - w:origin], Y.shape[0], 0))
            Co = torch.tensor(np.repeat(cov[None, origin:origin + h], Y.shape[0], 0))
            q = self.net(X.to(dev), Ci.to(dev), Co.to(dev), torch.arange(Y.shape[0], device=dev)).cpu().numpy()
        self.net.train()
        q = np.sort(q, axis=-1) * self.scale[:, None, None]
        q = np.maximum(q, 0)
        return q[..., 1], q[..., 0], q[..., 2]


def lstm_backtest(series_ids: list[str], dates, Y: np.ndarray, cov: np.ndarray, cfg: LSTMConfig, *,
                  folds: int = 3, step: int | None = None, device: str = "cpu", season: int = 7, log=None):
    """Rolling-origin backtest of the global LSTM over all series at once plus a final fit on everything
    for the ``future`` forecast.  ``cov`` covers ``len(dates) + horizon`` days.

    Returns (predictions, metrics, final forecaster) in the frames of :mod:`.models`."""
    dates = pd.DatetimeIndex(pd.to_datetime(dates))
    n = len(dates)
    h = cfg.horizon
    fold_list = rolling_origin(dates, horizon=h, folds=folds, step=step or h, min_train=cfg.window + h)
    preds, mets = [], []
    future_dates = pd.date_range(dates[-1] + pd.Timedelta(days=1), periods=h, freq="D")
    final = None
    for fi, fold in enumerate(fold_list + [None]):
        origin = int(fold.test_idx[0]) if fold is not None else n
        if log:
            log(f"lstm fold {fi + 1}/{len(fold_list) + 1} (origin {origin})")
        if fold is None or fi == 0 or cfg.refit_every_fold:
            model = GlobalLSTMForecaster(cfg, device).fit(Y, cov, origin, log=log)
        yhat, lo, hi = model.predict(Y, cov, origin)
        fdates = dates[origin:origin + h] if fold is not None else future_dates
        for i, sid in enumerate(series_ids):
            actual = Y[i, origin:origin + h] if fold is not None else np.full(h, np.nan)
            preds.append(pd.DataFrame({"series_id": sid, "model": "lstm",
                                       "kind": "backtest" if fold is not None else "future",
                                       "origin": fdates[0], "date": fdates, "step": np.arange(1, h + 1),
                                       "actual": actual, "yhat": yhat[i], "lo": lo[i], "hi": hi[i]}))
            if fold is not None:
                for metric, value in all_metrics(actual, yhat[i], lo[i], hi[i], Y[i, :origin], season).items():
                    mets.append((sid, "lstm", fi, metric, value))
        final = model
    return (pd.concat(preds, ignore_index=True),
            pd.DataFrame(mets, columns=["series_id", "model", "fold", "metric", "value"]), final)
