"""The asset layout rule of docs/architecture.md ("Asset keys, groups and jobs"): key prefix = layer, group =
topic, jobs by group or layer; and each job's selection pinned, so a regrouping that moves an asset out of
its job fails here.

The pinned lists are the selections from before the rule (commit d25135d), with the three recommender keys
renamed ``ml/…`` → ``models/…``: the change moved no asset between jobs."""

from __future__ import annotations

import dagster as dg
import pytest

from ecom_pipeline.asset_layout import LAYERS, STAGE_LAYERS, TOPICS

DATA_LAYERS = set(LAYERS) - {"inbox", "snapshot"}

INGEST = {
    f"{layer}/{t}"
    for layer in ("raw", "staging")
    for t in (
        "customers",
        "events",
        "order_items",
        "orders",
        "payments",
        "products",
        "regions",
        "reviews",
        "sellers",
    )
}
FEATURES = {
    f"features/{t}"
    for t in (
        "calendar",
        "category_interactions",
        "daily_series",
        "interactions",
        "product_embeddings",
        "product_image_embeddings",
        "product_text_embeddings",
        "product_video_embeddings",
        "region_embeddings",
        "region_flows",
        "region_knn_features",
        "region_knn_graph",
        "regions",
        "review_text_embeddings",
        "review_topics",
        "weekly_series",
    )
}
TRAINING = {
    f"models/{t}"
    for t in (
        "recommender_evaluation",
        "sequence_recommender",
        "two_tower_recommender",
        "delivery_delay",
        "federated_sentiment",
        "image_text_projection",
        "lstm_backtest",
        "sarima_backtest",
        "sentiment_finetuned",
        "sentiment_model",
        "stgcn_backtest",
        # issue 15: the weekly step keeps the served repurchase model; the scores moved to scoring (daily)
        "repurchase_model",
    )
}
SCORING = {
    "features/review_sentiment",
    "reports/model_registry_report",
    "reports/regional_demand_dp",
    "reports/run_failures",
    "reports/sentiment_aggregates",
    "serving/anomalies",
    "serving/forecasts",
    "serving/recommendations",
    "serving/repurchase_scores",
    "serving/related_items",
    "serving/similar_products",
    "serving/user_profiles",
    "snapshot/read_only_warehouse",
}


@pytest.fixture(scope="module")
def defs():
    from ecom_pipeline.definitions import defs

    return defs


def layout_violations(asset_graph) -> list[str]:
    """``key: why`` for every asset whose key prefix is not a layer or whose group is not a topic."""
    bad = []
    for key in asset_graph.get_all_asset_keys():
        node = asset_graph.get(key)
        name = key.to_user_string()
        if len(key.path) < 2 or key.path[0] not in LAYERS:
            bad.append(f"{name}: key prefix {key.path[0]!r} is not a layer {LAYERS}")
        if node.group_name not in TOPICS:
            bad.append(f"{name}: group {node.group_name!r} is not a topic {tuple(TOPICS)}")
        elif node.group_name in DATA_LAYERS:
            bad.append(f"{name}: group {node.group_name!r} is a layer, not a topic")
    return sorted(bad)


def _keys(defs, job: str) -> set[str]:
    return {k.to_user_string() for k in defs.resolve_job_def(job).asset_layer.selected_asset_keys}


def test_every_asset_follows_the_layout_rule(defs):
    assert layout_violations(defs.get_repository_def().asset_graph) == []


def test_the_rule_catches_a_layer_group_and_a_second_model_prefix():
    @dg.asset(key=["ml", "some_model"], group_name="recommender")
    def some_model():
        return 1

    @dg.asset(key=["features", "some_feature"], group_name="features")
    def some_feature():
        return 1

    graph = dg.Definitions(assets=[some_model, some_feature]).get_repository_def().asset_graph
    assert layout_violations(graph) == [
        "features/some_feature: group 'features' is not a topic " + repr(tuple(TOPICS)),
        f"ml/some_model: key prefix 'ml' is not a layer {LAYERS}",
    ]


@pytest.mark.parametrize(
    "job, expected",
    [("ingest", INGEST), ("features", FEATURES), ("training", TRAINING), ("scoring", SCORING)],
)
def test_each_job_selects_what_it_selected_before(defs, job, expected):
    assert _keys(defs, job) == expected


def test_composite_jobs_are_the_union_of_their_parts(defs):
    everything = {k.to_user_string() for k in defs.get_repository_def().asset_graph.get_all_asset_keys()}
    # issue 15: daily_refresh no longer reloads raw + staging (daily_ingest stages the new days, then the
    # features run incrementally); the full reload + features it was is full_refresh
    assert _keys(defs, "daily_refresh") == FEATURES
    assert _keys(defs, "daily_ingest") == {"inbox/new_partitions"}
    assert _keys(defs, "full_refresh") == INGEST | FEATURES
    assert _keys(defs, "full_pipeline") == INGEST | FEATURES | TRAINING | SCORING
    assert everything - _keys(defs, "full_pipeline") == {
        "inbox/deliveries",
        "inbox/daily_partition_ingest",
        "inbox/new_partitions",
    }


def test_the_ingest_group_is_exactly_the_raw_and_staging_layers(defs):
    graph = defs.get_repository_def().asset_graph
    ingest = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).group_name == "ingest"}
    assert ingest == INGEST


def test_a_stage_tag_names_the_job_that_selects_the_asset(defs):
    """The ``ecom/stage`` tags are informational (jobs select by group and layer); they must not lie."""
    graph = defs.get_repository_def().asset_graph
    wrong = []
    for key in graph.get_all_asset_keys():
        stage = graph.get(key).tags.get("ecom/stage")
        if stage and key.to_user_string() not in _keys(defs, stage):
            wrong.append(f"{key.to_user_string()}: tagged {stage}")
    assert wrong == []


def test_stage_layers_are_layers():
    assert {layer for layers in STAGE_LAYERS.values() for layer in layers} <= set(LAYERS)
