"""Everything that touches the outside world, assembled once per environment (``ECOM_ENV``)."""

from __future__ import annotations

import dagster as dg

from ecom_pipeline.config import Settings, env, env_is_set
from ecom_pipeline.resources.compute import ComputeResource
from ecom_pipeline.resources.io_manager import WarehouseIOManager
from ecom_pipeline.resources.paths import PathsResource
from ecom_pipeline.resources.source import PrivacyResource, SourceResource
from ecom_pipeline.resources.tracking import MLflowResource
from ecom_pipeline.resources.warehouse import WarehouseResource

__all__ = [
    "ComputeResource",
    "MLflowResource",
    "PathsResource",
    "PrivacyResource",
    "SourceResource",
    "WarehouseResource",
    "build_resources",
]

ENVIRONMENTS = ("local", "docker", "prod")


def _secret(name: str) -> str | dg.EnvVar:
    """Secrets are passed as EnvVar (resolved at run time, never stored in run config); '' when unset."""
    return dg.EnvVar(name) if env_is_set(name) else ""


def build_resources(settings: Settings) -> dict[str, object]:
    """The resource set for ``settings.env``.

    local:  files under ``data/``, MLflow in sqlite, device auto.
    docker: the same layout under the compose volume; MLflow at the compose service unless overridden.
    prod:   nothing defaulted that could silently write to the wrong place: the warehouse, MLflow URI and
            pseudonym and model signing keys must be set explicitly.
    """
    if settings.env not in ENVIRONMENTS:
        raise ValueError(f"ECOM_ENV={settings.env!r} is not one of {ENVIRONMENTS}")
    tracking_uri = settings.mlflow_tracking_uri
    if settings.env == "docker" and not env_is_set("MLFLOW_TRACKING_URI"):
        tracking_uri = "http://mlflow:5000"
    if settings.env == "prod":
        missing = [
            v
            for v in ("ECOM_WAREHOUSE", "MLFLOW_TRACKING_URI", "ECOM_PSEUDONYM_KEY", "ECOM_MODEL_SIGNING_KEY")
            if not env_is_set(v)
        ]
        if missing:
            raise ValueError(f"ECOM_ENV=prod requires {', '.join(missing)} to be set")
    lake = {}  # the single DuckDB file unless ECOM_WAREHOUSE_BACKEND=ducklake
    if settings.warehouse_backend == "ducklake":
        if not settings.ducklake_catalog:
            raise ValueError(
                "ECOM_WAREHOUSE_BACKEND=ducklake requires ECOM_DUCKLAKE_CATALOG (a PostgreSQL "
                "connection string for the lake's catalog)"
            )
        lake = {
            "backend": "ducklake",
            "lake_catalog": _secret("ECOM_DUCKLAKE_CATALOG"),
            "lake_data_path": settings.ducklake_data_path,
        }
    elif settings.warehouse_backend != "duckdb":
        raise ValueError(
            f"ECOM_WAREHOUSE_BACKEND={settings.warehouse_backend!r} is not one of duckdb, ducklake"
        )
    return {
        "warehouse": WarehouseResource(path=str(settings.warehouse), **lake),
        # DataFrame-returning assets (features, models, serving) go through the DuckDB pandas IO manager;
        # the schema is the asset key prefix.
        "io_manager": WarehouseIOManager(database=str(settings.warehouse), **lake),
        "mlflow": MLflowResource(tracking_uri=tracking_uri),
        "compute": ComputeResource(device=env("ECOM_DEVICE")),
        # the data root and its folders (models, reports, inbox, landing, failure log, snapshot)
        "paths": PathsResource(data_root=str(settings.data_root), snapshot_path=str(settings.snapshot)),
        "source": SourceResource(
            kind=settings.data_source,
            data_dir=str(settings.data_dir or ""),
            mapping=str(settings.mapping or ""),
            data_root=str(settings.data_root),
            synthetic_orders=settings.synthetic_orders,
            synthetic_seed=settings.synthetic_seed,
            countries=",".join(settings.countries),
            synthetic_country=settings.synthetic_country,
        ),
        "privacy": PrivacyResource(
            pseudonym_key=_secret("ECOM_PSEUDONYM_KEY"), env=settings.env, data_root=str(settings.data_root)
        ),
    }
