"""Partitions.

Only the inbox is partitioned: its partition key is the *delivery day* (UTC) of a file dropped into
``<data_root>/inbox/``.  By default raw and staging are not partitioned: each load is a full, atomic
reload of the current state of the source keyed by its run id (see :mod:`ecom_pipeline.loading`), so a
daily delivery is recorded per day (``inbox/deliveries``) and then feeds one full reload of raw/staging.
Opt-in, for a mapped source whose daily files hold the day's new and corrected rows, the same partitions
drive ``inbox/daily_partition_ingest``: the day is appended to raw as one load and merged into staging by key
(``loading.load_raw_partition``, ``cleaning.staging_upsert``).
Backfilling a day re-publishes that day's archived files (UI: asset ``inbox/deliveries`` → Materialize →
pick partitions; CLI: ``dagster job backfill -j inbox_ingest --partitions 2024-05-01,2024-05-02``).
"""

from __future__ import annotations

import dagster as dg

INBOX_START_DATE = "2016-01-01"  # Olist-era files carry 2016-2018 dates in their names

INBOX_PARTITIONS = dg.DailyPartitionsDefinition(start_date=INBOX_START_DATE, end_offset=1, timezone="UTC")
