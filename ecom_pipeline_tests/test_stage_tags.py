"""Every asset of the demo graph is refreshed by one of the scheduled jobs (daily refresh, daily scoring,
weekly training): an asset outside all three would only ever be rebuilt by `make demo`.  The daily refresh
is ``full_refresh`` (schedule ``daily_full_refresh``, a snapshot source) or ``daily_ingest`` +
``daily_refresh`` (schedule ``daily_ingest_features``, a source delivering days: ``inbox/new_partitions``
writes raw and staging by day, without re-materialising their assets)."""

import pytest


@pytest.fixture(scope="module")
def defs():
    from ecom_pipeline.definitions import defs

    return defs


def _keys(defs, job: str) -> set[str]:
    return {k.to_user_string() for k in defs.resolve_job_def(job).asset_layer.selected_asset_keys}


def test_scheduled_jobs_cover_the_whole_graph_once(defs):
    daily, scoring, training = (_keys(defs, j) for j in ("full_refresh", "scoring", "training"))
    incremental_daily = _keys(defs, "daily_refresh") | _keys(defs, "daily_ingest")
    assert daily - incremental_daily == {k for k in daily if k.split("/")[0] in ("raw", "staging")}
    full = _keys(defs, "full_pipeline")
    assert full - (daily | scoring | training) == set()
    assert not (daily & scoring) and not (daily & training) and not (scoring & training)
    # the incremental embeddings are part of the daily refresh; champions score daily; models train weekly
    assert {"features/review_text_embeddings", "features/product_image_embeddings"} <= daily
    assert {"serving/recommendations", "features/review_sentiment", "serving/user_profiles"} <= scoring
    assert {
        "models/sentiment_model",
        "models/recommender_evaluation",
        "models/two_tower_recommender",
    } <= training
