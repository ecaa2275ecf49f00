"""The state panel and state graph the ST-GCN backtest runs on, and why it cannot run when it cannot.

Framework-free work behind the ``stgcn_backtest`` asset: takes the feature frames, returns plain arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class StatePanel:
    ids: list[str]  # state series ids, e.g. "state:SP"
    dates: pd.DatetimeIndex
    Y: np.ndarray | None  # (states, days)
    A: np.ndarray | None  # state adjacency (kNN + flow edges)
    skip_reason: str | None  # None: the comparison can run


def state_panel(
    daily: pd.DataFrame,
    calendar: pd.DataFrame,
    knn: pd.DataFrame,
    flows: pd.DataFrame,
    regions: pd.DataFrame,
    *,
    n_states: int,
    value: str,
    cfg,
    folds: int,
    min_flow_orders: int,
) -> StatePanel:
    """The top ``n_states`` state series by ``value`` as a panel, their graph, and the reason to skip (no
    series, no calendar, too few states or days, or locations that resolve to no state at all)."""
    from ecom_pipeline.ml.forecasting.series import panel, top_states
    from ecom_pipeline.ml.forecasting.stgcn import skip_reason, state_graph

    ids = top_states(daily, n_states, value) if len(daily) else []
    dates, Y, ids = panel(daily, ids, value) if ids else (pd.DatetimeIndex([]), None, [])
    A = None
    if len(ids) and len(knn.columns):
        A = state_graph(
            ids,
            knn[knn["level"] == "state"],
            flows[flows["level"] == "state"] if len(flows.columns) else None,
            min_flow_orders,
        )
    reason = (
        "no daily series"
        if daily.empty
        else ("no calendar" if calendar.empty else skip_reason(ids, len(dates), A, cfg, folds))
    )
    populated = regions[regions["customers"] > 0] if len(regions.columns) else regions
    if reason and len(regions.columns) and not (populated["level"] == "state").any():
        levels = sorted(set(populated["level"])) or ["no"]
        reason = (
            "no first-level divisions: customers' and sellers' locations resolve only to "
            f"{', '.join(levels)} regions (e.g. the data has a country but no state, city or "
            "coordinates); "
            f"the ST-GCN needs state regions ({reason})"
        )
    return StatePanel(ids, dates, Y, A, reason)
