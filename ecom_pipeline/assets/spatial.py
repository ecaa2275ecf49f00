"""Spatial group: region tables with customer/seller distribution, seller→customer flows, geographic kNN
graph, kNN features, GCN region embeddings (for the recommender) and the delivery-delay model.

Thin assets over :mod:`ecom_pipeline.ml.spatial`.
"""

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from ecom_pipeline.assets.timeseries import (
    DAILY_SERIES_DEPS,
    DAILY_SERIES_DESCRIPTION,
    SeriesBuildConfig,
    _md_table,
    daily_series_output,
    png_metadata,
    staging_frames,
)
from ecom_pipeline.resources import (
    ComputeResource,
    MLflowResource,
    PathsResource,
    SourceResource,
    WarehouseResource,
)
from ecom_pipeline.routing import GPU_OP_TAGS, GPU_POOL, WAREHOUSE_OP_TAGS, WAREHOUSE_POOL, large_memory
from ecom_pipeline.warehouse.tables import read_table

STAGING = [dg.AssetKey(["staging", t]) for t in ("regions", "customers", "sellers", "orders", "order_items")]


def located_frames(
    warehouse: WarehouseResource, source: SourceResource
) -> tuple[dict, tuple[str, ...], bool]:
    """Staging customers/sellers/orders/items/regions with customers and sellers placed offline
    (:func:`ecom_pipeline.ml.spatial.geo.locate`), the shop's countries, and whether region ids need their
    country (customers or sellers in more than one country)."""
    from ecom_pipeline.ml.spatial.geo import locate

    f = staging_frames(warehouse, "regions", "customers", "sellers", "orders", "order_items")
    data_countries = f["customers"]["country"] if "country" in f["customers"].columns else None
    countries = source.shop_countries(data_countries)
    f["customers"] = locate(f["customers"], countries)
    f["sellers"] = locate(f["sellers"], countries)
    qualify = len(set(f["customers"]["country"].dropna()) | set(f["sellers"]["country"].dropna())) > 1
    return f, countries, qualify


def location_metadata(f: dict, countries: tuple[str, ...]) -> dict:
    """Resolved vs unresolved customers and sellers, with reasons and how they were placed."""
    from ecom_pipeline.geography import unresolved_summary

    meta = {"countries": ", ".join(countries) or "none known (set ECOM_COUNTRY)"}
    for t in ("customers", "sellers"):
        summary = unresolved_summary(f[t])
        meta[f"{t}_resolved"] = summary["resolved"]
        meta[f"{t}_unresolved"] = summary["unresolved"]
        meta[f"{t}_unresolved_reasons"] = summary["by_reason"]
        meta[f"{t}_resolution_sources"] = summary["by_source"]
    return meta


class KnnConfig(dg.Config):
    k: int = 5


class EmbeddingConfig(dg.Config):
    dim: int = 16
    hidden: int = 32
    epochs_cpu: int = 200  # CPU/GPU sizing: ComputeResource.sized picks one by device
    epochs_cuda: int = 200
    k: int = 5  # kNN edges; flow edges (seller region -> customer region) are added on top
    min_flow_orders: int = 3
    # auto: retrain when the regions or kNN edges changed, weekly, or flow orders grew > refit_growth; else
    # keep the last training's embeddings (incremental/refit.py).  full: retrain now
    refresh: str = "auto"
    full_refresh_days: float = 7.0
    refit_growth: float = 0.05


class DeliveryConfig(dg.Config):
    test_fraction: float = 0.2
    graph_features: str = "neighbour+gcn"  # ml/spatial/delivery_graph.py variants joined by "+"; "" = none


def map_plot(path: Path, regions: pd.DataFrame, level: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = regions[regions.level == level]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    for ax, col, cmap, title in (
        (axes[0], "orders", "viridis", "orders"),
        (axes[1], "mean_delivery_days", "magma_r", "mean delivery days"),
    ):
        size = 10 + 300 * np.sqrt(r["orders"] / max(r["orders"].max(), 1))
        sc = ax.scatter(
            r["lng"], r["lat"], c=r[col], s=size, cmap=cmap, alpha=0.8, edgecolors="k", linewidths=0.3
        )
        fig.colorbar(sc, ax=ax, label=title)
        ax.set_title(f"{level} regions: {title} (size = orders)")
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
        ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


REGIONS_DESCRIPTION = (
    "Country, state (first-level division) and zip3 (postal prefix) regions of the data's own "
    "locations, placed offline (coordinates, else city, division or country centroid; see "
    "docs/geography.md): centroid, customers, sellers, orders, revenue, mean delivery days, late rate, "
    "level and resolution_source. Unresolved customers/sellers are counted in the metadata. Map-like plot "
    "in <data_root>/reports/regions.png."
)
FLOWS_DESCRIPTION = (
    "Seller-region → customer-region flow edges (state and zip3): orders, items, "
    "revenue and haversine distance (mean, median km) between the actual seller and customer locations."
)
FLOW_COLUMNS = ["src", "dst", "orders", "items", "revenue", "mean_distance_km", "median_distance_km", "level"]


def regions_output(
    log, f: dict, countries: tuple[str, ...], qualify: bool, paths: PathsResource
) -> tuple[pd.DataFrame, dict]:
    """features.regions and its metadata (with the map) from the located staging frames."""
    from ecom_pipeline.ml.spatial.geo import LEVELS, REGION_COLUMNS, order_stats, region_table

    if f["customers"].empty and f["regions"].empty:
        log.warning("no customers and no regions in staging: regions is empty")
        return pd.DataFrame(columns=REGION_COLUMNS), {
            "dagster/row_count": 0,
            "message": "no customers/regions",
        }
    orders = order_stats(f["orders"], f["order_items"])
    parts = [region_table(lv, f["regions"], f["customers"], f["sellers"], orders, qualify) for lv in LEVELS]
    parts = [p for p in parts if len(p)]
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=REGION_COLUMNS)
    meta = location_metadata(f, countries)
    if meta["customers_unresolved"]:
        log.warning(
            f"{meta['customers_unresolved']} customers could not be placed in any region: "
            f"{meta['customers_unresolved_reasons']}"
        )
    states = out[out.level == "state"].sort_values("orders", ascending=False)
    columns = ["region_id", "customers", "sellers", "orders", "revenue", "mean_delivery_days", "late_rate"]
    meta |= {
        "dagster/row_count": len(out),
        "by_level": out["level"].value_counts().to_dict(),
        "top_states": _md_table(states[columns].round(2), 10),
    }
    map_level = "state" if (out.level == "state").any() else "country"
    if (out.level == map_level).any():
        meta |= png_metadata(map_plot(paths.report("regions.png"), out, map_level), "regions map")
    return out, meta


def region_flows_output(f: dict, countries: tuple[str, ...], qualify: bool) -> tuple[pd.DataFrame, dict]:
    """features.region_flows and its metadata from the located staging frames."""
    from ecom_pipeline.ml.spatial.geo import LEVELS, flows, order_geo

    if f["orders"].empty or f["order_items"].empty:
        return pd.DataFrame(columns=FLOW_COLUMNS), {"dagster/row_count": 0, "message": "no orders/items"}
    geo = order_geo(f["orders"], f["order_items"], f["customers"], f["sellers"], countries)
    out = pd.concat([flows(geo, lv, qualify) for lv in LEVELS], ignore_index=True)
    st = out[out.level == "state"]
    median_km = geo["distance_km"].median()
    return out, {
        "dagster/row_count": len(out),
        "median_order_distance_km": round(float(median_km), 1) if pd.notna(median_km) else "n/a",
        "lines_without_both_locations": int(geo["distance_km"].isna().sum()),
        "intra_state_share": round(
            float(st[st.src == st.dst]["orders"].sum() / max(st["orders"].sum(), 1)), 3
        ),
        "top_flows": _md_table(st.head(10).round(1)),
    }


def _located_out(name: str, group: str, description: str) -> dg.AssetOut:
    """One output of located_features: optional, so any subset of the three can be materialized."""
    return dg.AssetOut(
        key=["features", name],
        group_name=group,
        kinds={"duckdb", "pandas"},
        description=description,
        is_required=False,
    )


@dg.multi_asset(
    name="located_features",
    outs={
        "daily_series": _located_out("daily_series", "forecasting", DAILY_SERIES_DESCRIPTION),
        "regions": _located_out("regions", "spatial", REGIONS_DESCRIPTION),
        "region_flows": _located_out("region_flows", "spatial", FLOWS_DESCRIPTION),
    },
    deps=DAILY_SERIES_DEPS,
    internal_asset_deps={
        "daily_series": set(DAILY_SERIES_DEPS),
        "regions": set(STAGING),
        "region_flows": set(STAGING),
    },
    can_subset=True,
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
)
def located_features(
    context: dg.AssetExecutionContext,
    config: SeriesBuildConfig,
    warehouse: WarehouseResource,
    source: SourceResource,
    paths: PathsResource,
):
    """The daily series, regions and region flows in one step: all three read staging and place customers and
    sellers the same way (at 1M orders 5 s each time), so they do it once (any subset can be materialized)."""
    from ecom_pipeline.ml.spatial.geo import with_integer_ids

    f, countries, qualify = located_frames(warehouse, source)
    selected = context.selected_output_names
    if "daily_series" in selected:
        f["products"] = staging_frames(warehouse, "products")["products"]
    f = with_integer_ids(f)  # none of the three outputs holds an id
    if "daily_series" in selected:
        out, meta = daily_series_output(context.log, f, qualify, f["products"], config)
        yield dg.Output(out, "daily_series", metadata=meta)
    if "regions" in selected:
        out, meta = regions_output(context.log, f, countries, qualify, paths)
        yield dg.Output(out, "regions", metadata=meta)
    if "region_flows" in selected:
        out, meta = region_flows_output(f, countries, qualify)
        yield dg.Output(out, "region_flows", metadata=meta)


@dg.asset(
    key=["features", "region_knn_graph"],
    group_name="spatial",
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
    kinds={"duckdb", "pandas"},
    ins={"regions": dg.AssetIn(key=["features", "regions"])},
    description="Geographic kNN graph: each region to its k nearest regions of the "
    "same level (haversine km).",
)
def region_knn_graph(
    context: dg.AssetExecutionContext, config: KnnConfig, regions: pd.DataFrame
) -> pd.DataFrame:
    from ecom_pipeline.ml.spatial.geo import knn_graph

    out = knn_graph(regions, config.k)
    context.add_output_metadata(
        {
            "dagster/row_count": len(out),
            "k": config.k,
            "mean_edge_km": round(float(out["distance_km"].mean()), 1) if len(out) else 0.0,
        }
    )
    return out


@dg.asset(
    key=["features", "region_knn_features"],
    group_name="spatial",
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
    kinds={"duckdb", "pandas"},
    ins={
        "regions": dg.AssetIn(key=["features", "regions"]),
        "graph": dg.AssetIn(key=["features", "region_knn_graph"]),
    },
    description="kNN features per region: inverse-distance-weighted neighbour demand (orders, revenue) and "
    "neighbour delivery delay / late rate.",
)
def region_knn_features(
    context: dg.AssetExecutionContext, regions: pd.DataFrame, graph: pd.DataFrame
) -> pd.DataFrame:
    from ecom_pipeline.ml.spatial.geo import knn_features

    out = knn_features(regions, graph)
    corr = (
        out[["mean_delivery_days", "neighbour_delivery_days"]].corr().iloc[0, 1]
        if len(out) > 2
        else float("nan")
    )
    context.add_output_metadata(
        {
            "dagster/row_count": len(out),
            "corr_own_vs_neighbour_delay": round(float(corr), 3) if corr == corr else "n/a",
        }
    )
    return out


def _embedding_metric_records(res, dataset: str) -> list:
    """One link-reconstruction AUC record per region level, beside the random-embedding baseline."""
    from ecom_pipeline.resources.model_metrics import MetricRecord

    return [
        MetricRecord(
            "gcn_autoencoder",
            "region_embedding",
            f"{dataset}:{s.level}",
            "in_sample_edges",
            "auc",
            s.auc,
            "random_embedding",
            s.random_auc,
        )
        for s in res.scores
    ]


def _region_embeddings_gate(warehouse: WarehouseResource, config: EmbeddingConfig, epochs: int):
    from ecom_pipeline.incremental.refit import region_embeddings_decision

    settings = (
        f"dim={config.dim};hidden={config.hidden};epochs={epochs};min_flow_orders={config.min_flow_orders}"
    )
    with warehouse.connect(read_only=True) as con:
        return region_embeddings_decision(
            con,
            settings=settings,
            mode=config.refresh,
            growth=config.refit_growth,
            full_refresh_days=config.full_refresh_days,
        )


def _write_region_embeddings(warehouse: WarehouseResource, out: pd.DataFrame, gate) -> None:
    """Replace ``features.region_embeddings`` with ``out`` (the table exists, empty, when there are no
    regions) and record the training for the refit gate, in one transaction."""
    from ecom_pipeline.incremental.refit import record_refit
    from ecom_pipeline.warehouse.tables import atomic

    with warehouse.connect() as con, atomic(con):
        con.execute(
            "CREATE OR REPLACE TABLE features.region_embeddings (region_id VARCHAR, level "
            "VARCHAR, embedding FLOAT[])"
        )
        if len(out):
            con.register("_e", out)
            con.execute(
                "INSERT INTO features.region_embeddings SELECT region_id, level, embedding::FLOAT[] FROM _e"
            )
            con.unregister("_e")
        record_refit(con, gate)


@dg.asset(
    key=["features", "region_embeddings"],
    group_name="spatial",
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    kinds={"pytorch", "mlflow"},
    deps=[
        dg.AssetKey(["features", "regions"]),
        dg.AssetKey(["features", "region_knn_graph"]),
        dg.AssetKey(["features", "region_flows"]),
    ],
    description="GCN region embeddings (graph autoencoder over kNN + flow edges, normalised adjacency), "
    "one FLOAT[] per region (state and zip3) for the recommender. Link-reconstruction AUC vs a random "
    "embedding baseline in ml.model_metrics; encoder registered as ecom.spatial.gcn_embeddings.",
)
def region_embeddings(
    context: dg.AssetExecutionContext,
    config: EmbeddingConfig,
    warehouse: WarehouseResource,
    mlflow: MLflowResource,
    compute: ComputeResource,
    source: SourceResource,
) -> dg.MaterializeResult:
    from ecom_pipeline.ml.registry import Candidate, ModelRun
    from ecom_pipeline.ml.spatial.region_embedding import embed_region_levels

    device = compute.torch_device()
    epochs = compute.sized(config, "epochs", device)
    gate = _region_embeddings_gate(warehouse, config, epochs)
    context.log.info(gate.reason)
    if not gate.recompute:
        return dg.MaterializeResult(metadata={"refresh": gate.refresh, "refresh_reason": gate.reason})
    compute.configure_threads(small_model=True)
    with warehouse.connect(read_only=True) as con:
        regs = read_table(con, "features.regions")
        graph = read_table(con, "features.region_knn_graph")
        fl = read_table(con, "features.region_flows")
    res = embed_region_levels(
        regs,
        graph,
        fl,
        dim=config.dim,
        hidden=config.hidden,
        epochs=epochs,
        min_flow_orders=config.min_flow_orders,
        device=device,
    )
    path = "gpu" if compute.is_cuda(device) else "cpu (full-batch, small graph)"
    meta = {"device": device, "training_path": path, "refresh": gate.refresh, "refresh_reason": gate.reason}
    meta.update(res.meta)
    recs = _embedding_metric_records(res, source.kind)
    candidates = (
        [Candidate("ecom.spatial.gcn_embeddings", "pytorch", res.served_encoder, None, "auc", res.served_auc)]
        if res.served_encoder is not None
        else []
    )
    recorded = mlflow.record_model(
        ModelRun(
            "region_embeddings",
            tags={"task": "region_embedding", "dataset": source.kind},
            metrics=res.metrics,
            candidates=candidates,
        ),
        warehouse=warehouse,
        metric_records=recs,
    )
    if recorded.outcomes:
        meta["registered"] = f"{recorded.outcomes[0].name} v{recorded.outcomes[0].version}"
    out = res.embeddings
    _write_region_embeddings(warehouse, out, gate)
    if out.empty:
        context.log.warning("no regions: region_embeddings is empty")
    meta["dagster/row_count"] = len(out)
    return dg.MaterializeResult(metadata=meta)


# the columns of the delivery_delay asset's test-set predictions (also of its empty frame)
DELIVERY_COLUMNS = [
    "order_id",
    "purchased_at",
    "delivery_days",
    "promised_days",
    "is_late",
    "predicted_days",
    "late_probability",
    "days_model",
    "late_model",
]


def _record_serving_decisions(warehouse: WarehouseResource, decisions: list) -> None:
    """The serving gate's decisions, written per task."""
    with warehouse.connect() as con:
        from ecom_pipeline.ml.serving_gate import record_decisions

        # one call per task: it replaces the task's rows
        for task in dict.fromkeys(d.task for d in decisions):
            record_decisions(con, task, [d for d in decisions if d.task == task])


def _delivery_metadata(res, outcome) -> dict:
    """delivery_delay's output metadata: split sizes, metrics beside the platform estimate, serving
    decisions, graph features and the registered version."""
    m = res.metrics
    return {
        "dagster/row_count": len(res.predictions),
        "cutoff": str(res.cutoff),
        "n_train": res.n_train,
        "n_test": res.n_test,
        "metrics": {k: round(v, 4) for k, v in m.items()},
        "beats_platform_estimate_mae": m["mae"] < m["baseline_mae"],
        "served": {f"{d.task}: {d.candidate} vs {d.baseline}": d.reason for d in res.decisions},
        "graph_features": {
            "columns": len(res.graph.columns) if res.graph else 0,
            "missing": (res.graph.reason if res.graph else "not requested") or "none",
        }
        | (res.graph.details if res.graph else {}),
        "registered": f"{outcome.name} v{outcome.version} (champion: {outcome.promoted})",
    }


@dg.asset(
    key=["models", "delivery_delay"],
    group_name="spatial",
    pool=WAREHOUSE_POOL,
    op_tags=large_memory(WAREHOUSE_OP_TAGS),
    kinds={"sklearn", "mlflow"},
    deps=STAGING,
    description="Gradient-boosting delivery-time and lateness model (distance, regions, seller "
    "history, season) on a time-based split; baseline = the platform's estimated delivery date. Test-set "
    "predictions; MAE and late-order AUC beside the baseline; registered as ecom.delivery.delay. A twin with "
    "region-graph features (training-period orders only) serves only if it significantly beats the rest.",
)
def delivery_delay(
    context: dg.AssetExecutionContext,
    config: DeliveryConfig,
    warehouse: WarehouseResource,
    mlflow: MLflowResource,
    source: SourceResource,
) -> pd.DataFrame:
    from ecom_pipeline.config import step_cpu_threads
    from ecom_pipeline.ml.registry import Candidate, ModelRun
    from ecom_pipeline.ml.spatial.delivery import FEATURES, delivery_frame, train_delivery_model
    from ecom_pipeline.ml.threads import openmp_threads
    from ecom_pipeline.resources.model_metrics import MetricRecord

    f, _, _ = located_frames(warehouse, source)
    frame = delivery_frame(f["orders"], f["order_items"], f["customers"], f["sellers"])
    if len(frame) < 50:
        msg = f"only {len(frame)} delivered orders with an estimated date: no delivery model"
        context.log.warning(msg)
        context.add_output_metadata({"dagster/row_count": 0, "message": msg})
        return pd.DataFrame(columns=DELIVERY_COLUMNS)
    with openmp_threads(step_cpu_threads()):  # the gradient-boosted trees' share of the cores
        res = train_delivery_model(frame, config.test_fraction, graph_variant=config.graph_features or None)
    m = res.metrics
    # each model beside its best baseline with an interval (ml/spatial/delivery.py); the gate's decisions
    recs = [
        MetricRecord.from_comparison(
            c, model=cand, task=task, dataset=source.kind, split="temporal_test", baseline=base
        )
        for task, cand, base, c in res.comparison_rows()
    ]
    recorded = mlflow.record_model(
        ModelRun(
            "delivery_delay",
            tags={"task": "delivery_delay", "dataset": source.kind},
            params={
                "features": ",".join(FEATURES),
                "cutoff": str(res.cutoff),
                "n_train": res.n_train,
                "graph_features": ",".join(res.graph.columns) if res.graph else "none",
            },
            metrics=m,
            candidates=[
                Candidate(
                    "ecom.delivery.delay",
                    "sklearn",
                    res.regressor,
                    frame[FEATURES].head(5),
                    "mae",
                    m["mae"],
                    higher_is_better=False,
                )
            ],
        ),
        warehouse=warehouse,
        metric_records=recs,
    )
    outcome = recorded.outcomes[0]
    _record_serving_decisions(warehouse, res.decisions)
    context.add_output_metadata(_delivery_metadata(res, outcome))
    return res.predictions[DELIVERY_COLUMNS]


def build() -> dg.Definitions:
    return dg.Definitions(
        assets=[
            located_features,
            region_knn_graph,
            region_knn_features,
            region_embeddings,
            delivery_delay,
        ]
    )
