"""MLflow tracking: a thin resource so every asset logs to the configured server the same way."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import dagster as dg


def default_artifact_root(tracking_uri: str) -> str | None:
    """For a local sqlite store keep artifacts beside it (``data/mlartifacts``), not in the working dir."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None


class MLflowResource(dg.ConfigurableResource):
    """Tracking URI from ``MLFLOW_TRACKING_URI`` (default: local sqlite under ``data/``)."""

    tracking_uri: str
    experiment: str = "ecom_pipeline"

    def client(self):
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        return mlflow.MlflowClient(self.tracking_uri)

    def experiment_id(self) -> str:
        import mlflow

        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.tracking_uri)
        existing = mlflow.get_experiment_by_name(self.experiment)
        if existing is not None:
            return existing.experiment_id
        return mlflow.create_experiment(self.experiment, artifact_location=default_artifact_root(self.tracking_uri))

    @contextlib.contextmanager
    def start_run(self, run_name: str, tags: dict[str, str] | None = None) -> Iterator["object"]:
        """Start an MLflow run in the project experiment; the caller logs params, metrics and models."""
        import mlflow

        experiment_id = self.experiment_id()
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags or {}) as run:
            yield run
