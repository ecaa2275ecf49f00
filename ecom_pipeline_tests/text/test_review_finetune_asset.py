"""The sentiment_finetuned asset on a small synthetic warehouse: a real fine-tune (top layer of the packaged
multilingual e5), registered in the safe format, figures with intervals in ml.model_metrics, the gate's rows."""

import dagster as dg
import duckdb
import pytest

from ecom_pipeline.assets import embeddings as E
from ecom_pipeline.assets import review_finetune as F
from ecom_pipeline.resources import ComputeResource, MLflowResource, SourceResource, WarehouseResource
from ecom_pipeline.resources.paths import PathsResource
from ecom_pipeline_tests.text.test_review_assets import synthetic_reviews


def _warehouse(root, n: int = 150):
    reviews = synthetic_reviews(n)
    con = duckdb.connect(str(root / "wh.duckdb"))
    con.execute("CREATE SCHEMA staging")
    con.register("r", reviews)
    con.execute("CREATE TABLE staging.reviews AS SELECT * FROM r")
    con.close()


def _resources(root):
    return {"warehouse": WarehouseResource(path=str(root / "wh.duckdb")),
            "compute": ComputeResource(device="cpu", threads=2), "source": SourceResource(data_root=str(root)),
                                                                 "paths": PathsResource(data_root=str(root)),
            "mlflow": MLflowResource(tracking_uri=f"sqlite:///{root}/mlflow.db")}


@pytest.mark.slow
def test_finetune_asset_records_model_metrics_and_decisions(tmp_path):
    _warehouse(tmp_path)
    config = {"trainable_layers_cpu": 1, "epochs": 3, "max_length": 32, "budget_s": 600, "lr": 3e-4}
    result = dg.materialize([E.review_text_embeddings, F.sentiment_finetuned], resources=_resources(tmp_path),
                            run_config={"ops": {"models__sentiment_finetuned": {"config": config}}})
    assert result.success
    meta = result.asset_materializations_for_node("models__sentiment_finetuned")[-1].metadata
    assert meta["training_path"].value == "top1_finetune" and meta["trainable_layers"].value == 1
    assert meta["seconds"].value <= 600 + 60 and meta["registered"].value.startswith("ecom.sentiment_finetuned v1")
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    mm = con.execute("SELECT * FROM ml.model_metrics WHERE model = 'sentiment_top1_finetune'").fetchdf()
    dec = con.execute("SELECT * FROM ml.serving_decisions WHERE task = 'sentiment_finetuned'").fetchdf()
    con.close()
    # 2 settings x 2 metrics x 2 baselines, each with its interval and number of test reviews
    assert len(mm) == 8 and set(mm["baseline"]) == {"tfidf_logreg", "sentiment_frozen_embeddings_head"}
    assert (mm["n_units"] > 0).all() and (mm["ci_low"] <= mm["ci_high"]).all()
    assert sorted(dec["scope"]) == ["3class", "binary"] and (dec["candidate"] == "ecom.sentiment_finetuned").all()
    for row in dec.itertuples():  # the candidate serves only when its interval is above zero
        assert (row.served == row.candidate) == (row.ci_low > 0)
    import mlflow

    from ecom_pipeline.ml.encoders import load_text_encoder
    from ecom_pipeline.ml.registry import load_serving_model
    from ecom_pipeline.ml.text.finetune import predict_proba

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    key = _resources(tmp_path)["mlflow"].signing_key()  # the key the asset signed the version with
    served = load_serving_model("ecom.sentiment_finetuned", "pytorch", mlflow.MlflowClient(), key=key)
    enc = load_text_encoder("multilingual-e5-small", models_dir=tmp_path / "models", max_length=32)
    probs = predict_proba(served.model, enc, ["Chegou quebrado", "Ótimo produto, recomendo"])
    assert probs.shape == (2, 3) and probs[0, 0] > probs[0, 2] and probs[1, 2] > probs[1, 0]


def test_finetune_asset_with_too_few_reviews(tmp_path):
    _warehouse(tmp_path, n=12)
    result = dg.materialize([E.review_text_embeddings, F.sentiment_finetuned], resources=_resources(tmp_path))
    assert result.success
    meta = result.asset_materializations_for_node("models__sentiment_finetuned")[-1].metadata
    assert meta["training_path"].value == "skipped" and "only 12 reviews" in meta["message"].value
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM ml.serving_decisions WHERE task = 'sentiment_finetuned'").fetchall() \
        == [(0,)]
    con.close()
