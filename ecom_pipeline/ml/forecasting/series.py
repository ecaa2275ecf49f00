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


def order_lines(
    orders: pd.DataFrame, items: pd.DataFrame, products: pd.DataFrame, customers: pd.DataFrame
) -> pd.DataFrame:
    """One row per order item with the order day, customer, state, category and line revenue.

    Canceled and returned orders (``canonical.NON_PURCHASE_STATUSES``) are neither orders nor revenue."""
    if "status" in orders.columns:
        orders = orders[~orders["status"].fillna("").astype(str).str.lower().isin(NON_PURCHASE_STATUSES)]
    o = orders[["order_id", "customer_id", "purchased_at"]].copy()
    o["date"] = pd.to_datetime(o["purchased_at"]).dt.normalize()
    c = customers[["customer_id", "state"]].drop_duplicates("customer_id")
    o = o.merge(c, on="customer_id", how="left")
    o["state"] = o["state"].fillna(UNKNOWN).astype(str)
    it = (
        items[["order_id", "product_id", "price", "freight"]].copy()
        if len(items)
        else pd.DataFrame(columns=["order_id", "product_id", "price", "freight"])
    )
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


def _codes(ids: pd.Series) -> pd.Series:
    """Integer code per id (missing stays missing), for counting distinct ids."""
    codes = pd.Series(pd.factorize(ids)[0], index=ids.index)
    return codes.where(codes >= 0)


def _aggregate(lines: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    g = lines.groupby(keys + ["date"], dropna=False)
    return g.agg(
        orders=("order_id", "nunique"), revenue=("revenue", "sum"), customers=("customer_id", "nunique")
    ).reset_index()


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


def daily_series(
    orders: pd.DataFrame,
    items: pd.DataFrame,
    products: pd.DataFrame,
    customers: pd.DataFrame,
    *,
    top_categories: int = 5,
    top_states: int = 0,
) -> pd.DataFrame:
    """Daily orders, revenue and distinct customers for the total, per state, per category and per
    (state, top-N category); ``top_states`` > 0 restricts the state×category cross to the top states."""
    if orders.empty:
        return pd.DataFrame(columns=SERIES_COLUMNS)
    lines = order_lines(orders, items, products, customers)
    # distinct orders and customers counted on integer codes: hashing the id strings again for every
    # grouping was most of the step at 1M orders
    lines = lines.assign(order_id=_codes(lines["order_id"]), customer_id=_codes(lines["customer_id"]))
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
        parts.append(
            sc.assign(
                series_id="state_category:" + sc["state"] + "|" + sc["category"], level="state_category"
            )
        )
    out = pd.concat(parts, ignore_index=True)[SERIES_COLUMNS]
    return out.sort_values(["series_id", "date"]).reset_index(drop=True)


def weekly_series(daily: pd.DataFrame) -> pd.DataFrame:
    """Weekly sums (weeks start Monday).  Distinct customers are summed per day, so a customer buying on
    two days of a week counts twice: ``customers`` here is customer-days."""
    if daily.empty:
        return pd.DataFrame(
            columns=[
                "series_id",
                "level",
                "state",
                "category",
                "week",
                "orders",
                "revenue",
                "customer_days",
                "days",
            ]
        )
    d = daily.copy()
    d["week"] = d["date"] - pd.to_timedelta(d["date"].dt.weekday, unit="D")
    g = d.groupby(["series_id", "week"], dropna=False)
    out = g.agg(
        level=("level", "first"),
        state=("state", "first"),
        category=("category", "first"),
        orders=("orders", "sum"),
        revenue=("revenue", "sum"),
        customer_days=("customers", "sum"),
        days=("date", "count"),
    ).reset_index()
    return out


def black_friday(year: int) -> pd.Timestamp:
    """The Friday after the fourth Thursday of November."""
    nov1 = pd.Timestamp(year=year, month=11, day=1)
    first_thu = nov1 + pd.Timedelta(days=(3 - nov1.weekday()) % 7)
    return first_thu + pd.Timedelta(days=22)


# Shopping events that move online demand, by ISO country.  Black Friday / Cyber Monday spread from US retail
# to most online markets; Boxing Day sales are Commonwealth; Singles' Day (11.11) is Chinese / South-East
# Asian. A country in none of these lists gets only its public holidays (and the Christmas run-up where
# Christmas is one of them, derived from the holidays package rather than listed).
BLACK_FRIDAY_COUNTRIES = frozenset(
    [
        "US",
        "CA",
        "MX",
        "BR",
        "AR",
        "CL",
        "CO",
        "PE",
        "UY",
        "GB",
        "IE",
        "FR",
        "DE",
        "AT",
        "CH",
        "BE",
        "NL",
        "LU",
        "ES",
        "PT",
        "IT",
        "PL",
        "CZ",
        "SK",
        "HU",
        "RO",
        "BG",
        "GR",
        "SE",
        "NO",
        "DK",
        "FI",
        "EE",
        "LV",
        "LT",
        "AU",
        "NZ",
        "ZA",
        "IN",
        "AE",
        "SA",
        "TR",
    ]
)
CYBER_MONDAY_COUNTRIES = frozenset(
    [
        "US",
        "CA",
        "MX",
        "BR",
        "AR",
        "CL",
        "CO",
        "PE",
        "GB",
        "IE",
        "FR",
        "DE",
        "ES",
        "IT",
        "NL",
        "PT",
        "AU",
        "NZ",
        "ZA",
    ]
)
BOXING_DAY_COUNTRIES = frozenset(["GB", "IE", "CA", "AU", "NZ", "ZA", "HK"])
SINGLES_DAY_COUNTRIES = frozenset(["CN", "HK", "TW", "SG", "MY", "ID", "TH", "VN", "PH"])
EVENT_COLUMNS = [
    "is_black_friday",
    "black_friday_week",
    "is_cyber_monday",
    "christmas_runup",
    "is_boxing_day",
    "is_singles_day",
]


def _country_calendar(dates: pd.DatetimeIndex, country: str) -> pd.DataFrame:
    """Public holidays (``holidays`` package, offline) and shopping-event flags of one country."""
    import holidays as hol

    years = sorted(set(dates.year))
    try:
        cal = hol.country_holidays(country, years=years)
    except NotImplementedError as e:
        raise ValueError(
            f"the holidays package has no calendar for country {country!r} (ISO 3166 alpha-2 "
            "expected; set ECOM_COUNTRY)"
        ) from e
    df = pd.DataFrame(index=dates)
    df["holiday_name"] = [cal.get(d.date()) or None for d in dates]
    bf = {black_friday(y) for y in years} if country in BLACK_FRIDAY_COUNTRIES else set()
    df["is_black_friday"] = dates.isin(list(bf))
    delta = np.full(len(dates), 999)
    for b in bf:
        d = (dates - b).days.values
        delta = np.where(np.abs(d) < np.abs(delta), d, delta)
    df["days_to_black_friday"] = delta.astype("int64")
    df["black_friday_week"] = (delta >= -3) & (delta <= 3)
    df["is_cyber_monday"] = (delta == 3) if country in CYBER_MONDAY_COUNTRIES else False
    christmas = any(pd.Timestamp(y, 12, 25).date() in cal for y in years)
    df["christmas_runup"] = christmas & (dates.month == 12) & (dates.day >= 10) & (dates.day <= 24)
    df["is_boxing_day"] = (dates.month == 12) & (dates.day == 26) & (country in BOXING_DAY_COUNTRIES)
    df["is_singles_day"] = (dates.month == 11) & (dates.day == 11) & (country in SINGLES_DAY_COUNTRIES)
    return df


def calendar_features(start, end, country="BR", weights: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per day: weekday, month, day of month/year, public holidays and shopping events of the shop's
    ``country`` (an ISO code, or several for a shop selling in several countries), and Fourier terms.

    With several countries each flag is true on a day when countries holding at least half of the customers
    (``weights``: customers per country; equal weights when None) have it, ``holiday_share`` is that share
    and ``holiday_name`` lists ``CC: name`` per country; with one country they are that country's own."""
    countries = [country] if isinstance(country, str) else list(country)
    if not countries:
        raise ValueError("calendar_features needs at least one country (set ECOM_COUNTRY)")
    dates = pd.date_range(pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize(), freq="D")
    w = pd.Series({c: float((weights or {}).get(c, 1.0 if weights is None else 0.0)) for c in countries})
    w = w / w.sum() if w.sum() > 0 else pd.Series(1.0 / len(countries), index=countries)
    per = {c: _country_calendar(dates, c) for c in countries}
    df = pd.DataFrame({"date": dates})
    df["weekday"] = dates.weekday.astype("int64")
    df["is_weekend"] = df["weekday"] >= 5
    df["month"] = dates.month.astype("int64")
    df["day_of_month"] = dates.day.astype("int64")
    df["day_of_year"] = dates.dayofyear.astype("int64")
    share = sum(w[c] * per[c]["holiday_name"].notna().to_numpy() for c in countries)
    if len(countries) == 1:
        df["holiday_name"] = per[countries[0]]["holiday_name"].to_numpy()
    else:
        names = pd.DataFrame({c: per[c]["holiday_name"].to_numpy() for c in countries})
        df["holiday_name"] = [
            "; ".join(f"{c}: {n}" for c, n in row.items() if n) or None for _, row in names.iterrows()
        ]
    df["holiday_share"] = np.asarray(share, dtype=float)
    df["is_holiday"] = df["holiday_share"] >= 0.5
    for col in EVENT_COLUMNS:
        df[col] = sum(w[c] * per[c][col].to_numpy().astype(float) for c in countries) >= 0.5
    main = w.idxmax()
    df["days_to_black_friday"] = per[main]["days_to_black_friday"].to_numpy()
    angle = 2 * np.pi * df["day_of_year"] / 365.25
    df["year_sin"] = np.sin(angle)
    df["year_cos"] = np.cos(angle)
    df["country"] = ",".join(countries)
    return df


COVARIATES = [
    "weekday",
    "is_weekend",
    "is_holiday",
    "black_friday_week",
    "christmas_runup",
    "year_sin",
    "year_cos",
]


def covariate_matrix(cal: pd.DataFrame) -> np.ndarray:
    """Numeric calendar covariates for models: weekday one-hot (7) + flags + yearly Fourier terms."""
    wd = np.eye(7)[cal["weekday"].to_numpy()]
    rest = (
        cal[["is_holiday", "black_friday_week", "christmas_runup", "year_sin", "year_cos"]]
        .astype(float)
        .to_numpy()
    )
    return np.concatenate([wd, rest], axis=1).astype(np.float32)


def top_series(
    daily: pd.DataFrame, *, n_states: int = 5, n_categories: int = 5, metric: str = "orders"
) -> list[str]:
    """The series worth a per-series model: total + the top states and categories by volume."""
    if daily.empty:
        return []
    vol = daily.groupby(["series_id", "level"])[metric].sum().reset_index()
    vol = vol[~vol["series_id"].str.endswith(":" + UNKNOWN)]
    chosen = ["total"] if (vol["series_id"] == "total").any() else []
    for level, n in (("state", n_states), ("category", n_categories)):
        chosen += (
            vol[vol["level"] == level].sort_values(metric, ascending=False)["series_id"].head(n).tolist()
        )
    return chosen


def shop_tail(daily: pd.DataFrame, value: str = "orders"):
    """:class:`~ecom_pipeline.ml.forecasting.backtest.TailCheck` of the shop's total series (the busiest, so
    the most reliable place to see an export stop); every series of the shop shares its last complete day."""
    from ecom_pipeline.ml.forecasting.backtest import incomplete_tail

    total = daily[daily["series_id"] == "total"]
    if total.empty:  # a table without the total row: sum the states (each order has one state)
        total = daily[daily["level"] == "state"].groupby("date", as_index=False)[value].sum()
    total = total.assign(date=pd.to_datetime(total["date"])).sort_values("date")
    return incomplete_tail(total["date"], total[value].to_numpy(dtype=float))


def complete_part(daily: pd.DataFrame, value: str = "orders") -> pd.DataFrame:
    """The daily table without the shop's incomplete tail (see :func:`shop_tail`)."""
    if daily.empty:
        return daily
    last = shop_tail(daily, value).last_complete
    return daily[pd.to_datetime(daily["date"]) <= last]


def panel(daily: pd.DataFrame, series_ids: list[str], value: str = "orders", *, complete_only: bool = True):
    """(dates, Y [series, days], ids) of the long daily table: one row per series in ``series_ids`` order.
    ``complete_only``: cut the shop's incomplete tail first, so every backtest ends at the last complete
    day."""
    if complete_only and len(daily):
        daily = complete_part(daily, value)
    sub = daily[daily["series_id"].isin(series_ids)]
    wide = sub.pivot(index="date", columns="series_id", values=value).sort_index()
    wide = wide[[s for s in series_ids if s in wide.columns]]
    return pd.DatetimeIndex(pd.to_datetime(wide.index)), wide.to_numpy(dtype=float).T, list(wide.columns)


def top_states(daily: pd.DataFrame, n_states: int = 10, metric: str = "orders") -> list[str]:
    """State series by volume (``n_states`` = 0: every state with at least one order; unknown state left
    out)."""
    if daily.empty:
        return []
    st = daily[(daily["level"] == "state") & ~daily["series_id"].str.endswith(":" + UNKNOWN)]
    vol = st.groupby("series_id")[metric].sum().sort_values(ascending=False)
    return vol[vol > 0].index.tolist()[: n_states or None]


def covariates_for(cal: pd.DataFrame, dates, horizon: int) -> np.ndarray:
    """Calendar covariates of ``dates`` plus the ``horizon`` days after them (the forecast days)."""
    cal = cal.assign(date=pd.to_datetime(cal["date"])).sort_values("date").set_index("date")
    dates = pd.DatetimeIndex(dates)
    return covariate_matrix(cal.loc[dates[0] : dates[-1] + pd.Timedelta(days=horizon)].reset_index())
