"""Differentially private regional demand: monthly order counts and revenue per region, safe to share.

The released table answers "how many orders, and how much revenue, came from region R in month M".
It is built so that whether any one customer is in the data changes the published numbers only a
little, in a way that is quantified by epsilon.

Mechanism (per month, the Laplace mechanism on clipped contributions)
--------------------------------------------------------------------
1. **Unit of privacy: a customer.**  Every customer lives in one region (their address in
   ``staging.customers``), so in one month they touch exactly one cell ``(region, month)``.
2. **Clip, then sum.**  A customer's orders in a month count at most ``max_orders_per_customer``
   (``C``) and their revenue in a month at most ``max_revenue_per_customer`` (``R``).  Adding or removing
   one customer therefore changes one cell's order count by at most ``C`` and its revenue by at most
   ``R``: the L1 sensitivities of the two published measures, per month.
3. **Split the budget.**  Two measures are published from the same people, so by sequential composition
   ``epsilon = epsilon_orders + epsilon_revenue``; ``orders_share`` (default 0.5) of it goes to the counts.
4. **Noise.**  Laplace noise with scale ``C / epsilon_orders`` on every count and ``R / epsilon_revenue``
   on every revenue, on *every* cell of a fixed grid (every region of the level x every month of the
   period), including cells with no orders: which regions exist must not reveal anyone.  The region
   grid is public reference data for the shop's own countries (:func:`public_regions`: the countries; every
   first-level division of them from the offline geography; or all 1,000 numeric 3-digit postal prefixes),
   never a fixed country's grid, and the month range is taken as public (the period the shop has been
   trading).  The countries are public when ECOM_COUNTRY names them; when they are read from the data
   instead, which countries the shop sells to is disclosed (docs/privacy.md).
5. **Post-processing** (free: it touches only noisy numbers): counts rounded and clamped at 0, revenue
   clamped at 0, and a cell whose noisy count is below ``suppress_below_noise_scales`` (2) times the count's
   noise scale is suppressed (both measures NULL) because its relative error would be large.

The guarantee is ``epsilon`` per month and customer: a customer who orders in ``k`` different months of the
period is protected at ``k * epsilon`` over the whole release (sequential composition across months).
``noise_scales`` and the table's columns state the scales and budget split used.

Releases (each month once)
--------------------------
The report is rebuilt by the daily ``scoring`` job, and publishing the same month again with fresh noise
spends its budget again (averaging 30 daily releases would shrink the noise ~5x).  So every released cell
is kept in a ledger (:data:`RELEASES`) and published unchanged from then on; a run releases only the
**closed** months not released yet (:func:`plan_release`): every month before the month of the latest
order, which may still grow and is not published until a later month has orders.  Orders that arrive late
for a released month do not change it.  The level (``auto``) is chosen once, at the first release.  A
change of settings (epsilon, clipping, level, the shop's countries) is not applied to released months
silently: the earlier release stays published and nothing new is released until the asset runs with
``rerelease`` (a new release of every closed month, spending the budget again).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

ZIP3_PREFIXES = tuple(f"{i:03d}" for i in range(1000))
LEVELS = ("country", "state", "zip3")  # coarse to fine
AUTO_LEVELS = ("state", "country")  # what level="auto" chooses from, finest first

ORDER_COLUMNS = ["customer_id", "region", "month", "revenue"]  # one row per order
REPORT_COLUMNS = [
    "level",
    "region",
    "month",
    "orders",
    "revenue",
    "suppressed",
    "epsilon",
    "epsilon_orders",
    "epsilon_revenue",
    "noise_scale_orders",
    "noise_scale_revenue",
]


RELEASES = "reports.regional_demand_dp_releases"  # every released cell: published unchanged from then on
RELEASE_COLUMNS = [*REPORT_COLUMNS, "signature", "released_at"]


@dataclass(frozen=True)
class DPConfig:
    epsilon: float = 1.0  # per month and customer, shared by the two measures
    orders_share: float = 0.5  # fraction of epsilon spent on the order counts
    max_orders_per_customer: int = 3  # C: a customer's orders in one month count at most this often
    max_revenue_per_customer: float = 1000.0  # R: a customer's revenue in one month counts at most this much
    # a cell whose noisy count is under this many noise scales (b_orders) is suppressed (post-processing):
    # its relative error would exceed ~70 %.  Tied to the scale, not a fixed count, so a larger epsilon
    # publishes more cells instead of hiding accurate small ones.
    suppress_below_noise_scales: float = 2.0

    def __post_init__(self):
        if not self.epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon}")
        if not 0 < self.orders_share < 1:
            raise ValueError(f"orders_share must be in (0, 1), got {self.orders_share}")
        if self.max_orders_per_customer < 1 or not self.max_revenue_per_customer > 0:
            raise ValueError(
                "clipping bounds must be positive (max_orders_per_customer >= 1, "
                "max_revenue_per_customer > 0)"
            )

    @property
    def epsilon_orders(self) -> float:
        return self.epsilon * self.orders_share

    @property
    def epsilon_revenue(self) -> float:
        return self.epsilon * (1.0 - self.orders_share)

    @property
    def suppress_threshold(self) -> float:
        return self.suppress_below_noise_scales * self.max_orders_per_customer / self.epsilon_orders

    def as_dict(self) -> dict:
        return asdict(self)


def public_regions(level: str, countries: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The public grid of ``level`` for a shop in ``countries`` (ISO codes), from reference data only:
    ``country`` -> the countries; ``state`` -> every first-level division of each (``SP``; ``US-CA`` when
    there are several countries); ``zip3`` -> the 1,000 numeric 3-digit postal prefixes."""
    from ecom_pipeline.geography import country_code, divisions

    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; choose one of {list(LEVELS)}")
    if level == "zip3":
        return ZIP3_PREFIXES
    codes = [c for c in dict.fromkeys(country_code(c) for c in countries) if c]
    if not codes:
        raise ValueError("no shop country known for the DP region grid: set ECOM_COUNTRY (e.g. GB or US,CA)")
    if level == "country":
        return tuple(codes)
    many = len(codes) > 1
    return tuple(sorted(f"{c}-{d}" if many else str(d) for c in codes for d in divisions(c)["code"]))


def choose_level(
    by_level: dict[str, pd.DataFrame], cfg: DPConfig, min_share: float = 0.5
) -> tuple[str, dict]:
    """``level="auto"``: the finest of :data:`AUTO_LEVELS` at which cells with enough contributors (clipped
    order count at or above the suppression threshold) hold at least ``min_share`` of the orders, else the
    coarsest.  ``by_level``: :func:`orders_by_region` per level.  This choice reads the true counts and is
    not covered by epsilon: it reveals only which of two granularities is well populated (set ``level``
    explicitly to avoid even that)."""
    shares = {}
    for level in AUTO_LEVELS:
        orders = by_level.get(level)
        if orders is None or orders.empty:
            shares[level] = 0.0
            continue
        cells = clip_contributions(orders, cfg.max_orders_per_customer, cfg.max_revenue_per_customer)
        per_cell = orders.groupby(["region", "month"], observed=True).size()
        ok = cells.set_index(["region", "month"])["orders"] >= cfg.suppress_threshold
        shares[level] = round(
            float(per_cell[ok.reindex(per_cell.index, fill_value=False)].sum() / per_cell.sum()), 4
        )
        if shares[level] >= min_share:
            return level, shares
    return AUTO_LEVELS[-1], shares


def noise_scales(cfg: DPConfig) -> tuple[float, float]:
    """Laplace scales ``(b_orders, b_revenue)`` = sensitivity / epsilon share (variance is ``2 b^2``)."""
    return (
        cfg.max_orders_per_customer / cfg.epsilon_orders,
        cfg.max_revenue_per_customer / cfg.epsilon_revenue,
    )


def clip_contributions(orders: pd.DataFrame, max_orders: int, max_revenue: float) -> pd.DataFrame:
    """Per ``(region, month)``: the sum over customers of min(orders, C) and min(revenue, R).

    ``orders``: one row per order with :data:`ORDER_COLUMNS`.  A customer with several regions in one
    month (an address change) is counted in each, so callers give each customer one region."""
    if orders.empty:
        return pd.DataFrame(
            {
                "region": pd.Series(dtype=object),
                "month": pd.Series(dtype="datetime64[us]"),
                "orders": pd.Series(dtype="float64"),
                "revenue": pd.Series(dtype="float64"),
            }
        )
    per_customer = (
        orders.assign(revenue=orders["revenue"].astype("float64").fillna(0.0).clip(lower=0.0))
        .groupby(["customer_id", "region", "month"], observed=True)
        .agg(orders=("revenue", "size"), revenue=("revenue", "sum"))
        .reset_index()
    )
    per_customer["orders"] = per_customer["orders"].clip(upper=max_orders).astype("float64")
    per_customer["revenue"] = per_customer["revenue"].clip(upper=max_revenue)
    return per_customer.groupby(["region", "month"], observed=True)[["orders", "revenue"]].sum().reset_index()


def true_totals(orders: pd.DataFrame) -> pd.DataFrame:
    """Unclipped, unnoised ``(region, month) -> orders, revenue``: what the utility is measured against."""
    if orders.empty:
        return pd.DataFrame(columns=["region", "month", "orders", "revenue"])
    return (
        orders.groupby(["region", "month"], observed=True)
        .agg(orders=("revenue", "size"), revenue=("revenue", "sum"))
        .reset_index()
    )


def month_grid(orders: pd.DataFrame, months: list | None = None) -> list[pd.Timestamp]:
    """Every month from the first to the last order month (the published period), or ``months``."""
    if months is not None:
        return [pd.Timestamp(m) for m in months]
    if orders.empty:
        return []
    first, last = orders["month"].min(), orders["month"].max()
    return list(pd.date_range(first, last, freq="MS"))


def dp_regional_report(
    orders: pd.DataFrame,
    cfg: DPConfig,
    level: str = "state",
    *,
    regions: tuple[str, ...],
    months: list | None = None,
    rng: np.random.Generator | None = None,
) -> pd.DataFrame:
    """The publishable table (:data:`REPORT_COLUMNS`): one row per region of ``level`` and month.

    ``orders``: one row per order, :data:`ORDER_COLUMNS`, ``region`` already at ``level`` and ``month``
    the first day of the order's month; ``regions`` the public grid (:func:`public_regions`).  Regions outside
    it are not published (their orders are dropped before noise so they cannot reveal themselves)."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; choose one of {list(LEVELS)}")
    if not len(regions):
        raise ValueError("the public region grid is empty")
    rng = rng if rng is not None else np.random.default_rng()
    grid_months = month_grid(orders, months)
    clipped = clip_contributions(
        orders[orders["region"].isin(regions)], cfg.max_orders_per_customer, cfg.max_revenue_per_customer
    )
    grid = pd.MultiIndex.from_product([list(regions), grid_months], names=["region", "month"])
    cells = clipped.set_index(["region", "month"]).reindex(grid, fill_value=0.0).reset_index()
    b_orders, b_revenue = noise_scales(cfg)
    noisy_orders = cells["orders"].to_numpy(float) + rng.laplace(0.0, b_orders, len(cells))
    noisy_revenue = cells["revenue"].to_numpy(float) + rng.laplace(0.0, b_revenue, len(cells))
    orders_out = np.maximum(np.rint(noisy_orders), 0.0)
    revenue_out = np.maximum(noisy_revenue, 0.0).round(2)
    suppressed = noisy_orders < cfg.suppress_threshold
    out = pd.DataFrame(
        {
            "level": level,
            "region": cells["region"].astype(object),
            "month": pd.to_datetime(cells["month"]).astype("datetime64[us]"),
            "orders": pd.array(np.where(suppressed, np.nan, orders_out), dtype="Float64").astype("Int64"),
            "revenue": pd.array(np.where(suppressed, np.nan, revenue_out), dtype="Float64"),
            "suppressed": suppressed,
            "epsilon": cfg.epsilon,
            "epsilon_orders": cfg.epsilon_orders,
            "epsilon_revenue": cfg.epsilon_revenue,
            "noise_scale_orders": b_orders,
            "noise_scale_revenue": b_revenue,
        }
    )
    return out[REPORT_COLUMNS]


def utility(report: pd.DataFrame, truth: pd.DataFrame, large: int = 100) -> dict:
    """How far the published table is from the truth (suppressed cells read as 0, as a consumer would).

    * ``mae_orders`` / ``mae_revenue``: mean absolute error over every published cell;
    * ``rel_err_orders_large`` / ``rel_err_revenue_large``: mean |error| / truth over regions with at least
      ``large`` orders in the period (region totals over all months), NaN when there are none;
    * ``rank_corr_regions``: Spearman correlation of region totals (published vs true);
    * ``suppressed_fraction``: share of published cells that are suppressed.
    """
    t = truth.copy()
    t["month"] = pd.to_datetime(t["month"]).astype("datetime64[us]")
    cells = report[["region", "month", "orders", "revenue", "suppressed"]].merge(
        t.rename(columns={"orders": "true_orders", "revenue": "true_revenue"}),
        on=["region", "month"],
        how="left",
    )
    pub_orders = cells["orders"].astype("Float64").fillna(0).to_numpy(float)
    pub_revenue = cells["revenue"].astype("Float64").fillna(0).to_numpy(float)
    true_orders = cells["true_orders"].astype("float64").fillna(0).to_numpy()
    true_revenue = cells["true_revenue"].astype("float64").fillna(0).to_numpy()
    regions = (
        pd.DataFrame(
            {
                "region": cells["region"],
                "pub_o": pub_orders,
                "true_o": true_orders,
                "pub_r": pub_revenue,
                "true_r": true_revenue,
            }
        )
        .groupby("region")
        .sum()
    )
    big = regions[regions["true_o"] >= large]
    active = regions[regions["true_o"] > 0]
    rank = float(active["pub_o"].rank().corr(active["true_o"].rank())) if len(active) > 2 else float("nan")
    return {
        "cells": int(len(cells)),
        "mae_orders": float(np.mean(np.abs(pub_orders - true_orders))) if len(cells) else float("nan"),
        "mae_revenue": float(np.mean(np.abs(pub_revenue - true_revenue))) if len(cells) else float("nan"),
        "large_regions": int(len(big)),
        "rel_err_orders_large": float(np.mean(np.abs(big["pub_o"] - big["true_o"]) / big["true_o"]))
        if len(big)
        else float("nan"),
        "rel_err_revenue_large": float(
            np.mean(np.abs(big["pub_r"] - big["true_r"]) / big["true_r"].clip(lower=1e-9))
        )
        if len(big)
        else float("nan"),
        "rank_corr_regions": rank,
        "suppressed_fraction": float(cells["suppressed"].mean()) if len(cells) else float("nan"),
    }


def orders_by_region(
    orders: pd.DataFrame,
    customers: pd.DataFrame,
    items: pd.DataFrame,
    level: str = "state",
    countries: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Canonical staging frames -> one row per order with :data:`ORDER_COLUMNS` at ``level``.

    Customers are placed with the offline geography from their own address (a customer is the unit of
    privacy and sits in one region; a per-order ship-to would let one customer touch several cells);
    ``region`` is the country code, the division code (``US-CA`` in a shop with several countries) or the
    3-digit postal prefix.  Revenue of an order = its items' price + freight (payments can include interest),
    in the shop's own currency.  Orders whose customer does not reach ``level`` are kept out (they cannot be
    placed on the grid); callers report how many."""
    return orders_by_regions(orders, customers, items, (level,), countries)[level]


def orders_by_regions(
    orders: pd.DataFrame,
    customers: pd.DataFrame,
    items: pd.DataFrame,
    levels: tuple[str, ...],
    countries: tuple[str, ...] = (),
) -> dict[str, pd.DataFrame]:
    """:func:`orders_by_region` for several levels: customers are placed, and the orders' month and revenue
    computed, once for all of them (level=auto compares two levels on every run)."""
    from ecom_pipeline.ml.spatial.geo import locate, region_id

    for level in levels:
        if level not in LEVELS:
            raise ValueError(f"unknown level {level!r}; choose one of {list(LEVELS)}")
    if orders.empty:
        return {lv: pd.DataFrame({c: pd.Series(dtype=object) for c in ORDER_COLUMNS}) for lv in levels}
    cust = locate(customers.drop_duplicates("customer_id"), countries)
    many = len(set(countries)) > 1 if countries else cust["country"].nunique() > 1  # as public_regions
    value = (
        (
            items.assign(
                v=items["price"].astype("float64").fillna(0) + items["freight"].astype("float64").fillna(0)
            )
            .groupby("order_id")["v"]
            .sum()
        )
        if not items.empty
        else pd.Series(dtype="float64")
    )
    base = orders[["order_id", "customer_id", "purchased_at"]]
    # month and revenue are per order: computed once, before the per-level join keeps the placed orders
    ts = pd.to_datetime(base["purchased_at"])
    if ts.dt.tz is not None:
        ts = ts.dt.tz_convert(None)
    base = base.assign(
        month=ts.dt.to_period("M").dt.to_timestamp(),
        revenue=base["order_id"].map(value).astype("float64").fillna(0.0),
    )
    out = {}
    for level in levels:
        rid = region_id(cust, level, qualify=many)
        placed = cust[["customer_id"]].assign(region=rid.str.split(":", n=1).str[1])
        joined = base.merge(placed, on="customer_id")
        out[level] = joined.loc[joined["region"].notna(), ORDER_COLUMNS].reset_index(drop=True)
    return out


def release_signature(cfg: DPConfig, level_setting: str, countries: tuple[str, ...]) -> str:
    """What a release is bound to: the mechanism's settings, the level setting and the shop's countries
    (the grid; as a set, so a change in which country has most customers is not a new release)."""
    return json.dumps(
        {"config": cfg.as_dict(), "level": level_setting, "countries": sorted(set(countries))}, sort_keys=True
    )


@dataclass
class ReleasePlan:
    months: list  # closed months to release now (noise drawn once, here)
    kept: pd.DataFrame  # cells released earlier: published again unchanged (RELEASE_COLUMNS)
    level: str | None  # the level of the earlier release (None: choose it now)
    open_month: pd.Timestamp | None  # the month of the latest order: not released until it closes
    reason: str
    blocked: bool = False  # settings changed since the release: nothing new until rerelease


def plan_release(
    ledger: pd.DataFrame, signature: str, first_order, last_order, *, rerelease: bool = False
) -> ReleasePlan:
    """Which months to release now, given the ledger of released cells and the span of the orders.

    A month is closed when a later month has orders; each closed month is released once.  ``ledger`` rows
    under another ``signature`` (changed settings) are kept published and block new releases unless
    ``rerelease``: then every closed month is released again under the new settings."""
    empty = pd.DataFrame(columns=RELEASE_COLUMNS)
    if first_order is None or pd.isna(first_order):
        return ReleasePlan([], empty, None, None, "no orders")
    first, last = (pd.Timestamp(t).to_period("M").to_timestamp() for t in (first_order, last_order))
    closed = list(pd.date_range(first, last, freq="MS"))[:-1]
    if rerelease:
        return ReleasePlan(
            closed, empty, None, last, f"rerelease: {len(closed)} closed months released again"
        )
    other = ledger[ledger["signature"] != signature] if len(ledger) else ledger
    if len(other):
        return ReleasePlan(
            [],
            ledger,
            None,
            last,
            "settings changed since the last release (epsilon, clipping, level or countries): the earlier "
            "release stays published and nothing new is released; run with rerelease=true to release every "
            "closed month again under the new settings (spends the privacy budget again)",
            blocked=True,
        )
    released = set(pd.to_datetime(ledger["month"])) if len(ledger) else set()
    todo = [m for m in closed if m not in released]
    level = str(ledger["level"].iloc[0]) if len(ledger) else None
    reason = (
        f"{len(todo)} closed month(s) released now, {len(released)} released earlier kept unchanged"
        if todo
        else f"no month closed since the last release: {len(released)} released month(s) published unchanged"
    )
    return ReleasePlan(todo, ledger if len(ledger) else empty, level, last, reason)
