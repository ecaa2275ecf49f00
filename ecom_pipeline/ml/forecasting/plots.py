"""Forecast-vs-actual plots with prediction intervals and anomaly markers (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def forecast_plot(
    path: Path,
    history: pd.DataFrame,
    forecasts: pd.DataFrame,
    anomalies: pd.DataFrame,
    series_ids: list[str],
    *,
    value: str = "orders",
    history_days: int = 120,
) -> Path:
    """One panel per series: the last ``history_days`` of actuals, every model's 28-day forecast (the
    chosen one with its interval shaded) and the flagged anomalies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series_ids = list(series_ids)[:6] or ["total"]
    fig, axes = plt.subplots(len(series_ids), 1, figsize=(11, 2.6 * len(series_ids)), squeeze=False)
    for ax, sid in zip(axes[:, 0], series_ids):
        h = history[history["series_id"] == sid].sort_values("date").tail(history_days)
        ax.plot(h["date"], h[value], color="black", lw=1, label="actual")
        f = forecasts[forecasts["series_id"] == sid]
        for model, g in f.groupby("model"):
            g = g.sort_values("date")
            best = bool(g["is_best"].iloc[0]) if "is_best" in g else False
            ax.plot(
                g["date"],
                g["yhat"],
                lw=2 if best else 1,
                ls="-" if best else "--",
                label=f"{model}{' (chosen)' if best else ''}",
            )
            if best:
                ax.fill_between(g["date"], g["lo"], g["hi"], alpha=0.25, label="80% interval")
        a = anomalies[
            (anomalies["series_id"] == sid) & (anomalies["date"] >= (h["date"].min() if len(h) else 0))
        ]
        if len(a):
            ax.scatter(a["date"], a["actual"], color="red", zorder=5, s=25, label="anomaly")
        ax.set_title(sid, fontsize=9)
        ax.legend(fontsize=7, loc="upper left", ncol=3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
