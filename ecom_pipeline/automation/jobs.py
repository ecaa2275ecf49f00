"""Jobs over the asset graph, and their schedules.

Jobs select by the rule of :mod:`ecom_pipeline.asset_layout`: a topic job by its *group*, a stage job by
its *layers* (the asset key prefix, ``STAGE_LAYERS``) plus the asset whose step belongs to another stage than
its layer (listed below by key, with the reason).  New assets are picked up by their layer or group
without touching this module.

==================  =======================================================  ==========================
job                 selection                                                triggered by
==================  =======================================================  ==========================
ingest              group ingest (= layers raw, staging)                     ingest_after_inbox sensor,
                                                                             UI / CLI
inbox_ingest        ``inbox/deliveries`` (daily partition = delivery day)    inbox_sensor, backfills
                    (defined in :mod:`.inbox`)
daily_ingest        ``inbox/new_partitions``: the delivered days not staged  ``daily_ingest_features``,
                    yet, appended to raw and merged into staging by key      daily_partition_after_inbox
features            layer features, except ``features/review_sentiment``     UI / CLI
daily_refresh       features (incremental where built), after daily_ingest   features_after_daily_ingest
full_refresh        ingest + features, the incremental ones in full: the     ``daily_full_refresh``
                    full rebuild (a snapshot source's daily run)             (snapshot sources), UI / CLI
training            layer models                                             ``weekly_retraining``,
                                                                             drift_retraining sensor
scoring             layers serving, reports, snapshot; plus                  ``daily_scoring``
                    ``features/review_sentiment``
full_pipeline       everything but group inbox                               ``make demo``
drift_check         the drift sensor's check, on demand (defined in          UI / CLI
                    :mod:`.retraining`; reports, launches nothing)
embedding_backfill  the capped encoders' backlog, larger per-run caps        embedding_backlog_sensor,
                    (defined in :mod:`.backlog`)                             UI / CLI
==================  =======================================================  ==========================

``ingest``, ``inbox_ingest`` and ``daily_ingest`` run with the in-process executor (see :mod:`.executors`):
launched from the UI, a schedule or a sensor they cost about what the in-process run does.

Schedules rather than declarative automation conditions: raw/staging are a full atomic reload of an
*external* source (there is no upstream materialisation for ``AutomationCondition.eager()`` to react to,
and ``on_cron`` on ~20 raw/staging assets would evaluate them one by one instead of as one consistent
load), and training is expensive and must not follow every upstream change — it runs weekly, and earlier
only when the drift sensor sees a reason (with a cooldown).  Schedules also make the cadence visible in one
place and are stopped by default (``DefaultScheduleStatus.STOPPED``) so a fresh ``make dev`` launches
nothing by itself; start them in the UI (Automation) or with ``dagster schedule start``.
"""

from __future__ import annotations

import dagster as dg

from ecom_pipeline.asset_layout import STAGE_LAYERS
from ecom_pipeline.automation.executors import (
    executor_from_env,
    long_steps_executor,
    one_pool_executor,
    short_steps_executor,
    writer_tag,
)

STAGE_TAG = "ecom/stage"
# Model steps talk to MLflow (and wait for the warehouse lock and the GPU pool): a tracking-server restart or
# a network blip is worth two more tries after ~15 s and ~45 s (±15 s jitter, so parallel steps do not retry
# in lockstep).  Set on the jobs as ``op_retry_policy`` rather than on each of ~20 model assets in other
# modules: one place to tune, and it applies to new model assets too; steps with a policy of their own
# (raw/staging) keep theirs.  The cost: a step that fails deterministically runs three times before failing.
MODEL_RETRY_POLICY = dg.RetryPolicy(
    max_retries=2, delay=15, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
# Runs that reload raw + staging carry this tag; both instance configs (.dagster_home/dagster.yaml,
# docker/dagster.yaml) let one such run in progress at a time.  Two overlapping reloads are each consistent
# per table, but one run's staging check can see the other run's newer raw load (measured: 1 failed
# row_invariant check in 9 runs with 3 reloads at once, benchmarks/results/concurrency.md).
RELOAD_TAG = {"ecom/reload": "warehouse", **writer_tag()}
# celery / k8s only (empty otherwise): one warehouse-writing run at a time, see executors.writer_tag
WRITER_TAG = writer_tag()
# None (the code location's multiprocess executor) unless ECOM_EXECUTOR=celery|k8s
EXECUTOR = executor_from_env()
# ingest's 18 steps (each staging table's checks run in its own step) are short warehouse writes: one process
# runs them all (see executors.py)
SHORT_STEPS_EXECUTOR = short_steps_executor()
# the other jobs: the location's executor unless ECOM_LONG_JOBS_EXECUTOR=in_process (local mode only)
LONG_STEPS_EXECUTOR = long_steps_executor() or EXECUTOR
# scoring: every step in the `duckdb` pool, so one step process at a time (see executors.one_pool_executor)
ONE_POOL_EXECUTOR = long_steps_executor() or one_pool_executor() or EXECUTOR


def _layers(stage: str) -> dg.AssetSelection:
    return dg.AssetSelection.key_prefixes(*STAGE_LAYERS[stage])


# The asset whose step belongs to another stage than its layer (selected by key): review sentiment is a
# feature computed *with the champion sentiment model*, so it runs after training, in scoring.  (The
# repurchase scores were the second one until issue 15: training now keeps the served model,
# models/repurchase_model, and serving/repurchase_scores scores daily in scoring, by its layer.)
REVIEW_SENTIMENT = dg.AssetKey(["features", "review_sentiment"])
NEW_PARTITIONS = dg.AssetKey(["inbox", "new_partitions"])  # automation/inbox.py: the daily path's ingest


def _asset(key: dg.AssetKey) -> dg.AssetSelection:
    # by selection string, not AssetSelection.assets: that one refuses a Definitions without the key (a test's
    # subset of the graph); this one selects nothing then
    return dg.AssetSelection.from_string(f'key:"{key.to_user_string()}"')


INGEST_SELECTION = dg.AssetSelection.groups("ingest")
FEATURES_SELECTION = _layers("features") - _asset(REVIEW_SENTIMENT)
TRAINING_SELECTION = _layers("training")
SCORING_SELECTION = _layers("scoring") | _asset(REVIEW_SENTIMENT)


ingest_job = dg.define_asset_job(
    executor_def=SHORT_STEPS_EXECUTOR or EXECUTOR,
    name="ingest",
    selection=INGEST_SELECTION,
    tags=RELOAD_TAG,
    description="Load the configured source into raw and build the validated, pseudonymised staging tables.",
)

features_job = dg.define_asset_job(
    executor_def=LONG_STEPS_EXECUTOR,
    name="features",
    selection=FEATURES_SELECTION,
    description="Recompute the feature tables (embeddings, sentiment, topics, time series, spatial features, "
    "interactions) from the current staging tables.",
    tags={STAGE_TAG: "features", **WRITER_TAG},
)

# The daily path is incremental: `daily_ingest` appends the delivered days not staged yet (raw: one load per
# day; staging: merged by key) and, once it succeeded, `features_after_daily_ingest` launches `daily_refresh`
# (the features; interactions and category interactions recompute only customers with new activity).  Two
# runs, not one job: the ingest step writes staging without being the staging/* assets the features depend
# on, so in one job nothing would order the features after it.
daily_ingest_job = dg.define_asset_job(
    executor_def=SHORT_STEPS_EXECUTOR or EXECUTOR,
    name="daily_ingest",
    selection=_asset(NEW_PARTITIONS),
    tags={STAGE_TAG: "ingest", **RELOAD_TAG},
    description="Daily: append every delivered day not staged yet to raw and merge it into staging by key "
    "(mapped source with day files); on success daily_refresh follows.",
)

daily_refresh_job = dg.define_asset_job(
    executor_def=LONG_STEPS_EXECUTOR,
    name="daily_refresh",
    selection=FEATURES_SELECTION,
    description="Daily, after daily_ingest: refresh the features from staging (incremental where built: "
    "interactions and category interactions recompute only customers with new activity; review embeddings "
    "only for reviews newer than the last run's, the older backlog is embedding_backfill's).",
    tags={STAGE_TAG: "daily_refresh", **WRITER_TAG},
)

# The full rebuild (what daily_refresh did before it was incremental): raw + staging reloaded from the
# source, then every feature; the incremental ones rebuilt in full too.  The daily path of a snapshot source
# (synthetic, olist: no day files), and what a mapping or cleaning-rule change needs (a partitioned warehouse
# replays its raw days instead: job partition_staging_rebuild, then incremental_full_refresh).
INCREMENTAL_FEATURES = [
    dg.AssetKey(["features", "interactions"]),
    dg.AssetKey(["features", "category_interactions"]),
]
full_refresh_job = dg.define_asset_job(
    executor_def=LONG_STEPS_EXECUTOR,
    name="full_refresh",
    selection=INGEST_SELECTION | FEATURES_SELECTION,
    config={"ops": {"__".join(k.path): {"config": {"refresh": "full"}} for k in INCREMENTAL_FEATURES}},
    description="Full rebuild: reload raw + staging from the source, then recompute every feature in full.",
    tags={STAGE_TAG: "daily_refresh", **RELOAD_TAG},
)

training_job = dg.define_asset_job(
    executor_def=LONG_STEPS_EXECUTOR,
    name="training",
    op_retry_policy=MODEL_RETRY_POLICY,
    selection=TRAINING_SELECTION,
    description="Train every model, evaluate it against its baseline, register it in MLflow and promote it "
    "to `champion` only when it beats the current champion by the configured margin.",
    tags={STAGE_TAG: "training", **WRITER_TAG},
)

scoring_job = dg.define_asset_job(
    executor_def=ONE_POOL_EXECUTOR,
    name="scoring",
    op_retry_policy=MODEL_RETRY_POLICY,
    selection=SCORING_SELECTION,
    description="Score with the current champions (forecasts, anomalies, recommendations, profiles) and "
    "rebuild the reports, including the model registry report.",
    tags={STAGE_TAG: "scoring", **WRITER_TAG},
)

full_pipeline_job = dg.define_asset_job(
    executor_def=LONG_STEPS_EXECUTOR,
    name="full_pipeline",
    op_retry_policy=MODEL_RETRY_POLICY,
    # the inbox is partitioned by delivery day and is driven by its sensor / backfills, not by the demo
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups("inbox"),
    description="Materialise every (unpartitioned) asset: what `make demo` runs.",
    tags=RELOAD_TAG,
)

JOBS = [
    ingest_job,
    features_job,
    daily_ingest_job,
    daily_refresh_job,
    full_refresh_job,
    training_job,
    scoring_job,
    full_pipeline_job,
]

# Interactions (and per category), user profiles and recommendations refresh incrementally by default
# (ecom_pipeline/incremental: only customers with staging changes since their last run, full weekly or when
# the served model changes); this job rebuilds them in full on demand.
INCREMENTAL_ASSETS = [
    dg.AssetKey(["features", "interactions"]),
    dg.AssetKey(["features", "category_interactions"]),
    dg.AssetKey(["serving", "user_profiles"]),
    dg.AssetKey(["serving", "recommendations"]),
]
incremental_full_refresh_job = dg.define_asset_job(
    executor_def=LONG_STEPS_EXECUTOR,
    name="incremental_full_refresh",
    selection=dg.AssetSelection.assets(*INCREMENTAL_ASSETS),
    config={"ops": {"__".join(k.path): {"config": {"refresh": "full"}} for k in INCREMENTAL_ASSETS}},
    description="Rebuild features.interactions, category_interactions, serving.user_profiles and "
    "serving.recommendations in full (the daily runs recompute only customers with new activity).",
    tags={STAGE_TAG: "scoring", **WRITER_TAG},
)

daily_ingest_features = dg.ScheduleDefinition(
    name="daily_ingest_features",
    job=daily_ingest_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    description="02:00 UTC every day: stage the delivered days not staged yet (daily_ingest); "
    "features_after_daily_ingest then runs the incremental daily_refresh.",
)

daily_full_refresh = dg.ScheduleDefinition(
    name="daily_full_refresh",
    job=full_refresh_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    description="02:00 UTC every day, for a snapshot source (synthetic, olist: no day files): reload raw + "
    "staging and recompute the features in full. Start this one or daily_ingest_features, not both.",
)


# On by default: it only reacts to daily_ingest runs, which exist only once someone started the daily schedule
# or the inbox's daily_partition_after_inbox sensor (or launched daily_ingest).
@dg.run_status_sensor(
    name="features_after_daily_ingest",
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[daily_ingest_job],
    request_job=daily_refresh_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After a successful daily_ingest run, launch daily_refresh (features, incremental where "
    "built) on the staging it updated.",
)
def features_after_daily_ingest(context: dg.RunStatusSensorContext):
    run = context.dagster_run
    if run.job_name != daily_ingest_job.name:
        return dg.SkipReason(f"run {run.run_id} is {run.job_name}, not {daily_ingest_job.name}")
    return dg.RunRequest(
        run_key=f"features-after-daily-ingest:{run.run_id}",
        tags={"ecom/trigger": "daily_ingest", "ecom/daily_ingest_run": run.run_id},
    )


weekly_retraining = dg.ScheduleDefinition(
    name="weekly_retraining",
    job=training_job,
    cron_schedule="0 3 * * 0",
    execution_timezone="UTC",
    tags={"ecom/trigger": "schedule"},
    description="03:00 UTC on Sundays: retrain every model (challengers are promoted only when they win).",
)

daily_scoring = dg.ScheduleDefinition(
    name="daily_scoring",
    job=scoring_job,
    cron_schedule="0 5 * * *",
    execution_timezone="UTC",
    description="05:00 UTC every day, after the daily refresh: score with the champions and rebuild reports.",
)

SCHEDULES = [daily_ingest_features, daily_full_refresh, weekly_retraining, daily_scoring]


def build() -> dg.Definitions:
    return dg.Definitions(
        jobs=[*JOBS, incremental_full_refresh_job],
        schedules=SCHEDULES,
        sensors=[features_after_daily_ingest],
    )
