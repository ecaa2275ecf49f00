"""Settings read from the environment, with defaults that work offline on a fresh clone.

Only plain values live here; Dagster resources read the same variables through ``EnvVar`` so the UI
shows where a value came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


@dataclass(frozen=True)
class Settings:
    env: str  # local | docker | prod
    data_source: str  # synthetic | olist | mapped
    data_root: Path  # where the warehouse, MLflow store, models, inbox and reports live
    data_dir: Path | None  # input files for olist / mapped
    mapping: Path | None
    warehouse: Path
    mlflow_tracking_uri: str
    synthetic_orders: int
    synthetic_seed: int
    # torch | onnx-int8: how the text and image encoders run on CPU (see docs/models.md)
    encoder_runtime: str = "torch"

    @classmethod
    def from_env(cls) -> "Settings":
        data_root = Path(_env("ECOM_DATA_ROOT", str(REPO_ROOT / "data"))).resolve()
        data_dir = os.environ.get("ECOM_DATA_DIR", "").strip()
        mapping = os.environ.get("ECOM_MAPPING", "").strip()
        return cls(
            env=_env("ECOM_ENV", "local"),
            data_source=_env("ECOM_DATA_SOURCE", "synthetic").lower(),
            data_root=data_root,
            data_dir=Path(data_dir).resolve() if data_dir else None,
            mapping=Path(mapping).resolve() if mapping else None,
            warehouse=Path(_env("ECOM_WAREHOUSE", str(data_root / "warehouse.duckdb"))),
            mlflow_tracking_uri=_env("MLFLOW_TRACKING_URI", f"sqlite:///{data_root / 'mlflow.db'}"),
            synthetic_orders=int(_env("ECOM_SYNTHETIC_ORDERS", "5000")),
            synthetic_seed=int(_env("ECOM_SYNTHETIC_SEED", "42")),
            encoder_runtime=_env("ECOM_ENCODER_RUNTIME", "torch").lower(),
        )
