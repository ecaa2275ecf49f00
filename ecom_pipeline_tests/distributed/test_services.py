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


@pytest.mark.skipif(
    bool(missing_binaries("initdb", "pg_ctl", "redis-server")), reason="needs initdb/redis-server"
)
def test_stopped_servers_remove_their_directories_and_free_their_ports():
    with PostgresServer(databases=("scratch",)) as pg, RedisServer() as rd:
        dirs, urls = (pg.directory, rd.directory), (pg.url("scratch"), rd.url())
        assert all(d.exists() for d in dirs)
    assert not any(d.exists() for d in dirs)
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(urls[0], connect_timeout=2)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(urls[1], socket_connect_timeout=2).ping()


@pytest.mark.distributed
@pytest.mark.skipif(
    bool(missing_binaries("initdb", "pg_ctl", "redis-server")), reason="needs initdb/redis-server"
)
def test_up_command_starts_everything_writes_env_file_and_stops_cleanly(tmp_path):
    """``python -m ecom_pipeline.distributed up``: servers and both workers up, env.sh written; SIGTERM stops
    every process it started and removes the servers' directories."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from ecom_pipeline.config import REPO_ROOT

    root = tmp_path / "cluster"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecom_pipeline.distributed", "up", "--root", str(root)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (root / "env.sh").exists():
            assert proc.poll() is None and time.monotonic() < deadline, (
                proc.stdout.read() if proc.poll() else ""
            )
            time.sleep(0.5)
        exported = dict(
            line.removeprefix("export ").split("=", 1) for line in (root / "env.sh").read_text().splitlines()
        )
        assert exported["ECOM_EXECUTOR"] == "celery" and exported["DAGSTER_HOME"] == str(
            root / "dagster_home"
        )
        assert redis.Redis.from_url(exported["CELERY_BROKER_URL"]).ping()
        children = psutil.Process(proc.pid).children(recursive=True)
        assert sum("celery" in " ".join(c.cmdline()) for c in children) >= 2  # a worker per queue
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(exported["CELERY_BROKER_URL"], socket_connect_timeout=2).ping()
