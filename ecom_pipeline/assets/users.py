"""User modelling group: profiles + segments (serving.user_profiles, serving.user_segments) and repurchase
prediction (serving.repurchase_scores), over :mod:`ecom_pipeline.ml.users`."""

import dagster as dg
import pandas as pd

from ecom_pipeline.resources import MLflowResource, SourceResource, WarehouseResource
from ecom_pipeline.resources.model_metrics import MetricRecord
from ecom_pipeline.routing import WAREHOUSE_POOL

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


def _write(warehouse: WarehouseResource, table: str, df: pd.DataFrame) -> None:
    from ecom_pipeline.warehouse.tables import write_table

    with warehouse.connect() as con:
        write_table(con, table, df)


@dg.asset(
    key_prefix=["serving"],
    group_name=GROUP,
    tags={"ecom/stage": "scoring"},
    pool=WAREHOUSE_POOL,
    deps=STAGING_DEPS,
    kinds={"duckdb", "sklearn"},
    description="One row per customer: RFM, behaviour (categories, price band, views/carts), experience "
    "(review score given, delivery delay), region, and a KMeans segment with a readable name and description."
    " Daily runs recompute from staging only customers with new activity (or a dated fact that the new as-of "
    "now counts), refresh the as-of columns for everyone and refit the segments; a full rebuild weekly or "
    "with refresh=full.",
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
            **res.counts.metadata(),
            "refresh": res.plan.mode,
            "refresh_reason": res.plan.reason,
            "recomputed_customers": len(res.plan.customers),
            "staging_rows_read": {k: int(v) for k, v in res.rows_read.items()},
            "segment_table": dg.MetadataValue.md(table.to_markdown(index=False) if len(table) else "none"),
            "notes": "; ".join(notes) or "orders, reviews and events present",
        }
    )


def _repurchase_run(res, params: dict, horizon_days: int, prof: pd.DataFrame, dataset: str):
    """The MLflow record: GBM and baseline metrics; the calibrated GBM registered when one was trained."""
    from ecom_pipeline.ml.registry import Candidate, ModelRun

    metrics = {"n_train": res.n_train, "n_test": res.n_test}
    for model, ms in res.metrics.items():
        metrics.update({f"{model}.{m}": v for m, v in ms.items()})
    candidates = []
    if res.candidate_model is not None and len(prof):
        candidates.append(
            Candidate(
                name="ecom.users.repurchase",
                flavor="sklearn",
                model=res.candidate_model.model,
                input_example=prof[res.candidate_model.features].astype(float).head(5),
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


def _repurchase_scores(res, prof: pd.DataFrame, horizon_days: int, version: str) -> pd.DataFrame:
    """The served model's probabilities per customer. The serving gate: the GBM serves only when it beat the
    RFM baseline significantly; with nothing trained nobody is scored (an empty table and a decision row
    with the reason, not a constant 0.0 for everyone)."""
    from ecom_pipeline.ml.users.repurchase import CANDIDATE

    cols = [
        "customer_id",
        "as_of",
        "horizon_days",
        "probability",
        "model",
        "model_version",
        "recency_days",
        "frequency",
        "monetary",
    ]
    if not (len(prof) and res.model is not None):
        return pd.DataFrame(columns=cols)
    served_version = version if res.served == CANDIDATE else ""
    return prof.assign(
        horizon_days=horizon_days,
        probability=res.model.predict_proba(prof),
        model=res.served,
        model_version=served_version,
    )[cols]


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
    key_prefix=["serving"],
    group_name=GROUP,
    tags={"ecom/stage": "training"},
    pool=WAREHOUSE_POOL,
    deps=STAGING_DEPS,
    kinds={"duckdb", "sklearn", "mlflow"},
    description="P(customer orders again within N days): calibrated gradient boosting on profile features, "
    "time-based (train at T−N, test at T), compared with an RFM-only logistic baseline (AUC, PR-AUC, Brier "
    "with paired-bootstrap intervals; ECE) in MLflow and ml.model_metrics; the serving gate lets the GBM "
    "score customers only when it beats the baseline significantly on enough test positives, else the "
    "baseline scores them (`model` names which; decision in ml.serving_decisions).",
)
def repurchase_scores(
    context: dg.AssetExecutionContext,
    config: RepurchaseConfig,
    warehouse: WarehouseResource,
    mlflow: MLflowResource,
    source: SourceResource,
) -> dg.MaterializeResult:
    from ecom_pipeline.ml.serving_gate import record_decisions
    from ecom_pipeline.ml.users.profiles import build_profiles
    from ecom_pipeline.ml.users.repurchase import train_and_evaluate

    t = _tables(warehouse)
    params = dict(
        max_iter=config.max_iter,
        learning_rate=config.learning_rate,
        max_leaf_nodes=config.max_leaf_nodes,
        calibration=config.calibration,
    )
    res = train_and_evaluate(t, horizon_days=config.horizon_days, gbm_params=params)
    if res.message:
        context.log.warning(res.message)
    prof = build_profiles(
        t["orders"], t["order_items"], t["products"], t["customers"], t["reviews"], t["events"]
    )
    split = (
        f"temporal@{res.test_cutoff:%Y-%m-%d}+{config.horizon_days}d"
        if res.test_cutoff is not None
        else "none"
    )
    records = _repurchase_records(res, split, source.kind)
    recorded = mlflow.record_model(
        _repurchase_run(res, params, config.horizon_days, prof, source.kind),
        warehouse=warehouse,
        metric_records=records,
    )
    outcome, run_id = recorded.outcome("ecom.users.repurchase"), recorded.run_id
    out = _repurchase_scores(res, prof, config.horizon_days, outcome.version if outcome else "")
    decision = _repurchase_decision(res)
    with warehouse.connect() as con:
        record_decisions(con, "repurchase", [decision])
    _write(warehouse, "serving.repurchase_scores", out)
    return dg.MaterializeResult(metadata=_repurchase_metadata(res, out, run_id, decision, outcome))


def _repurchase_metadata(res, out: pd.DataFrame, run_id, decision, outcome) -> dict:
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
        "dagster/row_count": len(out),
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
        assets=[user_profiles, repurchase_scores],
        asset_checks=[promotion_gate_check(repurchase_scores.key, "ecom.users.repurchase")],
    )
