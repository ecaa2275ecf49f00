"""One-off: re-log the champions of an existing registry in the safe format, signed (issue #20).

    python -m ecom_pipeline.resign_models [--model NAME ...] [--dry-run]

For every registered model (or the ones named) whose ``champion`` does not verify because it was logged by
older code in an MLflow pickle flavour: read the old artifact WITHOUT running code from it, write it in the
safe format (:mod:`ecom_pipeline.ml.safe_artifacts`), register it as a new signed version carrying the old
version's score tags, and point ``champion`` at it.  Champions that already verify are left alone; a
champion that carries a signature which does not verify is never re-signed (it may have been tampered
with): re-train it.

Reading the old files: torch modules through ``torch.load(weights_only=True)`` with the project's module
classes allow-listed; scikit-learn and statsmodels pickles through :class:`LegacyUnpickler`, whose
``find_class`` resolves only classes of scikit-learn / statsmodels and a fixed list of numpy, pandas and
builtin reconstructors, so a crafted pickle (``os.system``, ``eval``, ...) fails to load instead of running.
Models whose class was defined inside a function by the old code (factor recommenders, the fine-tuned
sentiment model) were pickled by value (their code is in the file) and cannot be read this way: the command
reports them; re-train them (``dagster job execute -m ecom_pipeline.definitions -j training``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pickle  # only for LegacyUnpickler's allow-listed find_class; no pickle.load anywhere
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

RESIGNED_FROM_TAG = "ecom.resigned_from"
COPIED_TAGS = ("metric", "metric_value", "higher_is_better", "baseline", "baseline_value")

# functions (not classes) a legacy scikit-learn / statsmodels pickle needs to rebuild arrays and objects
LEGACY_FUNCTIONS = frozenset(
    {
        "copyreg._reconstructor",
        "copyreg.__newobj__",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.core.numeric._frombuffer",
        "numpy._core.numeric._frombuffer",
        "numpy.random._pickle.__bit_generator_ctor",
        "numpy.random._pickle.__generator_ctor",
        "numpy.random._pickle.__randomstate_ctor",
        "numpy.random.bit_generator.__pyx_unpickle_SeedSequence",
        "pandas.core.indexes.base._new_Index",
    }
)
LEGACY_CLASSES = frozenset(
    {
        "builtins.object",
        "builtins.slice",
        "builtins.set",
        "builtins.frozenset",
        "builtins.complex",
        "collections.OrderedDict",
        "types.SimpleNamespace",
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.float64",
        "numpy.float32",
        "numpy.int64",
        "numpy.int32",
        "numpy.random._pcg64.PCG64",
        "numpy.random._mt19937.MT19937",
        "numpy.random.bit_generator.SeedSequence",
        "numpy.random._generator.Generator",
        "numpy.random.mtrand.RandomState",
        "pandas.core.indexes.range.RangeIndex",
        "pandas.core.indexes.base.Index",
    }
)
LEGACY_CLASS_PACKAGES = ("sklearn.", "statsmodels.", "numpy.dtypes.")


class LegacyUnpickler(pickle.Unpickler):
    """An unpickler that can only build allow-listed types: it never resolves ``os.system``, ``eval`` or
    any other callable, so a crafted file raises ``UnpicklingError`` instead of running."""

    def find_class(self, module: str, name: str):
        full = f"{module}.{name}"
        if full in LEGACY_FUNCTIONS or full in LEGACY_CLASSES:
            return super().find_class(module, name)
        if module.startswith(LEGACY_CLASS_PACKAGES) and "." not in name:
            obj = getattr(importlib.import_module(module), name, None)
            # classes, and Cython's own __pyx_unpickle_<Class> helpers (they rebuild only their class)
            if isinstance(obj, type) or (name.startswith("__pyx_unpickle_") and callable(obj)):
                return obj
        raise pickle.UnpicklingError(f"refusing to load {full}: not an allow-listed type (resign_models)")


def _legacy_torch_classes() -> list:
    import torch

    from ecom_pipeline.ml.forecasting.lstm import GlobalLSTM
    from ecom_pipeline.ml.forecasting.stgcn import SpatioTemporalNet
    from ecom_pipeline.ml.spatial.gcn import GCNEncoder, GCNLayer

    nn = torch.nn
    return [
        GlobalLSTM,
        SpatioTemporalNet,
        GCNEncoder,
        GCNLayer,
        nn.Linear,
        nn.LSTM,
        nn.Embedding,
        nn.Sequential,
        nn.ModuleList,
        nn.ReLU,
    ]


def read_legacy_model(directory: Path):
    """``(flavor, model)`` from an MLflow pickle-flavour artifact directory, without running code from it."""
    import yaml

    meta = yaml.safe_load((directory / "MLmodel").read_text())
    flavors = meta.get("flavors") or {}
    if "pytorch" in flavors:
        import torch

        data = directory / (flavors["pytorch"].get("model_data") or "data")
        path = data / "model.pth" if data.is_dir() else data
        with torch.serialization.safe_globals(_legacy_torch_classes()):
            return "pytorch", torch.load(path, map_location="cpu", weights_only=True)
    if "sklearn" in flavors:
        with open(directory / flavors["sklearn"]["pickled_model"], "rb") as fh:
            return "sklearn", LegacyUnpickler(fh).load()
    if "statsmodels" in flavors:
        with open(directory / flavors["statsmodels"]["data"], "rb") as fh:
            return "statsmodels", LegacyUnpickler(fh).load()
    raise ValueError(f"no legacy reader for flavours {sorted(flavors)}")


@dataclass
class Outcome:
    name: str
    champion_version: str
    action: str  # already_signed | resigned | would_resign | refused
    new_version: str | None = None
    detail: str = ""


def resign_champion(name: str, client, *, dry_run: bool = False, run_name: str = "resign_models") -> Outcome:
    import mlflow

    from ecom_pipeline.config import Settings
    from ecom_pipeline.ml.registry import CHAMPION, _log
    from ecom_pipeline.ml.safe_artifacts import SIGNATURE_TAG, ModelIntegrityError, load_verified, signing_key

    champion = client.get_model_version_by_alias(name, CHAMPION)
    version, tags = str(champion.version), dict(champion.tags or {})
    key = signing_key(Settings.from_env())
    uri = f"models:/{name}/{version}"
    if tags.get(SIGNATURE_TAG):
        try:
            load_verified(uri, tags[SIGNATURE_TAG], key, f"model {name} version {version}")
        except ModelIntegrityError as exc:
            return Outcome(
                name, version, "refused", detail=f"signed but does not verify, not re-signing: {exc}"
            )
        return Outcome(name, version, "already_signed")
    with tempfile.TemporaryDirectory(prefix="ecom-resign-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        try:
            flavor, model = read_legacy_model(local)
        except (
            pickle.UnpicklingError,
            ImportError,
            AttributeError,
            KeyError,
            TypeError,
            ValueError,
            OSError,
            EOFError,
            RuntimeError,
        ) as exc:  # unreadable without running code (or broken): report, leave it
            return Outcome(
                name,
                version,
                "refused",
                detail=f"{type(exc).__name__}: {str(exc)[:300]} (re-train this model)",
            )
    if dry_run:
        return Outcome(name, version, "would_resign", detail=flavor)
    from ecom_pipeline.ml.registry import Candidate

    candidate = Candidate(name, flavor, model, None, tags.get("metric", "unknown"), float("nan"))
    with mlflow.start_run(run_name=run_name, tags={"task": "resign_models", "model": name}):
        model_uri, signature = _log(candidate, key)
        new_tags = {k: tags[k] for k in COPIED_TAGS if k in tags} | {
            SIGNATURE_TAG: signature,
            RESIGNED_FROM_TAG: version,
            "promoted": "True",
            "promotion_reason": f"v{version} re-logged in the safe format and signed (resign_models)",
        }
        new = str(mlflow.register_model(model_uri, name, tags=new_tags).version)
    load_verified(f"models:/{name}/{new}", signature, key, f"model {name} version {new}")  # it reads back
    client.set_registered_model_alias(name, CHAMPION, new)
    return Outcome(name, version, "resigned", new, flavor)


def resign_models(names: list[str] | None = None, *, dry_run: bool = False, client=None) -> list[Outcome]:
    """Re-sign the champion of every registered model (or of ``names``); one :class:`Outcome` each."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = client or mlflow.MlflowClient()
    if names is None:
        names, token = [], None
        while True:
            page = client.search_registered_models(max_results=200, page_token=token)
            names += [m.name for m in page if "champion" in (m.aliases or {})]
            token = page.token
            if not token:
                break
    outcomes = []
    for name in sorted(names):
        try:
            outcomes.append(resign_champion(name, client, dry_run=dry_run))
        except MlflowException as exc:
            outcomes.append(Outcome(name, "?", "refused", detail=f"{type(exc).__name__}: {str(exc)[:300]}"))
    return outcomes


def main(argv: list[str] | None = None) -> int:
    from ecom_pipeline.config import Settings
    from ecom_pipeline.resources.tracking import MLflowResource

    parser = argparse.ArgumentParser(
        prog="python -m ecom_pipeline.resign_models", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", action="append", help="registered model name (repeatable; default: all)")
    parser.add_argument("--dry-run", action="store_true", help="read the old champions, register nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    tracking = MLflowResource(tracking_uri=Settings.from_env().mlflow_tracking_uri)
    import mlflow

    # the project experiment (and the local store) exist, the URI is set, the re-log runs land there
    mlflow.set_experiment(experiment_id=tracking.experiment_id())
    outcomes = resign_models(args.model, dry_run=args.dry_run, client=tracking.client())
    for o in outcomes:
        print(
            f"{o.action:14s} {o.name} v{o.champion_version}"
            + (f" -> v{o.new_version}" if o.new_version else "")
            + (f"  {o.detail}" if o.detail else "")
        )
    return 1 if any(o.action == "refused" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
