import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from ecom_pipeline.ml.registry import Candidate, load_champion, log_and_register
from ecom_pipeline.resources.tracking import MLflowResource


@pytest.fixture
def tracking(tmp_path):
    return MLflowResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="reg")


def _model(seed):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(40, 2)), columns=["a", "b"])
    y = (X["a"] > 0).astype(int)
    return LogisticRegression().fit(X, y), X.head(3)


def test_first_version_becomes_champion_and_worse_one_does_not(tracking):
    m, x = _model(0)
    with tracking.start_run("v1"):
        first = log_and_register(Candidate("t.clf", "sklearn", m, x, "auc", 0.80))
    assert first.promoted and first.version == "1"
    with tracking.start_run("v2"):
        worse = log_and_register(Candidate("t.clf", "sklearn", m, x, "auc", 0.79))
    assert not worse.promoted and worse.champion_version == "1"
    with tracking.start_run("v3"):
        marginal = log_and_register(Candidate("t.clf", "sklearn", m, x, "auc", 0.805), margin=0.01)
    assert not marginal.promoted
    with tracking.start_run("v4"):
        better = log_and_register(Candidate("t.clf", "sklearn", m, x, "auc", 0.9), margin=0.01)
    assert better.promoted and better.version == "4"
    loaded = load_champion("t.clf", "sklearn")
    assert (loaded.predict(x) == m.predict(x)).all()


def test_lower_is_better_and_rescoring_the_champion(tracking):
    m, x = _model(1)
    with tracking.start_run("a"):
        log_and_register(Candidate("t.fc", "sklearn", m, x, "mase", 1.0, higher_is_better=False))
    with tracking.start_run("b"):
        # the champion re-scored on today's holdout is worse (1.5) than the candidate (1.2): promote
        out = log_and_register(Candidate("t.fc", "sklearn", m, x, "mase", 1.2, higher_is_better=False),
                               score_champion=lambda uri: 1.5)
    assert out.promoted and "re-scored" in out.reason


def test_missing_champion_is_a_clear_error(tracking):
    tracking.client()
    with pytest.raises(LookupError, match="no usable champion"):
        load_champion("does.not.exist", "sklearn")
