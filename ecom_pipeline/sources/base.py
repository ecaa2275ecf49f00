"""The one interface every data source implements.

A source turns whatever the shop delivers into *raw chunks* of the canonical tables:

* a pandas DataFrame per chunk, at most ``chunk_rows`` rows, so memory stays bounded at any size;
* columns named as in :mod:`ecom_pipeline.canonical` (a subset is fine: missing columns become NULL),
  values as delivered, as text (``str`` or ``None``): typing and validation happen in staging, once,
  for every source;
* two lineage columns: ``_source_file`` (the file or generator the row came from) and ``_source_row``
  (1-based data row number inside that file) so every quarantined row can be traced back;
* optionally ``_parse_error``: set (to a short reason such as ``wrong_field_count`` or ``invalid_utf8``)
  on a row the reader could not split or decode; staging quarantines it as ``malformed_line``.  Such a
  row keeps whatever text could be recovered, so nothing is silently dropped.

One delivered row gives at most one raw row (nothing is dropped or fanned out), so the staging
invariant raw = staged + quarantined is meaningful.  Lookups a source needs to fill canonical columns
(Olist's category translation, zip centroids) are done in the adapter.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import pandas as pd

from ecom_pipeline.canonical import TABLES, ParseHints

DEFAULT_CHUNK_ROWS = 100_000


class SourceError(ValueError):
    """Input that cannot be read at all (as opposed to single bad rows, which are quarantined).

    The message always names the file and, where one is at fault, the column.
    """

    def __init__(self, message: str, *, file: str | None = None, column: str | None = None):
        parts = [message]
        if file:
            parts.append(f"file: {file}")
        if column:
            parts.append(f"column: {column}")
        super().__init__(" | ".join(parts))
        self.file = file
        self.column = column


class Source(ABC):
    """A data source that produces raw chunks of the canonical tables."""

    name: str = "source"

    @abstractmethod
    def tables(self) -> set[str]:
        """Canonical tables this source delivers. Others are loaded as empty tables."""

    @abstractmethod
    def read(self, table: str, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
        """Yield raw chunks of ``table`` (see module docstring). Raises SourceError on unreadable input."""

    def parse_hints(self, table: str) -> ParseHints:
        return ParseHints()

    def describe(self) -> dict:
        """Human-readable facts about the source for asset metadata (paths, sizes, seed...)."""
        return {"source": self.name}

    def table_facts(self, table: str) -> dict:
        """Counts about the last read of ``table`` (rows filtered out, duplicates dropped...) for metadata."""
        return {}

    def fast_scan(self, table: str):
        """A :class:`ecom_pipeline.sources.fast_csv.FastScan` when ``table`` comes from plain CSV files that
        DuckDB can read exactly as the shared Python reader does (the raw loader's fast path), else None."""
        return

    def check_table(self, table: str) -> None:
        if table not in TABLES:
            raise SourceError(f"unknown canonical table {table!r}; known: {sorted(TABLES)}")


def text_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Return ``df`` with every non-lineage column as text (str or None), NaN/NaT becoming None."""
    out = pd.DataFrame(index=df.index)
    for col in df.columns:
        s = df[col]
        if col == "_source_row":
            out[col] = s.astype("int64")
            continue
        mask = s.isna()
        s = s.astype(object).where(~mask, None)
        out[col] = s.map(lambda v: v if v is None or isinstance(v, str) else str(v))
    return out
