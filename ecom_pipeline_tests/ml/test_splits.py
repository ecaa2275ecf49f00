import pandas as pd
import pytest

from ecom_pipeline.ml.splits import temporal_split


def _frame(n=100):
    return pd.DataFrame({"t": pd.date_range("2024-01-01", periods=n, freq="D"), "y": range(n)})


def test_no_training_row_is_at_or_after_the_cutoff():
    s = temporal_split(_frame(), "t", test_fraction=0.2)
    assert s.train["t"].max() < s.cutoff <= s.test["t"].min()
    assert len(s.train) + len(s.test) == 100 and len(s.test) == 20


def test_explicit_cutoff_and_refusals():
    s = temporal_split(_frame(), "t", cutoff="2024-03-01")
    assert len(s.train) == 60
    with pytest.raises(ValueError, match="no t"):
        temporal_split(_frame().assign(t=[None] + list(_frame()["t"][1:])), "t")
    with pytest.raises(KeyError):
        temporal_split(_frame(), "missing")
