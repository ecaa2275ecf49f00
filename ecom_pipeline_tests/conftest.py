import os
import sys
from pathlib import Path

import pytest

# Never touch the user's data/ or a real MLflow server from tests, and never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# registered models are signed (ml/safe_artifacts.py): a fixed test key, no key file under the repo's data/
os.environ.setdefault("ECOM_MODEL_SIGNING_KEY", "test-model-signing-key-not-secret-0123456789")


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated data root: warehouse, MLflow store and key file all under tmp_path."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("ECOM_DATA_ROOT", str(root))
    for var in (
        "ECOM_WAREHOUSE",
        "MLFLOW_TRACKING_URI",
        "ECOM_PSEUDONYM_KEY",
        "ECOM_DATA_SOURCE",
        "ECOM_DATA_DIR",
        "ECOM_MAPPING",
        "ECOM_ENV",
        "ECOM_COUNTRY",
        "ECOM_SYNTHETIC_COUNTRY",
    ):
        monkeypatch.delenv(var, raising=False)
    return root


MLFLOW_URI_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True)
def _mlflow_uris_do_not_leak():
    """MLflow keeps its tracking/registry URI in process globals (and mirrors them into the environment): a
    test that points it at its own store must not leave later tests registering models there."""
    before = {v: os.environ.get(v) for v in MLFLOW_URI_VARS}
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is None or {v: os.environ.get(v) for v in MLFLOW_URI_VARS} == before:
        return
    mlflow.set_tracking_uri(before["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(before["MLFLOW_REGISTRY_URI"])
    for var, value in before.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value
