"""The DuckDB pandas IO manager, with one change: an empty DataFrame still creates its (typed) table.

The stock handler skips empty frames, so a source without, say, geolocation made the downstream load fail
with "table does not exist" instead of handing the next asset an empty frame it can explain.
"""

from __future__ import annotations

from contextlib import contextmanager

import pandas as pd
from dagster import InputContext, OutputContext
from dagster._core.storage.db_io_manager import DbIOManager, TableSlice
from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_pandas import DuckDBPandasIOManager
from dagster_duckdb_pandas.duckdb_pandas_type_handler import DuckDBPandasTypeHandler

from ecom_pipeline.resources.warehouse import DEFAULT_LOCK_TIMEOUT_S, connect_with_retry


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


class RetryingDuckDbClient(DuckDbClient):
    """Opens the file like every other warehouse open (``connect_with_retry``): waits with jittered back-off
    for another process's lock for as long as the warehouse resource does (dagster-duckdb gives up after
    10 fixed back-offs), reads inputs read-only, and uses the same DuckDB settings (a second open with
    different settings is refused).  ``connection_config`` is not used: settings come from ``duckdb_config``."""

    @staticmethod
    @contextmanager
    def connect(context, _):
        con = connect_with_retry(context.resource_config["database"], read_only=isinstance(context, InputContext),
                                 timeout_s=DEFAULT_LOCK_TIMEOUT_S)
        try:
            yield con
        finally:
            con.close()


class WarehouseIOManager(DuckDBPandasIOManager):
    """``DuckDBPandasIOManager`` whose empty outputs are empty tables (schema = asset key prefix)."""

    @staticmethod
    def type_handlers():
        return [EmptyTableTypeHandler()]

    def create_io_manager(self, context) -> DbIOManager:  # as dagster-duckdb's, with the retrying client
        return DbIOManager(db_client=RetryingDuckDbClient(), database=self.database, schema=self.schema_,
                           type_handlers=self.type_handlers(), default_load_type=self.default_load_type(),
                           io_manager_name="DuckDBIOManager")
