"""Federated sentiment head: Flower FedAvg in-process vs centralised vs local-only, DP accounting, the asset.

Synthetic embeddings here (real review embeddings take minutes to compute on 2 cores); the real-data
figures come from benchmarks/federated.py on the Olist sample.
"""

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("flwr")

from ecom_pipeline.ml.text.federated import (
    FederatedConfig,
    clip_and_noise,
    gaussian_dp_epsilon,
    predict,
    to_sklearn,
    train_and_compare,
)


def _reviews(n: int = 3000, dim: int = 24, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Parties of very different sizes whose label noise differs: a small party alone overfits, pooled
    parameters generalise. Scores 1/2 negative, 4/5 positive, a few 3s (dropped in the binary setting)."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=dim)
    sizes = {"SP": 0.5, "RJ": 0.2, "MG": 0.12, "BA": 0.06, "RS": 0.05, "PR": 0.04, "AC": 0.02, "AP": 0.01}
    party = rng.choice(list(sizes), n, p=np.array(list(sizes.values())) / sum(sizes.values()))
    x = rng.normal(size=(n, dim))
    logit = 2.5 * x @ direction / np.sqrt(dim)
    positive = rng.random(n) < 1 / (1 + np.exp(-logit))
    score = np.where(positive, rng.choice([4, 5], n), rng.choice([1, 2], n))
    score[rng.random(n) < 0.05] = 3
    frame = pd.DataFrame(
        {
            "review_id": [f"r{i}" for i in range(n)],
            "score": score,
            "party": party,
            "created_at": pd.date_range("2024-01-01", periods=n, freq="h"),
        }
    )
    return frame, (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_fedavg_close_to_centralised_and_above_local_only():
    frame, emb = _reviews()
    res = train_and_compare(emb, frame, FederatedConfig(rounds=15, bootstrap=300, min_party_train=20))
    n_labelled = int((frame["score"] != 3).sum())
    assert abs(res.n_test - 0.2 * n_labelled) <= 5  # ties at the cutoff may move a few
    assert set(res.parties) <= {"SP", "RJ", "MG", "BA", "RS", "PR", "AC", "AP", "other"}
    assert sum(res.party_test.values()) == res.n_test  # every test review is scored by its party's model
    acc = res.accuracy
    assert acc["majority"] < acc["fedavg"]
    assert acc["fedavg"] >= acc["centralised"] - 0.02, acc
    lo, hi = res.interval["fedavg"]
    assert lo <= acc["fedavg"] <= hi and hi - lo < 0.1
    value, lo, hi = res.difference["accuracy_fedavg_minus_local_only"]
    assert lo <= value <= hi
    assert not np.isfinite(res.epsilon)  # no DP noise asked for
    # the registered form predicts exactly what the federated head predicts
    pipe = to_sklearn(res.params, res.mean, res.std)
    x = emb[:200].astype(np.float64)
    assert (pipe.predict(x) == predict(res.params, (x - res.mean) / res.std)).all()


def test_three_class_head_converts_too():
    frame, emb = _reviews(n=1500)
    res = train_and_compare(
        emb, frame, FederatedConfig(setting="3class", rounds=5, bootstrap=100, min_party_train=20)
    )
    pipe = to_sklearn(res.params, res.mean, res.std)
    x = emb[:100].astype(np.float64)
    assert (pipe.predict(x) == predict(res.params, (x - res.mean) / res.std)).all()


def test_dp_noise_clips_updates_and_reports_epsilon():
    rng = np.random.default_rng(0)
    old = [np.zeros((4, 2)), np.zeros(2)]
    new = [np.full((4, 2), 10.0), np.full(2, 10.0)]
    clipped = clip_and_noise(old, new, clip=1.0, noise_multiplier=1e-9, rng=rng)
    assert np.isclose(np.sqrt(sum((c**2).sum() for c in clipped)), 1.0, atol=1e-6)
    eps_small_noise = gaussian_dp_epsilon(1.0, rounds=30, delta=1e-5)
    eps_big_noise = gaussian_dp_epsilon(4.0, rounds=30, delta=1e-5)
    assert 0 < eps_big_noise < eps_small_noise
    assert gaussian_dp_epsilon(4.0, rounds=120, delta=1e-5) > eps_big_noise  # composition over rounds
    frame, emb = _reviews(n=1500)
    noisy = train_and_compare(
        emb,
        frame,
        FederatedConfig(rounds=10, bootstrap=100, min_party_train=20, dp_noise_multiplier=1.0, dp_clip=0.5),
    )
    assert np.isclose(noisy.epsilon, gaussian_dp_epsilon(1.0, 10, 1e-5))


def test_federated_asset_logs_to_mlflow_and_model_metrics(tmp_path):
    from ecom_pipeline.assets import federated as F
    from ecom_pipeline.ml.encoders.store import upsert_embeddings
    from ecom_pipeline.resources import MLflowResource, SourceResource, WarehouseResource
    from ecom_pipeline.resources.paths import PathsResource

    frame, emb = _reviews(n=1200)
    db = tmp_path / "wh.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE SCHEMA staging")
    reviews = frame.assign(customer_id=[f"c{i}" for i in range(len(frame))])
    customers = pd.DataFrame({"customer_id": reviews["customer_id"], "state": reviews["party"]})
    customers.loc[:9, "state"] = None  # customers without a state form the 'unknown' party
    con.register("r", reviews.drop(columns="party"))
    con.register("c", customers)
    con.execute("CREATE TABLE staging.reviews AS SELECT * FROM r")
    con.execute("CREATE TABLE staging.customers AS SELECT * FROM c")
    upsert_embeddings(
        con,
        "features.review_text_embeddings",
        "review_id",
        frame[["review_id"]].assign(input_hash="h"),
        emb,
        model="synthetic",
        model_version="0",
    )
    con.close()
    res = {
        "warehouse": WarehouseResource(path=str(db)),
        "source": SourceResource(data_root=str(tmp_path)),
        "paths": PathsResource(data_root=str(tmp_path)),
        "mlflow": MLflowResource(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"),
    }
    result = dg.materialize(
        [F.federated_sentiment],
        resources=res,
        run_config={"ops": {"models__federated_sentiment": {"config": {"rounds": 8, "min_party_train": 20}}}},
    )
    assert result.success
    meta = {
        k: v.value
        for k, v in result.asset_materializations_for_node("models__federated_sentiment")[-1].metadata.items()
    }
    assert meta["registered"].startswith("ecom.sentiment_federated.binary v")
    assert meta["training_path"] == "fedavg_flower_in_process"
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute(
        "SELECT model, baseline, metric, value, baseline_value, split, mlflow_run_id "
        "FROM ml.model_metrics ORDER BY model, baseline"
    ).fetchdf()
    con.close()
    fed = rows[(rows["model"] == "sentiment_fedavg") & (rows["metric"] == "accuracy")]
    assert set(fed["baseline"]) == {"centralised", "local_only", "centralised_sentiment_head"}
    assert np.isclose(fed["value"].iloc[0], meta["accuracy_fedavg"])
    assert fed["split"].str.contains(r"ci95=\[0\.\d+,0\.\d+\]").all() and rows["mlflow_run_id"].notna().all()
