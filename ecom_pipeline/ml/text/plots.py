"""PNG charts of satisfaction and complaint intents over time (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_share_negative(by_state_month: pd.DataFrame, path: Path, top_states: int = 5) -> Path | None:
    """Monthly share of reviews predicted negative: all states and the ``top_states`` busiest ones."""
    if by_state_month.empty:
        return None
    plt = _plt()
    df = by_state_month.copy()
    df["month"] = pd.to_datetime(df["month"])
    df["neg"] = df["share_negative"] * df["reviews"]
    overall = df.groupby("month")[["neg", "reviews"]].sum()
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(overall.index, overall["neg"] / overall["reviews"], color="black", lw=2, label="all states")
    for state in df.groupby("state")["reviews"].sum().nlargest(top_states).index:
        s = df[df["state"] == state].sort_values("month")
        ax.plot(s["month"], s["share_negative"], lw=1, alpha=0.8, label=str(state))
    ax.set_ylabel("share of reviews predicted negative")
    ax.set_title("Review sentiment by month and customer state")
    ax.legend(fontsize=8, ncol=3)
    fig.autofmt_xdate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_intent_trend(trend: pd.DataFrame, path: Path) -> Path | None:
    """Stacked monthly counts of negative/neutral reviews per complaint intent."""
    if trend.empty:
        return None
    plt = _plt()
    pivot = trend.groupby(["month", "intent"])["reviews"].sum().unstack(fill_value=0).sort_index()
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.stackplot(pd.to_datetime(pivot.index), pivot.T.to_numpy(), labels=pivot.columns)
    ax.set_ylabel("negative / neutral reviews")
    ax.set_title("Complaint intents by month")
    ax.legend(fontsize=8, loc="upper left")
    fig.autofmt_xdate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path
