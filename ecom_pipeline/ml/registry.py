"""The common path of every trained model: log → register a version → compare with the champion → promote.

Downstream code loads ``models:/<name>@champion``, never "the newest file".  A new version takes the
``champion`` alias only when it beats the current champion by ``margin`` on the metric both were scored on
(the current holdout when ``score_champion`` is given, else the champion's recorded score).

Faults: a version is created only after its artifact and score are logged, with its score tags in the same
call, and the alias moves last, so a tracking server lost half way leaves no version without its metrics and
the champion unchanged.  A champion whose artifact no longer loads is tagged ``ecom.load_error`` and the
previous champion is served instead (:func:`load_serving_model`).

Artifacts are written in formats that cannot run code when read (state dicts in safetensors, skops with a
trusted-type list, parameters as JSON: :mod:`ecom_pipeline.ml.safe_artifacts`) and every file is signed with
``ECOM_MODEL_SIGNING_KEY`` at registration; a version whose files do not match its signature is refused.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from ecom_pipeline.ml.safe_artifacts import SIGNATURE_TAG

CHAMPION = "champion"
LOAD_ERROR_TAG = "ecom.load_error"

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    name: str  # registered model name, e.g. "ecom.sentiment.head"
    flavor: str  # sklearn | pytorch | statsmodels (each has a safe format in ml/safe_artifacts.py)
    model: Any
    input_example: Any
    metric: str  # conventional name, e.g. "macro_f1"
    value: float
    higher_is_better: bool = True
    baseline: str | None = None  # the simple baseline it was compared with, e.g. "seasonal_naive"
    baseline_value: float | None = None  # the baseline's score on the same holdout and metric


@dataclass
class RegistryOutcome:
    name: str
    version: str
    promoted: bool
    champion_version: str
    reason: str
    model_uri: str


def _log(candidate: Candidate, key: bytes) -> tuple[str, str]:
    """Write the candidate in its safe format as an MLflow logged model of the active run; sign its files.

    Returns ``(model_uri, signature)``: the signature (:data:`SIGNATURE_TAG`) goes on the registry version in
    the same call that creates it, so no version exists unsigned.
    """
    import tempfile
    from pathlib import Path

    import mlflow

    from ecom_pipeline.ml.safe_artifacts import save_model, sign_directory

    with tempfile.TemporaryDirectory(prefix="ecom-model-") as tmp:
        directory = Path(tmp) / "model"
        spec = save_model(candidate.model, candidate.flavor, directory)
        signature = sign_directory(directory, key)
        run = mlflow.active_run()
        # in the run's experiment (its artifact root), as log_model did
        logged = mlflow.initialize_logged_model(
            name="model",
            source_run_id=run.info.run_id if run else None,
            experiment_id=run.info.experiment_id if run else None,
            tags={"ecom.format": spec["format"], "ecom.class": spec["class"][:250]},
        )
        mlflow.MlflowClient().log_model_artifacts(logged.model_id, str(directory))
        mlflow.finalize_logged_model(logged.model_id, "READY")
    return f"models:/{logged.model_id}", signature


def log_and_register(
    candidate: Candidate,
    *,
    key: bytes,
    margin: float = 0.0,
    score_champion: Callable[[str], float] | None = None,
) -> RegistryOutcome:
    """Inside an active MLflow run: log and register ``candidate``, its files signed with ``key`` (the
    caller's model signing key, :func:`ecom_pipeline.ml.safe_artifacts.signing_key`); move ``champion`` if
    it wins."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    model_uri, signature = _log(candidate, key)
    # the run holds the score before the registry hears of the version (MLflow metric names allow no "@")
    mlflow.log_metric(
        re.sub(r"[^\w./ :-]", "_", f"registry.{candidate.name}.{candidate.metric}"), float(candidate.value)
    )
    tags = {
        "metric": candidate.metric,
        "metric_value": repr(float(candidate.value)),
        "higher_is_better": str(candidate.higher_is_better),
        SIGNATURE_TAG: signature,
    }
    if candidate.baseline is not None:
        tags["baseline"] = candidate.baseline
    if candidate.baseline_value is not None:
        tags["baseline_value"] = repr(float(candidate.baseline_value))
    version = str(mlflow.register_model(model_uri, candidate.name, tags=tags).version)
    try:
        champion = client.get_model_version_by_alias(candidate.name, CHAMPION)
    except MlflowException:
        champion = None

    if champion is None:
        promoted, reason = True, "first version: no champion yet"
    else:
        champ_uri = f"models:/{candidate.name}/{champion.version}"
        if score_champion is not None:
            champ_value = float(score_champion(champ_uri))
            basis = "re-scored on the current holdout"
        else:
            champ_value = float(champion.tags.get("metric_value", "nan"))
            basis = "recorded score"
        delta = candidate.value - champ_value if candidate.higher_is_better else champ_value - candidate.value
        promoted = delta > margin or champ_value != champ_value  # NaN: champion has no comparable score
        reason = (
            f"{candidate.metric}: candidate {candidate.value:.4f} vs champion v{champion.version} "
            f"{champ_value:.4f} ({basis}); margin {margin}"
        )
    if promoted:
        client.set_registered_model_alias(candidate.name, CHAMPION, version)
    client.set_model_version_tag(candidate.name, version, "promoted", str(promoted))
    client.set_model_version_tag(candidate.name, version, "promotion_reason", reason[:5000])
    champion_version = version if promoted else str(champion.version)
    mlflow.set_tags(
        {f"registry.{candidate.name}.promoted": str(promoted), f"registry.{candidate.name}.version": version}
    )
    return RegistryOutcome(
        candidate.name, version, promoted, champion_version, reason, f"models:/{candidate.name}@{CHAMPION}"
    )


@dataclass
class ModelRun:
    """Everything a model asset records in MLflow for one run: :func:`record_run` logs it in one sequence."""

    name: str  # the MLflow run name, e.g. "sarima_backtest"
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # logged as given (callers drop NaN if they must)
    metric_steps: dict[str, list[float]] = field(default_factory=dict)  # per-step series, e.g. train_loss
    dicts: dict[str, Any] = field(default_factory=dict)  # artifact file name -> JSON-able content
    candidates: list[Candidate] = field(default_factory=list)  # registered in this order


@dataclass
class RecordedRun:
    run_id: str
    outcomes: list[RegistryOutcome]

    def outcome(self, name: str) -> RegistryOutcome | None:
        """The registry outcome of the candidate registered as ``name`` in this run (None: not registered)."""
        return next((o for o in self.outcomes if o.name == name), None)


def record_run(run: ModelRun, experiment_id: str, key: bytes) -> RecordedRun:
    """The one MLflow sequence of every model asset: start the run, log params, metrics and JSON artifacts,
    then log, sign and register each candidate (:func:`log_and_register`: champion alias moves last).

    The tracking URI must already be set (the tracking resource does it); nothing here reads configuration.
    """
    import mlflow

    with mlflow.start_run(experiment_id=experiment_id, run_name=run.name, tags=run.tags) as active:
        if run.params:
            mlflow.log_params(run.params)
        if run.metrics:
            mlflow.log_metrics({k: float(v) for k, v in run.metrics.items()})
        for metric, values in run.metric_steps.items():
            for step, value in enumerate(values):
                mlflow.log_metric(metric, float(value), step=step)
        for file_name, content in run.dicts.items():
            mlflow.log_dict(content, file_name)
        outcomes = [log_and_register(candidate, key=key) for candidate in run.candidates]
        return RecordedRun(active.info.run_id, outcomes)


@dataclass
class ServedModel:
    model: Any
    name: str
    version: str  # the version actually loaded
    champion_version: str  # the version the champion alias points to
    fallback_reason: str | None = None  # why the champion itself is not served (None: it is)


def load_version(name: str, version, key: bytes, client=None):
    """The model of ``name`` version ``version``, after its files were verified against the version's
    signature.

    Raises :class:`~ecom_pipeline.ml.safe_artifacts.ModelIntegrityError` (naming model and version) for an
    unsigned, tampered or unsafe artifact; nothing in the artifact is parsed before it verifies.
    """
    import mlflow

    from ecom_pipeline.ml.safe_artifacts import load_verified

    client = client or mlflow.MlflowClient()
    mv = client.get_model_version(name, str(version))
    return load_verified(
        f"models:/{name}/{mv.version}",
        (mv.tags or {}).get(SIGNATURE_TAG),
        key,
        f"model {name} version {mv.version}",
    )


def load_serving_model(name: str, flavor: str = "pyfunc", client=None, *, key: bytes) -> ServedModel:
    """Load the champion of ``name``; if its artifact does not load, serve the newest former champion that
    does.

    Every version is verified against its signature before anything in it is parsed (``load_version``); a
    version that fails (tampered, unsigned, corrupt, missing) is logged and tagged ``ecom.load_error`` (the
    tag is cleared once it loads again); the alias is not moved: re-train, or point ``champion`` at a good
    version by hand.  Only former champions (tag ``promoted=True``) are fallbacks: a version that lost its
    comparison is never served.  ``flavor`` is kept for callers; the artifact's own format decides how the
    model is rebuilt (sklearn → the estimator, pytorch → the module, statsmodels → the results object).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from ecom_pipeline.ml.safe_artifacts import load_verified

    client = client or mlflow.MlflowClient()
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        raise LookupError(
            f"no usable champion for model {name!r} (models:/{name}@{CHAMPION}): {exc}"
        ) from exc
    quoted = name.replace("'", "\\'")
    former = sorted(
        (
            v
            for v in client.search_model_versions(f"name = '{quoted}'")
            if int(v.version) < int(champion.version) and v.tags.get("promoted") == "True"
        ),
        key=lambda v: -int(v.version),
    )
    errors = []
    for v in [champion, *former]:
        try:
            model = load_verified(
                f"models:/{name}/{v.version}",
                (v.tags or {}).get(SIGNATURE_TAG),
                key,
                f"model {name} version {v.version}",
            )
        except (
            Exception
        ) as exc:  # tampered, unsigned, corrupt or missing artifact: record it, try the next one
            error = f"{type(exc).__name__}: {exc}"[:500]
            errors.append(f"v{v.version}: {error}")
            log.error("model %s v%s does not load: %s", name, v.version, error)
            with suppress(Exception):  # the tag is a record, not a requirement
                client.set_model_version_tag(name, v.version, LOAD_ERROR_TAG, error)
            continue
        if LOAD_ERROR_TAG in (v.tags or {}):
            with suppress(Exception):
                client.delete_model_version_tag(name, v.version, LOAD_ERROR_TAG)
        reason = (
            None
            if not errors
            else (
                f"champion {name} v{champion.version} does not load ({errors[0]}); "
                f"serving former champion v{v.version}"
            )
        )
        if reason:
            log.warning(reason)
        return ServedModel(model, name, str(v.version), str(champion.version), reason)
    raise LookupError(
        f"no usable champion for model {name!r}: the champion and every former champion fail to "
        f"load ({'; '.join(errors)})"
    )


def load_champion(name: str, flavor: str = "pyfunc", *, key: bytes):
    """The served model of ``name`` (see :func:`load_serving_model`); LookupError when none loads."""
    return load_serving_model(name, flavor, key=key).model


# ------------------------------------------------------------------------------------------- reporting


def _float(text) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def beats_baseline(value: float | None, baseline_value: float | None, higher_is_better: bool) -> bool | None:
    """True/False when both scores are known, None otherwise."""
    if value is None or baseline_value is None or value != value or baseline_value != baseline_value:
        return None
    return value > baseline_value if higher_is_better else value < baseline_value


REPORT_COLUMNS = [
    "model",
    "versions",
    "latest_version",
    "champion_version",
    "metric",
    "champion_value",
    "baseline",
    "baseline_value",
    "beats_baseline",
    "latest_promoted",
    "latest_reason",
    "champion_created_at",
    "champion_age_days",
    "champion_run_id",
    "champion_uri",
]


def registry_summary(client=None, *, now=None) -> list[dict]:
    """One row per registered model: its champion (version, metric, baseline, age) and its newest version.

    Works on an empty registry (no rows).  ``client``: an ``mlflow.MlflowClient`` (default: the current
    tracking URI).
    """
    from datetime import datetime, timezone

    import mlflow

    client = client or mlflow.MlflowClient()
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    models, token = [], None
    while True:
        page = client.search_registered_models(max_results=200, page_token=token)
        models.extend(page)
        token = page.token
        if not token:
            break
    rows = []
    for rm in sorted(models, key=lambda m: m.name):
        versions = client.search_model_versions(f"name = '{rm.name}'")
        latest = max(versions, key=lambda v: int(v.version), default=None)
        champ_version = (rm.aliases or {}).get(CHAMPION)
        champ = next((v for v in versions if str(v.version) == str(champ_version)), None)
        tags = champ.tags if champ is not None else {}
        value, base = _float(tags.get("metric_value")), _float(tags.get("baseline_value"))
        hib = tags.get("higher_is_better", "True") != "False"
        created = (
            datetime.fromtimestamp(champ.creation_timestamp / 1000, tz=timezone.utc).replace(tzinfo=None)
            if champ is not None and champ.creation_timestamp
            else None
        )
        rows.append(
            {
                "model": rm.name,
                "versions": len(versions),
                "latest_version": str(latest.version) if latest is not None else None,
                "champion_version": str(champ_version) if champ_version is not None else None,
                "metric": tags.get("metric"),
                "champion_value": value,
                "baseline": tags.get("baseline"),
                "baseline_value": base,
                "beats_baseline": beats_baseline(value, base, hib),
                "latest_promoted": (latest.tags.get("promoted") == "True")
                if latest is not None and "promoted" in latest.tags
                else None,
                "latest_reason": latest.tags.get("promotion_reason") if latest is not None else None,
                "champion_created_at": created,
                "champion_age_days": round((now - created).total_seconds() / 86400, 3) if created else None,
                "champion_run_id": champ.run_id if champ is not None else None,
                "champion_uri": f"models:/{rm.name}@{CHAMPION}" if champ is not None else None,
            }
        )
    return rows


SKIP_METADATA_KEYS = ("skipped", "message")  # what a model asset writes when it trained nothing, and why


def skip_reason(metadata: dict | None) -> str | None:
    """Why the model asset's latest materialisation trained nothing (its ``skipped``/``message`` metadata)."""
    for key in SKIP_METADATA_KEYS:
        value = (metadata or {}).get(key)
        value = getattr(value, "value", value)
        if isinstance(value, str) and value and value != "none":  # a dict is a per-part skip list, not a skip
            return value
    return None


def gate_verdict(row: dict | None, name: str, skipped: str | None = None) -> tuple[bool, str, str]:
    """(passed, severity "ERROR"|"WARN", description) of the promotion gate for one registry row.

    ``skipped``: the asset trained nothing this run, for this reason (too little data): passed with a WARN
    description, nothing to gate; the serving gate serves the baseline.  ERROR (blocks downstream): the model
    is not registered, has no champion, or the champion carries no comparable score.  WARN: the champion does
    not beat its baseline (the serving gate then serves the baseline).
    """
    if skipped:
        return True, "WARN", f"{name}: training skipped ({skipped}); nothing to promote, the baseline serves"
    if row is None:
        return False, "ERROR", f"{name} is not registered"
    if row["champion_version"] is None:
        return False, "ERROR", f"{name} has no champion alias"
    if row["champion_value"] is None or row["champion_value"] != row["champion_value"]:
        return False, "ERROR", f"{name} champion v{row['champion_version']} has no recorded {row['metric']}"
    if row["beats_baseline"] is False:
        return (
            False,
            "WARN",
            (
                f"{name} champion v{row['champion_version']} loses to its baseline "
                f"{row['baseline']}: {row['metric']} {row['champion_value']:.4f} vs "
                f"{row['baseline_value']:.4f}"
            ),
        )
    return (
        True,
        "ERROR",
        (
            f"{name} champion v{row['champion_version']}: {row['metric']} "
            f"{row['champion_value']:.4f}"
            + (f" vs baseline {row['baseline_value']:.4f}" if row["baseline_value"] is not None else "")
        ),
    )
