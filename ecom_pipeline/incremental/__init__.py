"""Incremental daily runs: recompute feature and serving rows only for customers whose data changed since
the last run.

:mod:`.changes` decides full vs incremental (state per target table in ``incremental.refresh_state``) and
lists the customers with new activity from the partitioned ingest's lineage (``_load_id`` ×
``meta.partition_loads``); :mod:`.serving` merges recomputed rows by customer into a table in one
transaction; :mod:`.interactions` (interactions, category interactions), :mod:`.profiles` and
:mod:`.recommendations` are the targets.  Framework-free: plain DuckDB connections, no Dagster.
"""
