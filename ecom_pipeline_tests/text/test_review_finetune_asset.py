"""The sentiment_finetuned asset on a small synthetic warehouse: a real fine-tune (top layer of the packaged
multilingual e5), registered in the safe format, figures with intervals in ml.model_metrics, the gate's
rows."""

import dagster as dg
import duckdb
import pytest

from ecom_pipeline.assets import embeddings as E
from ecom_pipeline.assets import review_finetune as F
from ecom_pipeline.assets import reviews as R
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
    return {
        "warehouse": WarehouseResource(path=str(root / "wh.duckdb")),
        "compute": ComputeResource(device="cpu", threads=2),
        "source": SourceResource(data_root=str(root)),
        "paths": PathsResource(data_root=str(root)),
        "mlflow": MLflowResource(tracking_uri=f"sqlite:///{root}/mlflow.db"),
    }


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A warehouse with the fine-tune (and sentiment_model, what serves without it) trained: (root,
    result)."""
    tmp_path = tmp_path_factory.mktemp("finetuned")
    _warehouse(tmp_path)
    config = {"trainable_layers_cpu": 1, "epochs": 3, "max_length": 32, "lr": 3e-4}
    result = dg.materialize(
        [E.review_text_embeddings, F.sentiment_finetuned, R.sentiment_model],
        resources=_resources(tmp_path),
        run_config={
            "ops": {
                "models__sentiment_finetuned": {"config": config},
                "models__sentiment_model": {"config": {"settings": ["3class"]}},
            }
        },
    )
    assert result.success
    return tmp_path, result


@pytest.mark.slow
def test_finetune_asset_records_model_metrics_and_decisions(finetuned):
    tmp_path, result = finetuned
    meta = result.asset_materializations_for_node("models__sentiment_finetuned")[-1].metadata
    assert meta["training_path"].value == "top1_finetune" and meta["trainable_layers"].value == 1
    assert meta["budget_clock"].value == "cpu" and meta["budget_s"].value == 900  # Settings' default
    assert meta["cpu_seconds"].value <= 900 + 60 and meta["registered"].value.startswith(
        "ecom.sentiment_finetuned v1"
    )
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    mm = con.execute("SELECT * FROM ml.model_metrics WHERE model = 'sentiment_top1_finetune'").fetchdf()
    dec = con.execute("SELECT * FROM ml.serving_decisions WHERE task = 'sentiment_finetuned'").fetchdf()
    con.close()
    # 2 settings x 2 metrics x 2 baselines, each with its interval and number of test reviews
    assert len(mm) == 8 and set(mm["baseline"]) == {"tfidf_logreg", "sentiment_frozen_embeddings_head"}
    assert (mm["n_units"] > 0).all() and (mm["ci_low"] <= mm["ci_high"]).all()
    assert (
        sorted(dec["scope"]) == ["3class", "binary"]
        and (dec["candidate"] == "ecom.sentiment_finetuned").all()
    )
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
    assert con.execute(
        "SELECT count(*) FROM ml.serving_decisions WHERE task = 'sentiment_finetuned'"
    ).fetchall() == [(0,)]
    con.close()


@pytest.mark.slow
def test_review_sentiment_serves_the_finetune_only_where_its_gate_row_says_so(finetuned):
    """Both directions on the trained models: the fine-tune's decision planted as won, then as lost."""
    from ecom_pipeline.ml.serving_gate import serving_violations

    root, _ = finetuned
    db = root / "wh.duckdb"
    con = duckdb.connect(str(db))
    served_before = con.execute(
        "SELECT served FROM ml.serving_decisions WHERE task = 'sentiment' AND scope = '3class'"
    ).fetchall()[0][0]
    con.close()
    run_config = {"ops": {"features__review_sentiment": {"config": {"max_length": 32}}}}
    for planted in ("ecom.sentiment_finetuned", "ecom.sentiment.3class"):
        con = duckdb.connect(str(db))
        con.execute(
            "UPDATE ml.serving_decisions SET served = ?, reason = 'planted by the test' "
            "WHERE task = 'sentiment_finetuned' AND scope = '3class'",
            [planted],
        )
        con.close()
        result = dg.materialize([R.review_sentiment], resources=_resources(root), run_config=run_config)
        assert result.success
        meta = result.asset_materializations_for_node("features__review_sentiment")[-1].metadata
        expected = planted if planted == "ecom.sentiment_finetuned" else served_before  # else: what served
        assert meta["served_model"].value == expected and "planted by the test" in meta["message"].value
        con = duckdb.connect(str(db))
        sent = con.execute("SELECT * FROM features.review_sentiment").fetchdf()
        assert len(sent) == 150 and (sent["model"] == expected).all()
        assert ((sent[["p_negative", "p_neutral", "p_positive"]].sum(axis=1) - 1).abs() < 1e-5).all()
        assert serving_violations(con).empty
        if planted == "ecom.sentiment_finetuned":  # the fine-tune reads the text: it gets the planted words
            by_label = sent.merge(con.execute("SELECT review_id, score FROM staging.reviews").fetchdf())
            neg, pos = by_label[by_label["score"] <= 2], by_label[by_label["score"] >= 4]
            assert (neg["label"] == "negative").mean() > 0.7, by_label.groupby("score")[
                "label"
            ].value_counts()
            assert pos["p_positive"].mean() > neg["p_positive"].mean()  # a small model: ordered, not sharp
            # the check can fail: the fine-tune's rows where its decision says it lost
            con.execute(
                "UPDATE ml.serving_decisions SET served = baseline WHERE task = 'sentiment_finetuned'"
            )
            bad = serving_violations(con)
            assert len(bad) == 1 and bad.iloc[0]["rows"] == 150 and bad.iloc[0]["model"] == planted
        con.close()
