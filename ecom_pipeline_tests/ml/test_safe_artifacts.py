"""Every model type the pipeline registers survives the safe format unchanged (same predictions), and the
format refuses what it must (unknown torch classes, untrusted skops types, unknown formats)."""

import json
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch

from ecom_pipeline.ml.safe_artifacts import (
    SKOPS_FILE,
    SPEC_FILE,
    VOCABULARY_FILE,
    ModelIntegrityError,
    load_model_dir,
    save_model,
    sign_directory,
    trusted_skops_type,
    verify_directory,
)


def roundtrip(model, flavor, tmp_path):
    save_model(model, flavor, tmp_path / "m")
    return load_model_dir(tmp_path / "m")


def test_sklearn_models_of_the_pipeline(tmp_path):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    from ecom_pipeline.ml.text.sentiment import embedding_head, tfidf_baseline

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(120, 4)), columns=list("abcd"))
    y = (X["a"] > 0).astype(int)
    for i, m in enumerate(
        [
            CalibratedClassifierCV(HistGradientBoostingClassifier(max_iter=10), cv=3).fit(X, y),
            HistGradientBoostingRegressor(max_iter=10).fit(X, X["b"]),
            embedding_head().fit(X.to_numpy(), y),
        ]
    ):
        data = X if hasattr(m, "feature_names_in_") else X.to_numpy()
        assert np.allclose(roundtrip(m, "sklearn", tmp_path / str(i)).predict(data), m.predict(data))
    docs = ["good product great", "bad awful", "great good", "awful bad terrible", "fine good", "bad bad"] * 5
    tfidf = tfidf_baseline().fit(docs, [1, 0, 1, 0, 1, 0] * 5)
    back = roundtrip(tfidf, "sklearn", tmp_path / "tfidf")
    assert np.allclose(back.predict_proba(docs), tfidf.predict_proba(docs))
    assert tfidf[0].vocabulary_ == back[0].vocabulary_  # the caller's model keeps its vocabulary
    assert json.loads((tmp_path / "tfidf" / "m" / VOCABULARY_FILE).read_text())["tfidfvectorizer"]


def test_torch_models_of_the_pipeline(tmp_path):
    from transformers import BertConfig, BertModel

    from ecom_pipeline.ml.forecasting.lstm import GlobalLSTM, LSTMConfig
    from ecom_pipeline.ml.forecasting.stgcn import GraphConfig, SpatioTemporalNet
    from ecom_pipeline.ml.recsys.export import factor_module
    from ecom_pipeline.ml.spatial.gcn import GCNEncoder
    from ecom_pipeline.ml.text.sentiment import FinetunedClassifier

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x, ci, co, sid = torch.randn(2, 10), torch.randn(2, 10, 3), torch.randn(2, 4, 3), torch.tensor([0, 3])
    a = np.eye(4, dtype=np.float32) + 0.1
    lstm = GlobalLSTM(5, 3, 8, 2, 4, 0).eval()
    stgcn = SpatioTemporalNet(
        a, 3, LSTMConfig(horizon=4, hidden=8), GraphConfig(gcn_dim=3, gcn_layers=3)
    ).eval()
    gcn, linear = GCNEncoder(6, 5, 3), torch.nn.Linear(4, 3)
    factors = factor_module(
        ["u1", "u2"], ["i1", "i2", "i3"], rng.normal(size=(2, 3)), rng.normal(size=(3, 3)), {"u1": [0]}
    )
    bert = BertModel(
        BertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
    )
    finetuned = FinetunedClassifier(bert, 16, 3).eval()
    ids, mask = torch.randint(0, 50, (2, 5)), torch.ones(2, 5, dtype=torch.long)
    x4, x6, xs = torch.randn(2, 4), torch.randn(4, 6), torch.randn(2, 4, 10)
    cases = [
        (lstm, (x, ci, co, sid)),
        (stgcn, (xs, ci, co)),
        (gcn, (x6, torch.tensor(a))),
        (linear, (x4,)),
        (factors, (torch.tensor([1]),)),
        (finetuned, (ids, mask)),
    ]
    with torch.no_grad():
        for i, (module, args) in enumerate(cases):
            back = roundtrip(module, "pytorch", tmp_path / str(i))
            assert type(back) is type(module) and torch.allclose(back(*args), module(*args)), type(module)
    back = roundtrip(factors, "pytorch", tmp_path / "f")
    assert back.recommend("u1", 2) == factors.recommend("u1", 2) and back.seen == factors.seen == {"u1": [0]}


def test_sarimax_is_rebuilt_from_parameters(tmp_path):
    from ecom_pipeline.ml.forecasting.models import _sarimax

    y = 10 + np.sin(np.arange(100) * 2 * np.pi / 7) + np.random.default_rng(0).normal(size=100) * 0.1
    for i, (order, seasonal) in enumerate([((1, 0, 1), (1, 0, 0, 7)), ((1, 1, 1), (0, 1, 1, 7))]):
        res = _sarimax(y, order, seasonal)
        back = roundtrip(res, "statsmodels", tmp_path / str(i))
        assert np.allclose(back.forecast(14), res.forecast(14))
        assert np.allclose(back.get_forecast(7).conf_int(), res.get_forecast(7).conf_int())
    assert (tmp_path / "0" / "m" / "params.json").exists()


def test_refusals(tmp_path):
    class Custom(torch.nn.Module):
        pass

    with pytest.raises(TypeError, match="no safe format for torch module"):
        save_model(Custom(), "pytorch", tmp_path / "c")
    with pytest.raises(ValueError, match="no safe format"):
        save_model(object(), "pyfunc", tmp_path / "p")
    assert trusted_skops_type("sklearn.linear_model._logistic.LogisticRegression")
    for name in (
        "builtins.eval",
        "os.system",
        "sklearn.utils.deprecated.__call__",
        "sklearn.datasets.fetch_openml",
        "numpy.memmap",
    ):
        assert not trusted_skops_type(name), name

    from sklearn.preprocessing import FunctionTransformer

    save_model(FunctionTransformer(func=subprocess.getoutput), "sklearn", tmp_path / "f")
    with pytest.raises(ModelIntegrityError, match="types outside the trusted list.*subprocess.getoutput"):
        load_model_dir(tmp_path / "f")  # a function inside an estimator: refused before it is built

    spec = tmp_path / "f" / SPEC_FILE
    spec.write_text(json.dumps({**json.loads(spec.read_text()), "format": "pickle"}))
    with pytest.raises(ModelIntegrityError, match="unknown artifact format 'pickle'"):
        load_model_dir(tmp_path / "f")


def test_signature_covers_every_file(tmp_path):
    from sklearn.linear_model import LogisticRegression

    save_model(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), "sklearn", tmp_path / "m")
    key = b"k" * 32
    signature = sign_directory(tmp_path / "m", key)
    verify_directory(tmp_path / "m", signature, key, "model t version 1")  # unchanged: passes
    (tmp_path / "m" / "extra.py").write_text("print('hi')")
    with pytest.raises(ModelIntegrityError, match=r"model t version 1: .*unsigned: \['extra.py'\]"):
        verify_directory(tmp_path / "m", signature, key, "model t version 1")
    (tmp_path / "m" / "extra.py").unlink()
    (tmp_path / "m" / SKOPS_FILE).unlink()
    with pytest.raises(ModelIntegrityError, match=r"missing: \['model.skops'\]"):
        verify_directory(tmp_path / "m", signature, key, "model t version 1")
