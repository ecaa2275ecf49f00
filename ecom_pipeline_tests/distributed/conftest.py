"""Real services for the distributed tests: a throwaway PostgreSQL 15 cluster and a redis-server on free
loopback ports, started once per session and removed afterwards.  Skipped (with the reason) only where the
binaries are absent; CI installs them (.ci/run)."""

import pytest

from ecom_pipeline.distributed.services import (
    POSTGRES_BINARIES,
    REDIS_BINARIES,
    PostgresServer,
    RedisServer,
    missing_binaries,
)


@pytest.fixture(scope="session")
def postgres_server():
    missing = missing_binaries(*POSTGRES_BINARIES)
    if missing:
        pytest.skip(f"PostgreSQL server binaries not on PATH: {missing} (Debian: postgresql-15)")
    with PostgresServer(databases=("dagster", "mlflow")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server():
    missing = missing_binaries(*REDIS_BINARIES)
    if missing:
        pytest.skip(f"{missing} not on PATH (Debian: apt-get install redis-server; .ci/run installs it)")
    with RedisServer() as server:
        yield server
