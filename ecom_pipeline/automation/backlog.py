"""Embedding backlog catch-up: a cold start embeds its history by itself.

The capped encoders (review text, product images, product videos) encode at most ``max_new_per_run`` rows
per daily run so a daily run stays short; the rest is their ``backlog`` (materialisation metadata).  On a
cold start (a shop's whole history at once: ~470k reviews at 1M orders) the daily runs alone would take
months to catch up, so ``embedding_backlog_sensor`` launches ``embedding_backfill`` runs until every
backlog is 0:

* it reads the ``backlog`` of each capped encoder's latest materialisation and requests one run for the
  encoders that still have one, with a larger per-run cap (``BACKFILL_CAPS``: ~5-10 min of CPU per run,
  committed in chunks, so a stopped run keeps its progress);
* it yields to everything else: no request while any other run is queued or in progress (the daily jobs and
  training keep their wall time), and none while a backfill run is still going;
* after a failed backfill run it waits until an encoder materialises again (a fix, or the daily run), so a
  deterministic failure is not relaunched every minute.

Progress: each tick's message gives what is left (Automation -> sensor ticks), each run carries the
backlog it started from as tags, and the assets' ``backlog`` / ``coverage`` metadata plot the catch-up over
their materialisations (asset page -> Plots).
"""

from __future__ import annotations

import json

import dagster as dg

from ecom_pipeline.automation.jobs import LONG_STEPS_EXECUTOR, STAGE_TAG, WRITER_TAG
from ecom_pipeline.automation.retraining import ACTIVE_STATUSES

REVIEW_TEXT = dg.AssetKey(["features", "review_text_embeddings"])
PRODUCT_IMAGES = dg.AssetKey(["features", "product_image_embeddings"])
PRODUCT_VIDEOS = dg.AssetKey(["features", "product_video_embeddings"])
# Per-run caps of a backfill run (the daily caps x10 / x4): long enough that a run's start-up (~20 s) is
# small beside its encoding, short enough that a daily job launched meanwhile waits minutes, not hours
# (on 2 CPU cores ~100 reviews/s and ~27 images/s; CUDA keeps the assets' own larger caps).
BACKFILL_CAPS: dict[dg.AssetKey, dict] = {
    REVIEW_TEXT: {"max_new_per_run_cpu": 50_000},
    PRODUCT_IMAGES: {"max_new_per_run_cpu": 10_000},
    PRODUCT_VIDEOS: {"max_new_per_run": 2_000},
}
BACKLOG_ASSETS = list(BACKFILL_CAPS)


def _op(key: dg.AssetKey) -> str:
    return "__".join(key.path)


def backfill_run_config(keys: list[dg.AssetKey]) -> dict:
    return {"ops": {_op(k): {"config": BACKFILL_CAPS[k]} for k in keys}}


embedding_backfill_job = dg.define_asset_job(
    executor_def=LONG_STEPS_EXECUTOR,
    name="embedding_backfill",
    selection=dg.AssetSelection.assets(*BACKLOG_ASSETS),
    config=backfill_run_config(BACKLOG_ASSETS),
    tags={STAGE_TAG: "features", "dagster/priority": "-1", **WRITER_TAG},
    description="Encode the review / product image / product video embedding backlog with larger per-run "
    "caps; launched by embedding_backlog_sensor until every backlog is 0 (or by hand after a cold start).",
)


def latest_backlogs(instance: dg.DagsterInstance) -> dict[dg.AssetKey, tuple[int, float]]:
    """``{key: (backlog, materialised at)}`` of the capped encoders that have materialised."""
    found = {}
    for key in BACKLOG_ASSETS:
        event = instance.get_latest_materialization_event(key)
        if event is None or event.asset_materialization is None:
            continue
        value = event.asset_materialization.metadata.get("backlog")
        found[key] = (int(value.value) if value is not None else 0, event.timestamp)
    return found


def _left(pending: dict[dg.AssetKey, int]) -> str:
    return ", ".join(f"{k.path[-1]} {n:,}" for k, n in pending.items())


def evaluate_backlog(instance: dg.DagsterInstance) -> dg.RunRequest | dg.SkipReason:
    backlogs = latest_backlogs(instance)
    pending = {k: n for k, (n, _) in backlogs.items() if n > 0}
    if not pending:
        return dg.SkipReason(
            "no embedding backlog"
            if backlogs
            else "no capped encoder has materialised yet (nothing to catch up on)"
        )
    active = instance.get_runs(filters=dg.RunsFilter(statuses=ACTIVE_STATUSES), limit=5)
    mine = [r for r in active if r.job_name == embedding_backfill_job.name]
    if mine:
        return dg.SkipReason(f"backfill run {mine[0].run_id} in progress; left: {_left(pending)}")
    if active:
        names = sorted({r.job_name for r in active})
        return dg.SkipReason(f"waiting for {', '.join(names)} to finish; left: {_left(pending)}")
    last = instance.get_runs(filters=dg.RunsFilter(job_name=embedding_backfill_job.name), limit=1)
    newest_materialisation = max(t for _, t in backlogs.values())
    if last and last[0].status == dg.DagsterRunStatus.FAILURE:
        stats = instance.get_run_stats(last[0].run_id)
        if (stats.end_time or 0) >= newest_materialisation:
            return dg.SkipReason(
                f"backfill run {last[0].run_id} failed; not relaunched until an encoder materialises again "
                f"(fix the cause, then launch embedding_backfill or wait for the daily run); left: "
                f"{_left(pending)}"
            )
    keys = list(pending)
    return dg.RunRequest(
        asset_selection=keys,
        run_config=backfill_run_config(keys),
        tags={
            "ecom/trigger": "embedding_backlog",
            "ecom/backlog": json.dumps({k.path[-1]: n for k, n in pending.items()}),
        },
    )


@dg.sensor(
    name="embedding_backlog_sensor",
    job=embedding_backfill_job,
    minimum_interval_seconds=120,
    # on by default, like features_after_daily_ingest: it acts only once an encoder reported a backlog
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="While a capped encoder (review text, product images, product videos) reports a backlog, "
    "launch embedding_backfill when no other run is queued or in progress; each tick says what is left.",
)
def embedding_backlog_sensor(context: dg.SensorEvaluationContext):
    return evaluate_backlog(context.instance)


def build() -> dg.Definitions:
    return dg.Definitions(jobs=[embedding_backfill_job], sensors=[embedding_backlog_sensor])
