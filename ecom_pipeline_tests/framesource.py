"""A Source over in-memory DataFrames, for tests of the raw and staging layers."""

from collections.abc import Iterator

import pandas as pd

from ecom_pipeline.canonical import ParseHints
from ecom_pipeline.sources.base import Source, text_frame


class FrameSource(Source):
    name = "frames"

    def __init__(
        self, tables: dict[str, pd.DataFrame], hints: ParseHints | None = None, fail_after_chunks=None
    ):
        self._tables = tables
        self._hints = hints or ParseHints()
        self._fail_after = fail_after_chunks

    def tables(self) -> set[str]:
        return set(self._tables)

    def read(self, table: str, chunk_rows: int = 100_000) -> Iterator[pd.DataFrame]:
        df = self._tables[table].reset_index(drop=True)
        for i, start in enumerate(range(0, len(df), chunk_rows)):
            if self._fail_after is not None and i >= self._fail_after:
                raise RuntimeError("source failed mid-load")
            chunk = df.iloc[start : start + chunk_rows].copy()
            chunk["_source_file"] = f"memory://{table}"
            chunk["_source_row"] = range(start + 1, start + 1 + len(chunk))
            yield text_frame(chunk)

    def parse_hints(self, table: str) -> ParseHints:
        return self._hints
