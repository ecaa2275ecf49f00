"""Review intelligence group: sentiment model (trained, evaluated, registered), per-review sentiment,
spatio-temporal satisfaction aggregates, complaint topics/intents and their trends.

Thin assets over :mod:`ecom_pipeline.ml.text`.
"""

import time

import dagster as dg
import numpy as np
import pandas as pd

from ecom_pipeline.ml.text.sentiment import BASELINE_NAME
from ecom_pipeline.ml.text.sentiment import HEAD_NAME as MODEL_NAME
from ecom_pipeline.resources import (
    ComputeResource,
    MLflowResource,
    PathsResource,
    SourceResource,
    WarehouseResource,
)
from ecom_pipeline.routing import GPU_OP_TAGS, GPU_POOL, WAREHOUSE_OP_TAGS, WAREHOUSE_POOL

GROUP = "reviews"
REVIEW_EMB = "features.review_text_embeddings"
SENTIMENT_TABLE = "features.review_sentiment"
TOPICS_TABLE = "features.review_topics"
SENTIMENT_COLUMNS = [
    "review_id",
    "product_id",
    "p_negative",
    "p_neutral",
    "p_positive",
    "label",
    "model",
    "model_version",
]


class SentimentConfig(dg.Config):
    test_fraction: float = 0.2
    head_C: float = 2.0
    baseline_C: float = 4.0
    settings: list[str] = ["3class", "binary"]
    # CUDA path only: full fine-tuning of the text encoder
    finetune_epochs: int = 2
    finetune_lr: float = 3e-5
    finetune_batch_size: int = 32
    finetune_budget_s: float = 3600.0  # wall clock of the full fine-tune (CUDA)
    text_encoder: str = "multilingual-e5-small"
    max_length: int = 128
    min_reviews: int = 30  # fewer labelled reviews with text than this: skip training with a message
    # train on at most the newest this many embedded reviews (the temporal split then tests on the newest of
    # them); bounds the weekly training at scale, the demo and Olist sample are far below. 0 = all.
    max_train_reviews: int = 200_000


def _labelled_reviews(warehouse: WarehouseResource) -> tuple[pd.DataFrame, np.ndarray, str, int]:
    """Reviews with text joined to their embeddings (row-aligned), the embedding model, and how many reviews
    with text have no embedding yet (the embedding backlog)."""
    from ecom_pipeline.ml.encoders.store import read_vectors, table_exists
    from ecom_pipeline.ml.text.reviews import review_documents

    empty = pd.DataFrame(
        columns=[
            "review_id",
            "order_id",
            "customer_id",
            "product_id",
            "score",
            "title",
            "text",
            "created_at",
            "doc",
            "input_hash",
        ]
    )
    with warehouse.connect(read_only=True) as con:
        if not table_exists(con, "staging.reviews") or not table_exists(con, REVIEW_EMB):
            return empty, np.zeros((0, 0), np.float32), "", 0
        reviews = con.execute(
            "SELECT review_id, order_id, customer_id, product_id, score, title, text, created_at "
            "FROM staging.reviews"
        ).fetchdf()
        keys, mat = read_vectors(con, REVIEW_EMB, "review_id")
        model = con.execute(f"SELECT any_value(model) FROM {REVIEW_EMB}").fetchall()[0][0] or ""
    docs = review_documents(reviews)
    if docs.empty:
        return empty, np.zeros((0, mat.shape[1] if mat.size else 0), np.float32), model, 0
    index = {k: i for i, k in enumerate(keys)}
    with_text = len(docs)
    docs = docs[docs["review_id"].isin(index.keys())].reset_index(drop=True)
    emb = (
        mat[[index[k] for k in docs["review_id"]]]
        if len(docs)
        else np.zeros((0, mat.shape[1] if mat.size else 0), np.float32)
    )
    return docs, emb, model, with_text - len(docs)


@dg.asset(
    key=dg.AssetKey(["models", "sentiment_model"]),
    group_name=GROUP,
    tags={"ecom/stage": "training"},
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    deps=[dg.AssetKey(["features", "review_text_embeddings"]), dg.AssetKey(["staging", "reviews"])],
    kinds={"scikitlearn", "pytorch", "mlflow"},
    description="Review sentiment (3-class and binary) on a time-based split: TF-IDF + logistic regression "
    "baseline vs a classifier head on frozen text embeddings (CPU) or full fine-tuning (CUDA). Metrics to "
    "MLflow and ml.model_metrics; models registered (`ecom.sentiment.<setting>`, champion alias).",
)
def sentiment_model(
    context: dg.AssetExecutionContext,
    config: SentimentConfig,
    warehouse: WarehouseResource,
    mlflow: MLflowResource,
    compute: ComputeResource,
    source: SourceResource,
    paths: PathsResource,
):
    from ecom_pipeline.ml.serving_gate import record_decisions

    docs, emb, emb_model, awaiting = _labelled_reviews(warehouse)
    available = len(docs)
    docs, emb = _newest_reviews(context, config, docs, emb)
    device = compute.torch_device()
    compute.configure_threads()  # its own count, not the previous step's (in-process runs share one process)
    training_path = "full_finetune" if compute.is_cuda(device) else "frozen_embeddings_head"
    if len(docs) < config.min_reviews:
        return _untrained(context, config, warehouse, len(docs), device)
    dataset = source.dataset_name
    summary, decisions = {}, []
    for setting in config.settings:
        summary[setting], decision = _train_setting(
            context,
            config,
            setting,
            docs,
            emb,
            emb_model,
            device,
            dataset,
            training_path,
            compute,
            mlflow,
            warehouse,
            paths,
        )
        if decision is not None:
            decisions.append(decision)
    with warehouse.connect() as con:
        # replaced every run (also with no decision: a setting that could not be evaluated serves nothing new)
        record_decisions(con, "sentiment", decisions)
    return dg.MaterializeResult(
        metadata={
            "device": device,
            "training_path": training_path,
            "embedding_model": emb_model,
            "dataset": dataset,
            "reviews_used": len(docs),
            "reviews_embedded": available,
            "max_train_reviews": config.max_train_reviews,
            "reviews_awaiting_embedding": awaiting,
            "results": dg.MetadataValue.json(summary),
        }
    )


def _newest_reviews(
    context: dg.AssetExecutionContext, config: SentimentConfig, docs: pd.DataFrame, emb: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray]:
    """The newest ``max_train_reviews`` embedded reviews (row order kept), logged when some are left out."""
    from ecom_pipeline.ml.encoders.store import bounded_batch

    available = len(docs)
    newest, _ = bounded_batch(docs, config.max_train_reviews, by="created_at")
    if len(newest) < available:
        keep = np.sort(newest.index.to_numpy())
        docs, emb = docs.iloc[keep].reset_index(drop=True), emb[keep]
        context.log.info(
            f"training on the newest {len(docs):,} of {available:,} embedded reviews "
            f"(max_train_reviews={config.max_train_reviews:,})"
        )
    return docs, emb


def _untrained(
    context: dg.AssetExecutionContext,
    config: SentimentConfig,
    warehouse: WarehouseResource,
    n_reviews: int,
    device: str,
) -> dg.MaterializeResult:
    """Too few reviews to train: say so and clear the sentiment serving decisions."""
    from ecom_pipeline.ml.serving_gate import record_decisions

    msg = f"only {n_reviews} reviews with text and embeddings (< {config.min_reviews}): sentiment not trained"
    context.log.warning(msg)
    with warehouse.connect() as con:  # no evaluation this run: no earlier decision may keep a head serving
        record_decisions(con, "sentiment", [])
    return dg.MaterializeResult(metadata={"message": msg, "device": device, "training_path": "skipped"})


def _train_setting(
    context: dg.AssetExecutionContext,
    config: SentimentConfig,
    setting: str,
    docs: pd.DataFrame,
    emb: np.ndarray,
    emb_model: str,
    device: str,
    dataset: str,
    training_path: str,
    compute: ComputeResource,
    mlflow: MLflowResource,
    warehouse: WarehouseResource,
    paths: PathsResource,
):
    """One setting fitted, evaluated against TF-IDF, recorded to MLflow and ml.model_metrics;
    ``(summary, serving decision)``, or ``({"message": why}, None)`` when it cannot be evaluated."""
    from ecom_pipeline.ml.text.sentiment import fit_and_evaluate

    t0 = time.monotonic()
    try:
        res = fit_and_evaluate(
            docs,
            emb,
            setting,
            test_fraction=config.test_fraction,
            head_C=config.head_C,
            baseline_C=config.baseline_C,
        )
    except ValueError as exc:
        context.log.warning(str(exc))
        return {"message": str(exc)}, None
    cuda = compute.is_cuda(device)
    finetuned = _finetuned(config, docs, res, setting, device, paths) if cuda else None
    model_metrics = finetuned[1] if finetuned else res.model_metrics
    path = "full_finetune" if finetuned else res.training_path
    run = _sentiment_run(
        config,
        setting,
        res,
        docs,
        emb,
        emb_model,
        device,
        dataset,
        training_path,
        model_metrics,
        finetuned,
    )
    records = _sentiment_records(res, setting, dataset, model_metrics, path)
    recorded = mlflow.record_model(run, warehouse=warehouse, metric_records=records)
    summary = _setting_summary(res, model_metrics, recorded, setting) | {
        "seconds": round(time.monotonic() - t0, 1)
    }
    context.log.info(
        f"sentiment {setting}: model macro_f1 {model_metrics['macro_f1']:.3f} vs TF-IDF "
        f"{res.baseline_metrics['macro_f1']:.3f}; serving {res.decision.served}: "
        f"{res.decision.reason}"
    )
    return summary, res.decision


def _finetuned(
    config: SentimentConfig, docs: pd.DataFrame, res, setting: str, device: str, paths: PathsResource
):
    """CUDA path: the text encoder fully fine-tuned on the same temporal split (``finetune_classifier`` with
    every layer trainable, no validation window: the last epoch is kept); ``(module, test metrics)``."""
    from ecom_pipeline.ml.encoders import load_text_encoder
    from ecom_pipeline.ml.splits import temporal_split
    from ecom_pipeline.ml.text.finetune import FinetuneSettings, finetune_classifier, predict_proba
    from ecom_pipeline.ml.text.sentiment import classification_metrics, sentiment_labels

    enc = load_text_encoder(
        config.text_encoder, models_dir=paths.models, device=device, max_length=config.max_length
    )
    y = sentiment_labels(docs["score"], setting)
    lab = docs[y >= 0].assign(_y=y[y >= 0])
    sp = temporal_split(lab, "created_at", cutoff=res.cutoff)
    settings = FinetuneSettings(
        trainable_layers=0,
        epochs=config.finetune_epochs,
        lr=config.finetune_lr,
        head_lr=config.finetune_lr,
        batch_size=config.finetune_batch_size,
        budget_s=config.finetune_budget_s,
        budget_clock="wall",  # the CUDA path: the GPU's time, not the CPU's, is what is spent
    )
    ft = finetune_classifier(
        enc, sp.train["doc"].tolist(), sp.train["_y"].to_numpy(), len(res.classes), settings=settings
    )
    probs = predict_proba(ft.model, enc, sp.test["doc"].tolist())
    return ft.model.cpu(), classification_metrics(
        sp.test["_y"], probs.argmax(1), res.classes
    )  # predicted on device


def _sentiment_run(
    config: SentimentConfig,
    setting: str,
    res,
    docs: pd.DataFrame,
    emb: np.ndarray,
    emb_model: str,
    device: str,
    dataset: str,
    training_path: str,
    model_metrics: dict,
    finetuned,
):
    """The MLflow record of one setting: model, TF-IDF and majority metrics; the fine-tuned encoder (CUDA),
    the embedding head and the TF-IDF baseline registered, in that order."""
    from ecom_pipeline.ml.registry import ModelRun

    candidates = _sentiment_candidates(setting, res, docs, emb, model_metrics, finetuned)
    return ModelRun(
        f"sentiment_{setting}",
        tags={"task": "sentiment", "setting": setting, "training_path": training_path},
        params={
            "setting": setting,
            "embedding_model": emb_model,
            "head_C": config.head_C,
            "baseline_C": config.baseline_C,
            "n_train": res.n_train,
            "n_test": res.n_test,
            "cutoff": res.cutoff,
            "device": device,
            "dataset": dataset,
        },
        metrics={
            **{f"model_{k}": v for k, v in model_metrics.items()},
            **{f"baseline_{k}": v for k, v in res.baseline_metrics.items()},
            **{f"majority_{k}": v for k, v in res.majority_metrics.items()},
        },
        dicts={"classes.json": {"classes": list(res.classes), "embedding_model": emb_model}},
        candidates=candidates,
    )


def _sentiment_candidates(
    setting: str, res, docs: pd.DataFrame, emb: np.ndarray, model_metrics: dict, finetuned
) -> list:
    """The models registered for one setting, in order: the fine-tuned encoder (CUDA only), the embedding
    head, the TF-IDF baseline."""
    from ecom_pipeline.ml.registry import Candidate

    candidates = (
        [
            Candidate(
                f"ecom.sentiment_finetuned.{setting}",
                "pytorch",
                finetuned[0],
                None,
                "macro_f1",
                model_metrics["macro_f1"],
            )
        ]
        if finetuned
        else []
    )
    candidates += [
        Candidate(
            MODEL_NAME.format(setting=setting),
            "sklearn",
            res.model,
            emb[:2],
            "macro_f1",
            res.model_metrics["macro_f1"],
        ),
        Candidate(
            BASELINE_NAME.format(setting=setting),
            "sklearn",
            res.baseline,
            docs["doc"].iloc[:2].tolist(),
            "macro_f1",
            res.baseline_metrics["macro_f1"],
        ),
    ]
    return candidates


def _sentiment_records(res, setting: str, dataset: str, model_metrics: dict, path: str) -> list:
    """ml.model_metrics rows of one setting: the model beside TF-IDF (the frozen head's macro-F1, the model
    the gate decides on, with its paired-bootstrap interval) and TF-IDF beside the majority class."""
    from ecom_pipeline.resources.model_metrics import MetricRecord

    split = f"temporal_test@{pd.Timestamp(res.cutoff):%Y-%m-%d}"
    task = f"sentiment_{setting}"
    records = [
        MetricRecord.from_comparison(
            res.comparison,
            model="sentiment_frozen_embeddings_head",
            task=task,
            dataset=dataset,
            split=split,
            baseline="tfidf_logreg",
        )
    ]
    for metric, value in model_metrics.items():
        if path == "frozen_embeddings_head" and metric == "macro_f1":
            continue  # written above with its interval
        records.append(
            MetricRecord(
                f"sentiment_{path}",
                task,
                dataset,
                split,
                metric,
                value,
                "tfidf_logreg",
                res.baseline_metrics.get(metric),
            )
        )
    for metric in ("accuracy", "macro_f1"):
        records.append(
            MetricRecord(
                "tfidf_logreg",
                task,
                dataset,
                split,
                metric,
                res.baseline_metrics[metric],
                "majority_class",
                res.majority_metrics[metric],
            )
        )
    return records


def _setting_summary(res, model_metrics: dict, recorded, setting: str) -> dict:
    head_out = recorded.outcome(MODEL_NAME.format(setting=setting))
    base_out = recorded.outcome(BASELINE_NAME.format(setting=setting))
    c = res.comparison
    return {
        "model": {k: round(v, 4) for k, v in model_metrics.items()},
        "baseline_tfidf": {k: round(v, 4) for k, v in res.baseline_metrics.items()},
        "majority": {k: round(v, 4) for k, v in res.majority_metrics.items()},
        "model_beats_baseline_macro_f1": bool(model_metrics["macro_f1"] > res.baseline_metrics["macro_f1"]),
        "macro_f1_diff_ci95": [round(c.ci_low, 4), round(c.ci_high, 4)],
        "n_test_units": c.n_units,
        "served": res.decision.served,
        "gate_reason": res.decision.reason,
        "n_train": res.n_train,
        "n_test": res.n_test,
        "cutoff": res.cutoff,
        "mlflow_run_id": recorded.run_id,
        "registered": f"{head_out.name} v{head_out.version} (promoted={head_out.promoted})",
        "baseline_registered": f"{base_out.name} v{base_out.version}",
    }


class ReviewSentimentConfig(dg.Config):
    # the fine-tuned model's tokenizer: the text encoder and length it was trained with (sentiment_finetuned)
    text_encoder: str = "multilingual-e5-small"
    max_length: int = 128


@dg.asset(
    key=dg.AssetKey(["features", "review_sentiment"]),
    group_name=GROUP,
    tags={"ecom/stage": "scoring"},
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
    kinds={"duckdb"},
    deps=[
        dg.AssetKey(["models", "sentiment_model"]),
        dg.AssetKey(["models", "sentiment_finetuned"]),
        dg.AssetKey(["features", "review_text_embeddings"]),
    ],
    description="Per review: class probabilities (negative/neutral/positive), the predicted label, and in "
    "`model` the model that produced the row: the fine-tuned encoder `ecom.sentiment_finetuned` when the "
    "serving gate (ml.serving_decisions, task sentiment_finetuned, scope 3class) says it beat its best "
    "baseline significantly; otherwise the embedding head `ecom.sentiment.3class` only when the gate (task "
    "sentiment, scope 3class) says it beat TF-IDF significantly, else the TF-IDF baseline "
    "`ecom.sentiment_baseline.3class`.",
)
def review_sentiment(
    context: dg.AssetExecutionContext,
    config: ReviewSentimentConfig,
    warehouse: WarehouseResource,
    mlflow: MLflowResource,
    paths: PathsResource,
):
    from ecom_pipeline.ml.serving_gate import served_model
    from ecom_pipeline.ml.text.finetune import FINETUNED_NAME

    docs, emb, emb_model, awaiting = _labelled_reviews(warehouse)
    head_name, base_name = MODEL_NAME.format(setting="3class"), BASELINE_NAME.format(setting="3class")
    out = pd.DataFrame(columns=SENTIMENT_COLUMNS)
    with warehouse.connect(read_only=True) as con:
        finetuned, ft_why = served_model(
            con, "sentiment_finetuned", "3class", candidate=FINETUNED_NAME, baseline=head_name
        )
        chosen, why = served_model(con, "sentiment", "3class", candidate=head_name, baseline=base_name)
    # the fine-tune first where its gate row serves it; otherwise (or if it does not load) what served before
    order = [FINETUNED_NAME] if finetuned == FINETUNED_NAME else []
    messages = [
        f"serving {FINETUNED_NAME}: {ft_why}"
        if order
        else f"not serving {FINETUNED_NAME} ({ft_why}); serving {chosen}: {why}"
    ]
    if len(docs):
        out = _predict_sentiment(order, chosen, docs, emb, emb_model, config, mlflow, paths, messages)
    else:
        messages.append("no reviews with text and embeddings")
    message = "; ".join(messages)
    if len(docs) and out.empty:
        context.log.warning(message)
    _write_review_sentiment(warehouse, out)
    if awaiting:
        context.log.warning(
            f"{awaiting:,} reviews with text have no embedding yet (embedding backlog): "
            "no sentiment for them until review_text_embeddings catches up"
        )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(out),
            "message": message,
            "served_model": str(out["model"].iloc[0]) if len(out) else "none",
            "reviews_awaiting_embedding": awaiting,
            "labels": out["label"].value_counts().to_dict() if len(out) else {},
        }
    )


def _predict_sentiment(
    order: list[str],
    chosen: str,
    docs: pd.DataFrame,
    emb: np.ndarray,
    emb_model: str,
    config: ReviewSentimentConfig,
    mlflow: MLflowResource,
    paths: PathsResource,
    messages: list[str],
) -> pd.DataFrame:
    """Per-review probabilities and label from the first model that loads and fits the inputs: ``order``
    (the fine-tune when its gate serves it), the gate's choice, its baseline. Why a model was skipped is
    appended to ``messages``; an empty frame when none serves."""
    from mlflow.exceptions import MlflowException

    from ecom_pipeline.ml.registry import load_serving_model
    from ecom_pipeline.ml.text.finetune import FINETUNED_NAME

    head_name, base_name = MODEL_NAME.format(setting="3class"), BASELINE_NAME.format(setting="3class")
    client = mlflow.client()
    for name in dict.fromkeys(order + [chosen, base_name]):  # the gate's choice, else its baseline
        try:  # a champion whose artifact does not load falls back to the former one (message says so)
            served = load_serving_model(name, "sklearn", client, key=mlflow.signing_key())
        except (LookupError, MlflowException) as exc:  # no registered model yet (e.g. too few reviews)
            messages.append(f"no champion for {name}: {exc}")
            continue
        model, version = served.model, served.version
        if served.fallback_reason:
            messages.append(served.fallback_reason)
        if name == FINETUNED_NAME:
            probs, problem = _finetuned_probs(model, docs["doc"].tolist(), config, paths)
            if problem:
                messages.append(f"{name}: {problem}; serving {chosen}")
                continue
            tag, model_classes = f"v{version}", list(range(probs.shape[1]))  # outputs index the classes
        elif name == head_name:
            if getattr(model, "n_features_in_", emb.shape[1]) != emb.shape[1]:
                messages.append(
                    f"{name} was trained on a different embedding model: re-run sentiment_model; "
                    f"serving {base_name}"
                )
                continue
            probs, tag = model.predict_proba(emb), f"v{version} on {emb_model}"
            model_classes = list(model.classes_)
        else:
            probs, tag = model.predict_proba(docs["doc"].tolist()), f"v{version}"
            model_classes = list(model.classes_)
        return _sentiment_frame(docs, probs, model_classes, name, tag)
    return pd.DataFrame(columns=SENTIMENT_COLUMNS)


def _sentiment_frame(
    docs: pd.DataFrame, probs: np.ndarray, model_classes: list, name: str, tag: str
) -> pd.DataFrame:
    """One row per review: P(class) for the 3 classes (0 for a class the model never saw), the argmax label,
    the model and its version."""
    from ecom_pipeline.ml.text.sentiment import SETTINGS

    classes = SETTINGS["3class"]
    out = pd.DataFrame({"review_id": docs["review_id"], "product_id": docs["product_id"]})
    for j, c in enumerate(classes):
        out[f"p_{c}"] = probs[:, model_classes.index(j)] if j in model_classes else 0.0
    out["label"] = [classes[i] for i in np.argmax(out[[f"p_{c}" for c in classes]].to_numpy(), axis=1)]
    out["model"] = name
    out["model_version"] = tag
    return out


def _write_review_sentiment(warehouse: WarehouseResource, out: pd.DataFrame) -> None:
    with warehouse.connect() as con:
        con.register("_s", out)
        con.execute(f"""CREATE OR REPLACE TABLE {SENTIMENT_TABLE} AS SELECT review_id::VARCHAR review_id,
                        product_id::VARCHAR product_id, p_negative::DOUBLE p_negative,
                        p_neutral::DOUBLE p_neutral, p_positive::DOUBLE p_positive, label::VARCHAR AS label,
                        model::VARCHAR model, model_version::VARCHAR model_version FROM _s""")
        con.unregister("_s")


def _finetuned_probs(
    model, texts: list[str], config: ReviewSentimentConfig, paths: PathsResource
) -> tuple[np.ndarray | None, str | None]:
    """3-class probabilities of the fine-tuned encoder (one full forward per review, on CPU), or why not."""
    from ecom_pipeline.ml.encoders import load_text_encoder
    from ecom_pipeline.ml.text.finetune import predict_proba
    from ecom_pipeline.ml.text.sentiment import SETTINGS

    encoder = load_text_encoder(
        config.text_encoder, models_dir=paths.models, device="cpu", max_length=config.max_length
    )
    vocab = model.backbone.config.vocab_size
    if len(encoder.tokenizer) > vocab or model.head.out_features != len(SETTINGS["3class"]):
        return None, (
            f"does not match {config.text_encoder}'s tokenizer ({len(encoder.tokenizer)} tokens vs "
            f"{vocab}) or the 3 classes: re-run sentiment_finetuned"
        )
    return predict_proba(model, encoder, texts), None


AGGREGATES = {
    "product": ("product_id",),
    "seller": ("seller_id",),
    "category": ("category",),
    "state_month": ("state", "month"),
}


@dg.asset(
    key=dg.AssetKey(["reports", "sentiment_aggregates"]),
    group_name=GROUP,
    tags={"ecom/stage": "scoring"},
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
    kinds={"duckdb"},
    deps=[
        dg.AssetKey(["features", "review_sentiment"]),
        dg.AssetKey(["staging", "order_items"]),
        dg.AssetKey(["staging", "products"]),
        dg.AssetKey(["staging", "customers"]),
    ],
    description="Satisfaction per product, seller, category and customer state × month: reviews, mean "
    "score, share predicted negative, mean P(positive). Tables reports.sentiment_by_<level>.",
)
def sentiment_aggregates(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, paths: PathsResource
):
    from ecom_pipeline.ml.encoders.store import table_exists
    from ecom_pipeline.ml.text.aggregates import sentiment_aggregate_sql
    from ecom_pipeline.ml.text.plots import plot_share_negative

    counts = {}
    with warehouse.connect() as con:
        have = {
            t: table_exists(con, t)
            for t in (
                "staging.reviews",
                SENTIMENT_TABLE,
                "staging.order_items",
                "staging.products",
                "staging.customers",
            )
        }
        for level in AGGREGATES:
            table = f"reports.sentiment_by_{level}"
            con.execute(f"CREATE OR REPLACE TABLE {table} AS {sentiment_aggregate_sql(level, have)}")
            counts[level] = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        by_state_month = con.execute("SELECT * FROM reports.sentiment_by_state_month").fetchdf()
    if not counts.get("product"):
        context.log.warning("no review sentiment to aggregate")
    meta = {f"rows_{k}": int(v) for k, v in counts.items()}
    png = plot_share_negative(by_state_month, paths.report("sentiment_by_state_month.png"))
    if png:
        meta["plot"] = dg.MetadataValue.md(f"![share negative by month]({png.resolve().as_uri()})\n\n`{png}`")
        meta["plot_path"] = dg.MetadataValue.path(str(png))
    return dg.MaterializeResult(metadata=meta)


class TopicConfig(dg.Config):
    n_clusters: int = 8
    max_score: int = 3  # negative (1-2) and neutral (3) reviews
    top_terms: int = 5
    text_encoder: str = "multilingual-e5-small"  # must match the review embeddings (intent descriptions)
    seed: int = 0


@dg.asset(
    key=dg.AssetKey(["features", "review_topics"]),
    group_name=GROUP,
    tags={"ecom/stage": "features"},
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
    kinds={"duckdb"},
    deps=[
        dg.AssetKey(["features", "review_text_embeddings"]),
        dg.AssetKey(["staging", "reviews"]),
        dg.AssetKey(["staging", "customers"]),
    ],
    description="Complaint topics: k-means clusters of negative/neutral review embeddings labelled with "
    "c-TF-IDF terms and mapped to a customer-service intent (late delivery, not received, wrong or damaged "
    "item, quality, seller service, other) by similarity to intent descriptions; plus "
    "`reports.intent_trend` (intent × month × state).",
)
def review_topics(
    context: dg.AssetExecutionContext,
    config: TopicConfig,
    warehouse: WarehouseResource,
    compute: ComputeResource,
    paths: PathsResource,
):
    from ecom_pipeline.ml.text.topics import topic_table

    docs, emb, emb_model, awaiting = _labelled_reviews(warehouse)
    sel = (docs["score"].astype(float) <= config.max_score).to_numpy() if len(docs) else np.zeros(0, bool)
    docs, emb = docs[sel].reset_index(drop=True), emb[sel]
    names, ivecs = [], np.zeros((0, 0), np.float32)
    if len(docs):
        names, ivecs = _intent_vectors(config, emb_model, paths)
    per, topics = topic_table(
        docs["review_id"].tolist(),
        docs["doc"].tolist(),
        emb,
        names,
        ivecs,
        n_clusters=config.n_clusters,
        top_n=config.top_terms,
        seed=config.seed,
    )
    per["model"] = emb_model
    trend = _write_topics_and_trend(warehouse, per)
    if per.empty:
        context.log.warning("no negative/neutral reviews with embeddings: review_topics is empty")
    from ecom_pipeline.ml.text.plots import plot_intent_trend

    png = plot_intent_trend(trend, paths.report("intent_trend.png"))
    plot_meta = (
        {
            "plot": dg.MetadataValue.md(f"![intent trend]({png.resolve().as_uri()})\n\n`{png}`"),
            "plot_path": dg.MetadataValue.path(str(png)),
        }
        if png
        else {}
    )
    return dg.MaterializeResult(
        metadata=plot_meta
        | {
            "dagster/row_count": len(per),
            "reviews_awaiting_embedding": awaiting,
            "topics": dg.MetadataValue.md(topics.to_markdown(index=False) if len(topics) else "none"),
            "intents": per["topic_intent"].value_counts().to_dict() if len(per) else {},
        }
    )


def _intent_vectors(
    config: TopicConfig, emb_model: str, paths: PathsResource
) -> tuple[list[str], np.ndarray]:
    """Intent names and their description vectors from the encoder that embedded the reviews."""
    from ecom_pipeline.ml.encoders import load_text_encoder
    from ecom_pipeline.ml.text.topics import intent_matrix

    enc_name = emb_model.removesuffix("+int8") or config.text_encoder
    enc = load_text_encoder(
        enc_name,
        models_dir=paths.models,
        device="cpu",
        quantize=emb_model.endswith("+int8"),
        backend="auto",
    )
    return intent_matrix(enc)


def _write_topics_and_trend(warehouse: WarehouseResource, per: pd.DataFrame) -> pd.DataFrame:
    """Write the per-review topics and ``reports.intent_trend`` (intent x month x state); the trend back."""
    from ecom_pipeline.ml.encoders.store import table_exists

    with warehouse.connect() as con:
        con.register("_t", per)
        con.execute(f"""CREATE OR REPLACE TABLE {TOPICS_TABLE} AS SELECT review_id::VARCHAR review_id,
                        topic::INTEGER topic, topic_label::VARCHAR topic_label,
                        topic_intent::VARCHAR topic_intent, review_intent::VARCHAR review_intent,
                        intent_similarity::DOUBLE intent_similarity, model::VARCHAR model FROM _t""")
        con.unregister("_t")
        state = (
            "LEFT JOIN staging.customers c ON c.customer_id = r.customer_id"
            if table_exists(con, "staging.customers")
            else ""
        )
        con.execute(f"""CREATE OR REPLACE TABLE reports.intent_trend AS
            SELECT t.topic_intent AS intent, date_trunc('month', r.created_at)::DATE AS month,
                   {"c.state" if state else "NULL::VARCHAR"} AS state, count(*)::BIGINT AS reviews
            FROM {TOPICS_TABLE} t JOIN staging.reviews r ON r.review_id = t.review_id {state}
            GROUP BY 1, 2, 3 ORDER BY 2, 1, 3""")
        return con.execute("SELECT * FROM reports.intent_trend").fetchdf()


def build() -> dg.Definitions:
    return dg.Definitions(assets=[sentiment_model, review_sentiment, sentiment_aggregates, review_topics])
