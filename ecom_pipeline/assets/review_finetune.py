"""The fine-tuned review model: the text encoder's top layers (CPU) or every layer (CUDA) + a head, trained
under a time budget (CPU seconds on CPU: ``ECOM_REVIEW_FINETUNE_CPU_BUDGET_S``; wall clock on CUDA) and
compared with the frozen-embedding head and TF-IDF on the one time split.

Thin asset over :mod:`ecom_pipeline.ml.text.finetune`.  The model is registered in the safe format
(``ecom.sentiment_finetuned``), its figures go to MLflow and ``ml.model_metrics`` with their intervals, and
the serving gate's decision per setting (fine-tune vs its best baseline) to ``ml.serving_decisions`` under the
task ``sentiment_finetuned``.
"""

import dagster as dg
import numpy as np
import pandas as pd

from ecom_pipeline.assets.reviews import GROUP, _labelled_reviews
from ecom_pipeline.resources import (
    ComputeResource,
    MLflowResource,
    PathsResource,
    SourceResource,
    WarehouseResource,
)
from ecom_pipeline.routing import GPU_OP_TAGS, GPU_POOL

TASK = "sentiment_finetuned"
BASELINE_LABELS = {"tfidf": "tfidf_logreg", "frozen_head": "sentiment_frozen_embeddings_head"}


class ReviewFinetuneConfig(dg.Config):
    text_encoder: str = "multilingual-e5-small"
    max_length: int = 128
    trainable_layers_cpu: int = 2  # top layers trained on cached bottom-layer states on CPU (0: every layer)
    trainable_layers_cuda: int = 0  # 0: every layer (the full fine-tune)
    epochs: int = 8
    lr: float = 1e-4
    head_lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 0.01
    prefix: str = "query"  # e5 input prefix ("query" / "passage"), chosen on the validation window
    lr_schedule: str = "constant"  # or "linear" (one warm-up epoch, then decay to 0)
    label_smoothing: float = 0.0
    average_best: int = 1  # average the weights of this many best epochs where validation says it helps
    layer_lr_decay: float = 1.0  # lr of each trained layer below the top one: x this per layer down
    lora_rank: int = 0  # > 0: LoRA adapters (peft) on the trained layers instead of their weights
    rdrop_alpha: float = 0.0  # R-Drop: weight of the symmetric KL between two dropout passes (0: off)
    # per-class logit offsets fitted on the pooled out-of-fold predictions of this many rolling windows of
    # training time (1: the one validation window; n > 1 costs n - 1 more fine-tunes); folded into the head
    offset_folds: int = 1
    # what ends training: "cpu" = the CPU-seconds budget (Settings), "wall" = ``wall_budget_s``, "none" =
    # ``epochs`` alone (patience aside), the same training whatever the machine's load
    budget_clock_cpu: str = "cpu"
    budget_clock_cuda: str = "wall"
    # wall clock of caching + training on CUDA; on CPU the budget is CPU seconds, from Settings
    # (ECOM_REVIEW_FINETUNE_CPU_BUDGET_S), so a busy shared machine does not shorten the training
    wall_budget_s: float = 900.0
    test_fraction: float = 0.2
    val_fraction: float = 0.15  # the end of training time, where epochs and class offsets are chosen
    min_reviews: int = 30
    # newest reviews trained and tested on: caching every review's states must fit the budget on CPU
    max_train_reviews: int = 20_000
    seed: int = 0


@dg.asset(
    key=dg.AssetKey(["models", "sentiment_finetuned"]),
    group_name=GROUP,
    tags={"ecom/stage": "training"},
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    kinds={"pytorch", "mlflow"},
    deps=[dg.AssetKey(["features", "review_text_embeddings"]), dg.AssetKey(["staging", "reviews"])],
    description="Review sentiment with the text encoder fine-tuned under a time budget (top layers on cached "
    "bottom-layer states on CPU, every layer on CUDA, class-weighted), vs the frozen-embedding head and "
    "TF-IDF on the same time split: 3-class macro-F1 and binary accuracy with paired-bootstrap intervals, in "
    "MLflow and ml.model_metrics; registered as `ecom.sentiment_finetuned` (safe format); the serving gate's "
    "decision in ml.serving_decisions (task sentiment_finetuned).",
)
def sentiment_finetuned(
    context: dg.AssetExecutionContext,
    config: ReviewFinetuneConfig,
    warehouse: WarehouseResource,
    mlflow: MLflowResource,
    compute: ComputeResource,
    source: SourceResource,
    paths: PathsResource,
):
    from ecom_pipeline.ml.encoders import load_text_encoder
    from ecom_pipeline.ml.serving_gate import record_decisions
    from ecom_pipeline.ml.text.finetune import compare_with_baselines

    docs, emb, emb_model, _ = _labelled_reviews(warehouse)
    docs, emb = _newest_reviews(docs, emb, config.max_train_reviews)
    device = compute.torch_device()
    compute.configure_threads()  # its own count, not the previous step's (in-process runs share one process)

    def skipped(message: str):
        context.log.warning(message)
        with warehouse.connect() as con:  # nothing evaluated this run: no earlier decision may stand
            record_decisions(con, TASK, [])
        return dg.MaterializeResult(
            metadata={"message": message, "device": device, "training_path": "skipped"}
        )

    if len(docs) < config.min_reviews:
        return skipped(
            f"only {len(docs)} reviews with text and embeddings (< {config.min_reviews}): "
            "fine-tune not trained"
        )
    encoder = load_text_encoder(
        config.text_encoder, models_dir=paths.models, device=device, max_length=config.max_length
    )
    settings = _finetune_settings(config, compute, device)
    try:
        rep = compare_with_baselines(
            docs,
            emb,
            encoder,
            settings=settings,
            test_fraction=config.test_fraction,
            val_fraction=config.val_fraction,
            progress=context.log.info,
        )
    except (ValueError, TimeoutError) as exc:
        return skipped(f"fine-tune not trained: {exc}")
    dataset = source.dataset_name
    recorded = mlflow.record_model(
        _model_run(config, rep, encoder.version, device, emb_model, dataset),
        warehouse=warehouse,
        metric_records=_metric_records(rep, dataset, f"temporal_test@{pd.Timestamp(rep.cutoff):%Y-%m-%d}"),
    )
    with warehouse.connect() as con:
        record_decisions(con, TASK, list(rep.decisions.values()))
    for setting, decision in rep.decisions.items():
        context.log.info(f"fine-tune {setting}: serves {decision.served}: {decision.reason}")
    return dg.MaterializeResult(metadata=_metadata(rep, recorded, device, len(docs)))


def _newest_reviews(docs: pd.DataFrame, emb: np.ndarray, max_reviews: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The newest ``max_reviews`` reviews and their embeddings, in their original order."""
    from ecom_pipeline.ml.encoders.store import bounded_batch

    newest, _ = bounded_batch(docs, max_reviews, by="created_at")
    if len(newest) < len(docs):
        keep = np.sort(newest.index.to_numpy())
        docs, emb = docs.iloc[keep].reset_index(drop=True), emb[keep]
    return docs, emb


def _finetune_settings(config: ReviewFinetuneConfig, compute: ComputeResource, device: str):
    """The training settings of the fine-tune, ``trainable_layers`` and ``budget_clock`` sized for the device.
    The budget: CPU seconds from Settings, the config's wall clock, or none (fixed epochs)."""
    from ecom_pipeline.config import Settings
    from ecom_pipeline.ml.text.finetune import FinetuneSettings

    budget_clock = compute.sized(config, "budget_clock", device)
    return FinetuneSettings(
        trainable_layers=compute.sized(config, "trainable_layers", device),
        epochs=config.epochs,
        lr=config.lr,
        head_lr=config.head_lr,
        batch_size=config.batch_size,
        budget_s=config.wall_budget_s
        if budget_clock == "wall"
        else Settings.from_env().review_finetune_cpu_budget_s,
        budget_clock=budget_clock,
        offset_folds=config.offset_folds,
        seed=config.seed,
        weight_decay=config.weight_decay,
        prefix=config.prefix,
        lr_schedule=config.lr_schedule,
        label_smoothing=config.label_smoothing,
        average_best=config.average_best,
        layer_lr_decay=config.layer_lr_decay,
        lora_rank=config.lora_rank,
        rdrop_alpha=config.rdrop_alpha,
    )


def _model_run(
    config: ReviewFinetuneConfig, rep, encoder_version: str, device: str, emb_model: str, dataset: str
):
    """The MLflow run: training settings and timings, every setting's metrics, the history and the model."""
    from ecom_pipeline.ml.registry import Candidate, ModelRun
    from ecom_pipeline.ml.text.finetune import FINETUNED_NAME

    ft = rep.finetune
    params = _run_params(config, rep, encoder_version, device, emb_model, dataset)
    metrics = {
        f"{setting}_{name}_{k}": v
        for setting, by_model in rep.metrics.items()
        for name, values in by_model.items()
        for k, v in values.items()
    }
    history = {
        "history": ft.history,
        "class_weights": ft.class_weights,
        "class_bias": ft.class_bias,
        "calibration": rep.calibration,
        "comparisons": {s: {k: c.as_dict() for k, c in cs.items()} for s, cs in rep.comparisons.items()},
        "decisions": {s: d.reason for s, d in rep.decisions.items()},
    }
    candidate = Candidate(
        FINETUNED_NAME,
        "pytorch",
        ft.model,
        None,
        "macro_f1",
        rep.metrics["3class"]["finetuned"]["macro_f1"],
        baseline="tfidf_logreg",
        baseline_value=rep.metrics["3class"]["tfidf"]["macro_f1"],
    )
    return ModelRun(
        "sentiment_finetuned",
        tags={"task": "sentiment", "training_path": ft.path},
        params=params,
        metrics=metrics,
        dicts={"finetune.json": history},
        candidates=[candidate],
    )


def _run_params(
    config: ReviewFinetuneConfig, rep, encoder_version: str, device: str, emb_model: str, dataset: str
) -> dict:
    """The run's parameters: the encoder, the training settings and timings, the split sizes and data."""
    ft = rep.finetune
    return {
        "text_encoder": encoder_version,
        "device": device,
        "trainable_layers": ft.trainable_layers,
        "n_layers": ft.n_layers,
        "budget_s": ft.budget_s,
        "budget_clock": ft.budget_clock,
        "seconds": ft.seconds,
        "cpu_seconds": ft.cpu_seconds,
        "stopped": ft.stopped,
        "epochs_run": ft.epochs_run,
        "best_epoch": ft.best_epoch,
        "lr": config.lr,
        "head_lr": config.head_lr,
        "weight_decay": config.weight_decay,
        "prefix": config.prefix,
        "lr_schedule": config.lr_schedule,
        "label_smoothing": config.label_smoothing,
        "averaged_epochs": str(ft.averaged_epochs),
        "layer_lr_decay": config.layer_lr_decay,
        "lora_rank": config.lora_rank,
        "rdrop_alpha": config.rdrop_alpha,
        "offset_folds": config.offset_folds,
        "offsets_fitted_on_reviews": rep.calibration.get("n_reviews"),
        "batch_size": config.batch_size,
        "n_fit": rep.n_fit,
        "n_val": rep.n_val,
        "cutoff": rep.cutoff,
        "val_cutoff": rep.val_cutoff,
        "embedding_model": emb_model,
        "dataset": dataset,
    }


def _metric_records(rep, dataset: str, split: str) -> list:
    from ecom_pipeline.resources.model_metrics import MetricRecord

    label = f"sentiment_{rep.finetune.path}"
    return [
        MetricRecord.from_comparison(
            comparison,
            model=label,
            task=f"sentiment_{setting}",
            dataset=dataset,
            split=split,
            baseline=BASELINE_LABELS[key.split("_vs_")[1]],
        )
        for setting, comparisons in rep.comparisons.items()
        for key, comparison in comparisons.items()
    ]


def _metadata(rep, recorded, device: str, reviews_used: int) -> dict:
    ft = rep.finetune
    outcome = recorded.outcomes[0] if recorded.outcomes else None
    summary = {}
    for setting, by_model in rep.metrics.items():
        summary[setting] = {
            name: {k: round(v, 4) for k, v in values.items()} for name, values in by_model.items()
        }
        summary[setting]["n_test"] = rep.n_test[setting]
        summary[setting]["diff_ci95"] = {
            k: [round(c.diff, 4), round(c.ci_low, 4), round(c.ci_high, 4)]
            for k, c in rep.comparisons[setting].items()
        }
        summary[setting]["gate"] = rep.decisions[setting].reason
    return {
        "device": device,
        "training_path": ft.path,
        "trainable_layers": ft.trainable_layers,
        "budget_s": ft.budget_s,
        "budget_clock": ft.budget_clock,
        "seconds": ft.seconds,
        "cpu_seconds": ft.cpu_seconds,
        "stopped": ft.stopped,
        "epochs_run": ft.epochs_run,
        "best_epoch": ft.best_epoch,
        "reviews_used": reviews_used,
        "n_fit": rep.n_fit,
        "n_val": rep.n_val,
        "cutoff": rep.cutoff,
        "mlflow_run_id": recorded.run_id,
        "registered": (
            f"{outcome.name} v{outcome.version} (promoted={outcome.promoted})" if outcome else "none"
        ),
        "served": dg.MetadataValue.json({s: d.served for s, d in rep.decisions.items()}),
        "results": dg.MetadataValue.json(summary),
    }


def build() -> dg.Definitions:
    return dg.Definitions(assets=[sentiment_finetuned])
