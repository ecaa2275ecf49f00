"""The common path of every trained model: log → register a version → compare with the champion → promote.

Downstream code loads ``models:/<name>@champion``, never "the newest file".  A new version takes the
``champion`` alias only when it beats the current champion by ``margin`` on the metric both were scored on
(the current holdout when ``score_champion`` is given, else the champion's recorded score).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CHAMPION = "champion"


@dataclass
class Candidate:
    name: str  # registered model name, e.g. "ecom.sentiment.head"
    flavor: str  # sklearn | pytorch | statsmodels | pyfunc
    model: Any
    input_example: Any
    metric: str  # conventional name, e.g. "macro_f1"
    value: float
    higher_is_better: bool = True


@dataclass
class RegistryOutcome:
    name: str
    version: str
    promoted: bool
    champion_version: str
    reason: str
    model_uri: str


def _log(candidate: Candidate):
    import mlflow
    from mlflow.models import infer_signature

    example = candidate.input_example
    signature = None
    if candidate.flavor in ("sklearn", "statsmodels") and example is not None:
        try:
            signature = infer_signature(example, candidate.model.predict(example))
        except Exception:  # a model whose predict needs more than the example still gets logged
            signature = infer_signature(example)
    flavor = getattr(mlflow, candidate.flavor)
    return flavor.log_model(
        candidate.model, name="model", registered_model_name=candidate.name, signature=signature,
        input_example=example if candidate.flavor != "pytorch" else None,
    )


def log_and_register(
    candidate: Candidate,
    *,
    margin: float = 0.0,
    score_champion: Callable[[str], float] | None = None,
) -> RegistryOutcome:
    """Inside an active MLflow run: log and register ``candidate``; move ``champion`` if it wins."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    info = _log(candidate)
    version = str(info.registered_model_version)
    client.set_model_version_tag(candidate.name, version, "metric", candidate.metric)
    client.set_model_version_tag(candidate.name, version, "metric_value", repr(float(candidate.value)))
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
        reason = (f"{candidate.metric}: candidate {candidate.value:.4f} vs champion v{champion.version} "
                  f"{champ_value:.4f} ({basis}); margin {margin}")
    if promoted:
        client.set_registered_model_alias(candidate.name, CHAMPION, version)
    champion_version = version if promoted else str(champion.version)
    mlflow.set_tags({f"registry.{candidate.name}.promoted": str(promoted),
                     f"registry.{candidate.name}.version": version})
    return RegistryOutcome(candidate.name, version, promoted, champion_version, reason,
                           f"models:/{candidate.name}@{CHAMPION}")


def load_champion(name: str, flavor: str = "pyfunc"):
    """Load ``models:/<name>@champion`` with the given flavor's loader; a clear error when there is none."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = f"models:/{name}@{CHAMPION}"
    try:
        return getattr(mlflow, flavor).load_model(uri)
    except MlflowException as exc:
        raise LookupError(f"no usable champion for model {name!r} ({uri}): {exc}") from exc
