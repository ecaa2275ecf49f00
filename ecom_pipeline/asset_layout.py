"""How assets are named and grouped: one rule, read by the assets, the jobs and a test.

* **Key prefix = layer** (``LAYERS``): where in the flow the asset sits.  An asset that returns a frame is
  stored by the IO manager in the schema of that name; tables an asset writes by hand keep their own names
  (``models/recommender_evaluation`` writes ``ml.recommender_evaluation``; ``ml`` holds model metrics,
  evaluations and serving decisions, written by model assets of every topic).
* **Group = topic** (``TOPICS``): what the asset is about, whatever its layer (the forecasting group holds
  features, models and serving assets).  A group is never a layer name, except the two operational
  topics that are one layer each (``inbox``, ``snapshot``).
* **Jobs** (``automation/jobs.py``): a topic job selects its group; a stage job (features, training,
  scoring) selects its layers (``STAGE_LAYERS``) plus the few assets whose step belongs to another stage
  than their layer, listed by key there with the reason.

``ecom_pipeline_tests/test_asset_layout.py`` fails when an asset breaks the rule.
"""

from __future__ import annotations

LAYERS = ("raw", "staging", "features", "models", "serving", "reports", "inbox", "snapshot")

# topic -> what it holds (one group per topic)
TOPICS = {
    "ingest": "raw and staging tables of the configured source (assets/ingest.py)",
    "forecasting": "daily/weekly series, calendar, SARIMA / LSTM / ST-GCN backtests, forecasts, anomalies",
    "spatial": "regions, flows, kNN graph, region embeddings, the delivery-delay model",
    "embeddings": "text, image and video embeddings, the fused product embedding, similar products",
    "reviews": "review sentiment and topics, the sentiment models (fine-tuned, federated), aggregates",
    "recommender": "interactions, recommender evaluation and models, recommendations, related items",
    "users": "user profiles and repurchase scores",
    "sharing": "differentially private reports safe to share outside the company",
    "operations": "the model registry report and the run-failure report",
    "inbox": "delivered files per day and the daily partitioned ingest",
    "snapshot": "the read-only snapshot readers open instead of the warehouse",
}

# the layers each stage job refreshes (the exceptions are listed by key in automation/jobs.py)
STAGE_LAYERS = {
    "features": ("features",),
    "training": ("models",),
    "scoring": ("serving", "reports", "snapshot"),
}
