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
    # ISO codes of the shop's country or countries (ECOM_COUNTRY=GB or =US,CA); empty: taken from the data's
    # customers.country / orders.ship_country, else the source's own (synthetic profile, Olist = BR).
    countries: tuple[str, ...] = ()
    synthetic_country: str = "BR"  # country profile of the synthetic source: BR | US
    # read-only snapshot readers open instead of the warehouse (see ecom_pipeline/snapshot.py)
    snapshot: Path = REPO_ROOT / "data" / "snapshot.duckdb"
    # serving app (ecom_pipeline/api): key required outside ECOM_ENV=local, limits, champion/snapshot polling
    api_key: str = ""
    api_max_body_bytes: int = 8 * 1024 * 1024
    api_timeout_s: float = 5.0
    api_poll_seconds: float = 30.0

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
            countries=tuple(c.strip().upper() for c in os.environ.get("ECOM_COUNTRY", "").split(",") if c.strip()),
            synthetic_country=_env("ECOM_SYNTHETIC_COUNTRY", "BR").upper(),
            snapshot=Path(_env("ECOM_SNAPSHOT", str(data_root / "snapshot.duckdb"))),
            api_key=os.environ.get("ECOM_API_KEY", "").strip(),
            api_max_body_bytes=int(_env("ECOM_API_MAX_BODY_BYTES", str(8 * 1024 * 1024))),
            api_timeout_s=float(_env("ECOM_API_TIMEOUT_S", "5")),
            api_poll_seconds=float(_env("ECOM_API_POLL_SECONDS", "30")),
        )
