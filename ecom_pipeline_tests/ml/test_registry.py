import re
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from ecom_pipeline.ml.registry import (
    LOAD_ERROR_TAG,
    Candidate,
    load_champion,
    load_serving_model,
    log_and_register,
)
from ecom_pipeline.resources.tracking import MLflowResource, MlflowUnavailableError


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """One MLflow store for the module (a fresh one costs seconds); every test uses its own model names."""
    return MLflowResource(
        tracking_uri=f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}", experiment="reg"
    )


def _model(seed):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(40, 2)), columns=["a", "b"])
    y = (X["a"] > 0).astype(int)
    return LogisticRegression().fit(X, y), X.head(3)


def test_first_version_becomes_champion_and_worse_one_does_not(tracking):
    m, x = _model(0)
    with tracking.start_run("v1"):
        first = log_and_register(Candidate("t.clf", "sklearn", m, x, "auc", 0.80), key=_key())
    assert first.promoted and first.version == "1"
    with tracking.start_run("v2"):
        worse = log_and_register(Candidate("t.clf", "sklearn", m, x, "auc", 0.79), key=_key())
    assert not worse.promoted and worse.champion_version == "1"
    with tracking.start_run("v3"):
        marginal = log_and_register(
            Candidate("t.clf", "sklearn", m, x, "auc", 0.805), margin=0.01, key=_key()
        )
    assert not marginal.promoted
    with tracking.start_run("v4"):
        better = log_and_register(Candidate("t.clf", "sklearn", m, x, "auc", 0.9), margin=0.01, key=_key())
    assert better.promoted and better.version == "4"
    loaded = load_champion("t.clf", "sklearn", key=_key())
    assert (loaded.predict(x) == m.predict(x)).all()


def test_lower_is_better_and_rescoring_the_champion(tracking):
    m, x = _model(1)
    with tracking.start_run("a"):
        log_and_register(Candidate("t.fc", "sklearn", m, x, "mase", 1.0, higher_is_better=False), key=_key())
    with tracking.start_run("b"):
        # the champion re-scored on today's holdout is worse (1.5) than the candidate (1.2): promote
        out = log_and_register(
            Candidate("t.fc", "sklearn", m, x, "mase", 1.2, higher_is_better=False),
            score_champion=lambda uri: 1.5,
            key=_key(),
        )
    assert out.promoted and "re-scored" in out.reason


def test_missing_champion_is_a_clear_error(tracking):
    tracking.client()
    with pytest.raises(LookupError, match="no usable champion"):
        load_champion("does.not.exist", "sklearn", key=_key())


# ------------------------------------------------------------------------------------------------ faults


def model_file(name: str, version: str) -> Path:
    """The serialised model of a registered version on disk (local artifact store)."""
    import mlflow

    client = mlflow.MlflowClient()
    source = client.get_model_version(name, version).source  # models:/m-<logged model id>
    location = client.get_logged_model(source.removeprefix("models:/")).artifact_location
    return Path(urlparse(location).path) / "model.skops"


def corrupt(path: Path) -> None:
    """Truncate a file to half its size, as a disk-full write or a bad copy would."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_corrupt_champion_falls_back_to_former_champion_and_is_tagged(tracking):
    import mlflow

    m1, x = _model(2)
    m2 = LogisticRegression(C=0.01).fit(x.assign(a=-x["a"]), [0, 1, 0])  # predicts differently from m1
    with tracking.start_run("v1"):
        log_and_register(Candidate("t.corrupt", "sklearn", m1, x, "auc", 0.7), key=_key())
    with tracking.start_run("v2"):
        log_and_register(Candidate("t.corrupt", "sklearn", m2, x, "auc", 0.9), key=_key())
    with tracking.start_run("v3"):  # lost to v2: never served, not even as a fallback
        log_and_register(Candidate("t.corrupt", "sklearn", m2, x, "auc", 0.5), key=_key())
    corrupt(model_file("t.corrupt", "2"))

    served = load_serving_model("t.corrupt", "sklearn", key=_key())
    assert (served.version, served.champion_version) == ("1", "2")
    assert (
        "v2 does not load" in served.fallback_reason
        and "serving former champion v1" in served.fallback_reason
    )
    assert (served.model.predict(x) == m1.predict(x)).all()
    client = mlflow.MlflowClient()
    assert client.get_model_version("t.corrupt", "2").tags[LOAD_ERROR_TAG]
    assert LOAD_ERROR_TAG not in client.get_model_version("t.corrupt", "1").tags
    assert (
        str(client.get_model_version_by_alias("t.corrupt", "champion").version) == "2"
    )  # alias left to the operator

    corrupt(model_file("t.corrupt", "1"))
    with pytest.raises(LookupError, match=r"every former champion fail to load.*v2: .*v1: "):
        load_champion("t.corrupt", "sklearn", key=_key())


def test_version_is_registered_with_its_score_and_a_failed_comparison_leaves_the_champion(tracking):
    import mlflow

    m, x = _model(3)
    with tracking.start_run("v1"):
        log_and_register(
            Candidate("t.half", "sklearn", m, x, "recall@10", 0.3, baseline="pop", baseline_value=0.2),
            key=_key(),
        )
    with pytest.raises(ConnectionError), tracking.start_run("v2") as run:

        def scoring_fails(uri):  # e.g. the holdout store went away while the champion was being re-scored
            raise ConnectionError("holdout unavailable")

        log_and_register(
            Candidate("t.half", "sklearn", m, x, "recall@10", 0.9), score_champion=scoring_fails, key=_key()
        )
    client = mlflow.MlflowClient()
    v2 = client.get_model_version("t.half", "2")
    # the version that exists carries its score and its run holds the metric; the champion did not move
    assert (
        v2.tags["metric"] == "recall@10"
        and float(v2.tags["metric_value"]) == 0.9
        and "promoted" not in v2.tags
    )
    assert client.get_run(run.info.run_id).data.metrics["registry.t.half.recall_10"] == 0.9
    assert str(client.get_model_version_by_alias("t.half", "champion").version) == "1"
    assert client.get_model_version("t.half", "1").tags["baseline_value"] == "0.2"


def test_unreachable_tracking_server_fails_fast_naming_the_uri():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    resource = MLflowResource(tracking_uri=uri, experiment="down")
    t0 = time.monotonic()
    with pytest.raises(MlflowUnavailableError, match=re.escape(uri) + r".*unreachable.*MLFLOW_TRACKING_URI"):
        with resource.start_run("never"):
            pass
    with pytest.raises(MlflowUnavailableError):
        resource.client()
    assert time.monotonic() - t0 < 20  # not MLflow's own minutes of HTTP retries


def test_record_model_is_the_one_sequence_run_metrics_registry_and_model_metrics(tracking, tmp_path):
    """One call: the run with its params, metrics, step series and JSON artifact, the signed registered
    candidate with its champion alias, and the ml.model_metrics rows carrying the run id."""
    import mlflow

    from ecom_pipeline.ml.registry import CHAMPION, ModelRun
    from ecom_pipeline.ml.safe_artifacts import SIGNATURE_TAG
    from ecom_pipeline.resources.model_metrics import MetricRecord
    from ecom_pipeline.resources.warehouse import WarehouseResource

    warehouse = WarehouseResource(path=str(tmp_path / "wh.duckdb"))
    m, x = _model(7)
    row = MetricRecord("clf", "t", "synthetic", "temporal", "auc", 0.8, "majority", 0.5)
    recorded = tracking.record_model(
        ModelRun(
            "unit_record",
            tags={"task": "t"},
            params={"C": 1.0},
            metrics={"auc": 0.8},
            metric_steps={"train_loss": [0.9, 0.5]},
            dicts={"classes.json": {"classes": [0, 1]}},
            candidates=[
                Candidate("t.record", "sklearn", m, x, "auc", 0.8, baseline="majority", baseline_value=0.5)
            ],
        ),
        warehouse=warehouse,
        metric_records=[row],
    )
    run = mlflow.get_run(recorded.run_id)
    assert run.info.run_name == "unit_record" and run.data.tags["task"] == "t"
    assert run.data.params["C"] == "1.0" and run.data.metrics["auc"] == 0.8
    history = mlflow.MlflowClient().get_metric_history(recorded.run_id, "train_loss")
    assert [h.value for h in history] == [0.9, 0.5]
    outcome = recorded.outcome("t.record")
    assert outcome.promoted and recorded.outcome("t.other") is None
    version = mlflow.MlflowClient().get_model_version_by_alias("t.record", CHAMPION)
    assert str(version.version) == outcome.version and version.tags[SIGNATURE_TAG]
    with warehouse.connect(read_only=True) as con:
        stored = con.execute("SELECT model, value, mlflow_run_id FROM ml.model_metrics").fetchall()
    assert stored == [("clf", 0.8, recorded.run_id)]
    with pytest.raises(ValueError, match="without a warehouse"):
        tracking.record_model(ModelRun("no_warehouse"), metric_records=[row])
    empty = WarehouseResource(path=str(tmp_path / "empty.duckdb"))
    tracking.record_model(
        ModelRun("no_rows"), warehouse=empty, metric_records=[]
    )  # as every model asset did:
    with empty.connect(read_only=True) as con:  # the table exists after a run that had no rows to write
        assert con.execute("SELECT count(*) FROM ml.model_metrics").fetchall() == [(0,)]


def _key() -> bytes:
    """The model signing key of the current settings, read at call time (some tests change it)."""
    from ecom_pipeline.config import Settings
    from ecom_pipeline.ml.safe_artifacts import signing_key

    return signing_key(Settings.from_env())
