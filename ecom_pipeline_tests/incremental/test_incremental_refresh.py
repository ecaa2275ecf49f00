"""Incremental daily refresh of interactions, profiles and recommendations on a small synthetic shop staged
through the partitioned ingest: after one new day (plus a late correction of an older order) only the
customers with new activity are recomputed, and the tables equal a full rebuild on the same staging (or, for
recommendations of customers without activity, the differences are the documented ones)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta

import duckdb
import pandas as pd
import pytest

from ecom_pipeline.cleaning.staging_upsert import upsert_staging_partition
from ecom_pipeline.incremental.changes import built_by_partitions, customers_changed_since, plan_refresh
from ecom_pipeline.incremental.interactions import (
    read_interactions,
    refresh_category_interactions,
    refresh_interactions,
)
from ecom_pipeline.incremental.profiles import (
    PROFILE_COLUMNS,
    profiles_signature,
    read_segment_model,
    refresh_profiles,
    refresh_user_profiles,
)
from ecom_pipeline.incremental.recommendations import LevelChoice, refresh_recommendations
from ecom_pipeline.loading import load_raw_partition
from ecom_pipeline.ml.recsys.interactions import DEFAULT_WEIGHTS
from ecom_pipeline.ml.users.segments import assign_segments, fit_segments
from ecom_pipeline.warehouse.tables import table_fingerprint
from ecom_pipeline_tests.framesource import FrameSource
from ecom_pipeline_tests.incremental.world import DAY, HISTORY, KEY, day_partitions, stage_partition

POPULATION_COLUMNS = [
    "recency_days",
    "tenure_days",
    "as_of",
    "price_band",
    "segment",
    "segment_name",
    "segment_description",
]
SEGMENT_COLUMNS = ["segment", "segment_name", "segment_description"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    history, day, source = day_partitions()
    path = tmp_path_factory.mktemp("incremental") / "history.duckdb"
    con = duckdb.connect(str(path))
    stage_partition(con, history, HISTORY, source)
    con.close()
    return path, day, source


def _copy(world, tmp_path, name: str = "w.duckdb") -> duckdb.DuckDBPyConnection:
    shutil.copy(world[0], tmp_path / name)
    return duckdb.connect(str(tmp_path / name))


def _late_corrected_customer(con, world) -> str:
    late = world[1]["orders"].iloc[-1]["order_id"]  # world.day_partitions appends the correction last
    return con.execute("SELECT customer_id FROM staging.orders WHERE order_id = ?", [late]).fetchall()[0][0]


def test_interactions_and_profiles_after_one_day_equal_a_full_rebuild(world, tmp_path):
    con = _copy(world, tmp_path)
    assert refresh_interactions(con, DEFAULT_WEIGHTS).plan.full
    assert refresh_category_interactions(con)[0].full
    first = refresh_user_profiles(con)
    assert first.plan.full and first.plan.reason.startswith("first run")
    before = con.execute("SELECT * FROM serving.user_profiles").fetchdf().set_index("customer_id")
    stage_partition(con, world[1], DAY, world[2])

    inter = refresh_interactions(con, DEFAULT_WEIGHTS)
    per_category, category_counts, _ = refresh_category_interactions(con)
    res = refresh_user_profiles(con)
    assert not inter.plan.full and not res.plan.full and not per_category.full
    assert set(per_category.customers) == set(inter.plan.customers) and category_counts.untouched > 0
    late = _late_corrected_customer(con, world)
    assert late in inter.plan.customers and late in res.plan.customers
    c = res.counts
    assert c.new > 0 and c.changed > 0 and c.untouched > c.changed  # a day touches few customers
    assert inter.counts.untouched > 3 * (inter.counts.new + inter.counts.changed)
    assert res.rows_read["orders"] < con.execute("SELECT count(*) FROM staging.orders").fetchall()[0][0] / 2
    after = con.execute("SELECT * FROM serving.user_profiles").fetchdf().set_index("customer_id")
    kept = sorted(set(before.index) - set(res.plan.customers))
    stable = [col for col in PROFILE_COLUMNS[1:] if col not in POPULATION_COLUMNS]
    pd.testing.assert_frame_equal(after.loc[kept, stable], before.loc[kept, stable])
    # segments: the daily run assigns with the first run's stored centroids, it does not refit
    assert first.segments.startswith("fitted") and res.segments.startswith("assigned with the stored")
    model = read_segment_model(con, profiles_signature(5, 0))
    assert con.execute("SELECT count(*) FROM incremental.user_segment_model").fetchall()[0][0] == 1
    assert after["segment"].tolist() == assign_segments(after.reset_index(), model)[0]["segment"].tolist()
    daily = {
        t: table_fingerprint(con, t) for t in ("features.interactions", "features.category_interactions")
    }
    daily_profiles = after.drop(columns=SEGMENT_COLUMNS)

    assert refresh_interactions(con, DEFAULT_WEIGHTS, mode="full").plan.full
    assert refresh_category_interactions(con)[0].full  # follows the interactions' full rebuild
    rebuilt = refresh_user_profiles(con, mode="full")
    assert rebuilt.plan.full and rebuilt.segments.startswith("fitted")
    full = {t: table_fingerprint(con, t) for t in daily}
    assert daily == full
    # every profile column but the segment equals the full rebuild; the segments are the documented difference
    full_profiles = con.execute("SELECT * FROM serving.user_profiles").fetchdf().set_index("customer_id")
    pd.testing.assert_frame_equal(daily_profiles.sort_index(), full_profiles.drop(columns=SEGMENT_COLUMNS))


def test_stored_centroids_assign_the_segments_a_fit_gave(world, tmp_path):
    """Assigning the profiles a fit was made on with its stored model gives the fit's segments, names and
    summary: between weekly fits, the only difference is that the centroids are last fit's."""
    con = _copy(world, tmp_path)
    prof, _read, _counts = refresh_profiles(con, plan_refresh(con, "serving.user_profiles", signature="x"))
    fitted, summary, model = fit_segments(prof, 5, 0)
    assert model is not None and len(model["centroids"]) == summary["segment"].nunique() > 1
    assigned, assigned_summary = assign_segments(prof, json.loads(json.dumps(model)))  # as stored
    pd.testing.assert_frame_equal(assigned, fitted)
    pd.testing.assert_frame_equal(assigned_summary, summary)


def _choices(item_model: str) -> list[LevelChoice]:
    params = {"als": {"factors": 8, "iterations": 5}, "item_knn": {"neighbours": 50}}
    return [
        LevelChoice("item", 5, item_model, "test", "v1", params.get(item_model, {})),
        LevelChoice("category", 3, "popularity", "test", "baseline (no training)", {}),
    ]


def _recs(con) -> pd.DataFrame:
    return con.execute("SELECT * FROM serving.recommendations ORDER BY customer_id, level, rank").fetchdf()


@pytest.mark.parametrize("item_model", ["item_knn", "als", "regional_popularity"])
def test_recommendations_read_in_duckdb_equal_serving_the_interactions_frame(world, tmp_path, item_model):
    """refresh_recommendations indexes the interactions in DuckDB per level (no frame of every interaction):
    a full refresh writes exactly the rows serve() gives on the interactions frame, level by level, with
    regions and item names (the incremental runs: the tests below)."""
    from ecom_pipeline.ml.recsys.pipeline import serve

    con = _copy(world, tmp_path)
    refresh_interactions(con, DEFAULT_WEIGHTS)
    inter = read_interactions(con)
    users = pd.unique(inter["customer_id"].astype(str))
    regions = pd.Series(["north", "south"] * (len(users) // 2 + 1), dtype=object)[: len(users)]
    regions.index = users
    names = {p: f"product {p[:6]}" for p in pd.unique(inter["product_id"].astype(str))}
    choices = _choices(item_model)
    refresh_recommendations(con, choices, user_regions=regions, item_names=names, mode="full")
    expected = []
    for c in choices:
        rows, _ = serve(
            inter,
            level=c.level,
            model_name=c.model,
            params=c.params,
            k=c.k,
            user_regions=regions,
            item_names=names if c.level == "item" else {},
            model_version=c.version,
        )
        expected.append(rows)
    oracle = pd.concat(expected, ignore_index=True).sort_values(["customer_id", "level", "rank"])
    written = _recs(con)
    assert len(written) and written["item_name"].str.startswith("product ").any()
    pd.testing.assert_frame_equal(
        written.reset_index(drop=True),
        oracle.reset_index(drop=True).astype(written.dtypes.to_dict()),
        check_exact=False,
        rtol=1e-5,
    )


@pytest.mark.parametrize("item_model", ["item_knn", "als"])
def test_recommendations_rescore_only_customers_with_new_activity(world, tmp_path, item_model):
    con = _copy(world, tmp_path)
    refresh_interactions(con, DEFAULT_WEIGHTS)
    first = refresh_recommendations(con, _choices(item_model), user_regions=None, item_names={})
    assert first.plan.full
    before = _recs(con)
    stage_partition(con, world[1], DAY, world[2])
    # scoring before the features caught up: nothing the interactions do not cover yet is marked done
    early = refresh_recommendations(con, _choices(item_model), user_regions=None, item_names={})
    assert not early.plan.full and early.plan.customers == []
    refresh_interactions(con, DEFAULT_WEIGHTS)
    # refit_growth=0: ALS refits on any growth, as item-kNN always does (its daily fold-in: the test below)
    res = refresh_recommendations(
        con, _choices(item_model), user_regions=None, item_names={}, refit_growth=0.0
    )
    assert not res.plan.full and _late_corrected_customer(con, world) in res.plan.customers
    # the popularity-served category level is rescored for the same customers, not for everyone
    assert res.scope["category"].endswith(
        "customers with new activity; one list scored once, the same for everyone"
    )
    daily = _recs(con)
    recomputed = set(res.plan.customers)
    # customers without new activity keep their lists exactly, at both levels
    kept = ~daily["customer_id"].isin(recomputed)
    pd.testing.assert_frame_equal(
        daily[kept].reset_index(drop=True),
        before[~before["customer_id"].isin(recomputed)].reset_index(drop=True),
    )
    item_daily = daily[daily["level"] == "item"]
    assert res.counts.untouched == int(kept.sum())
    assert res.counts.new + res.counts.changed == len(res.rows)

    full = refresh_recommendations(con, _choices(item_model), user_regions=None, item_names={}, mode="full")
    assert full.plan.full
    rebuilt = _recs(con)
    # the rows an incremental run recomputes are the rows a full rebuild gives them ...
    pd.testing.assert_frame_equal(
        daily[daily["customer_id"].isin(recomputed)].reset_index(drop=True),
        rebuilt[rebuilt["customer_id"].isin(recomputed)].reset_index(drop=True),
    )
    # ... and the only differences are kept lists of customers without activity (a refit moved the model)
    stale = set(daily.loc[kept.reindex(daily.index, fill_value=False)]["customer_id"]) - recomputed
    differing = {
        u
        for u, g in rebuilt[rebuilt["level"] == "item"].groupby("customer_id")
        if u in stale
        and not g.reset_index(drop=True)[["item_id", "rank"]].equals(
            item_daily[item_daily["customer_id"] == u].reset_index(drop=True)[["item_id", "rank"]]
        )
    }
    assert differing <= stale
    # a full rebuild of the interactions (here: other weights) makes the next recommendations run full too
    refresh_interactions(con, {**DEFAULT_WEIGHTS, "view": 2.0})
    after = refresh_recommendations(con, _choices(item_model), user_regions=None, item_names={})
    assert after.plan.full and "interactions_full=" in after.plan.reason


def test_global_counts_everyone_rescores_every_popularity_list_daily(world, tmp_path):
    """With global_counts_everyone a popularity-served level follows today's counts for every customer (what
    a full rebuild gives); the other level still rescores only the customers with new activity."""
    from ecom_pipeline.assets.recommender import _global_counts_everyone

    con = _copy(world, tmp_path)
    refresh_interactions(con, DEFAULT_WEIGHTS)
    refresh_recommendations(con, _choices("item_knn"), user_regions=None, item_names={})
    stage_partition(con, world[1], DAY, world[2])
    refresh_interactions(con, DEFAULT_WEIGHTS)
    res = refresh_recommendations(
        con, _choices("item_knn"), user_regions=None, item_names={}, global_counts_everyone=True
    )
    assert not res.plan.full and res.scope["category"].startswith("all users (popularity scores from global")
    assert res.scope["item"].endswith("customers with new activity")
    daily = _recs(con)
    refresh_recommendations(con, _choices("item_knn"), user_regions=None, item_names={}, mode="full")
    rebuilt = _recs(con)
    category = [f[f["level"] == "category"].reset_index(drop=True) for f in (daily, rebuilt)]
    pd.testing.assert_frame_equal(*category)
    assert _global_counts_everyone("active") is False and _global_counts_everyone("everyone") is True
    with pytest.raises(ValueError, match="global_counts_refresh"):
        _global_counts_everyone("all")


def test_als_daily_run_folds_the_changed_customers_into_the_weekly_fit(world, tmp_path):
    """ALS is refit on a full refresh and stored; a day that grew the interactions by less than
    REFIT_GROWTH solves only the changed customers' vectors against the stored item factors (the ALS user
    step, checked against the normal equations), keeps everyone else's list, and leaves the fit as it was."""
    import numpy as np

    from ecom_pipeline.incremental.recommendations import FITS, read_fit
    from ecom_pipeline.ml.recsys.data import build_data
    from ecom_pipeline.ml.recsys.models import FoldInALS

    con = _copy(world, tmp_path)
    refresh_interactions(con, DEFAULT_WEIGHTS)
    first = refresh_recommendations(con, _choices("als"), user_regions=None, item_names={})
    assert first.plan.full and "factors stored" in first.scope["item"]
    fit = read_fit(con, "item")
    assert fit.factors.shape == (len(fit.item_ids), 8) and fit.interactions == len(read_interactions(con))
    before = _recs(con)
    stage_partition(con, world[1], DAY, world[2])
    refresh_interactions(con, DEFAULT_WEIGHTS)
    inter = read_interactions(con)
    assert len(inter) / fit.interactions - 1 < 0.05  # one day of 60: below REFIT_GROWTH
    res = refresh_recommendations(con, _choices("als"), user_regions=None, item_names={})
    assert not res.plan.full and "fold-in into the fit" in res.scope["item"]
    assert read_fit(con, "item").fitted_at == fit.fitted_at  # not refit
    daily = _recs(con)
    recomputed = set(res.plan.customers)
    item_before, item_daily = (f[f["level"] == "item"] for f in (before, daily))
    pd.testing.assert_frame_equal(
        item_daily[~item_daily["customer_id"].isin(recomputed)].reset_index(drop=True),
        item_before[~item_before["customer_id"].isin(recomputed)].reset_index(drop=True),
    )
    fresh = item_daily[item_daily["customer_id"].isin(recomputed)]
    assert len(fresh) and set(fresh["item_id"]) <= set(fit.item_ids)

    # the folded-in vector is implicit's ALS user solve: (YᵀY + Σ_obs (c−1)·yyᵀ + λI) x = Σ_obs c·y, with
    # confidence c = α·log1p(weight) on the customer's items
    users = sorted(recomputed & set(inter["customer_id"]))[:5]
    data = build_data(inter[inter["customer_id"].isin(users)], catalog=fit.item_ids)
    model = FoldInALS(fit.item_ids, fit.factors, **_choices("als")[0].params).fit(data)
    alpha, lam = model.params["alpha"], model.params["regularization"]
    y = model.item_factors.astype(np.float64)
    x = data.matrix.tocsr().astype(np.float64)
    x.data = np.log1p(x.data)
    for u in range(len(users)):
        row = x[u]
        yo, c = y[row.indices], alpha * row.data
        a = y.T @ y + (yo.T * (c - 1)) @ yo + lam * np.eye(y.shape[1])
        np.testing.assert_allclose(model.user_factors[u], np.linalg.solve(a, yo.T @ c), rtol=1e-3, atol=1e-4)

    # the same day with a growth threshold it exceeds: refit, and the new factors replace the stored ones
    other = _copy(world, tmp_path, "regrown.duckdb")
    refresh_interactions(other, DEFAULT_WEIGHTS)
    refresh_recommendations(other, _choices("als"), user_regions=None, item_names={})
    old_fit = read_fit(other, "item")
    stage_partition(other, world[1], DAY, world[2])
    refresh_interactions(other, DEFAULT_WEIGHTS)
    regrown = refresh_recommendations(
        other, _choices("als"), user_regions=None, item_names={}, refit_growth=0.0
    )
    assert "refit (interactions grew" in regrown.scope["item"]
    new_fit = read_fit(other, "item")
    assert new_fit.fitted_at != old_fit.fitted_at and new_fit.interactions > old_fit.interactions
    assert other.execute(f"SELECT count(DISTINCT fitted_at) FROM {FITS} WHERE level = 'item'").fetchall() == [
        (1,)
    ]


def test_plan_rules_redelivery_weekly_signature_and_unpartitioned_staging(world, tmp_path):
    con = _copy(world, tmp_path)
    sig = "test-signature"

    def refresh(con, seed: int = 0, now=None):  # one segment: no KMeans, the plan is what is tested here
        return refresh_user_profiles(con, n_segments=1, seed=seed, now=now)

    now = datetime.now(UTC)
    refresh(con, now=now)
    stage_partition(con, world[1], DAY, world[2])
    refresh(con, now=now)
    unchanged = table_fingerprint(con, "serving.user_profiles")
    # the same day re-delivered: a new load whose rows are all unchanged, so nobody to recompute
    frames = FrameSource(world[1])
    for t in ("orders", "events"):
        load_raw_partition(con, frames, t, DAY, load_id=f"{DAY}-{t}-again")
        upsert_staging_partition(con, t, DAY, pseudonym_key=KEY, hints=world[2].parse_hints(t))
    again = refresh(con, now=now)
    assert not again.plan.full and again.plan.customers == []
    assert table_fingerprint(con, "serving.user_profiles") == unchanged
    assert refresh(con, now=now + timedelta(days=8)).plan.reason.startswith("weekly full refresh")
    assert "settings changed" in refresh(con, seed=1, now=now).plan.reason
    assert customers_changed_since(con, None)  # everyone, when nothing was scored yet
    plan = plan_refresh(con, "serving.user_profiles", signature=sig)
    assert plan.full and "settings changed" in plan.reason
    with pytest.raises(ValueError, match="refresh mode"):
        plan_refresh(con, "serving.user_profiles", signature=sig, mode="sometimes")
    # a full (unpartitioned) staging build leaves rows without a partition load: nothing dates them
    con.execute(
        "UPDATE staging.orders SET _load_id = 'full-ingest-run' WHERE order_id IN "
        "(SELECT order_id FROM staging.orders LIMIT 1)"
    )
    assert not built_by_partitions(con)
    assert "partitioned ingest" in refresh(con, seed=1, now=now).plan.reason


@pytest.mark.parametrize("model", ["popularity", "recent_popularity"])
def test_one_list_for_everyone_equals_scoring_every_user(world, tmp_path, model):
    """Global popularity at the category level (no per-user exclusion): scoring one user and repeating the
    list gives exactly the rows of scoring every user."""
    from ecom_pipeline.incremental.recommendations import _broadcast
    from ecom_pipeline.ml.recsys.pipeline import serve

    con = _copy(world, tmp_path)
    refresh_interactions(con, DEFAULT_WEIGHTS)
    inter = read_interactions(con)
    common = dict(level="category", model_name=model, params={}, k=3, user_regions=None, item_names={})
    every, _ = serve(inter, model_version="v", **common)
    users = list(pd.unique(inter["customer_id"].astype(str)))
    one, _ = serve(inter, model_version="v", users=users[:1], **common)
    pd.testing.assert_frame_equal(_broadcast(one, users), every)
