"""Model artifacts that cannot run code on load, and the keyed signatures that say they are ours.

Formats (one directory per model; :data:`SPEC_FILE` says which):

* ``torch_state_dict``: the module's tensors in ``weights.safetensors`` plus its constructor arguments as
  JSON; the module is rebuilt by a builder in :data:`TORCH_BUILDERS` (code in this package, chosen by name
  from a fixed table, never imported from the artifact), then the tensors are loaded into it.
* ``sklearn_skops``: a ``skops`` file; loading refuses every type outside :func:`trusted_skops_type`.
* ``statsmodels_sarimax``: the SARIMAX specification, training series and fitted parameters as JSON; the
  results object is rebuilt with ``SARIMAX(...).filter(params)`` (no re-fit, the same forecasts).

Signing: at registration every file gets an HMAC-SHA256 with the model signing key
(``ECOM_MODEL_SIGNING_KEY``, read through :class:`ecom_pipeline.config.Settings`), recorded in the version's
tag :data:`SIGNATURE_TAG`.  Loading copies the files to a private directory, checks that exactly the signed
files are there with the recorded digests, and only then parses them; a mismatch raises
:class:`ModelIntegrityError` naming the model and version.  Whoever can write the artifact store but not the
registry (a common split) can therefore neither run code nor swap a model.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SPEC_FILE = "ecom_model.json"
WEIGHTS_FILE = "weights.safetensors"
SKOPS_FILE = "model.skops"
VOCABULARY_FILE = "vocabularies.json"
PARAMS_FILE = "params.json"
FORMAT_VERSION = 1
SIGNATURE_TAG = "ecom.signature"  # JSON {"alg", "key_id", "files": {relative path: hex digest}}
KEY_ENV_VAR = "ECOM_MODEL_SIGNING_KEY"
KEY_FILE_NAME = ".model_signing_key"
MAX_SPEC_BYTES = 64 * 1024 * 1024  # a spec carries ids (recommenders): large, but bounded


class ModelIntegrityError(RuntimeError):
    """A registered version whose files are unsigned, tampered with, or in a format that could run code."""


class SigningKeyError(RuntimeError):
    """No model signing key where one is required."""


# --------------------------------------------------------------------------------------------- the key


def resolve_signing_key(settings) -> tuple[bytes, str]:
    """``(key, warning)`` from ``settings.model_signing_key`` (:class:`ecom_pipeline.config.Settings`, given
    by the caller: ``ml/`` reads no configuration); warning is "" when the key was set explicitly.

    Unset: with ``ECOM_ENV=local`` a random key is generated once into ``<data_root>/.model_signing_key``
    (mode 0600) and reused; anywhere else :class:`SigningKeyError` (a key generated inside a container would
    make every registered version unverifiable after a redeploy).
    """
    value = settings.model_signing_key
    if value:
        warning = (
            ""
            if len(value) >= 16
            else (f"{KEY_ENV_VAR} is short ({len(value)} characters); use at least 32 random characters")
        )
        return value.encode("utf-8"), warning
    if settings.env != "local":
        raise SigningKeyError(
            f"{KEY_ENV_VAR} is not set. In environment {settings.env!r} the model signing key must be "
            f"provided (e.g. `export {KEY_ENV_VAR}=$(python -c 'import secrets; "
            "print(secrets.token_hex(32))')`); it is only generated automatically with ECOM_ENV=local."
        )
    from ecom_pipeline.local_keys import read_or_create_key

    path = Path(settings.data_root) / KEY_FILE_NAME
    try:
        key = read_or_create_key(path)[0].encode("utf-8")
    except ValueError as exc:
        raise SigningKeyError(f"model signing {exc}") from exc
    return key, (
        f"{KEY_ENV_VAR} is not set: using the local key in {path} (generated once). Versions signed "
        "with it do not verify elsewhere; set the variable for any shared registry."
    )


def signing_key(settings) -> bytes:
    """The model signing key of ``settings`` (see :func:`resolve_signing_key`), logging its warning."""
    key, warning = resolve_signing_key(settings)
    if warning:
        log.warning(warning)
    return key


def key_id(key: bytes) -> str:
    """A short public fingerprint of the key, recorded beside the digests (tells 'wrong key' from
    'tampered')."""
    return hmac.new(key, b"ecom.model-signing-key-id", hashlib.sha256).hexdigest()[:12]


# ------------------------------------------------------------------------------------------- signatures


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() or p.is_symlink())


def file_digest(key: bytes, path: Path) -> str:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            mac.update(block)
    return mac.hexdigest()


def sign_directory(directory: Path, key: bytes) -> str:
    """The :data:`SIGNATURE_TAG` value for every file under ``directory``."""
    directory = Path(directory)
    files = {p.relative_to(directory).as_posix(): file_digest(key, p) for p in _files(directory)}
    return json.dumps({"alg": "hmac-sha256", "key_id": key_id(key), "files": files}, sort_keys=True)


def verify_directory(directory: Path, signature: str | None, key: bytes, label: str) -> None:
    """Raise :class:`ModelIntegrityError` unless ``directory`` holds exactly the signed files, unchanged."""
    if not signature:
        raise ModelIntegrityError(
            f"{label} is not signed (registered before signed safe-format artifacts, or by other code): "
            "refusing to load it; re-log it with `python -m ecom_pipeline.resign_models` or re-train"
        )
    try:
        record = json.loads(signature)
        expected = dict(record["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelIntegrityError(f"{label}: unreadable signature tag {SIGNATURE_TAG} ({exc})") from None
    if record.get("key_id") != key_id(key):
        raise ModelIntegrityError(
            f"{label} was signed with another key (key id {record.get('key_id')}, this process has "
            f"{key_id(key)}): set {KEY_ENV_VAR} to the key the registry was signed with"
        )
    directory = Path(directory)
    present = {p.relative_to(directory).as_posix(): p for p in _files(directory)}
    extra, missing = sorted(set(present) - set(expected)), sorted(set(expected) - set(present))
    if extra or missing:
        raise ModelIntegrityError(
            f"{label}: artifact files differ from the signed ones "
            f"(unsigned: {extra or 'none'}; missing: {missing or 'none'})"
        )
    bad = [
        rel
        for rel, p in present.items()
        if p.is_symlink() or not hmac.compare_digest(file_digest(key, p), str(expected[rel]))
    ]
    if bad:
        raise ModelIntegrityError(
            f"{label}: signature mismatch for {bad}: the artifact was changed after it "
            "was registered; refusing to load it"
        )


# ------------------------------------------------------------------------------------------------ torch


def _linear_config(m) -> dict:
    return {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None}


def _build_linear(cfg: dict):
    import torch

    return torch.nn.Linear(int(cfg["in_features"]), int(cfg["out_features"]), bias=bool(cfg["bias"]))


def _build_global_lstm(cfg: dict):
    from ecom_pipeline.ml.forecasting.lstm import GlobalLSTM

    return GlobalLSTM(**{k: int(v) for k, v in cfg.items()})


def _build_stgcn(cfg: dict):
    import numpy as np

    from ecom_pipeline.ml.forecasting.lstm import LSTMConfig
    from ecom_pipeline.ml.forecasting.stgcn import GraphConfig, SpatioTemporalNet

    n = int(cfg["n_states"])  # the adjacency itself is a buffer: it comes back with the weights
    lstm = LSTMConfig(hidden=int(cfg["hidden"]), embed_dim=int(cfg["embed_dim"]), horizon=int(cfg["horizon"]))
    graph = GraphConfig(gcn_dim=int(cfg["gcn_dim"]), gcn_layers=int(cfg["gcn_layers"]))
    return SpatioTemporalNet(np.zeros((n, n), dtype=np.float32), int(cfg["cov_dim"]), lstm, graph)


def _build_gcn_encoder(cfg: dict):
    from ecom_pipeline.ml.spatial.gcn import GCNEncoder

    return GCNEncoder(int(cfg["d_in"]), int(cfg["hidden"]), int(cfg["d_out"]))


def _build_factor_module(cfg: dict):
    from ecom_pipeline.ml.recsys.export import FactorRecommenderModule

    return FactorRecommenderModule.from_config(cfg)


def _build_finetuned_classifier(cfg: dict):
    from ecom_pipeline.ml.text.sentiment import FinetunedClassifier

    return FinetunedClassifier.from_config(cfg)


def _build_sasrec(cfg: dict):
    from ecom_pipeline.ml.recsys.sequence import SASRecNet

    return SASRecNet.from_config(cfg)


# class name (as recorded in the spec) -> builder; the only modules a torch artifact can become
TORCH_BUILDERS: dict[str, Callable[[dict], Any]] = {
    "torch.nn.Linear": _build_linear,
    "ecom_pipeline.ml.forecasting.lstm.GlobalLSTM": _build_global_lstm,
    "ecom_pipeline.ml.forecasting.stgcn.SpatioTemporalNet": _build_stgcn,
    "ecom_pipeline.ml.spatial.gcn.GCNEncoder": _build_gcn_encoder,
    "ecom_pipeline.ml.recsys.export.FactorRecommenderModule": _build_factor_module,
    "ecom_pipeline.ml.text.sentiment.FinetunedClassifier": _build_finetuned_classifier,
    "ecom_pipeline.ml.recsys.sequence.SASRecNet": _build_sasrec,
}


def _torch_spec(model) -> tuple[str, dict]:
    import torch

    if type(model) is torch.nn.Linear:
        return "torch.nn.Linear", _linear_config(model)
    name = f"{type(model).__module__}.{type(model).__qualname__}"
    if name not in TORCH_BUILDERS or not hasattr(model, "safe_config"):
        raise TypeError(
            f"no safe format for torch module {name}: add a builder to "
            "ecom_pipeline.ml.safe_artifacts.TORCH_BUILDERS and a safe_config() method"
        )
    return name, model.safe_config()


def _save_torch(model, directory: Path) -> dict:
    from safetensors.torch import save_file

    cls, config = _torch_spec(model)
    # clone: safetensors refuses tensors sharing memory (tied weights), and wants them contiguous
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    return {"format": "torch_state_dict", "class": cls, "config": config}


def _load_torch(spec: dict, directory: Path):
    from safetensors.torch import load_file

    builder = TORCH_BUILDERS.get(spec.get("class"))
    if builder is None:
        raise ModelIntegrityError(f"torch class {spec.get('class')!r} has no builder in this code")
    module = builder(spec["config"])
    module.load_state_dict(load_file(str(directory / WEIGHTS_FILE)), strict=True)
    return module.eval()


# ---------------------------------------------------------------------------------------------- sklearn

# types outside sklearn that the project's estimators contain (numpy/scipy values, builtins)
TRUSTED_NON_SKLEARN_TYPES = frozenset(
    {
        "builtins.slice",
        "builtins.set",
        "builtins.frozenset",
        "builtins.complex",
        "collections.OrderedDict",
        "collections.defaultdict",
        "numpy.dtype",
        "numpy.ndarray",
        "numpy.float64",
        "numpy.float32",
        "numpy.int64",
        "numpy.int32",
        "numpy.bool_",
        "numpy.str_",
        "numpy.random._mt19937.MT19937",
        "numpy.random.mtrand.RandomState",
        "numpy.random._generator.Generator",
        "numpy.random._pcg64.PCG64",
        "scipy.sparse._csr.csr_matrix",
        "scipy.sparse._csr.csr_array",
    }
)


def trusted_skops_type(name: str) -> bool:
    """Estimator classes of scikit-learn and the plain value types above; never a function (a function
    reference is how a crafted file would smuggle ``os.system`` or ``eval`` into an estimator)."""
    if name in TRUSTED_NON_SKLEARN_TYPES:
        return True
    if not name.startswith("sklearn."):
        return False
    import importlib

    module, _, attr = name.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return False
    return isinstance(obj, type)


def _vectorizers(model) -> dict[str, Any]:
    """Fitted text vectorizers (``vocabulary_`` dicts) in ``model``, by ``get_params`` path ("" = the
    model)."""
    found = {"": model} if isinstance(getattr(model, "vocabulary_", None), dict) else {}
    if hasattr(model, "get_params"):
        found |= {
            path: est
            for path, est in model.get_params(deep=True).items()
            if isinstance(getattr(est, "vocabulary_", None), dict)
        }
    return found


def _save_sklearn(model, directory: Path) -> dict:
    """skops, with text vocabularies beside it as JSON: skops writes a dict entry by entry (a 29k-term TF-IDF
    took 3 minutes and 26 MB; as JSON well under a second)."""
    import skops.io as sio

    vectorizers = _vectorizers(model)
    vocabularies = {
        path: {str(k): int(v) for k, v in est.vocabulary_.items()} for path, est in vectorizers.items()
    }
    try:
        for est in vectorizers.values():  # detached only for the dump; the caller's model is restored below
            est.vocabulary_ = None
        sio.dump(model, directory / SKOPS_FILE)
    finally:
        for path, est in vectorizers.items():
            est.vocabulary_ = vocabularies[path]
    spec = {"format": "sklearn_skops", "class": f"{type(model).__module__}.{type(model).__qualname__}"}
    if vocabularies:
        (directory / VOCABULARY_FILE).write_text(json.dumps(vocabularies))
        spec["vocabularies"] = sorted(vocabularies)
    return spec


def _load_sklearn(spec: dict, directory: Path):
    import skops.io as sio

    path = directory / SKOPS_FILE
    types = sio.get_untrusted_types(file=path)
    refused = [t for t in types if not trusted_skops_type(t)]
    if refused:
        raise ModelIntegrityError(f"skops file holds types outside the trusted list: {refused}")
    model = sio.load(path, trusted=types)
    if spec.get("vocabularies"):
        vocabularies = json.loads((directory / VOCABULARY_FILE).read_text())
        params = model.get_params(deep=True) if hasattr(model, "get_params") else {}
        for key in spec["vocabularies"]:
            est = model if key == "" else params.get(key)
            if est is None or not hasattr(est, "vocabulary_"):
                raise ModelIntegrityError(f"vocabulary for {key!r} has no vectorizer in the model")
            est.vocabulary_ = {str(k): int(v) for k, v in vocabularies[key].items()}
    return model


# ------------------------------------------------------------------------------------------ statsmodels


def _save_statsmodels(results, directory: Path) -> dict:
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    model = results.model
    if not isinstance(model, SARIMAX):
        raise TypeError(f"no safe format for statsmodels model {type(model).__name__} (only SARIMAX)")
    kwargs = model._get_init_kwds()
    keep = (
        "order",
        "seasonal_order",
        "trend",
        "enforce_stationarity",
        "enforce_invertibility",
        "measurement_error",
        "time_varying_regression",
        "mle_regression",
        "simple_differencing",
        "concentrate_scale",
        "trend_offset",
        "use_exact_diffuse",
    )
    if kwargs.get("exog") is not None:
        raise TypeError("no safe format for SARIMAX with exogenous regressors")
    params = {
        "init": {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items() if k in keep},
        "endog": [float(x) for x in model.endog.ravel()],
        "params": [float(x) for x in results.params],
    }
    (directory / PARAMS_FILE).write_text(json.dumps(params))
    return {"format": "statsmodels_sarimax", "class": "statsmodels.tsa.statespace.sarimax.SARIMAXResults"}


def _load_statsmodels(spec: dict, directory: Path):
    import warnings

    import numpy as np
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    p = json.loads((directory / PARAMS_FILE).read_text())
    init = dict(p["init"])
    for k in ("order", "seasonal_order"):
        init[k] = tuple(int(x) for x in init[k])
    if isinstance(init.get("trend"), list):
        init["trend"] = [int(x) for x in init["trend"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SARIMAX(np.asarray(p["endog"], dtype=float), **init).filter(
            np.asarray(p["params"], dtype=float)
        )


# ------------------------------------------------------------------------------------------------- api

_SAVERS = {"pytorch": _save_torch, "sklearn": _save_sklearn, "statsmodels": _save_statsmodels}
_LOADERS = {
    "torch_state_dict": _load_torch,
    "sklearn_skops": _load_sklearn,
    "statsmodels_sarimax": _load_statsmodels,
}


def save_model(model, flavor: str, directory: Path) -> dict:
    """Write ``model`` to the empty ``directory`` in its safe format; returns the spec written to
    SPEC_FILE."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    saver = _SAVERS.get(flavor)
    if saver is None:
        raise ValueError(f"flavor {flavor!r} has no safe format (one of {sorted(_SAVERS)})")
    spec = {"format_version": FORMAT_VERSION, "flavor": flavor, **saver(model, directory)}
    (directory / SPEC_FILE).write_text(json.dumps(spec))
    return spec


def load_model_dir(directory: Path):
    """Rebuild a model from a directory written by :func:`save_model` (verify it first!)."""
    directory = Path(directory)
    path = directory / SPEC_FILE
    if not path.is_file():
        raise ModelIntegrityError(f"no {SPEC_FILE}: not a safe-format model artifact")
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise ModelIntegrityError(f"{SPEC_FILE} is larger than {MAX_SPEC_BYTES} bytes")
    spec = json.loads(path.read_text())
    loader = _LOADERS.get(spec.get("format"))
    if loader is None or spec.get("format_version") != FORMAT_VERSION:
        raise ModelIntegrityError(
            f"unknown artifact format {spec.get('format')!r} v{spec.get('format_version')}"
        )
    return loader(spec, directory)


def load_verified(model_uri: str, signature: str | None, key: bytes, label: str):
    """Download ``model_uri`` into a private directory, verify it against ``signature``, then rebuild it."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="ecom-model-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        verify_directory(local, signature, key, label)
        try:
            return load_model_dir(local)
        except ModelIntegrityError as exc:
            raise ModelIntegrityError(f"{label}: {exc}") from None
