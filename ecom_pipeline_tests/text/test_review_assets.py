from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from ecom_pipeline.assets import embeddings as E
from ecom_pipeline.assets import reviews as R
from ecom_pipeline.ml.text.topics import INTENTS
from ecom_pipeline.resources import ComputeResource, MLflowResource, SourceResource, WarehouseResource
from ecom_pipeline.resources.paths import PathsResource

NEG = [
    "Não recebi o produto",
    "Chegou quebrado",
    "Péssimo, demorou demais",
    "Produto com defeito, horrível",
    "never arrived, terrible",
    "o vendedor não responde",
]
NEU = ["Produto ok, nada demais", "Razoável", "mais ou menos, esperava mais", "average product"]
POS = [
    "Ótimo produto, recomendo",
    "Chegou rápido, adorei",
    "Excelente qualidade",
    "great, fast delivery",
    "Muito bom, perfeito",
]


def synthetic_reviews(n: int = 150, seed: int = 1) -> pd.DataFrame:
    """``n`` reviews over 20 customers and 7 products, one every 2 days, text drawn by the score's class."""
    rng = np.random.default_rng(seed)
    score = rng.choice([1, 2, 3, 4, 5], n, p=[0.25, 0.1, 0.15, 0.2, 0.3])
    texts = [rng.choice(NEG if s <= 2 else NEU if s == 3 else POS) + f" #{i}" for i, s in enumerate(score)]
    return pd.DataFrame(
        {
            "review_id": [f"r{i}" for i in range(n)],
            "order_id": [f"o{i}" for i in range(n)],
            "customer_id": [f"c{i % 20}" for i in range(n)],
            "product_id": [f"p{i % 7}" for i in range(n)],
            "score": score,
            "title": None,
            "text": texts,
            "created_at": pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(n) * 2, "D"),
        }
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reviews")
    reviews = synthetic_reviews()
    con = duckdb.connect(str(root / "wh.duckdb"))
    con.execute("CREATE SCHEMA staging")
    con.register("r", reviews)
    con.execute("CREATE TABLE staging.reviews AS SELECT * FROM r")
    con.execute(
        "CREATE TABLE staging.products AS SELECT 'p' || i product_id, CASE WHEN i % 2 = 0 THEN 'toys' "
        "ELSE 'garden' END category, 'Produto ' || i title, NULL description, 10.0 price, NULL image_uri, "
        "NULL attributes FROM range(7) t(i)"
    )
    con.execute(
        "CREATE TABLE staging.order_items AS SELECT order_id, 1 item_seq, product_id, 's' || "
        "(length(order_id) % 3) seller_id FROM r"
    )
    con.execute(
        "CREATE TABLE staging.customers AS SELECT 'c' || i customer_id, CASE WHEN i < 10 THEN 'SP' ELSE 'RJ' "
        "END state FROM range(20) t(i)"
    )
    con.close()
    return root


def test_review_group_end_to_end(root):
    db = root / "wh.duckdb"
    res = {
        "warehouse": WarehouseResource(path=str(db)),
        "compute": ComputeResource(device="cpu", threads=2),
        "source": SourceResource(data_root=str(root)),
        "paths": PathsResource(data_root=str(root)),
        "mlflow": MLflowResource(tracking_uri=f"sqlite:///{root}/mlflow.db"),
    }
    result = dg.materialize(
        [
            E.review_text_embeddings,
            R.sentiment_model,
            R.review_sentiment,
            R.sentiment_aggregates,
            R.review_topics,
        ],
        resources=res,
        run_config={"ops": {"features__review_topics": {"config": {"n_clusters": 4}}}},
    )
    assert result.success
    meta = result.asset_materializations_for_node("models__sentiment_model")[-1].metadata
    assert meta["training_path"].value == "frozen_embeddings_head" and meta["device"].value == "cpu"
    con = duckdb.connect(str(db), read_only=True)
    mm = con.execute(
        "SELECT model, task, metric, value, baseline, baseline_value FROM ml.model_metrics"
    ).fetchdf()
    assert {"sentiment_3class", "sentiment_binary"} <= set(mm["task"])
    head = mm[(mm["model"] == "sentiment_frozen_embeddings_head") & (mm["metric"] == "macro_f1")]
    assert len(head) == 2 and (head["baseline"] == "tfidf_logreg").all() and head["value"].min() > 0.5
    # the head's macro-F1 carries its paired-bootstrap interval and the number of test reviews
    iv = con.execute(
        "SELECT ci_low, ci_high, n_units, significant FROM ml.model_metrics WHERE metric = 'macro_f1' "
        "AND model = 'sentiment_frozen_embeddings_head'"
    ).fetchdf()
    assert len(iv) == 2 and (iv["n_units"] > 0).all() and (iv["ci_low"] <= iv["ci_high"]).all()
    dec = con.execute("SELECT * FROM ml.serving_decisions WHERE task = 'sentiment' ORDER BY scope").fetchdf()
    assert dec["scope"].tolist() == ["3class", "binary"]
    assert set(dec["candidate"]) == {"ecom.sentiment.3class", "ecom.sentiment.binary"}
    served = dec.set_index("scope").loc["3class", "served"]
    assert served in ("ecom.sentiment.3class", "ecom.sentiment_baseline.3class")
    sent = con.execute("SELECT * FROM features.review_sentiment").fetchdf()
    assert len(sent) == 150
    assert np.allclose(sent[["p_negative", "p_neutral", "p_positive"]].sum(axis=1), 1, atol=1e-6)
    assert sent["model_version"].str.startswith("v1").all()
    assert (sent["model"] == served).all()  # every row from the model the gate serves
    for level in ("product", "seller", "category", "state_month"):
        assert con.execute(f"SELECT sum(reviews) FROM reports.sentiment_by_{level}").fetchall()[0][0] == 150
    topics = con.execute("SELECT * FROM features.review_topics").fetchdf()
    n_negneu = con.execute("SELECT count(*) FROM staging.reviews WHERE score <= 3").fetchall()[0][0]
    assert len(topics) == n_negneu and topics["topic"].nunique() == 4
    assert set(topics["topic_intent"]) <= set(INTENTS)
    assert (root / "reports" / "sentiment_by_state_month.png").stat().st_size > 1000
    assert (root / "reports" / "intent_trend.png").stat().st_size > 1000
    trend = con.execute("SELECT sum(reviews), count(DISTINCT state) FROM reports.intent_trend").fetchall()[0]
    con.close()
    assert trend == (n_negneu, 2)
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("ecom.sentiment.3class", "champion").version) == "1"


def test_review_group_with_no_reviews(tmp_path):
    db = tmp_path / "wh.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE SCHEMA staging")
    con.execute(
        "CREATE TABLE staging.reviews (review_id VARCHAR, order_id VARCHAR, customer_id VARCHAR, "
        "product_id VARCHAR, score INTEGER, title VARCHAR, text VARCHAR, created_at TIMESTAMP)"
    )
    con.close()
    res = {
        "warehouse": WarehouseResource(path=str(db)),
        "compute": ComputeResource(device="cpu", threads=2),
        "source": SourceResource(data_root=str(tmp_path)),
        "paths": PathsResource(data_root=str(tmp_path)),
        "mlflow": MLflowResource(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"),
    }
    result = dg.materialize(
        [
            E.review_text_embeddings,
            R.sentiment_model,
            R.review_sentiment,
            R.sentiment_aggregates,
            R.review_topics,
        ],
        resources=res,
    )
    assert result.success
    meta = result.asset_materializations_for_node("models__sentiment_model")[-1].metadata
    assert meta["training_path"].value == "skipped" and "only 0 reviews" in meta["message"].value
    con = duckdb.connect(str(db), read_only=True)
    for t in (
        "features.review_sentiment",
        "features.review_topics",
        "reports.sentiment_by_state_month",
        "reports.intent_trend",
    ):
        assert con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] == 0
    con.close()


def test_capped_embeddings_and_training_sample_are_visible(root):
    db = root / "wh_capped.duckdb"
    con = duckdb.connect(
        str(db)
    )  # the fixture's staging tables only (the other test adds features to wh.duckdb)
    con.execute(f"ATTACH '{root / 'wh.duckdb'}' AS src (READ_ONLY)")
    con.execute("CREATE SCHEMA staging")
    for t in ("reviews", "products", "order_items", "customers"):
        con.execute(f"CREATE TABLE staging.{t} AS SELECT * FROM src.staging.{t}")
    con.close()
    res = {
        "warehouse": WarehouseResource(path=str(db)),
        "compute": ComputeResource(device="cpu", threads=2),
        "source": SourceResource(data_root=str(root)),
        "paths": PathsResource(data_root=str(root)),
        "mlflow": MLflowResource(tracking_uri=f"sqlite:///{root}/mlflow_capped.db"),
    }
    cfg = {
        "ops": {
            "features__review_text_embeddings": {"config": {"max_new_per_run_cpu": 120}},
            "models__sentiment_model": {"config": {"max_train_reviews": 100, "settings": ["3class"]}},
        }
    }
    result = dg.materialize(
        [E.review_text_embeddings, R.sentiment_model, R.review_sentiment], resources=res, run_config=cfg
    )
    assert result.success

    def meta(node):
        return {k: v.value for k, v in result.asset_materializations_for_node(node)[-1].metadata.items()}

    assert meta("features__review_text_embeddings")["backlog"] == 30
    trained = meta("models__sentiment_model")
    assert (trained["reviews_used"], trained["reviews_embedded"], trained["reviews_awaiting_embedding"]) == (
        100,
        120,
        30,
    )
    scored = meta("features__review_sentiment")
    assert scored["dagster/row_count"] == 120 and scored["reviews_awaiting_embedding"] == 30


def test_review_sentiment_serves_what_the_decision_row_says(root):
    """The TF-IDF baseline scores every review when the head lost; the head only when its decision row says
    so."""
    db = root / "wh.duckdb"
    res = {
        "warehouse": WarehouseResource(path=str(db)),
        "source": SourceResource(data_root=str(root)),
        "paths": PathsResource(data_root=str(root)),  # review_sentiment requires it since the paths resource
        "mlflow": MLflowResource(tracking_uri=f"sqlite:///{root}/mlflow.db"),
    }
    if (
        not duckdb.connect(str(db), read_only=True)
        .execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'serving_decisions'")
        .fetchall()[0][0]
    ):
        pytest.skip("needs test_review_group_end_to_end's trained models")
    from ecom_pipeline.ml.serving_gate import serving_violations

    head, base = "ecom.sentiment.3class", "ecom.sentiment_baseline.3class"
    for served in (base, head):
        con = duckdb.connect(str(db))
        con.execute(
            "UPDATE ml.serving_decisions SET served = ?, reason = 'planted by the test' "
            "WHERE task = 'sentiment' AND scope = '3class'",
            [served],
        )
        con.close()
        result = dg.materialize([R.review_sentiment], resources=res)
        assert result.success
        meta = result.asset_materializations_for_node("features__review_sentiment")[-1].metadata
        assert meta["served_model"].value == served and "planted by the test" in meta["message"].value
        con = duckdb.connect(str(db))
        sent = con.execute("SELECT model, model_version, label FROM features.review_sentiment").fetchdf()
        assert len(sent) == 150 and (sent["model"] == served).all()
        assert serving_violations(con).empty
        con.close()
        if served == base:  # the baseline is a text model: its version has no embedding model
            assert not sent["model_version"].str.contains(" on ").any()
