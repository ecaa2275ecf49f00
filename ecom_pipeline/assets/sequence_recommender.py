"""Sequence recommender asset: SASRec-style model vs every other recommender, served per customer segment.

Thin asset over :mod:`ecom_pipeline.ml.recsys.sequence`: the one user-level temporal split, per-user NDCG@k,
the paired bootstrap and the serving gate per segment (customers with history / new customers).  Runs in the
``gpu`` pool (CUDA when the compute resource has it, the small CPU settings otherwise).
"""

import math

import dagster as dg
import pandas as pd

from ecom_pipeline.assets.recommender import (
    GROUP,
    INTERACTIONS,
    _interaction_data,
    _mlflow_name,
    _user_regions,
)
from ecom_pipeline.ml.recsys.metrics import MAX_EVAL_USERS
from ecom_pipeline.resources import ComputeResource, MLflowResource, SourceResource, WarehouseResource
from ecom_pipeline.resources.model_metrics import MetricRecord
from ecom_pipeline.routing import GPU_OP_TAGS, GPU_POOL, large_memory

TASK = "recommendation_sequence"  # the task in ml.serving_decisions / ml.model_metrics
REGISTERED_NAME = "ecom.recsys.sasrec_item"
ALL_SEQUENCE_MODELS = (
    "popularity",
    "recent_popularity",
    "regional_popularity",
    "item_knn",
    "repeat",
    "als",
    "two_tower",
    "sasrec",
)


class SequenceRecommenderConfig(dg.Config):
    k: int = 10
    test_fraction: float = 0.2
    min_eval_users: int = 5
    max_eval_users: int = MAX_EVAL_USERS  # evaluated returning customers (a seeded sample above it); 0 = all
    # False: repeat purchases stay in the truth and the rankings (what the shop's customers really buy next);
    # True: new products only (the discovery protocol of models/recommender_evaluation)
    exclude_seen: bool = False
    models: list[str] = list(ALL_SEQUENCE_MODELS)  # noqa: RUF012 - a Dagster (pydantic) config field
    dim: int = 64
    max_len: int = 50
    layers: int = 2
    heads: int = 2
    dropout: float = 0.2
    lr: float = 2e-3
    batch_size_cpu: int = 128
    batch_size_cuda: int = 512
    max_epochs: int = 40
    patience: int = 3
    validation_fraction: float = 0.1  # of the training interactions' time, for early stopping
    max_seconds: float = 300.0  # per training phase (validation run, refit), as the two-tower's cap
    # False: when the cap ended the validation run at its best epoch, keep that network instead of a second
    # capped run on all data: half the fit time, measured significantly worse on the UK shop (docs/models.md)
    refit_when_capped: bool = True
    two_tower_max_seconds: float = 300.0
    seed: int = 0


def _side_inputs(warehouse: WarehouseResource) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    from ecom_pipeline.warehouse.tables import read_table, table_exists

    with warehouse.connect(read_only=True) as con:
        products = read_table(con, "staging.products", ["product_id", "category", "price"])
        emb = (
            read_table(con, "features.product_embeddings", ["product_id", "embedding"])
            if table_exists(con, "features.product_embeddings")
            else None
        )
    return products, emb


@dg.asset(
    key_prefix=["models"],
    group_name=GROUP,
    tags={"ecom/stage": "training"},
    pool=GPU_POOL,
    op_tags=large_memory(GPU_OP_TAGS),
    kinds={"pytorch", "mlflow", "duckdb"},
    deps=[INTERACTIONS, dg.AssetKey(["features", "product_embeddings"])],
    description="Sequence recommender (SASRec-style self-attention over each customer's ordered baskets, "
    "item = id + product embedding, learned repeat term) against popularity, item-kNN, 'repeat' (own "
    "most-bought items), ALS and the two-tower on the user-level temporal split; per-segment serving gate "
    "(ml.serving_decisions task recommendation_sequence), ml.model_metrics with intervals, MLflow "
    "(ecom.recsys.sasrec_item), serving.sequence_recommendations from the model each segment's gate serves.",
)
def sequence_recommender(
    context: dg.AssetExecutionContext,
    config: SequenceRecommenderConfig,
    warehouse: WarehouseResource,
    mlflow: MLflowResource,
    compute: ComputeResource,
    source: SourceResource,
) -> dg.MaterializeResult:
    from ecom_pipeline.ml.recsys.sequence import evaluation_frame, gate_segments, serving_recommendations
    from ecom_pipeline.ml.serving_gate import record_decisions
    from ecom_pipeline.warehouse.tables import write_table

    device = compute.torch_device()
    compute.configure_threads()  # its own count, not the previous step's (in-process runs share one process)
    # indexed in DuckDB: no frame of every interaction's id strings (11.8M rows at 1M orders)
    interactions = _interaction_data(warehouse, _user_regions(warehouse))
    products, product_embeddings = _side_inputs(warehouse)
    params = _params(config, compute.sized(config, "batch_size", device))
    fit_args = {
        "sasrec": {"product_embeddings": product_embeddings, "device": device},
        "two_tower": {"products": products, "product_embeddings": product_embeddings, "device": device},
    }
    res = _evaluate(context, config, interactions, params, fit_args)
    decisions, comparisons = gate_segments(res, TASK) if res.metrics else ([], [])
    protocol = "new_items" if config.exclude_seen else "repeats"
    records = _metric_records(
        res,
        comparisons,
        config.k,
        f"{source.kind}:item_{protocol}",
        f"temporal@{pd.Timestamp(res.cutoff):%Y-%m-%d}",
    )
    recorded = mlflow.record_model(
        _model_run(config, params["sasrec"], res, device, protocol, source.kind),
        warehouse=warehouse,
        metric_records=records,
    )
    outcome = recorded.outcome(REGISTERED_NAME)
    if outcome is not None:
        context.log.info(f"registered {outcome.name} v{outcome.version}: {outcome.reason}")
    serving = serving_recommendations(
        interactions,
        {d.scope: d.served for d in decisions},
        res,
        params=params,
        fit_args=fit_args,
        k=config.k,
        exclude_seen=config.exclude_seen,
        registered=f"{REGISTERED_NAME} v{outcome.version}" if outcome else None,
    )
    with warehouse.connect() as con:
        write_table(con, "ml.sequence_evaluation", evaluation_frame(comparisons, protocol, res.cutoff))
        record_decisions(con, TASK, decisions)
        write_table(con, "serving.sequence_recommendations", serving)
    return dg.MaterializeResult(
        metadata=_metadata(
            res, comparisons, decisions, outcome, len(serving), recorded.run_id, device, protocol
        )
    )


def _evaluate(context, config: SequenceRecommenderConfig, interactions, params: dict, fit_args: dict):
    """The sequence model and its peers on the user-level temporal split (a warning when it cannot run)."""
    from ecom_pipeline.ml.recsys.sequence import evaluate_sequence_models

    res = evaluate_sequence_models(
        interactions,
        k=config.k,
        models=tuple(config.models),
        params=params,
        fit_args=fit_args,
        exclude_seen=config.exclude_seen,
        test_fraction=config.test_fraction,
        min_eval_users=config.min_eval_users,
        eval_users=config.max_eval_users,
        seed=config.seed,
        log=context.log.info,
    )
    if res.message:
        context.log.warning(res.message)
    return res


def _params(config: SequenceRecommenderConfig, batch_size: int) -> dict:
    sasrec = {
        "dim": config.dim,
        "max_len": config.max_len,
        "layers": config.layers,
        "heads": config.heads,
        "dropout": config.dropout,
        "lr": config.lr,
        "max_epochs": config.max_epochs,
        "batch_size": batch_size,
        "patience": config.patience,
        "validation_fraction": config.validation_fraction,
        "k": config.k,
        "seed": config.seed,
        "max_seconds": config.max_seconds,
        "refit_when_capped": config.refit_when_capped,
    }
    return {"sasrec": sasrec, "two_tower": {"max_seconds": config.two_tower_max_seconds, "seed": config.seed}}


def _metric_records(res, comparisons, k: int, dataset: str, split: str) -> list[MetricRecord]:
    """Every model's metrics beside the best non-learned baseline, then each segment's gate comparison."""
    from ecom_pipeline.ml.recsys.sequence import SEQUENCE_BASELINES

    scores = {m: v.get(f"ndcg@{k}") for m, v in res.metrics.items()}
    best = max((m for m in scores if m in SEQUENCE_BASELINES), key=scores.get, default=None)
    records = [
        MetricRecord(
            model=m,
            task=TASK,
            dataset=dataset,
            split=split,
            metric=name,
            value=v,
            baseline=best or "",
            baseline_value=res.metrics.get(best, {}).get(name),
        )
        for m, ms in res.metrics.items()
        for name, v in ms.items()
        if not math.isnan(v)
    ]
    return records + [
        MetricRecord.from_comparison(
            c, model=m, task=TASK, dataset=f"{dataset}:{seg}", split=split, baseline=b
        )
        for seg, m, b, c in comparisons
    ]


def _model_run(
    config: SequenceRecommenderConfig, sasrec: dict, res, device: str, protocol: str, dataset: str
):
    """The MLflow run: parameters, per-model metrics, SASRec's loss and validation curves and its network."""
    from ecom_pipeline.ml.recsys.sequence import SEQUENCE_BASELINES
    from ecom_pipeline.ml.registry import Candidate, ModelRun

    ndcg = f"ndcg@{config.k}"
    scores = {m: v.get(ndcg) for m, v in res.metrics.items()}
    best = max((m for m in scores if m in SEQUENCE_BASELINES), key=scores.get, default=None)
    metrics = {f"users.{s}": n for s, n in res.users.items()}
    metrics |= {f"eligible_users.{s}": n for s, n in res.eligible.items()}
    metrics |= {
        _mlflow_name(f"item.{m}.{k}"): v
        for m, ms in res.metrics.items()
        for k, v in ms.items()
        if not math.isnan(v)
    }
    model = res.fitted.get("sasrec")
    run = ModelRun(
        "sequence_recommender",
        tags={"group": GROUP, "dataset": dataset, "device": device, "protocol": protocol},
        params={
            **{f"sasrec.{k}": v for k, v in sasrec.items()},
            "k": config.k,
            "device": device,
            "protocol": protocol,
            "models": ",".join(config.models),
        },
        metrics=metrics,
    )
    if model is not None:
        run.metric_steps = {
            "sasrec.train_loss": list(model.loss_history),
            _mlflow_name(f"sasrec.validation_{ndcg}"): list(model.validation_curve),
        }
        run.candidates = [
            Candidate(
                name=REGISTERED_NAME,
                flavor="pytorch",
                model=model.net.cpu(),
                input_example=None,
                metric=ndcg,
                value=scores["sasrec"],
                baseline=best,
                baseline_value=scores.get(best),
            )
        ]
    return run


def _metadata(
    res, comparisons, decisions, outcome, rows: int, run_id: str, device: str, protocol: str
) -> dict:
    from ecom_pipeline.ml.recsys.sequence import versus_non_personalised

    target = versus_non_personalised(res) if res.metrics else {}
    sas = res.fitted.get("sasrec")
    return {
        "dagster/row_count": rows,
        "mlflow_run_id": run_id,
        "device": device,
        "protocol": protocol,
        "cutoff": str(res.cutoff),
        "evaluated_customers": res.users,
        "evaluable_customers": res.eligible,  # before the evaluation sample (max_eval_users)
        "comparison": dg.MetadataValue.md(
            "\n".join(
                f"- {seg}: {m} {c.candidate_value:.4f} vs {b} {c.baseline_value:.4f}, difference "
                f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}] over {c.n_units} customers"
                for seg, m, b, c in comparisons
            )
            or f"not evaluated: {res.message}"
        ),
        "served": {d.scope: f"{d.served} ({d.reason})" for d in decisions},
        "personalised_vs_non_personalised": {
            k: (round(v, 4) if isinstance(v, float) else v) for k, v in target.items()
        },
        "sasrec": (
            {
                "chosen_epochs": sas.chosen_epochs,
                "stopped": sas.stopped_early or "no",
                "refit": sas.refit,
                "inputs_used": sas.inputs_used,
            }
            if sas
            else "not trained"
        ),
        "registered": f"{outcome.name} v{outcome.version} (promoted={outcome.promoted})"
        if outcome
        else "none",
    }


def build() -> dg.Definitions:
    return dg.Definitions(assets=[sequence_recommender])
