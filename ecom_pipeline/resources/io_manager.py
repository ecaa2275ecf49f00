"""The DuckDB pandas IO manager, with one change: an empty DataFrame still creates its (typed) table.

The stock handler skips empty frames, so a source without, say, geolocation made the downstream load fail
with "table does not exist" instead of handing the next asset an empty frame it can explain.
"""

from __future__ import annotations

import pandas as pd
from dagster import OutputContext
from dagster._core.storage.db_io_manager import TableSlice
from dagster_duckdb_pandas import DuckDBPandasIOManager
from dagster_duckdb_pandas.duckdb_pandas_type_handler import DuckDBPandasTypeHandler


class EmptyTableTypeHandler(DuckDBPandasTypeHandler):
    def handle_output(self, context: OutputContext, table_slice: TableSlice, obj: pd.DataFrame, connection):
        if obj.empty and len(obj.columns):
            # all-null object columns have no type DuckDB can infer: store them as text
            frame = obj.astype({c: "string" for c in obj.columns if obj[c].dtype == object})
            connection.register("_empty_frame", frame)
            try:
                connection.execute(
                    f"CREATE TABLE IF NOT EXISTS {table_slice.schema}.{table_slice.table} AS SELECT * FROM _empty_frame"
                )
            finally:
                connection.unregister("_empty_frame")
            context.add_output_metadata({"dagster/row_count": 0})
            return
        super().handle_output(context, table_slice, obj, connection)


class WarehouseIOManager(DuckDBPandasIOManager):
    """``DuckDBPandasIOManager`` whose empty outputs are empty tables (schema = asset key prefix)."""

    @staticmethod
    def type_handlers():
        return [EmptyTableTypeHandler()]
