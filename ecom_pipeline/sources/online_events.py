"""Session events posted to the serving app, read back by the next ingest as part of ``raw.events``.

The app (:mod:`ecom_pipeline.api.events`) writes them as CSV files named ``online_events_<day>_...csv`` into
the inbox; the inbox sensor validates, deduplicates and archives them under ``inbox/processed/<day>/``
like any delivery.  Whatever the configured source, the ``events`` table of the next ingest is the source's
own events followed by every archived online-events file, so they go through the same staging validation,
deduplication (``event_id``), pseudonymisation and quarantine as delivered files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from ecom_pipeline.canonical import ParseHints
from ecom_pipeline.sources.base import DEFAULT_CHUNK_ROWS, Source

PREFIX = "online_events_"
COLUMNS = ("event_id", "ts", "customer_id", "session_id", "event_type", "product_id")
# what the app writes: naive UTC timestamps
ONLINE_HINTS = ParseHints(timestamp_formats=("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S.%f"), timezone="UTC")


def online_event_files(processed: str | Path) -> list[Path]:
    """The archived online-events files under ``processed`` (``DataPaths.inbox_processed``)."""
    processed = Path(processed)
    if not processed.is_dir():
        return []
    return sorted(p for p in processed.glob(f"*/{PREFIX}*.csv") if p.is_file() and not p.is_symlink())


class WithOnlineEvents(Source):
    """``base`` with the archived online events (under ``processed``, the inbox's archive) appended to its
    ``events`` table."""

    def __init__(self, base: Source, processed: str | Path):
        self.base = base
        self.processed = Path(processed)
        self.name = base.name

    def __getattr__(self, item):  # anything else the base source offers (catalogues, image dirs)
        return getattr(self.base, item)

    def tables(self) -> set[str]:
        tables = set(self.base.tables())
        return tables | {"events"} if online_event_files(self.processed) else tables

    def read(self, table: str, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
        if table in self.base.tables():
            yield from self.base.read(table, chunk_rows=chunk_rows)
        if table != "events":
            return
        for path in online_event_files(self.processed):
            source_file = f"inbox/processed/{path.parent.name}/{path.name}"
            for chunk in pd.read_csv(
                path, dtype=str, keep_default_na=False, na_values=[""], chunksize=chunk_rows
            ):
                chunk = chunk[[c for c in chunk.columns if c in COLUMNS]].astype(object)
                chunk = chunk.where(chunk.notna(), None)
                chunk["_source_file"] = source_file
                chunk["_source_row"] = range(int(chunk.index[0]) + 1, int(chunk.index[0]) + 1 + len(chunk))
                yield chunk

    def fast_scan(self, table: str):
        """The base source's DuckDB fast path, except for ``events`` when online events are appended to it."""
        if table not in self.base.tables() or (table == "events" and online_event_files(self.processed)):
            return None
        return self.base.fast_scan(table)

    def parse_hints(self, table: str) -> ParseHints:
        if table == "events" and "events" not in self.base.tables():
            return ONLINE_HINTS
        return self.base.parse_hints(table)

    def describe(self) -> dict:
        return {**self.base.describe(), "online_event_files": len(online_event_files(self.processed))}

    def check_table(self, table: str) -> None:
        self.base.check_table(table)
