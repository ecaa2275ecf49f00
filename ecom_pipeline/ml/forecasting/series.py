"""Daily and weekly order/revenue/customer series from the canonical staging tables, with gaps filled.

Long format, one row per (series_id, date): ``series_id`` is ``total``, ``state:SP``, ``category:toys`` or
``state_category:SP|toys``.  Every series covers every day from the first to the last order day of the
shop (a day without orders is an explicit 0, never a missing row).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ecom_pipeline.canonical import NON_PURCHASE_STATUSES

SERIES_COLUMNS = ["series_id", "level", "state", "category", "date", "orders", "revenue", "customers"]
UNKNOWN = "unknown"


def order_lines(orders: pd.DataFrame, items: pd.DataFrame, products: pd.DataFrame,
                customers: pd.DataFrame) -> pd.DataFrame:
    """One row per order item with the order day, customer, state, category and line revenue.

    Canceled and returned orders (``canonical.NON_PURCHASE_STATUSES``) are neither orders nor revenue."""
    if "status" in orders.columns:
        orders = orders[~orders["status"].fillna("").astype(str).str.lower().isin(NON_PURCHASE_STATUSES)]
    o = orders[["order_id", "customer_id", "purchased_at"]].copy()
    o["date"] = pd.to_datetime(o["purchased_at"]).dt.normalize()
    c = customers[["customer_id", "state"]].drop_duplicates("customer_id")
    o = o.merge(c, on="customer_id", how="left")
    o["state"] = o["state"].fillna(UNKNOWN).astype(str)
    it = items[["order_id", "product_id", "price", "freight"]].copy() if len(items) else pd.DataFrame(
        columns=["order_id", "product_id", "price", "freight"])
    if "quantity" in items.columns and len(items):
        it["price"] = items["price"].astype(float) * items["quantity"].fillna(1).astype(float)
    it["revenue"] = it["price"].astype(float).fillna(0) + it["freight"].astype(float).fillna(0)
    p = products[["product_id", "category"]].drop_duplicates("product_id")
    it = it.merge(p, on="product_id", how="left")
    it["category"] = it["category"].fillna(UNKNOWN).astype(str)
    lines = o.merge(it[["order_id", "category", "revenue"]], on="order_id", how="left")
    lines["category"] = lines["category"].fillna(UNKNOWN)
    lines["revenue"] = lines["revenue"].fillna(0.0)
    return lines[["order_id", "customer_id", "date", "state", "category", "revenue"]]


def _aggregate(lines: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    g = lines.groupby(keys + ["date"], dropna=False)
    return g.agg(orders=("order_id", "nunique"), revenue=("revenue", "sum"),
                 customers=("customer_id", "nunique")).reset_index()


def _fill(agg: pd.DataFrame, dates: pd.DatetimeIndex, keys: list[str]) -> pd.DataFrame:
    """Reindex every group on the full calendar: missing days become explicit zeros."""
    if agg.empty:
        return agg
    groups = agg[keys].drop_duplicates() if keys else pd.DataFrame(index=[0])
    grid = groups.merge(pd.DataFrame({"date": dates}), how="cross")
    out = grid.merge(agg, on=keys + ["date"], how="left")
    for col in ("orders", "customers"):
        out[col] = out[col].fillna(0).astype("int64")
    out["revenue"] = out["revenue"].fillna(0.0).astype(float)
    return out


def daily_series(orders: pd.DataFrame, items: pd.DataFrame, products: pd.DataFrame, customers: pd.DataFrame,
                 *, top_categories: int = 5, top_states: int = 0) -> pd.DataFrame:
    """Daily orders, revenue and distinct customers for the total, per state, per category and per
    (state, top-N category); ``top_states`` > 0 restricts the state×category cross to the top states."""
    if orders.empty:
        return pd.DataFrame(columns=SERIES_COLUMNS)
    lines = order_lines(orders, items, products, customers)
    dates = pd.date_range(lines["date"].min(), lines["date"].max(), freq="D")
    parts = []
    total = _fill(_aggregate(lines.assign(_k="total"), ["_k"]), dates, ["_k"]).drop(columns="_k")
    parts.append(total.assign(series_id="total", level="total", state=None, category=None))
    st = _fill(_aggregate(lines, ["state"]), dates, ["state"])
    parts.append(st.assign(series_id="state:" + st["state"], level="state", category=None))
    cat = _fill(_aggregate(lines, ["category"]), dates, ["category"])
    parts.append(cat.assign(series_id="category:" + cat["category"], level="category", state=None))
    top_cat = lines.groupby("category")["order_id"].nunique().sort_values(ascending=False)
    top_cat = [c for c in top_cat.index if c != UNKNOWN][:top_categories]
    sub = lines[lines["category"].isin(top_cat)]
    if top_states:
        top_st = lines.groupby("state")["order_id"].nunique().sort_values(ascending=False).index[:top_states]
        sub = sub[sub["state"].isin(top_st)]
    if len(sub):
        sc = _fill(_aggregate(sub, ["state", "category"]), dates, ["state", "category"])
        parts.append(sc.assign(series_id="state_category:" + sc["state"] + "|" + sc["category"],
                               level="state_category"))
    out = pd.concat(parts, ignore_index=True)[SERIES_COLUMNS]
    return out.sort_values(["series_id", "date"]).reset_index(drop=True)


def weekly_series(daily: pd.DataFrame) -> pd.DataFrame:
    """Weekly sums (weeks start Monday).  Distinct customers are summed per day, so a customer buying on
    two days of a week counts twice: ``customers`` here is customer-days."""
    if daily.empty:
        return pd.DataFrame(columns=["series_id", "level", "state", "category", "week", "orders", "revenue",
                                     "customer_days", "days"])
    d = daily.copy()
    d["week"] = d["date"] - pd.to_timedelta(d["date"].dt.weekday, unit="D")
    g = d.groupby(["series_id", "week"], dropna=False)
    out = g.agg(level=("level", "first"), state=("state", "first"), category=("category", "first"),
                orders=("orders", "sum"), revenue=("revenue", "sum"), customer_days=("customers", "sum"),
                days=("date", "count")).reset_index()
    return out


def black_friday(year: int) -> pd.Timestamp:
    """The Friday after the fourth Thursday of November."""
    nov1 = pd.Timestamp(year=year, month=11, day=1)
    first_thu = nov1 + pd.Timedelta(days=(3 - nov1.weekday()) % 7)
    return first_thu + pd.Timedelta(days=22)


def calendar_features(start, end, country: str = "BR") -> pd.DataFrame:
    """One row per day: weekday, month, day of month/year, holidays of ``country`` (``holidays`` package,
    offline), Black Friday and the days around it, Christmas run-up, and Fourier terms for the year."""
    import holidays as hol

    dates = pd.date_range(pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize(), freq="D")
    years = sorted(set(dates.year))
    try:
        cal = hol.country_holidays(country, years=years)
    except Exception:  # unknown country code: no holidays rather than a crash
        cal = {}
    df = pd.DataFrame({"date": dates})
    df["weekday"] = dates.weekday.astype("int64")
    df["is_weekend"] = df["weekday"] >= 5
    df["month"] = dates.month.astype("int64")
    df["day_of_month"] = dates.day.astype("int64")
    df["day_of_year"] = dates.dayofyear.astype("int64")
    names = [cal.get(d.date()) for d in dates]
    df["holiday_name"] = [n if n else None for n in names]
    df["is_holiday"] = df["holiday_name"].notna()
    bf = {black_friday(y) for y in years}
    df["is_black_friday"] = df["date"].isin(bf)
    delta = np.full(len(dates), 999)
    for b in bf:
        d = (dates - b).days.values
        delta = np.where(np.abs(d) < np.abs(delta), d, delta)
    df["days_to_black_friday"] = delta.astype("int64")
    df["black_friday_week"] = (df["days_to_black_friday"] >= -3) & (df["days_to_black_friday"] <= 3)
    df["christmas_runup"] = (df["month"] == 12) & (df["day_of_month"] <= 24) & (df["day_of_month"] >= 10)
    angle = 2 * np.pi * df["day_of_year"] / 365.25
    df["year_sin"] = np.sin(angle)
    df["year_cos"] = np.cos(angle)
    df["country"] = country
    return df


COVARIATES = ["weekday", "is_weekend", "is_holiday", "black_friday_week", "christmas_runup", "year_sin", "year_cos"]


def covariate_matrix(cal: pd.DataFrame) -> np.ndarray:
    """Numeric calendar covariates for models: weekday one-hot (7) + flags + yearly Fourier terms."""
    wd = np.eye(7)[cal["weekday"].to_numpy()]
    rest = cal[["is_holiday", "black_friday_week", "christmas_runup", "year_sin", "year_cos"]].astype(float).to_numpy()
    return np.concatenate([wd, rest], axis=1).astype(np.float32)


def top_series(daily: pd.DataFrame, *, n_states: int = 5, n_categories: int = 5, metric: str = "orders") -> list[str]:
    """The series worth a per-series model: total + the top states and categories by volume."""
    if daily.empty:
        return []
    vol = daily.groupby(["series_id", "level"])[metric].sum().reset_index()
    vol = vol[~vol["series_id"].str.endswith(":" + UNKNOWN)]
    chosen = ["total"] if (vol["series_id"] == "total").any() else []
    for level, n in (("state", n_states), ("category", n_categories)):
        chosen += vol[vol["level"] == level].sort_values(metric, ascending=False)["series_id"].head(n).tolist()
    return chosen


def panel(daily: pd.DataFrame, series_ids: list[str], value: str = "orders"):
    """(dates, Y [series, days], ids) of the long daily table: one row per series in ``series_ids`` order."""
    sub = daily[daily["series_id"].isin(series_ids)]
    wide = sub.pivot(index="date", columns="series_id", values=value).sort_index()
    wide = wide[[s for s in series_ids if s in wide.columns]]
    return pd.DatetimeIndex(pd.to_datetime(wide.index)), wide.to_numpy(dtype=float).T, list(wide.columns)


def top_states(daily: pd.DataFrame, n_states: int = 10, metric: str = "orders") -> list[str]:
    """State series by volume (``n_states`` = 0: every state with at least one order; unknown state left out)."""
    if daily.empty:
        return []
    st = daily[(daily["level"] == "state") & ~daily["series_id"].str.endswith(":" + UNKNOWN)]
    vol = st.groupby("series_id")[metric].sum().sort_values(ascending=False)
    return vol[vol > 0].index.tolist()[:n_states or None]


def covariates_for(cal: pd.DataFrame, dates, horizon: int) -> np.ndarray:
    """Calendar covariates of ``dates`` plus the ``horizon`` days after them (the forecast days)."""
    cal = cal.assign(date=pd.to_datetime(cal["date"])).sort_values("date").set_index("date")
    dates = pd.DatetimeIndex(dates)
    return covariate_matrix(cal.loc[dates[0]:dates[-1] + pd.Timedelta(days=horizon)].reset_index())
