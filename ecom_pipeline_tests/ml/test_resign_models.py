"""The one-off migration: champions logged by the old code in MLflow pickle flavours are re-logged in the
safe format and signed, without running code from the old files (a planted pickle is refused, not run)."""

import os
import pickle
import shlex
import warnings

import numpy as np
import pytest
import torch
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression

from ecom_pipeline.ml.forecasting.lstm import GlobalLSTM
from ecom_pipeline.ml.forecasting.models import _sarimax
from ecom_pipeline.ml.registry import CHAMPION, Candidate, load_serving_model, log_and_register
from ecom_pipeline.ml.safe_artifacts import SIGNATURE_TAG
from ecom_pipeline.resign_models import RESIGNED_FROM_TAG, main, resign_models
from ecom_pipeline.resources.tracking import MLflowResource
from ecom_pipeline_tests.ml.test_registry import model_file


@pytest.fixture
def tracking(tmp_path):
    return MLflowResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="resign")


def legacy_register(name: str, flavor: str, model, metric_value: float, **log_kwargs) -> str:
    """What the old ``log_and_register`` did: an MLflow pickle flavour, score tags, no signature; champion."""
    import mlflow

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # pip_requirements given: MLflow would otherwise re-load the model in a subprocess to infer them
        info = getattr(mlflow, flavor).log_model(model, name="model", pip_requirements=[], **log_kwargs)
    tags = {"metric": "m", "metric_value": repr(metric_value), "higher_is_better": "True", "promoted": "True"}
    version = str(mlflow.register_model(info.model_uri, name, tags=tags).version)
    mlflow.MlflowClient().set_registered_model_alias(name, CHAMPION, version)
    return version


class _ShellPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def test_legacy_champions_are_relogged_signed_and_serve_the_same_predictions(tracking, tmp_path):
    import mlflow

    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    clf = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    reg = HistGradientBoostingRegressor(max_iter=10).fit(X, X[:, 1])
    lstm = GlobalLSTM(n_series=3, cov_dim=2, hidden=8, embed_dim=2, horizon=4).eval()
    sarima = _sarimax(10 + np.sin(np.arange(70) * 2 * np.pi / 7), (1, 0, 0), (1, 0, 0, 7))
    marker = tmp_path / "pwned"
    with tracking.start_run("old code"):
        legacy_register("t.clf", "sklearn", clf, 0.8, serialization_format="cloudpickle")
        legacy_register("t.reg", "sklearn", reg, 0.5, serialization_format="cloudpickle")
        legacy_register("t.lstm", "pytorch", lstm, 0.7, serialization_format="pickle")
        legacy_register("t.sarima", "statsmodels", sarima, 0.9)
        legacy_register("t.bomb", "sklearn", clf, 0.1, serialization_format="cloudpickle")
    # a legacy champion whose pickle an attacker replaced: must be refused, never run
    (model_file("t.bomb", "1").parent / "model.pkl").write_bytes(pickle.dumps(_ShellPayload(marker)))
    with tracking.start_run("new code"):
        log_and_register(Candidate("t.signed", "sklearn", clf, X[:2], "m", 0.9), key=_key())

    assert main(["--dry-run"]) == 1  # the bomb is refused even in a dry run; nothing registered
    assert not marker.exists()
    outcomes = {o.name: o for o in resign_models()}
    assert not marker.exists()
    assert {n: o.action for n, o in outcomes.items()} == {
        "t.bomb": "refused",
        "t.clf": "resigned",
        "t.lstm": "resigned",
        "t.reg": "resigned",
        "t.sarima": "resigned",
        "t.signed": "already_signed",
    }
    assert "refusing to load posix.system" in outcomes["t.bomb"].detail

    client = mlflow.MlflowClient()
    for name in ("t.clf", "t.reg", "t.lstm", "t.sarima"):
        new = client.get_model_version_by_alias(name, CHAMPION)
        assert str(new.version) == outcomes[name].new_version == "2"
        assert new.tags[RESIGNED_FROM_TAG] == "1" and SIGNATURE_TAG in new.tags
        assert new.tags["metric_value"] == client.get_model_version(name, "1").tags["metric_value"]
    assert (load_serving_model("t.clf", key=_key()).model.predict(X) == clf.predict(X)).all()
    assert np.allclose(load_serving_model("t.reg", key=_key()).model.predict(X), reg.predict(X))
    assert np.allclose(load_serving_model("t.sarima", key=_key()).model.forecast(7), sarima.forecast(7))
    x, ci, co, sid = torch.randn(2, 10), torch.randn(2, 10, 2), torch.randn(2, 4, 2), torch.tensor([0, 2])
    with torch.no_grad():
        served = load_serving_model("t.lstm", key=_key()).model
        assert torch.allclose(served(x, ci, co, sid), lstm(x, ci, co, sid))
    assert {o.action for o in resign_models(["t.clf", "t.lstm"])} == {"already_signed"}  # idempotent


def _key() -> bytes:
    """The model signing key of the current settings, read at call time (some tests change it)."""
    from ecom_pipeline.config import Settings
    from ecom_pipeline.ml.safe_artifacts import signing_key

    return signing_key(Settings.from_env())
