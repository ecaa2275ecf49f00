"""Sequence recommender asset: SASRec-style model vs every other recommender, served per customer segment.

Thin asset over :mod:`ecom_pipeline.ml.recsys.sequence`: the one user-level temporal split, per-user NDCG@k,
the paired bootstrap and the serving gate per segment (customers with history / new customers).  Runs in the
``gpu`` pool (CUDA when the compute resource has it, the small CPU settings otherwise).
"""

import math

import dagster as dg
import pandas as pd

from ecom_pipeline.assets.recommender import GROUP, INTERACTIONS, _interactions, _mlflow_name, _user_regions
from ecom_pipeline.resources import ComputeResource, MLflowResource, SourceResource, WarehouseResource
from ecom_pipeline.resources.model_metrics import MetricRecord, record_model_metrics
from ecom_pipeline.routing import GPU_OP_TAGS, GPU_POOL

TASK = "recommendation_sequence"  # the task in ml.serving_decisions / ml.model_metrics
REGISTERED_NAME = "ecom.recsys.sasrec_item"
ALL_SEQUENCE_MODELS = ("popularity", "recent_popularity", "regional_popularity", "item_knn", "repeat", "als",
                       "two_tower", "sasrec")


class SequenceRecommenderConfig(dg.Config):
    k: int = 10
    test_fraction: float = 0.2
    min_eval_users: int = 5
    # False: repeat purchases stay in the truth and the rankings (what the shop's customers really buy next);
    # True: new products only (the discovery protocol of ml/recommender_evaluation)
    exclude_seen: bool = False
    models: list[str] = list(ALL_SEQUENCE_MODELS)  # noqa: RUF012 - a Dagster (pydantic) config field
    dim: int = 64
    max_len: int = 50
    layers: int = 2
    heads: int = 2
    dropout: float = 0.2
    lr: float = 2e-3
    batch_size: int = 128  # CPU path
    gpu_batch_size: int = 512
    max_epochs: int = 40
    patience: int = 3
    validation_fraction: float = 0.1  # of the training interactions' time, for early stopping
    max_seconds: float = 300.0  # per training phase (validation run, refit), as the two-tower's cap
    two_tower_max_seconds: float = 300.0
    seed: int = 0


def _side_inputs(warehouse: WarehouseResource) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    from ecom_pipeline.warehouse.tables import read_table, table_exists

    with warehouse.connect(read_only=True) as con:
        products = read_table(con, "staging.products", ["product_id", "category", "price"])
        emb = (read_table(con, "features.product_embeddings", ["product_id", "embedding"])
               if table_exists(con, "features.product_embeddings") else None)
    return products, emb


@dg.asset(
    key_prefix=["ml"], group_name=GROUP, tags={"ecom/stage": "training"}, pool=GPU_POOL, op_tags=GPU_OP_TAGS,
    kinds={"pytorch", "mlflow", "duckdb"}, deps=[INTERACTIONS, dg.AssetKey(["features", "product_embeddings"])],
    description="Sequence recommender (SASRec-style self-attention over each customer's ordered baskets, item "
    "= id + product embedding, learned repeat term) against popularity, item-kNN, 'repeat' (own most-bought "
    "items), ALS and the two-tower on the user-level temporal split; per-segment serving gate "
    "(ml.serving_decisions task recommendation_sequence), ml.model_metrics with intervals, MLflow "
    "(ecom.recsys.sasrec_item), serving.sequence_recommendations from the model each segment's gate serves.",
)
def sequence_recommender(context: dg.AssetExecutionContext, config: SequenceRecommenderConfig,
                         warehouse: WarehouseResource, mlflow: MLflowResource, compute: ComputeResource,
                         source: SourceResource) -> dg.MaterializeResult:
    import mlflow as mlf

    from ecom_pipeline.ml.recsys.data import build_data
    from ecom_pipeline.ml.recsys.sequence import (
        NON_PERSONALISED,
        SEQUENCE_BASELINES,
        evaluate_sequence_models,
        gate_segments,
        global_rows,
        make_sequence_model,
        recommendation_rows,
        versus_non_personalised,
    )
    from ecom_pipeline.ml.registry import Candidate, log_and_register
    from ecom_pipeline.ml.serving_gate import record_decisions
    from ecom_pipeline.warehouse.tables import write_table

    device = compute.torch_device()
    gpu = device.startswith("cuda")
    interactions = _interactions(warehouse)
    regions = _user_regions(warehouse)
    products, product_embeddings = _side_inputs(warehouse)
    sasrec = {"dim": config.dim, "max_len": config.max_len, "layers": config.layers, "heads": config.heads,
              "dropout": config.dropout, "lr": config.lr, "max_epochs": config.max_epochs,
              "batch_size": config.gpu_batch_size if gpu else config.batch_size, "patience": config.patience,
              "validation_fraction": config.validation_fraction, "k": config.k, "seed": config.seed,
              "max_seconds": config.max_seconds}
    params = {"sasrec": sasrec, "two_tower": {"max_seconds": config.two_tower_max_seconds, "seed": config.seed}}
    fit_args = {"sasrec": {"product_embeddings": product_embeddings, "device": device},
                "two_tower": {"products": products, "product_embeddings": product_embeddings, "device": device}}
    res = evaluate_sequence_models(interactions, k=config.k, models=tuple(config.models), params=params,
                                   fit_args=fit_args, user_regions=regions, exclude_seen=config.exclude_seen,
                                   test_fraction=config.test_fraction, min_eval_users=config.min_eval_users,
                                   seed=config.seed, log=context.log.info)
    if res.message:
        context.log.warning(res.message)
    decisions, comparisons = gate_segments(res, TASK) if res.metrics else ([], [])
    protocol = "new_items" if config.exclude_seen else "repeats"
    dataset, split = f"{source.kind}:item_{protocol}", f"temporal@{pd.Timestamp(res.cutoff):%Y-%m-%d}"
    ndcg = f"ndcg@{config.k}"
    scores = {m: v.get(ndcg) for m, v in res.metrics.items()}
    best_base = max((m for m in scores if m in SEQUENCE_BASELINES), key=scores.get, default=None)
    outcome = None
    with mlflow.start_run("sequence_recommender", tags={"group": GROUP, "dataset": source.kind,
                                                        "device": device, "protocol": protocol}) as run:
        run_id = run.info.run_id
        mlf.log_params({**{f"sasrec.{k}": v for k, v in sasrec.items()}, "k": config.k, "device": device,
                        "protocol": protocol, "models": ",".join(config.models)})
        mlf.log_metrics({f"users.{s}": n for s, n in res.users.items()})
        for m, ms in res.metrics.items():
            mlf.log_metrics({_mlflow_name(f"item.{m}.{k}"): v for k, v in ms.items() if not math.isnan(v)})
        model = res.fitted.get("sasrec")
        if model is not None:
            for step, loss in enumerate(model.loss_history):
                mlf.log_metric("sasrec.train_loss", loss, step=step)
            for step, v in enumerate(model.validation_curve):
                mlf.log_metric(_mlflow_name(f"sasrec.validation_{ndcg}"), v, step=step)
            outcome = log_and_register(Candidate(
                name=REGISTERED_NAME, flavor="pytorch", model=model.net.cpu(), input_example=None, metric=ndcg,
                value=scores["sasrec"], baseline=best_base, baseline_value=scores.get(best_base)))
            context.log.info(f"registered {outcome.name} v{outcome.version}: {outcome.reason}")
    records = [MetricRecord(model=m, task=TASK, dataset=dataset, split=split, metric=k, value=v,
                            baseline=best_base or "", baseline_value=res.metrics.get(best_base, {}).get(k),
                            mlflow_run_id=run_id)
               for m, ms in res.metrics.items() for k, v in ms.items() if not math.isnan(v)]
    records += [MetricRecord.from_comparison(c, model=m, task=TASK, dataset=f"{dataset}:{seg}", split=split,
                                             baseline=b, mlflow_run_id=run_id) for seg, m, b, c in comparisons]
    evaluation = pd.DataFrame(
        [{"segment": seg, "model": m, "baseline": b, "metric": c.metric, "value": c.candidate_value,
          "baseline_value": c.baseline_value, "ci_low": c.ci_low, "ci_high": c.ci_high, "customers": c.n_units,
          "significant": c.significant, "protocol": protocol, "cutoff": res.cutoff} for seg, m, b, c in comparisons],
        columns=["segment", "model", "baseline", "metric", "value", "baseline_value", "ci_low", "ci_high",
                 "customers", "significant", "protocol", "cutoff"])

    # serving: each segment's gated model, refit on every interaction (SASRec: its chosen number of epochs)
    frames, served = [], {d.scope: d.served for d in decisions}
    if served and not interactions.empty:
        data = build_data(interactions, "product_id", user_regions=regions)
        for segment, name in served.items():
            args = dict(fit_args.get(name, {}))
            if name == "sasrec":
                args.update(epochs=max(res.fitted["sasrec"].chosen_epochs, 1), exclude_seen=config.exclude_seen)
            fitted = make_sequence_model(name, **params.get(name, {})).fit(data, **args)
            version = (f"{REGISTERED_NAME} v{outcome.version} refit on all data" if name == "sasrec" and outcome
                       else "baseline (no training)" if name in (*NON_PERSONALISED, "repeat")
                       else "refit on all data (not registered)")
            if segment == "new":
                frames.append(global_rows(fitted, data, config.k, model_name=name, model_version=version))
            else:
                frames.append(recommendation_rows(fitted, data, list(data.users), config.k,
                                                  exclude_seen=config.exclude_seen, model_name=name,
                                                  model_version=version))
    serving = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["customer_id", "segment", "rank", "item_id", "model", "model_version"])
    with warehouse.connect() as con:
        record_model_metrics(con, records)
        write_table(con, "ml.sequence_evaluation", evaluation)
        record_decisions(con, TASK, decisions)
        write_table(con, "serving.sequence_recommendations", serving)

    target = versus_non_personalised(res) if res.metrics else {}
    sas = res.fitted.get("sasrec")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(serving), "mlflow_run_id": run_id, "device": device, "protocol": protocol,
        "cutoff": str(res.cutoff), "evaluable_customers": res.users,
        "comparison": dg.MetadataValue.md("\n".join(
            f"- {seg}: {m} {c.candidate_value:.4f} vs {b} {c.baseline_value:.4f}, difference "
            f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}] over {c.n_units} customers" for seg, m, b, c in comparisons)
            or f"not evaluated: {res.message}"),
        "served": {d.scope: f"{d.served} ({d.reason})" for d in decisions},
        "personalised_vs_non_personalised": {k: (round(v, 4) if isinstance(v, float) else v)
                                             for k, v in target.items()},
        "sasrec": ({"chosen_epochs": sas.chosen_epochs, "stopped": sas.stopped_early or "no",
                    "inputs_used": sas.inputs_used} if sas else "not trained"),
        "registered": f"{outcome.name} v{outcome.version} (promoted={outcome.promoted})" if outcome else "none",
    })


def build(settings=None) -> dg.Definitions:
    return dg.Definitions(assets=[sequence_recommender])
