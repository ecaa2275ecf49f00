"""An attacker who can write the MLflow artifact store (not the registry) replaces a champion's files.

Nothing in a planted file may execute (a malicious pickle that would create a marker file never runs), the
load fails with a message naming the model and version, and the former champion keeps serving (through the
real serving asset ``features/review_sentiment`` and through ``load_serving_model``).  Also: the signing key
rules (local file, prod refuses), and keyed signatures that tell a wrong key from a changed file.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import duckdb
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from ecom_pipeline.ml.registry import (
    LOAD_ERROR_TAG,
    Candidate,
    load_serving_model,
    load_version,
    log_and_register,
)
from ecom_pipeline.ml.safe_artifacts import (
    KEY_ENV_VAR,
    KEY_FILE_NAME,
    SIGNATURE_TAG,
    SPEC_FILE,
    WEIGHTS_FILE,
    ModelIntegrityError,
    SigningKeyError,
    resolve_signing_key,
)
from ecom_pipeline.resources.tracking import MLflowResource


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    return MLflowResource(
        tracking_uri=f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}", experiment="artifacts"
    )


def artifact_dir(name: str, version: str) -> Path:
    """The files of a registered version in the local artifact store (what an attacker would overwrite)."""
    import mlflow

    client = mlflow.MlflowClient()
    source = client.get_model_version(name, version).source  # models:/m-<logged model id>
    return Path(urlparse(client.get_logged_model(source.removeprefix("models:/")).artifact_location).path)


class _ShellPayload:
    """Unpickling this runs a shell command that creates ``marker`` (as the attack in issue #20 did)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def malicious_pickle(marker: Path) -> bytes:
    import pickle

    return pickle.dumps(_ShellPayload(marker))


def test_the_planted_pickle_is_live(tmp_path):
    """Control: the payload really does create its file when unpickled (in a throw-away process)."""
    marker, bomb = tmp_path / "pwned", tmp_path / "bomb.pkl"
    bomb.write_bytes(malicious_pickle(marker))
    subprocess.run(
        [sys.executable, "-c", "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))", str(bomb)],
        check=True,
        timeout=60,
    )
    assert marker.exists()


def _two_champions(tracking, name, flavor, v1_model, v2_model, example=None):
    with tracking.start_run("v1"):
        v1 = log_and_register(Candidate(name, flavor, v1_model, example, "auc", 0.7), key=_key())
    with tracking.start_run("v2"):
        v2 = log_and_register(Candidate(name, flavor, v2_model, example, "auc", 0.9), key=_key())
    assert v1.promoted and v2.promoted
    return v1.version, v2.version


def _sklearn_pair(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(60, 3))
    y = (X[:, 0] > 0).astype(int)
    return LogisticRegression().fit(X, y), LogisticRegression(C=0.01).fit(X, 1 - y), X


@pytest.mark.parametrize("layout", ["same_file_name", "mlflow_pickle_flavour"])
def test_malicious_pickle_in_place_of_the_champion_never_runs(tracking, tmp_path, layout):
    import mlflow

    name = f"t.pickle_{layout}"
    good, newer, X = _sklearn_pair()
    v1, v2 = _two_champions(tracking, name, "sklearn", good, newer, X[:2])
    marker, target = tmp_path / "pwned", artifact_dir(name, v2)
    if layout == "same_file_name":  # the pickle under the name the loader reads
        (target / "model.skops").write_bytes(malicious_pickle(marker))
    else:  # the whole artifact swapped for an MLflow sklearn pickle flavour (what the old loader read)
        shutil.rmtree(target)
        target.mkdir()
        (target / "MLmodel").write_text(
            "flavors:\n  sklearn:\n    pickled_model: model.pkl\n    serialization_format: cloudpickle\n"
        )
        (target / "model.pkl").write_bytes(malicious_pickle(marker))

    served = load_serving_model(name, "sklearn", key=_key())
    assert not marker.exists()  # nothing in the planted file executed
    assert (served.version, served.champion_version) == (v1, v2)
    assert f"model {name} version {v2}" in served.fallback_reason
    assert (
        "signature mismatch" in served.fallback_reason
        or "differ from the signed ones" in served.fallback_reason
    )
    assert (served.model.predict(X) == good.predict(X)).all()
    assert (
        f"model {name} version {v2}" in mlflow.MlflowClient().get_model_version(name, v2).tags[LOAD_ERROR_TAG]
    )
    with pytest.raises(ModelIntegrityError, match=rf"model {name} version {v2}"):
        load_version(name, v2, key=_key())
    assert not marker.exists()


def test_tampered_safe_format_weights_are_refused_and_the_former_champion_serves(tracking):
    """A valid safetensors file with other weights (a poisoned model parses fine): the signature catches
    it."""
    import torch
    from safetensors.torch import load_file, save_file

    from ecom_pipeline.ml.spatial.gcn import GCNEncoder

    torch.manual_seed(0)
    first, second = GCNEncoder(4, 6, 2), GCNEncoder(4, 6, 2)
    name = "t.gcn_tampered"
    v1, v2 = _two_champions(tracking, name, "pytorch", first, second)
    weights = artifact_dir(name, v2) / WEIGHTS_FILE
    state = load_file(str(weights))
    state["g1.linear.weight"] = state["g1.linear.weight"] * 10
    save_file(state, str(weights))

    served = load_serving_model(name, "pytorch", key=_key())
    assert (served.version, served.champion_version) == (v1, v2)
    assert (
        f"model {name} version {v2}" in served.fallback_reason
        and "signature mismatch" in served.fallback_reason
    )
    x, a = torch.randn(5, 4), torch.eye(5)
    with torch.no_grad():
        assert torch.allclose(served.model(x, a), first(x, a))

    spec = artifact_dir(name, v1) / SPEC_FILE  # the former champion's spec changed too: nothing serves
    spec.write_text(spec.read_text().replace("GCNEncoder", "GCNEncoderX"))
    with pytest.raises(LookupError, match=rf"v{v2}: .*signature mismatch.*v{v1}: .*signature mismatch"):
        load_serving_model(name, "pytorch", key=_key())


def test_unsigned_or_wrongly_keyed_versions_are_refused(tracking, monkeypatch):
    import mlflow

    good, _, X = _sklearn_pair(1)
    name = "t.keys"
    with tracking.start_run("signed"):
        v1 = log_and_register(Candidate(name, "sklearn", good, X[:2], "auc", 0.7), key=_key()).version
    client = mlflow.MlflowClient()
    assert set(json.loads(client.get_model_version(name, v1).tags[SIGNATURE_TAG])["files"]) == {
        SPEC_FILE,
        "model.skops",
    }
    monkeypatch.setenv(KEY_ENV_VAR, "another-signing-key-also-long-enough-0123")
    with pytest.raises(ModelIntegrityError, match=rf"model {name} version {v1} was signed with another key"):
        load_version(name, v1, key=_key())
    monkeypatch.undo()
    client.delete_model_version_tag(name, v1, SIGNATURE_TAG)  # e.g. registered before signing existed
    with pytest.raises(ModelIntegrityError, match=rf"model {name} version {v1} is not signed.*resign_models"):
        load_version(name, v1, key=_key())


def test_the_serving_asset_refuses_a_planted_pickle_and_serves_the_former_champion(tracking, tmp_path):
    """features/review_sentiment (the step that ran the attacker's command in issue #20), end to end."""
    import mlflow

    from ecom_pipeline.assets import reviews
    from ecom_pipeline.resources import PathsResource, WarehouseResource
    from ecom_pipeline_tests.reliability.review_serving import review_serving_warehouse

    rng = np.random.default_rng(0)
    n, dim = 40, 8
    warehouse = tmp_path / "serving.duckdb"
    emb = review_serving_warehouse(warehouse, rng, n, dim)

    y = rng.integers(0, 3, n)
    good = LogisticRegression(max_iter=200).fit(emb, y)
    name = reviews.MODEL_NAME.format(setting="3class")
    v1, v2 = _two_champions(
        tracking,
        name,
        "sklearn",
        good,
        LogisticRegression(max_iter=200, C=0.01).fit(emb, (y + 1) % 3),
        emb[:2],
    )
    marker = tmp_path / "pwned"
    (artifact_dir(name, v2) / "model.skops").write_bytes(malicious_pickle(marker))

    result = dg.materialize(
        [reviews.review_sentiment],
        resources={
            "warehouse": WarehouseResource(path=str(warehouse)),
            "mlflow": tracking,
            "paths": PathsResource(data_root=str(tmp_path)),  # review_sentiment requires it
        },
    )
    assert result.success and not marker.exists()
    message = result.get_asset_materialization_events()[0].materialization.metadata["message"].value
    assert f"model {name} version {v2}" in message and f"serving former champion v{v1}" in message
    con = duckdb.connect(str(warehouse), read_only=True)
    served = con.execute(f"SELECT DISTINCT model_version FROM {reviews.SENTIMENT_TABLE}").fetchall()
    p_positive = con.execute(f"SELECT p_positive FROM {reviews.SENTIMENT_TABLE} ORDER BY review_id").fetchdf()
    con.close()
    assert served == [(f"v{v1} on test-enc",)]
    assert np.allclose(p_positive["p_positive"].to_numpy(), good.predict_proba(emb)[:, 2])
    assert str(mlflow.MlflowClient().get_model_version_by_alias(name, "champion").version) == v2


# ------------------------------------------------------------------------------------------ the key


def test_local_mode_generates_a_key_file_once_and_other_modes_refuse(data_root, monkeypatch):
    from ecom_pipeline.config import Settings

    monkeypatch.delenv(KEY_ENV_VAR)
    key, warning = resolve_signing_key(Settings.from_env())
    path = data_root / KEY_FILE_NAME
    assert KEY_ENV_VAR in warning and str(path) in warning
    assert path.stat().st_mode & 0o777 == 0o600 and len(key) == 64
    assert resolve_signing_key(Settings.from_env())[0] == key  # reused, not regenerated
    for env in ("docker", "prod"):
        monkeypatch.setenv("ECOM_ENV", env)
        with pytest.raises(SigningKeyError, match=f"{KEY_ENV_VAR} is not set"):
            resolve_signing_key(Settings.from_env())
    monkeypatch.setenv(KEY_ENV_VAR, "x" * 40)
    assert resolve_signing_key(Settings.from_env()) == (b"x" * 40, "")


def test_prod_refuses_to_start_without_the_signing_key(data_root, monkeypatch):
    from ecom_pipeline.config import Settings
    from ecom_pipeline.resources import build_resources

    monkeypatch.setenv("ECOM_ENV", "prod")
    monkeypatch.setenv("ECOM_WAREHOUSE", str(data_root / "w.duckdb"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{data_root / 'm.db'}")
    monkeypatch.setenv("ECOM_PSEUDONYM_KEY", "p" * 40)
    monkeypatch.delenv(KEY_ENV_VAR)
    with pytest.raises(ValueError, match=KEY_ENV_VAR):
        build_resources(Settings.from_env())
    monkeypatch.setenv(KEY_ENV_VAR, "k" * 40)
    assert "mlflow" in build_resources(Settings.from_env())
    assert "k" * 40 not in repr(Settings.from_env())  # the key stays out of logs that print settings


def _key() -> bytes:
    """The model signing key of the current settings, read at call time (some tests change it)."""
    from ecom_pipeline.config import Settings
    from ecom_pipeline.ml.safe_artifacts import signing_key

    return signing_key(Settings.from_env())
