"""The serving app: FastAPI over the read-only snapshot and the registry champions.

``make serve`` (or ``python -m ecom_pipeline.api``) starts it with uvicorn; the OpenAPI page is at
``/docs``.  Everything it reads comes from the published snapshot (never the warehouse, so it never holds
the warehouse lock) and from ``load_serving_model``; a poller swaps in a new snapshot or new champions
when they change, without a restart and without failing requests in flight.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import io
import logging
import os
import threading
import time
import uuid
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, Field

from ecom_pipeline.config import Settings

log = logging.getLogger("ecom_pipeline.api")

MAX_TEXT_CHARS = 5000
MAX_EVENTS = 200


# ------------------------------------------------------------------------------------------ request models


class Event(BaseModel):
    product_id: str = Field(min_length=1, max_length=200)
    event_type: Literal["view", "cart", "purchase"]
    ts: datetime | None = Field(None, description="when it happened (ISO 8601; default: now, UTC)")
    session_id: str | None = Field(None, max_length=200)


class RecommendationRequest(BaseModel):
    customer_id: str = Field(
        min_length=1, max_length=200, description="the shop's customer id (not the pseudonym)"
    )
    events: list[Event] = Field(
        default_factory=list,
        max_length=MAX_EVENTS,
        description="this session's events, oldest first; appended to the inbox",
    )
    k: int = Field(10, ge=1, le=100)
    region: str | None = Field(None, max_length=50, description="state for a customer without a history")


class CustomerEvent(Event):
    customer_id: str = Field(min_length=1, max_length=200)


class EventsRequest(BaseModel):
    events: list[CustomerEvent] = Field(min_length=1, max_length=MAX_EVENTS)


def _not_blank(v: str) -> str:
    if not v.strip():
        raise ValueError("text is empty")
    return v


class TriageRequest(BaseModel):
    text: Annotated[str, Field(max_length=MAX_TEXT_CHARS), AfterValidator(_not_blank)]
    title: str | None = Field(None, max_length=500)


class TextQuery(BaseModel):
    text: Annotated[str, Field(max_length=1000), AfterValidator(_not_blank)]
    k: int = Field(10, ge=1, le=100)


# ------------------------------------------------------------------------------------------------- state


class AppState:
    """Everything the endpoints read; ``data`` and ``champions`` are replaced whole on reload."""

    def __init__(self, settings: Settings):
        from ecom_pipeline.api.pauses import GcPauses, PauseLog

        self.settings = settings
        self.gc_pauses = GcPauses()  # installed for the app's lifetime (lifespan), shown in /ready
        self.poller_ticks = PauseLog()
        self.data = None
        self.champions = None
        self.encoder = None
        self.image_encoder = None
        self.intents = None
        self.encoder_fallback: str | None = None  # why the configured text runtime is not the one serving
        self.key: bytes = b""
        self.spool = None
        self.reloads: list[dict] = []
        self.watch = None  # ChampionWatch, built by load()
        self.frozen_objects = 0  # objects moved out of the collector's reach after loading
        self.started_at = datetime.now(UTC)
        self._stop = threading.Event()
        self._reload_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def load(self) -> None:
        from ecom_pipeline.api.data import load_serving_data
        from ecom_pipeline.api.events import EventSpool
        from ecom_pipeline.api.models import (
            SERVED_MODELS,
            BatchingEncoder,
            ChampionWatch,
            load_champions,
            load_serving_text_encoder,
        )
        from ecom_pipeline.api.pauses import freeze_loaded_objects
        from ecom_pipeline.cleaning.privacy import resolve_pseudonym_key
        from ecom_pipeline.ml.text.topics import intent_matrix
        from ecom_pipeline.paths import DataPaths

        s = self.settings
        self.key, warning = resolve_pseudonym_key(s.env, s.data_root)
        if warning:
            log.warning(warning)
        self.data = load_serving_data(s.snapshot)
        models_dir = DataPaths(s.data_root).models
        self.champions = load_champions(s.mlflow_tracking_uri, models_dir=models_dir)
        text, self.encoder_fallback = load_serving_text_encoder(models_dir, s.api_text_runtime)
        self.encoder = BatchingEncoder(text, window_s=s.api_batch_window_ms / 1000)
        self.intents = intent_matrix(text)  # also warms the encoder up before the first request
        if len(self.data.image):
            from PIL import Image

            from ecom_pipeline.ml.encoders import DEFAULT_IMAGE_ENCODER, load_image_encoder

            self.image_encoder = load_image_encoder(self.data.image.model or DEFAULT_IMAGE_ENCODER)
            self.image_encoder.encode_images([Image.new("RGB", (64, 64))])  # first call builds the transforms
        self.spool = EventSpool(s.data_root)
        self.watch = ChampionWatch(s.mlflow_tracking_uri, SERVED_MODELS)
        self.watch.versions()  # the registry client is built now, not on the first poll beside traffic
        self.frozen_objects = freeze_loaded_objects()

    def check(self) -> dict:
        """Reload the snapshot and/or champions when they changed; returns what was reloaded."""
        from ecom_pipeline.api.data import load_serving_data
        from ecom_pipeline.api.models import changed, load_champions
        from ecom_pipeline.paths import DataPaths
        from ecom_pipeline.snapshot import snapshot_identity

        with self._reload_lock:
            done: dict = {"at": datetime.now(UTC).isoformat(timespec="seconds")}
            if snapshot_identity(self.settings.snapshot) not in (None, self.data.identity):
                self.data = load_serving_data(self.settings.snapshot)
                done["snapshot"] = self.data.published_at
            moved = changed(self.champions, self.watch.versions())
            if moved:
                self.champions = load_champions(
                    self.settings.mlflow_tracking_uri, models_dir=DataPaths(self.settings.data_root).models
                )
                done["champions"] = {n: self.champions.describe().get(n) for n in moved}
            if len(done) > 1:
                # what was just loaded joins the frozen objects (no collection: the replaced snapshot and
                # models are freed by reference counting; measured: no cyclic garbage left behind)
                gc.freeze()
                self.reloads = (self.reloads + [done])[-20:]
                log.info("reloaded: %s", done)
            return done

    def start_polling(self) -> None:
        def loop():
            while not self._stop.wait(self.settings.api_poll_seconds):
                started = time.perf_counter()
                try:
                    done = self.check()
                    self.spool.rotate()
                except Exception:  # a failed poll keeps the models and data already loaded
                    log.exception("reload check failed; serving what is loaded")
                    done = {"failed": True}
                self.poller_ticks.add(
                    (time.perf_counter() - started) * 1000,
                    ",".join(k for k in done if k != "at") or "no change",
                )

        self._thread = threading.Thread(target=loop, name="champion-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:  # a check in progress finishes before the app is gone
            self._thread.join(timeout=60)
        if self.spool is not None:
            self.spool.rotate(force=True)


# ------------------------------------------------------------------------------------------------ guards


class BodyLimit:
    """Pure ASGI middleware: a body over ``max_bytes`` gets 413 before any endpoint reads it."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._too_large(send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self._too_large(send)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, send):
        response = JSONResponse(
            {"error": "request body too large", "max_bytes": self.max_bytes}, status_code=413
        )
        await response({"type": "http"}, None, send)


def _timeout(state: AppState) -> float:
    return state.settings.api_timeout_s


async def _run(state: AppState, fn, *args):
    """``fn(*args)`` on the thread pool, cut off after the per-request timeout (504)."""
    try:
        return await asyncio.wait_for(run_in_threadpool(fn, *args), timeout=_timeout(state))
    except TimeoutError:
        raise HTTPException(504, f"request took longer than {_timeout(state):.1f} s") from None


# --------------------------------------------------------------------------------------------------- app


def create_app(settings: Settings | None = None, *, poll: bool = True) -> FastAPI:
    settings = settings or Settings.from_env()
    if settings.env != "local" and not settings.api_key:
        raise RuntimeError(
            f"ECOM_API_KEY must be set to serve in ECOM_ENV={settings.env!r} (only local mode "
            "runs without an API key)"
        )
    state = AppState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(state.load)
        state.gc_pauses.install()
        if poll:
            state.start_polling()
        yield
        state.stop()
        state.gc_pauses.uninstall()
        # frozen objects are never collected: give what this app loaded back to the collector (a process
        # that goes on, e.g. a test session, would otherwise keep every model it loaded)
        gc.unfreeze()

    app = FastAPI(
        title="ecom_pipeline serving",
        version="1",
        lifespan=lifespan,
        description="Recommendations re-ranked by the session, review triage, similar products and "
        "forecasts from the published snapshot and the registry champions.",
    )
    app.state.serving = state
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)

    def require_key(request: Request) -> None:
        if settings.api_key:
            given = request.headers.get("x-api-key", "")
            if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
                raise HTTPException(401, "missing or wrong X-API-Key")

    guarded = [Depends(require_key)]

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = [
            {"loc": list(e.get("loc", [])), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]  # without the input: it may hold personal data
        status = 400 if any(e["type"] == "json_invalid" for e in errors) else 422
        return JSONResponse(
            {"error": "malformed JSON" if status == 400 else "invalid request", "detail": errors},
            status_code=status,
        )

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        ref = uuid.uuid4().hex[:12]
        log.error(
            "request %s %s failed (ref %s): %s: %s",
            request.method,
            request.url.path,
            ref,
            type(exc).__name__,
            exc,
        )
        return JSONResponse({"error": "internal error", "ref": ref}, status_code=500)

    @app.get("/health", tags=["operations"])
    def health():
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"])
    def ready():
        if state.data is None or state.champions is None:
            return JSONResponse({"ready": False}, status_code=503)
        d = state.data
        return {
            "ready": True,
            "snapshot": {
                "path": str(d.path),
                "published_at": d.published_at,
                "tables": len(d.tables),
                "products": len(d.products),
                "customers_with_recommendations": len(d.recommendations),
                "gate_table": "ml.serving_decisions" in d.tables,
            },
            "champions": state.champions.describe(),
            "encoders": {
                "text": state.encoder.model_id if state.encoder else None,
                "image": state.image_encoder.model_id if state.image_encoder else None,
                "text_fallback": state.encoder_fallback,
                "text_batches": {"passes": state.encoder.batches, "texts": state.encoder.texts}
                if state.encoder
                else None,
            },
            "reloads": state.reloads[-5:],
            "poll_seconds": settings.api_poll_seconds,
            "pauses": {
                "gc": state.gc_pauses.summary(),
                "poller": state.poller_ticks.summary(),
                "frozen_objects": state.frozen_objects,
                "registry_queries": state.watch.queries if state.watch else 0,
            },
        }

    @app.post("/admin/reload", tags=["operations"], dependencies=guarded)
    async def reload():
        return await _run(state, state.check)

    # ------------------------------------------------------------------------------------ endpoints
    @app.post("/v1/recommendations", tags=["recommendations"], dependencies=guarded)
    async def recommendations(req: RecommendationRequest):
        from ecom_pipeline.api.service import SessionEvent, recommend
        from ecom_pipeline.cleaning.privacy import pseudonym

        now = datetime.now(UTC).replace(tzinfo=None)
        events = [SessionEvent(e.product_id, e.event_type, _utc(e.ts) or now) for e in req.events]
        data, key = state.data, state.key

        def work():
            if req.events:
                state.spool.append([_row(req.customer_id, e, now) for e in req.events])
            out = recommend(
                data, pseudonym(req.customer_id, key), events, k=req.k, region=req.region, now=now
            )
            return {"customer_id": req.customer_id, **out, "snapshot": data.published_at}

        return await _run(state, work)

    @app.post("/v1/events", tags=["recommendations"], dependencies=guarded, status_code=202)
    async def events(req: EventsRequest):
        now = datetime.now(UTC).replace(tzinfo=None)
        n = await _run(state, state.spool.append, [_row(e.customer_id, e, now) for e in req.events])
        return {"accepted": n, "inbox": str(state.spool.inbox)}

    @app.post("/v1/triage", tags=["reviews"], dependencies=guarded)
    async def triage(req: TriageRequest):
        from ecom_pipeline.api.service import triage as run_triage
        from ecom_pipeline.cleaning.privacy import mask_text
        from ecom_pipeline.ml.text.reviews import review_document

        masked = mask_text(review_document(req.title, req.text))  # before anything is logged or encoded
        champions, data = state.champions, state.data
        try:
            out = await _run(
                state, run_triage, champions, data, state.encoder, state.intents, masked, _timeout(state)
            )
        except LookupError as exc:
            raise HTTPException(503, str(exc)) from None
        log.info(
            "triage: %s/%s -> %s [%s]",
            out["sentiment"]["label"],
            out["intent"]["label"],
            out["routing"]["team"],
            masked[:200],
        )
        return out

    @app.get("/v1/products/{product_id}/similar", tags=["products"], dependencies=guarded)
    async def similar(product_id: str, k: int = 10):
        from ecom_pipeline.api.service import similar_by_id

        _check_k(k)
        out = await _run(state, similar_by_id, state.data, product_id, k)
        if out is None:
            raise HTTPException(404, f"unknown product {product_id!r} (no embedding in the snapshot)")
        return out

    @app.post("/v1/similar/text", tags=["products"], dependencies=guarded)
    async def similar_text(req: TextQuery):
        from ecom_pipeline.api.service import similar_by_vector

        data = state.data
        if not len(data.text):
            raise HTTPException(503, "the snapshot has no product text embeddings")

        def work():
            vec = state.encoder.encode(req.text, "query", timeout=_timeout(state))
            return {"query": req.text, "items": similar_by_vector(data, "text", vec, req.k)}

        return await _run(state, work)

    @app.post("/v1/similar/image", tags=["products"], dependencies=guarded)
    async def similar_image(
        file: Annotated[UploadFile, File(description="a product photo (JPEG, PNG, ...)")],
        k: Annotated[int, Form()] = 10,
    ):
        from ecom_pipeline.api.service import similar_by_vector

        _check_k(k)
        data = state.data
        if state.image_encoder is None or not len(data.image):
            raise HTTPException(503, "the snapshot has no product image embeddings")
        raw = await file.read()
        if not raw:
            raise HTTPException(422, "the upload is empty")

        def work():
            from PIL import Image

            try:
                with Image.open(io.BytesIO(raw)) as im:
                    image = im.convert("RGB")
            except Exception as exc:  # noqa: BLE001 - not an image, truncated, or a decompression bomb
                raise HTTPException(
                    415, f"the upload is not a readable image: {type(exc).__name__}"
                ) from None
            vec = state.image_encoder.encode_images([image])[0]
            return {"filename": file.filename, "items": similar_by_vector(data, "image", vec, k)}

        return await _run(state, work)

    @app.get("/v1/forecasts/{series_id}", tags=["forecasts"], dependencies=guarded)
    async def forecast(series_id: str, recent_days: int = 7):
        from ecom_pipeline.api.service import forecast as run_forecast

        if not 1 <= recent_days <= 366:
            raise HTTPException(422, "recent_days must be between 1 and 366")
        out = await _run(state, run_forecast, state.data, series_id, recent_days)
        if out is None:
            raise HTTPException(
                404, f"unknown series {series_id!r} (e.g. 'total', 'state:SP', 'category:toys')"
            )
        return out

    return app


def _check_k(k: int) -> None:
    if not 1 <= k <= 100:
        raise HTTPException(422, "k must be between 1 and 100")


def _utc(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    return ts


def _row(customer_id: str, e: Event, now: datetime) -> dict:
    return {
        "ts": (_utc(e.ts) or now).strftime("%Y-%m-%d %H:%M:%S"),
        "customer_id": customer_id,
        "session_id": e.session_id,
        "event_type": e.event_type,
        "product_id": e.product_id,
    }


def main(argv: list[str] | None = None) -> int:
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(
        description="Serve recommendations, triage, similar products and forecasts."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    # one intra-op thread per image encode (see __main__.py; set here, not in create_app: tests share the
    # process with other torch work)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))  # env exception: OpenMP's own variable
    started = time.monotonic()
    app = create_app()
    log.info(
        "app built in %.1f s; serving on http://%s:%d (OpenAPI: /docs)",
        time.monotonic() - started,
        args.host,
        args.port,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
