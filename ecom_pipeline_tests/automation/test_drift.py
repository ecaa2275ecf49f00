import numpy as np
import pandas as pd

from ecom_pipeline.ml.drift import DriftThresholds, ks, measure_drift, new_category_share, psi


def test_psi_is_small_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 5000)
    assert psi(ref, rng.normal(0, 1, 5000)) < 0.02
    assert psi(ref, rng.normal(1.0, 1, 5000)) > 0.25
    assert np.isnan(psi([], [1.0]))
    # a constant reference does not crash and sees a change of the constant
    assert psi([3.0] * 100, [3.0] * 100) < 0.01 < psi([3.0] * 100, [4.0] * 100)


def test_ks_and_new_categories():
    rng = np.random.default_rng(1)
    same, _ = ks(rng.normal(size=2000), rng.normal(size=2000))
    shifted, p = ks(rng.normal(size=2000), rng.normal(0.8, 1, 2000))
    assert same < 0.06 and shifted > 0.25 and p < 1e-6
    assert new_category_share(["a", "b"], ["a", "c", "c", None]) == 2 / 3
    assert new_category_share(["a"], []) == 0.0


def _frame(rng, n, shift=0.0, cats=("a", "b")):
    return pd.DataFrame({"x": rng.normal(shift, 1, n), "c": rng.choice(list(cats), n)})


def test_measure_drift_reasons_and_no_verdict_on_little_data():
    rng = np.random.default_rng(2)
    ref = _frame(rng, 3000)
    quiet = measure_drift(ref, _frame(rng, 500), numeric=["x"], categorical=["c"])
    assert not quiet.drifted and quiet.summary() == "no drift"
    loud = measure_drift(ref, _frame(rng, 500, shift=1.5, cats=("a", "z")), numeric=["x"], categorical=["c"])
    assert loud.drifted
    assert any(r.startswith("psi(x)") for r in loud.reasons)
    assert any(r.startswith("new_categories(c)") for r in loud.reasons)
    volume = measure_drift(
        ref, _frame(rng, 2000), numeric=["x"], thresholds=DriftThresholds(volume_ratio=0.5)
    )
    assert [r for r in volume.reasons if r.startswith("volume")] and len(volume.reasons) == 1
    tiny = measure_drift(ref, _frame(rng, 50, shift=5), numeric=["x"])
    assert not tiny.enough_data and not tiny.drifted
