"""User modelling group: profiles + segments (serving.user_profiles, serving.user_segments) and repurchase
prediction (trained weekly: models/repurchase_model; scored daily: serving.repurchase_scores), over
:mod:`ecom_pipeline.ml.users` and :mod:`ecom_pipeline.incremental`."""

import dagster as dg
import pandas as pd

from ecom_pipeline.resources import MLflowResource, PathsResource, SourceResource, WarehouseResource
from ecom_pipeline.resources.model_metrics import MetricRecord
from ecom_pipeline.routing import WAREHOUSE_OP_TAGS, WAREHOUSE_POOL, large_memory

GROUP = "users"
STAGING_DEPS = [
    dg.AssetKey(["staging", t])
    for t in ("orders", "order_items", "products", "customers", "reviews", "events")
]


class ProfilesConfig(dg.Config):
    n_segments: int = 5
    seed: int = 0
    # auto: incremental unless a full refresh is due (first run, settings changed, staging rebuilt in full,
    # or the last full one is full_refresh_days old); full: rebuild from all of staging
    refresh: str = "auto"
    full_refresh_days: float = 7.0


class RepurchaseConfig(dg.Config):
    horizon_days: int = 90
    max_iter: int = 100
    learning_rate: float = 0.1
    max_leaf_nodes: int = 15
    calibration: str = "isotonic"


def _tables(warehouse: WarehouseResource) -> dict[str, pd.DataFrame]:
    from ecom_pipeline.incremental.profiles import read_profile_inputs

    with warehouse.connect(read_only=True) as con:
        return read_profile_inputs(con)


@dg.asset(
    key_prefix=["serving"],
    group_name=GROUP,
    tags={"ecom/stage": "scoring"},
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
    deps=STAGING_DEPS,
    kinds={"duckdb", "sklearn"},
    description="One row per customer: RFM, behaviour (categories, price band, views/carts), experience "
    "(review score given, delivery delay), region, and a KMeans segment with a readable name and description."
    " Daily runs recompute from staging only customers with new activity (or a dated fact that the new as-of "
    "now counts), refresh the as-of columns for everyone and assign segments with the stored centroids of "
    "the last full refresh; a full rebuild (KMeans refit) weekly or with refresh=full.",
)
def user_profiles(
    context: dg.AssetExecutionContext, config: ProfilesConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    from ecom_pipeline.incremental.profiles import refresh_user_profiles

    with warehouse.connect() as con:
        res = refresh_user_profiles(
            con,
            n_segments=config.n_segments,
            seed=config.seed,
            mode=config.refresh,
            full_refresh_days=config.full_refresh_days,
        )
    prof, summary = res.profiles, res.summary
    notes = [
        f"no {n} in this source: {what} features are empty"
        for n, what in (("reviews", "review"), ("events", "browsing"))
        if res.plan.full and not res.rows_read.get(n)
    ]
    if prof.empty:
        context.log.warning("no orders: user_profiles is empty")
    context.log.info(res.plan.reason)
    table = summary[["segment", "segment_name", "customers", "description"]]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(prof),
            "segments": len(summary),
            "segment_model": res.segments,
            **res.counts.metadata(),
            "refresh": res.plan.mode,
            "refresh_reason": res.plan.reason,
            "recomputed_customers": len(res.plan.customers),
            "staging_rows_read": {k: int(v) for k, v in res.rows_read.items()},
            "segment_table": dg.MetadataValue.md(table.to_markdown(index=False) if len(table) else "none"),
            "notes": "; ".join(notes) or "orders, reviews and events present",
        }
    )


def _repurchase_run(res, params: dict, horizon_days: int, dataset: str):
    """The MLflow record: GBM and baseline metrics; the calibrated GBM registered when one was trained."""
    from ecom_pipeline.ml.registry import Candidate, ModelRun

    metrics = {"n_train": res.n_train, "n_test": res.n_test}
    for model, ms in res.metrics.items():
        metrics.update({f"{model}.{m}": v for m, v in ms.items()})
    candidates = []
    if res.candidate_model is not None and res.example is not None and len(res.example):
        candidates.append(
            Candidate(
                name="ecom.users.repurchase",
                flavor="sklearn",
                model=res.candidate_model.model,
                input_example=res.example[res.candidate_model.features].astype(float),
                metric="pr_auc",
                value=res.metrics["gbm_calibrated"].get("pr_auc", float("nan")),
                baseline="rfm_logistic",
                baseline_value=res.metrics["rfm_logistic"].get("pr_auc"),
            )
        )
    return ModelRun(
        "repurchase",
        tags={"group": GROUP, "dataset": dataset},
        params={
            **params,
            "horizon_days": horizon_days,
            "train_cutoff": str(res.train_cutoff),
            "test_cutoff": str(res.test_cutoff),
        },
        metrics=metrics,
        candidates=candidates,
    )


def _repurchase_records(res, split: str, dataset: str) -> list[MetricRecord]:
    """The candidate's metrics with their paired-bootstrap intervals, every other metric beside the
    baseline."""
    from ecom_pipeline.ml.users.repurchase import BASELINE, CANDIDATE

    base = res.metrics.get(BASELINE, {})
    with_interval = {c.metric: c for c in res.comparisons}
    records = [
        MetricRecord.from_comparison(
            c, model=CANDIDATE, task="repurchase", dataset=dataset, split=split, baseline=BASELINE
        )
        for c in res.comparisons
    ]
    return records + [
        MetricRecord(
            model=m,
            task="repurchase",
            dataset=dataset,
            split=split,
            metric=k,
            value=v,
            baseline=BASELINE,
            baseline_value=base.get(k),
        )
        for m, ms in res.metrics.items()
        for k, v in ms.items()
        if not (m == CANDIDATE and k in with_interval)
    ]


def _served_repurchase(res, horizon_days: int, version: str):
    """The served model for the daily scoring step. The serving gate: the GBM serves only when it beat the
    RFM baseline significantly; with nothing trained nobody is scored (an empty table and a decision row
    with the reason, not a constant 0.0 for everyone)."""
    from ecom_pipeline.incremental.repurchase import ServedRepurchase, now_stamp
    from ecom_pipeline.ml.users.repurchase import CANDIDATE

    served_version = version if res.served == CANDIDATE else ""
    return ServedRepurchase(res.model, res.served, served_version, horizon_days, now_stamp())


def _repurchase_decision(res):
    from ecom_pipeline.ml.serving_gate import Decision, decide
    from ecom_pipeline.ml.users.repurchase import BASELINE, CANDIDATE

    if res.model is None:
        return Decision(
            "repurchase",
            "all",
            CANDIDATE,
            BASELINE,
            "auc",
            None,
            None,
            None,
            None,
            "none",
            f"nothing served: {res.message}",
        )
    auc = next((c for c in res.comparisons if c.metric == "auc"), None)
    refused = res.served != CANDIDATE and auc.candidate_better
    decision = decide(
        "repurchase", "all", CANDIDATE, BASELINE, auc, refusal=res.serve_reason if refused else None
    )
    decision.reason = f"{res.serve_reason}; {decision.reason}"
    assert decision.served == res.served
    return decision


@dg.asset(
    key_prefix=["models"],
    group_name=GROUP,
    tags={"ecom/stage": "training"},
    pool=WAREHOUSE_POOL,
    op_tags=large_memory(WAREHOUSE_OP_TAGS),
    deps=STAGING_DEPS,
    kinds={"duckdb", "sklearn", "mlflow"},
    description="P(customer orders again within N days): calibrated gradient boosting on profile features, "
    "time-based (train at T−N, test at T), compared with an RFM-only logistic baseline (AUC, PR-AUC, Brier "
    "with paired-bootstrap intervals; ECE) in MLflow and ml.model_metrics; the serving gate lets the GBM "
    "score customers only when it beats the baseline significantly on enough test positives, else the "
    "baseline serves (decision in ml.serving_decisions). The served model is kept, signed, in the models "
    "folder for the daily scoring (serving/repurchase_scores).",
)
def repurchase_model(
    context: dg.AssetExecutionContext,
    config: RepurchaseConfig,
    warehouse: WarehouseResource,
    mlflow: MLflowResource,
    source: SourceResource,
    paths: PathsResource,
) -> dg.MaterializeResult:
    from ecom_pipeline.config import step_cpu_threads
    from ecom_pipeline.incremental.repurchase import SERVED_FOLDER, save_served
    from ecom_pipeline.ml.serving_gate import record_decisions
    from ecom_pipeline.ml.threads import openmp_threads
    from ecom_pipeline.ml.users.repurchase import train_and_evaluate

    t = _tables(warehouse)
    params = dict(
        max_iter=config.max_iter,
        learning_rate=config.learning_rate,
        max_leaf_nodes=config.max_leaf_nodes,
        calibration=config.calibration,
    )
    with openmp_threads(step_cpu_threads()):  # the gradient-boosted trees' share of the cores
        res = train_and_evaluate(t, horizon_days=config.horizon_days, gbm_params=params)
    if res.message:
        context.log.warning(res.message)
    split = (
        f"temporal@{res.test_cutoff:%Y-%m-%d}+{config.horizon_days}d"
        if res.test_cutoff is not None
        else "none"
    )
    records = _repurchase_records(res, split, source.kind)
    recorded = mlflow.record_model(
        _repurchase_run(res, params, config.horizon_days, source.kind),
        warehouse=warehouse,
        metric_records=records,
    )
    outcome, run_id = recorded.outcome("ecom.users.repurchase"), recorded.run_id
    served = _served_repurchase(res, config.horizon_days, outcome.version if outcome else "")
    decision = _repurchase_decision(res)
    with warehouse.connect() as con:
        record_decisions(con, "repurchase", [decision])
    save_served(paths.models / SERVED_FOLDER, served, mlflow.signing_key())
    return dg.MaterializeResult(metadata=_repurchase_metadata(res, served, run_id, decision, outcome))


class RepurchaseScoresConfig(dg.Config):
    # auto: full on a new served model (a retrain), weekly or on staging rebuilt in full; else the customers
    # whose profile inputs changed (everyone when the profiles' as-of moved); full: everyone
    refresh: str = "auto"
    full_refresh_days: float = 7.0


@dg.asset(
    key_prefix=["serving"],
    group_name=GROUP,
    tags={"ecom/stage": "scoring"},
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
    deps=[dg.AssetKey(["models", "repurchase_model"]), dg.AssetKey(["serving", "user_profiles"])],
    kinds={"duckdb", "sklearn"},
    description="P(customer orders again within N days) per customer, from the model the weekly training's "
    "serving gate chose (`model` names it: the GBM or the RFM baseline) and serving.user_profiles. Daily: "
    "the customers whose profile inputs changed (every customer when the as-of moved: recency changed); "
    "in full on a retrain, weekly or with refresh=full.",
)
def repurchase_scores(
    context: dg.AssetExecutionContext,
    config: RepurchaseScoresConfig,
    warehouse: WarehouseResource,
    mlflow: MLflowResource,
    paths: PathsResource,
) -> dg.MaterializeResult:
    from ecom_pipeline.incremental.repurchase import SERVED_FOLDER, load_served, refresh_repurchase_scores

    served = load_served(paths.models / SERVED_FOLDER, mlflow.signing_key())
    if served is None:
        raise dg.Failure(
            "no served repurchase model yet: materialise models/repurchase_model (job training) first",
            allow_retries=False,
        )
    with warehouse.connect() as con:
        res = refresh_repurchase_scores(
            con, served, mode=config.refresh, full_refresh_days=config.full_refresh_days
        )
        rows = con.execute("SELECT count(*) FROM serving.repurchase_scores").fetchall()[0][0]
    context.log.info(f"{res.plan.reason}; scored {res.scope}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": int(rows),
            **res.counts.metadata(),
            "refresh": res.plan.mode,
            "refresh_reason": res.plan.reason,
            "scored": res.scope,
            "served": served.served,
            "model_version": served.version or "none",
            "trained_at": served.trained_at,
        }
    )


def _repurchase_metadata(res, served, run_id, decision, outcome) -> dict:
    """The comparison of the GBM with the RFM baseline, the serving decision, the split and the features."""
    from ecom_pipeline.ml.users.profiles import NUMERIC_FEATURES

    g, b = res.metrics.get("gbm_calibrated", {}), res.metrics.get("rfm_logistic", {})
    verdict = (
        "not evaluated: " + res.message
        if not g
        else (
            f"gbm_calibrated AUC {g.get('auc', float('nan')):.3f} / PR-AUC "
            f"{g.get('pr_auc', float('nan')):.3f} / ECE {g['ece']:.3f} vs rfm_logistic AUC "
            f"{b.get('auc', float('nan')):.3f} / PR-AUC "
            f"{b.get('pr_auc', float('nan')):.3f} / ECE {b['ece']:.3f} → " + f"served: {decision.served}"
        )
    )
    return {
        "comparison": verdict,
        "mlflow_run_id": run_id or "",
        "served": decision.served,
        "decision": decision.reason,
        "test_positives": res.test_positives,
        "evaluable_customers": res.n_test,
        **({"skipped": res.message} if res.candidate_model is None else {}),
        "train_cutoff": str(res.train_cutoff),
        "test_cutoff": str(res.test_cutoff),
        "train_positive_rate": float(res.train_positive_rate),
        "test_positive_rate": float(res.test_positive_rate),
        "registered": f"{outcome.name} v{outcome.version} (promoted={outcome.promoted})"
        if outcome
        else "none",
        "features": (
            ", ".join(res.candidate_model.features)
            if res.candidate_model is not None
            else ", ".join(NUMERIC_FEATURES)
        ),
    }


def build() -> dg.Definitions:
    from ecom_pipeline.assets.gates import promotion_gate_check

    return dg.Definitions(
        assets=[user_profiles, repurchase_model, repurchase_scores],
        asset_checks=[promotion_gate_check(repurchase_model.key, "ecom.users.repurchase")],
    )
