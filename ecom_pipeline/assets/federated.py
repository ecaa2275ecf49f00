"""Federated sentiment head: thin asset over :mod:`ecom_pipeline.ml.text.federated`.

The parties are the customers' states: each keeps its reviews and embeddings, only head parameters travel.
"""

import dagster as dg
import numpy as np
import pandas as pd

from ecom_pipeline.resources import MLflowResource, SourceResource, WarehouseResource
from ecom_pipeline.routing import WAREHOUSE_OP_TAGS, WAREHOUSE_POOL

MODEL_NAME = "ecom.sentiment_federated.{setting}"


class FederatedSentimentConfig(dg.Config):
    setting: str = "binary"  # binary | 3class
    rounds: int = 30
    local_epochs: int = 1
    lr: float = 0.1
    max_parties: int = 8
    min_party_train: int = 30
    test_fraction: float = 0.2
    dp_noise_multiplier: float = 0.0  # > 0: each party clips and noises its updates; ε is reported
    dp_clip: float = 1.0
    dp_delta: float = 1e-5
    min_reviews: int = 200


def _reviews_with_party(warehouse: WarehouseResource) -> tuple[pd.DataFrame, np.ndarray]:
    """Embedded reviews with their score, time and party (the customer's state; 'unknown' without one)."""
    from ecom_pipeline.ml.encoders.store import read_vectors, table_exists

    emb_table = "features.review_text_embeddings"
    with warehouse.connect(read_only=True) as con:
        if not (table_exists(con, emb_table) and table_exists(con, "staging.reviews")):
            return pd.DataFrame(columns=["review_id", "score", "created_at", "party"]), np.zeros(
                (0, 0), np.float32
            )
        keys, mat = read_vectors(con, emb_table, "review_id")
        state = "coalesce(c.state, 'unknown')" if table_exists(con, "staging.customers") else "'unknown'"
        join = (
            "LEFT JOIN staging.customers c ON c.customer_id = r.customer_id"
            if table_exists(con, "staging.customers")
            else ""
        )
        meta = con.execute(
            f"SELECT r.review_id, r.score, r.created_at, {state} AS party "
            f"FROM staging.reviews r {join} WHERE r.score IS NOT NULL AND r.created_at IS NOT NULL"
        ).fetchdf()
    index = {k: i for i, k in enumerate(keys)}
    meta = meta[meta["review_id"].isin(index.keys())].reset_index(drop=True)
    return meta, (mat[[index[k] for k in meta["review_id"]]] if len(meta) else np.zeros((0, 0), np.float32))


def _metric_records(res, setting: str, dataset: str) -> list:
    """ml.model_metrics rows: FedAvg against centralised and local-only training, each beside its baseline."""
    from ecom_pipeline.resources.model_metrics import MetricRecord

    task, acc = f"sentiment_{setting}_federated", res.accuracy
    # the interval and the number of test reviews travel in `split` (the table has no interval columns)
    split = f"temporal_test n={res.n_test}"
    records = []
    for model, baseline in (
        ("fedavg", "centralised"),
        ("fedavg", "local_only"),
        ("fedavg", "centralised_sentiment_head"),
        ("local_only", "majority"),
        ("centralised", "majority"),
    ):
        lo, hi = res.interval[model]
        records.append(
            MetricRecord(
                f"sentiment_{model}",
                task,
                dataset,
                f"{split} ci95=[{lo:.4f},{hi:.4f}]",
                "accuracy",
                acc[model],
                baseline,
                acc[baseline],
            )
        )
    records.append(
        MetricRecord(
            "sentiment_fedavg",
            task,
            dataset,
            split,
            "macro_f1",
            res.macro_f1["fedavg"],
            "centralised",
            res.macro_f1["centralised"],
        )
    )
    return records


def _model_run(res, cfg, dataset: str, emb: np.ndarray):
    from ecom_pipeline.ml.registry import Candidate, ModelRun
    from ecom_pipeline.ml.text.federated import to_sklearn

    metrics = {
        k.replace("@", "_"): float(v)
        for k, v in res.summary().items()
        if isinstance(v, int | float) and np.isfinite(v)
    }
    for name, (value, lo, hi) in res.difference.items():
        metrics.update({name: value, f"{name}_ci_low": lo, f"{name}_ci_high": hi})
    return ModelRun(
        f"federated_sentiment_{cfg.setting}",
        tags={"task": "sentiment", "setting": cfg.setting, "training_path": "fedavg_flower"},
        params={
            "setting": cfg.setting,
            "rounds": cfg.rounds,
            "local_epochs": cfg.local_epochs,
            "lr": cfg.lr,
            "parties": ",".join(res.parties),
            "n_train": res.n_train,
            "n_test": res.n_test,
            "cutoff": res.cutoff,
            "dp_noise_multiplier": cfg.dp_noise_multiplier,
            "dp_clip": cfg.dp_clip,
            "dp_delta": cfg.dp_delta,
            "dataset": dataset,
        },
        metrics=metrics,
        dicts={"federated_summary.json": res.summary()},
        candidates=[
            Candidate(
                MODEL_NAME.format(setting=cfg.setting),
                "sklearn",
                to_sklearn(res.params, res.mean, res.std),
                emb[:2],
                "accuracy",
                res.accuracy["fedavg"],
                baseline="centralised",
                baseline_value=res.accuracy["centralised"],
            )
        ],
    )


def _federated_config(config: FederatedSentimentConfig):
    from ecom_pipeline.ml.text.federated import FederatedConfig

    return FederatedConfig(
        setting=config.setting,
        rounds=config.rounds,
        local_epochs=config.local_epochs,
        lr=config.lr,
        max_parties=config.max_parties,
        min_party_train=config.min_party_train,
        test_fraction=config.test_fraction,
        dp_noise_multiplier=config.dp_noise_multiplier,
        dp_clip=config.dp_clip,
        dp_delta=config.dp_delta,
    )


@dg.asset(
    key=dg.AssetKey(["models", "federated_sentiment"]),
    group_name="reviews",
    tags={"ecom/stage": "training"},
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
    kinds={"scikitlearn", "mlflow"},
    deps=[
        dg.AssetKey(["features", "review_text_embeddings"]),
        dg.AssetKey(["staging", "reviews"]),
        dg.AssetKey(["staging", "customers"]),
    ],
    description="Sentiment head trained with federated averaging (Flower FedAvg, in-process) across the "
    "customers' states, which never share reviews; compared with centralised and local-only training on the "
    "same time split (bootstrap intervals); optional client-side DP noise with ε. MLflow + ml.model_metrics.",
)
def federated_sentiment(
    context: dg.AssetExecutionContext,
    config: FederatedSentimentConfig,
    warehouse: WarehouseResource,
    mlflow: MLflowResource,
    source: SourceResource,
):
    from ecom_pipeline.ml.text.federated import train_and_compare

    frame, emb = _reviews_with_party(warehouse)
    if len(frame) < config.min_reviews:
        msg = f"only {len(frame)} embedded reviews with a score (< {config.min_reviews}): not trained"
        context.log.warning(msg)
        return dg.MaterializeResult(metadata={"message": msg, "training_path": "skipped"})
    cfg = _federated_config(config)
    res = train_and_compare(emb, frame, cfg)
    dataset = source.dataset_name
    acc = res.accuracy
    recorded = mlflow.record_model(
        _model_run(res, cfg, dataset, emb),
        warehouse=warehouse,
        metric_records=_metric_records(res, cfg.setting, dataset),
    )
    out, run_id = recorded.outcomes[0], recorded.run_id
    d_central, d_local = (
        res.difference["accuracy_fedavg_minus_centralised"],
        res.difference["accuracy_fedavg_minus_local_only"],
    )
    context.log.info(
        f"FedAvg accuracy {acc['fedavg']:.3f} vs centralised {acc['centralised']:.3f} "
        f"(Δ {d_central[0]:+.3f} [{d_central[1]:+.3f}, {d_central[2]:+.3f}]) vs local-only "
        f"{acc['local_only']:.3f} (Δ {d_local[0]:+.3f} [{d_local[1]:+.3f}, {d_local[2]:+.3f}])"
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": res.n_test,
            "dataset": dataset,
            "parties": res.parties,
            "party_train_reviews": dg.MetadataValue.json(res.party_train),
            "results": dg.MetadataValue.json(res.summary()),
            "accuracy_fedavg": acc["fedavg"],
            "accuracy_centralised": acc["centralised"],
            "accuracy_local_only": acc["local_only"],
            "within_2_points_of_centralised": bool(acc["fedavg"] >= acc["centralised"] - 0.02),
            "above_local_only": bool(acc["fedavg"] > acc["local_only"]),
            "dp_epsilon": res.epsilon if np.isfinite(res.epsilon) else "no DP noise",
            "registered": f"{out.name} v{out.version}",
            "mlflow_run_id": run_id,
            "training_path": "fedavg_flower_in_process",
        }
    )


def build() -> dg.Definitions:
    return dg.Definitions(assets=[federated_sentiment])
