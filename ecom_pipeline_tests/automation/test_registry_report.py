import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from ecom_pipeline.assets.gates import promotion_gate_check
from ecom_pipeline.assets.registry_report import model_registry_report, run_failures
from ecom_pipeline.automation.failures import record_failure
from ecom_pipeline.ml.registry import Candidate, gate_verdict, log_and_register, registry_summary
from ecom_pipeline.resources import MLflowResource, SourceResource, WarehouseResource
from ecom_pipeline.resources.paths import PathsResource


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("reg")
    return root, MLflowResource(tracking_uri=f"sqlite:///{root / 'mlflow.db'}", experiment="report")


def _materialize(root, tracking, *assets):
    return dg.materialize(
        list(assets),
        resources={
            "mlflow": tracking,
            "source": SourceResource(data_root=str(root)),
            "paths": PathsResource(data_root=str(root)),
            "warehouse": WarehouseResource(path=str(root / "w.duckdb")),
        },
    )


def _read(root, sql):
    con = duckdb.connect(str(root / "w.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchdf()
    finally:
        con.close()


def test_registry_report_empty_then_with_champions_and_a_losing_challenger(store):
    root, tracking = store
    tracking.client()
    assert registry_summary() == []
    assert _materialize(root, tracking, model_registry_report).success
    assert len(_read(root, "SELECT * FROM reports.model_registry_report")) == 0

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(60, 2)), columns=["a", "b"])
    m = LogisticRegression().fit(X, (X["a"] > 0).astype(int))
    with tracking.start_run("good"):
        log_and_register(
            Candidate("t.good", "sklearn", m, X.head(3), "auc", 0.9, baseline="majority", baseline_value=0.5),
            key=_key(),
        )
    with tracking.start_run("challenger"):
        lost = log_and_register(
            Candidate(
                "t.good", "sklearn", m, X.head(3), "auc", 0.85, baseline="majority", baseline_value=0.5
            ),
            margin=0.01,
            key=_key(),
        )
    assert not lost.promoted
    with tracking.start_run("bad"):
        log_and_register(
            Candidate(
                "t.bad",
                "sklearn",
                m,
                X.head(3),
                "mase",
                1.3,
                higher_is_better=False,
                baseline="seasonal_naive",
                baseline_value=1.0,
            ),
            key=_key(),
        )

    rows = {r["model"]: r for r in registry_summary()}
    assert rows["t.good"]["champion_version"] == "1" and rows["t.good"]["latest_version"] == "2"
    assert rows["t.good"]["latest_promoted"] is False and "margin 0.01" in rows["t.good"]["latest_reason"]
    assert rows["t.good"]["beats_baseline"] is True and rows["t.bad"]["beats_baseline"] is False
    assert 0 <= rows["t.good"]["champion_age_days"] < 1

    assert gate_verdict(rows["t.good"], "t.good")[:2] == (True, "ERROR")
    assert gate_verdict(rows["t.bad"], "t.bad")[:2] == (False, "WARN")
    assert gate_verdict(None, "t.none")[:2] == (False, "ERROR")

    result = _materialize(root, tracking, model_registry_report)
    assert result.success
    table = _read(root, "SELECT * FROM reports.model_registry_report ORDER BY model")
    assert table["model"].tolist() == ["t.bad", "t.good"]
    assert not table.set_index("model").loc["t.bad", "beats_baseline"]
    assert table.set_index("model").loc["t.good", "beats_baseline"]
    meta = result.asset_materializations_for_node("reports__model_registry_report")[0].metadata
    assert meta["losing_to_baseline"].value == "t.bad"


def test_promotion_gate_blocks_without_a_champion(store):
    root, tracking = store

    @dg.asset
    def model_asset():
        return 1

    @dg.asset(deps=[model_asset])
    def serving_asset():
        return 2

    missing = promotion_gate_check(model_asset.key, "t.never_registered")
    present = promotion_gate_check(serving_asset.key, "t.good", check_name="gate_ok")
    defs = dg.Definitions(
        assets=[model_asset, serving_asset], asset_checks=[missing, present], resources={"mlflow": tracking}
    )
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(raise_on_error=False)
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evals["promotion_gate"].passed is False
    # the blocking gate failed: the downstream serving asset was not materialised
    assert not result.asset_materializations_for_node("serving_asset")


def test_run_failures_report(store, tmp_path):
    _, tracking = store
    record_failure(
        tmp_path,
        {
            "run_id": "r1",
            "job_name": "training",
            "failed_at": "2024-05-01T10:00:00",
            "message": "boom",
            "failed_steps": ["train"],
            "tags": {"ecom/trigger": "drift"},
        },
    )
    result = _materialize(tmp_path, tracking, run_failures)
    assert result.success
    table = _read(tmp_path, "SELECT * FROM reports.run_failures")
    assert table["job_name"].tolist() == ["training"] and table["trigger"].tolist() == ["drift"]


def _key() -> bytes:
    """The model signing key of the current settings, read at call time (some tests change it)."""
    from ecom_pipeline.config import Settings
    from ecom_pipeline.ml.safe_artifacts import signing_key

    return signing_key(Settings.from_env())
