"""Decision calibration of the review fine-tune (per-class logit offsets fitted on out-of-fold predictions of
rolling validation windows, folded into the served model) and the fixed-epoch alternative to a time budget."""

import numpy as np
import pandas as pd
import pytest

from ecom_pipeline.ml.splits import temporal_split
from ecom_pipeline.ml.text.finetune import (
    FinetuneSettings,
    _finetune_with_offsets,
    cross_fitted_offsets,
    finetune_classifier,
    predict_proba,
    remove_offsets,
    set_class_offsets,
    tune_class_bias,
)
from ecom_pipeline_tests.text.test_finetune_top_layers import planted

SMALL = dict(trainable_layers=1, batch_size=16, lr=3e-4, head_lr=3e-3)


@pytest.fixture(scope="module")
def encoder(shared_models_dir):
    from ecom_pipeline.ml.encoders import load_text_encoder

    return load_text_encoder("all-minilm-l6-v2", models_dir=shared_models_dir, device="cpu", max_length=24)


def _under_called_neutral(n_per_window: int, windows: int, seed: int = 0):
    """Log-probabilities of a model that is right on classes 0 and 2 but calls true 1s as 0 (1 a close
    second): an offset on class 1 recovers them."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n_per_window * windows)
    p = np.full((len(y), 3), 0.05)
    p[np.arange(len(y)), y] = 0.9
    ones = y == 1
    p[ones] = [0.55, 0.40, 0.05]
    log_probs = np.log(p / p.sum(1, keepdims=True))
    return log_probs, y, np.repeat(np.arange(windows), n_per_window)


def test_pooled_offsets_recover_an_under_called_class_out_of_sample():
    log_probs, y, window = _under_called_neutral(30, 3)
    assert (log_probs.argmax(1) != y).any()
    others = cross_fitted_offsets(log_probs, y, window, lambda k, ws: [w for w in ws if w != k])
    assert (others.argmax(1) == y).all()


def test_cross_fitting_never_fits_a_window_on_itself():
    log_probs, y, window = _under_called_neutral(30, 3, seed=1)
    # window 2's true 1s look like 2s: fitted on itself it would move class 1 up; the others must not see it
    y = y.copy()
    y[(window == 2) & (y == 2)] = 1
    out = cross_fitted_offsets(log_probs, y, window, lambda k, ws: [w for w in ws if w != k])
    for k in range(3):
        src = window != k
        expected = log_probs[window == k] + tune_class_bias(log_probs[src], y[src])
        assert np.allclose(out[window == k], expected)
    only_0 = cross_fitted_offsets(log_probs, y, window, lambda k, ws: [0] if k else [1])
    fitted_on_0 = tune_class_bias(log_probs[window == 0], y[window == 0])
    assert np.allclose(only_0[window == 2], log_probs[window == 2] + fitted_on_0)


def test_offsets_are_folded_into_the_saved_model_and_survive_reloading(encoder, tmp_path):
    from ecom_pipeline.ml.safe_artifacts import load_model_dir, save_model

    texts, y = planted(48, seed=3)
    val_texts, val_y = planted(16, seed=4)
    res = finetune_classifier(
        encoder,
        texts,
        y,
        3,
        val_texts=val_texts,
        val_y=val_y,
        settings=FinetuneSettings(**SMALL, epochs=1, budget_s=600),
    )
    before = predict_proba(res.model, encoder, val_texts)
    old = np.array(res.class_bias)
    new = np.array([0.0, 1.5, -0.75])
    set_class_offsets(res, new)
    assert res.class_bias == new.tolist()
    after = predict_proba(res.model, encoder, val_texts)
    expected = np.log(before) + new - old
    expected = np.exp(expected - np.logaddexp.reduce(expected, axis=1, keepdims=True))
    assert np.allclose(after, expected, atol=1e-4)
    # the validation scores the offsets were chosen on follow the model
    assert np.allclose(np.exp(res.val_log_probs), after, atol=1e-3)
    save_model(res.model, "pytorch", tmp_path / "model")
    back = load_model_dir(tmp_path / "model")
    assert np.allclose(predict_proba(back, encoder, val_texts), after, atol=1e-5)
    assert np.allclose(remove_offsets(np.log(after), new - old), np.log(before), atol=1e-4)


def test_offsets_from_pooled_windows_are_the_served_ones(encoder):
    texts, y = planted(80, seed=21)
    train = pd.DataFrame(
        {"doc": texts, "_y": y, "created_at": pd.date_range("2024-01-01", periods=80, freq="D")}
    )
    inner = temporal_split(train, "created_at", test_fraction=0.2)
    settings = FinetuneSettings(**SMALL, epochs=2, budget_clock="none", offset_folds=2)
    ft, calibration = _finetune_with_offsets(encoder, train, inner.train, inner.test, settings, 0.2, None)
    assert calibration["windows"] == 2 and calibration["n_reviews"] == 32
    assert [f["n_fit"] for f in calibration["folds"]] == [48, 64]  # the kept model trained on 64 (= fit)
    assert calibration["offsets"] == ft.class_bias and ft.class_bias[0] == 0.0
    # the model that is saved and served scores the validation window as measured (offsets included)
    served = predict_proba(ft.model, encoder, inner.test["doc"].tolist())
    assert np.allclose(np.log(served), ft.val_log_probs, atol=1e-3)


def test_fixed_epochs_ignore_time_and_run_every_epoch(encoder):
    texts, y = planted(32, seed=7)
    val_texts, val_y = planted(12, seed=8)
    settings = FinetuneSettings(**SMALL, epochs=3, patience=99, budget_s=0.0, budget_clock="none")
    res = finetune_classifier(encoder, texts, y, 3, val_texts=val_texts, val_y=val_y, settings=settings)
    assert res.epochs_run == 3 and res.stopped == "epochs" and res.budget_clock == "none"
    assert all(h["complete"] for h in res.history)
    with pytest.raises(ValueError, match="budget"):
        finetune_classifier(
            encoder,
            texts,
            y,
            3,
            settings=FinetuneSettings(**SMALL, epochs=1, budget_clock="none", lr_schedule="budget"),
        )
