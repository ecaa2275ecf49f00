"""User profiles, refreshed for the customers whose profile rows can have changed.

A profile is computed "as of" one second after the last order in staging, from rows strictly before it.  After
a new day, a customer's row is recomputed from staging (their own rows only) when

* a staging row of theirs was inserted or changed since the last refresh (:func:`customers_changed_since`), or
* one of their dated facts lies between the previous and the new as-of (an order delivered, a review written,
  an event: a fact the old profile could not count yet and the new one does).

Every other customer's row is kept, except the columns that depend on the as-of or on everyone: recency and
tenure (from per-customer first/last purchase, one DuckDB aggregate over orders), ``as_of`` and the price band
(terciles over all customers).  So every column but the segment equals a full rebuild on the same staging.

Segments: KMeans over every profile is fit only on a full refresh (first run, weekly, settings changed,
``refresh=full``) and stored in ``incremental.user_segment_model`` (scaling, centroids, names); a daily run
assigns every customer to the nearest stored centroid, as KMeans' predict does.  The documented difference
from a full rebuild: between two weekly fits a customer's segment comes from last fit's centroids (a refit on
the same profiles gives the same labels: a test checks it).  The table is still written whole: as-of,
recency and tenure change for every customer every day, so every row changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import pandas as pd

from ecom_pipeline.canonical import NON_PURCHASE_STATUSES
from ecom_pipeline.incremental.changes import FULL_REFRESH_DAYS, RefreshPlan, plan_refresh
from ecom_pipeline.incremental.serving import MergeCounts, write_customer_rows
from ecom_pipeline.ml.users.profiles import PROFILE_COLUMNS, STAGING_COLUMNS, build_profiles, price_bands
from ecom_pipeline.warehouse.tables import fetch_frame_shared_strings, read_table, table_exists

TARGET = "serving.user_profiles"
SEGMENTS = "serving.user_segments"
SEGMENT_MODEL = "incremental.user_segment_model"  # the last full refresh's KMeans fit (one row)
# Per customer-dated staging table: the timestamp columns a profile compares with its as-of.
DATED = {
    "orders": ("SELECT customer_id, {col} AS t FROM staging.orders", ("purchased_at", "delivered_at")),
    "reviews": (
        (
            "SELECT coalesce(r.customer_id, o.customer_id) AS customer_id, r.{col} AS t "
            "FROM staging.reviews r LEFT JOIN staging.orders o USING (order_id)"
        ),
        ("created_at",),
    ),
    "events": ("SELECT customer_id, {col} AS t FROM staging.events", ("ts",)),
}


def profile_as_of(con: duckdb.DuckDBPyConnection) -> pd.Timestamp | None:
    """The as-of a full build uses: one second after the last order (any status) in staging."""
    if not table_exists(con, "staging.orders"):
        return None
    last = con.execute("SELECT max(purchased_at) FROM staging.orders").fetchall()[0][0]
    return None if last is None else pd.Timestamp(last) + pd.Timedelta(seconds=1)


def _scan_keeps_table_order(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether an unfiltered scan returns rows in table order: a single-file warehouse with DuckDB's
    ``preserve_insertion_order`` on (the default).  A DuckLake's scan spans data files: sorted to be sure."""
    from ecom_pipeline.warehouse.lake import is_lake

    setting = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]
    return str(setting).lower() == "true" and not is_lake(con)


def read_profile_inputs(con: duckdb.DuckDBPyConnection, customers: list[str] | None = None) -> dict:
    """The staging tables a profile needs: everything, or only the rows of ``customers`` (products whole).
    Rows come in table order (``rowid``) either way: a filtered scan may return them in another order, and
    per-customer means summed in another order differ in the last bit from a full build's."""
    where = {}
    if customers is not None:
        con.register(
            "_profile_customers", pd.DataFrame({"customer_id": pd.Series(customers, dtype="string")})
        )
        mine = "customer_id IN (SELECT customer_id FROM _profile_customers)"
        their_orders = f"order_id IN (SELECT order_id FROM staging.orders WHERE {mine})"
        where = {
            "orders": mine,
            "customers": mine,
            "events": mine,
            "order_items": their_orders,
            "reviews": f"{mine} OR {their_orders}",
        }
    in_order = _scan_keeps_table_order(con)
    try:
        out = {}
        for t, cols in STAGING_COLUMNS.items():
            if not table_exists(con, f"staging.{t}"):
                out[t] = pd.DataFrame(columns=cols)
                continue
            have = {r[0] for r in con.execute(f"DESCRIBE staging.{t}").fetchall()}
            sel = ", ".join(c if c in have else f"NULL AS {c}" for c in cols)
            cond = f" WHERE {where[t]}" if t in where else ""
            # a whole-table scan keeps table order by itself (DuckDB's preserve_insertion_order, on by
            # default); sorting 11.9M events by rowid held 1.5 GB more at the read's peak (1M orders)
            order = "" if in_order and t not in where else " ORDER BY rowid"
            # equal ids share one string: 11.9M events of 600k customers are 1.8 GB as separate strings
            out[t] = fetch_frame_shared_strings(con, f"SELECT {sel} FROM staging.{t}{cond}{order}")
        return out
    finally:
        if customers is not None:
            con.unregister("_profile_customers")


def customers_crossing(con: duckdb.DuckDBPyConnection, old_as_of, new_as_of) -> list[str]:
    """Customers with an order, delivery, review or event dated between the two as-ofs."""
    if old_as_of is None or new_as_of is None or pd.Timestamp(old_as_of) == pd.Timestamp(new_as_of):
        return []
    lo, hi = sorted([pd.Timestamp(old_as_of).to_pydatetime(), pd.Timestamp(new_as_of).to_pydatetime()])
    parts, params = [], []
    for table, (sql, cols) in DATED.items():
        if not table_exists(con, f"staging.{table}"):
            continue
        have = {r[0] for r in con.execute(f"DESCRIBE staging.{table}").fetchall()}
        for col in cols:
            if col in have:
                parts.append(f"SELECT customer_id FROM ({sql.format(col=col)}) WHERE t >= ? AND t < ?")
                params += [lo, hi]
    if not parts:
        return []
    rows = con.execute(
        f"SELECT DISTINCT customer_id FROM ({' UNION ALL '.join(parts)}) WHERE customer_id IS NOT NULL",
        params,
    ).fetchall()
    return sorted(str(r[0]) for r in rows)


def _refresh_population_columns(
    con: duckdb.DuckDBPyConnection, prof: pd.DataFrame, as_of: pd.Timestamp
) -> pd.DataFrame:
    """Recency, tenure, as-of and price band for every row, computed as :func:`build_profiles` does."""
    marks = ", ".join("?" for _ in NON_PURCHASE_STATUSES)
    span = con.execute(
        "SELECT CAST(customer_id AS VARCHAR) AS customer_id, max(purchased_at) AS last, "
        "min(purchased_at) AS first "
        "FROM staging.orders WHERE purchased_at < ? AND lower(coalesce(CAST(status AS VARCHAR), '')) "
        f"NOT IN ({marks}) GROUP BY 1",
        [as_of.to_pydatetime(), *NON_PURCHASE_STATUSES],
    ).fetchdf()
    span = span.set_index("customer_id").reindex(prof["customer_id"].astype(str))
    last, first = pd.to_datetime(span["last"]).to_numpy(), pd.to_datetime(span["first"]).to_numpy()
    out = prof.copy()
    out["recency_days"] = (as_of - pd.DatetimeIndex(last)).total_seconds().to_numpy() / 86400
    out["tenure_days"] = (as_of - pd.DatetimeIndex(first)).total_seconds().to_numpy() / 86400
    out["as_of"] = as_of
    out["price_band"] = price_bands(out["avg_item_price"]).to_numpy()
    return out


def refresh_profiles(
    con: duckdb.DuckDBPyConnection, plan: RefreshPlan
) -> tuple[pd.DataFrame, list[str], dict]:
    """(every customer's profile without segments, the customers recomputed from staging, staging row counts
    read).  Full plan: :func:`build_profiles` over all of staging."""
    if plan.full or not table_exists(con, TARGET):
        t = read_profile_inputs(con)
        prof = build_profiles(
            t["orders"], t["order_items"], t["products"], t["customers"], t["reviews"], t["events"]
        )
        return prof, prof["customer_id"].astype(str).tolist(), {k: len(v) for k, v in t.items()}
    previous = read_table(con, TARGET, PROFILE_COLUMNS)
    as_of = profile_as_of(con)
    old_as_of = previous["as_of"].iloc[0] if len(previous) else None
    affected = sorted(set(plan.customers) | set(customers_crossing(con, old_as_of, as_of)))
    t = read_profile_inputs(con, affected)
    fresh = build_profiles(
        t["orders"], t["order_items"], t["products"], t["customers"], t["reviews"], t["events"], as_of=as_of
    )
    kept = previous[~previous["customer_id"].astype(str).isin(set(affected))]
    merged = pd.concat([kept, fresh], ignore_index=True) if len(fresh) else kept
    if merged.empty or as_of is None:
        return merged.reset_index(drop=True), affected, {k: len(v) for k, v in t.items()}
    merged = merged.sort_values("customer_id", kind="stable").reset_index(drop=True)
    return _refresh_population_columns(con, merged, as_of), affected, {k: len(v) for k, v in t.items()}


@dataclass
class ProfilesRefresh:
    plan: RefreshPlan
    counts: MergeCounts
    profiles: pd.DataFrame  # with segments, as written
    summary: pd.DataFrame  # one row per segment
    rows_read: dict  # staging rows read per table: the work the refresh did
    segments: str = ""  # fitted, or assigned with the stored fit


def profiles_signature(n_segments: int, seed: int) -> str:
    return f"user_profiles:n_segments={n_segments};seed={seed}"


def read_segment_model(con: duckdb.DuckDBPyConnection, signature: str) -> dict | None:
    """The stored fit of the last full refresh with these settings, or None."""
    if not table_exists(con, SEGMENT_MODEL):
        return None
    row = con.execute(
        "SELECT model FROM incremental.user_segment_model WHERE signature = ? "
        "ORDER BY fitted_at DESC LIMIT 1",
        [signature],
    ).fetchall()
    return json.loads(row[0][0]) if row else None


def refresh_user_profiles(
    con: duckdb.DuckDBPyConnection,
    *,
    n_segments: int = 5,
    seed: int = 0,
    mode: str = "auto",
    full_refresh_days: float = FULL_REFRESH_DAYS,
    now: datetime | None = None,
) -> ProfilesRefresh:
    """Plan, recompute, segment (a full plan fits KMeans over all profiles and stores it; otherwise the stored
    centroids assign everyone) and write serving.user_profiles and serving.user_segments (and a new fit) with
    the refresh state, in one transaction."""
    from ecom_pipeline.ml.users.segments import assign_segments, fit_segments

    signature = profiles_signature(n_segments, seed)
    plan = plan_refresh(
        con, TARGET, signature=signature, mode=mode, full_refresh_days=full_refresh_days, now=now
    )
    prof, recomputed, rows_read = refresh_profiles(con, plan)
    plan.customers = recomputed
    model = None if plan.full else read_segment_model(con, signature)
    also = {}
    if model is None:
        prof, summary, model = fit_segments(prof, n_segments, seed)
        segments = "fitted (KMeans over every profile)"
        if model is not None:
            at = (now or datetime.now(UTC)).replace(tzinfo=None)
            also[SEGMENT_MODEL] = pd.DataFrame(
                {"signature": [signature], "fitted_at": [at], "model": [json.dumps(model)]}
            )
    else:
        prof, summary = assign_segments(prof, model)
        segments = (
            f"assigned with the stored centroids of the fit over {model['fitted_customers']:,} profiles"
        )
    counts = write_customer_rows(
        con, plan, signature, prof, replace_table=True, now=now, also={SEGMENTS: summary, **also}
    )
    return ProfilesRefresh(plan, counts, prof, summary, rows_read, segments)
