"""MLflow tracking: a thin resource so every asset logs to the configured server the same way.

A tracking server that cannot be reached fails the step at once with :class:`MlflowUnavailableError`, which
names the URI and what to do, instead of a minutes-long stack of HTTP retries deep inside MLflow; the
training, scoring and full-pipeline jobs retry such a step with back-off (``automation/jobs.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import dagster as dg

from ecom_pipeline.config import env

if TYPE_CHECKING:
    from ecom_pipeline.ml.registry import ModelRun, RecordedRun
    from ecom_pipeline.resources.model_metrics import MetricRecord
    from ecom_pipeline.resources.warehouse import WarehouseResource

# Seconds the reachability probe waits for the server to answer.
CONNECT_TIMEOUT_ENV = "ECOM_MLFLOW_CONNECT_TIMEOUT_S"


class MlflowUnavailableError(RuntimeError):
    """The configured MLflow tracking server does not answer."""


def check_tracking_reachable(tracking_uri: str, timeout_s: float | None = None) -> None:
    """Raise :class:`MlflowUnavailableError` when an http(s) tracking server does not answer; local stores
    pass.

    Any HTTP answer counts as reachable (``/health`` is MLflow's, other servers may answer 404); only a
    refused, unresolvable or silent endpoint fails.
    """
    if urlparse(tracking_uri).scheme not in ("http", "https"):
        return
    import requests

    timeout = timeout_s if timeout_s is not None else float(env(CONNECT_TIMEOUT_ENV))
    try:
        requests.get(tracking_uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as exc:
        reason = type(exc).__name__ + (": connection refused" if "refused" in str(exc).lower() else "")
        raise MlflowUnavailableError(
            f"MLflow tracking server {tracking_uri} is unreachable ({reason}, {timeout:g} s timeout). Start "
            "it (`docker compose up -d mlflow`, or `mlflow server --host 0.0.0.0 --port <port>`) or set "
            "MLFLOW_TRACKING_URI to a running server (or sqlite:///data/mlflow.db for a local store), then "
            "re-execute the run from failure (the training, scoring and full_pipeline jobs retry this step "
            "with back-off before the run fails)."
        ) from None


def default_artifact_root(tracking_uri: str) -> str | None:
    """For a local sqlite store keep artifacts beside it (``data/mlartifacts``), not in the working dir.
    For a database store shared by several workers (postgresql://...) ``ECOM_MLFLOW_ARTIFACT_ROOT`` names the
    shared place; unset, MLflow's default (./mlruns of whichever process creates the experiment)."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        return (db.parent / "mlartifacts").resolve().as_uri()
    if "://" in tracking_uri and not tracking_uri.startswith(("http://", "https://", "file:")):
        shared = env("ECOM_MLFLOW_ARTIFACT_ROOT")
        return (Path(shared).resolve().as_uri() if "://" not in shared else shared) if shared else None
    return None


class MLflowResource(dg.ConfigurableResource):
    """Tracking URI from ``MLFLOW_TRACKING_URI`` (default: local sqlite under ``data/``)."""

    tracking_uri: str
    experiment: str = "ecom_pipeline"

    def client(self):
        import mlflow

        check_tracking_reachable(self.tracking_uri)
        mlflow.set_tracking_uri(self.tracking_uri)
        return mlflow.MlflowClient(self.tracking_uri)

    def experiment_id(self) -> str:
        import mlflow

        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        check_tracking_reachable(self.tracking_uri)
        mlflow.set_tracking_uri(self.tracking_uri)
        existing = mlflow.get_experiment_by_name(self.experiment)
        if existing is not None:
            return existing.experiment_id
        try:
            return mlflow.create_experiment(
                self.experiment, artifact_location=default_artifact_root(self.tracking_uri)
            )
        except mlflow.exceptions.MlflowException:
            # two workers creating it at once (a shared database store): the loser reads the winner's
            existing = mlflow.get_experiment_by_name(self.experiment)
            if existing is None:
                raise
            return existing.experiment_id

    def signing_key(self) -> bytes:
        """The model signing key of the configured settings (``ECOM_MODEL_SIGNING_KEY``; a generated local
        key with ``ECOM_ENV=local``): every version is signed with it and verified against it."""
        from ecom_pipeline.config import Settings
        from ecom_pipeline.ml.safe_artifacts import signing_key

        return signing_key(Settings.from_env())

    @contextlib.contextmanager
    def start_run(self, run_name: str, tags: dict[str, str] | None = None) -> Iterator["object"]:
        """Start an MLflow run in the project experiment; the caller logs params, metrics and models."""
        import mlflow

        experiment_id = self.experiment_id()
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags or {}) as run:
            yield run

    def record_model(
        self,
        run: ModelRun,
        *,
        warehouse: WarehouseResource | None = None,
        metric_records: list[MetricRecord] | None = None,
    ) -> RecordedRun:
        """Record one model run: MLflow run, params, metrics, signed safe artifacts, registration and champion
        alias (:func:`ecom_pipeline.ml.registry.record_run`), then its ``ml.model_metrics`` rows.

        Rows without an ``mlflow_run_id`` get this run's id.  ``warehouse`` is required when rows are given.
        """
        from ecom_pipeline.ml.registry import record_run
        from ecom_pipeline.resources.model_metrics import record_model_metrics

        if metric_records and warehouse is None:
            raise ValueError(
                f"run {run.name!r}: ml.model_metrics rows given without a warehouse to write them"
            )
        recorded = record_run(run, self.experiment_id(), self.signing_key())
        if metric_records is not None and warehouse is not None:
            for record in metric_records:
                record.mlflow_run_id = record.mlflow_run_id or recorded.run_id
            with warehouse.connect() as con:  # also with no rows: the table exists after every model run
                record_model_metrics(con, metric_records)
        return recorded
