#!/bin/sh
# One Postgres server, three databases: Dagster's run/event/schedule storage, MLflow's backend store and the
# DuckLake warehouse's catalog (used with ECOM_WAREHOUSE_BACKEND=ducklake).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
SELECT 'CREATE DATABASE mlflow' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mlflow')\gexec
SELECT 'CREATE DATABASE ducklake' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'ducklake')\gexec
SQL
