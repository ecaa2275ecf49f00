"""Choosing fine-tune settings on several validation windows of training time (never the test set)."""

import numpy as np
import pandas as pd
import pytest

from ecom_pipeline.ml.splits import rolling_origin_splits, temporal_split
from ecom_pipeline_tests.text.test_finetune_top_layers import planted


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"created_at": pd.date_range("2024-01-01", periods=n, freq="D"), "v": np.arange(n)})


def test_rolling_windows_are_consecutive_and_each_trains_before_its_window():
    df = _frame(100).sample(frac=1.0, random_state=0)  # row order must not matter, only time
    folds = rolling_origin_splits(df, "created_at", n_folds=3, window_fraction=0.15)
    assert [len(f.test) for f in folds] == [15, 15, 15]
    windows = [set(f.test["v"]) for f in folds]
    assert windows == [set(range(55, 70)), set(range(70, 85)), set(range(85, 100))]
    for f in folds:
        assert f.train["created_at"].max() < f.test["created_at"].min() == f.cutoff
        assert set(f.train["v"]) == set(range(int(f.test["v"].min())))  # everything before its window
    last = temporal_split(df, "created_at", test_fraction=0.15)  # the last window is the one-window split
    assert set(last.test["v"]) == windows[-1]
    with pytest.raises(ValueError, match="n_folds"):
        rolling_origin_splits(df, "created_at", n_folds=7, window_fraction=0.15)


def test_validate_on_folds_pools_every_window(shared_models_dir):
    from ecom_pipeline.ml.encoders import load_text_encoder
    from ecom_pipeline.ml.text.finetune import FinetuneSettings, validate_on_folds

    enc = load_text_encoder("all-minilm-l6-v2", models_dir=shared_models_dir, device="cpu", max_length=24)
    texts, y = planted(80, seed=21)
    labelled = pd.DataFrame(
        {"doc": texts, "_y": y, "created_at": pd.date_range("2024-01-01", periods=80, freq="D")}
    )
    settings = FinetuneSettings(
        trainable_layers=1, epochs=2, batch_size=16, lr=3e-4, head_lr=3e-3, budget_s=120, patience=2
    )
    cache: dict = {}
    res = validate_on_folds(
        enc, labelled, 3, settings=settings, n_folds=2, window_fraction=0.2, state_cache=cache
    )
    assert [f["n_val"] for f in res.folds] == [16, 16] and [f["n_fit"] for f in res.folds] == [48, 64]
    assert len(res.y) == 32 and res.log_probs.shape == (32, 3)
    assert (res.y == y[48:]).all()  # the windows, oldest first, are the last 32 days
    assert 0 <= res.pooled_macro_f1 <= 1 and all(f["cpu_seconds"] > 0 for f in res.folds)
    # one cache of per-text states serves both folds: the second fold only adds its window's new texts
    (states,) = cache.values()
    assert len(states) == len(set(texts))
