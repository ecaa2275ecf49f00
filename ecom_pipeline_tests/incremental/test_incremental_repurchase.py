"""Repurchase scores refreshed daily from the weekly served model: a new day moves the profiles' as-of, so
everyone is rescored and the table equals a full recomputation; a late correction alone (as-of unchanged)
rescores only its customer; a new served model rescores in full; a tampered model file is refused."""

from __future__ import annotations

import numpy as np
import pytest

from ecom_pipeline.incremental.profiles import refresh_user_profiles
from ecom_pipeline.incremental.repurchase import (
    TARGET,
    ServedRepurchase,
    load_served,
    refresh_repurchase_scores,
    save_served,
)
from ecom_pipeline.ml.safe_artifacts import ModelIntegrityError
from ecom_pipeline.ml.users.repurchase import RFMBaseline
from ecom_pipeline.warehouse.tables import table_fingerprint
from ecom_pipeline_tests.incremental.test_incremental_refresh import _copy, world  # noqa: F401 (fixture)
from ecom_pipeline_tests.incremental.world import DAY, stage_partition

KEY = b"repurchase-test-key"


def _served(con, trained_at: str) -> ServedRepurchase:
    prof = con.execute("SELECT * FROM serving.user_profiles").fetchdf()
    y = (prof["frequency"].astype(float) > 1).to_numpy().astype(int)
    y[:2] = [0, 1]  # both classes, whatever the sample
    return ServedRepurchase(RFMBaseline().fit(prof, y), "rfm_logistic", "", 30, trained_at)


def test_daily_scores_equal_a_full_recomputation(world, tmp_path):  # noqa: F811
    con = _copy(world, tmp_path)
    refresh_user_profiles(con, n_segments=2)
    folder = tmp_path / "models" / "repurchase_served"
    save_served(folder, _served(con, "t1"), KEY)
    served = load_served(folder, KEY)
    prof = con.execute("SELECT * FROM serving.user_profiles").fetchdf()
    np.testing.assert_allclose(served.model.predict_proba(prof), _served(con, "t1").model.predict_proba(prof))

    first = refresh_repurchase_scores(con, served)
    assert first.plan.full
    stage_partition(con, world[1], DAY, world[2])
    assert not refresh_user_profiles(con, n_segments=2).plan.full
    daily = refresh_repurchase_scores(con, served)
    assert not daily.plan.full and daily.scope.startswith("all customers: the profiles' as-of moved")
    assert daily.counts.changed > 0 and daily.counts.untouched == 0
    after_day = table_fingerprint(con, TARGET)
    assert refresh_repurchase_scores(con, served, mode="full").plan.full
    assert table_fingerprint(con, TARGET) == after_day

    # a late correction of an old order only: the as-of does not move, one customer is rescored
    orders = world[1]["orders"]
    late = orders.iloc[[0]].copy()
    late["status"] = "canceled" if late["status"].iloc[0] != "canceled" else "delivered"
    stage_partition(con, {t: f.iloc[0:0] for t, f in world[1].items()} | {"orders": late}, "p3-fix", world[2])
    assert not refresh_user_profiles(con, n_segments=2).plan.full
    fix = refresh_repurchase_scores(con, served)
    assert fix.scope.endswith("customers with new activity (as-of unchanged)"), fix.scope
    assert 1 <= len(fix.plan.customers) <= 2 and fix.counts.untouched > 0
    after_fix = table_fingerprint(con, TARGET)
    refresh_repurchase_scores(con, served, mode="full")
    assert table_fingerprint(con, TARGET) == after_fix

    # a retrain (new served model) rescores in full
    save_served(folder, _served(con, "t2"), KEY)
    retrained = refresh_repurchase_scores(con, load_served(folder, KEY))
    assert retrained.plan.full and "served model or settings changed" in retrained.plan.reason


def test_a_tampered_served_model_is_refused(world, tmp_path):  # noqa: F811
    con = _copy(world, tmp_path)
    refresh_user_profiles(con, n_segments=2)
    folder = tmp_path / "repurchase_served"
    save_served(folder, _served(con, "t1"), KEY)
    info = folder / "payload" / "served.json"
    info.write_text(info.read_text().replace('"horizon_days": 30', '"horizon_days": 31'))
    with pytest.raises(ModelIntegrityError):
        load_served(folder, KEY)
    assert load_served(tmp_path / "nothing_here", KEY) is None
