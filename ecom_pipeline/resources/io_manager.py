"""The DuckDB pandas IO manager, made safe to kill: each output replaces its table in one transaction.

Also: an empty DataFrame still creates its (typed) table, and opens wait for another process's lock like
every other warehouse open.
"""

from __future__ import annotations

from contextlib import contextmanager

import pandas as pd
from dagster import InputContext, MetadataValue, OutputContext, TableColumn, TableSchema
from dagster._core.definitions.metadata import TableMetadataSet
from dagster._core.storage.db_io_manager import DbIOManager, TableSlice
from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_pandas import DuckDBPandasIOManager
from dagster_duckdb_pandas.duckdb_pandas_type_handler import DuckDBPandasTypeHandler

from ecom_pipeline.resources.warehouse import DEFAULT_LOCK_TIMEOUT_S, open_warehouse
from ecom_pipeline.warehouse.lake import run_transaction
from ecom_pipeline.warehouse.tables import table_exists, write_table


class AtomicTableTypeHandler(DuckDBPandasTypeHandler):
    """Replaces the output's table (or partition) inside one transaction.

    dagster-duckdb deletes the old rows in one auto-committed statement and inserts the new ones in another
    (positionally): a step killed in between left an empty table, and a frame whose columns changed order was
    misaligned.  Here a killed step leaves the previous complete table; an empty frame still creates its
    (typed) table, so a source without, say, geolocation gives the next asset an empty frame it can explain.
    """

    def handle_output(self, context: OutputContext, table_slice: TableSlice, obj: pd.DataFrame, connection):
        qualified = f"{table_slice.schema}.{table_slice.table}"

        def replace(con) -> None:  # re-run whole when a DuckLake commit loses to another writer
            if table_slice.partition_dimensions and table_exists(con, qualified):
                DuckDbClient.delete_table_slice(context, table_slice, con)
                con.register("_partition_df", obj)
                try:
                    con.execute(f"INSERT INTO {qualified} BY NAME SELECT * FROM _partition_df")
                finally:
                    con.unregister("_partition_df")
            else:
                write_table(con, qualified, obj)

        run_transaction(connection, replace, on_retry=context.log.warning)
        rows = (
            TableMetadataSet(partition_row_count=len(obj))
            if context.has_partition_key
            else TableMetadataSet(row_count=len(obj))
        )
        context.add_output_metadata(
            {
                **rows,
                "dataframe_columns": MetadataValue.table_schema(
                    TableSchema(
                        columns=[TableColumn(name=str(n), type=str(t)) for n, t in obj.dtypes.items()]
                    )
                ),
            }
        )


class RetryingDuckDbClient(DuckDbClient):
    """Opens the file like every other warehouse open (``connect_with_retry``): waits with jittered back-off
    for another process's lock for as long as the warehouse resource does (dagster-duckdb gives up after
    10 fixed back-offs), reads inputs read-only, and uses the same DuckDB settings (a second open with
    different settings is refused).  ``connection_config`` is not used: settings come from
    ``duckdb_config``."""

    @staticmethod
    def delete_table_slice(context, table_slice, connection) -> None:
        """Nothing here: the type handler deletes and writes inside one transaction."""

    @staticmethod
    @contextmanager
    def connect(context, _):
        config = context.resource_config
        con = open_warehouse(
            config["database"],
            backend=config.get("backend") or "duckdb",
            lake_catalog=config.get("lake_catalog") or "",
            lake_data_path=config.get("lake_data_path") or "",
            read_only=isinstance(context, InputContext),
            timeout_s=DEFAULT_LOCK_TIMEOUT_S,
        )
        try:
            yield con
        finally:
            con.close()


class WarehouseIOManager(DuckDBPandasIOManager):
    """``DuckDBPandasIOManager`` that replaces each output's table atomically (schema = asset key prefix), in
    the DuckDB file ``database`` or, with ``backend="ducklake"``, in the lake."""

    backend: str = "duckdb"  # as WarehouseResource
    lake_catalog: str = ""
    lake_data_path: str = ""

    @staticmethod
    def type_handlers():
        return [AtomicTableTypeHandler()]

    def create_io_manager(self, context) -> DbIOManager:  # as dagster-duckdb's, with the retrying client
        return DbIOManager(
            db_client=RetryingDuckDbClient(),
            database=self.database,
            schema=self.schema_,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="DuckDBIOManager",
        )
