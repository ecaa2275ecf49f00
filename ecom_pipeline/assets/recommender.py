"""Recommender group: interactions → evaluation of baselines and models → recommendations and related items.

Thin assets over :mod:`ecom_pipeline.ml.recsys`.  Staging tables are read through the warehouse resource;
product embeddings (``features.product_embeddings``) are used when that table exists, and the metadata
says when it does not.
"""

import dagster as dg
import pandas as pd

from ecom_pipeline.ml.recsys.metrics import MAX_EVAL_USERS
from ecom_pipeline.resources import ComputeResource, MLflowResource, SourceResource, WarehouseResource
from ecom_pipeline.resources.model_metrics import MetricRecord
from ecom_pipeline.routing import GPU_OP_TAGS, GPU_POOL, WAREHOUSE_OP_TAGS, WAREHOUSE_POOL, large_memory

GROUP = "recommender"
STAGING_DEPS = [
    dg.AssetKey(["staging", t]) for t in ("orders", "order_items", "events", "products", "customers")
]
ALL_MODELS = ["popularity", "recent_popularity", "regional_popularity", "item_knn", "als"]


class IncrementalConfig(dg.Config):
    # auto: only customers with changes since the last run, unless a full rebuild is due (first run, settings
    # or input rebuilt in full, staging rebuilt in full, or the last full one is full_refresh_days old)
    refresh: str = "auto"
    full_refresh_days: float = 7.0


class RelatedItemsConfig(IncrementalConfig):
    # recompute before the weekly one when the interactions grew by more than this fraction
    refit_growth: float = 0.05


class InteractionsConfig(IncrementalConfig):
    view_weight: float = 1.0
    cart_weight: float = 3.0
    purchase_weight: float = 5.0


class RecommenderConfig(dg.Config):
    k: int = 10
    category_k: int = 5
    test_fraction: float = 0.2
    min_eval_users: int = 5
    max_eval_users: int = MAX_EVAL_USERS  # evaluated users (a seeded sample above it); 0 = all
    als_factors: int = 32
    als_iterations: int = 15
    als_regularization: float = 0.05
    als_alpha: float = 2.0
    knn_neighbours: int = 100
    recent_half_life_days: float = 30.0
    models: list[str] = ALL_MODELS
    serve_model: str = "auto"  # auto = the evaluation winner per level (ndcg@k); or a model name
    fallback_model: str = "regional_popularity"  # served when a level could not be evaluated


def _params(cfg: RecommenderConfig) -> dict[str, dict]:
    return {
        "als": dict(
            factors=cfg.als_factors,
            iterations=cfg.als_iterations,
            regularization=cfg.als_regularization,
            alpha=cfg.als_alpha,
        ),
        "item_knn": dict(neighbours=cfg.knn_neighbours),
        "recent_popularity": dict(half_life_days=cfg.recent_half_life_days),
    }


INTERACTIONS = dg.AssetKey(["features", "interactions"])


def _write(table: str, df: pd.DataFrame, warehouse: WarehouseResource) -> None:
    from ecom_pipeline.warehouse.tables import write_table

    with warehouse.connect() as con:
        write_table(con, table, df)


def _interaction_data(
    warehouse: WarehouseResource,
    user_regions: pd.Series | None = None,
    item_col: str = "product_id",
    item_names: dict | None = None,
):
    """features.interactions indexed for the recommenders (``InteractionData``), built in DuckDB: no frame of
    every interaction's id strings (11.8M rows at 1M orders)."""
    from ecom_pipeline.incremental.interactions import read_interaction_data

    with warehouse.connect(read_only=True) as con:
        return read_interaction_data(con, item_col=item_col, user_regions=user_regions, item_names=item_names)


def _user_regions(warehouse: WarehouseResource) -> pd.Series:
    from ecom_pipeline.warehouse.tables import read_table

    with warehouse.connect(read_only=True) as con:
        c = read_table(con, "staging.customers", ["customer_id", "state"])
    c = c.dropna(subset=["customer_id"])
    return c.drop_duplicates("customer_id").set_index(
        c.drop_duplicates("customer_id")["customer_id"].astype(str)
    )["state"]


def _item_names(warehouse: WarehouseResource) -> tuple[dict, pd.DataFrame]:
    from ecom_pipeline.warehouse.tables import read_table

    with warehouse.connect(read_only=True) as con:
        p = read_table(con, "staging.products", ["product_id", "category", "title"])
    # as text whatever dtype an empty result comes back with (DuckDB 1.5 gives int32 for an empty frame)
    p = p.astype({"product_id": str, "category": object, "title": object})
    label = p["title"].where(
        p["title"].notna() & (p["title"].astype(str).str.len() > 0),
        p["category"].fillna("product").astype(str) + " " + p["product_id"].str[:8],
    )
    return dict(zip(p["product_id"], label.astype(str).str.slice(0, 60))), p


@dg.asset(
    key_prefix=["features"],
    group_name=GROUP,
    tags={"ecom/stage": "features"},
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
    deps=STAGING_DEPS,
    kinds={"duckdb"},
    description="User-item interactions: purchases from orders (cancelled excluded) and weighted view/cart "
    "events, one row each with category and time. Purchase events are dropped where orders exist.",
)
def interactions(
    context: dg.AssetExecutionContext, config: InteractionsConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    from ecom_pipeline.incremental.interactions import TARGET, refresh_interactions

    weights = {"view": config.view_weight, "cart": config.cart_weight, "purchase": config.purchase_weight}
    with warehouse.connect() as con:
        # built inside DuckDB: at 1M orders the 13M event rows never become a pandas frame
        res = refresh_interactions(
            con, weights, mode=config.refresh, full_refresh_days=config.full_refresh_days
        )
        rows, users, items = con.execute(
            f"SELECT count(*), count(DISTINCT customer_id), count(DISTINCT product_id) FROM {TARGET}"
        ).fetchall()[0]
        by_type = dict(
            con.execute(f"SELECT event_type, count(*) FROM {TARGET} GROUP BY 1 ORDER BY 2 DESC").fetchall()
        )
    counts = res.source_rows
    notes = []
    if not counts["events"]:
        notes.append("no events in this source: purchases from orders only")
    if not counts["orders"]:
        notes.append("no orders in this source")
    if not rows:
        context.log.warning("no interactions: staging orders/order_items and events are empty")
    context.log.info(res.plan.reason)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": int(rows),
            "users": int(users),
            "items": int(items),
            **res.counts.metadata(),
            "refresh": res.plan.mode,
            "refresh_reason": res.plan.reason,
            "recomputed_customers": len(res.plan.customers),
            "by_event_type": {str(k): int(v) for k, v in by_type.items()},
            "weights": weights,
            "notes": "; ".join(notes) or "orders and events both present",
        }
    )


@dg.asset(
    key_prefix=["features"],
    group_name=GROUP,
    tags={"ecom/stage": "features"},
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
    kinds={"duckdb", "pandas"},
    deps=[INTERACTIONS],
    description="Interactions aggregated per (customer, category): weight, counts per event type, first/last "
    "time. The honest unit on sparse data (Olist: almost every customer buys once).",
)
def category_interactions(
    context: dg.AssetExecutionContext, config: IncrementalConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    from ecom_pipeline.incremental.interactions import CATEGORY_TARGET, refresh_category_interactions

    with warehouse.connect() as con:
        plan, counts, _ = refresh_category_interactions(
            con, mode=config.refresh, full_refresh_days=config.full_refresh_days
        )
        rows, categories = con.execute(
            f"SELECT count(*), count(DISTINCT category) FROM {CATEGORY_TARGET}"
        ).fetchall()[0]
    context.log.info(plan.reason)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": int(rows),
            "categories": int(categories),
            **counts.metadata(),
            "refresh": plan.mode,
            "refresh_reason": plan.reason,
        }
    )


def _mlflow_name(s: str) -> str:
    return s.replace("@", "_at_")


@dg.asset(
    key_prefix=["models"],
    group_name=GROUP,
    tags={"ecom/stage": "training"},
    pool=WAREHOUSE_POOL,
    op_tags=large_memory(WAREHOUSE_OP_TAGS),
    kinds={"duckdb", "mlflow"},
    deps=[INTERACTIONS],
    description="Every recommender (global / recent / regional popularity, item-kNN, implicit ALS) on the "
    "user-level temporal split, item and category level: Recall/NDCG/HitRate/MAP@K, catalogue coverage, "
    "novelty. Logged to MLflow and ml.model_metrics beside the popularity baseline; ALS registered.",
)
def recommender_evaluation(
    context: dg.AssetExecutionContext,
    config: RecommenderConfig,
    warehouse: WarehouseResource,
    mlflow: MLflowResource,
    source: SourceResource,
) -> dg.MaterializeResult:
    from ecom_pipeline.ml.recsys.pipeline import metrics_frame
    from ecom_pipeline.ml.serving_gate import record_decisions
    from ecom_pipeline.warehouse.tables import write_table

    params = _params(config)
    results = _evaluate_levels(warehouse, _user_regions(warehouse), params, config, context.log)
    frame = metrics_frame(results, dataset=source.kind)
    records = _metric_records(frame, source.kind)
    # the serving gate: per level, the best candidate serves only if its NDCG beats the best baseline's
    # significantly (paired bootstrap over evaluated users); ``winner`` marks the model that serves
    decisions, interval_records = _gate_levels(results, config, source.kind, None)
    run = _evaluation_run(config, params, results, source.kind)
    recorded = mlflow.record_model(run, warehouse=warehouse, metric_records=records + interval_records)
    registered = {o.name.removeprefix("ecom.recsys.als_"): o for o in recorded.outcomes}
    for outcome in recorded.outcomes:
        context.log.info(f"registered {outcome.name} v{outcome.version}: {outcome.reason}")
    run_id = recorded.run_id
    frame["model_version"] = frame.apply(
        lambda x: registered[x["level"]].version if x["model"] == "als" and x["level"] in registered else "",
        axis=1,
    )
    served = {d.scope: d.served for d in decisions}
    frame["winner"] = frame["model"] == frame["level"].map(served)
    with warehouse.connect() as con:
        write_table(con, "ml.recommender_evaluation", frame)
        record_decisions(con, "recommendation", decisions)
    comparison = _comparison_lines(results, served)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(frame),
            "mlflow_run_id": run_id,
            "comparison": dg.MetadataValue.md("\n".join(f"- {c}" for c in comparison)),
            "winners": {r.level: served.get(r.level, "none") for r in results},
            "decisions": {d.scope: d.reason for d in decisions},
            "registered": {
                lvl: f"{o.name} v{o.version} (promoted={o.promoted})" for lvl, o in registered.items()
            },
            "cutoffs": {r.level: str(r.cutoff) for r in results},
        }
    )


def _evaluate_levels(
    warehouse: WarehouseResource, regions: pd.Series, params: dict, config: RecommenderConfig, log
) -> list:
    """Every configured model evaluated at item level (top ``k``) and category level (top ``category_k``);
    a level that could not be evaluated is logged as a warning with its reason."""
    from ecom_pipeline.ml.recsys.pipeline import LEVELS, evaluate_level

    results = []
    for level, k in (("item", config.k), ("category", config.category_k)):
        r = evaluate_level(
            _interaction_data(warehouse, regions, LEVELS[level]),
            level=level,
            k=k,
            models=list(config.models),
            params=params,
            user_regions=regions,
            test_fraction=config.test_fraction,
            min_eval_users=config.min_eval_users,
            max_eval_users=config.max_eval_users,
            log=log.info,
        )
        if r.message:
            log.warning(f"{level}: {r.message}")
        results.append(r)
    return results


def _metric_records(frame: pd.DataFrame, dataset: str, only_model: str | None = None) -> list[MetricRecord]:
    """``ml.model_metrics`` rows of a metrics frame (every model, or only ``only_model``), one task per level;
    NaN values are left out."""
    return [
        MetricRecord(
            model=row.model,
            task=f"recommendation_{row.level}",
            dataset=f"{dataset}:{row.level}",
            split=f"temporal@{pd.Timestamp(row.cutoff):%Y-%m-%d}",
            metric=row.metric,
            value=row.value,
            baseline=row.baseline,
            baseline_value=row.baseline_value,
        )
        for row in frame.itertuples()
        if row.value == row.value and (only_model is None or row.model == only_model)
    ]


def _evaluation_run(config: RecommenderConfig, params: dict, results, dataset: str):
    """The MLflow record of the evaluation: every model's metrics per level, and per level the evaluated ALS
    (trained before the cutoff) registered under its holdout NDCG."""
    from ecom_pipeline.ml.recsys.model_runs import evaluated_als_module
    from ecom_pipeline.ml.registry import Candidate, ModelRun

    metrics, candidates = {}, []
    for r in results:
        metrics.update({f"{r.level}.eval_users": r.n_eval_users, f"{r.level}.items": r.n_items})
        metrics[f"{r.level}.eligible_users"] = r.n_eligible_users
        for model, ms in r.metrics.items():
            metrics.update({_mlflow_name(f"{r.level}.{model}.{m}"): v for m, v in ms.items() if v == v})
        if "als" in r.metrics and r.fitted_als is not None:
            module = evaluated_als_module(r)
            candidates.append(
                Candidate(
                    name=f"ecom.recsys.als_{r.level}",
                    flavor="pytorch",
                    model=module,
                    input_example=None,
                    metric=f"ndcg@{r.k}",
                    value=r.metrics["als"][f"ndcg@{r.k}"],
                )
            )
    return ModelRun(
        "recommender_evaluation",
        tags={"group": GROUP, "dataset": dataset},
        params={
            **{f"{m}.{p}": v for m, ps in params.items() for p, v in ps.items()},
            "k": config.k,
            "category_k": config.category_k,
            "test_fraction": config.test_fraction,
        },
        metrics=metrics,
        candidates=candidates,
    )


def _comparison_lines(results, served: dict) -> list[str]:
    """Per level: the served model and every model's NDCG beside popularity (or why it was not evaluated)."""
    comparison = []
    for r in results:
        w = served.get(r.level) if r.metrics else None
        if w is None:
            comparison.append(f"{r.level}: not evaluated ({r.message})")
            continue
        base = r.metrics.get("popularity", {}).get(f"ndcg@{r.k}", float("nan"))
        parts = [f"{m} {v.get(f'ndcg@{r.k}', float('nan')):.4f}" for m, v in r.metrics.items()]
        comparison.append(
            f"{r.level} (ndcg@{r.k}, {r.evaluated_users()}): served {w}; popularity {base:.4f}; "
            + ", ".join(parts)
        )
    return comparison


def _gate_levels(results, cfg: RecommenderConfig, dataset: str, run_id: str | None):
    """Serving decisions per level and ``ml.model_metrics`` rows with intervals: every candidate's NDCG@k
    against the level's best baseline, paired bootstrap over the evaluated users."""
    from ecom_pipeline.ml.evaluation import paired_bootstrap
    from ecom_pipeline.ml.recsys.models import BASELINES as REC_BASELINES
    from ecom_pipeline.ml.serving_gate import decide

    decisions, records = [], []
    for r in results:
        metric = f"ndcg@{r.k}"
        scored = {
            m: v[metric] for m, v in r.metrics.items() if v.get(metric) == v.get(metric) and metric in v
        }
        bases = {m: v for m, v in scored.items() if m in REC_BASELINES and r.per_user.get(m) is not None}
        cands = {m: v for m, v in scored.items() if m not in REC_BASELINES and r.per_user.get(m) is not None}
        if not bases:
            decisions.append(
                decide("recommendation", r.level, "none", cfg.fallback_model, None, metric=metric)
            )
            continue
        base = max(bases, key=bases.get)
        comps = {}
        for m in cands:
            both = pd.concat([r.per_user[m], r.per_user[base]], axis=1, join="inner").dropna()
            comps[m] = paired_bootstrap(
                both.iloc[:, 0].to_numpy(), both.iloc[:, 1].to_numpy(), metric=metric, higher_is_better=True
            )
            records.append(
                MetricRecord.from_comparison(
                    comps[m],
                    model=m,
                    task=f"recommendation_{r.level}",
                    dataset=f"{dataset}:{r.level}",
                    split=f"temporal@{pd.Timestamp(r.cutoff):%Y-%m-%d}",
                    baseline=base,
                    mlflow_run_id=run_id,
                )
            )
        if not comps:
            decisions.append(decide("recommendation", r.level, "none", base, None, metric=metric))
            continue
        cand = max(comps, key=lambda m: comps[m].candidate_value)
        decisions.append(decide("recommendation", r.level, cand, base, comps[cand]))
    return decisions, records


def _choose(level: str, evaluation: pd.DataFrame, cfg: RecommenderConfig) -> tuple[str, str]:
    if cfg.serve_model != "auto":
        return cfg.serve_model, "configured"
    e = (
        evaluation[(evaluation["level"] == level) & evaluation["winner"].astype(bool)]
        if len(evaluation)
        else evaluation
    )
    if len(e):
        return str(e["model"].iloc[0]), "serving gate (ml.serving_decisions)"
    return cfg.fallback_model, "fallback: level could not be evaluated"


class ServeRecommendationsConfig(RecommenderConfig):
    # auto: only customers with new activity since the last run, unless a full refresh is due (first run,
    # served model or version changed, staging rebuilt in full, or the last full one is full_refresh_days old)
    refresh: str = "auto"
    full_refresh_days: float = 7.0
    # a level served by a popularity model on incremental runs: "active" rescores only customers with new
    # activity (kept lists can lag today's counts until the weekly refresh), "everyone" rescores all daily
    global_counts_refresh: str = "active"


def _served_models(config: RecommenderConfig, evaluation: pd.DataFrame):
    """Per level: the model that serves it, why, and the version its rows carry."""
    from ecom_pipeline.incremental.recommendations import LevelChoice

    params, choices = _params(config), []
    for level, k in (("item", config.k), ("category", config.category_k)):
        model, why = _choose(level, evaluation, config)
        version = "baseline (no training)"
        if model == "als" and len(evaluation):
            ev = evaluation
            v = ev.loc[(ev["level"] == level) & (ev["model"] == "als"), "model_version"]
            version = (
                f"ecom.recsys.als_{level} v{v.iloc[0]} refit on all data"
                if len(v) and v.iloc[0]
                else "unregistered"
            )
        elif model not in ("popularity", "recent_popularity", "regional_popularity"):
            version = "refit on all data (not registered)"
        choices.append(LevelChoice(level, k, model, why, version, params.get(model, {})))
    return choices


def _global_counts_everyone(setting: str) -> bool:
    if setting not in ("active", "everyone"):
        raise ValueError(f"global_counts_refresh must be 'active' or 'everyone', not {setting!r}")
    return setting == "everyone"


@dg.asset(
    key_prefix=["serving"],
    group_name=GROUP,
    tags={"ecom/stage": "scoring"},
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
    kinds={"duckdb", "pandas"},
    deps=[INTERACTIONS, dg.AssetKey(["models", "recommender_evaluation"])],
    description="User → top-K items (and top categories) with score, model, model version and a short "
    "explanation from the user's real history or region. Served by the evaluation winner per level, "
    "refit on all interactions. Daily runs rescore only customers with new activity (merged by customer; "
    "popularity levels too unless global_counts_refresh=everyone); a full refresh weekly, when the served "
    "model or version changes, or with refresh=full.",
)
def recommendations(
    context: dg.AssetExecutionContext, config: ServeRecommendationsConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    from ecom_pipeline.incremental.recommendations import refresh_recommendations
    from ecom_pipeline.warehouse.tables import read_or_empty

    choices = _served_models(config, read_or_empty(warehouse, "ml.recommender_evaluation"))
    regions = _user_regions(warehouse)
    names, _ = _item_names(warehouse)
    with warehouse.connect() as con:
        res = refresh_recommendations(
            con,
            choices,
            user_regions=regions,
            item_names=names,
            mode=config.refresh,
            full_refresh_days=config.full_refresh_days,
            global_counts_everyone=_global_counts_everyone(config.global_counts_refresh),
        )
        rows, users = con.execute(
            "SELECT count(*), count(DISTINCT customer_id) FROM serving.recommendations"
        ).fetchall()[0]
    out = res.rows
    context.log.info(f"{res.plan.reason}; " + "; ".join(f"{k}: {v}" for k, v in res.scope.items()))
    if not rows:
        context.log.warning("no interactions: no recommendations")
    preview = (
        out.head(10)[["customer_id", "level", "rank", "item_name", "model", "explanation"]]
        if len(out)
        else out
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": int(rows),
            "users": int(users),
            **res.counts.metadata(),
            "refresh": res.plan.mode,
            "refresh_reason": res.plan.reason,
            "recomputed": res.scope,
            "models": {c.level: f"{c.model} ({c.why})" for c in choices},
            "explanations": {
                str(k): int(v)
                for k, v in out["explanation"]
                .str.replace(r"\(.*\)|[\w-]+ [0-9a-f]{8}", "…", regex=True)
                .str.slice(0, 40)
                .value_counts()
                .head(8)
                .items()
            }
            if len(out)
            else {},
            "preview": dg.MetadataValue.md(preview.to_markdown(index=False) if len(preview) else "empty"),
        }
    )


@dg.asset(
    key_prefix=["serving"],
    group_name=GROUP,
    tags={"ecom/stage": "scoring"},
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
    kinds={"duckdb", "pandas"},
    deps=[INTERACTIONS],
    description="Product → related products: co-occurrence (customers who bought X also bought); items "
    "without co-occurrence (cold start) by content similarity of features.product_embeddings when present, "
    "else popular items of the same category. Recomputed weekly, when the interactions grew by more than "
    "refit_growth or the product embeddings changed; otherwise kept (last computation's co-occurrences).",
)
def related_items(
    context: dg.AssetExecutionContext, config: RelatedItemsConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    from ecom_pipeline.incremental.refit import record_refit, related_items_decision
    from ecom_pipeline.ml.recsys.pipeline import related_items as compute
    from ecom_pipeline.warehouse.tables import atomic, read_table, table_exists, write_table

    with warehouse.connect(read_only=True) as con:
        gate = related_items_decision(
            con,
            n=10,
            neighbours=20,
            mode=config.refresh,
            growth=config.refit_growth,
            full_refresh_days=config.full_refresh_days,
        )
    context.log.info(gate.reason)
    if not gate.recompute:
        return dg.MaterializeResult(metadata={"refresh": gate.refresh, "refresh_reason": gate.reason})
    names, products = _item_names(warehouse)
    interactions = _interaction_data(warehouse, item_names=names)
    with warehouse.connect(read_only=True) as con:
        has_emb = table_exists(con, "features.product_embeddings")
        emb = read_table(con, "features.product_embeddings", ["product_id", "embedding"]) if has_emb else None
    if not has_emb:
        context.log.info(
            "features.product_embeddings does not exist: cold items get same-category popular items"
        )
    df = compute(interactions, n=10, item_names=names, product_embeddings=emb, products=products)
    with warehouse.connect() as con, atomic(con):
        write_table(con, "serving.related_items", df)
        record_refit(con, gate)
    return dg.MaterializeResult(
        metadata={
            "refresh": gate.refresh,
            "refresh_reason": gate.reason,
            "dagster/row_count": len(df),
            "products": int(df["product_id"].nunique()) if len(df) else 0,
            "by_method": {str(k): int(v) for k, v in df["method"].value_counts().items()} if len(df) else {},
            "product_embeddings": "used for cold-start items"
            if has_emb
            else "absent (table not built): not used",
        }
    )


class TwoTowerConfig(dg.Config):
    k: int = 10
    test_fraction: float = 0.2
    min_eval_users: int = 5
    max_eval_users: int = MAX_EVAL_USERS  # evaluated users (a seeded sample above it); 0 = all
    dim: int = 32
    epochs_cpu: int = 8  # CPU/GPU sizing: ComputeResource.sized picks one by device
    epochs_cuda: int = 20
    batch_size_cpu: int = 256
    batch_size_cuda: int = 1024
    lr: float = 0.01
    temperature: float = 0.1
    uniform_negatives: int = 512
    history_len: int = 30
    max_seconds: float = 300.0
    seed: int = 0


OPTIONAL_TWO_TOWER_INPUTS = {
    "product_embeddings": "features.product_embeddings",
    "region_embeddings": "features.region_embeddings",
    "sentiment": "reports.sentiment_by_product",
    "user_segments": "serving.user_profiles",
}


@dg.asset(
    key_prefix=["models"],
    group_name=GROUP,
    tags={"ecom/stage": "training"},
    pool=GPU_POOL,
    op_tags=large_memory(GPU_OP_TAGS),
    kinds={"pytorch", "mlflow", "duckdb"},
    deps=[
        INTERACTIONS,
        dg.AssetKey(["features", "product_embeddings"]),
        dg.AssetKey(["features", "region_embeddings"]),
        dg.AssetKey(["reports", "sentiment_aggregates"]),
        dg.AssetKey(["serving", "user_profiles"]),
    ],
    description="Hybrid two-tower recommender (torch, sampled softmax): user = history + region (GCN "
    "embedding when present) + segment; item = id + category + price + product embedding + sentiment when "
    "present. Evaluated on the same item-level temporal split as the baselines (ml.two_tower_evaluation, "
    "ml.model_metrics, MLflow); registered as ecom.recsys.two_tower_item.",
)
def two_tower_recommender(
    context: dg.AssetExecutionContext,
    config: TwoTowerConfig,
    warehouse: WarehouseResource,
    mlflow: MLflowResource,
    compute: ComputeResource,
    source: SourceResource,
) -> dg.MaterializeResult:
    from ecom_pipeline.ml.recsys.model_runs import evaluate_two_tower
    from ecom_pipeline.ml.recsys.pipeline import metrics_frame
    from ecom_pipeline.warehouse.tables import write_table

    device, threads = compute.torch_device(), compute.configure_threads()  # not the previous step's count
    epochs, batch_size = compute.sized(config, "epochs", device), compute.sized(config, "batch_size", device)
    training_path = (
        f"gpu: {epochs} epochs, batch {batch_size}"
        if compute.is_cuda(device)
        else f"cpu (small settings): {epochs} epochs, batch {batch_size}, 1 torch thread"
    )
    # indexed in DuckDB: no frame of every interaction's id strings (11.8M rows at 1M orders)
    interactions = _interaction_data(warehouse, _user_regions(warehouse))
    side, missing = _two_tower_side_inputs(warehouse)
    if missing:
        context.log.info(f"two-tower without: {', '.join(missing)} (absent or empty)")
    tt_params = _two_tower_params(config, epochs, batch_size)
    meta = {"device": device, "threads": threads, "training_path": training_path}
    meta["missing_optional_inputs"] = ", ".join(missing) or "none"
    trained = evaluate_two_tower(
        interactions,
        regions=None,
        side=side,
        params=tt_params,
        k=config.k,
        test_fraction=config.test_fraction,
        min_eval_users=config.min_eval_users,
        max_eval_users=config.max_eval_users,
        device=device,
        log=context.log.info,
    )
    res = trained.result
    if res.message:
        context.log.warning(res.message)
    frame = metrics_frame([res], dataset=source.kind)
    # the result is the item level's, so its rows carry task recommendation_item
    records = _metric_records(frame, source.kind, only_model="two_tower")
    recorded = mlflow.record_model(
        _two_tower_run(config, tt_params, meta, trained, source.kind),
        warehouse=warehouse,
        metric_records=records,
    )
    outcome, run_id = recorded.outcome("ecom.recsys.two_tower_item"), recorded.run_id
    if outcome is not None:
        context.log.info(f"registered {outcome.name} v{outcome.version}: {outcome.reason}")
    frame["model_version"] = [outcome.version if outcome and m == "two_tower" else "" for m in frame["model"]]
    with warehouse.connect() as con:
        write_table(con, "ml.two_tower_evaluation", frame)
    meta |= _two_tower_metadata(trained, config.k, outcome)
    meta.update({"dagster/row_count": len(frame), "mlflow_run_id": run_id})
    return dg.MaterializeResult(metadata=meta)


def _two_tower_params(config: TwoTowerConfig, epochs: int, batch_size: int) -> dict:
    """The two-tower's training parameters; ``epochs`` and ``batch_size`` are already sized for the device."""
    return dict(
        dim=config.dim,
        epochs=epochs,
        batch_size=batch_size,
        lr=config.lr,
        temperature=config.temperature,
        uniform_negatives=config.uniform_negatives,
        history_len=config.history_len,
        seed=config.seed,
        max_seconds=config.max_seconds,
    )


def _two_tower_side_inputs(warehouse: WarehouseResource) -> tuple[dict, list[str]]:
    """Products (id, category, price) and whichever optional inputs exist: product and state embeddings,
    product sentiment, user segments; plus the tables that are absent or empty."""
    from ecom_pipeline.warehouse.tables import read_table, table_exists

    side, present = {}, {}
    with warehouse.connect(read_only=True) as con:
        side["products"] = read_table(con, "staging.products", ["product_id", "category", "price"])
        for arg, table in OPTIONAL_TWO_TOWER_INPUTS.items():
            present[arg] = table_exists(con, table)
            if not present[arg]:
                continue
            cols = {
                "product_embeddings": ["product_id", "embedding"],
                "region_embeddings": ["region_id", "embedding"],
                "sentiment": ["product_id", "mean_p_positive"],
                "user_segments": ["customer_id", "segment"],
            }[arg]
            df = read_table(con, table, cols)
            if arg == "region_embeddings":
                df = df[df["region_id"].astype(str).str.startswith("state:")]
            if arg == "user_segments":
                df = df.dropna(subset=["customer_id"]).set_index(df["customer_id"].dropna().astype(str))[
                    "segment"
                ]
            side[arg] = df
    missing = [t for a, t in OPTIONAL_TWO_TOWER_INPUTS.items() if not present[a] or not len(side.get(a, []))]
    return side, missing


def _two_tower_run(config: TwoTowerConfig, tt_params: dict, meta: dict, trained, dataset: str):
    """The MLflow record: every model's item metrics, the training loss per epoch, and the two-tower factors
    registered beside popularity."""
    from ecom_pipeline.ml.recsys.export import factor_module, seen_items
    from ecom_pipeline.ml.registry import Candidate, ModelRun

    res, model, data, ndcg = trained.result, trained.model, trained.data, f"ndcg@{config.k}"
    metrics = {}
    for mname, ms in res.metrics.items():
        metrics.update({_mlflow_name(f"item.{mname}.{k}"): v for k, v in ms.items() if v == v})
    candidates = []
    if model is not None:
        module = factor_module(
            data.users, data.items, model.user_vectors, model.item_vectors, seen_items(data)
        )
        candidates.append(
            Candidate(
                name="ecom.recsys.two_tower_item",
                flavor="pytorch",
                model=module,
                input_example=None,
                metric=ndcg,
                value=res.metrics["two_tower"][ndcg],
                baseline="popularity",
                baseline_value=res.metrics["popularity"][ndcg],
            )
        )
    return ModelRun(
        "two_tower_recommender",
        tags={"group": GROUP, "dataset": dataset, "device": meta["device"]},
        params={
            **tt_params,
            "k": config.k,
            "device": meta["device"],
            "training_path": meta["training_path"],
            "missing_optional_inputs": meta["missing_optional_inputs"],
        },
        metrics=metrics,
        metric_steps={"train_loss": model.loss_history} if model is not None else {},
        candidates=candidates,
    )


def _two_tower_metadata(trained, k: int, outcome) -> dict:
    """The two-tower's NDCG beside every baseline, its inputs and training summary (or why it did not
    train)."""
    res, model, ndcg = trained.result, trained.model, f"ndcg@{k}"
    if model is None:
        return {"comparison": f"not evaluated: {res.message}"}
    tt, scores = res.metrics["two_tower"][ndcg], {m: v[ndcg] for m, v in res.metrics.items()}
    best_base = max((m for m in scores if m != "two_tower"), key=scores.get)
    verdict = "wins" if tt > scores[best_base] else "LOSES to " + best_base
    return {
        "comparison": dg.MetadataValue.md(
            f"{ndcg} on {res.evaluated_users()} (cutoff {res.cutoff:%Y-%m-%d}): "
            f"two_tower {tt:.4f} {verdict}; "
            + ", ".join(f"{m} {v:.4f}" for m, v in scores.items() if m != "two_tower")
        ),
        "inputs_used": model.inputs_used,
        "final_loss": round(model.loss_history[-1], 4) if model.loss_history else "n/a",
        "fit_seconds": round(res.fit_seconds["two_tower"], 2),
        "training_stopped_early": model.stopped_early or "no: every epoch ran",
        "registered": f"{outcome.name} v{outcome.version} (promoted={outcome.promoted})",
    }


def build() -> dg.Definitions:
    return dg.Definitions(
        assets=[
            interactions,
            category_interactions,
            recommender_evaluation,
            recommendations,
            related_items,
            two_tower_recommender,
        ]
    )
