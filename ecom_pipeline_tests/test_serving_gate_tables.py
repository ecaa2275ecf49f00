"""No row of any gated serving table comes from a model whose decision row in ml.serving_decisions says it
lost.

One small real pipeline run (the synthetic shop through ingest, recommendations, repurchase scores, review
sentiment, SARIMA forecasts and anomalies), then :func:`serving_violations` over every gated table; the check
itself is shown to fail on a planted violation."""

import os
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from ecom_pipeline.ml.serving_gate import GATED_TABLES, serving_violations
from ecom_pipeline_tests.api.build import RUN_CONFIG, environment

pytestmark = pytest.mark.slow  # one bounded pipeline run on 300 synthetic orders

ASSETS = [
    "features/interactions",
    "models/recommender_evaluation",
    "serving/recommendations",
    "serving/user_profiles",
    "models/repurchase_model",
    "serving/repurchase_scores",
    "features/review_text_embeddings",
    "models/sentiment_model",
    "features/review_sentiment",
    "features/daily_series",
    "models/sarima_backtest",
    "serving/forecasts",
    "serving/anomalies",
]
ORDERS = 300


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    from ecom_pipeline.config import Settings
    from ecom_pipeline.definitions import build_definitions

    root = tmp_path_factory.mktemp("gate") / "data"
    root.mkdir(parents=True)
    env = environment(root, ORDERS)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        defs = build_definitions(Settings.from_env())
        graph = defs.resolve_asset_graph()
        keys = [k for k in graph.get_all_asset_keys() if k.path[0] in ("raw", "staging")]
        keys += [dg.AssetKey(k.split("/")) for k in ASSETS]
        assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)]
        ops = {k: v for k, v in RUN_CONFIG["ops"].items() if k.replace("__", "/") in ASSETS}
        # a sparse 300-order shop: score every series and flag generously so anomaly rows exist to check
        ops["serving__anomalies"] = {"config": {"threshold": 1.0, "min_mean_per_day": 0.0}}
        result = dg.materialize(
            assets, selection=keys, resources=defs.resources, run_config={"ops": ops}, raise_on_error=True
        )
        assert result.success
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return root / "warehouse.duckdb"


def test_no_serving_row_from_a_model_that_lost(warehouse):
    con = duckdb.connect(str(warehouse))
    try:
        decisions = con.execute("SELECT task, scope, candidate, served FROM ml.serving_decisions").fetchdf()
        present = set(
            con.execute("SELECT table_schema || '.' || table_name FROM information_schema.tables")
            .fetchdf()
            .iloc[:, 0]
        )
        for table, (task, model_col, _) in GATED_TABLES.items():
            # tables of assets outside this test's selection (serving.sequence_recommendations) are not built
            rows = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] if table in present else 0
            if rows:  # a table with rows has decisions behind it, and its model column names served models
                assert task in set(decisions["task"]), f"{table} has {rows} rows but no {task} decision"
                models = set(
                    con.execute(f"SELECT DISTINCT {model_col}::VARCHAR FROM {table}").fetchdf().iloc[:, 0]
                )
                assert models <= set(decisions.loc[decisions["task"] == task, "served"]), (table, models)
        served_tables = [
            t
            for t in GATED_TABLES
            if t in present and con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
        ]
        assert {"serving.forecasts", "serving.anomalies", "features.review_sentiment"} <= set(served_tables)
        assert serving_violations(con).empty, serving_violations(con).to_string()

        # the check can fail: plant one review scored by the head while its decision says the baseline serves
        con.execute("UPDATE ml.serving_decisions SET served = baseline WHERE task = 'sentiment'")
        con.execute(
            "UPDATE features.review_sentiment SET model = 'ecom.sentiment.3class' "
            "WHERE review_id = (SELECT min(review_id) FROM features.review_sentiment)"
        )
        bad = serving_violations(con)
        assert len(bad) == 1 and bad.iloc[0]["serving_table"] == "features.review_sentiment"
        assert bad.iloc[0]["rows"] == 1 and bad.iloc[0]["served"] == "ecom.sentiment_baseline.3class"
    finally:
        con.close()
