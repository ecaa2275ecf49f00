"""The service harness itself: both servers answer, and a stopped server leaves nothing behind."""

import psycopg2
import pytest
import redis

from ecom_pipeline.distributed.services import PostgresServer, RedisServer, missing_binaries


def test_session_servers_answer(postgres_server, redis_server):
    with psycopg2.connect(postgres_server.url("dagster")) as con, con.cursor() as cur:
        cur.execute("SELECT current_database(), version()")
        db, version = cur.fetchone()
    assert db == "dagster" and version.startswith("PostgreSQL")
    assert redis.Redis.from_url(redis_server.url()).ping()


@pytest.mark.skipif(bool(missing_binaries("initdb", "pg_ctl", "redis-server")), reason="needs initdb/redis-server")
def test_stopped_servers_remove_their_directories_and_free_their_ports():
    with PostgresServer(databases=("scratch",)) as pg, RedisServer() as rd:
        dirs, urls = (pg.directory, rd.directory), (pg.url("scratch"), rd.url())
        assert all(d.exists() for d in dirs)
    assert not any(d.exists() for d in dirs)
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(urls[0], connect_timeout=2)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(urls[1], socket_connect_timeout=2).ping()
